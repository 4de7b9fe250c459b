//! `rampart detect concept`: concept drift from labelled feedback (DDM, windowed accuracy).

use clap::Args;

use super::drift::check_shift;
use crate::cli::args::WorkloadArgs;
use crate::cli::{CliError, CliResult, emit, note};
use crate::detect::concept::run::{self as concept, ConceptPlan};
use crate::detect::drift::Shift;
use crate::workload::Workload;

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct ConceptArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// The change starts at this example (0-based) of the stream.
    #[arg(long)]
    pub change_at: usize,
    /// Inputs corrupted from the change on: brightness (+S) or noise (sd S).
    #[arg(long, value_enum, default_value_t = Shift::None)]
    pub shift: Shift,
    #[arg(long, default_value_t = 0.0)]
    pub strength: f64,
    /// Swap the labels of two classes from the change on, e.g. `--swap 0,6`.
    #[arg(long, value_delimiter = ',')]
    pub swap: Vec<i64>,
    /// Examples per accuracy window.
    #[arg(long, default_value_t = 500)]
    pub window: usize,
    /// Outcomes before DDM tracks its minimum.
    #[arg(long, default_value_t = 30)]
    pub min_examples: usize,
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ConceptArgs) -> CliResult {
    check_shift(
        args.shift,
        args.strength,
        Some(
            "changes which examples arrive, not what the model gets wrong; use brightness, noise or --swap",
        ),
    )?;
    let swap = match args.swap.as_slice() {
        [] => None,
        [a, b] if a != b && (0..10).contains(a) && (0..10).contains(b) => Some((*a, *b)),
        other => {
            return Err(CliError::Usage(format!(
                "--swap takes two different classes, e.g. --swap 0,6; got {other:?}"
            )));
        }
    };
    let plan = ConceptPlan {
        change_at: args.change_at,
        shift: args.shift,
        strength: args.strength,
        swap,
        window: args.window.max(1),
        min_examples: args.min_examples,
        batch: args.batch as usize,
        seed: args.seed,
    };
    let work = Workload::open(&args.on.spec(1))?;
    note(&format!("device: {}", work.device.description));
    let report = concept::concept(&work, &plan)?;
    emit(&report, args.json)
}
