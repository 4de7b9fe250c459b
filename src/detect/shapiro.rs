//! The Shapiro-Wilk test of normality by Royston's algorithm AS R94 (1995), step for step as
//! scipy's `scipy.stats.shapiro` runs it (its `swilk`, a translation of Royston's Fortran):
//! the coefficients a from Royston's polynomial approximations to the normal-scores weights,
//! W = (Σ aᵢ·x₍ᵢ₎)² / Σ (xᵢ − x̄)², and the p-value from Royston's normalising transformation
//! of W (exact for n = 3). The normal quantiles and upper tail come from the algorithm's own
//! AS 111 and AS 66 routines, as in scipy, rather than from `statrs`: AS 111 is accurate to
//! about 1e-7 only, and using it is what makes W agree with scipy's to rounding. The figures
//! are checked against scipy's in `tests/detect_stats.rs`.

use std::cmp::Ordering;
use std::f64::consts::{FRAC_1_SQRT_2, PI};

use super::DetectError;

/// Fewest values the test takes.
pub const SHAPIRO_MIN_N: usize = 3;
/// Most values the test takes. Royston fitted the p-value's approximation for n ≤ 5000;
/// scipy computes past it with a warning that the p-value may be inaccurate, this module
/// refuses instead (test a random subsample of at most this many values).
pub const SHAPIRO_MAX_N: usize = 5000;
/// swilk's `SMALL`: a sample whose range (max − min) is below this counts as constant, and it
/// is the p-value reported for n ≤ 11 when W is below the transformation's domain.
const SMALL: f64 = 1e-19;

/// Royston's polynomials, in ascending powers: the last coefficient aₙ and the one before it
/// aₙ₋₁ as corrections in 1/√n (C1, C2); the mean and log standard deviation of the normalised
/// W in n for n ≤ 11 (C3, C4) and in ln n above (C5, C6); and the bound γ in n for n ≤ 11 (G).
const C1: [f64; 6] = [0.0, 0.221157, -0.147981, -2.07119, 4.434685, -2.706056];
const C2: [f64; 6] = [0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633];
const C3: [f64; 4] = [0.5440, -0.39978, 0.025054, -0.0006714];
const C4: [f64; 4] = [1.3822, -0.77857, 0.062767, -0.0020322];
const C5: [f64; 4] = [-1.5861, -0.31082, -0.083751, 0.0038915];
const C6: [f64; 3] = [-0.4803, -0.082676, 0.0030302];
const G: [f64; 2] = [-2.273, 0.459];

/// The Shapiro-Wilk statistic and its p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ShapiroWilk {
    /// W in (0, 1] (for n = 3, in [0.75, 1]); near 1 when the sorted sample lines up with the
    /// normal scores.
    pub w: f64,
    /// In [0, 1]; small means the sample is unlikely to come from a normal distribution.
    pub p_value: f64,
}

