//! Query rate: a one-sided Poisson CUSUM on each client's queries per interval (Page 1954;
//! Lucas, Technometrics 1985). A client that keeps to the in-control rate λ0 queries per
//! interval rarely alarms; one that speeds up to λ1 is caught within a few intervals:
//!
//!   S_t = max(0, S_{t−1} + x_t − k),  k = (λ1 − λ0) / ln(λ1 / λ0),  alarm when S_t > h.
//!
//! k is kept on a grid of 1/[`GRID`] queries, so S only takes grid values and the run length
//! is a Markov chain on 0..=h (Brook & Evans, Biometrika 1972): the average run length (ARL)
//! is the solution of (I − R)·ℓ = 1 over the transient states, exact for the CUSUM as run.
//! [`RateCusum::calibrate`] picks the smallest h whose in-control ARL reaches the one asked
//! for, as the ERT of the online drift detector is chosen.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Discrete, DiscreteCDF, Poisson};

use crate::detect::DetectError;

/// Steps per query of the CUSUM's grid.
pub const GRID: u32 = 4;
/// Most grid states (the matrix is states²; 2,000 is 32 MB of f64).
pub const MAX_STATES: usize = 2000;
/// Largest in-control rate, queries per interval.
pub const MAX_RATE: f64 = 10_000.0;
/// Smallest rate, queries per interval (below it, count over longer intervals).
pub const MIN_RATE: f64 = 0.01;

/// A Poisson CUSUM with its calibration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateCusum {
    /// In-control rate λ0, queries per interval.
    pub rate: f64,
    /// The rate to detect, λ1 > λ0, queries per interval.
    pub alert_rate: f64,
    /// The in-control ARL asked for, intervals.
    pub target: f64,
    /// Reference value k, queries per interval (on the grid).
    pub k: f64,
    /// Decision interval h, queries (on the grid).
    pub h: f64,
    /// Average run length in intervals at λ0 (between false alarms) and at λ1 (to detect).
    pub arl0: f64,
    pub arl1: f64,
}

impl RateCusum {
    /// The CUSUM for in-control rate `rate` and detection rate `alert_rate`, with the smallest
    /// h whose in-control ARL is at least `target` intervals.
    pub fn calibrate(rate: f64, alert_rate: f64, target: f64) -> Result<Self, DetectError> {
        if !(rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)) {
            return Err(DetectError::Invalid(format!(
                "--rate must be between {MIN_RATE} and {MAX_RATE} queries per interval; got {rate}"
            )));
        }
        if !(alert_rate.is_finite() && alert_rate > rate && alert_rate <= MAX_RATE * 10.0) {
            return Err(DetectError::Invalid(format!(
                "--alert-rate must exceed --rate ({rate}) and be at most {}; got {alert_rate}",
                MAX_RATE * 10.0
            )));
        }
        if !(2.0..=1e9).contains(&target) {
            return Err(DetectError::Invalid(format!(
                "--arl must be between 2 and 1e9 intervals, got {target}"
            )));
        }
        let m = f64::from(GRID);
        let k_steps = ((alert_rate - rate) / (alert_rate / rate).ln() * m).round() as u64;
        let k = k_steps as f64 / m;
        // On the grid k must still lie strictly between the rates, or the CUSUM drifts up
        // under control (every client alarms) or cannot rise at the alert rate.
        if !(k > rate && k < alert_rate) {
            return Err(DetectError::Invalid(format!(
                "--rate {rate} and --alert-rate {alert_rate} are too close (or too small) for a CUSUM counted in quarter queries: its reference value rounds to {k}; count over longer intervals"
            )));
        }
        let arl = |h_steps: usize, lambda: f64| run_length(lambda, k_steps, h_steps);
        let top = MAX_STATES - 1;
        // The smallest h with ARL0 ≥ target: exponential search, then bisection keeping
        // arl(lo) < target ≤ arl(hi).
        let h = if arl(0, rate)? >= target {
            0
        } else {
            let (mut lo, mut hi) = (0usize, 1usize);
            while arl(hi, rate)? < target {
                if hi == top {
                    return Err(DetectError::Invalid(format!(
                        "an in-control ARL of {target} intervals at {rate} queries per interval needs a decision interval beyond {} queries; ask for a smaller --arl or count over longer intervals",
                        top as f64 / m
                    )));
                }
                lo = hi;
                hi = (hi * 2).min(top);
            }
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if arl(mid, rate)? >= target {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            hi
        };
        Ok(Self {
            rate,
            alert_rate,
            target,
            k,
            h: h as f64 / m,
            arl0: arl(h, rate)?,
            arl1: arl(h, alert_rate)?,
        })
    }

