//! `rampart evaluate`: AutoAttack-grade robustness evaluation of any model kind.
//!
//! Clean accuracy first; then each attack of the suite ([`crate::attack::suite`]) runs only on
//! the examples still robust, starting from the clean input, and the robust accuracy after
//! each is kept; the final figure is the per-example worst case. Batch by batch on the device,
//! with one read-back of every example's outcome per batch. Each batch seeds the device
//! with `seed + batch index`, so a run resumed from its state file ([`state`]) gives the
//! result an uninterrupted run gives. Masking checks ([`checks`]) run on the first batch.

pub mod checks;
pub mod report;
pub mod shard;
pub mod state;

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::artifact::files::FileError;
use crate::attack::ball::l2_norms;
use crate::attack::examples::Saved;
use crate::attack::suite::Version;
use crate::attack::{Attack, AttackError, Method, worst_case};
use crate::classifier::noisy::Noisy;
use crate::classifier::{Classifier, Input};
use crate::model::Modality;
use crate::shard::Shard;
use crate::workload::{Examples, Job, Workload, WorkloadError};

pub use report::EvaluateReport;

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{flag} {}", .error.message)]
    Attack {
        flag: &'static str,
        error: AttackError,
    },
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("reading results back from the device: {0}")]
    Device(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub version: Version,
    /// The attacks in the order they run.
    pub attacks: Vec<Method>,
    /// What differs from the reference protocol (attacks not implemented).
    pub notes: Vec<String>,
    pub batch: usize,
    pub seed: u64,
    /// Run the masking checks on the first batch.
    pub checks: bool,
    /// Keep the adversarial examples for saving.
    pub keep_examples: bool,
    /// Where progress is kept after each batch, and resumed from.
    pub state: Option<PathBuf>,
    /// Evaluate the randomized classifier with this much Gaussian input noise (input units).
    pub sigma: Option<f64>,
    /// Which batches this process runs (blocks of `batch` examples; batch b of the whole run
    /// is seeded with seed + b, so shards merge into the unsharded run).
    pub shard: Shard,
}

/// One example's outcome: one line of the per-example TSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Index of the example in its full set.
    pub id: usize,
    pub label: i64,
    pub clean_prediction: i64,
    pub clean_correct: bool,
    /// Index (in the plan) of the attack that fooled it first.
    pub broken_by: Option<usize>,
    /// The iteration (APGD) or query (Square) of that attack's run at which it did.
    pub iteration: Option<i64>,
    /// The decision on the returned adversarial example (the clean input when none fooled it).
    pub final_prediction: i64,
    /// Norms of the perturbation, input units (`None`: not finite, see `nan`).
    pub linf: Option<f64>,
    pub l2: Option<f64>,
    /// The adversarial example has a NaN coordinate.
    pub nan: bool,
}

impl Row {
    pub fn robust(&self) -> bool {
        self.clean_correct && self.broken_by.is_none()
    }
}

/// Mixed into the seed for the masking checks' random stream.
const CHECKS_STREAM: u64 = 0xC4EC_5EED;

/// Values read back per example, in this order (one column each).
const COLUMNS: usize = 9;

/// What the job found.
pub struct Found {
    pub units: String,
    /// The attacks as run (APGD-T's targets capped at the model's classes − 1).
    pub attacks: Vec<Method>,
    pub rows: Vec<Row>,
    /// Rows taken from the state file.
    pub resumed: usize,
    /// The checks on the run's first batch (shard 0's).
    pub before: Vec<checks::Check>,
    pub seconds: f64,
    pub saved: Option<Saved>,
}

struct EvaluateJob<'a> {
    plan: &'a Plan,
    /// Rows of a previous run, and the fingerprint every state file of this run carries.
    resume: Vec<Row>,
    fingerprint: String,
}

impl Job for EvaluateJob<'_> {
    type Output = Result<Found, EvaluateError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Result<Found, EvaluateError> {
        match self.plan.sigma {
            Some(sigma) => self.evaluate(
                &Noisy {
                    inner: model,
                    sigma,
                },
                ex,
            ),
            None => self.evaluate(model, ex),
        }
    }
}

