//! `rampart detect online`: an online MMD detector calibrated to an expected run time, run on
//! streams of held-out images in random order (no drift: the measured run length against the
//! requested one) and, with `--shift`, on the same streams corrupted from the middle on (the
//! delay until the alarm).

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
    /// With a shift from the middle of each stream: the alarm's delay after it, per stream
    /// (`None`: no alarm after the change).
    pub delays: Vec<Option<usize>>,
}

struct OnlineJob<'a> {
    plan: &'a OnlinePlan,
}

type Found = (usize, usize, Vec<Option<usize>>);

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
        let (mut watched, mut alarms, mut delays) = (0, 0, Vec::new());
        let change = plan.length / 2;
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
                let delay = stats
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        (
                            i + plan.window,
                            s,
                            detector.thresholds.get(i).unwrap_or(&last),
                        )
                    })
                    .find(|(step, s, t)| *step > change && *s > *t)
                    .map(|(step, _, _)| step - change);
                delays.push(delay);
            }
        }
        Ok((watched, alarms, delays))
    }
}

/// Calibrates and runs the streams.
pub fn online(work: &Workload, plan: &OnlinePlan) -> Result<OnlineReport, RunError> {
    let (steps_watched, false_alarms, delays) = work.run(OnlineJob { plan }, None)??;
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
            self.measured_ert
                .map_or("above the steps watched".into(), |e| format!(
                    "{e:.0} steps"
                ))
        )?;
        if !self.delays.is_empty() {
            writeln!(
                f,
                "{:?} {} from the middle of each stream: delays {:?}",
                self.shift, self.strength, self.delays
            )?;
        }
        Ok(())
    }
}
