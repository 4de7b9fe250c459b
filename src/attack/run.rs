//! `rampart attack` over any workload: the worst case over a plan of attacks and restarts,
//! batch by batch on the device, one row per example (read back once per batch), and its
//! report (one schema for every model kind). Batch b of the whole run is seeded with
//! seed + b, so a run split into shards ([`crate::shard`]) or resumed after its last finished
//! batch gives the rows of one uninterrupted run.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::examples::Saved;
use super::worst_case::worst_case;
use super::{Attack, Method};
use crate::artifact::ModelInfo;
use crate::artifact::files::FileError;
use crate::classifier::{Classifier, Input};
use crate::evaluate::report::figures;
use crate::evaluate::{Row, outcome_columns, read_rows};
use crate::model::Modality;
use crate::shard::Shard;
use crate::workload::{DataInfo, Examples, Job, Workload, WorkloadError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("reading results back from the device: {0}")]
    Device(String),
}

/// What to run: the attacks (an example is robust only if it survives all of them), how often
/// each is restarted, an optional target class, the batch size, the seed and the shard.
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
    /// Which batches this process runs (blocks of `batch` examples).
    pub shard: Shard,
}

/// What an attack run's rows depend on besides the model and the data (a shard's
/// description carries it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackProtocol {
    /// The attacked input: "images", or a fusion model's modality.
    pub input: String,
    pub attacks: Vec<Method>,
    pub restarts: usize,
    pub target: Option<usize>,
    pub batch: usize,
    pub seed: u64,
    /// Seeds give other numbers on another backend: shards of one run share the device.
    pub device: String,
}

impl AttackProtocol {
    pub fn of(work: &Workload, plan: &Plan, modality: Option<Modality>) -> Self {
        AttackProtocol {
            input: work.input_name(modality),
            attacks: plan.attacks.clone(),
            restarts: plan.restarts,
            target: plan.target,
            batch: plan.batch,
            seed: plan.seed,
            device: work.device.description.clone(),
        }
    }
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
    /// Rows kept from an earlier run of the same shard (not attacked again).
    pub resumed: usize,
    /// Examples attacked per second (resumed rows not counted).
    pub examples_per_sec: f64,
    pub seconds: f64,
    /// Where the per-example table was written, if it was.
    pub per_example: Option<PathBuf>,
    /// Where the adversarial examples were saved, if they were.
    pub saved: Option<PathBuf>,
}

/// Called with every row so far after each batch (to keep the partial table).
pub type OnBatch<'a> = &'a mut dyn FnMut(&[Row]) -> Result<(), FileError>;

struct AttackJob<'a> {
    plan: &'a Plan,
    /// Rows of an earlier run of this shard: whole batches, in order.
    done: Vec<Row>,
    on_batch: OnBatch<'a>,
}

/// What the job found, before it becomes a report.
struct Found {
    units: String,
    rows: Vec<Row>,
    resumed: usize,
    seconds: f64,
    saved: Option<Saved>,
}

impl Job for AttackJob<'_> {
    type Output = Result<Found, RunError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Result<Found, RunError> {
        let plan = self.plan;
        let domain = model.domain();
        check(plan, model)?;
        let device = ex.labels.device();
        let started = Instant::now();
        let n = ex.inputs.len();
        let batch = plan.batch.max(1);
        let mut rows = self.done;
        let resumed = rows.len();
        let mut saved = plan.keep_examples.then(Saved::default);
        for (b, start) in (0..n).step_by(batch).enumerate() {
            if start < resumed {
                continue;
            }
            device.seed(plan.seed.wrapping_add(plan.shard.global_block(b) as u64));
            let x = ex.inputs.range(start, start + batch);
            let y = ex.labels.clone().narrow(0, start, x.len());
            let target = plan
                .target
                .map(|t| Tensor::<1, Int>::full([x.len()], t as i64, &device));
            let out = worst_case(model, &x, &y, &plan.attacks, plan.restarts, target.as_ref());
            let values = outcome_columns(model, &x, &y, &out);
            let ids = &ex.ids[start..start + x.len()];
            rows.extend(read_rows(values, ids).map_err(RunError::Device)?);
            if let Some(s) = saved.as_mut() {
                s.push(x.x(), out.adversarial, &y, &out.robust)
                    .map_err(|e| RunError::Device(format!("{e:?}")))?;
            }
            (self.on_batch)(&rows)?;
        }
        Ok(Found {
            units: domain.units.to_string(),
            rows,
            resumed,
            seconds: started.elapsed().as_secs_f64(),
            saved,
        })
    }
}

/// Refuses a plan the model cannot take, naming the flag.
fn check<const D: usize, C: Classifier<D>>(plan: &Plan, model: &C) -> Result<(), WorkloadError> {
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
    Ok(())
}

/// Attacks a workload (for a fusion model, the input `modality`, default network), after the
/// rows `done` of an earlier run of the same shard (whole batches; the ids of the shard's
/// first examples), calling `on_batch` after each batch; returns the report, every row and
/// the kept examples.
pub fn run(
    work: &Workload,
    plan: &Plan,
    modality: Option<Modality>,
    done: Vec<Row>,
    on_batch: OnBatch<'_>,
) -> Result<(AttackReport, Vec<Row>, Option<Saved>), RunError> {
    let job = AttackJob {
        plan,
        done,
        on_batch,
    };
    let found = work.run(job, modality)??;
    let f = figures(&found.rows, &plan.attacks);
    let attacked = found.rows.len() - found.resumed;
    let report = AttackReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        input: work.input_name(modality),
        units: found.units,
        attacks: plan.attacks.clone(),
        restarts: plan.restarts,
        target: plan.target,
        examples: f.examples,
        clean_accuracy: f.clean_accuracy,
        robust_accuracy: f.robust_accuracy,
        after_each: f.after_each,
        resumed: found.resumed,
        examples_per_sec: attacked as f64 / found.seconds.max(1e-9),
        seconds: found.seconds,
        per_example: None,
        saved: None,
    };
    Ok((report, found.rows, found.saved))
}

/// Whether `done` (rows read back from an earlier run) are whole batches at the start of
/// `ids`, the shard's examples: only then can a run resume after them.
pub fn resumable(done: &[Row], ids: &[usize], batch: usize) -> bool {
    done.len() <= ids.len()
        && (done.len().is_multiple_of(batch.max(1)) || done.len() == ids.len())
        && done.iter().zip(ids).all(|(r, id)| r.id == *id)
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
        crate::evaluate::report::write_accuracies(
            f,
            "",
            self.clean_accuracy,
            &self.after_each,
            self.robust_accuracy,
            "run",
        )?;
        writeln!(
            f,
            "{:.1} examples/s, {:.1} s",
            self.examples_per_sec, self.seconds
        )?;
        if self.resumed > 0 {
            writeln!(
                f,
                "{} examples resumed from the partial table",
                self.resumed
            )?;
        }
        if let Some(p) = &self.per_example {
            writeln!(f, "per-example results in {}", p.display())?;
        }
        if let Some(dir) = &self.saved {
            writeln!(f, "examples in {}", dir.display())?;
        }
        Ok(())
    }
}
