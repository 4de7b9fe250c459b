//! The randomized-smoothing vote (Cohen et al. 2019, used as a detector): the base classifier
//! votes on `copies` noisy copies of the input; an input near a decision boundary, as most
//! adversarial examples are, splits the vote. The score is 1 − the top class's share of the
//! votes, in [0, 1 − 1/K]. Randomized, so scores of the same input differ from call to call;
//! not differentiable: the adaptive attacker descends its expectation over the noise (EOT).

use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::{Detector, Kind};
use crate::classifier::{Classifier, Input};
use crate::detect::DetectError;

/// Most noisy copies per input.
pub const MAX_COPIES: usize = 1024;
/// Most noisy copies in one forward pass (bounds memory whatever the batch).
pub const COPIES_PER_PASS: usize = 8192;
/// Noisy copies per input in the adaptive attacker's expectation (each step draws afresh).
pub const EOT_COPIES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// Standard deviation of the noise, input units (positive).
    pub sigma: f64,
    /// Noisy copies per input, 2 to [`MAX_COPIES`].
    pub copies: usize,
}

impl Vote {
    pub fn new(sigma: f64, copies: usize) -> Result<Self, DetectError> {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(DetectError::Invalid(format!(
                "--vote-sigma must be a positive number, got {sigma}"
            )));
        }
        if !(2..=MAX_COPIES).contains(&copies) {
            return Err(DetectError::Invalid(format!(
                "--vote-copies must be between 2 and {MAX_COPIES}, got {copies}"
            )));
        }
        Ok(Self { sigma, copies })
    }
}

impl Detector for Vote {
    fn kind(&self) -> Kind {
        Kind::Vote
    }

    fn randomized(&self) -> bool {
        true
    }

    /// EOT (Athalye et al., ICML 2018): the vote's expectation over the noise, with each
    /// copy's vote softened to its softmax, drawn afresh at every step.
    fn gradient(&self) -> Option<&'static str> {
        Some("EOT over the noise, softmax votes")
    }

    fn surrogate<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        let copies = self.copies.min(EOT_COPIES);
        let per_pass = (COPIES_PER_PASS / copies).max(1);
        let parts: Vec<Tensor<1>> = (0..x.len())
            .step_by(per_pass)
            .map(|start| self.soft_part(model, &x.range(start, start + per_pass), copies))
            .collect();
        Tensor::cat(parts, 0)
    }

    fn surrogate_exact(&self) -> bool {
        false
    }

    /// Scores `[N]`: the noisy copies of up to [`COPIES_PER_PASS`] / copies inputs per
    /// forward pass, votes counted on the device as onehot(owner)ᵀ · onehot(decision).
    fn score<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        let per_pass = (COPIES_PER_PASS / self.copies).max(1);
        let parts: Vec<Tensor<1>> = (0..x.len())
            .step_by(per_pass)
            .map(|start| self.score_part(model, &x.range(start, start + per_pass)))
            .collect();
        Tensor::cat(parts, 0)
    }
}

impl Vote {
    /// 1 − the top class's share of the softmax averaged over `copies` noisy copies.
    fn soft_part<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        copies: usize,
    ) -> Tensor<1> {
        let n = x.len();
        let owner = Tensor::<1, Int>::arange(0..n as i64, &x.x().device())
            .unsqueeze_dim::<2>(1)
            .repeat_dim(1, copies)
            .reshape([n * copies]);
        let noisy = x.select(owner);
        let noise = noisy.x().random_like(Distribution::Normal(0.0, self.sigma));
        let noisy = noisy.with_x(noisy.x().clone() + noise);
        let p = softmax(model.logits(noisy), 1);
        let k = p.dims()[1];
        let share = p.reshape([n, copies, k]).mean_dim(1).reshape([n, k]);
        share.max_dim(1).squeeze_dim::<1>(1).neg() + 1.0
    }

    fn score_part<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        let n = x.len();
        let device = x.x().device();
        let owner = Tensor::<1, Int>::arange(0..n as i64, &device)
            .unsqueeze_dim::<2>(1)
            .repeat_dim(1, self.copies)
            .reshape([n * self.copies]);
        let copies = x.select(owner.clone());
        let noise = copies
            .x()
            .random_like(Distribution::Normal(0.0, self.sigma));
        let noisy = copies.with_x(copies.x().clone() + noise);
        let votes = model.decide(noisy).one_hot::<2>(model.decisions()).float();
        let per_input = owner
            .one_hot::<2>(n.max(2))
            .float()
            .transpose()
            .matmul(votes)
            .narrow(0, 0, n);
        (per_input.max_dim(1).squeeze_dim::<1>(1) / self.copies as f64).neg() + 1.0
    }
}
