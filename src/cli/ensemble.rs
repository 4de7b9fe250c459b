//! `rampart ensemble create` and `rampart ensemble train`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::observe::{Console, Progress};
use super::{CliError, CliResult, note, print};
use crate::artifact::files::OutputKind;
use crate::artifact::{self, Manifest, Outputs};
use crate::data::DatasetChoice;
use crate::device::{self, DeviceChoice};
use crate::ensemble::{self as build, EnsembleTrainConfig};
use crate::model::{Arch, Ensemble, ImageNet, Strategy};

#[derive(Subcommand, Debug)]
pub enum EnsembleCommand {
    /// Write a manifest (TOML, or JSON for a .json path) for existing model files, with each
    /// file's sha256; `eval`, `attack`, `certify`, `predict` and `inspect` accept it as
    /// --model.
    Create(CreateArgs),
    /// Train several members (different modes and/or seeds) from one config, fit their
    /// weights on a held-out validation split and write OUT/ensemble.toml.
    Train(TrainArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Member model files (safetensors; Rampart's or PyTorch's), below the manifest's folder.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// weighted_majority: weighted vote of argmax classes; unanimous: the class if all agree,
    /// else "no decision"; highest_confidence: the most confident member decides;
    /// mean_logits / mean_probs: argmax of the weighted mean.
    #[arg(long, value_enum)]
    pub strategy: Strategy,
    /// Manifest to write (.toml or .json).
    #[arg(long)]
    pub out: PathBuf,
    /// Weights by hand, one per model, comma-separated (default: equal).
    #[arg(long, value_delimiter = ',', conflicts_with = "fit_weights")]
    pub weights: Option<Vec<f64>>,
    /// Weights proportional to each member's accuracy on a validation split: the last
    /// --validation-size Fashion-MNIST training images (or fresh synthetic images).
    #[arg(long)]
    pub fit_weights: bool,
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..60_000))]
    pub validation_size: u64,
    /// Architecture of members without Rampart metadata (PyTorch-saved files).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Allow members outside the manifest's folder (every later command then needs it too).
    #[arg(long)]
    pub allow_outside: bool,
    #[arg(long, value_enum, default_value_t = DatasetChoice::FashionMnist)]
    pub dataset: DatasetChoice,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Ensemble config (see configs/fmnist-ensemble.toml): strategy, out, [base] training
    /// keys shared by all members, one [[member]] table of keys per member.
    #[arg(long)]
    pub config: PathBuf,
}

pub fn run(command: EnsembleCommand) -> CliResult {
    match command {
        EnsembleCommand::Create(a) => create(a),
        EnsembleCommand::Train(a) => train(a),
    }
}

fn create(args: CreateArgs) -> CliResult {
    if !crate::artifact::is_manifest(&args.out) {
        return Err(CliError::Usage(format!(
            "--out {}: a manifest is .toml or .json",
            args.out.display()
        )));
    }
    let mut outputs = Outputs::new();
    outputs.inputs(&args.models);
    outputs.output(&args.out, "--out", OutputKind::Manifest)?;
    let n = args.models.len();
    let (weights, from) = match &args.weights {
        Some(w) if w.len() != n => {
            return Err(CliError::Usage(format!(
                "--weights has {} values for {n} models",
                w.len()
            )));
        }
        Some(w) => (w.clone(), "hand".to_string()),
        None => (vec![1.0; n], "equal".to_string()),
    };
    let chosen = device::choose(args.device).map_err(CliError::Usage)?;
    let models: Vec<(PathBuf, Option<Arch>)> =
        args.models.iter().map(|p| (p.clone(), args.arch)).collect();
    let members = build::open_members(&models, &chosen.device)?;
    let digests: Vec<String> = members.iter().map(|m| m.sha256.clone()).collect();
    let mut manifest =
        Manifest::with_digests(&args.out, &models, &digests, &weights, args.strategy, &from);
    if let Some(m) = manifest.members.iter().find(|m| m.path.is_absolute())
        && !args.allow_outside
    {
        return Err(CliError::Artifact(artifact::ArtifactError::Outside {
            manifest: args.out.clone(),
            member: m.path.clone(),
        }));
    }
    let nets: Vec<ImageNet> = members.iter().map(|m| m.net.clone()).collect();
    // Refuses bad weights or members that disagree on the classes before anything is written.
    Ensemble::new(nets.clone(), weights, args.strategy)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if args.fit_weights {
        let validation = build::validation_split(
            args.dataset,
            args.data_dir.as_deref(),
            args.validation_size as usize,
            0,
            &chosen.device,
        )
        .map_err(|e| CliError::Usage(e.to_string()))?;
        if let Some(start) = validation.fashion_start {
            warn_overlap(&args.models, &members, start);
        }
        build::fit_into(&mut manifest, &nets, &validation);
    }
    manifest.write(&args.out)?;
    print(&describe(&args.out, &manifest))
}

fn warn_overlap(models: &[PathBuf], members: &[build::Member], start: usize) {
    let split = format!("Fashion-MNIST training images {start}.. (the validation split)");
    for (path, m) in models.iter().zip(members) {
        match build::trained_past(&m.metadata, start) {
            Some(false) => {}
            Some(true) => note(&format!(
                "warning: {} was trained on {split}: its fitted weight is optimistic",
                path.display()
            )),
            None => note(&format!(
                "warning: {} does not say what it was trained on; if it saw {split}, its fitted weight is optimistic",
                path.display()
            )),
        }
    }
}

fn describe(path: &std::path::Path, manifest: &Manifest) -> String {
    let mut text = format!(
        "wrote {} ({} members, {}, weights from {})\n",
        path.display(),
        manifest.members.len(),
        manifest.strategy,
        manifest.weights_from
    );
    for m in &manifest.members {
        text.push_str(&format!(
            "  {:<40} weight {:.4}{}\n",
            m.path.display(),
            m.weight,
            m.validation_accuracy
                .map(|a| format!("  validation accuracy {:.2}%", 100.0 * a))
                .unwrap_or_default()
        ));
    }
    text
}

fn train(args: TrainArgs) -> CliResult {
    let cfg = EnsembleTrainConfig::read(&args.config)?;
    let mut progress = Progress::default();
    let mut console = Console;
    let inputs = [args.config.clone()];
    let (out, manifest) = build::train_members(
        &cfg,
        &inputs,
        &mut [&mut progress, &mut console],
        &mut |line| note(line),
    )?;
    print(&describe(&out, &manifest))
}
