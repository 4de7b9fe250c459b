//! The `rampart` command line: one file per command over shared argument groups
//! ([`args`]), training flags derived from the config ([`flags`]), and one way out for every
//! report ([`emit`]): a text rendering, or one JSON object with `--json`.

pub mod args;
mod attack;
mod card;
mod certify;
mod crypt;
mod data;
mod detect;
mod ensemble;
mod eval;
mod evaluate;
mod explain;
pub mod flags;
mod inspect;
mod membership;
mod merge;
mod observe;
mod predict;
mod prune;
mod serve;
mod sign;
mod train;
mod watermark;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::artifact::{ArtifactError, FileError};
use crate::ensemble::EnsembleError;
use crate::train::TrainError;
use crate::workload::WorkloadError;

#[derive(Parser, Debug)]
#[command(
    name = "rampart",
    version,
    about = "Adversarial-robustness engine: train, attack and certify classifiers, ensembles and multimodal fusion models",
    long_about = "Adversarial-robustness engine on Burn. Models are safetensors files in PyTorch \
                  layout; inputs are pixels in [0,1]. Fashion-MNIST is looked up in --data-dir, \
                  $RAMPART_DATA, datasets/fashion-mnist, then /usr/share/datasets/fashion-mnist. \
                  An ensemble manifest (.toml/.json) is accepted wherever a model is; a \
                  multimodal fusion model takes JSONL records with --records. Rampart never \
                  writes over a file it reads, and writes every output atomically."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Private key (an age identity file, `rampart keygen --for encryption`) for encrypted
    /// models, manifests and detectors, which every command reads decrypted in memory only.
    /// Or $RAMPART_DECRYPT_KEY_FILE, or the key itself in $RAMPART_DECRYPT_KEY; never the
    /// key on the command line.
    #[arg(long, global = true, env = "RAMPART_DECRYPT_KEY_FILE")]
    pub decrypt_key: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model from a TOML config; every config key is also a flag.
    Train(train::TrainArgs),
    /// Clean accuracy, per-class accuracy and confusion matrix.
    Eval(eval::EvalArgs),
    /// What a model file or manifest holds: spec, tensors, parameters, training metadata.
    Inspect(inspect::InspectArgs),
    /// Attack a model (FGSM, PGD) and report the per-example worst-case robust accuracy.
    Attack(attack::AttackArgs),
    /// AutoAttack-grade robustness evaluation: APGD-CE, APGD-T, Square, masking checks.
    Evaluate(evaluate::EvaluateArgs),
    /// Explain one prediction: saliency, gradient x input, integrated gradients, SmoothGrad
    /// or LIME, for image, ensemble and fusion models (text, PNG heat map, SVG, HTML, JSON).
    Explain(explain::ExplainArgs),
    /// How far a method's explanations can be trusted: deletion and insertion areas against
    /// a random ranking, stability, integrated gradients' completeness.
    Faithfulness(explain::FaithfulnessArgs),
    /// Certify examples with randomized smoothing (Cohen et al. 2019 CERTIFY).
    Certify(certify::CertifyArgs),
    /// The shards of a sharded certify, predict, attack or evaluate run (`--shard-index I
    /// --shard-count K`) as the single result, checked to be one run covering every example
    /// once.
    Merge(merge::MergeArgs),
    /// Smoothed predictions with abstain (Cohen et al. 2019 PREDICT).
    Predict(predict::PredictArgs),
    /// Ensembles of models that vote: create a manifest from model files, or train members.
    #[command(subcommand)]
    Ensemble(ensemble::EnsembleCommand),
    /// Data tools: the SYNTHETIC multimodal security set.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Detectors: adversarial inputs (fit, score, evaluate), drift (two-sample and online),
    /// concept drift from labels, model extraction (PRADA).
    #[command(subcommand)]
    Detect(detect::DetectCommand),
    /// A security model card from recorded runs (Markdown with Hugging Face front matter).
    Card(card::CardArgs),
    /// Write a new key pair: ECDSA (PEM) for signing models, or with `--for encryption` an age
    /// post-quantum hybrid pair (ML-KEM-768 + X25519) for encrypting them.
    Keygen(sign::KeygenArgs),
    /// Sign a model file or directory in the OpenSSF model signing format.
    Sign(sign::SignArgs),
    /// Verify a model file or directory against its OpenSSF model signing signature.
    Verify(sign::VerifyArgs),
    /// Membership inference: how well an attacker (loss threshold, or LiRA over shadow models)
    /// tells an image model's training images from images it never saw (ROC area, TPR at
    /// 0.1% FPR).
    Membership(membership::MembershipArgs),
    /// Magnitude pruning of an image model: every weight tensor's smallest entries set to
    /// zero, written as a new file (what a watermark must survive).
    Prune(prune::PruneArgs),
    /// Ownership watermarks: check a model against the secret of `rampart train --watermark`.
    #[command(subcommand)]
    Watermark(watermark::WatermarkCommand),
    /// Encrypt a model file, manifest or detector at rest (age format) to public keys.
    Encrypt(crypt::EncryptArgs),
    /// Decrypt an encrypted file to hand it to another tool (Rampart's commands read
    /// encrypted files directly).
    Decrypt(crypt::DecryptArgs),
    /// A monitored inference service: predictions over HTTP with detectors, drift and
    /// extraction monitoring, alerts, a response policy and fail-over to signed backups.
    Serve(serve::ServeArgs),
    /// The monitoring report from the service's incident log (terminal and HTML).
    Report(serve::ReportArgs),
    /// The service's incident log: verify its hash chain.
    #[command(subcommand)]
    Incidents(serve::IncidentsCommand),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Ensemble(#[from] EnsembleError),
    #[error("cannot write the report: {0}")]
    Output(std::io::Error),
    /// The reader of standard output went away (`rampart inspect ... | head`): not an error.
    #[error("standard output was closed")]
    ClosedPipe,
}

