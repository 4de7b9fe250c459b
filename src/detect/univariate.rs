//! Per-feature two-sample drift statistics: Kolmogorov-Smirnov for continuous features,
//! chi-square on a 2×k contingency table for categorical or binned ones, the population
//! stability index and the Jensen-Shannon distance as effect sizes, and Bonferroni and
//! Benjamini-Hochberg across features. p-values come from `statrs`; the figures are checked
//! against scipy's in `tests/detect.rs`.

use statrs::distribution::{ChiSquared, ContinuousCDF};
use statrs::stats_tests::NaNPolicy;
use statrs::stats_tests::ks_test::{KSTwoSampleAlternativeMethod, ks_twosample};

use super::DetectError;

/// Largest n·m for which the KS p-value is computed exactly (Schröer & Trenkler's path count,
/// O(n·m); statrs refuses more); larger samples use Kolmogorov's limiting distribution.
pub const KS_EXACT_LIMIT: usize = 10_000;
/// Below this √(nm/(n+m))·D, Kolmogorov's survival function is 1 to within 1e-10.
const KS_SMALL_Z: f64 = 0.25;
/// Probabilities below this count as this in PSI (an empty bin would make it infinite).
const PSI_FLOOR: f64 = 1e-4;

/// A test's statistic and p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TestResult {
    pub statistic: f64,
    /// In [0, 1]; small means the samples differ.
    pub p_value: f64,
}

fn finite(what: &'static str, values: &[f64]) -> Result<(), DetectError> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(DetectError::NotFinite { what })
    }
}

/// Two-sided two-sample Kolmogorov-Smirnov test: D = sup |F_ref − F_sample|. The p-value is
/// exact when n·m ≤ [`KS_EXACT_LIMIT`] and the pooled sample has no ties, else from
/// Kolmogorov's limiting distribution at √(nm/(n+m))·D.
pub fn ks(reference: &[f64], sample: &[f64]) -> Result<TestResult, DetectError> {
    for (what, v) in [("KS reference", reference), ("KS sample", sample)] {
        if v.len() < 2 {
            return Err(DetectError::TooFew {
                what,
                need: 2,
                got: v.len(),
            });
        }
        finite(what, v)?;
    }
    let mut pooled: Vec<f64> = reference.iter().chain(sample).copied().collect();
    pooled.sort_by(f64::total_cmp);
    let ties = pooled.windows(2).any(|w| w[0] == w[1]);
    let exact = !ties && reference.len() * sample.len() <= KS_EXACT_LIMIT;
    let (n, m) = (reference.len() as f64, sample.len() as f64);
    let statistic = ks_statistic(reference, sample);
    if !exact && statistic * (n * m / (n + m)).sqrt() < KS_SMALL_Z {
        // statrs sums Kolmogorov's series until a term is below 1e-10, which never happens at
        // 0; below this argument the limit's survival function is 1 to 10 decimals anyway.
        return Ok(TestResult {
            statistic,
            p_value: 1.0,
        });
    }
    let method = if exact {
        KSTwoSampleAlternativeMethod::TwoSidedExact
    } else {
        KSTwoSampleAlternativeMethod::TwoSidedAsymptotic
    };
    let (statistic, p_value) = ks_twosample(
        reference.to_vec(),
        sample.to_vec(),
        method,
        NaNPolicy::Error,
    )
    .map_err(|e| DetectError::Invalid(format!("KS test: {e}")))?;
    Ok(TestResult {
        statistic,
        p_value: p_value.clamp(0.0, 1.0),
    })
}

/// sup |F_a − F_b| of the two empirical distribution functions.
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] == x {
            i += 1;
        }
        while j < b.len() && b[j] == x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// Pearson's chi-square test of homogeneity on the 2×k table of category counts (scipy's
