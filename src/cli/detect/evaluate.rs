//! `rampart detect evaluate`: false positives, detection of Rampart's attacks, ROC areas
//! and the adaptive attacks, for a fitted detector.

use std::path::PathBuf;

use clap::Args;

use crate::artifact::files::OutputKind;
use crate::attack::apgd::Apgd;
use crate::attack::{Fgsm, Method as AttackMethod, Norm, Pgd};
use crate::cli::args::{WorkloadArgs, guard};
use crate::cli::{CliError, CliResult, emit, note};
use crate::detect::adaptive::Adaptive;
use crate::detect::evaluate::{self, EvalPlan};
use crate::detect::store::Fitted;
use crate::workload::Workload;

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// A detector file from `rampart detect fit` for this model.
    #[arg(long)]
    pub detector: PathBuf,
    /// L∞ radius of FGSM, PGD-40, APGD-CE and the adaptive attack, input units.
    #[arg(long, default_value_t = 0.1)]
    pub eps: f64,
    /// L2 radius of the L2 PGD-40 attack, input units.
    #[arg(long, default_value_t = 1.5)]
    pub eps_l2: f64,
    /// PGD and adaptive-attack steps.
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// APGD-CE iterations (0 leaves APGD out).
    #[arg(long, default_value_t = 100)]
    pub apgd_steps: usize,
    /// Skip the adaptive attack.
    #[arg(long)]
    pub no_adaptive: bool,
    /// Draw each detector's ROC curve against each attack into this PNG.
    #[arg(long)]
    pub roc: Option<PathBuf>,
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvaluateArgs) -> CliResult {
    let bad = |flag: &str, e: crate::attack::AttackError| {
        CliError::Usage(format!("--{flag} {}", e.message))
    };
    let mut attacks = vec![
        (
            format!("FGSM L∞ {}", args.eps),
            AttackMethod::Fgsm(Fgsm::new(args.eps).map_err(|e| bad("eps", e))?),
        ),
        (
            format!("PGD-{} L∞ {}", args.steps, args.eps),
            AttackMethod::Pgd(
                Pgd::new(Norm::Linf, args.eps, args.steps).map_err(|e| bad("eps", e))?,
            ),
        ),
        (
            format!("PGD-{} L2 {}", args.steps, args.eps_l2),
            AttackMethod::Pgd(
                Pgd::new(Norm::L2, args.eps_l2, args.steps).map_err(|e| bad("eps-l2", e))?,
            ),
        ),
    ];
    if args.apgd_steps > 0 {
        attacks.push((
            format!("APGD-CE-{} L∞ {}", args.apgd_steps, args.eps),
            AttackMethod::Apgd(
                Apgd::new(Norm::Linf, args.eps, args.apgd_steps)
                    .map_err(|e| bad("apgd-steps", e))?,
            ),
        ));
    }
    let plan = EvalPlan {
        attacks,
        adaptive: (!args.no_adaptive).then_some(Adaptive {
            norm: Norm::Linf,
            epsilon: args.eps,
            steps: args.steps,
        }),
        batch: args.batch as usize,
        seed: args.seed,
    };
    let work = Workload::open(&args.on.spec(1))?;
    let mut outputs = guard(&work.files);
    outputs.inputs(std::slice::from_ref(&args.detector));
    if let Some(p) = &args.roc {
        outputs.output(p, "--roc", OutputKind::Png)?;
    }
    let fitted = Fitted::load_for(&args.detector, &work)?;
    note(&format!("device: {}", work.device.description));
    let report = evaluate::evaluate(&work, &fitted, &plan, args.roc.as_deref())?;
    emit(&report, args.json)
}
