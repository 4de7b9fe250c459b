//! `rampart detect concept`: the model's predictions on a stream of labelled examples, with a
//! change injected part-way (corrupted inputs, or two classes' labels swapped: a change of
//! concept the inputs do not show), watched by DDM and summarised in windows.

use burn::tensor::{Distribution, Int, Tensor};
use serde::Serialize;

use super::{Ddm, Window, windows};
use crate::artifact::ModelInfo;
use crate::classifier::{Classifier, Input};
use crate::detect::drift::Shift;
use crate::detect::{DetectError, RunError};
use crate::workload::{DataInfo, Examples, Job, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct ConceptPlan {
    /// The change starts at this example (0-based) of the stream.
    pub change_at: usize,
    /// Inputs corrupted from `change_at` on.
    pub shift: Shift,
    pub strength: f64,
    /// Labels of these two classes swapped from `change_at` on.
    pub swap: Option<(i64, i64)>,
    pub window: usize,
    pub min_examples: usize,
    pub batch: usize,
    pub seed: u64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct ConceptReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    pub examples: usize,
    pub change_at: usize,
    pub shift: Shift,
    pub strength: f64,
    pub swap: Option<(i64, i64)>,
    /// DDM's first warning and every drift signal (1-based examples of the stream).
    pub warning_at: Option<usize>,
    pub drifts: Vec<usize>,
    /// Examples between the change and the first drift signal after it; `None` when none
    /// came.
    pub delay: Option<usize>,
    /// Drift signals before the change: false alarms.
    pub false_alarms: usize,
    pub windows: Vec<Window>,
}

struct ConceptJob<'a> {
    plan: &'a ConceptPlan,
}

impl Job for ConceptJob<'_> {
    type Output = Result<(Vec<i64>, Vec<i64>), DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let plan = self.plan;
        let n = ex.inputs.len();
        if plan.change_at >= n {
            return Err(DetectError::Invalid(format!(
                "--change-at {} is past the {n} selected examples; raise --limit",
                plan.change_at
            )));
        }
        let device = ex.labels.device();
        device.seed(plan.seed);
        let bounds = model.domain().bounds;
        let mut predictions = Vec::with_capacity(n);
        for start in (0..n).step_by(plan.batch) {
            let xs = ex.inputs.range(start, start + plan.batch);
            let m = xs.len();
            let x = xs.x().clone();
            let shifted = match plan.shift {
                Shift::Brightness => Some(x.clone() + plan.strength),
                Shift::Noise => {
                    Some(x.clone() + x.random_like(Distribution::Normal(0.0, plan.strength)))
                }
                Shift::None | Shift::RemoveClass => None,
            };
            let x = match shifted {
                Some(s) if start + m > plan.change_at => {
                    let s = match bounds {
                        Some((lo, hi)) => s.clamp(lo, hi),
                        None => s,
                    };
                    // Rows of this batch from the change on take the corrupted input.
                    let after = Tensor::<1, Int>::arange(start as i64..(start + m) as i64, &device)
                        .greater_equal_elem(plan.change_at as i64);
                    let mut shape = [1; D];
                    shape[0] = m;
                    x.clone()
                        .mask_where(after.reshape(shape).expand(x.dims()), s)
                }
                _ => x,
            };
            let decided = crate::detect::host_ints(model.decide(xs.with_x(x)), "decisions")?;
            predictions.extend(decided);
        }
        let mut labels = crate::detect::host_ints(ex.labels.clone(), "labels")?;
        if let Some((a, b)) = plan.swap {
            for y in &mut labels[plan.change_at..] {
                *y = if *y == a {
                    b
                } else if *y == b {
                    a
                } else {
                    *y
                };
            }
        }
        Ok((labels, predictions))
    }
}

/// Runs the stream and DDM over it.
pub fn concept(work: &Workload, plan: &ConceptPlan) -> Result<ConceptReport, RunError> {
    let mut ddm = Ddm::new(plan.min_examples)?;
    let (labels, predictions) = work.run(ConceptJob { plan }, None)??;
    for (y, p) in labels.iter().zip(&predictions) {
        ddm.observe(y != p);
    }
    let false_alarms = ddm
        .drifts
        .iter()
        .filter(|at| **at <= plan.change_at)
        .count();
    Ok(ConceptReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        examples: labels.len(),
        change_at: plan.change_at,
        shift: plan.shift,
        strength: plan.strength,
        swap: plan.swap,
        warning_at: ddm.warning_at,
        delay: ddm
            .drifts
            .iter()
            .find(|at| **at > plan.change_at)
            .map(|at| at - plan.change_at),
        drifts: ddm.drifts,
        false_alarms,
        windows: windows(&labels, &predictions, plan.window),
    })
}

impl std::fmt::Display for ConceptReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} labelled examples; change at example {} ({:?} {}{})",
            self.examples,
            self.change_at,
            self.shift,
            self.strength,
            self.swap.map_or(String::new(), |(a, b)| format!(
                ", labels {a} and {b} swapped"
            ))
        )?;
        for w in &self.windows {
            writeln!(
                f,
                "  examples {:>6}–{:<6} accuracy {:5.1}% [{:.1}, {:.1}]  macro-F1 {:.3}",
                w.start,
                w.end,
                100.0 * w.accuracy.rate,
                100.0 * w.accuracy.low,
                100.0 * w.accuracy.high,
                w.macro_f1
            )?;
        }
        let at = |v: Option<usize>| v.map_or("none".into(), |a| format!("at example {a}"));
        writeln!(
            f,
            "DDM: first warning {}, drift signalled at {:?} ({} before the change); delay {}",
            at(self.warning_at),
            self.drifts,
            self.false_alarms,
            self.delay.map_or("-".into(), |d| format!("{d} examples"))
        )
    }
}
