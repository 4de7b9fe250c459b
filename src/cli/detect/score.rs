//! `rampart detect score`: scores, p-values and alarms of a fitted detector per input; for a
//! drift reference, the drift tests of the selected examples against it; for an extraction
//! ledger, the selected examples replayed as one client.

use std::path::PathBuf;

use clap::Args;

use crate::artifact::files::{self, OutputKind};
use crate::cli::args::{WorkloadArgs, guard};
use crate::cli::{CliError, CliResult, emit};
use crate::detect::drift::reference::Reference;
use crate::detect::extraction::ledger_file::LedgerFile;
use crate::detect::store::{self, Fitted};
use crate::detect::{RunError, score};
use crate::workload::Workload;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// A detector file from `rampart detect fit` for this model (any --kind).
    #[arg(long)]
    pub detector: PathBuf,
    /// Write one line per example (scores, p-values, alarms) to this TSV.
    #[arg(long)]
    pub per_example: Option<PathBuf>,
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

/// What `detect score` prints.
#[derive(Debug, serde::Serialize)]
struct ScoreSummary {
    detectors: Vec<String>,
    fpr: f64,
    examples: usize,
    /// Inputs that failed validation (not finite, outside the box): they alarm.
    invalid: usize,
    /// Alarms per detector, then fused.
    alarms: Vec<(String, usize)>,
    per_example: Option<PathBuf>,
}

impl std::fmt::Display for ScoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} examples scored ({} failed validation and alarm); alarms at a false-positive rate of {}:",
            self.examples, self.invalid, self.fpr
        )?;
        for (d, n) in &self.alarms {
            writeln!(
                f,
                "  {d:<20} {n} ({:.2}%)",
                100.0 * *n as f64 / self.examples.max(1) as f64
            )?;
        }
        if let Some(p) = &self.per_example {
            writeln!(f, "per example: {}", p.display())?;
        }
        Ok(())
    }
}

pub fn run(args: ScoreArgs) -> CliResult {
    let work = Workload::open(&args.on.spec(1))?;
    let mut outputs = guard(&work.files);
    outputs.inputs(std::slice::from_ref(&args.detector));
    let family = store::family(&args.detector).map_err(RunError::from)?;
    if family != "adversarial" && args.per_example.is_some() {
        return Err(CliError::Usage(format!(
            "--per-example writes per-input scores of adversarial-input detectors; {} is a {family} detector",
            args.detector.display()
        )));
    }
    match family.as_str() {
        "drift" => {
            let reference = Reference::load_for(&args.detector, &work)?;
            let report = reference.score(&work, args.batch as usize, args.seed)?;
            return emit(&report, args.json);
        }
        "extraction" => {
            let file = LedgerFile::load_for(&args.detector, &work)?;
            return emit(&file.score(&work, args.batch as usize)?, args.json);
        }
        _ => {}
    }
    if let Some(p) = &args.per_example {
        outputs.output(p, "--per-example", OutputKind::DetectionTsv)?;
    }
    let fitted = Fitted::load_for(&args.detector, &work)?;
    let rows = score::score_all(&work, &fitted, args.batch as usize, args.seed)?;
    let names: Vec<&str> = fitted.header.detectors.iter().map(|d| d.name()).collect();
    if let Some(p) = &args.per_example {
        files::write_atomic(p, score::tsv(&rows, &names).as_bytes())?;
    }
    let mut alarms: Vec<(String, usize)> = names
        .iter()
        .enumerate()
        .map(|(d, n)| (n.to_string(), rows.iter().filter(|r| r.alarms[d]).count()))
        .collect();
    alarms.push(("fused".into(), rows.iter().filter(|r| r.alarm).count()));
    emit(
        &ScoreSummary {
            detectors: names.iter().map(|n| n.to_string()).collect(),
            fpr: fitted.header.fpr,
            examples: rows.len(),
            invalid: rows.iter().filter(|r| r.invalid.is_some()).count(),
            alarms,
            per_example: args.per_example.clone(),
        },
        args.json,
    )
}
