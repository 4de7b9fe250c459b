//! `rampart detect fit`: fit adversarial-input detectors on training data and calibrate
//! them on held-out clean examples (`--kind adversarial`), save a drift reference
//! (`--kind drift`) or an extraction ledger's settings (`--kind extraction`).

use std::path::PathBuf;

use clap::Args;

use super::drift::TestArgs;
use super::extraction::LedgerArgs;
use super::usage;
use crate::artifact::files::OutputKind;
use crate::cli::args::{WorkloadArgs, guard};
use crate::cli::{CliError, CliResult, emit, note};
use crate::data::Split;
use crate::detect::RunError;
use crate::detect::adversarial::{Kind, Settings, Squeeze, Vote};
use crate::detect::calibrate::Fusion;
use crate::detect::drift::reference::Reference;
use crate::detect::extraction::ledger_file::LedgerFile;
use crate::detect::fit::{self, FitPlan};
use crate::detect::score;
use crate::workload::{Source, Workload};

/// Clean examples calibrated on when `--limit` is not given.
const DEFAULT_CALIBRATION: usize = 2000;

/// What `detect fit` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    /// Adversarial-input detectors, calibrated on the selected examples.
    Adversarial,
    /// A drift reference: the selected examples as the model sees them.
    Drift,
    /// An extraction ledger's settings: PRADA, the rate CUSUM, the volume cap.
    Extraction,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct FitArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// What to fit.
    #[arg(long, value_enum, default_value_t = Family::Adversarial)]
    pub kind: Family,
    #[command(flatten, next_help_heading = "With --kind drift")]
    pub drift: TestArgs,
    #[command(flatten, next_help_heading = "With --kind extraction")]
    pub ledger: LedgerArgs,
    /// Detectors, comma-separated, fused in this order (--kind adversarial).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "msp,entropy,squeeze,mahalanobis,vote,isolation"
    )]
    pub detectors: Vec<Kind>,
    /// False-positive rate the alarms are calibrated to, in (0, 1).
    #[arg(long, default_value_t = 0.05)]
    pub fpr: f64,
    /// How the detectors' p-values are fused into one alarm.
    #[arg(long, value_enum, default_value_t = Fusion::Bonferroni)]
    pub fusion: Fusion,
    /// Training examples the Mahalanobis detector is fitted on (the first of Fashion-MNIST's
    /// train split; the SYNTHETIC set and records fit on themselves).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub fit_limit: u64,
    /// Feature squeezing: bits kept per pixel, 1 to 8.
    #[arg(long, default_value_t = 4)]
    pub squeeze_bits: u32,
    /// Feature squeezing: median filter side, 0 (none), 2 or 3.
    #[arg(long, default_value_t = 2)]
    pub median: usize,
    /// Vote detector: noise standard deviation, input units.
    #[arg(long, default_value_t = 0.25)]
    pub vote_sigma: f64,
    /// Vote detector: noisy copies per input.
    #[arg(long, default_value_t = 32)]
    pub vote_copies: usize,
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The fitted detector file to write (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: FitArgs) -> CliResult {
    match args.kind {
        Family::Adversarial => adversarial(args),
        Family::Drift | Family::Extraction => other(args),
    }
}

/// `--kind drift` and `--kind extraction`: on the selected examples (2,000 by default).
fn other(args: FitArgs) -> CliResult {
    let mut spec = args.on.spec(1);
    spec.limit = spec.limit.or(Some(DEFAULT_CALIBRATION));
    let work = Workload::open(&spec)?;
    let mut outputs = guard(&work.files);
    outputs.output(&args.out, "--out", OutputKind::Detector)?;
    note(&format!("device: {}", work.device.description));
    let (summary, settings) = if args.kind == Family::Drift {
        let tests = args.drift.tests(args.seed);
        let reference = Reference::fit(&work, &tests, args.batch as usize)?;
        reference.save(&args.out)?;
        let line = format!(
            "drift reference: {} examples of {} ({} {}), {:?} per feature, {} permutations, alpha {}",
            reference.header.examples,
            reference.header.data,
            reference.summary.features.dims()[1],
            if reference.header.penultimate {
                "penultimate features"
            } else {
                "input features"
            },
            tests.feature_test,
            tests.permutations,
            tests.alpha
        );
        (line, serde_json::to_value(&reference.header))
    } else {
        let (prada, cusum) = args.ledger.checks()?;
        let file = LedgerFile::new(&work, prada, cusum, args.ledger.max_queries());
        file.save(&args.out).map_err(RunError::from)?;
        let line = format!(
            "extraction ledger: PRADA δ {}; rate CUSUM at {} queries per interval, alert {}: k {}, h {}, ARL {:.0} in control, {:.1} at the alert rate; volume cap {}",
            prada.delta,
            cusum.rate,
            cusum.alert_rate,
            cusum.k,
            cusum.h,
            cusum.arl0,
            cusum.arl1,
            file.max_queries.map_or("none".into(), |q| q.to_string())
        );
        (line, serde_json::to_value(&file))
    };
    let summary = OtherSummary {
        out: args.out.clone(),
        summary,
        settings: settings.expect("settings serialise"),
    };
    emit(&summary, args.json)
}

