//! The Square attack (Andriushchenko et al., ECCV 2020), L∞ and L2: a score-based random
//! search that uses only the model's outputs, never its gradients, so a defence that hides its
//! gradients does not stop it.
//!
//! L∞: each run starts from vertical stripes of ±epsilon and, at each query, proposes moving
//! one random square window of every example (side √(p · pixels), the same position for the
//! whole batch) to a random corner of the ball, with one random sign per example and channel
//! (the reference draws one sign per channel for the whole batch; each example sees the same
//! distribution either way). On a feature vector `[N, f]` the window is a strip of round(p · f)
//! coordinates, where the reference's square would always be a single coordinate. L2 ([`l2`]):
//! the start is a grid of the paper's centred square patterns, and each query moves the mass
//! of one window into a new pattern at another, staying on the epsilon sphere. A proposal is
//! kept when it lowers the margin z_y − max_{i≠y} z_i or misclassifies the example. The fraction p
//! starts at `p_init` and halves on the paper's schedule for 10,000 queries, read at the query
//! index as AutoAttack does (`resc_schedule=False`: a 5,000-query budget ends at p_init/128);
//! [`Square::with_rescaled_schedule`] stretches it over the budget instead. Examples already fooled drop out of the batch every few queries; that is
//! the only read-back besides one per run that seeds the host generator drawing the windows'
//! positions.

