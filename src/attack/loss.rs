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
            let z = largest(&logits, 3);
            (best_other(y) - logit_of(y)) / (z[0].0.clone() - z[2].0.clone() + DLR_TINY)
        }
        (AttackLoss::Dlr, Some(t)) => {
            let z = largest(&logits, 4);
            let scale = z[0].0.clone() - (z[2].0.clone() + z[3].0.clone()) * 0.5 + DLR_TINY;
            (logit_of(t) - logit_of(y)) / scale
        }
    }
}

/// The class with the `rank`-th largest logit of each row (0: the top class), `[N]`; `rank`
/// past the last class means the last.
pub fn class_at_rank(logits: &Tensor<2>, rank: usize) -> Tensor<1, Int> {
    let k = logits.dims()[1];
    let mut z = largest(logits, (rank + 1).min(k));
    z.pop().map(|(_, class)| class).expect("at least one class")
}

/// The `count` (≤ classes) largest logits of each row, largest first, each `[N]` with its
/// class (equal logits counted apart, as a sort would). `count` max reductions, the winner
/// masked out each time, rather than a sort: some device backends sort on the host.
fn largest(logits: &Tensor<2>, count: usize) -> Vec<(Tensor<1>, Tensor<1, Int>)> {
    let k = logits.dims()[1];
    let mut rest = logits.clone();
    (0..count)
        .map(|_| {
            let (values, at) = rest.clone().max_dim_with_indices(1);
            let at = at.squeeze_dim::<1>(1);
            let taken = at.clone().one_hot::<2>(k).equal_elem(1);
            rest = rest.clone().mask_fill(taken, f32::NEG_INFINITY);
            (values.squeeze_dim::<1>(1), at)
        })
        .collect()
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
