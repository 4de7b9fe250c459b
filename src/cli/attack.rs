//! `rampart attack`: FGSM and PGD against any model, the per-example worst case over attacks
//! and restarts, adversarial examples saved on request.

use std::path::PathBuf;

use clap::Args;

use super::args::{WorkloadArgs, guard};
use super::{CliError, CliResult, emit, note};
use crate::artifact::files::OutputKind;
use crate::attack::examples::{self, EXAMPLES, GRID};
use crate::attack::run::Plan;
use crate::attack::{AttackError, AttackLoss, Fgsm, Method, Norm, Pgd};
use crate::model::Modality;
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
    #[arg(long)]
    pub json: bool,
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

pub fn run(args: AttackArgs) -> CliResult {
    let attacks = methods(&args)?;
    let work = Workload::open(&args.on.spec(1))?;
    let plan = Plan {
        attacks,
        restarts: args.restarts as usize,
        target: args.target,
        batch: args.batch.map_or_else(
            || crate::device::default_batch(&work.device.device, 256),
            |b| b as usize,
        ),
        seed: args.seed,
        keep_examples: args.save_examples.is_some(),
    };
    let mut outputs = guard(&work.files);
    if let Some(dir) = &args.save_examples {
        outputs.output(
            &dir.join(EXAMPLES),
            "--save-examples",
            OutputKind::Safetensors,
        )?;
        outputs.output(&dir.join(GRID), "--save-examples", OutputKind::Png)?;
    }
    note(&format!("device: {}", work.device.description));
    let (mut report, saved) = crate::attack::run::run(&work, &plan, args.modality)?;
    if let (Some(dir), Some(saved)) = (&args.save_examples, saved) {
        examples::save(dir, &saved)?;
        report.saved = Some(dir.clone());
    }
    emit(&report, args.json)
}
