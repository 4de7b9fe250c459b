//! The two-sample Cramér-von Mises test as scipy's `scipy.stats.cramervonmises_2samp` with
//! method 'auto': Anderson's (1962) statistic T from the ranks in the pooled sample (ties
//! averaged), its exact p-value from Xiao, Gordon & Yakovlev's (2006) lattice-path frequencies
//! when neither sample has more than [`CVM_EXACT_MAX`] values, and otherwise Anderson's
//! normalised statistic referred to the limiting distribution of the one-sample statistic,
//! whose cdf is Csörgő & Faraway's (1996) series. The figures are checked against scipy's in
//! `tests/detect_stats.rs`.

use std::cmp::Ordering;
use std::f64::consts::PI;

use statrs::function::gamma::ln_gamma;

use super::DetectError;

/// Largest sample size for which the p-value is exact (scipy's 'auto' rule: exact when both
/// samples have at most 20 values, as the path count grows like C(n + m, n)).
pub const CVM_EXACT_MAX: usize = 20;
/// The limiting cdf's series is summed until a term is below this (scipy's 1e-7).
const SERIES_TOL: f64 = 1e-7;
/// Below this normalised statistic the limiting cdf is under 1.3e-18: the p-value is 1
/// (scipy's cut).
const TN_MIN: f64 = 0.003;
/// Safety bound on the series' terms; the 1e-7 cut comes after about 3·√tn of them.
const MAX_TERMS: u32 = 1_000_000;

/// The two-sample Cramér-von Mises statistic and its p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CramerVonMises {
    /// Anderson's T = U / (nm(n + m)) − (4nm − 1) / (6(n + m)), with
    /// U = n·Σᵢ (rᵢ − i)² + m·Σⱼ (sⱼ − j)² over the pooled ranks r of the first sample's n
    /// sorted values and s of the second's m; about nm/(n + m) times the integrated squared
    /// gap between the two empirical distribution functions. Large means the samples differ.
    pub statistic: f64,
    /// In [0, 1]; small means the samples differ.
    pub p_value: f64,
    /// Whether `p_value` is the exact permutation probability (both samples at most
    /// [`CVM_EXACT_MAX`] values) rather than the asymptotic one.
    pub exact: bool,
}

/// Two-sample Cramér-von Mises test that `x` and `y` come from the same continuous
/// distribution, as `scipy.stats.cramervonmises_2samp(x, y)` (method 'auto'). Each sample needs
/// at least 2 values. Ties get their average rank, as scipy does, but both p-values still
/// refer to the distribution for untied samples, so with many ties they are approximate (two
/// constant samples, say, get T > 0 and, past the exact sizes, a p-value below 1, as in scipy).
pub fn cramer_von_mises(x: &[f64], y: &[f64]) -> Result<CramerVonMises, DetectError> {
    for (what, v) in [
        ("Cramér-von Mises first sample", x),
        ("Cramér-von Mises second sample", y),
    ] {
        if v.len() < 2 {
            return Err(DetectError::TooFew {
                what,
                need: 2,
                got: v.len(),
            });
        }
        if !v.iter().all(|value| value.is_finite()) {
            return Err(DetectError::NotFinite { what });
        }
    }
    let (sx, sy) = squared_rank_gaps(x, y);
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let u = nx * sx + ny * sy;
    let k = nx * ny;
    let big_n = nx + ny;
    let statistic = u / (k * big_n) - (4.0 * k - 1.0) / (6.0 * big_n);
    let exact = x.len().max(y.len()) <= CVM_EXACT_MAX;
    let p_value = if exact {
        // U is a multiple of 1/4 (midranks are multiples of 1/2) and below 2^23 for samples
        // of at most 20 values, so 4U is an exact integer and the cast loses nothing.
        let u4 = (4.0 * u).round() as i64;
        exact_p_value(u4, x.len(), y.len())
    } else {
        asymptotic_p_value(statistic, nx, ny)
    };
    Ok(CramerVonMises {
        statistic,
        p_value,
        exact,
    })
}

