//! `rampart attack`: FGSM and PGD against any model, the per-example worst case over attacks
//! and restarts, a per-example table and adversarial examples on request, sharded across
//! machines and resumed after the last finished batch.

use std::path::PathBuf;

use clap::Args;

use super::args::{ShardArgs, WorkloadArgs, guard};
use super::{CliError, CliResult, emit, merge, note};
use crate::artifact::files::{self, OutputKind};
use crate::attack::examples::{self, EXAMPLES, GRID};
use crate::attack::run::{AttackProtocol, Plan, RunError};
use crate::attack::{AttackError, AttackLoss, Fgsm, Method, Norm, Pgd, shard as attack_shard};
use crate::evaluate::Row;
use crate::model::Modality;
use crate::shard::{self, Command, Description, Shard};
use crate::workload::Workload;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttackKind {
    Fgsm,
    Pgd,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct AttackArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// Attacks to run, comma-separated; robust means surviving all of them.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pgd")]
    pub attack: Vec<AttackKind>,
    #[arg(long, value_enum, default_value_t = Norm::Linf)]
    pub norm: Norm,
    /// Radius of the threat model, input units (pixels in [0, 1]; fractions of a network
    /// feature's box; embedding units).
    #[arg(long)]
    pub eps: f64,
    /// PGD step size, input units (default 2.5 · eps / steps).
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Runs of each attack; every PGD run starts at a fresh random point.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub restarts: u64,
    /// PGD without a random start (from the clean input).
    #[arg(long)]
    pub no_random_start: bool,
    #[arg(long, value_enum, default_value_t = AttackLoss::Ce)]
    pub loss: AttackLoss,
    /// Fusion models: which input to perturb (network features in their box, or the text or
    /// byte embeddings). Default: network.
    #[arg(long, value_enum)]
    pub modality: Option<Modality>,
    /// Targeted attack towards this class for every example.
    #[arg(long)]
    pub target: Option<usize>,
    /// Examples per attacked batch (default: 128 on the CPU, where a small batch keeps the
    /// convolutions' buffers in cache, 256 on a GPU).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the adversarial examples (examples.safetensors: clean, adversarial, labels,
    /// robust) into this directory, with a PNG grid of clean / adversarial / perturbation
    /// for the first 8 images.
    #[arg(long)]
    pub save_examples: Option<PathBuf>,
    /// Write one line per example (the attack that fooled it, the final decision, the
    /// perturbation's norms) to this TSV, with its description (TSV.shard.json). It is kept
    /// as TSV.partial after every batch; a run with the same settings resumes after the last
    /// finished batch.
    #[arg(long)]
    pub per_example: Option<PathBuf>,
    /// Shards run every K-th batch of --batch examples, seeded as in the whole run; each
    /// keeps its --per-example table for `rampart merge`.
    #[command(flatten)]
    pub shard: ShardArgs,
    #[arg(long)]
    pub json: bool,
}

impl From<RunError> for CliError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Workload(w) => CliError::Workload(w),
            RunError::File(f) => CliError::File(f),
            other => CliError::Usage(other.to_string()),
        }
    }
}

/// An attack parameter error in terms of the flag that set it.
fn flag(e: AttackError) -> CliError {
    let name = match e.param {
        "epsilon" => "eps",
        other => other,
    };
    CliError::Usage(format!("--{name} {}", e.message))
}

/// The attacks `--attack` names, with the flags' radius, step and loss, each validated.
fn methods(args: &AttackArgs) -> Result<Vec<Method>, CliError> {
    args.attack
        .iter()
        .map(|kind| match kind {
            AttackKind::Fgsm if args.norm == Norm::L2 => Err(CliError::Usage(
                "--attack fgsm is an L-infinity attack; use pgd with --norm l2".into(),
            )),
            AttackKind::Fgsm => Ok(Method::Fgsm(
                Fgsm::new(args.eps).map_err(flag)?.with_loss(args.loss),
            )),
            AttackKind::Pgd => {
                let mut pgd = Pgd::new(args.norm, args.eps, args.steps).map_err(flag)?;
                if let Some(a) = args.alpha {
                    pgd = pgd.with_alpha(a).map_err(flag)?;
                }
                Ok(Method::Pgd(
                    pgd.with_random_start(!args.no_random_start)
                        .with_loss(args.loss),
                ))
            }
        })
        .collect()
}

