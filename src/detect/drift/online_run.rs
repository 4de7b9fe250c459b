//! `rampart detect online`: an online MMD detector calibrated to an expected run time, run on
//! streams of held-out images in random order (no drift: the measured run length against the
//! requested one) and, with `--shift`, on the same streams corrupted after their first window
//! (the delay until the alarm).

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::Shift;
use super::online::OnlineMmd;
use crate::artifact::ModelInfo;
use crate::classifier::{Classifier, Input};
use crate::detect::{DetectError, RunError};
use crate::workload::{DataInfo, Examples, Job, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct OnlinePlan {
    /// The first `reference` examples calibrate; the rest feed the streams.
    pub reference: usize,
    pub window: usize,
    pub ert: f64,
    pub bootstraps: usize,
    pub streams: usize,
    pub length: usize,
    pub shift: Shift,
    pub strength: f64,
    pub batch: usize,
    pub seed: u64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    pub window: usize,
    pub requested_ert: f64,
    /// Steps watched on unshifted streams (after each window first filled), false alarms, and
    /// the run length they imply (steps per false alarm; `None` without any).
    pub steps_watched: usize,
    pub false_alarms: usize,
    pub measured_ert: Option<f64>,
    pub streams: usize,
    pub stream_length: usize,
    pub shift: Shift,
    pub strength: f64,
    /// With a shift after the first window of each stream: the alarm's delay after it, per
    /// stream that had not alarmed at the one test before the change (`None`: no alarm).
    pub delays: Vec<Option<usize>>,
    /// Shifted streams that had already (falsely) alarmed before the change.
    pub alarmed_before_change: usize,
    /// The 95% interval of the measured ERT (Garwood's exact Poisson interval on the count).
    pub measured_ert_interval: Option<(f64, f64)>,
}

struct OnlineJob<'a> {
    plan: &'a OnlinePlan,
}

type Found = (usize, usize, Vec<Option<usize>>, usize);

fn features<const D: usize, C: Classifier<D>>(model: &C, x: &C::Input, batch: usize) -> Tensor<2> {
    let parts: Vec<Tensor<2>> = (0..x.len())
        .step_by(batch)
        .map(|s| {
            let xs = x.range(s, s + batch);
            model
                .features(xs.clone())
                .unwrap_or_else(|| xs.x().clone().flatten::<2>(1, D - 1))
        })
        .collect();
    Tensor::cat(parts, 0)
}

