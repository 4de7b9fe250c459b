//! CERTIFY that stops early for a target radius r: the estimation samples are drawn in K
//! stages of growing size (a geometric schedule ending at n), and after each stage the
//! Clopper-Pearson bounds at level α/K decide. An image whose lower bound on pA clears
//! Φ(r/σ) is certified (radius σ Φ⁻¹(pA_lower) ≥ r); one whose upper bound falls below it
//! cannot be certified at r within n samples, and stops with the certificate its lower bound
//! gives (abstain below 1/2). The rest go on; the last stage decides. By Bonferroni over the K
//! stages each certificate is wrong with probability at most α, as with fixed n (Horváth et
//! al., ICLR 2022, and Voráček 2024 make the same argument with tighter sequences).
//!
//! The stages draw the same samples, in the same blocks, as fixed-n CERTIFY: an image that
//! reaches the last stage has seen exactly its n samples.

use super::{
    Certificate, Smooth, Stage, argmax, lower_confidence_bound, standard_normal,
    upper_confidence_bound,
};
use crate::classifier::{Classifier, Input};
use statrs::distribution::ContinuousCDF;

/// Stop early for this radius.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// The radius to certify, input units (L2).
    pub radius: f64,
    /// Stages K, at least 1 (1: fixed n at level α).
    pub stages: usize,
}

/// A certificate and the estimation samples it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Early {
    pub certificate: Certificate,
    pub samples: usize,
}

/// The cumulative sample counts of `stages` stages ending at `n`, each a multiple of
/// `block` (but the last), halving backwards from n, strictly increasing.
pub fn schedule(n: usize, stages: usize, block: usize) -> Vec<usize> {
    let mut ends: Vec<usize> = (0..stages.max(1))
        .map(|k| {
            let share = n >> (stages.max(1) - 1 - k).min(63);
            if k + 1 == stages.max(1) {
                n
            } else {
                (share / block.max(1) * block.max(1))
                    .max(block.max(1))
                    .min(n)
            }
        })
        .collect();
    ends.dedup();
    ends.retain(|&e| e > 0);
    ends
}

impl<C: Classifier<D>, const D: usize> Smooth<'_, C, D> {
    /// CERTIFY with early stopping for `target` (see the module): `n0` selection samples,
    /// then at most `n` estimation samples per example.
    pub fn certify_target(
        &self,
        x: &C::Input,
        ids: &[u64],
        n0: usize,
        n: usize,
        alpha: f64,
        target: Target,
    ) -> Vec<Early> {
        let g = x.len().min(ids.len());
        let selection = self.sample_noise(x, ids, n0, Stage::Selection);
        let c_a: Vec<usize> = selection.iter().map(|c| argmax(c)).collect();
        let ends = schedule(n, target.stages, self.block());
        let level = alpha / ends.len() as f64;
        let threshold = standard_normal().cdf(target.radius / self.sigma);
        let mut n_a = vec![0u64; g];
        let mut out: Vec<Option<Early>> = vec![None; g];
        let mut start = 0;
        for (k, &end) in ends.iter().enumerate() {
            let active: Vec<usize> = (0..g).filter(|&i| out[i].is_none()).collect();
            if active.is_empty() {
                break;
            }
            let rows = crate::data::indices(&active, &x.x().device());
            let sub = x.select(rows);
            let sub_ids: Vec<u64> = active.iter().map(|&i| ids[i]).collect();
            let counts =
                self.sample_noise_from(&sub, &sub_ids, start, end - start, Stage::Estimation);
            let last = k + 1 == ends.len();
            for (j, &i) in active.iter().enumerate() {
                n_a[i] += counts[j][c_a[i]];
                let lower = lower_confidence_bound(n_a[i], end as u64, level);
                let upper = upper_confidence_bound(n_a[i], end as u64, level);
                if last || lower > threshold || upper < threshold {
                    out[i] = Some(Early {
                        certificate: self.certificate(c_a[i], n_a[i], lower),
                        samples: end,
                    });
                }
            }
            start = end;
        }
        out.into_iter()
            .map(|e| e.expect("the last stage decides every example"))
            .collect()
    }

    /// The certificate for top class `c_a` with `n_a` votes and lower bound `lower`.
    fn certificate(&self, c_a: usize, n_a: u64, lower: f64) -> Certificate {
        if lower < 0.5 || Some(c_a) == self.base.abstain() {
            Certificate {
                class: None,
                radius: 0.0,
                p_a_lower: lower,
                n_a,
            }
        } else {
            Certificate {
                class: Some(c_a),
                radius: self.sigma * standard_normal().inverse_cdf(lower),
                p_a_lower: lower,
                n_a,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::schedule;

    #[test]
    fn the_schedule_halves_back_from_n_in_whole_blocks() {
        assert_eq!(
            schedule(100_000, 4, 128),
            vec![12_416, 24_960, 49_920, 100_000]
        );
        assert_eq!(schedule(1000, 1, 128), vec![1000]);
        assert_eq!(schedule(200, 4, 128), vec![128, 200]);
    }
}