use burn::tensor::{Bool, Device, Distribution, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::ball::{Norm, per_example, put};

mod l2;
use super::{Attack, AttackError, Traced, positive};
use crate::classifier::{Classifier, Input};

/// AutoAttack's query budget.
pub const DEFAULT_QUERIES: usize = 5_000;
/// AutoAttack's initial fraction of the pixels a window covers.
pub const DEFAULT_P_INIT: f64 = 0.8;
/// Most queries of one run.
pub const MAX_QUERIES: usize = 1_000_000;
/// The smallest image side L2 Square works on (its first windows are a fifth of a side).
pub const L2_MIN_SIDE: usize = 5;
/// Queries between two shrinks of the batch to the examples not yet fooled.
const SHRINK_EVERY: usize = 20;

/// Square with validated parameters; build it with [`Square::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SquareParams")]
pub struct Square {
    norm: Norm,
    /// Radius of the threat model, input units.
    epsilon: f64,
    /// Model queries per run.
    queries: usize,
    /// Initial fraction of the pixels a window covers, in (0, 1].
    p_init: f64,
    restarts: usize,
    /// Whether the schedule is stretched over `queries` instead of read at the query index.
    rescale_schedule: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct SquareParams {
    norm: Norm,
    epsilon: f64,
    queries: usize,
    p_init: f64,
    restarts: usize,
    #[serde(default)]
    rescale_schedule: bool,
}

impl TryFrom<SquareParams> for Square {
    type Error = AttackError;

    fn try_from(p: SquareParams) -> Result<Self, AttackError> {
        Square::new(p.norm, p.epsilon, p.queries)?
            .with_p_init(p.p_init)?
            .with_restarts(p.restarts)
            .map(|s| s.with_rescaled_schedule(p.rescale_schedule))
    }
}

impl Square {
    /// Square of `queries` queries (1 to [`MAX_QUERIES`]) in the `norm` ball of radius
    /// `epsilon`, `p_init` 0.8, one run.
    pub fn new(norm: Norm, epsilon: f64, queries: usize) -> Result<Self, AttackError> {
        positive("epsilon", epsilon)?;
        if !(1..=MAX_QUERIES).contains(&queries) {
            return Err(AttackError::new(
                "queries",
                format!("must be between 1 and {MAX_QUERIES}, got {queries}"),
            ));
        }
        Ok(Self {
            norm,
            epsilon,
            queries,
            p_init: DEFAULT_P_INIT,
            restarts: 1,
            rescale_schedule: false,
        })
    }

    /// The initial window fraction, in (0, 1].
    pub fn with_p_init(self, p_init: f64) -> Result<Self, AttackError> {
        if !(p_init > 0.0 && p_init <= 1.0) {
            return Err(AttackError::new(
                "p_init",
                format!("must be in (0, 1], got {p_init}"),
            ));
        }
        Ok(Self { p_init, ..self })
    }

    pub fn with_restarts(self, restarts: usize) -> Result<Self, AttackError> {
        if !(1..=super::apgd::MAX_RESTARTS).contains(&restarts) {
            return Err(AttackError::new(
                "restarts",
                format!(
                    "must be between 1 and {}, got {restarts}",
                    super::apgd::MAX_RESTARTS
                ),
            ));
        }
        Ok(Self { restarts, ..self })
    }

    /// Stretches the paper's 10,000-query schedule over this budget (the reference's
    /// `resc_schedule=True`); AutoAttack's default, and Rampart's, reads it at the query index.
    pub fn with_rescaled_schedule(self, rescale_schedule: bool) -> Self {
        Self {
            rescale_schedule,
            ..self
        }
    }

    pub fn norm(&self) -> Norm {
        self.norm
    }

    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    pub fn queries(&self) -> usize {
        self.queries
    }

    /// The window fraction at query `it` (0-based): the paper's schedule for 10,000 queries,
    /// stretched over this budget when [`Square::with_rescaled_schedule`] asked for it.
    pub fn p_at(&self, it: usize) -> f64 {
        let it = if self.rescale_schedule {
            (it as f64 / self.queries as f64 * 10_000.0) as usize
        } else {
            it
        };
        let halvings = match it {
            0..=10 => 0,
            11..=50 => 1,
            51..=200 => 2,
            201..=500 => 3,
            501..=1000 => 4,
            1001..=2000 => 5,
            2001..=4000 => 6,
            4001..=6000 => 7,
            6001..=8000 => 8,
            _ => 9,
        };
        self.p_init / f64::from(1u32 << halvings)
    }
}

/// An example's batch as images `[N, c, h, w]`: 4-d inputs as they are, a feature vector
/// `[N, f]` as one row `[N, 1, 1, f]`.
fn image_shape(dims: &[usize]) -> [usize; 4] {
    match dims.len() {
        4 => [dims[0], dims[1], dims[2], dims[3]],
        3 => [dims[0], 1, dims[1], dims[2]],
        _ => [dims[0], 1, 1, dims[1..].iter().product()],
    }
}

/// Rows of `a` where `mask` holds, else rows of `b`.
fn blend(mask: &Tensor<1, Bool>, a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let shape = b.dims();
    let m = mask.clone().reshape(per_example(&b)).expand(shape);
    b.mask_where(m, a)
}

impl Square {
    fn single<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
    ) -> Traced<D> {
        let dims = x.x().dims();
        let [n, c, h, w] = image_shape(&dims);
        let device = y.device();
        let eps = self.epsilon;
        let bounds = model.domain().bounds;
        let clamp = |t: Tensor<4>| match bounds {
            Some((lo, hi)) => t.clamp(lo, hi),
            None => t,
        };
        let classes = model.num_classes();
        // The margin of each row, with the labels' one-hot penalty computed once per subset.
        let query = |xs: &C::Input, t: Tensor<4>, onehot: &Tensor<2>| {
            let mut shape = dims;
            shape[0] = t.dims()[0];
            let logits = model.logits(xs.with_x(t.reshape(shape)));
            let own = (logits.clone() * onehot.clone()).sum_dim(1);
            let other = (logits - onehot.clone() * 1e9).max_dim(1);
            (own - other).squeeze_dim::<1>(1)
        };
        let onehot_of = |ys: &Tensor<1, Int>| ys.clone().one_hot::<2>(classes).float();
        let clean = x.x().clone().reshape([n, c, h, w]);
        // Window positions come from a host generator seeded by the device's (one read).
        let mut rng = StdRng::seed_from_u64(
            Tensor::<1>::random([1], Distribution::Uniform(0.0, 4.0e9), &device)
                .into_scalar::<f64>() as u64,
        );
        let mut best = clamp(match self.norm {
            Norm::Linf => {
                let stripes =
                    Tensor::<4>::random([n, c, 1, w], Distribution::Uniform(-1.0, 1.0), &device)
                        .sign()
                        .expand([n, c, h, w]);
                clean.clone() + stripes * eps
            }
            Norm::L2 => clean.clone() + l2::start(n, c, h, w, &mut rng, &device) * eps,
        });
        let mut margin_min = query(x, best.clone(), &onehot_of(y));
        let fooled_at_start = margin_min.clone().lower_equal_elem(0.0);
        // Queries after which each example was still unfooled: its first fooling query − 1.
        let mut alive = Tensor::<1>::zeros([n], &device);
        let features = c * h * w;
        // The examples still correct: their positions in the batch, and their rows.
        let mut idx = Tensor::<1, Int>::arange(0..n as i64, &device);
        let (mut sx, mut sclean, mut sbest) = (x.clone(), clean.clone(), best.clone());
        let (mut smargin, mut salive, mut sonehot) =
            (margin_min.clone(), alive.clone(), onehot_of(y));
        let (mut lo, mut hi) = (clean.clone(), clean.clone());
        for it in 0..self.queries {
            if it % SHRINK_EVERY == 0 {
                best = put(best, &idx, sbest.clone());
                margin_min = put(margin_min, &idx, smargin.clone());
                alive = put(alive, &idx, salive.clone());
                let Some(left) = margin_min
                    .clone()
                    .greater_elem(0.0)
                    .nonzero()
                    .into_iter()
                    .next()
                else {
                    break;
                };
                idx = left;
                sx = x.select(idx.clone());
                sclean = clean.clone().select(0, idx.clone());
                sbest = best.clone().select(0, idx.clone());
                sonehot = onehot_of(&y.clone().select(0, idx.clone()));
                smargin = margin_min.clone().select(0, idx.clone());
                salive = alive.clone().select(0, idx.clone());
                // The L∞ ball intersected with the box, once per subset.
                lo = clamp(sclean.clone() - eps);
                hi = clamp(sclean.clone() + eps);
            }
            let m = smargin.dims()[0];
            let p = self.p_at(it);
            let proposal = match self.norm {
                Norm::Linf => {
                    let (sh, sw) = if h == 1 {
                        (1, ((p * w as f64).round() as usize).clamp(1, w))
                    } else {
                        let s = ((p * features as f64 / c as f64).sqrt().round() as usize).max(1);
                        (s.min(h.min(w)), s.min(h.min(w)))
                    };
                    let window = window(h, w, sh, sw, &mut rng, &device);
                    let signs = Tensor::<4>::random(
                        [m, c, 1, 1],
                        Distribution::Uniform(-1.0, 1.0),
                        &device,
                    )
                    .sign();
                    (sbest.clone() + window * signs * (2.0 * eps))
                        .max_pair(lo.clone())
                        .min_pair(hi.clone())
                }
                Norm::L2 => {
                    let s = ((p * features as f64 / c as f64).sqrt().round() as usize).max(3);
                    let s = (s + 1 - s % 2).min(h.min(w));
                    clamp(l2::propose(&sclean, &sbest, s, eps, &mut rng))
                }
            };
            let margin = query(&sx, proposal.clone(), &sonehot);
            let accept = margin
                .clone()
                .lower(smargin.clone())
                .bool_or(margin.clone().lower_equal_elem(0.0));
            smargin = smargin.mask_where(accept.clone(), margin);
            sbest = blend(&accept, proposal, sbest);
            salive = salive + smargin.clone().greater_elem(0.0).float();
        }
        let best = put(best, &idx, sbest);
        let margin_min = put(margin_min, &idx, smargin);
        let alive = put(alive, &idx, salive);
        let first = (alive + 1.0)
            .mask_fill(fooled_at_start, 0.0)
            .mask_fill(margin_min.greater_elem(0.0), -1.0);
        Traced {
            adversarial: best.reshape(dims),
            iteration: Some(first.int()),
        }
    }
}

/// A 0/1 mask `[1, 1, h, w]` with an `sh`×`sw` window of ones at a uniformly drawn position,
/// built on the host. (AutoAttack draws from one position fewer per axis, so that its windows
/// never reach the last row or column; on a 28x28 image that matters little, on a small input
/// it leaves coordinates that Square can never move.)
fn window(
    h: usize,
    w: usize,
    sh: usize,
    sw: usize,
    rng: &mut StdRng,
    device: &Device,
) -> Tensor<4> {
    let (r, q) = (rng.random_range(0..=h - sh), rng.random_range(0..=w - sw));
    let mut mask = vec![0f32; h * w];
    for row in mask.chunks_exact_mut(w).skip(r).take(sh) {
        row[q..q + sw].fill(1.0);
    }
    Tensor::from_data(TensorData::new(mask, [1, 1, h, w]), device)
}

impl Attack for Square {
    fn perturb<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        _target: Option<&Tensor<1, Int>>,
    ) -> Tensor<D> {
        self.single(model, x, y).adversarial
    }

    fn name(&self) -> String {
        "square".into()
    }

    fn runs(&self) -> usize {
        self.restarts
    }

    fn run<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        _target: Option<&Tensor<1, Int>>,
        _run: usize,
    ) -> Traced<D> {
        self.single(model, x, y)
    }

    fn supports_target(&self) -> bool {
        false
    }
}
