//! DP-SGD (Abadi et al. 2016): every example's gradient clipped to L2 norm at most C, the
//! clipped gradients summed, Gaussian noise of standard deviation σ·C added to the sum, divided
//! by the expected batch size. Batches are Poisson samples (each example in with probability q),
//! as the accountant assumes.
//!
//! Per-example gradient norms come without per-example backward passes ("ghost" norms,
//! Goodfellow 2015; Lee & Kifer 2021): one backward of the summed loss gives, for each layer,
//! the gradient with respect to its output (through a zero probe leaf, see
//! [`crate::model::image::Probed`]); with the layer's input that is every example's weight
//! gradient: for a fully connected layer ‖δᵢ aᵢᵀ‖² = ‖δᵢ‖²‖aᵢ‖², for a convolution the
//! per-example product δᵢ Uᵢᵀ with the unfolded input Uᵢ. A second forward and backward of
//! Σᵢ cᵢ Lᵢ, with cᵢ = min(1, C/‖gᵢ‖) held constant, gives the clipped sum. Two passes per
//! step, all on the device, no host loop over examples.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::module::unfold4d;
use burn::tensor::ops::UnfoldOptions;
use burn::tensor::{Distribution, Gradients, Int, Tensor};
use rand::{Rng, RngExt};

use crate::attack::AttackLoss;
use crate::attack::loss::per_example;
use crate::model::ImageNet;
use crate::model::image::Probed;

/// DP-SGD's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgd {
    /// C: the largest L2 norm an example's gradient keeps, > 0.
    pub clip_norm: f64,
    /// σ: noise standard deviation over C, ≥ 0.
    pub noise_multiplier: f64,
    /// The expected batch size q·n the noisy sum is divided by, > 0.
    pub expected_batch: f64,
}

/// One private step's gradients and what the step saw.
pub struct PrivateStep {
    /// (Σᵢ min(1, C/‖gᵢ‖) gᵢ + N(0, σ²C² I)) / (q·n), per parameter.
    pub grads: GradientsParams,
    /// The examples' summed cross-entropy `[1]` and correct count `[1]` (not read back).
    pub loss_sum: Tensor<1>,
    pub correct: Tensor<1>,
    /// ‖gᵢ‖ before clipping, `[N]` (not read back).
    pub norms: Tensor<1>,
}

/// The per-example gradient norms `[N]` of the summed loss whose backward gave `grads`, from
/// a probed forward pass's layers.
pub fn per_example_norms(layers: &[Probed], grads: &Gradients) -> Tensor<1> {
    let mut total: Option<Tensor<1>> = None;
    for layer in layers {
        let squared = match layer {
            Probed::Linear { input, probe } => {
                let d = probe
                    .grad(grads)
                    .expect("a probe is part of the loss's graph");
                let a = input.clone().inner();
                let dd = d.powi_scalar(2).sum_dim(1).squeeze_dim::<1>(1);
                let aa = a.powi_scalar(2).sum_dim(1).squeeze_dim::<1>(1);
                dd.clone() * aa + dd
            }
            Probed::Conv {
                input,
                probe,
                kernel,
                padding,
            } => {
                let d = probe
                    .grad(grads)
                    .expect("a probe is part of the loss's graph");
                let [n, c_out, h, w] = d.dims();
                let d = d.reshape([n, c_out, h * w]);
                let options = UnfoldOptions::new([1, 1], *padding, [1, 1]);
                let u = unfold4d(input.clone().inner(), *kernel, options);
                let weight = d.clone().matmul(u.swap_dims(1, 2));
                let w2 = weight.powi_scalar(2).sum_dim(2).sum_dim(1).reshape([n]);
                let b2 = d.sum_dim(2).powi_scalar(2).sum_dim(1).reshape([n]);
                w2 + b2
            }
        };
        total = Some(match total {
            None => squared,
            Some(t) => t + squared,
        });
    }
    total.expect("a network has layers").sqrt()
}

/// `steps` Poisson samples of the rows `0..n`: each row in each sample independently with
/// probability `q` (the sampling the accountant's analysis assumes; sizes vary around q·n).
pub fn poisson_batches(n: usize, q: f64, steps: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    (0..steps)
        .map(|_| (0..n).filter(|_| rng.random::<f64>() < q).collect())
        .collect()
}

/// The per-example cross-entropy `[N]`.
fn losses(logits: Tensor<2>, y: &Tensor<1, Int>) -> Tensor<1> {
    per_example(AttackLoss::Ce, logits, &y.clone().autodiff(), None)
}

/// One DP-SGD gradient of `model` (on an autodiff device) on the batch `x`, `y`.
pub fn private_step(model: &ImageNet, x: Tensor<4>, y: &Tensor<1, Int>, dp: &DpSgd) -> PrivateStep {
    // Pass 1: every example's gradient norm.
    let (logits, layers) = model.forward_probed(x.clone().autodiff());
    let grads = losses(logits.clone(), y).sum().backward();
    let norms = per_example_norms(&layers, &grads);
    let correct = logits
        .inner()
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(y.clone())
        .float()
        .sum();
    let factors = (norms.clone().recip() * dp.clip_norm).clamp_max(1.0);
    // Pass 2: the clipped sum, the factors held constant.
    let per = losses(model.forward(x.autodiff()), y);
    let loss_sum = per.clone().inner().sum();
    let weighted = (per * factors.autodiff()).sum() / dp.expected_batch;
    let mut params = GradientsParams::from_grads(weighted.backward(), model);
    let std = dp.noise_multiplier * dp.clip_norm / dp.expected_batch;
    if std > 0.0 {
        model.visit(&mut AddNoise {
            grads: &mut params,
            std,
        });
    }
    PrivateStep {
        grads: params,
        loss_sum,
        correct,
        norms,
    }
}

/// Adds N(0, std²) to every parameter's gradient.
struct AddNoise<'a> {
    grads: &'a mut GradientsParams,
    std: f64,
}

impl ModuleVisitor for AddNoise<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let noise = g.random_like(Distribution::Normal(0.0, self.std));
            self.grads.register(param.id, g + noise);
        }
    }
}
