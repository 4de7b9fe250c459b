//! `rampart watermark verify`: a model's accuracy on a watermark secret's triggers and the
//! binomial p-value of matching that many by chance.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::args::ModelArgs;
use super::{CliError, CliResult, emit, note};
use crate::artifact::{self, AnyModel, ModelInfo};
use crate::device::{self, DeviceChoice};
use crate::watermark::{Secret, Verdict, verdict};

#[derive(Subcommand, Debug)]
pub enum WatermarkCommand {
    /// Check a model against a watermark secret (`rampart train --watermark N` writes
    /// OUT/watermark.secret): trigger accuracy and the p-value of reaching it by chance.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The owner's secret (watermark.secret).
    #[arg(long)]
    pub secret: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    #[arg(long)]
    pub json: bool,
}

/// What `watermark verify` reports.
#[derive(Debug, Serialize)]
struct WatermarkReport {
    model: ModelInfo,
    secret: PathBuf,
    #[serde(flatten)]
    verdict: Verdict,
}

impl std::fmt::Display for WatermarkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = &self.verdict;
        writeln!(
            f,
            "{}: {} of {} triggers of {} ({:.1}%)",
            self.model.path.display(),
            v.matches,
            v.triggers,
            self.secret.display(),
            100.0 * v.trigger_accuracy
        )?;
        writeln!(
            f,
            "p-value {:.3e}: the chance that a model which never saw the triggers matches as many",
            v.p_value
        )
    }
}

pub fn run(c: WatermarkCommand) -> CliResult {
    let WatermarkCommand::Verify(args) = c;
    let secret = Secret::read(&args.secret).map_err(|e| CliError::Usage(e.to_string()))?;
    let chosen = device::choose(args.device).map_err(CliError::Usage)?;
    note(&format!("device: {}", chosen.description));
    let opened = artifact::open_verified(
        &args.model.model,
        args.model.open_options(),
        args.model.verify_key.as_deref(),
        &chosen.device,
    )?;
    let AnyModel::Image { net, .. } = &opened.model else {
        return Err(CliError::Usage(format!(
            "{}: watermarks are checked on image models (mlp, cnn)",
            args.model.model.display()
        )));
    };
    if net.num_classes() != secret.classes {
        return Err(CliError::Usage(format!(
            "{} has {} classes, the secret's triggers {}: not a copy of the marked model's task",
            args.model.model.display(),
            net.num_classes(),
            secret.classes
        )));
    }
    let (x, y) = secret.triggers(&chosen.device);
    let matches = net
        .forward(x)
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(y)
        .int()
        .sum()
        .into_scalar::<i64>()
        .max(0) as usize;
    let report = WatermarkReport {
        model: opened.info(),
        secret: args.secret,
        verdict: verdict(matches, secret.triggers, secret.classes),
    };
    emit(&report, args.json)
}
