//! `rampart detect extraction`: PRADA, the query-rate CUSUM and the volume cap against benign
//! clients and an extraction attacker that trains a stolen copy.

use std::path::PathBuf;

use clap::Args;

use super::usage;
use crate::artifact::AnyModel;
use crate::artifact::Metadata;
use crate::artifact::output_kind::OutputKind;
use crate::cli::args::WorkloadArgs;
use crate::cli::args::guard;
use crate::cli::{CliError, CliResult, emit, note};
use crate::detect::extraction::Prada;
use crate::detect::extraction::cusum::{MAX_RATE, MIN_RATE, RateCusum};
use crate::detect::extraction::evaluate::{self, ExtractionPlan};
use crate::detect::extraction::substitute::Substitute;
use crate::model::Arch;
use crate::workload::Workload;

/// The ledger's checks, shared by `detect extraction` and `detect fit --kind extraction`.
#[derive(Args, Debug)]
pub struct LedgerArgs {
    /// Alarm when the Shapiro-Wilk W of the query distances falls below this.
    #[arg(long, default_value_t = 0.9)]
    pub delta: f64,
    /// Benign clients' query rate, queries per interval (the CUSUM's in-control rate).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// The query rate the CUSUM is tuned to catch, queries per interval.
    #[arg(long, default_value_t = 20.0)]
    pub alert_rate: f64,
    /// Intervals between the CUSUM's false alarms at the in-control rate (its ARL).
    #[arg(long, default_value_t = 10_000.0)]
    pub arl: f64,
    /// Alarm when a client sends more queries than this (none: no cap).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queries: Option<u64>,
}

impl LedgerArgs {
    /// PRADA's settings and the calibrated CUSUM.
    pub fn checks(&self) -> Result<(Prada, RateCusum), CliError> {
        Ok((
            Prada::new(self.delta, 100, 10).map_err(usage)?,
            RateCusum::calibrate(self.rate, self.alert_rate, self.arl).map_err(usage)?,
        ))
    }

    pub fn max_queries(&self) -> Option<usize> {
        self.max_queries.map(|q| q as usize)
    }
}

#[derive(Args, Debug)]
pub struct ExtractionArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    #[command(flatten)]
    pub ledger: LedgerArgs,
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
    /// The attacker's substitute network (image models).
    #[arg(long, value_enum, default_value_t = Arch::Mlp)]
    pub substitute: Arch,
    /// Epochs the substitute trains on all queries so far, each round.
    #[arg(long, default_value_t = 10)]
    pub substitute_epochs: usize,
    /// The attacker's query rate, queries per interval.
    #[arg(long, default_value_t = 40.0)]
    pub attacker_rate: f64,
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save the attacker's copy trained on every query (image models) as a model file, e.g.
    /// to check it for the target's watermark.
    #[arg(long)]
    pub save_substitute: Option<PathBuf>,
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
    if args.clients == 0 || args.queries == 0 || args.substitute_epochs == 0 {
        return Err(CliError::Usage(
            "--clients, --queries and --substitute-epochs must be at least 1".into(),
        ));
    }
    if !(args.attacker_rate.is_finite()
        && (MIN_RATE..=MAX_RATE * 10.0).contains(&args.attacker_rate))
    {
        return Err(CliError::Usage(format!(
            "--attacker-rate must be between {MIN_RATE} and {} queries per interval, got {}",
            MAX_RATE * 10.0,
            args.attacker_rate
        )));
    }
    let (prada, cusum) = args.ledger.checks()?;
    let plan = ExtractionPlan {
        prada,
        clients: args.clients,
        queries: args.queries,
        seeds: args.seeds,
        lambda: args.lambda,
        cusum,
        attacker_rate: args.attacker_rate,
        max_queries: args.ledger.max_queries(),
        substitute: Substitute {
            arch: args.substitute,
            epochs: args.substitute_epochs,
            batch: 64,
        },
        batch: args.batch as usize,
        seed: args.seed,
    };
    let work = Workload::open(&args.on.spec(1))?;
    if let Some(path) = &args.save_substitute {
        if matches!(work.opened.model, AnyModel::Fusion { .. }) {
            return Err(CliError::Usage(
                "--save-substitute: the attacker trains a copy of image models only".into(),
            ));
        }
        guard(&work.files).output(path, "--save-substitute", OutputKind::Safetensors)?;
    }
    note(&format!("device: {}", work.device.description));
    let mut report = evaluate::evaluate(&work, &plan)?;
    if let Some(path) = &args.save_substitute {
        let Some((net, spec)) = report.stolen.as_mut().and_then(|s| s.network.take()) else {
            return Err(CliError::Usage(
                "--save-substitute: no copy was trained (the attacker trains one against image models only)".into(),
            ));
        };
        crate::artifact::save_image(&net, &spec, &Metadata::default(), path)?;
        note(&format!("saved the attacker's copy to {}", path.display()));
    }
    emit(&report, args.json)
}
