//! Voting ensembles: several image networks, one weight per member (normalised to sum 1)
//! and a strategy:
//! - `weighted_majority`: each member votes for its argmax class with its weight; the heaviest
//!   class wins.
//! - `unanimous`: the class if every member agrees, else an explicit "no decision" (decision
//!   index `classes`), which callers see and which never counts as correct.
//! - `highest_confidence`: the member with the largest softmax probability decides.
//! - `mean_logits` / `mean_probs`: argmax of the weighted mean of the members' logits or
//!   softmax probabilities (differentiable).
//!
//! Ties go to the lowest class (or member) index. Attacks differentiate a surrogate (the
//! weighted mean logits for `mean_logits`, the log of the weighted mean probabilities for every
//! other strategy) and are judged on the real decision rule (see [`crate::classifier`]).

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ImageNet;

#[derive(Debug, thiserror::Error)]
#[error("bad ensemble: {0}")]
pub struct EnsembleError(pub String);

/// How the members' outputs become one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Strategy {
    WeightedMajority,
    Unanimous,
    HighestConfidence,
    MeanLogits,
    MeanProbs,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = serde_json::to_value(self).expect("strategy serialises");
        f.write_str(v.as_str().unwrap_or_default())
    }
}

/// Row-wise argmax with ties going to the lowest index, independent of the backend's own
/// tie rule: among entries within 1e-5 of the row maximum, the first one.
pub fn first_max(scores: Tensor<2>) -> Tensor<1, Int> {
    let [_, k] = scores.dims();
    let device = scores.device();
    let top = scores.clone().max_dim(1);
    let is_max = (scores - top).greater_equal_elem(-1e-5).float();
    let rank = Tensor::<1, Int>::arange(0..k as i64, &device)
        .float()
        .neg()
        .add_scalar(k as f64)
        .unsqueeze_dim::<2>(0);
    (is_max * rank).argmax(1).squeeze_dim::<1>(1)
}

/// The decision of `strategy` for member logits `[M, N, K]` with normalised `weights` `[M]`:
/// a class in `0..K`, or `K` ("no decision") for a unanimous ensemble that disagrees.
pub fn decide(strategy: Strategy, logits: Tensor<3>, weights: &Tensor<1>) -> Tensor<1, Int> {
    let [m, n, k] = logits.dims();
    let w = weights.clone().reshape([m, 1, 1]);
    let preds = || logits.clone().argmax(2).reshape([m, n]);
    match strategy {
        Strategy::WeightedMajority => {
            let votes = (preds().one_hot::<3>(k).float() * w).sum_dim(0);
            first_max(votes.reshape([n, k]))
        }
        Strategy::Unanimous => {
            let preds = preds();
            let first = preds.clone().narrow(0, 0, 1);
            let all_agree = preds.equal(first.clone().expand([m, n])).int().min_dim(0);
            let decision = first.clone() * all_agree.clone() + (all_agree.neg() + 1) * k as i64;
            decision.reshape([n])
        }
        Strategy::HighestConfidence => {
            let confidence = softmax(logits.clone(), 2).max_dim(2).reshape([m, n]);
            let member = first_max(confidence.transpose()).reshape([n, 1]);
            preds().transpose().gather(1, member).reshape([n])
        }
        Strategy::MeanLogits => first_max((logits * w).sum_dim(0).reshape([n, k])),
        Strategy::MeanProbs => first_max((softmax(logits, 2) * w).sum_dim(0).reshape([n, k])),
    }
}

/// The differentiable stand-in attacks ascend, `[N, K]`: weighted mean logits for
/// `mean_logits`, else the log of the weighted mean probabilities.
pub fn surrogate(strategy: Strategy, logits: Tensor<3>, weights: &Tensor<1>) -> Tensor<2> {
    let [m, n, k] = logits.dims();
    let w = weights.clone().reshape([m, 1, 1]);
    match strategy {
        Strategy::MeanLogits => (logits * w).sum_dim(0).reshape([n, k]),
        _ => (softmax(logits, 2) * w)
            .sum_dim(0)
            .reshape([n, k])
            .clamp_min(1e-12)
            .log(),
    }
}

/// Member models with weights and a strategy.
#[derive(Debug, Clone)]
pub struct Ensemble {
    pub members: Vec<ImageNet>,
    /// One per member, normalised to sum 1.
    pub weights: Vec<f64>,
    pub strategy: Strategy,
    pub num_classes: usize,
}

impl Ensemble {
    /// Checks that the members agree on the class count and that the weights are finite,
    /// non-negative and not all zero; normalises them.
    pub fn new(
        members: Vec<ImageNet>,
        weights: Vec<f64>,
        strategy: Strategy,
    ) -> Result<Self, EnsembleError> {
        if members.is_empty() {
            return Err(EnsembleError("no members".into()));
        }
        if weights.len() != members.len() {
            return Err(EnsembleError(format!(
                "{} weights for {} members",
                weights.len(),
                members.len()
            )));
        }
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(EnsembleError(format!(
                "weights must be finite and non-negative, got {weights:?}"
            )));
        }
        // Scaled by the largest first, so that huge weights cannot overflow the sum.
        let largest = weights.iter().cloned().fold(0.0, f64::max);
        if largest <= 0.0 {
            return Err(EnsembleError("the weights are all zero".into()));
        }
        let weights: Vec<f64> = weights.iter().map(|w| w / largest).collect();
        let total: f64 = weights.iter().sum();
        let num_classes = members[0].num_classes();
        if let Some(i) = members.iter().position(|m| m.num_classes() != num_classes) {
            return Err(EnsembleError(format!(
                "member {i} has {} classes, member 0 has {num_classes}",
                members[i].num_classes()
            )));
        }
        Ok(Self {
            members,
            weights: weights.iter().map(|w| w / total).collect(),
            strategy,
            num_classes,
        })
    }

    /// Every member's logits for pixels `x` `[N, 1, 28, 28]`, stacked `[M, N, K]`.
    pub fn member_logits(&self, x: Tensor<4>) -> Tensor<3> {
        Tensor::stack(
            self.members.iter().map(|m| m.forward(x.clone())).collect(),
            0,
        )
    }

    /// Inference-mode copies of the members (no autodiff, no dropout).
    pub fn valid(&self) -> Self {
        Self {
            members: self.members.iter().map(|m| m.valid()).collect(),
            ..self.clone()
        }
    }

    /// The normalised weights as a tensor `[M]` on `device`.
    pub fn weight_tensor(&self, device: &Device) -> Tensor<1> {
        let w: Vec<f32> = self.weights.iter().map(|&w| w as f32).collect();
        Tensor::from_data(TensorData::new(w, [self.weights.len()]), device)
    }
}
