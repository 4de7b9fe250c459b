//! SmoothGrad (Smilkov et al. 2017): the mean of an explainer's attributions over `samples`
//! noisy copies x + N(0, σ²) (σ in input units), attributed in blocks of at most `batch`
//! inputs (at least one copy of each example), the noise of a block drawn in one operation.

use burn::tensor::{Distribution, Int, Tensor};

use super::{Explainer, repeated_rows, sum_blocks};
use crate::classifier::{Classifier, Input};

#[derive(Debug, Clone, Copy)]
pub struct SmoothGrad<E> {
    pub inner: E,
    pub samples: usize,
    /// Noise standard deviation, input units.
    pub sigma: f64,
    /// Most noisy inputs attributed together.
    pub batch: usize,
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
        let per = (self.batch / n.max(1)).clamp(1, s);
        let device = x.x().device();
        let mut total: Option<Tensor<D>> = None;
        for first in (0..s).step_by(per) {
            let k = per.min(s - first);
            let rows = repeated_rows(n, k, &device);
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
            let block = sum_blocks(a, k);
            total = Some(match total {
                Some(t) => t + block,
                None => block,
            });
        }
        total.expect("at least one block") / s as f64
    }
}
