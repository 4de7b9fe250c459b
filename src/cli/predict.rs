//! `rampart predict`: randomized-smoothing PREDICT with abstain, for any model.

use clap::Args;

use super::args::WorkloadArgs;
use super::certify::SmoothArgs;
use super::{CliError, CliResult, emit, note};
use crate::workload::Workload;

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct PredictArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    #[command(flatten)]
    pub smooth: SmoothArgs,
}

pub fn run(args: PredictArgs) -> CliResult {
    let protocol = args.smooth.protocol(1);
    protocol.validate().map_err(CliError::Usage)?;
    let work = Workload::open(&args.on.spec(args.smooth.skip as usize))?;
    note(&format!("device: {}", work.device.description));
    let report = crate::certify::report::predict(&work, protocol)?;
    emit(&report, args.smooth.json)
}
