//! `rampart attack` over any workload: the worst case over a plan of attacks and restarts,
//! batch by batch on the device, and its report (one schema for every model kind).

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Int, Tensor};
use serde::Serialize;

use super::examples::Saved;
use super::worst_case::{Tally, worst_case};
use super::{Attack, Method};
use crate::artifact::ModelInfo;
use crate::classifier::{Classifier, Input};
use crate::model::Modality;
use crate::workload::{DataInfo, Examples, Job, Workload, WorkloadError};

/// What to run: the attacks (an example is robust only if it survives all of them), how often
/// each is restarted, an optional target class, the batch size and the seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub attacks: Vec<Method>,
    /// Runs of each attack, at least 1; every PGD run with a random start starts afresh.
    pub restarts: usize,
    /// Targeted attack towards this class for every example.
    pub target: Option<usize>,
    pub batch: usize,
    pub seed: u64,
    /// Keep the adversarial examples (read back to the host) for saving.
    pub keep_examples: bool,
}

/// The robust accuracy after one attack of the plan (worst case over it and those before).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AfterAttack {
    pub attack: String,
    pub robust_accuracy: f64,
}

/// `rampart attack`: every key is present for every model kind.
#[derive(Debug, Clone, Serialize)]
pub struct AttackReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    /// The attacked input: "images", or a fusion model's "network", "text" or "bytes".
    pub input: String,
    /// The unit of epsilon.
    pub units: String,
    pub attacks: Vec<Method>,
    pub restarts: usize,
    pub target: Option<usize>,
    pub examples: usize,
    pub clean_accuracy: f64,
    /// Per-example worst case over every attack and restart.
    pub robust_accuracy: f64,
    pub after_each: Vec<AfterAttack>,
    pub examples_per_sec: f64,
    pub seconds: f64,
    /// Where the adversarial examples were saved, if they were.
    pub saved: Option<PathBuf>,
}

struct AttackJob<'a> {
    plan: &'a Plan,
}

/// What the job found, before it becomes a report.
struct Found {
    units: String,
    clean: u64,
    robust: u64,
    after: Vec<u64>,
    examples: usize,
    seconds: f64,
    saved: Option<Saved>,
}

impl Job for AttackJob<'_> {
    type Output = Result<Found, WorkloadError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Result<Found, WorkloadError> {
        let plan = self.plan;
        let domain = model.domain();
        for a in &plan.attacks {
            a.check_domain(&domain)
                .map_err(|e| WorkloadError::Mismatch(format!("--eps: {}", e.message)))?;
            a.check_classes(model.num_classes(), plan.target.is_some())
                .map_err(|e| WorkloadError::Mismatch(format!("--loss: {}", e.message)))?;
            if plan.target.is_some() && !a.supports_target() {
                return Err(WorkloadError::Mismatch(format!(
                    "--target: {} is untargeted; drop --target or choose another --attack",
                    a.name()
                )));
            }
        }
        let classes = model.num_classes();
        if let Some(t) = plan.target.filter(|t| *t >= classes) {
            return Err(WorkloadError::Mismatch(format!(
                "--target {t}: the model has {classes} classes (0 to {})",
                classes - 1
            )));
        }
        let device = ex.labels.device();
        device.seed(plan.seed);
        let started = Instant::now();
        let n = ex.inputs.len();
        let mut tally = Tally::new(plan.attacks.len(), &device);
        let mut saved = plan.keep_examples.then(Saved::default);
        for start in (0..n).step_by(plan.batch.max(1)) {
            let x = ex.inputs.range(start, start + plan.batch);
            let y = ex.labels.clone().narrow(0, start, x.len());
            let target = plan
                .target
                .map(|t| Tensor::<1, Int>::full([x.len()], t as i64, &device));
            let out = worst_case(model, &x, &y, &plan.attacks, plan.restarts, target.as_ref());
            tally.add(&out);
            if let Some(s) = saved.as_mut() {
                s.push(x.x(), out.adversarial, &y, &out.robust)
                    .map_err(|e| WorkloadError::Mismatch(format!("reading examples: {e:?}")))?;
            }
        }
        let counts = tally.read();
        Ok(Found {
            units: domain.units.to_string(),
            clean: counts.clean,
            robust: counts.robust,
            after: counts.after,
            examples: n,
            seconds: started.elapsed().as_secs_f64(),
            saved,
        })
    }
}

/// Attacks a workload (for a fusion model, the input `modality`, default network) and
/// returns the report and the kept examples.
pub fn run(
    work: &Workload,
    plan: &Plan,
    modality: Option<Modality>,
) -> Result<(AttackReport, Option<Saved>), WorkloadError> {
    let found = work.run(AttackJob { plan }, modality)??;
    let n = found.examples.max(1) as f64;
    let report = AttackReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        input: work.input_name(modality),
        units: found.units,
        attacks: plan.attacks.clone(),
        restarts: plan.restarts,
        target: plan.target,
        examples: found.examples,
        clean_accuracy: found.clean as f64 / n,
        robust_accuracy: found.robust as f64 / n,
        after_each: plan
            .attacks
            .iter()
            .zip(&found.after)
            .map(|(a, r)| AfterAttack {
                attack: a.name(),
                robust_accuracy: *r as f64 / n,
            })
            .collect(),
        examples_per_sec: found.examples as f64 / found.seconds.max(1e-9),
        seconds: found.seconds,
        saved: None,
    };
    Ok((report, found.saved))
}

impl fmt::Display for AttackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.attacks.iter().map(Method::name).collect();
        let first = self.attacks.first();
        writeln!(
            f,
            "{} on {} ({} examples, {}): {} {:?} eps {} ({}), {} restarts{}",
            self.model.path.display(),
            self.data.name,
            self.examples,
            self.input,
            names.join("+"),
            first.map(Method::norm).unwrap_or(super::Norm::Linf),
            first.map(Method::epsilon).unwrap_or(0.0),
            self.units,
            self.restarts,
            self.target
                .map(|t| format!(", target {t}"))
                .unwrap_or_default()
        )?;
        writeln!(f, "clean accuracy:  {:.2}%", 100.0 * self.clean_accuracy)?;
        for a in &self.after_each {
            writeln!(
                f,
                "  after {:<10} {:.2}%",
                a.attack,
                100.0 * a.robust_accuracy
            )?;
        }
        writeln!(
            f,
            "robust accuracy: {:.2}% (worst case over every run)",
            100.0 * self.robust_accuracy
        )?;
        writeln!(
            f,
            "{:.1} examples/s, {:.1} s",
            self.examples_per_sec, self.seconds
        )?;
        if let Some(dir) = &self.saved {
            writeln!(f, "examples in {}", dir.display())?;
        }
        Ok(())
    }
}