/// What `detect fit --kind drift|extraction` prints.
#[derive(Debug, serde::Serialize)]
struct OtherSummary {
    out: PathBuf,
    summary: String,
    /// What the file holds besides its tensors.
    settings: serde_json::Value,
}

impl std::fmt::Display for OtherSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.summary)?;
        writeln!(f, "wrote {}", self.out.display())
    }
}

fn adversarial(args: FitArgs) -> CliResult {
    let detectors = args.detectors.clone();
    let mut distinct = detectors.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != detectors.len() {
        return Err(CliError::Usage(
            "--detectors names a detector twice; name each once".into(),
        ));
    }
    let settings = Settings {
        squeeze: Squeeze::new(args.squeeze_bits, args.median).map_err(usage)?,
        vote: Vote::new(args.vote_sigma, args.vote_copies).map_err(usage)?,
    };
    let plan = FitPlan {
        detectors,
        settings,
        fpr: args.fpr,
        fusion: args.fusion,
        batch: args.batch as usize,
        seed: args.seed,
    };
    let mut calibrate_spec = args.on.spec(1);
    calibrate_spec.limit = calibrate_spec.limit.or(Some(DEFAULT_CALIBRATION));
    let mut fit_spec = calibrate_spec.clone();
    if let Source::FashionMnist { split, .. } = &mut fit_spec.source {
        *split = Split::Train;
    }
    fit_spec.offset = 0;
    fit_spec.limit = Some(args.fit_limit as usize);
    let calibrate_on = Workload::open(&calibrate_spec)?;
    let fit_on = Workload::open(&fit_spec)?;
    let mut outputs = guard(&calibrate_on.files);
    outputs.inputs(&fit_on.files);
    outputs.output(&args.out, "--out", OutputKind::Detector)?;
    note(&format!("device: {}", calibrate_on.device.description));
    let fitted = fit::fit(&fit_on, &calibrate_on, &plan)?;
    fitted.save(&args.out).map_err(RunError::from)?;
    let summary = FitSummary {
        out: args.out.clone(),
        detectors: fitted
            .header
            .detectors
            .iter()
            .map(|d| d.name().into())
            .collect(),
        thresholds: score::thresholds(&fitted).map_err(usage)?,
        fpr: fitted.header.fpr,
        fit_examples: fitted.header.fit_examples,
        fit_data: fitted.header.fit_data.clone(),
        calibration_examples: fitted.header.calibration_ids.len(),
        calibration_data: fitted.header.calibration_data.clone(),
    };
    emit(&summary, args.json)
}

/// What `detect fit` prints.
#[derive(Debug, serde::Serialize)]
struct FitSummary {
    out: PathBuf,
    detectors: Vec<String>,
    /// Alarm thresholds on each detector's score at `fpr`.
    thresholds: Vec<f32>,
    fpr: f64,
    fit_examples: usize,
    fit_data: String,
    calibration_examples: usize,
    calibration_data: String,
}

impl std::fmt::Display for FitSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "fitted on {} examples of {}, calibrated on {} of {}; alarms at a false-positive rate of {}:",
            self.fit_examples,
            self.fit_data,
            self.calibration_examples,
            self.calibration_data,
            self.fpr
        )?;
        for (d, t) in self.detectors.iter().zip(&self.thresholds) {
            writeln!(f, "  {d:<12} score > {t}")?;
        }
        writeln!(f, "wrote {}", self.out.display())
    }
}
