//! `rampart detect`: detectors of adversarial inputs, fitted and calibrated on clean data
//! (`fit`), applied to inputs (`score`), and measured against Rampart's own attacks and an
//! adaptive attacker (`evaluate`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::args::{WorkloadArgs, guard};
use super::{CliError, CliResult, emit, note};
use crate::artifact::files::{self, OutputKind};
use crate::attack::apgd::Apgd;
use crate::attack::{Fgsm, Method as AttackMethod, Norm, Pgd};
use crate::data::Split;
use crate::detect::adaptive::Adaptive;
use crate::detect::adversarial::{Kind, Settings, Squeeze, Vote};
use crate::detect::calibrate::Fusion;
use crate::detect::drift::{self, DriftPlan, FeatureTest, Shift};
use crate::detect::evaluate::{self, EvalPlan};
use crate::detect::extraction::evaluate::ExtractionPlan;
use crate::detect::extraction::{self, Prada};
use crate::detect::fit::{self, FitPlan};
use crate::detect::score::{self, ScoreRow};
use crate::detect::store::Fitted;
use crate::detect::{DetectError, RunError};
use crate::workload::{Examples, Job, Source, Workload};

/// Clean examples calibrated on when `--limit` is not given.
const DEFAULT_CALIBRATION: usize = 2000;

#[derive(Subcommand, Debug)]
pub enum DetectCommand {
    /// Fit detectors on training data and calibrate their alarms to --fpr on held-out clean
    /// examples (the selected ones: by default the first 2,000 test images).
    Fit(FitArgs),
    /// Score inputs with a fitted detector: scores, p-values, alarms, per example.
    Score(ScoreArgs),
    /// Measure a fitted detector: false positives on clean data, detection of FGSM, PGD and
    /// APGD examples, and an adaptive attack on each differentiable detector.
    Evaluate(EvaluateArgs),
    /// Test for drift between the first --reference selected examples and the rest: MMD on
    /// the penultimate features, per-feature KS, entropy KS, predicted-class chi-square.
    Drift(DriftArgs),
    /// Measure PRADA's model-extraction detection: benign clients replaying test images, and
    /// a Jacobian-augmentation attacker; false alarms and queries until the alarm.
    Extraction(ExtractionArgs),
    /// Concept drift from labelled feedback: DDM and windowed accuracy over the selected
    /// examples, with a change injected at --change-at (corrupted inputs or swapped labels).
    Concept(ConceptArgs),
    /// Online drift: an MMD window over a stream, calibrated by bootstrap to an expected run
    /// time between false alarms (--ert); measured on held-out streams, with and without a
    /// shift after their first window.
    Online(OnlineArgs),
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct OnlineArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// The first this many selected examples calibrate (half reference, half bootstrap pool).
    #[arg(long, default_value_t = 1000)]
    pub reference: usize,
    /// Stream points in the sliding window.
    #[arg(long, default_value_t = 20)]
    pub window: usize,
    /// Expected run time between false alarms under no drift, steps.
    #[arg(long, default_value_t = 100.0)]
    pub ert: f64,
    /// Simulated streams for the calibration (at least 4·ERT).
    #[arg(long, default_value_t = 1000)]
    pub bootstraps: usize,
    /// Held-out streams to run, each of --stream-length examples in random order.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    #[arg(long, default_value_t = 500)]
    pub stream_length: usize,
    /// Corrupt each stream after its first window: brightness (+S) or noise (sd S).
    #[arg(long, value_enum, default_value_t = Shift::None)]
    pub shift: Shift,
    #[arg(long, default_value_t = 0.0)]
    pub strength: f64,
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

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

#[derive(Args, Debug)]
pub struct ExtractionArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// Alarm when the Shapiro-Wilk W of the query distances falls below this.
    #[arg(long, default_value_t = 0.9)]
    pub delta: f64,
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
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct DriftArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// The first this many selected examples are the reference; the rest the new sample.
    #[arg(long)]
    pub reference: usize,
    /// A deliberate corruption of the new sample (to measure the tests): brightness (+S),
    /// noise (Gaussian, sd S), remove-class (class S left out).
    #[arg(long, value_enum, default_value_t = Shift::None)]
    pub shift: Shift,
    /// The shift's strength S (input units, or the class to remove).
    #[arg(long, default_value_t = 0.0)]
    pub strength: f64,
    /// Permutations of the MMD test.
    #[arg(long, default_value_t = 200)]
    pub permutations: usize,
    /// The two-sample test on each penultimate feature.
    #[arg(long, value_enum, default_value_t = FeatureTest::Ks)]
    pub feature_test: FeatureTest,
    /// Significance level of the drift decision, in (0, 1).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct FitArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// Detectors, comma-separated, fused in this order.
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

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// A detector file from `rampart detect fit` for this model.
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

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// A detector file from `rampart detect fit` for this model.
    #[arg(long)]
    pub detector: PathBuf,
    /// L∞ radius of FGSM, PGD-40, APGD-CE and the adaptive attack, input units.
    #[arg(long, default_value_t = 0.1)]
    pub eps: f64,
    /// L2 radius of the L2 PGD-40 attack, input units.
    #[arg(long, default_value_t = 1.5)]
    pub eps_l2: f64,
    /// PGD and adaptive-attack steps.
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// APGD-CE iterations (0 leaves APGD out).
    #[arg(long, default_value_t = 100)]
    pub apgd_steps: usize,
    /// Skip the adaptive attack.
    #[arg(long)]
    pub no_adaptive: bool,
    /// Draw each detector's ROC curve against each attack into this PNG.
    #[arg(long)]
    pub roc: Option<PathBuf>,
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

impl From<RunError> for CliError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Workload(w) => CliError::Workload(w),
            RunError::Store(crate::detect::store::StoreError::File(f)) => CliError::File(f),
            other => CliError::Usage(other.to_string()),
        }
    }
}