impl Job for OnlineJob<'_> {
    type Output = Result<Found, DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let plan = self.plan;
        let n = ex.inputs.len();
        if plan.reference >= n || n - plan.reference < plan.length || plan.length <= 2 * plan.window
        {
            return Err(DetectError::Invalid(format!(
                "--reference {} and --stream-length {} need more selected examples ({n}), and streams longer than two windows ({})",
                plan.reference,
                plan.length,
                2 * plan.window
            )));
        }
        let device = ex.labels.device();
        device.seed(plan.seed);
        let reference = features(model, &ex.inputs.range(0, plan.reference), plan.batch);
        let detector =
            OnlineMmd::fit(reference, plan.window, plan.ert, plan.bootstraps, plan.seed)?;
        let pool_x = ex.inputs.range(plan.reference, n);
        let clean = features(model, &pool_x, plan.batch);
        let shifted = match plan.shift {
            Shift::None | Shift::RemoveClass => None,
            Shift::Brightness | Shift::Noise => {
                let x = pool_x.x().clone();
                let moved = match plan.shift {
                    Shift::Brightness => x + plan.strength,
                    _ => x.clone() + x.random_like(Distribution::Normal(0.0, plan.strength)),
                };
                let moved = match model.domain().bounds {
                    Some((lo, hi)) => moved.clamp(lo, hi),
                    None => moved,
                };
                Some(features(model, &pool_x.with_x(moved), plan.batch))
            }
        };
        let mut rng = StdRng::seed_from_u64(plan.seed);
        let (mut watched, mut alarms, mut delays, mut early) = (0, 0, Vec::new(), 0);
        // The shifted streams start from one clean window, so that the delay is measured from
        // a detector with nothing against it yet (one test before the change, not hundreds).
        let change = plan.window;
        for _ in 0..plan.streams {
            let mut order: Vec<i64> = (0..(n - plan.reference) as i64).collect();
            order.shuffle(&mut rng);
            order.truncate(plan.length);
            let idx = Tensor::<1, Int>::from_data(TensorData::new(order, [plan.length]), &device);
            let stream = clean.clone().select(0, idx.clone());
            let run = detector.run(stream)?;
            watched += run.alarm_at.unwrap_or(plan.length) - plan.window + 1;
            alarms += usize::from(run.alarm_at.is_some());
            if let Some(moved) = &shifted {
                let mixed = Tensor::cat(
                    vec![
                        clean.clone().select(0, idx.clone().narrow(0, 0, change)),
                        moved
                            .clone()
                            .select(0, idx.narrow(0, change, plan.length - change)),
                    ],
                    0,
                );
                let stats = detector.statistics(mixed)?;
                let last = *detector.thresholds.last().unwrap_or(&f64::INFINITY);
                let first = stats
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        (
                            i + plan.window,
                            s,
                            detector.thresholds.get(i).unwrap_or(&last),
                        )
                    })
                    .find(|(_, s, t)| *s > *t)
                    .map(|(step, _, _)| step);
                // A stream that alarmed before the change measures no delay (it is counted).
                match first {
                    Some(step) if step <= change => early += 1,
                    other => delays.push(other.map(|step| step - change)),
                }
            }
        }
        Ok((watched, alarms, delays, early))
    }
}

/// Calibrates and runs the streams.
pub fn online(work: &Workload, plan: &OnlinePlan) -> Result<OnlineReport, RunError> {
    let (steps_watched, false_alarms, delays, alarmed_before_change) =
        work.run(OnlineJob { plan }, None)??;
    let measured_ert_interval = (false_alarms > 0).then(|| {
        // Garwood's interval for a Poisson count k: χ²(2k, α/2)/2 and χ²(2k + 2, 1 − α/2)/2.
        use statrs::distribution::{ChiSquared, ContinuousCDF};
        let k = false_alarms as f64;
        let low = ChiSquared::new(2.0 * k)
            .expect("positive")
            .inverse_cdf(0.025)
            / 2.0;
        let high = ChiSquared::new(2.0 * k + 2.0)
            .expect("positive")
            .inverse_cdf(0.975)
            / 2.0;
        (steps_watched as f64 / high, steps_watched as f64 / low)
    });
    Ok(OnlineReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        window: plan.window,
        requested_ert: plan.ert,
        steps_watched,
        false_alarms,
        measured_ert: (false_alarms > 0).then(|| steps_watched as f64 / false_alarms as f64),
        streams: plan.streams,
        stream_length: plan.length,
        shift: plan.shift,
        strength: plan.strength,
        delays,
        alarmed_before_change,
        measured_ert_interval,
    })
}

impl std::fmt::Display for OnlineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "online MMD, window {}, requested ERT {} steps; {} streams of {} from {}",
            self.window, self.requested_ert, self.streams, self.stream_length, self.data.name
        )?;
        writeln!(
            f,
            "no drift: {} false alarms in {} steps watched: measured ERT {}",
            self.false_alarms,
            self.steps_watched,
            match (self.measured_ert, self.measured_ert_interval) {
                (Some(e), Some((lo, hi))) =>
                    format!("{e:.0} steps (95% interval {lo:.0} to {hi:.0})"),
                _ => "above the steps watched".into(),
            }
        )?;
        if !self.delays.is_empty() {
            writeln!(
                f,
                "{:?} {} after the first window of each stream: delays {:?} ({} streams alarmed before the change)",
                self.shift, self.strength, self.delays, self.alarmed_before_change
            )?;
        }
        Ok(())
    }
}