/// Σᵢ (rᵢ − i)² for each sample: rᵢ the pooled midrank (1-based, ties averaged as scipy's
/// `rankdata(method='average')`) of the sample's i-th smallest value.
fn squared_rank_gaps(x: &[f64], y: &[f64]) -> (f64, f64) {
    let mut pooled: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, false))
        .chain(y.iter().map(|&v| (v, true)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Position within each sample (1-based) and the running sums.
    let (mut ix, mut iy) = (0.0_f64, 0.0_f64);
    let (mut sx, mut sy) = (0.0_f64, 0.0_f64);
    let mut start = 0;
    while start < pooled.len() {
        let value = pooled[start].0;
        let end = start + pooled[start..].iter().take_while(|p| p.0 == value).count();
        // Pooled positions start..end (0-based) share ranks start+1..=end: their average.
        let midrank = (start + 1 + end) as f64 / 2.0;
        for &(_, second) in &pooled[start..end] {
            if second {
                iy += 1.0;
                sy += (midrank - iy) * (midrank - iy);
            } else {
                ix += 1.0;
                sx += (midrank - ix) * (midrank - ix);
            }
        }
        start = end;
    }
    (sx, sy)
}

/// P(U ≥ u) over the C(m + n, m) equally likely orderings of untied samples of m and n values,
/// by Xiao, Gordon & Yakovlev's (2006) algorithm as scipy's `_pval_cvm_2samp_exact`: each
/// ordering is a lattice path from (0, 0) to (n, m), U is an affine function of
/// Σ (a·v − b·u)² over the path's points (a = lcm/m, b = lcm/n), and the frequencies of that
/// sum are carried point by point. Sums at or past the observed one, ζ, are merged into one
/// entry (they only grow along a path), which keeps the tables small. `u4` is 4U.
fn exact_p_value(u4: i64, m: usize, n: usize) -> f64 {
    let lcm = m / gcd(m, n) * n;
    let (a, b) = (lcm / m, lcm / n);
    // ζ = ⌊lcm²(m + n)(6U − mn(4mn − 1)) / (6m²n²)⌋ (Anderson's eq. 9 solved for the path
    // sum), in integers from 4U. Sizes are at most 20, so every factor is small and i64 holds
    // the products (below 1e14); the casts from usize are lossless.
    let (mi, ni, li) = (m as i64, n as i64, lcm as i64);
    let mn = mi * ni;
    let numerator = li * li * (mi + ni) * (3 * u4 - 2 * mn * (4 * mn - 1));
    let zeta = numerator.div_euclid(12 * mn * mn);
    let Ok(cap) = u64::try_from(zeta) else {
        // ζ < 0: every path's sum (≥ 0) reaches it.
        return 1.0;
    };
    // table[v]: (path sum, number of paths) to the point (u, v), sorted by sum, sums capped
    // at ζ; filled one u at a time, in place (table[v − 1] is already row u).
    let mut table: Vec<Vec<(u64, u64)>> = vec![Vec::new(); m + 1];
    table[0].push((0, 1));
    for u in 0..=n {
        for v in 0..=m {
            let reached = if v == 0 {
                std::mem::take(&mut table[0])
            } else {
                merge(&table[v - 1], &table[v])
            };
            // (a·v − b·u)², lossless: a·v and b·u are at most lcm ≤ 400.
            let gap = (a * v).abs_diff(b * u) as u64;
            table[v] = shifted(reached, gap * gap, cap);
        }
    }
    let (total, hits) = table[m]
        .iter()
        .fold((0_u64, 0_u64), |(total, hits), &(sum, count)| {
            (total + count, if sum >= cap { hits + count } else { hits })
        });
    // Both below C(40, 20) ≈ 1.4e11 < 2^53: exact in f64, as scipy's ratio.
    hits as f64 / total as f64
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The union of two frequency tables sorted by sum, adding the counts of equal sums.
fn merge(p: &[(u64, u64)], q: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(p.len() + q.len());
    let (mut i, mut j) = (0, 0);
    while i < p.len() && j < q.len() {
        match p[i].0.cmp(&q[j].0) {
            Ordering::Less => {
                out.push(p[i]);
                i += 1;
            }
            Ordering::Greater => {
                out.push(q[j]);
                j += 1;
            }
            Ordering::Equal => {
                out.push((p[i].0, p[i].1 + q[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&p[i..]);
    out.extend_from_slice(&q[j..]);
    out
}

/// Adds `step` to every sum of a sorted table, capping sums at `cap` and merging the entries
/// the cap makes equal (the order is kept: the map is monotone).
fn shifted(mut table: Vec<(u64, u64)>, step: u64, cap: u64) -> Vec<(u64, u64)> {
    for entry in &mut table {
        entry.0 = entry.0.saturating_add(step).min(cap);
    }
    table.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 += later.1;
            true
        } else {
            false
        }
    });
    table
}

/// Anderson's normal approximation as scipy's `_pval_cvm_2samp_asymptotic`: T standardised
/// by its exact mean and variance under the null (Anderson's eqs. 11 and 14) and rescaled to
/// the limiting one-sample statistic's mean 1/6 and variance 1/45, then 1 − its limiting cdf.
fn asymptotic_p_value(t: f64, nx: f64, ny: f64) -> f64 {
    let big_n = nx + ny;
    let k = nx * ny;
    let mean = (1.0 + 1.0 / big_n) / 6.0;
    let variance = (big_n + 1.0) * (4.0 * k * big_n - 3.0 * (nx * nx + ny * ny) - 2.0 * k)
        / (45.0 * big_n * big_n * 4.0 * k);
    let tn = 1.0 / 6.0 + (t - mean) / (45.0 * variance).sqrt();
    if tn >= TN_MIN {
        (1.0 - cdf_cvm_inf(tn)).max(0.0)
    } else {
        1.0
    }
}

/// The limiting cdf of the one-sample Cramér-von Mises statistic at x > 0 (Csörgő & Faraway
/// 1996, eq. 1.3; Anderson & Darling 1952):
/// Σₖ Γ(k + ½)/(Γ(k + 1)·π^{3/2}·√x) · √(4k + 1) · e^{−q}·K_{1/4}(q), q = (4k + 1)²/(16x),
/// summed as scipy's `_cdf_cvm_inf` until a term is below 1e-7 (so not accurate to better
/// than about 1e-7, and increasingly rough as the cdf nears 1 past x ≈ 4).
fn cdf_cvm_inf(x: f64) -> f64 {
    let scale = PI.powf(1.5) * x.sqrt();
    let mut total = 0.0;
    for k in 0..MAX_TERMS {
        let kf = f64::from(k);
        let ratio = (ln_gamma(kf + 0.5) - ln_gamma(kf + 1.0)).exp() / scale;
        let y = 4.0 * kf + 1.0;
        let q = y * y / (16.0 * x);
        // e^{−q}·K_{1/4}(q) = e^{−2q}·(e^q·K_{1/4}(q)).
        let term = ratio * y.sqrt() * (-2.0 * q).exp() * bessel_k_scaled(0.25, q);
        total += term;
        if term.abs() < SERIES_TOL {
            break;
        }
    }
    total
}

/// eˣ·K_ν(x), the exponentially scaled modified Bessel function of the second kind (scipy's
/// `kve`), for x > 0: the trapezoidal rule on eˣ·K_ν(x) = ∫₀^∞ exp(−x(cosh s − 1))·cosh(νs) ds
/// (cosh s − 1 as 2·sinh²(s/2), free of cancellation). The integrand is entire and falls off
/// double-exponentially, so the rule converges geometrically in the step: with step
/// min(0.1, 0.5/√x) the error is below 1e-30 in theory, and the sum matches scipy's `kve` to
/// 1e-13 relative for 1e-6 ≤ x ≤ 3000.
fn bessel_k_scaled(nu: f64, x: f64) -> f64 {
    let h = (0.5 / x.sqrt()).min(0.1);
    // The integrand is 1 at s = 0 and enters the trapezoidal sum with weight ½.
    let mut sum = 0.5;
    for j in 1..MAX_TERMS {
        let s = f64::from(j) * h;
        let half_sinh = (0.5 * s).sinh();
        let term = (-2.0 * x * half_sinh * half_sinh).exp() * (nu * s).cosh();
        sum += term;
        // Once exp underflows the term is 0 (also for x so small that sinh² overflows: the
        // exponent is then −∞), so the loop ends well before the bound.
        if term < 1e-18 * sum {
            break;
        }
    }
    h * sum
}
