//! Randomized smoothing (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via
//! Randomized Smoothing", ICML 2019): the smoothed classifier g(x) = argmax_c P(f(x + ε) = c),
//! ε ~ N(0, σ² I), with PREDICT and CERTIFY as in the paper and its reference code.
//!
//! Inputs are pixels in [0, 1]; noise is added in that space, before any normalisation inside
//! the model, so radii are L2 distances in pixel space. The noise of a whole forward pass is drawn on
//! the device in one counter-based operation ([`noise`]), many images' noisy copies share one
//! forward pass, votes are counted on the device, and only the
//! per-image class counts come back to the host.

pub mod noise;
pub mod plot;
pub mod predict;
pub mod report;
pub mod run;
pub mod sequential;
pub mod shard;

use burn::tensor::{Int, Tensor, TensorData};
use statrs::distribution::{Beta, Binomial, ContinuousCDF, DiscreteCDF, Normal};

use crate::classifier::{Classifier, Input};

/// The result of CERTIFY for one input.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Certificate {
    /// The certified class, or `None` (abstain) when pA's lower bound is below 1/2.
    pub class: Option<usize>,
    /// Certified L2 radius in pixel space: σ Φ⁻¹(pA_lower); 0 when abstaining.
    pub radius: f64,
    /// One-sided (1 − α) Clopper-Pearson lower bound on P(f(x + ε) = class).
    pub p_a_lower: f64,
    /// Votes for the chosen class among the n estimation samples.
    pub n_a: u64,
}

/// Which Monte Carlo draw; each uses fresh, independent noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// CERTIFY's n0 samples that pick the top class.
    Selection = 0,
    /// CERTIFY's n samples that estimate its probability.
    Estimation = 1,
    /// PREDICT's n samples.
    Prediction = 2,
}

/// A base classifier f (its decision rule, [`Classifier::decide`]) smoothed with isotropic
/// Gaussian noise of standard deviation `sigma` (input units: pixels in [0, 1]).
pub struct Smooth<'a, C: Classifier<D>, const D: usize> {
    pub base: &'a C,
    pub sigma: f64,
    /// Noisy inputs per forward pass.
    pub batch: usize,
    /// Seed of all noise; the same seed on the same device gives the same counts.
    pub seed: u64,
    /// Sound smoothing (`--sound`): integer noise on the inputs' grid, computed exactly
    /// ([`noise::Lattice`]); `None`: Gaussian noise added in floating point.
    pub lattice: Option<noise::Lattice>,
}

impl<C: Classifier<D>, const D: usize> Smooth<'_, C, D> {
    /// Decision counts `counts[i][c]` of f(x_i + ε) over `num` noise draws per example (the
    /// last decision is "no decision" for a base classifier that has one). `x` holds `G`
    /// examples; `ids` are their stable indices (e.g. in the test set), which key their noise.
    pub fn sample_noise(
        &self,
        x: &C::Input,
        ids: &[u64],
        num: usize,
        stage: Stage,
    ) -> Vec<Vec<u64>> {
        self.sample_noise_from(x, ids, 0, num, stage)
    }

    /// As [`Smooth::sample_noise`], for the draws `first..first + num` of each example: the
    /// noise of draw j of example `id` depends only on (seed, stage, id, j) ([`noise`]), so the
    /// counts of consecutive ranges add up to those of the whole range, whatever the batch.
    pub fn sample_noise_from(
        &self,
        x: &C::Input,
        ids: &[u64],
        first: usize,
        num: usize,
        stage: Stage,
    ) -> Vec<Vec<u64>> {
        let device = x.x().device();
        let g = x.len().min(ids.len());
        let k = self.base.decisions();
        let bases: Vec<u64> = ids[..g]
            .iter()
            .map(|&id| noise::base(self.seed, stage as u64, id))
            .collect();
        let mut counts = Tensor::<2>::zeros([g, k], &device);
        // Row r of the stacked draws is draw first + r % num of example r / num; forward
        // passes take `batch` rows at a time.
        let total = g * num;
        let mut shape = x.x().dims();
        for start in (0..total).step_by(self.batch.max(1)) {
            let end = (start + self.batch.max(1)).min(total);
            let owners: Vec<i64> = (start..end).map(|r| (r / num) as i64).collect();
            let keys: Vec<u64> = (start..end)
                .map(|r| noise::key(bases[r / num], (first + r % num) as u64))
                .collect();
            let owner =
                Tensor::<1, Int>::from_data(TensorData::new(owners, [end - start]), &device);
            let copies = x.select(owner.clone());
            shape[0] = end - start;
            let noisy = match &self.lattice {
                Some(lattice) => copies.with_x(lattice.perturb(copies.x().clone(), &keys)),
                None => {
                    let eps = noise::gaussian(&keys, shape, self.sigma, &device);
                    copies.with_x(copies.x().clone() + eps)
                }
            };
            let votes = self.base.decide(noisy).one_hot::<2>(k).float();
            // Votes per example: onehot(owner)^T · onehot(vote); one_hot needs two columns.
            let per_example = if g == 1 {
                votes.sum_dim(0)
            } else {
                owner.one_hot::<2>(g).float().transpose().matmul(votes)
            };
            counts = counts + per_example;
        }
        read_counts(counts, k)
    }

    /// CERTIFY: choose the top class with `n0` samples, estimate its probability with `n`
    /// fresh samples, and certify radius σ Φ⁻¹(pA_lower) if pA_lower ≥ 1/2, else abstain.
    /// Each certificate holds with probability at least 1 − `alpha`.
    pub fn certify(
        &self,
        x: &C::Input,
        ids: &[u64],
        n0: usize,
        n: usize,
        alpha: f64,
    ) -> Vec<Certificate> {
        let selection = self.sample_noise(x, ids, n0, Stage::Selection);
        let estimation = self.sample_noise(x, ids, n, Stage::Estimation);
        let slack = self.slack(x);
        selection
            .iter()
            .zip(&estimation)
            .map(|(counts0, counts)| {
                let c_a = argmax(counts0);
                let n_a = counts[c_a];
                let p_a_lower = (lower_confidence_bound(n_a, n as u64, alpha) - slack).max(0.0);
                if p_a_lower < 0.5 || Some(c_a) == self.base.abstain() {
                    Certificate {
                        class: None,
                        radius: 0.0,
                        p_a_lower,
                        n_a,
                    }
                } else {
                    let radius = self.sigma * standard_normal().inverse_cdf(p_a_lower);
                    Certificate {
                        class: Some(c_a),
                        radius,
                        p_a_lower,
                        n_a,
                    }
                }
            })
            .collect()
    }

    /// How far the sampled noise's probabilities can be from the exact law's, for inputs like
    /// `x`: 0 for Gaussian noise, the lattice's total-variation bound for sound smoothing. It
    /// is subtracted from every lower bound on pA (and added to upper bounds).
    pub fn slack(&self, x: &C::Input) -> f64 {
        let dims: usize = x.x().dims()[1..].iter().product();
        self.lattice.as_ref().map_or(0.0, |l| l.slack(dims))
    }

    /// PREDICT: the top class of `n` noisy samples if a two-sided binomial test of its count
    /// against the runner-up's rejects p = 1/2 at level `alpha`, else abstain (`None`).
    /// Returns a wrong class with probability at most `alpha`.
    /// A top vote of "no decision" (see [`Classifier::abstain`]) also abstains.
    pub fn predict(&self, x: &C::Input, ids: &[u64], n: usize, alpha: f64) -> Vec<Option<usize>> {
        self.sample_noise(x, ids, n, Stage::Prediction)
            .iter()
            .map(|counts| {
                let (top, n_a, n_b) = top_two(counts);
                (binomial_test_half(n_a, n_a + n_b) <= alpha && Some(top) != self.base.abstain())
                    .then_some(top)
            })
            .collect()
    }
}

