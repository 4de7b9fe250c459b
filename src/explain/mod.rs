//! Explanations: which input coordinates a classifier's output for a class depends on.
//! [`Explainer`] is the extension point (one file per method, as attacks are); gradient
//! methods go through Burn's autodiff on the input, batched, on any [`Classifier`].
//!
//! Attributions have the input's shape and its units (pixels in [0, 1] times logit per
//! pixel, i.e. logit units per coordinate): summed, integrated gradients give
//! f_c(x) − f_c(baseline) up to the quadrature error ([`completeness_delta`]).

pub mod faithfulness;
pub mod gradient;
pub mod integrated;
pub mod lime;
pub mod method;
pub mod quadrature;
pub mod render;
pub mod run;
pub mod smoothgrad;
pub mod study;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::classifier::{Classifier, Input};

pub use gradient::{GradientTimesInput, Saliency};
pub use integrated::{Baseline, IntegratedGradients};
pub use quadrature::Rule;
pub use smoothgrad::SmoothGrad;

/// Why an explanation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Invalid(String),
    #[error("reading attributions back from the device: {0}")]
    ReadBack(String),
}

/// Float values read back from the device once.
pub fn host_floats<const K: usize>(t: Tensor<K>) -> Result<Vec<f32>, ExplainError> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ExplainError::ReadBack(format!("{e:?}")))
}

/// A way to attribute a class's logit to the input's coordinates.
pub trait Explainer {
    /// For reports: "saliency", "ig-50-gauss-legendre", ...
    fn name(&self) -> String;

    /// Attributions `[N, ...]` (the input's shape) of each example's logit for `target[i]`.
    fn attribute<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        target: &Tensor<1, Int>,
    ) -> Tensor<D>;
}

/// Each example's logit for its target class, `[N]`.
pub fn target_logits(logits: Tensor<2>, target: &Tensor<1, Int>) -> Tensor<1> {
    let n = target.dims()[0];
    logits
        .gather(1, target.clone().reshape([n, 1]))
        .reshape([n])
}

/// ∂ f_target(x) / ∂x for every example (one backward pass: each example's logit depends
/// on its own input only), as a plain tensor.
pub fn logit_gradient<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    target: &Tensor<1, Int>,
) -> Tensor<D> {
    let xa = x.x().clone().autodiff().require_grad();
    let logits = model.logits(x.with_x(xa.clone()));
    let picked = target_logits(logits, &target.clone().autodiff()).sum();
    crate::attack::pgd::input_gradient(&xa, picked)
}

/// Σ attributions − (f_target(x) − f_target(baseline)) per example, `[N]`: zero for an exact
/// integrated-gradients attribution (Sundararajan et al. 2017's completeness).
pub fn completeness_delta<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    baseline: &C::Input,
    target: &Tensor<1, Int>,
    attributions: Tensor<D>,
) -> Tensor<1> {
    let fx = target_logits(model.logits(x.clone()), target);
    let fb = target_logits(model.logits(baseline.clone()), target);
    let total = attributions
        .flatten::<2>(1, D - 1)
        .sum_dim(1)
        .squeeze_dim::<1>(1);
    total - (fx - fb)
}

/// Row indices `0..n` repeated `times` times, copy after copy, `[times · n]`.
pub(crate) fn repeated_rows(n: usize, times: usize, device: &Device) -> Tensor<1, Int> {
    let rows: Vec<i64> = (0..times).flat_map(|_| 0..n as i64).collect();
    Tensor::from_data(TensorData::new(rows, [times * n]), device)
}

/// The sum of `times` copy-after-copy blocks of `n` examples each, `[n, ...]`.
pub(crate) fn sum_blocks<const D: usize>(t: Tensor<D>, times: usize) -> Tensor<D> {
    let mut dims = t.dims();
    dims[0] /= times.max(1);
    let n = dims[0];
    let f: usize = dims[1..].iter().product();
    t.reshape([times, n * f]).sum_dim(0).reshape(dims)
}