pub type CliResult = Result<(), CliError>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(key) = &cli.decrypt_key {
        crate::artifact::sealed::use_key_file(key);
    }
    let result = match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Attack(a) => attack::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Merge(a) => merge::merge(a),
        Command::Faithfulness(a) => explain::faithfulness(a),
        Command::Certify(a) => certify::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Ensemble(c) => ensemble::run(c),
        Command::Data(c) => data::run(c),
        Command::Detect(c) => detect::run(c),
        Command::Card(a) => card::run(a),
        Command::Keygen(a) => sign::keygen(a),
        Command::Sign(a) => sign::sign(a),
        Command::Verify(a) => sign::verify(a),
        Command::Membership(a) => membership::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Watermark(c) => watermark::run(c),
        Command::Encrypt(a) => crypt::encrypt(a),
        Command::Decrypt(a) => crypt::decrypt(a),
        Command::Serve(a) => serve::run(a),
        Command::Incidents(c) => serve::incidents(c),
        Command::Report(a) => serve::report(a),
    };
    match result {
        Ok(()) | Err(CliError::ClosedPipe) => ExitCode::SUCCESS,
        Err(e) => {
            note(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Prints a report: its text rendering, or one JSON object with `json`, which also records
/// the command that produced it (`command`), so that a model card can cite it.
pub fn emit<R: serde::Serialize + std::fmt::Display>(report: &R, json: bool) -> CliResult {
    let text = if json {
        let mut s = serde_json::to_string_pretty(report)
            .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        // The command goes last, the report's own keys keep their order.
        if s.starts_with('{') && s.ends_with("\n}") {
            s.truncate(s.len() - 2);
            let command = serde_json::to_string(&command_line()).expect("a string serialises");
            s.push_str(&format!(",\n  \"command\": {command}\n}}"));
        }
        s.push('\n');
        s
    } else {
        report.to_string()
    };
    print(&text)
}

/// This process's command line, as a shell would take it back (`rampart` for the program).
pub fn command_line() -> String {
    let quote = |a: String| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    std::iter::once("rampart".to_string())
        .chain(
            std::env::args_os()
                .skip(1)
                .map(|a| quote(a.to_string_lossy().into_owned())),
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `text` to standard output; a closed pipe ends the command quietly.
pub fn print(text: &str) -> CliResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::ClosedPipe),
        Err(e) => Err(CliError::Output(e)),
    }
}

/// A line for people on standard error (progress, device, notes); never fails.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
