//! `rampart predict`: randomized-smoothing PREDICT with abstain, for any model; `--out` keeps
//! the table, and a shard (`--shard-index I --shard-count K`) writes it with its description
//! for `rampart merge`.

use std::path::PathBuf;

use clap::Args;

use super::args::{ShardArgs, WorkloadArgs, guard};
use super::certify::SmoothArgs;
use super::{CliError, CliResult, emit, merge, note};
use crate::artifact::files::{self, OutputKind};
use crate::certify::predict;
use crate::shard::{self, Command, Description};
use crate::workload::Workload;

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct PredictArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    #[command(flatten)]
    pub smooth: SmoothArgs,
    /// TSV of the predictions: idx label predict correct (predict -1: abstain).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub shard: ShardArgs,
}

pub fn run(args: PredictArgs) -> CliResult {
    let mut protocol = args.smooth.protocol(1);
    protocol.validate().map_err(CliError::Usage)?;
    let mut spec = args.on.spec(args.smooth.skip as usize);
    spec.shard = args.shard.shard().map_err(CliError::Usage)?;
    merge::require_table(&spec.shard, args.out.as_deref(), "--out")?;
    let work = Workload::open(&spec)?;
    protocol.batch = args.smooth.batch_on(&work);
    let mut outputs = guard(&work.files);
    if let Some(out) = &args.out {
        merge::guard_table(&mut outputs, out, "--out", OutputKind::Tsv)?;
    }
    let sigma = protocol.sigma_for(&work)?;
    let planned = Description::new(
        &work,
        &spec,
        Command::Predict,
        &predict::recorded(&protocol, sigma),
    );
    note(&format!("device: {}", work.device.description));
    // A re-run of a finished shard keeps its table.
    if let Some(out) = args.out.as_ref().filter(|o| shard::written_by(o, &planned)) {
        let rows = predict::read_tsv(out).map_err(|e| CliError::Usage(e.to_string()))?;
        if rows.iter().map(|r| r.idx).eq(planned.ids.iter().copied()) {
            note(&format!("{} is complete for this run: kept", out.display()));
            let recorded = predict::recorded(&protocol, sigma);
            let mut report = predict::report(&work, &recorded, rows, 0.0);
            report.tsv = Some(out.clone());
            return emit(&report, args.smooth.json);
        }
    }
    let mut report = predict::predict(&work, protocol)?;
    if let Some(out) = &args.out {
        files::write_atomic(out, predict::tsv(&report.predictions).as_bytes())?;
        shard::write_meta(out, &planned)?;
        report.tsv = Some(out.clone());
    }
    emit(&report, args.smooth.json)
}
