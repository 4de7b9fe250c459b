//! `rampart data`: the SYNTHETIC multimodal security set.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, CliResult, print};
use crate::artifact::Outputs;
use crate::artifact::files::OutputKind;
use crate::data::{records, synth_security};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write a seeded SYNTHETIC security task (benign / phishing / malware / exfiltration)
    /// as JSONL records with text, bytes_b64 and network fields; each modality alone is only
    /// partly informative.
    SynthSecurity(SynthArgs),
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Records to write.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub n: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of records whose text (and, independently, bytes) points to the wrong pair
    /// of classes.
    #[arg(long, default_value_t = 0.15)]
    pub flip: f64,
    /// Probability that each modality is missing from a record (never all three).
    #[arg(long, default_value_t = 0.1)]
    pub missing: f64,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(command: DataCommand) -> CliResult {
    let DataCommand::SynthSecurity(args) = command;
    for (flag, v) in [("--flip", args.flip), ("--missing", args.missing)] {
        if !(0.0..1.0).contains(&v) {
            return Err(CliError::Usage(format!(
                "{flag} must be in [0, 1), got {v}"
            )));
        }
    }
    Outputs::new().output(&args.out, "--out", OutputKind::Jsonl)?;
    let records =
        synth_security::synth_security(args.n as usize, args.seed, args.flip, args.missing);
    records::write_jsonl(&args.out, &records)?;
    print(&format!(
        "wrote {} SYNTHETIC security records to {} (seed {}, flip {}, missing {})\n",
        records.len(),
        args.out.display(),
        args.seed,
        args.flip,
        args.missing
    ))
}
