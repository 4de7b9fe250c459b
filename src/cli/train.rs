//! `rampart train`: a config file (or the defaults) with flags laid over it, trained with a
//! progress bar and a line per epoch.

use std::path::PathBuf;

use clap::Args;

use super::flags::ConfigFlags;
use super::observe::{Console, Progress};
use super::{CliError, CliResult, print};
use crate::train::config::{TrainConfig, nested, read_table};
use crate::train::keys;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML experiment config (see configs/); flags override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (a finished run whose model file
    /// is missing gets it written from the checkpoint).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub set: ConfigFlags,
}

impl TrainArgs {
    /// The config file (or the defaults) with the flags laid over it, checked.
    pub fn resolve(&self) -> Result<TrainConfig, CliError> {
        let base = match &self.config {
            Some(path) => nested(read_table(path).map_err(|e| CliError::Usage(e.to_string()))?)
                .map_err(|e| self.context(&e))?,
            None => toml::Table::new(),
        };
        let top = keys::with_default_kinds(&base, self.set.table());
        TrainConfig::from_table(keys::overlay(base, top)).map_err(|e| self.context(&e))
    }

    /// An error about the resolved config, naming the file and the flags that went into it.
    fn context(&self, e: &str) -> CliError {
        let mut source = Vec::new();
        if let Some(p) = &self.config {
            source.push(format!("config {}", p.display()));
        }
        let given = self.set.given();
        if !given.is_empty() {
            source.push(format!("flags {}", given.join(" ")));
        }
        if source.is_empty() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Usage(format!("{}: {e}", source.join(" with ")))
        }
    }
}

pub fn run(args: TrainArgs) -> CliResult {
    let cfg = args.resolve()?;
    let inputs: Vec<_> = args.config.iter().cloned().collect();
    let mut progress = Progress::default();
    let mut console = Console;
    let report = crate::train::train(
        &cfg,
        &inputs,
        args.resume,
        &mut [&mut progress, &mut console],
    )?;
    let Some(last) = report.history.last() else {
        return Ok(());
    };
    print(&format!(
        "saved {} ({} epochs, eval accuracy {:.2}% on {} examples)\n",
        report.model_path.display(),
        report.history.len(),
        100.0 * last.eval_accuracy,
        last.eval_examples
    ))
}
