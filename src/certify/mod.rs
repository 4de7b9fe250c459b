//! Randomized smoothing (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via
//! Randomized Smoothing", ICML 2019): the smoothed classifier g(x) = argmax_c P(f(x + ε) = c),
//! ε ~ N(0, σ² I), with PREDICT and CERTIFY as in the paper and its reference code.
//!
//! Inputs are pixels in [0, 1]; noise is added in that space, before any normalisation inside
//! the model, so radii are L2 distances in pixel space. Noise is drawn on the device, many
//! images' noisy copies share one forward pass, votes are counted on the device, and only the
//! per-image class counts come back to the host.

pub mod plot;
pub mod report;
pub mod run;
pub mod sequential;
pub mod shard;

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statrs::distribution::{Beta, Binomial, ContinuousCDF, DiscreteCDF, Normal};

use crate::classifier::{Classifier, Input};

/// Noisy samples drawn per seed: the noise of sample j of image i depends only on
/// (seed, stage, i, j / NOISE_BLOCK), so counts do not depend on how images are grouped, nor on
/// the batch size once it is at least this.
pub const NOISE_BLOCK: usize = 128;

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

    /// The noise block size: [`NOISE_BLOCK`], or the batch if smaller.
    pub fn block(&self) -> usize {
        NOISE_BLOCK.min(self.batch.max(1))
    }

    /// As [`Smooth::sample_noise`], for the draws `first..first + num` of each example
    /// (`first` a multiple of [`Smooth::block`]): the counts of consecutive ranges add up to
    /// those of the whole range.
    pub fn sample_noise_from(
        &self,
        x: &C::Input,
        ids: &[u64],
        first: usize,
        num: usize,
        stage: Stage,
    ) -> Vec<Vec<u64>> {
        let device = x.x().device();
        let g = x.len();
        let k = self.base.decisions();
        let block = self.block();
        let first_block = (first / block) as u64;
        let mut counts = Tensor::<2>::zeros([g, k], &device);
        // Blocks of noisy copies, example after example, packed into forward passes of `batch`:
        // the owner of each row and the noise of each block.
        let mut owners: Vec<i64> = Vec::new();
        let mut noise: Vec<Tensor<D>> = Vec::new();
        let mut flush = |owners: &mut Vec<i64>, noise: &mut Vec<Tensor<D>>| {
            if owners.is_empty() {
                return;
            }
            let rows = owners.len();
            let owner = Tensor::<1, Int>::from_data(
                TensorData::new(std::mem::take(owners), [rows]),
                &device,
            );
            let copies = x.select(owner.clone());
            let noisy = copies.with_x(copies.x().clone() + Tensor::cat(std::mem::take(noise), 0));
            let votes = self.base.decide(noisy).one_hot::<2>(k).float();
            // Votes per example: onehot(owner)^T · onehot(vote); one_hot needs two columns.
            let per_example = if g == 1 {
                votes.sum_dim(0)
            } else {
                owner.one_hot::<2>(g).float().transpose().matmul(votes)
            };
            counts = counts.clone() + per_example;
        };
        let mut shape = x.x().dims();
        for (i, &id) in ids.iter().enumerate().take(g) {
            for (b, start) in (0..num).step_by(block).enumerate() {
                let size = block.min(num - start);
                if owners.len() + size > self.batch.max(block) {
                    flush(&mut owners, &mut noise);
                }
                device.seed(noise_seed(self.seed, stage, id, first_block + b as u64));
                shape[0] = size;
                noise.push(Tensor::<D>::random(
                    shape,
                    Distribution::Normal(0.0, self.sigma),
                    &device,
                ));
                owners.extend(std::iter::repeat_n(i as i64, size));
            }
        }
        flush(&mut owners, &mut noise);
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
        selection
            .iter()
            .zip(&estimation)
            .map(|(counts0, counts)| {
                let c_a = argmax(counts0);
                let n_a = counts[c_a];
                let p_a_lower = lower_confidence_bound(n_a, n as u64, alpha);
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

fn noise_seed(seed: u64, stage: Stage, id: u64, block: u64) -> u64 {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(stage as u64).to_le_bytes());
    key[16..24].copy_from_slice(&id.to_le_bytes());
    key[24..].copy_from_slice(&block.to_le_bytes());
    StdRng::from_seed(key).next_u64()
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
