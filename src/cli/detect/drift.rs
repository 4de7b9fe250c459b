//! `rampart detect drift` (two samples) and `rampart detect online` (a stream calibrated to
//! an expected run time).

use clap::Args;

use crate::cli::args::WorkloadArgs;
use crate::cli::{CliError, CliResult, emit, note};
use crate::detect::drift::online_run::{self, OnlinePlan};
use crate::detect::drift::{self, DriftPlan, FeatureTest, Shift, Tests};
use crate::workload::Workload;

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
    #[command(flatten)]
    pub tests: TestArgs,
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

/// The drift tests' settings, shared by `detect drift` and `detect fit --kind drift`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Permutations of the MMD test.
    #[arg(long, default_value_t = 200)]
    pub permutations: usize,
    /// The two-sample test on each penultimate feature.
    #[arg(long, value_enum, default_value_t = FeatureTest::Ks)]
    pub feature_test: FeatureTest,
    /// Significance level of the drift decision, in (0, 1).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
}

impl TestArgs {
    pub fn tests(&self, seed: u64) -> Tests {
        Tests {
            feature_test: self.feature_test,
            permutations: self.permutations,
            alpha: self.alpha,
            seed,
        }
    }
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

/// Checks `--shift` and `--strength`: brightness and noise need a positive strength; class
/// removal is refused with `removal` (why it does not fit this command) when given.
pub(super) fn check_shift(
    shift: Shift,
    strength: f64,
    removal: Option<&str>,
) -> Result<(), CliError> {
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

pub fn run(args: DriftArgs) -> CliResult {
    check_shift(args.shift, args.strength, None)?;
    let plan = DriftPlan {
        tests: args.tests.tests(args.seed),
        reference: args.reference,
        shift: args.shift,
        strength: args.strength,
        batch: args.batch as usize,
    };
    let work = Workload::open(&args.on.spec(1))?;
    note(&format!("device: {}", work.device.description));
    let report = drift::drift(&work, &plan)?;
    emit(&report, args.json)
}

pub fn run_online(args: OnlineArgs) -> CliResult {
    check_shift(
        args.shift,
        args.strength,
        Some("is not a stream corruption here; use brightness or noise"),
    )?;
    if args.streams == 0 {
        return Err(CliError::Usage("--streams must be at least 1".into()));
    }
    let plan = OnlinePlan {
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
    let report = online_run::online(&work, &plan)?;
    emit(&report, args.json)
}
