//! `rampart eval`: clean accuracy, per-class accuracy and the confusion matrix of any model.

use clap::Args;

use super::args::WorkloadArgs;
use super::{CliResult, emit, note};
use crate::workload::Workload;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> CliResult {
    let work = Workload::open(&args.on.spec(1))?;
    note(&format!("device: {}", work.device.description));
    let report = crate::eval::run(&work, args.batch as usize)?;
    emit(&report, args.json)
}