/// Shapiro-Wilk test that `x` comes from some normal distribution (any mean and variance),
/// for 3 ≤ n ≤ [`SHAPIRO_MAX_N`] values, as `scipy.stats.shapiro`. For n = 3 the p-value is
/// exact, 1 − (6/π)·acos(√W), with W clamped to its least possible value 0.75 (p = 0 there);
/// for 4 ≤ n ≤ 11, a W too small for Royston's transformation gets p = 1e-19, as in swilk.
/// A sample whose range is below 1e-19 (all values equal, in practice) has no W and is refused.
pub fn shapiro_wilk(x: &[f64]) -> Result<ShapiroWilk, DetectError> {
    let n = x.len();
    if n < SHAPIRO_MIN_N {
        return Err(DetectError::TooFew {
            what: "Shapiro-Wilk sample",
            need: SHAPIRO_MIN_N,
            got: n,
        });
    }
    if !x.iter().all(|v| v.is_finite()) {
        return Err(DetectError::NotFinite {
            what: "Shapiro-Wilk sample",
        });
    }
    if n > SHAPIRO_MAX_N {
        return Err(DetectError::Invalid(format!(
            "Shapiro-Wilk: Royston's p-value holds for at most {SHAPIRO_MAX_N} values, got {n}; \
             test a random subsample"
        )));
    }
    // As scipy: sort, then subtract the value the unsorted input holds at index n/2 (a value
    // near the median for unordered data). W does not change under a shift; the shift keeps
    // the sums below well conditioned for data far from zero.
    let shift = x[n / 2];
    let mut y = x.to_vec();
    y.sort_by(f64::total_cmp);
    for v in &mut y {
        *v -= shift;
    }
    let range = y[n - 1] - y[0];
    if !range.is_finite() {
        return Err(DetectError::Invalid(
            "Shapiro-Wilk: the values' range overflows f64; rescale them first".into(),
        ));
    }
    if range < SMALL {
        return Err(DetectError::Invalid(format!(
            "Shapiro-Wilk: the {n} values are all equal (zero range), W is undefined"
        )));
    }

    let a = coefficients(n);
    // The antisymmetric weight of the i-th smallest value: −a[i] in the lower half, a[n−1−i]
    // in the upper half, 0 for the middle value of an odd n.
    let weight = |i: usize| -> f64 {
        let mirror = n - 1 - i;
        match i.cmp(&mirror) {
            Ordering::Less => -a[i],
            Ordering::Greater => a[mirror],
            Ordering::Equal => 0.0,
        }
    };
    // W as 1 − w1, w1 = 1 − corr(weights, values)², on values scaled by the range; summed in
    // swilk's order, so the rounding is scipy's.
    let an = n as f64;
    let scaled: Vec<f64> = y.iter().map(|v| v / range).collect();
    let weight_mean = (0..n).map(weight).sum::<f64>() / an;
    let value_mean = scaled.iter().sum::<f64>() / an;
    let (mut ssa, mut ssx, mut sax) = (0.0, 0.0, 0.0);
    for (i, xi) in scaled.iter().enumerate() {
        let asa = weight(i) - weight_mean;
        let xsx = xi - value_mean;
        ssa += asa * asa;
        ssx += xsx * xsx;
        sax += asa * xsx;
    }
    let ssassx = (ssa * ssx).sqrt();
    let w1 = (ssassx - sax) * (ssassx + sax) / (ssa * ssx);
    let w = 1.0 - w1;

    if n == 3 {
        // Exact (Shapiro & Wilk 1965, corollary 4); W ≥ 0.75 in theory, clamped as scipy
        // does against rounding (gh-18322). √W is held to 1 and p to 0 so that rounding can
        // give neither NaN nor a negative p-value (scipy holds neither).
        if w < 0.75 {
            return Ok(ShapiroWilk {
                w: 0.75,
                p_value: 0.0,
            });
        }
        let p_value = (1.0 - 6.0 / PI * w.sqrt().min(1.0).acos()).max(0.0);
        return Ok(ShapiroWilk { w, p_value });
    }

    // Royston's normalising transformation: ln(1 − W) (through −ln(γ − ln(1 − W)) for
    // n ≤ 11) is close to normal with mean μ and standard deviation σ, polynomials in n.
    let ln_w1 = w1.ln();
    let (g_w, mu, sigma) = if n <= 11 {
        let gamma = poly(&G, an);
        if ln_w1 >= gamma {
            return Ok(ShapiroWilk { w, p_value: SMALL });
        }
        (-(gamma - ln_w1).ln(), poly(&C3, an), poly(&C4, an).exp())
    } else {
        let ln_n = an.ln();
        (ln_w1, poly(&C5, ln_n), poly(&C6, ln_n).exp())
    };
    Ok(ShapiroWilk {
        w,
        p_value: normal_upper_tail((g_w - mu) / sigma),
    })
}

/// The upper half a[0..n/2] of the coefficients, largest first (a[0] weighs the extremes).
/// From the approximate normal scores mᵢ = Φ⁻¹((i − 3/8)/(n + 1/4)), with Royston's
/// polynomials for the outer one (n ≤ 5) or two (n > 5) and the rest rescaled to unit norm.
fn coefficients(n: usize) -> Vec<f64> {
    if n == 3 {
        return vec![FRAC_1_SQRT_2];
    }
    let an = n as f64;
    let an25 = an + 0.25;
    // Lower-half normal scores m₁ < m₂ < … < 0.
    let mut a: Vec<f64> = (1..=n / 2)
        .map(|i| normal_quantile((i as f64 - 0.375) / an25))
        .collect();
    let summ2 = 2.0 * a.iter().map(|m| m * m).sum::<f64>();
    let ssumm2 = summ2.sqrt();
    let rsn = 1.0 / an.sqrt();
    let a1 = poly(&C1, rsn) - a[0] / ssumm2;
    let (fac, first_rescaled) = if n > 5 {
        let a2 = -a[1] / ssumm2 + poly(&C2, rsn);
        let fac = ((summ2 - 2.0 * a[0] * a[0] - 2.0 * a[1] * a[1])
            / (1.0 - 2.0 * a1 * a1 - 2.0 * a2 * a2))
            .sqrt();
        a[1] = a2;
        (fac, 2)
    } else {
        let fac = ((summ2 - 2.0 * a[0] * a[0]) / (1.0 - 2.0 * a1 * a1)).sqrt();
        (fac, 1)
    };
    a[0] = a1;
    for ai in &mut a[first_rescaled..] {
        *ai *= -1.0 / fac;
    }
    a
}