fn usage(e: DetectError) -> CliError {
    CliError::Usage(e.to_string())
}

pub fn run(command: DetectCommand) -> CliResult {
    match command {
        DetectCommand::Fit(a) => run_fit(a),
        DetectCommand::Score(a) => run_score(a),
        DetectCommand::Evaluate(a) => run_evaluate(a),
        DetectCommand::Drift(a) => run_drift(a),
        DetectCommand::Extraction(a) => run_extraction(a),
        DetectCommand::Concept(a) => run_concept(a),
        DetectCommand::Online(a) => run_online(a),
    }
}

fn run_fit(args: FitArgs) -> CliResult {
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

/// Opens a detector file for the workload's model, refusing one fitted for another model.
fn open_detector(path: &std::path::Path, work: &Workload) -> Result<Fitted, CliError> {
    let fitted = Fitted::load(path, &work.device.device).map_err(RunError::from)?;
    if fitted.header.model_sha256 != work.opened.sha256 {
        return Err(CliError::Usage(format!(
            "--detector {}: was fitted for another model (SHA-256 {}…), not {}; fit one for this model with `rampart detect fit`",
            path.display(),
            &fitted.header.model_sha256[..12.min(fitted.header.model_sha256.len())],
            work.opened.path.display()
        )));
    }
    Ok(fitted)
}

struct ScoreJob<'a> {
    fitted: &'a Fitted,
    batch: usize,
    seed: u64,
}

impl Job for ScoreJob<'_> {
    type Output = Result<Vec<ScoreRow>, DetectError>;

    fn run<const D: usize, C: crate::classifier::Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        use crate::classifier::Input;
        score::check_model(self.fitted, model, &ex.inputs)?;
        let device = ex.labels.device();
        device.seed(self.seed);
        let thresholds = score::thresholds(self.fitted)?;
        let labels = crate::detect::host_ints(ex.labels.clone(), "labels")?;
        let mut rows = Vec::with_capacity(ex.inputs.len());
        for start in (0..ex.inputs.len()).step_by(self.batch) {
            let x = ex.inputs.range(start, start + self.batch);
            let end = start + x.len();
            let b = score::score_batch(self.fitted, model, &x)?;
            rows.extend(b.rows(
                &ex.ids[start..end],
                &labels[start..end],
                &thresholds,
                self.fitted.header.fpr,
            ));
        }
        Ok(rows)
    }
}

/// What `detect score` prints.
#[derive(Debug, serde::Serialize)]
struct ScoreSummary {
    detectors: Vec<String>,
    fpr: f64,
    examples: usize,
    /// Alarms per detector, then fused.
    alarms: Vec<(String, usize)>,
    per_example: Option<PathBuf>,
}

impl std::fmt::Display for ScoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} examples scored; alarms at a false-positive rate of {}:",
            self.examples, self.fpr
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

fn run_score(args: ScoreArgs) -> CliResult {
    let work = Workload::open(&args.on.spec(1))?;
    let mut outputs = guard(&work.files);
    outputs.inputs(std::slice::from_ref(&args.detector));
    if let Some(p) = &args.per_example {
        outputs.output(p, "--per-example", OutputKind::DetectionTsv)?;
    }
    let fitted = open_detector(&args.detector, &work)?;
    let rows = work
        .run(
            ScoreJob {
                fitted: &fitted,
                batch: args.batch as usize,
                seed: args.seed,
            },
            None,
        )?
        .map_err(usage)?;
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
            alarms,
            per_example: args.per_example.clone(),
        },
        args.json,
    )
}

