//! `rampart prune`: magnitude pruning of an image model (every weight tensor's smallest
//! entries set to zero), written as a new model file with the original's training config and
//! without its training summary (whose accuracy no longer describes the copy).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{CliError, CliResult, emit};
use crate::artifact::output_kind::OutputKind;
use crate::artifact::{self, Outputs};
use crate::device::{self, DeviceChoice};
use crate::model::prune::{Pruned, prune};

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// The image model to prune (never changed).
    #[arg(long)]
    pub model: PathBuf,
    /// The share of every weight tensor's entries to set to zero, smallest magnitude first:
    /// 0 to 1 (0.5 prunes half).
    #[arg(long)]
    pub fraction: f64,
    /// The pruned model file (the original's training config, not its summary); never the
    /// input.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct PruneReport {
    model: PathBuf,
    out: PathBuf,
    fraction: f64,
    /// Per weight tensor, in the module's order.
    layers: Vec<Pruned>,
    /// Zero entries over all weight tensors.
    sparsity: f64,
}

impl std::fmt::Display for PruneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} -> {}: {:.1}% of the weights are zero ({} weight tensors, biases kept)",
            self.model.display(),
            self.out.display(),
            100.0 * self.sparsity,
            self.layers.len()
        )
    }
}

pub fn run(args: PruneArgs) -> CliResult {
    if !(0.0..=1.0).contains(&args.fraction) {
        return Err(CliError::Usage(format!(
            "--fraction must be from 0 to 1, got {}",
            args.fraction
        )));
    }
    let mut outputs = Outputs::new();
    outputs.input(&args.model);
    outputs.output(&args.out, "--out", OutputKind::Safetensors)?;
    let chosen = device::choose(args.device).map_err(CliError::Usage)?;
    let (net, spec, mut metadata) = artifact::open_image(&args.model, None, &chosen.device)?;
    metadata.raw.remove(crate::artifact::metadata::SUMMARY);
    let (net, layers) = prune(net, args.fraction);
    artifact::save_image(&net, &spec, &metadata, &args.out)?;
    let (entries, zeros) = layers
        .iter()
        .fold((0, 0), |(e, z), l| (e + l.entries, z + l.zeros));
    let report = PruneReport {
        model: args.model,
        out: args.out,
        fraction: args.fraction,
        layers,
        sparsity: zeros as f64 / entries.max(1) as f64,
    };
    emit(&report, args.json)
}
