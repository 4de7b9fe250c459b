//! `rampart detect`: detectors of adversarial inputs, fitted and calibrated on clean data
//! (`fit`), applied to inputs (`score`), and measured against Rampart's own attacks and an
//! adaptive attacker (`evaluate`).
//! One file per subcommand; the jobs they run live in `crate::detect`.

mod concept;
mod drift;
mod evaluate;
mod extraction;
mod fit;
mod score;

use clap::Subcommand;

use super::CliError;
use super::CliResult;
use crate::detect::{DetectError, RunError};

#[derive(Subcommand, Debug)]
pub enum DetectCommand {
    /// Fit detectors on training data and calibrate their alarms to --fpr on held-out clean
    /// examples (the selected ones: by default the first 2,000 test images).
    Fit(fit::FitArgs),
    /// Score inputs with a fitted detector: scores, p-values, alarms, per example.
    Score(score::ScoreArgs),
    /// Measure a fitted detector: false positives on clean data, detection of FGSM, PGD and
    /// APGD examples, and an adaptive attack on each differentiable detector.
    Evaluate(evaluate::EvaluateArgs),
    /// Test for drift between the first --reference selected examples and the rest: MMD on
    /// the penultimate features, per-feature KS, entropy KS, predicted-class chi-square.
    Drift(drift::DriftArgs),
    /// Measure PRADA's model-extraction detection: benign clients replaying test images, and
    /// a Jacobian-augmentation attacker; false alarms and queries until the alarm.
    Extraction(extraction::ExtractionArgs),
    /// Concept drift from labelled feedback: DDM and windowed accuracy over the selected
    /// examples, with a change injected at --change-at (corrupted inputs or swapped labels).
    Concept(concept::ConceptArgs),
    /// Online drift: an MMD window over a stream, calibrated by bootstrap to an expected run
    /// time between false alarms (--ert); measured on held-out streams, with and without a
    /// shift after their first window.
    Online(drift::OnlineArgs),
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

pub(super) fn usage(e: DetectError) -> CliError {
    CliError::Usage(e.to_string())
}

pub fn run(command: DetectCommand) -> CliResult {
    match command {
        DetectCommand::Fit(a) => fit::run(a),
        DetectCommand::Score(a) => score::run(a),
        DetectCommand::Evaluate(a) => evaluate::run(a),
        DetectCommand::Drift(a) => drift::run(a),
        DetectCommand::Extraction(a) => extraction::run(a),
        DetectCommand::Concept(a) => concept::run(a),
        DetectCommand::Online(a) => drift::run_online(a),
    }
}