/// c[0] + c[1]·x + c[2]·x² + …, by Horner's rule from the top as swilk's `poly`.
fn poly(c: &[f64], x: f64) -> f64 {
    let Some((&c0, rest)) = c.split_first() else {
        return 0.0;
    };
    let Some((&top, middle)) = rest.split_last() else {
        return c0;
    };
    let mut p = x * top;
    for &ci in middle.iter().rev() {
        p = (p + ci) * x;
    }
    c0 + p
}

/// Φ⁻¹(p), the standard normal quantile, by Beasley & Springer's AS 111 (1977) as swilk's
/// `ppnd`: a rational approximation accurate to about 1e-7, for 0 < p < 1 (0 outside).
fn normal_quantile(p: f64) -> f64 {
    const SPLIT: f64 = 0.42;
    const A0: f64 = 2.50662823884;
    const A1: f64 = -18.61500062529;
    const A2: f64 = 41.39119773534;
    const A3: f64 = -25.44106049637;
    const B1: f64 = -8.47351093090;
    const B2: f64 = 23.08336743743;
    const B3: f64 = -21.06224101826;
    const B4: f64 = 3.13082909833;
    const C0: f64 = -2.78718931138;
    const C1: f64 = -2.29796479134;
    const C2: f64 = 4.85014127135;
    const C3: f64 = 2.32121276858;
    const D1: f64 = 3.54388924762;
    const D2: f64 = 1.63706781897;

    let q = p - 0.5;
    if q.abs() <= SPLIT {
        let r = q * q;
        let numerator = q * (((A3 * r + A2) * r + A1) * r + A0);
        return numerator / ((((B4 * r + B3) * r + B2) * r + B1) * r + 1.0);
    }
    let tail = if q > 0.0 { 1.0 - p } else { p };
    if tail <= 0.0 {
        return 0.0;
    }
    let r = (-tail.ln()).sqrt();
    let z = (((C3 * r + C2) * r + C1) * r + C0) / ((D2 * r + D1) * r + 1.0);
    if q < 0.0 { -z } else { z }
}

/// 1 − Φ(x), the standard normal upper tail, by Hill's AS 66 (1973) as swilk's `alnorm`
/// (with its 2001 extension of the upper cut-off to 38). NaN gives 1, as in swilk.
fn normal_upper_tail(x: f64) -> f64 {
    const LTONE: f64 = 7.0;
    const UTZERO: f64 = 38.0;
    const CON: f64 = 1.28;
    const A1: f64 = 0.398942280444;
    const A2: f64 = 0.399903438504;
    const A3: f64 = 5.75885480458;
    const A4: f64 = 29.8213557808;
    const A5: f64 = 2.62433121679;
    const A6: f64 = 48.6959930692;
    const A7: f64 = 5.92885724438;
    const B1: f64 = 0.398942280385;
    const B2: f64 = 3.8052e-8;
    const B3: f64 = 1.00000615302;
    const B4: f64 = 3.98064794e-4;
    const B5: f64 = 1.98615381364;
    const B6: f64 = 0.151679116635;
    const B7: f64 = 5.29330324926;
    const B8: f64 = 4.8385912808;
    const B9: f64 = 15.1508972451;
    const B10: f64 = 0.742380924027;
    const B11: f64 = 30.789933034;
    const B12: f64 = 3.99019417011;

    if x.is_nan() {
        return 1.0;
    }
    // The tail beyond |x|, and whether it is the wanted (upper) one or its complement.
    let (upper, z) = if x > 0.0 { (true, x) } else { (false, -x) };
    if z > LTONE && (!upper || z > UTZERO) {
        return if upper { 0.0 } else { 1.0 };
    }
    let y = 0.5 * z * z;
    let tail = if z <= CON {
        0.5 - z * (A1 - A2 * y / (y + A3 - A4 / (y + A5 + A6 / (y + A7))))
    } else {
        B1 * (-y).exp()
            / (z - B2
                + B3 / (z + B4 + B5 / (z - B6 + B7 / (z + B8 - B9 / (z + B10 + B11 / (z + B12))))))
    };
    if upper { tail } else { 1.0 - tail }
}
