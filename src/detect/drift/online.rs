//! Online drift detection over a stream, as Alibi Detect's `MMDDriftOnline` does it: the MMD
//! between a reference sample and a sliding window of the last W stream points, compared at
//! every step with a threshold calibrated by bootstrap so that, under no drift, the expected
//! run time between false alarms (ERT) is what the user asked for. Thresholds are set step by
//! step on bootstrap streams drawn from held-out reference data: at each step, the
//! (1 − 1/ERT) quantile of the statistic among the streams not yet alarmed, so that the
//! hazard of a false alarm is 1/ERT per step and the run length geometric with mean ERT.
//! After 2W steps the last threshold is kept (the window has been replaced twice over).
//!
//! The statistic at time t, for window w_1..w_W and reference r_1..r_N:
//! mean_{i≠j} k(w_i, w_j) − 2 mean_{i,j} k(w_i, r_j) (the reference's own term is a constant
//! and left out). Kernels are Burn tensors; each stream's kernel rows are computed in one pass
//! and read back once, and the window sums come from prefix sums on the host.

use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use serde::Serialize;

use crate::detect::DetectError;

/// Longest window.
pub const MAX_WINDOW: usize = 1000;
/// Most reference examples (their kernel matrix with the pool is read back once).
pub const MAX_REFERENCE: usize = 20_000;
/// Most bootstrap streams.
pub const MAX_BOOTSTRAPS: usize = 100_000;
/// Longest stream run at once (its T×T kernel is read back).
pub const MAX_STREAM: usize = 5_000;

/// A calibrated online detector.
#[derive(Debug, Clone)]
pub struct OnlineMmd {
    reference: Tensor<2>,
    /// 2σ² of the Gaussian kernel.
    two_sigma2: f64,
    pub window: usize,
    pub ert: f64,
    /// Thresholds for steps W, W+1, ... (the last one applies from then on).
    pub thresholds: Vec<f64>,
}

/// What a stream led to.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRun {
    /// The step (1-based, counted from the stream's start) of the first alarm.
    pub alarm_at: Option<usize>,
    pub steps: usize,
}

fn host(t: Tensor<2>) -> Result<Vec<f64>, DetectError> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .map_err(|e| DetectError::Invalid(format!("reading kernels back: {e:?}")))
}