impl EvaluateJob<'_> {
    fn evaluate<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Result<Found, EvaluateError> {
        let plan = self.plan;
        let domain = model.domain();
        for a in &plan.attacks {
            a.check_domain(&domain)
                .map_err(|error| EvaluateError::Attack {
                    flag: if error.param == "norm" {
                        "--norm"
                    } else {
                        "--eps"
                    },
                    error,
                })?;
            a.check_classes(model.num_classes(), false)
                .map_err(|mut error| {
                    if plan.version != Version::Custom {
                        error.message.push_str(&format!(
                            "; --version {} runs APGD-DLR or APGD-T, so evaluate this model with --version custom --attacks apgd-ce,square",
                            format!("{:?}", plan.version).to_lowercase()
                        ));
                    }
                    EvaluateError::Attack {
                        flag: "--attacks",
                        error,
                    }
                })?;
        }
        let attacks: Vec<Method> = plan
            .attacks
            .iter()
            .map(|m| match m {
                Method::Apgd(a) => Method::Apgd(a.for_classes(model.num_classes())),
                other => *other,
            })
            .collect();
        let device = ex.labels.device();
        let started = Instant::now();
        let n = ex.inputs.len();
        let batch = plan.batch.max(1);
        let mut rows = self.resume;
        let resumed = rows.len();
        if resumed > 0 {
            // One read of the labels, to check the resumed rows against them.
            let labels = ex
                .labels
                .clone()
                .narrow(0, 0, resumed.min(n))
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .map_err(|e| EvaluateError::Device(format!("{e:?}")))?;
            state::check_prefix(plan, &rows, &ex.ids, &labels)?;
        }
        // The checks look at the run's first batch (shard 0's first), with their own random
        // stream, so that a resumed run checks the same examples and its attacks draw what an
        // uninterrupted run's draw.
        let mut before = Vec::new();
        if plan.checks && n > 0 && plan.shard.index == 0 {
            device.seed(plan.seed ^ CHECKS_STREAM);
            let x = ex.inputs.range(0, batch);
            let y = ex.labels.clone().narrow(0, 0, x.len());
            before = checks::before(model, &x, &y, plan);
        }
        let mut saved = plan.keep_examples.then(Saved::default);
        for (b, start) in (0..n).step_by(batch).enumerate() {
            if start < resumed {
                continue;
            }
            device.seed(plan.seed.wrapping_add(plan.shard.global_block(b) as u64));
            let x = ex.inputs.range(start, start + batch);
            let y = ex.labels.clone().narrow(0, start, x.len());
            let out = worst_case(model, &x, &y, &attacks, 1, None);
            let values = outcome_columns(model, &x, &y, &out);
            let ids = &ex.ids[start..start + x.len()];
            rows.extend(read_rows(values, ids).map_err(EvaluateError::Device)?);
            if let Some(s) = saved.as_mut() {
                s.push(x.x(), out.adversarial, &y, &out.robust)
                    .map_err(|e| EvaluateError::Device(format!("{e:?}")))?;
            }
            if let Some(path) = &plan.state {
                state::write(path, &self.fingerprint, &rows)?;
            }
        }
        Ok(Found {
            units: domain.units.to_string(),
            attacks,
            rows,
            resumed,
            before,
            seconds: started.elapsed().as_secs_f64(),
            saved,
        })
    }
}

/// Every example's outcome as `[N, COLUMNS]` on the device: label, clean decision, clean
/// correct, attack code, iteration, final decision, L∞ and L2 norms, NaN count.
pub(crate) fn outcome_columns<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    y: &Tensor<1, Int>,
    out: &worst_case::Outcome<D>,
) -> Tensor<2> {
    let delta = out.adversarial.clone() - x.x().clone();
    let flat = |t: Tensor<D>| t.flatten::<2>(1, D - 1);
    let column = |t: Tensor<1>| t.unsqueeze_dim::<2>(1);
    let columns = vec![
        column(y.clone().float()),
        column(model.decide(x.clone()).float()),
        column(out.clean_correct.clone().float()),
        column(out.broken_by.clone().float()),
        column(out.iteration.clone().float()),
        column(model.decide(x.with_x(out.adversarial.clone())).float()),
        flat(delta.clone().abs()).max_dim(1),
        flat(l2_norms(&delta)).narrow(1, 0, 1),
        flat(out.adversarial.clone().is_nan().float()).sum_dim(1),
    ];
    Tensor::cat(columns, 1)
}

/// Reads a batch's outcome back (one synchronisation) into rows; the error is the device's.
pub(crate) fn read_rows(values: Tensor<2>, ids: &[usize]) -> Result<Vec<Row>, String> {
    let flat: Vec<f32> = values
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    Ok(flat
        .chunks_exact(COLUMNS)
        .zip(ids)
        .map(|(v, &id)| {
            let code = v[3] as i64;
            Row {
                id,
                label: v[0] as i64,
                clean_prediction: v[1] as i64,
                clean_correct: v[2] > 0.5,
                broken_by: (code > 0).then(|| code as usize - 1),
                iteration: (code > 0 && v[4] >= 0.0).then_some(v[4] as i64),
                final_prediction: v[5] as i64,
                linf: v[6].is_finite().then_some(f64::from(v[6])),
                l2: v[7].is_finite().then_some(f64::from(v[7])),
                nan: v[8] > 0.0,
            }
        })
        .collect())
}

/// A finished evaluation.
pub struct Evaluated {
    pub report: EvaluateReport,
    pub rows: Vec<Row>,
    /// The adversarial examples, when the plan keeps them.
    pub saved: Option<Saved>,
    /// The masking checks of the run's first batch (a shard's description carries them).
    pub before: Vec<checks::Check>,
}

/// Evaluates a workload (for a fusion model, the input `modality`).
pub fn run(
    work: &Workload,
    plan: &Plan,
    modality: Option<Modality>,
) -> Result<Evaluated, EvaluateError> {
    let fingerprint = state::fingerprint(work, plan, modality);
    let resume = match &plan.state {
        Some(path) => state::read(path, &fingerprint)?,
        None => Vec::new(),
    };
    if plan.keep_examples && !resume.is_empty() {
        return Err(EvaluateError::State {
            path: plan.state.clone().unwrap_or_default(),
            message: "--save-examples needs every batch's examples, and a resumed run does not have the earlier ones: delete the state file or drop --save-examples".into(),
        });
    }
    let job = EvaluateJob {
        plan,
        resume,
        fingerprint,
    };
    let found = work.run(job, modality)??;
    let report = report::build(work, plan, modality, &found);
    Ok(Evaluated {
        report,
        rows: found.rows,
        saved: found.saved,
        before: found.before,
    })
}

/// The names of the plan's attacks, indexed like [`Row::broken_by`].
pub fn attack_names(attacks: &[Method]) -> Vec<String> {
    attacks.iter().map(Method::name).collect()
}
