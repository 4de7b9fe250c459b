//! Membership inference: how well an attacker tells a model's training examples (members)
//! from examples it never saw (non-members). The loss-threshold attack (Yeom et al. 2018):
//! an example whose loss is low was probably trained on. The attacker ranks examples by the
//! logit-scaled confidence φ = z_y − log Σ_{j≠y} e^{z_j} = log(p_y / (1 − p_y)) (Carlini et al.
//! 2022), a monotone function of the loss that does not saturate: in f32 the cross-entropy of
//! a confident example is exactly 0, and hundreds of such ties would hide the low-FPR end.
//! Reported as Carlini et al. ask: the ROC area and the true-positive rate at a low
//! false-positive rate (0.1%), where an attack that works on a few examples shows even when
//! the area is near 0.5.

use burn::tensor::{Int, Tensor};
use serde::Serialize;

use crate::attack::AttackLoss;
use crate::attack::loss::per_example;
use crate::classifier::{Classifier, Input};
use crate::workload::{Examples, Job};

/// Every example's loss, its logit-scaled confidence φ and whether the model got it right.
pub struct Losses {
    pub loss: Vec<f32>,
    pub phi: Vec<f32>,
    pub correct: Vec<bool>,
}

/// φ = z_y − log Σ_{j≠y} e^{z_j} per row, `[N]`.
fn logit_confidence(logits: Tensor<2>, y: &Tensor<1, Int>) -> Tensor<1> {
    let k = logits.dims()[1];
    let onehot = y.clone().one_hot::<2>(k).float();
    let own = (logits.clone() * onehot.clone()).sum_dim(1);
    let others = logits - onehot * 1e30;
    let top = others.clone().max_dim(1);
    let lse = top.clone() + (others - top).exp().sum_dim(1).log();
    (own - lse).squeeze_dim::<1>(1)
}

/// Per-example cross-entropy of a model on its examples, batch by batch on the device (one
/// read-back per batch).
pub struct LossJob {
    pub batch: usize,
}

impl Job for LossJob {
    type Output = Result<Losses, String>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Result<Losses, String> {
        let n = ex.inputs.len();
        let mut out = Losses {
            loss: Vec::with_capacity(n),
            phi: Vec::with_capacity(n),
            correct: Vec::with_capacity(n),
        };
        for start in (0..n).step_by(self.batch.max(1)) {
            let x = ex.inputs.range(start, start + self.batch);
            let y: Tensor<1, Int> = ex.labels.clone().narrow(0, start, x.len());
            let logits = model.logits(x.clone());
            let hits = model.decide(x).equal(y.clone()).float();
            let phi = logit_confidence(logits.clone(), &y);
            let loss = per_example(AttackLoss::Ce, logits, &y, None);
            let all = Tensor::stack::<2>(vec![loss, phi, hits], 1);
            let values = all
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| format!("reading losses back from the device: {e:?}"))?;
            for row in values.chunks_exact(3) {
                out.loss.push(row[0]);
                out.phi.push(row[1]);
                out.correct.push(row[2] > 0.5);
            }
        }
        Ok(out)
    }
}

/// How well scores (higher: more likely a member) separate members from non-members.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Separation {
    /// Area under the ROC curve: P(a member scores above a non-member), ties counted half.
    pub auc: f64,
    /// True-positive rate at a false-positive rate of at most 0.1% and 1%.
    pub tpr_at_0_1_fpr: f64,
    pub tpr_at_1_fpr: f64,
}

/// The ROC area (Mann-Whitney, ties at their average rank) and the true-positive rates at low
/// false-positive rates of `members`' scores against `nonmembers`'.
pub fn separation(members: &[f64], nonmembers: &[f64]) -> Separation {
    let (m, n) = (members.len(), nonmembers.len());
    let mut all: Vec<(f64, bool)> = members
        .iter()
        .map(|&s| (s, true))
        .chain(nonmembers.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let rank = (i + j + 2) as f64 / 2.0;
        rank_sum += rank * all[i..=j].iter().filter(|(_, member)| *member).count() as f64;
        i = j + 1;
    }
    let auc = if m == 0 || n == 0 {
        f64::NAN
    } else {
        (rank_sum - (m * (m + 1)) as f64 / 2.0) / (m as f64 * n as f64)
    };
    Separation {
        auc,
        tpr_at_0_1_fpr: tpr_at(members, nonmembers, 0.001),
        tpr_at_1_fpr: tpr_at(members, nonmembers, 0.01),
    }
}

/// The fraction of members scoring above the threshold that lets at most a fraction `fpr` of
/// the non-members through.
fn tpr_at(members: &[f64], nonmembers: &[f64], fpr: f64) -> f64 {
    if members.is_empty() || nonmembers.is_empty() {
        return f64::NAN;
    }
    let mut sorted = nonmembers.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * nonmembers.len() as f64).floor() as usize;
    let threshold = sorted[allowed.min(sorted.len() - 1)];
    members.iter().filter(|&&s| s > threshold).count() as f64 / members.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roc_area_counts_ties_half() {
        let s = separation(&[3.0, 4.0, 5.0], &[1.0, 2.0, 3.0]);
        assert!((s.auc - 8.5 / 9.0).abs() < 1e-12, "{}", s.auc);
        // No false positive allowed: members above the best non-member, 3.
        assert!((s.tpr_at_0_1_fpr - 2.0 / 3.0).abs() < 1e-12);
        let chance = separation(&[1.0, 2.0], &[1.0, 2.0]);
        assert!((chance.auc - 0.5).abs() < 1e-12);
    }
}