fn run_evaluate(args: EvaluateArgs) -> CliResult {
    let bad = |flag: &str, e: crate::attack::AttackError| {
        CliError::Usage(format!("--{flag} {}", e.message))
    };
    let mut attacks = vec![
        (
            format!("FGSM L∞ {}", args.eps),
            AttackMethod::Fgsm(Fgsm::new(args.eps).map_err(|e| bad("eps", e))?),
        ),
        (
            format!("PGD-{} L∞ {}", args.steps, args.eps),
            AttackMethod::Pgd(
                Pgd::new(Norm::Linf, args.eps, args.steps).map_err(|e| bad("eps", e))?,
            ),
        ),
        (
            format!("PGD-{} L2 {}", args.steps, args.eps_l2),
            AttackMethod::Pgd(
                Pgd::new(Norm::L2, args.eps_l2, args.steps).map_err(|e| bad("eps-l2", e))?,
            ),
        ),
    ];
    if args.apgd_steps > 0 {
        attacks.push((
            format!("APGD-CE-{} L∞ {}", args.apgd_steps, args.eps),
            AttackMethod::Apgd(
                Apgd::new(Norm::Linf, args.eps, args.apgd_steps)
                    .map_err(|e| bad("apgd-steps", e))?,
            ),
        ));
    }
    let plan = EvalPlan {
        attacks,
        adaptive: (!args.no_adaptive).then_some(Adaptive {
            norm: Norm::Linf,
            epsilon: args.eps,
            steps: args.steps,
        }),
        batch: args.batch as usize,
        seed: args.seed,
    };
    let work = Workload::open(&args.on.spec(1))?;
    let mut outputs = guard(&work.files);
    outputs.inputs(std::slice::from_ref(&args.detector));
    if let Some(p) = &args.roc {
        outputs.output(p, "--roc", OutputKind::Png)?;
    }
    let fitted = open_detector(&args.detector, &work)?;
    note(&format!("device: {}", work.device.description));
    let report = evaluate::evaluate(&work, &fitted, &plan, args.roc.as_deref())?;
    emit(&report, args.json)
}

/// Checks `--shift` and `--strength`: brightness and noise need a positive strength; class
/// removal is refused with `removal` (why it does not fit this command) when given.
fn check_shift(shift: Shift, strength: f64, removal: Option<&str>) -> Result<(), CliError> {
    if let (Shift::RemoveClass, Some(why)) = (shift, removal) {
        return Err(CliError::Usage(format!("--shift remove-class {why}")));
    }
    let corrupts = matches!(shift, Shift::Brightness | Shift::Noise);
    if corrupts && !(strength.is_finite() && strength > 0.0) {
        return Err(CliError::Usage(format!(
            "--strength must be a positive number for --shift {shift:?}, got {strength}"
        )));
    }
    Ok(())
}

fn run_drift(args: DriftArgs) -> CliResult {
    check_shift(args.shift, args.strength, None)?;
    let plan = DriftPlan {
        feature_test: args.feature_test,
        reference: args.reference,
        shift: args.shift,
        strength: args.strength,
        permutations: args.permutations,
        alpha: args.alpha,
        batch: args.batch as usize,
        seed: args.seed,
    };
    let work = Workload::open(&args.on.spec(1))?;
    note(&format!("device: {}", work.device.description));
    let report = drift::drift(&work, &plan)?;
    emit(&report, args.json)
}

fn run_extraction(args: ExtractionArgs) -> CliResult {
    if !(args.lambda.is_finite() && args.lambda > 0.0) {
        return Err(CliError::Usage(format!(
            "--lambda must be a positive number, got {}",
            args.lambda
        )));
    }
    if args.clients == 0 || args.queries == 0 {
        return Err(CliError::Usage(
            "--clients and --queries must be at least 1".into(),
        ));
    }
    let plan = ExtractionPlan {
        prada: Prada::new(args.delta, 100, 10).map_err(usage)?,
        clients: args.clients,
        queries: args.queries,
        seeds: args.seeds,
        lambda: args.lambda,
        batch: args.batch as usize,
        seed: args.seed,
    };
    let work = Workload::open(&args.on.spec(1))?;
    note(&format!("device: {}", work.device.description));
    let report = extraction::evaluate::evaluate(&work, &plan)?;
    emit(&report, args.json)
}

fn run_concept(args: ConceptArgs) -> CliResult {
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
    let plan = crate::detect::concept::run::ConceptPlan {
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
    let report = crate::detect::concept::run::concept(&work, &plan)?;
    emit(&report, args.json)
}

fn run_online(args: OnlineArgs) -> CliResult {
    check_shift(
        args.shift,
        args.strength,
        Some("is not a stream corruption here; use brightness or noise"),
    )?;
    if args.streams == 0 {
        return Err(CliError::Usage("--streams must be at least 1".into()));
    }
    let plan = crate::detect::drift::online_run::OnlinePlan {
        reference: args.reference,
        window: args.window,
        ert: args.ert,
        bootstraps: args.bootstraps,
        streams: args.streams,
        length: args.stream_length,
        shift: args.shift,
        strength: args.strength,
        batch: args.batch as usize,
        seed: args.seed,
    };
    let work = Workload::open(&args.on.spec(1))?;
    note(&format!("device: {}", work.device.description));
    let report = crate::detect::drift::online_run::online(&work, &plan)?;
    emit(&report, args.json)
}