/// `chi2_contingency`, with Yates' correction when k = 2). Categories empty in both samples
/// are dropped; at least two must remain.
pub fn chi_square(reference: &[u64], sample: &[u64]) -> Result<TestResult, DetectError> {
    if reference.len() != sample.len() {
        return Err(DetectError::Invalid(format!(
            "chi-square: the reference has {} categories and the sample {}",
            reference.len(),
            sample.len()
        )));
    }
    let cells: Vec<(f64, f64)> = reference
        .iter()
        .zip(sample)
        .filter(|(a, b)| **a + **b > 0)
        .map(|(a, b)| (*a as f64, *b as f64))
        .collect();
    if cells.len() < 2 {
        return Err(DetectError::TooFew {
            what: "chi-square categories with counts",
            need: 2,
            got: cells.len(),
        });
    }
    let (n_ref, n_sample): (f64, f64) = cells
        .iter()
        .fold((0.0, 0.0), |(r, s), (a, b)| (r + a, s + b));
    if n_ref == 0.0 || n_sample == 0.0 {
        return Err(DetectError::Invalid(
            "chi-square: one of the samples is empty".into(),
        ));
    }
    let total = n_ref + n_sample;
    let dof = cells.len() - 1;
    let yates = if dof == 1 { 0.5 } else { 0.0 };
    let statistic: f64 = cells
        .iter()
        .flat_map(|(a, b)| {
            let column = a + b;
            [
                (*a, n_ref * column / total),
                (*b, n_sample * column / total),
            ]
        })
        .map(|(observed, expected)| {
            let diff = ((observed - expected).abs() - yates).max(0.0);
            diff * diff / expected
        })
        .sum();
    let chi2 = ChiSquared::new(dof as f64)
        .map_err(|e| DetectError::Invalid(format!("chi-square: {e}")))?;
    Ok(TestResult {
        statistic,
        p_value: chi2.sf(statistic).clamp(0.0, 1.0),
    })
}

/// Normalises counts or weights to probabilities.
fn probabilities(what: &'static str, weights: &[f64]) -> Result<Vec<f64>, DetectError> {
    finite(what, weights)?;
    let total: f64 = weights.iter().sum();
    if weights.iter().any(|w| *w < 0.0) || total <= 0.0 {
        return Err(DetectError::Invalid(format!(
            "{what}: weights must be non-negative with a positive sum"
        )));
    }
    Ok(weights.iter().map(|w| w / total).collect())
}

/// Population stability index Σ (q − p)·ln(q / p) between the reference's bin frequencies `p`
/// and the sample's `q` (counts or probabilities; bins below 1e-4 count as 1e-4). Rules of
/// thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 large shift.
pub fn psi(reference: &[f64], sample: &[f64]) -> Result<f64, DetectError> {
    let (p, q) = pair("PSI", reference, sample)?;
    Ok(p.iter()
        .zip(&q)
        .map(|(p, q)| {
            let (p, q) = (p.max(PSI_FLOOR), q.max(PSI_FLOOR));
            (q - p) * (q / p).ln()
        })
        .sum())
}

/// Jensen-Shannon distance √JSD(p ‖ q) with natural logarithms (scipy's `jensenshannon`), in
/// [0, √ln 2].
pub fn jensen_shannon(reference: &[f64], sample: &[f64]) -> Result<f64, DetectError> {
    let (p, q) = pair("Jensen-Shannon", reference, sample)?;
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .filter(|(a, _)| **a > 0.0)
            .map(|(a, m)| a * (a / m).ln())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| 0.5 * (a + b)).collect();
    Ok((0.5 * kl(&p, &m) + 0.5 * kl(&q, &m)).max(0.0).sqrt())
}

fn pair(
    what: &'static str,
    reference: &[f64],
    sample: &[f64],
) -> Result<(Vec<f64>, Vec<f64>), DetectError> {
    if reference.len() != sample.len() || reference.is_empty() {
        return Err(DetectError::Invalid(format!(
            "{what}: needs two histograms over the same bins, got {} and {} bins",
            reference.len(),
            sample.len()
        )));
    }
    Ok((
        probabilities(what, reference)?,
        probabilities(what, sample)?,
    ))
}

/// Bonferroni's family-wise p-value for "some feature drifted": min(1, k · min p).
pub fn bonferroni(p_values: &[f64]) -> f64 {
    let smallest = p_values.iter().copied().fold(1.0, f64::min);
    (smallest * p_values.len() as f64).min(1.0)
}

/// Benjamini-Hochberg at false-discovery rate `q`: which features are declared drifted (the
/// k smallest p-values, k the largest rank with p_(k) ≤ k·q/m).
pub fn benjamini_hochberg(p_values: &[f64], q: f64) -> Vec<bool> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let cutoff = order
        .iter()
        .enumerate()
        .filter(|(rank, i)| p_values[**i] <= (rank + 1) as f64 * q / m as f64)
        .map(|(rank, _)| rank + 1)
        .max()
        .unwrap_or(0);
    let mut drifted = vec![false; m];
    for &i in &order[..cutoff] {
        drifted[i] = true;
    }
    drifted
}