fn read_counts(counts: Tensor<2>, k: usize) -> Vec<Vec<u64>> {
    let flat = counts
        .into_data()
        .try_to_vec::<f32>()
        .expect("vote counts read back from the device as f32");
    // f32 counts are exact integers up to 2^24 votes per class (n is capped below that).
    flat.chunks(k)
        .map(|r| r.iter().map(|&v| v.round() as u64).collect())
        .collect()
}

fn argmax(counts: &[u64]) -> usize {
    // First maximum, as numpy's argmax.
    (0..counts.len()).fold(0, |best, i| if counts[i] > counts[best] { i } else { best })
}

/// The most frequent class and its count, and the runner-up's count.
fn top_two(counts: &[u64]) -> (usize, u64, u64) {
    let top = argmax(counts);
    let second = (0..counts.len())
        .filter(|&i| i != top)
        .map(|i| counts[i])
        .max()
        .unwrap_or(0);
    (top, counts[top], second)
}

fn standard_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("standard normal")
}

/// One-sided (1 − alpha) Clopper-Pearson lower confidence bound on a binomial proportion
/// with `k` successes in `n` trials: the alpha quantile of Beta(k, n − k + 1), 0 when k = 0.
/// Equals statsmodels' `proportion_confint(k, n, alpha=2*alpha, method="beta")[0]`, which
/// Cohen et al.'s code uses.
pub fn lower_confidence_bound(k: u64, n: u64, alpha: f64) -> f64 {
    assert!(k <= n && n > 0, "need 0 <= k <= n, n > 0");
    if k == 0 {
        return 0.0;
    }
    Beta::new(k as f64, (n - k + 1) as f64)
        .expect("valid beta parameters")
        .inverse_cdf(alpha)
}

/// One-sided (1 − alpha) Clopper-Pearson upper confidence bound: 1 − the lower bound of the
/// failures, 1 when k = n.
pub fn upper_confidence_bound(k: u64, n: u64, alpha: f64) -> f64 {
    1.0 - lower_confidence_bound(n - k.min(n), n, alpha)
}

/// Two-sided p-value of the exact binomial test of `k` successes in `n` trials against
/// p = 1/2 (scipy's `binomtest(k, n, 0.5).pvalue`): by symmetry, twice the smaller tail,
/// capped at 1. `n = 0` gives 1.
pub fn binomial_test_half(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let b = Binomial::new(0.5, n).expect("valid binomial");
    let low = k.min(n - k);
    if 2 * low == n {
        return 1.0;
    }
    (2.0 * b.cdf(low)).min(1.0)
}
