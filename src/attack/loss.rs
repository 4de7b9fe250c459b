//! The losses attackers ascend, in one place: cross-entropy, the Carlini-Wagner margin, and the
//! Kullback-Leibler divergence TRADES uses.

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
}

/// The scalar the attacker ascends, summed over the batch so that each example's gradient is
/// its own. Untargeted: move away from `labels`; targeted: towards them.
pub fn ascent(
    loss: AttackLoss,
    logits: Tensor<2>,
    labels: &Tensor<1, Int>,
    targeted: bool,
) -> Tensor<1> {
    let [_, k] = logits.dims();
    let onehot = labels.clone().one_hot::<2>(k).float();
    let sign = if targeted { -1.0 } else { 1.0 };
    match loss {
        AttackLoss::Ce => {
            let nll = -(log_softmax(logits, 1) * onehot).sum_dim(1);
            nll.sum() * sign
        }
        AttackLoss::Margin => {
            let own = (logits.clone() * onehot.clone()).sum_dim(1);
            let others = logits - onehot * 1e9;
            let best_other = others.max_dim(1);
            ((best_other - own) * sign).sum()
        }
    }
}

/// Kullback-Leibler divergence KL(softmax(clean) ‖ softmax(adv)) per example, `[N, 1]`; the
/// caller treats `clean` as a constant.
pub fn kl_divergence(clean: Tensor<2>, adv: Tensor<2>) -> Tensor<2> {
    let log_p = log_softmax(clean, 1);
    let log_q = log_softmax(adv, 1);
    (log_p.clone().exp() * (log_p - log_q)).sum_dim(1)
}