impl OnlineMmd {
    /// Calibrates on `reference` `[N, F]` (half of it the reference, the other half the pool
    /// bootstrap streams are drawn from) for windows of `window` points and expected run
    /// time `ert` steps, with `bootstraps` simulated streams.
    pub fn fit(
        reference: Tensor<2>,
        window: usize,
        ert: f64,
        bootstraps: usize,
        seed: u64,
    ) -> Result<Self, DetectError> {
        let n = reference.dims()[0];
        if !(2..=MAX_WINDOW).contains(&window) || n < 6 * window || n > MAX_REFERENCE {
            return Err(DetectError::Invalid(format!(
                "--window {window} and --reference {n}: the window must be 2 to {MAX_WINDOW}, and the reference at least 6 windows (half of it draws bootstrap streams of 3 windows without replacement) and at most {MAX_REFERENCE}"
            )));
        }
        if bootstraps > MAX_BOOTSTRAPS {
            return Err(DetectError::Invalid(format!(
                "--bootstraps {bootstraps}: at most {MAX_BOOTSTRAPS}"
            )));
        }
        if !(ert.is_finite() && ert > 1.0) {
            return Err(DetectError::Invalid(format!(
                "--ert must be more than 1 step, got {ert}"
            )));
        }
        if bootstraps < (4.0 * ert).ceil() as usize {
            return Err(DetectError::Invalid(format!(
                "--bootstraps {bootstraps}: calibrating an ERT of {ert} needs at least 4·ERT simulated streams"
            )));
        }
        let half = n / 2;
        let kept = reference.clone().narrow(0, 0, half);
        let pool = reference.narrow(0, half, n - half);
        // Median heuristic on the kept reference's own distances.
        let d2 = squared_distances(kept.clone(), kept.clone());
        let mut values: Vec<f64> = host(d2)?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i / half != i % half)
            .map(|(_, v)| v)
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(DetectError::NotFinite {
                what: "online drift reference",
            });
        }
        let mid = values.len() / 2;
        let median = *values.select_nth_unstable_by(mid, f64::total_cmp).1;
        let mut detector = Self {
            reference: kept,
            two_sigma2: if median > 0.0 { median } else { 1.0 },
            window,
            ert,
            thresholds: Vec::new(),
        };
        // Bootstrap streams of 3W points from the pool: statistics at steps W..3W.
        let length = 3 * window;
        let mut rng = StdRng::seed_from_u64(seed);
        let pool_n = pool.dims()[0];
        // Each stream draws its points without replacement (a repeated point would inflate
        // the within-window term and the thresholds with it).
        let picks: Vec<i64> = (0..bootstraps)
            .flat_map(|_| {
                sample(&mut rng, pool_n, length)
                    .into_iter()
                    .map(|i| i as i64)
            })
            .collect();
        let device = pool.device();
        let idx =
            Tensor::<1, Int>::from_data(TensorData::new(picks, [bootstraps * length]), &device);
        let points = pool.select(0, idx);
        let mut trajectories = Vec::with_capacity(bootstraps);
        for b in 0..bootstraps {
            let stream = points.clone().narrow(0, b * length, length);
            trajectories.push(detector.statistics(stream)?);
        }
        let mut alive: Vec<bool> = vec![true; bootstraps];
        for t in 0..trajectories[0].len() {
            let mut current: Vec<f64> = trajectories
                .iter()
                .zip(&alive)
                .filter(|(_, a)| **a)
                .map(|(s, _)| s[t])
                .collect();
            // Fewer survivors than the ERT cannot resolve a 1/ERT quantile.
            if (current.len() as f64) < ert {
                return Err(DetectError::Invalid(format!(
                    "--bootstraps {bootstraps}: only {} simulated streams are left at step {} of the calibration, fewer than the ERT {ert}; raise --bootstraps",
                    current.len(),
                    window + t
                )));
            }
            current.sort_by(f64::total_cmp);
            let q = ((1.0 - 1.0 / ert) * (current.len() - 1) as f64).round() as usize;
            let threshold = current[q];
            for (s, a) in trajectories.iter().zip(alive.iter_mut()) {
                if s[t] > threshold {
                    *a = false;
                }
            }
            detector.thresholds.push(threshold);
        }
        Ok(detector)
    }

    /// The statistic at every step from the W-th on, for a stream `[T, F]` (T ≥ W): one pass
    /// for the kernels to the reference and within the stream, one read-back.
    pub fn statistics(&self, stream: Tensor<2>) -> Result<Vec<f64>, DetectError> {
        let t = stream.dims()[0];
        let w = self.window;
        if t > MAX_STREAM {
            return Err(DetectError::Invalid(format!(
                "a stream of {t} points at once: at most {MAX_STREAM} (run longer streams in pieces)"
            )));
        }
        if t < w {
            return Err(DetectError::TooFew {
                what: "online drift stream",
                need: w,
                got: t,
            });
        }
        let to_ref = (squared_distances(stream.clone(), self.reference.clone()) / -self.two_sigma2)
            .exp()
            .mean_dim(1);
        let within = (squared_distances(stream.clone(), stream) / -self.two_sigma2).exp();
        let both = Tensor::cat(vec![to_ref, within], 1);
        let values = host(both)?;
        let row = t + 1;
        let to_ref: Vec<f64> = (0..t).map(|i| values[i * row]).collect();
        // Window sums of the within-stream kernel, off the diagonal, by 2-d prefix sums.
        let mut prefix = vec![0.0f64; (t + 1) * (t + 1)];
        for i in 0..t {
            for j in 0..t {
                let k = if i == j { 0.0 } else { values[i * row + 1 + j] };
                prefix[(i + 1) * (t + 1) + j + 1] =
                    k + prefix[i * (t + 1) + j + 1] + prefix[(i + 1) * (t + 1) + j]
                        - prefix[i * (t + 1) + j];
            }
        }
        let block = |a: usize, b: usize| {
            prefix[b * (t + 1) + b] - prefix[a * (t + 1) + b] - prefix[b * (t + 1) + a]
                + prefix[a * (t + 1) + a]
        };
        let mut ref_sum = 0.0;
        let mut out = Vec::with_capacity(t - w + 1);
        for end in 1..=t {
            ref_sum += to_ref[end - 1];
            if end > w {
                ref_sum -= to_ref[end - 1 - w];
            }
            if end >= w {
                let start = end - w;
                let within = block(start, end) / (w * (w - 1)) as f64;
                out.push(within - 2.0 * ref_sum / w as f64);
            }
        }
        Ok(out)
    }

    /// The first alarm on a stream `[T, F]`.
    pub fn run(&self, stream: Tensor<2>) -> Result<StreamRun, DetectError> {
        let steps = stream.dims()[0];
        let stats = self.statistics(stream)?;
        let last = *self.thresholds.last().unwrap_or(&f64::INFINITY);
        let alarm = stats
            .iter()
            .enumerate()
            .find(|(i, s)| **s > *self.thresholds.get(*i).unwrap_or(&last))
            .map(|(i, _)| i + self.window);
        Ok(StreamRun {
            alarm_at: alarm,
            steps,
        })
    }
}

/// ‖a_i − b_j‖² for rows of `a` `[n, F]` and `b` `[m, F]`, `[n, m]`.
fn squared_distances(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let aa = a.clone().powf_scalar(2.0).sum_dim(1);
    let bb = b.clone().powf_scalar(2.0).sum_dim(1).transpose();
    (aa + bb - a.matmul(b.transpose()) * 2.0).clamp_min(0.0)
}
