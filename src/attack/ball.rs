//! The threat model every attack shares: an L∞ or L2 ball of radius epsilon around the clean
//! input, intersected with the input box; projection onto it and random points in it.

use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor};
use serde::{Deserialize, Serialize};

/// The norm of a threat model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    Linf,
    L2,
}

/// An epsilon ball (input units: pixels in [0, 1], or fractions of a feature's box).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ball {
    pub norm: Norm,
    pub epsilon: f64,
}

impl Ball {
    /// Projects `x_adv` onto the ball around `x`, then onto the box `bounds` (`None`: no box).
    pub fn project<const D: usize>(
        &self,
        x: &Tensor<D>,
        x_adv: Tensor<D>,
        bounds: Option<(f64, f64)>,
    ) -> Tensor<D> {
        let delta = x_adv - x.clone();
        let delta = match self.norm {
            Norm::Linf => delta.clamp(-self.epsilon, self.epsilon),
            Norm::L2 => {
                let scale = (l2_norms(&delta).recip() * self.epsilon).clamp_max(1.0);
                delta * scale
            }
        };
        match bounds {
            Some((low, high)) => (x.clone() + delta).clamp(low, high),
            None => x.clone() + delta,
        }
    }

    /// A random offset in the ball, one per example (L∞: uniform; L2: a random direction
    /// and a radius uniform in [0, epsilon]).
    pub fn random_delta<const D: usize>(&self, x: &Tensor<D>) -> Tensor<D> {
        let e = self.epsilon;
        match self.norm {
            Norm::Linf => x.random_like(Distribution::Uniform(-e, e)),
            Norm::L2 => {
                let direction = x.random_like(Distribution::Normal(0.0, 1.0));
                let radius =
                    Tensor::<D>::random(per_example(x), Distribution::Uniform(0.0, e), &x.device());
                direction.clone() / (l2_norms(&direction) + 1e-12) * radius
            }
        }
    }

    /// The steepest-ascent step of size `alpha` for gradient `grad` under this norm
    /// (L∞: alpha · sign; L2: alpha along the normalised gradient).
    pub fn step<const D: usize>(&self, grad: Tensor<D>, alpha: f64) -> Tensor<D> {
        match self.norm {
            Norm::Linf => grad.sign() * alpha,
            Norm::L2 => grad.clone() / (l2_norms(&grad) + 1e-12) * alpha,
        }
    }
}

/// Per-example L2 norms of `t` (`D` ≥ 2), shape `[N, 1, ..., 1]`.
pub fn l2_norms<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    t.clone()
        .flatten::<2>(1, D - 1)
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .reshape(per_example(t))
}

/// The shape `[N, 1, ..., 1]` of a per-example scalar broadcast against `t`.
pub fn per_example<const D: usize>(t: &Tensor<D>) -> [usize; D] {
    let mut shape = [1; D];
    shape[0] = t.dims()[0];
    shape
}

/// `full` with its rows at positions `idx` (distinct) replaced by `rows`, exactly: the rows
/// are scattered into zeros and chosen by a mask, never added as a difference (which can move
/// a value by an ulp, past the ball or the box).
pub fn put<const D: usize>(full: Tensor<D>, idx: &Tensor<1, Int>, rows: Tensor<D>) -> Tensor<D> {
    let dims = full.dims();
    let device = full.device();
    let m = rows.dims()[0];
    let placed = Tensor::<D>::zeros(dims, &device).select_assign(
        0,
        idx.clone(),
        rows,
        IndexingUpdateOp::Add,
    );
    let hit = Tensor::<1>::zeros([dims[0]], &device)
        .select_assign(
            0,
            idx.clone(),
            Tensor::ones([m], &device),
            IndexingUpdateOp::Add,
        )
        .greater_elem(0.5)
        .reshape(per_example(&full))
        .expand(dims);
    full.mask_where(hit, placed)
}
