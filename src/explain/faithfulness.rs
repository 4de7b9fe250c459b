//! How far an explanation can be trusted, measured:
//! - deletion and insertion curves (Petsiuk et al. 2018): the target's probability as the
//!   top-attributed coordinates are replaced by the baseline (deletion: lower area is better),
//!   or put into the baseline (insertion: higher is better), against a random ranking;
//! - stability: Spearman rank correlation and top-k overlap of attributions under small input
//!   noise or another LIME seed;
//! - percentile-bootstrap intervals of the means over examples.
//!
//! Every curve point of every example is one perturbed input; they go through the model in
//! chunks, one read-back per chunk.

use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, Int, Tensor};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use statrs::statistics::{Data, OrderStatistics, RankTieBreaker, Statistics};

use super::{ExplainError, host_floats, repeated_rows, target_logits};
use crate::classifier::{Classifier, Input};

/// A mean over examples with its percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    /// Examples averaged.
    pub n: usize,
}

/// The mean of `v` with a 95% percentile-bootstrap interval from `resamples` resamples.
pub fn bootstrap(v: &[f64], resamples: usize, seed: u64) -> Estimate {
    let n = v.len();
    if n == 0 {
        return Estimate {
            mean: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
            n,
        };
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    let means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| v[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    let mut data = Data::new(means);
    Estimate {
        mean,
        low: data.quantile(0.025),
        high: data.quantile(0.975),
        n,
    }
}

/// Spearman's rank correlation (average ranks for ties): Pearson's of the ranks. NaN when
/// either side is constant or not finite.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let ra = Data::new(a.to_vec()).ranks(RankTieBreaker::Average);
    let rb = Data::new(b.to_vec()).ranks(RankTieBreaker::Average);
    let cov = (&ra).covariance(&rb);
    cov / ((&ra).std_dev() * (&rb).std_dev())
}

/// The share of the `k` largest |a| that are among the `k` largest |b|.
pub fn top_k_overlap(a: &[f64], b: &[f64], k: usize) -> f64 {
    let (ta, tb) = (largest(a, k), largest(b, k));
    ta.iter().filter(|i| tb.contains(i)).count() as f64 / k.max(1) as f64
}

/// Indices of the `k` largest |values|, largest first.
pub fn largest(values: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()));
    order.truncate(k);
    order
}

/// Area under a curve sampled at equally spaced fractions of [0, 1] (trapezoid rule).
pub fn area(curve: &[f64]) -> f64 {
    let k = curve.len().saturating_sub(1).max(1) as f64;
    curve.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum::<f64>() / k
}

/// Deletion and insertion curves of one ranking, per example.
#[derive(Debug, Clone, Serialize)]
pub struct Curves {
    /// `[N][steps + 1]`: the target probability after deleting the top fraction k/steps.
    pub deletion: Vec<Vec<f64>>,
    /// `[N][steps + 1]`: after inserting the top fraction k/steps into the baseline.
    pub insertion: Vec<Vec<f64>>,
}

impl Curves {
    pub fn deletion_areas(&self) -> Vec<f64> {
        self.deletion.iter().map(|c| area(c)).collect()
    }

    pub fn insertion_areas(&self) -> Vec<f64> {
        self.insertion.iter().map(|c| area(c)).collect()
    }
}

/// The deletion and insertion curves of ranking inputs `x` `[N, ...]` by `scores` (same
/// shape; larger first), removed coordinates taking `baseline`'s values; `steps` + 1 points
/// per curve, at most `batch` inputs per forward pass.
pub fn curves<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    target: &Tensor<1, Int>,
    scores: Tensor<D>,
    baseline: Tensor<D>,
    steps: usize,
    batch: usize,
) -> Result<Curves, ExplainError> {
    let dims = x.x().dims();
    let (n, p) = (dims[0], dims[1..].iter().product::<usize>());
    let device = x.x().device();
    let points = steps.max(1) + 1;
    // Each coordinate's place in its example's ranking (0 = most attributed).
    let place = scores
        .reshape([n, p])
        .argsort_descending(1)
        .argsort(1)
        .float();
    let flat_x = x.x().clone().reshape([n, p]);
    let flat_b = baseline.reshape([n, p]);
    let mut out = [vec![0.0; n * points], vec![0.0; n * points]];
    let per = (batch / n.max(1)).max(1);
    for first in (0..points).step_by(per) {
        let last = (first + per).min(points);
        let mut masks = Vec::new();
        for k in first..last {
            let count = (k * p) as f64 / steps.max(1) as f64;
            masks.push(place.clone().lower_elem(count.round()).float());
        }
        let m = Tensor::cat(masks, 0);
        let copies = last - first;
        let xs = flat_x.clone().repeat_dim(0, copies);
        let bs = flat_b.clone().repeat_dim(0, copies);
        let deleted = xs.clone() * (m.ones_like() - m.clone()) + bs.clone() * m.clone();
        let inserted = bs * (m.ones_like() - m.clone()) + xs * m;
        let rows = repeated_rows(n, copies, &device);
        let t = target.clone().select(0, rows.clone());
        for (which, perturbed) in [deleted, inserted].into_iter().enumerate() {
            let mut shape = dims;
            shape[0] = n * copies;
            let input = x.select(rows.clone()).with_x(perturbed.reshape(shape));
            let prob = target_logits(softmax(model.logits(input), 1), &t);
            let v = host_floats(prob)?;
            for (j, value) in v.into_iter().enumerate() {
                let (k, i) = (first + j / n, j % n);
                out[which][i * points + k] = f64::from(value);
            }
        }
    }
    let split = |v: &[f64]| v.chunks(points).map(<[f64]>::to_vec).collect();
    Ok(Curves {
        deletion: split(&out[0]),
        insertion: split(&out[1]),
    })
}

/// A random ranking of inputs shaped like `like` (uniform scores drawn on the device).
pub fn random_scores<const D: usize>(like: &Tensor<D>) -> Tensor<D> {
    Tensor::random(like.dims(), Distribution::Uniform(0.0, 1.0), &like.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scipy.stats.spearmanr([1, 2, 2, 5, 3, 9], [2, 1, 4, 4, 6, 5]).statistic
    /// = 0.6617647058823529 (average ranks for the ties).
    #[test]
    fn spearman_matches_scipy_with_ties() {
        let r = spearman(&[1., 2., 2., 5., 3., 9.], &[2., 1., 4., 4., 6., 5.]);
        assert!((r - 0.6617647058823529).abs() < 1e-12, "{r}");
        assert!((spearman(&[1., 2., 3.], &[30., 20., 10.]) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn overlap_area_and_bootstrap() {
        assert_eq!(
            top_k_overlap(&[5., -4., 1., 0.], &[-6., 0.5, 3., 0.], 2),
            0.5
        );
        assert!((area(&[1.0, 0.5, 0.0]) - 0.5).abs() < 1e-12);
        let e = bootstrap(&[1.0, 2.0, 3.0, 4.0], 2000, 1);
        assert_eq!(e.mean, 2.5);
        assert!(
            e.low < 2.5 && e.high > 2.5 && e.low >= 1.0 && e.high <= 4.0,
            "{e:?}"
        );
    }
}
