//! The Rényi-DP accountant of DP-SGD: the RDP of the sampled Gaussian mechanism (Mironov,
//! Talwar & Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism"),
//! composed over the steps, converted to (ε, δ) with the bound of Balle et al. 2020
//! ("Hypothesis testing interpretations and Rényi DP", Theorem 21), minimised over the orders.
//! It is the computation of Opacus' `RDPAccountant` and TF-Privacy's `compute_rdp` /
//! `get_privacy_spent`, with the same default orders; `tests/privacy.rs` checks it against
//! Opacus' figures.

use statrs::function::erf::erfc;
use statrs::function::gamma::ln_gamma;

/// Opacus' default orders: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63.
pub fn default_orders() -> Vec<f64> {
    (1..100)
        .map(|x| 1.0 + x as f64 / 10.0)
        .chain((12..64).map(f64::from))
        .collect()
}

/// An (ε, δ) guarantee and the Rényi order that gave it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spent {
    pub epsilon: f64,
    pub delta: f64,
    /// The order α at which the conversion was tightest.
    pub order: f64,
}

/// What a DP-SGD run guarantees: (ε, δ)-DP for its training examples after `steps` steps.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Guarantee {
    pub epsilon: f64,
    pub delta: f64,
    /// The Rényi order the conversion was tightest at.
    pub order: f64,
    pub steps: u64,
    /// q: the Poisson sampling rate (expected batch size / training examples).
    pub sampling_rate: f64,
    /// σ: noise standard deviation over the clip norm.
    pub noise_multiplier: f64,
    /// C: the largest L2 norm of an example's gradient.
    pub clip_norm: f64,
}

impl Guarantee {
    /// The guarantee after `steps` steps at rate `q`, noise multiplier `sigma` and clip norm
    /// `clip`, for `delta`.
    pub fn after(q: f64, sigma: f64, clip: f64, steps: u64, delta: f64) -> Self {
        let s = epsilon(q, sigma, steps, delta);
        Guarantee {
            epsilon: s.epsilon,
            delta,
            order: s.order,
            steps,
            sampling_rate: q,
            noise_multiplier: sigma,
            clip_norm: clip,
        }
    }
}

/// ln(e^a + e^b).
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// ln(e^a − e^b) for a ≥ b.
fn log_sub(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    if a <= b {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// ln(erfc(x)), accurate where erfc underflows (the asymptotic series past x = 20).
fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return erfc(x).ln();
    }
    // erfc(x) = e^{-x²}/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + ...)
    let r = 1.0 / (x * x);
    let series = 1.0 - 0.5 * r + 0.75 * r * r - 1.875 * r * r * r;
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
}

/// ln A_α for integer α (Mironov et al. 2019, Section 3.3).
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let a = alpha as f64;
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let i = i as f64;
        let log_binom = ln_gamma(a + 1.0) - ln_gamma(i + 1.0) - ln_gamma(a - i + 1.0);
        let log_coef = log_binom + i * q.ln() + (a - i) * (1.0 - q).ln();
        log_a = log_add(log_a, log_coef + (i * i - i) / (2.0 * sigma * sigma));
    }
    log_a
}

/// ln A_α for fractional α (Mironov et al. 2019, Section 3.3): the two series, summed until
/// their terms fall below e^-30.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let s2 = std::f64::consts::SQRT_2 * sigma;
    // The generalised binomial coefficient C(α, i), as ln|C| and its sign, built term by term.
    let (mut log_coef, mut positive) = (0.0f64, true);
    for i in 0..100_000u32 {
        let i = f64::from(i);
        if i > 0.0 {
            let factor = alpha - (i - 1.0);
            log_coef += factor.abs().ln() - i.ln();
            if factor < 0.0 {
                positive = !positive;
            }
        }
        let j = alpha - i;
        let log_t0 = log_coef + i * q.ln() + j * (1.0 - q).ln();
        let log_t1 = log_coef + j * q.ln() + i * (1.0 - q).ln();
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / s2);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / s2);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        if positive {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
    }
    log_add(log_a0, log_a1)
}

/// The RDP at order `alpha` of one step of the sampled Gaussian mechanism: sampling rate `q`
/// in [0, 1], noise multiplier `sigma` (noise standard deviation / clipping norm).
pub fn rdp_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 || alpha.is_infinite() {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

/// The RDP of `steps` steps at each of `orders`.
pub fn rdp(q: f64, sigma: f64, steps: u64, orders: &[f64]) -> Vec<f64> {
    orders
        .iter()
        .map(|&a| rdp_step(q, sigma, a) * steps as f64)
        .collect()
}

/// The smallest ε over `orders` for which the RDP curve `rdp` gives (ε, δ)-DP
/// (Balle et al. 2020: ε = rdp − (ln δ + ln α)/(α − 1) + ln((α − 1)/α)).
pub fn spent(orders: &[f64], rdp: &[f64], delta: f64) -> Spent {
    let mut best = Spent {
        epsilon: f64::INFINITY,
        delta,
        order: f64::NAN,
    };
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = r - (delta.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
        if eps.is_finite() && eps < best.epsilon {
            best = Spent {
                epsilon: eps.max(0.0),
                delta,
                order: a,
            };
        }
    }
    best
}

/// (ε, δ) after `steps` steps of DP-SGD with Poisson sampling rate `q` and noise multiplier
/// `sigma`, over the default orders.
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> Spent {
    let orders = default_orders();
    spent(&orders, &rdp(q, sigma, steps, &orders), delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_add_and_subtract() {
        assert!((log_add(2f64.ln(), 3f64.ln()) - 5f64.ln()).abs() < 1e-12);
        assert!((log_sub(5f64.ln(), 3f64.ln()) - 2f64.ln()).abs() < 1e-12);
        // At the switch to the series (erfc(20) ≈ 5e-176 is still a normal f64), both agree.
        let direct = erfc(20.0).ln();
        assert!((log_erfc(20.0) - direct).abs() < 1e-9, "{direct}");
        assert!(log_erfc(40.0) < log_erfc(30.0) && log_erfc(40.0).is_finite());
    }

    #[test]
    fn without_sampling_it_is_the_gaussian_mechanism() {
        // q = 1: RDP of the Gaussian mechanism, α / (2σ²).
        assert!((rdp_step(1.0, 2.0, 5.0) - 5.0 / 8.0).abs() < 1e-12);
        assert_eq!(rdp_step(0.0, 1.0, 5.0), 0.0);
    }
}
