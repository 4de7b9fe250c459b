//! The losses attackers ascend, in one place: cross-entropy, the Carlini-Wagner margin, the
//! difference of logits ratio (DLR, Croce & Hein 2020) and the Kullback-Leibler divergence
//! TRADES uses.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// The loss an attack ascends.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AttackLoss {
    /// Cross-entropy of the true (untargeted) or target (targeted) class.
    Ce,
    /// Margin loss of Carlini & Wagner: the best other logit minus the true one (untargeted),
    /// or the target logit minus the best other one (targeted).
    Margin,
    /// Difference of logits ratio: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12), untargeted;
    /// −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12) towards target t, where z_π1 ≥ z_π2 ≥ …
    /// are the sorted logits. Invariant to shifting and scaling the logits; needs at least 3
    /// classes (4 when targeted).
    Dlr,
}

/// The DLR denominator's 1e-12 (Croce & Hein's reference value).
const DLR_TINY: f64 = 1e-12;

impl AttackLoss {
    /// The fewest classes the loss is defined for (`targeted`: with a target class).
    pub fn min_classes(self, targeted: bool) -> usize {
        match (self, targeted) {
            (AttackLoss::Dlr, false) => 3,
            (AttackLoss::Dlr, true) => 4,
            _ => 2,
        }
    }
}

/// The loss of each example, `[N]`, larger is better for the attacker. Untargeted (`target`
/// `None`): move away from the labels `y`; targeted: towards `target`.
pub fn per_example(
    loss: AttackLoss,
    logits: Tensor<2>,
    y: &Tensor<1, Int>,
    target: Option<&Tensor<1, Int>>,
) -> Tensor<1> {
    let [_, k] = logits.dims();
    let logit_of = |labels: &Tensor<1, Int>| {
        let onehot = labels.clone().one_hot::<2>(k).float();
        (logits.clone() * onehot.clone())
            .sum_dim(1)
            .squeeze_dim::<1>(1)
    };
    // The largest logit other than `labels`' own.
    let best_other = |labels: &Tensor<1, Int>| {
        let onehot = labels.clone().one_hot::<2>(k).float();
        (logits.clone() - onehot * 1e9)
            .max_dim(1)
            .squeeze_dim::<1>(1)
    };
    match (loss, target) {
        (AttackLoss::Ce, None) => -log_softmax(logits.clone(), 1)
            .gather(1, y.clone().unsqueeze_dim(1))
            .squeeze_dim::<1>(1),
        (AttackLoss::Ce, Some(t)) => log_softmax(logits.clone(), 1)
            .gather(1, t.clone().unsqueeze_dim(1))
            .squeeze_dim::<1>(1),
        (AttackLoss::Margin, None) => best_other(y) - logit_of(y),
        (AttackLoss::Margin, Some(t)) => logit_of(t) - best_other(t),
        (AttackLoss::Dlr, None) => {
            let sorted = logits.clone().sort_descending(1);
            let scale = column(&sorted, 0) - column(&sorted, 2) + DLR_TINY;
            (best_other(y) - logit_of(y)) / scale
        }
        (AttackLoss::Dlr, Some(t)) => {
            let sorted = logits.clone().sort_descending(1);
            let scale =
                column(&sorted, 0) - (column(&sorted, 2) + column(&sorted, 3)) * 0.5 + DLR_TINY;
            (logit_of(t) - logit_of(y)) / scale
        }
    }
}

/// Column `j` of `[N, K]` as `[N]`.
fn column(t: &Tensor<2>, j: usize) -> Tensor<1> {
    t.clone().narrow(1, j, 1).squeeze_dim::<1>(1)
}

/// The scalar the attacker ascends: [`per_example`] summed over the batch, so that each
/// example's input gradient is its own.
pub fn ascent(
    loss: AttackLoss,
    logits: Tensor<2>,
    y: &Tensor<1, Int>,
    target: Option<&Tensor<1, Int>>,
) -> Tensor<1> {
    per_example(loss, logits, y, target).sum()
}

/// Kullback-Leibler divergence KL(softmax(clean) ‖ softmax(adv)) per example, `[N, 1]`; the
/// caller treats `clean` as a constant.
pub fn kl_divergence(clean: Tensor<2>, adv: Tensor<2>) -> Tensor<2> {
    let log_p = log_softmax(clean, 1);
    let log_q = log_softmax(adv, 1);
    (log_p.clone().exp() * (log_p - log_q)).sum_dim(1)
}
