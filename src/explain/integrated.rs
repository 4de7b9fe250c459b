//! Integrated gradients (Sundararajan et al. 2017): (x − x') ⊙ ∫₀¹ ∂f_c(x' + α(x − x'))/∂x dα,
//! the integral by a quadrature [`Rule`] over `steps` points. The path points of a group of
//! examples go through the model together, in chunks of at most `batch` inputs.

use burn::tensor::{Int, Tensor, TensorData};

use super::quadrature::Rule;
use super::{Explainer, logit_gradient, repeated_rows, sum_blocks};
use crate::classifier::{Classifier, Input};

/// The reference input x'.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Baseline {
    /// All zeros (black, for pixels).
    Zero,
    /// The input blurred by a box filter of this half-width in pixels (images only; other
    /// inputs use zeros).
    Blur(usize),
}

#[derive(Debug, Clone, Copy)]
pub struct IntegratedGradients {
    pub steps: usize,
    pub rule: Rule,
    pub baseline: Baseline,
    /// Most path points per forward pass.
    pub batch: usize,
}

impl Default for IntegratedGradients {
    fn default() -> Self {
        Self {
            steps: 50,
            rule: Rule::GaussLegendre,
            baseline: Baseline::Zero,
            batch: 512,
        }
    }
}

impl IntegratedGradients {
    /// The baseline for inputs `x`.
    pub fn baseline<const D: usize>(&self, x: &Tensor<D>) -> Tensor<D> {
        match self.baseline {
            Baseline::Zero => x.zeros_like(),
            Baseline::Blur(r) if D == 4 && r > 0 => blur(x.clone(), r),
            Baseline::Blur(_) => x.zeros_like(),
        }
    }
}

/// A box blur of half-width `r` over the last two axes (edges replicated), as a mean of shifted
/// copies.
fn blur<const D: usize>(x: Tensor<D>, r: usize) -> Tensor<D> {
    let dims = x.dims();
    let (h, w) = (dims[D - 2], dims[D - 1]);
    let shift = |t: Tensor<D>, axis: usize, len: usize, d: isize| -> Tensor<D> {
        // Replicate the edge: index i reads clamp(i + d).
        let idx: Vec<i64> = (0..len as isize)
            .map(|i| (i + d).clamp(0, len as isize - 1) as i64)
            .collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [len]), &t.device());
        t.select(axis, idx)
    };
    let k = 2 * r + 1;
    let mut rows = x.zeros_like();
    for d in -(r as isize)..=(r as isize) {
        rows = rows + shift(x.clone(), D - 2, h, d);
    }
    let rows = rows / k as f64;
    let mut out = rows.zeros_like();
    for d in -(r as isize)..=(r as isize) {
        out = out + shift(rows.clone(), D - 1, w, d);
    }
    out / k as f64
}

impl Explainer for IntegratedGradients {
    fn name(&self) -> String {
        match self.baseline {
            Baseline::Zero => format!("ig-{}-{}", self.steps, self.rule.name()),
            Baseline::Blur(r) => format!("ig-{}-{}-blur{r}", self.steps, self.rule.name()),
        }
    }

    fn attribute<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        target: &Tensor<1, Int>,
    ) -> Tensor<D> {
        let clean = x.x().clone();
        let base = self.baseline(&clean);
        let diff = clean.clone() - base.clone();
        let (alphas, weights) = self.rule.nodes(self.steps);
        let n = x.len();
        let device = clean.device();
        // Whole path points per chunk: `per` α values for all n examples.
        let per = (self.batch / n.max(1)).max(1);
        let mut total = clean.zeros_like();
        for (a, w) in alphas.chunks(per).zip(weights.chunks(per)) {
            let m = a.len();
            let rows = repeated_rows(n, m, &device);
            let path_inputs = x.select(rows.clone());
            // α for each row, broadcast over the example's coordinates.
            let mut shape = [1usize; D];
            shape[0] = m * n;
            let alpha: Vec<f32> = a
                .iter()
                .flat_map(|v| std::iter::repeat_n(*v as f32, n))
                .collect();
            let alpha =
                Tensor::<1>::from_data(TensorData::new(alpha, [m * n]), &device).reshape(shape);
            let weight: Vec<f32> = w
                .iter()
                .flat_map(|v| std::iter::repeat_n(*v as f32, n))
                .collect();
            let weight =
                Tensor::<1>::from_data(TensorData::new(weight, [m * n]), &device).reshape(shape);
            let points =
                base.clone().select(0, rows.clone()) + diff.clone().select(0, rows.clone()) * alpha;
            let g = logit_gradient(
                model,
                &path_inputs.with_x(points),
                &target.clone().select(0, rows),
            );
            // Σ_k w_k g_k per example: rows are α-major, so sum the m blocks of n.
            total = total + sum_blocks(g * weight, m);
        }
        total * diff
    }
}
