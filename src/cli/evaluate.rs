//! `rampart evaluate`: AutoAttack-grade robustness evaluation (APGD-CE, APGD-T, Square),
//! robust accuracy after each attack, masking checks, a per-example table and a resumable
//! state file.

use std::path::PathBuf;

use clap::Args;

use super::args::{ShardArgs, WorkloadArgs, guard};
use super::{CliError, CliResult, emit, merge, note};
use crate::artifact::files::{self, OutputKind};
use crate::attack::examples::{self, EXAMPLES, GRID};
use crate::attack::suite::{self, Budget, Named, Version};
use crate::attack::{AttackError, Norm};
use crate::evaluate::shard::EvaluateProtocol;
use crate::evaluate::{self, EvaluateError, Plan};
use crate::model::Modality;
use crate::shard::{self, Command, Description, Shard};
use crate::workload::Workload;

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    #[arg(long, value_enum, default_value_t = Norm::Linf)]
    pub norm: Norm,
    /// Radius of the threat model, input units (pixels in [0, 1]; fractions of a network
    /// feature's box; embedding units).
    #[arg(long)]
    pub eps: f64,
    /// standard: APGD-CE, APGD-T, Square; plus: 5 restarts and APGD-DLR; rand: expectation
    /// over 20 draws for randomized models; custom: --attacks.
    #[arg(long, value_enum, default_value_t = Version::Standard)]
    pub version: Version,
    /// Attacks for --version custom, comma-separated, run in this order.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub attacks: Vec<Named>,
    /// APGD iterations per run (AutoAttack: 100).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Square queries per run (AutoAttack: 5000).
    #[arg(long, default_value_t = 5000)]
    pub queries: usize,
    /// APGD-T target classes (AutoAttack: 9; at most the model's classes − 1).
    #[arg(long, default_value_t = 9)]
    pub targets: usize,
    /// Evaluate the randomized classifier that adds Gaussian noise of this standard deviation
    /// (input units) to every input, the base classifier of randomized smoothing; use it
    /// with --version rand.
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Fusion models: which input to perturb (default: network features).
    #[arg(long, value_enum)]
    pub modality: Option<Modality>,
    /// Examples per attacked batch.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the gradient-masking checks (they run PGD-20 and PGD-100 on the first 128
    /// examples).
    #[arg(long)]
    pub no_checks: bool,
    /// Write one line per example (which attack broke it, at which iteration) to this TSV.
    #[arg(long)]
    pub per_example: Option<PathBuf>,
    /// Write the adversarial examples (examples.safetensors, grid.png) into this directory.
    #[arg(long)]
    pub save_examples: Option<PathBuf>,
    /// Keep progress in this file after every batch; an interrupted run given the same file
    /// continues where it stopped.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Shards run every K-th batch of --batch examples (seeded as in the whole run); each
    /// keeps its --per-example table and description for `rampart merge`, and resumes with
    /// --state.
    #[command(flatten)]
    pub shard: ShardArgs,
    #[arg(long)]
    pub json: bool,
}

/// An attack parameter error in terms of the flag that set it.
fn flag(e: AttackError) -> CliError {
    let name = match e.param {
        "epsilon" => "eps",
        "restarts" | "eot" | "loss" => "version",
        other => other,
    };
    CliError::Usage(format!("--{name} {}", e.message))
}

fn plan(args: &EvaluateArgs) -> Result<Plan, CliError> {
    if args.version != Version::Custom && !args.attacks.is_empty() {
        return Err(CliError::Usage(
            "--attacks chooses the attacks of --version custom; add --version custom".into(),
        ));
    }
    let budget = Budget {
        steps: args.steps,
        queries: args.queries,
        targets: args.targets,
        ..Budget::new(args.norm, args.eps)
    };
    if let Some(s) = args.sigma.filter(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(CliError::Usage(format!(
            "--sigma must be a positive number, got {s}"
        )));
    }
    let (attacks, notes) = suite::attacks(args.version, &args.attacks, &budget).map_err(flag)?;
    Ok(Plan {
        version: args.version,
        attacks,
        notes,
        batch: args.batch as usize,
        seed: args.seed,
        checks: !args.no_checks,
        keep_examples: args.save_examples.is_some(),
        state: args.state.clone(),
        sigma: args.sigma,
        shard: Shard {
            block: args.batch as usize,
            ..args.shard.shard().map_err(CliError::Usage)?
        },
    })
}

impl From<EvaluateError> for CliError {
    fn from(e: EvaluateError) -> Self {
        match e {
            EvaluateError::Workload(w) => CliError::Workload(w),
            EvaluateError::File(f) => CliError::File(f),
            other => CliError::Usage(other.to_string()),
        }
    }
}

pub fn run(args: EvaluateArgs) -> CliResult {
    let plan = plan(&args)?;
    let mut spec = args.on.spec(1);
    spec.shard = plan.shard;
    merge::require_table(&spec.shard, args.per_example.as_deref(), "--per-example")?;
    let work = Workload::open(&spec)?;
    let mut outputs = guard(&work.files);
    if let Some(p) = &args.per_example {
        outputs.output(p, "--per-example", OutputKind::EvaluationTsv)?;
        outputs.output(
            &shard::meta_path(p),
            "--per-example (its .shard.json)",
            OutputKind::ShardMeta,
        )?;
    }
    if let Some(p) = &args.state {
        outputs.output(p, "--state", OutputKind::EvaluationState)?;
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
    for n in &plan.notes {
        note(&format!("note: {n}"));
    }
    let done = evaluate::run(&work, &plan, args.modality)?;
    let (mut report, rows, saved) = (done.report, done.rows, done.saved);
    if let Some(p) = &args.per_example {
        files::write_atomic(p, evaluate::report::tsv(&rows, &report.attacks).as_bytes())?;
        let mut meta = Description::new(
            &work,
            &spec,
            Command::Evaluate,
            &EvaluateProtocol::of(&report, &plan),
        );
        meta.extra = (!done.before.is_empty())
            .then(|| serde_json::to_value(&done.before).expect("checks serialise to JSON"));
        shard::write_meta(p, &meta)?;
        report.per_example = Some(p.clone());
    }
    if let (Some(dir), Some(saved)) = (&args.save_examples, saved) {
        examples::save(dir, &saved)?;
        report.saved = Some(dir.clone());
    }
    emit(&report, args.json)
}
