//! `rampart detect extraction`: PRADA against benign clients and an extraction attacker.

use clap::Args;

use super::usage;
use crate::cli::args::WorkloadArgs;
use crate::cli::{CliError, CliResult, emit, note};
use crate::detect::extraction::Prada;
use crate::detect::extraction::evaluate::{self, ExtractionPlan};
use crate::workload::Workload;

#[derive(Args, Debug)]
pub struct ExtractionArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// Alarm when the Shapiro-Wilk W of the query distances falls below this.
    #[arg(long, default_value_t = 0.9)]
    pub delta: f64,
    /// Benign clients.
    #[arg(long, default_value_t = 5)]
    pub clients: usize,
    /// Queries of each client and of the attacker.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// The attacker's seed images.
    #[arg(long, default_value_t = 100)]
    pub seeds: usize,
    /// The attacker's augmentation step λ, input units.
    #[arg(long, default_value_t = 0.1)]
    pub lambda: f64,
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ExtractionArgs) -> CliResult {
    if !(args.lambda.is_finite() && args.lambda > 0.0) {
        return Err(CliError::Usage(format!(
            "--lambda must be a positive number, got {}",
            args.lambda
        )));
    }
    if args.clients == 0 || args.queries == 0 {
        return Err(CliError::Usage(
            "--clients and --queries must be at least 1".into(),
        ));
    }
    let plan = ExtractionPlan {
        prada: Prada::new(args.delta, 100, 10).map_err(usage)?,
        clients: args.clients,
        queries: args.queries,
        seeds: args.seeds,
        lambda: args.lambda,
        batch: args.batch as usize,
        seed: args.seed,
    };
    let work = Workload::open(&args.on.spec(1))?;
    note(&format!("device: {}", work.device.description));
    let report = evaluate::evaluate(&work, &plan)?;
    emit(&report, args.json)
}
