//! SmoothGrad (Smilkov et al. 2017): the mean of an explainer's attributions over `samples`
//! noisy copies x + N(0, σ²) (σ in input units), the noise for all copies drawn in one
//! operation and the copies attributed together.

use burn::tensor::{Distribution, Int, Tensor};

use super::{Explainer, repeated_rows, sum_blocks};
use crate::classifier::{Classifier, Input};

#[derive(Debug, Clone, Copy)]
pub struct SmoothGrad<E> {
    pub inner: E,
    pub samples: usize,
    /// Noise standard deviation, input units.
    pub sigma: f64,
}

impl<E: Explainer> Explainer for SmoothGrad<E> {
    fn name(&self) -> String {
        format!("smoothgrad-{}-{}", self.samples, self.inner.name())
    }

    fn attribute<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        target: &Tensor<1, Int>,
    ) -> Tensor<D> {
        let n = x.len();
        let s = self.samples.max(1);
        let device = x.x().device();
        let rows = repeated_rows(n, s, &device);
        let copies = x.select(rows.clone());
        let noisy = copies.x().clone()
            + copies
                .x()
                .random_like(Distribution::Normal(0.0, self.sigma));
        let a = self.inner.attribute(
            model,
            &copies.with_x(noisy),
            &target.clone().select(0, rows),
        );
        sum_blocks(a, s) / s as f64
    }
}