    /// The average run length, in intervals, of this CUSUM when queries arrive at `lambda`
    /// per interval.
    pub fn average_run_length(&self, lambda: f64) -> Result<f64, DetectError> {
        let m = f64::from(GRID);
        run_length(
            lambda,
            (self.k * m).round() as u64,
            (self.h * m).round() as usize,
        )
    }
}

/// ARL from S = 0 of the CUSUM with reference k and decision interval h (both in grid steps)
/// for Poisson(λ) counts: (I − R)⁻¹·1 over the states 0..=h.
fn run_length(lambda: f64, k: u64, h: usize) -> Result<f64, DetectError> {
    let poisson = Poisson::new(lambda)
        .map_err(|e| DetectError::Invalid(format!("Poisson rate {lambda}: {e}")))?;
    let m = u64::from(GRID);
    let states = h + 1;
    let mut a = DMatrix::<f64>::identity(states, states);
    for j in 0..states as u64 {
        // Counts x with j + m·x − k ≤ 0 return to 0.
        if j <= k {
            a[(j as usize, 0)] -= poisson.cdf((k - j) / m);
        }
        // The others land on j + m·x − k while it stays ≤ h.
        let first = (k.saturating_sub(j)) / m + 1;
        let first = if j > k { 0 } else { first };
        let mut x = first;
        while j + m * x <= h as u64 + k {
            let next = (j + m * x - k) as usize;
            a[(j as usize, next)] -= poisson.pmf(x);
            x += 1;
        }
    }
    let ones = DVector::<f64>::from_element(states, 1.0);
    let arl = a.lu().solve(&ones).ok_or_else(|| {
        DetectError::Invalid(format!(
            "the CUSUM's run-length equations at rate {lambda} are singular (an alarm is impossible); raise --alert-rate"
        ))
    })?;
    Ok(arl[0])
}

/// One client's CUSUM state over intervals 0, 1, 2, ... (an interval with no query counts 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateState {
    /// The interval being counted and its queries so far.
    interval: u64,
    count: u64,
    /// S, queries.
    pub s: f64,
    /// The first interval whose count took S over h (raised as soon as it did), and the
    /// query (1-based, of all this client's) that did.
    pub alarm: Option<u64>,
    pub alarm_query: Option<u64>,
    /// Queries seen.
    pub queries: u64,
}

impl RateState {
    /// Records one query in `interval` (never earlier than the last one seen); closes the
    /// intervals before it.
    pub fn observe(&mut self, cusum: &RateCusum, interval: u64) -> Result<(), DetectError> {
        if interval < self.interval {
            return Err(DetectError::Invalid(format!(
                "query in interval {interval} after one in interval {}: intervals must not go back",
                self.interval
            )));
        }
        self.close_until(cusum, interval);
        self.count += 1;
        self.queries += 1;
        // Counts only grow within an interval: once this one's count takes S over h, its
        // closing will alarm, so the alarm is raised now (the run length is unchanged).
        if self.alarm.is_none() && self.s + self.count as f64 - cusum.k > cusum.h {
            self.alarm = Some(self.interval);
            self.alarm_query = Some(self.queries);
        }
        Ok(())
    }

    /// Closes every interval before `interval` (the last one with its count, the ones
    /// between with none).
    pub fn close_until(&mut self, cusum: &RateCusum, interval: u64) {
        while self.interval < interval {
            self.s = (self.s + self.count as f64 - cusum.k).max(0.0);
            if self.s > cusum.h && self.alarm.is_none() {
                self.alarm = Some(self.interval);
                self.alarm_query = Some(self.queries);
            }
            self.count = 0;
            self.interval += 1;
            // Idle intervals only lower S; once it is 0, skip the rest at once.
            if self.s == 0.0 {
                self.interval = interval;
            }
        }
    }
}