/// The batch: the flag, else the device's default (which the shard's blocks need before the
/// data is opened).
fn batch(args: &AttackArgs) -> Result<usize, CliError> {
    match args.batch {
        Some(b) => Ok(b as usize),
        None => {
            let chosen = crate::device::choose(args.on.device).map_err(CliError::Usage)?;
            Ok(crate::device::default_batch(&chosen.device, 256))
        }
    }
}

pub fn run(args: AttackArgs) -> CliResult {
    let attacks = methods(&args)?;
    let batch = batch(&args)?;
    let mut spec = args.on.spec(1);
    spec.shard = Shard {
        block: batch,
        ..args.shard.shard().map_err(CliError::Usage)?
    };
    merge::require_table(&spec.shard, args.per_example.as_deref(), "--per-example")?;
    let work = Workload::open(&spec)?;
    let plan = Plan {
        attacks,
        restarts: args.restarts as usize,
        target: args.target,
        batch,
        seed: args.seed,
        keep_examples: args.save_examples.is_some(),
        shard: spec.shard,
    };
    let mut outputs = guard(&work.files);
    if let Some(p) = &args.per_example {
        merge::guard_table(&mut outputs, p, "--per-example", OutputKind::EvaluationTsv)?;
    }
    if let Some(dir) = &args.save_examples {
        outputs.output(
            &dir.join(EXAMPLES),
            "--save-examples",
            OutputKind::Safetensors,
        )?;
        outputs.output(&dir.join(GRID), "--save-examples", OutputKind::Png)?;
    }
    note(&format!("device: {}", work.device.description));
    let protocol = AttackProtocol::of(&work, &plan, args.modality);
    let planned = Description::new(&work, &spec, Command::Attack, &protocol);
    let done = match &args.per_example {
        Some(out) => resumed(out, &planned, &protocol, plan.keep_examples)?,
        None => Vec::new(),
    };
    let partial = args.per_example.as_deref().map(shard::partial_path);
    if let Some(p) = &partial {
        shard::write_meta(p, &planned)?;
    }
    let mut keep = |rows: &[Row]| match &partial {
        Some(p) => files::write_atomic(
            p,
            crate::evaluate::report::tsv(rows, &plan.attacks).as_bytes(),
        ),
        None => Ok(()),
    };
    let (mut report, rows, saved) =
        crate::attack::run::run(&work, &plan, args.modality, done, &mut keep)?;
    if let (Some(out), Some(p)) = (&args.per_example, &partial) {
        files::write_atomic(
            out,
            crate::evaluate::report::tsv(&rows, &plan.attacks).as_bytes(),
        )?;
        shard::write_meta(out, &planned)?;
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(shard::meta_path(p));
        report.per_example = Some(out.clone());
    }
    if let (Some(dir), Some(saved)) = (&args.save_examples, saved) {
        examples::save(dir, &saved)?;
        report.saved = Some(dir.clone());
    }
    emit(&report, args.json)
}

/// The rows an earlier run of this very shard left in `out` or `out.partial`, noted.
fn resumed(
    out: &std::path::Path,
    planned: &Description,
    protocol: &AttackProtocol,
    keep_examples: bool,
) -> Result<Vec<Row>, CliError> {
    let done =
        attack_shard::resume(out, planned, protocol).map_err(|e| CliError::Usage(e.to_string()))?;
    if done.is_empty() {
        return Ok(done);
    }
    if keep_examples {
        return Err(CliError::Usage(format!(
            "--save-examples needs every batch's examples, and {} already holds {} rows of this run: drop --save-examples or give another --per-example",
            out.display(),
            done.len()
        )));
    }
    note(&format!(
        "resuming: {} of {} examples already attacked in {}",
        done.len(),
        planned.ids.len(),
        out.display()
    ));
    Ok(done)
}
