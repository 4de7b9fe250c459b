//! The `rampart` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::data::{self, FASHION_CLASSES, Split};
use crate::device::{self, DeviceChoice};
use crate::eval;
use crate::model::Arch;
use crate::store;
use crate::train::{self, DatasetChoice, OptimizerKind, Schedule, TrainConfig};

#[derive(Parser, Debug)]
#[command(
    name = "rampart",
    version,
    about = "Adversarial-robustness engine: train, evaluate and inspect image classifiers",
    long_about = "Adversarial-robustness engine on Burn. Models are safetensors files in PyTorch \
                  layout; inputs are pixels in [0,1]. Fashion-MNIST is looked up in --data-dir, \
                  $RAMPART_DATA, datasets/fashion-mnist, then /usr/share/datasets/fashion-mnist."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a classifier from a TOML config; every config key is also a flag.
    Train(TrainArgs),
    /// Clean accuracy, per-class accuracy and confusion matrix on the test set.
    Eval(EvalArgs),
    /// Architecture, parameter count, tensors and metadata of a model file.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// TOML experiment config (see configs/); flags override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub set: TrainFlags,
}

/// One optional flag per [`TrainConfig`] key; set ones override the config file.
#[derive(Args, Debug, Default, Serialize)]
pub struct TrainFlags {
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetChoice>,
    /// Fashion-MNIST directory.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Train on the first N training images.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Evaluate each epoch on the first N test images.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_limit: Option<usize>,
    /// Images in the synthetic training set.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synthetic_size: Option<usize>,
    /// Normalise inside the model with the Fashion-MNIST mean/std (true/false).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// SGD momentum in [0, 1).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// L2 weight decay.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Step schedule: epochs between decays.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_epochs: Option<usize>,
    /// Step schedule: decay factor.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceChoice>,
    /// Run directory (model.safetensors, metrics.jsonl, checkpoint/).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
}

impl TrainArgs {
    /// The config file (or the defaults) with the flags laid over it.
    pub fn resolve(&self) -> Result<TrainConfig, String> {
        let mut table = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--config {}: {e}", path.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| format!("--config {}: {e}", path.display()))?
            }
            None => toml::Table::new(),
        };
        let flags = toml::Table::try_from(&self.set).map_err(|e| e.to_string())?;
        table.extend(flags);
        TrainConfig::from_toml_table(table).map_err(|e| match &self.config {
            Some(p) => format!("config {} (with flags): {e}", p.display()),
            None => e,
        })
    }
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (safetensors, PyTorch layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Architecture, for files without Rampart metadata (e.g. saved by PyTorch).
    #[arg(long)]
    pub arch: Option<Arch>,
    #[arg(long, value_enum, default_value_t = DatasetChoice::FashionMnist)]
    pub dataset: DatasetChoice,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Evaluate the first N test images.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub arch: Option<Arch>,
    #[arg(long)]
    pub json: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Inspect(a) => run_inspect(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn run_train(args: TrainArgs) -> CliResult {
    let cfg = args.resolve()?;
    let report = train::train(&cfg, args.resume)?;
    let last = report.history.last().expect("at least one epoch");
    println!(
        "saved {} ({} epochs, eval accuracy {:.2}% on {} images)",
        report.model_path.display(),
        report.history.len(),
        100.0 * last.eval_accuracy,
        last.eval_examples
    );
    Ok(())
}

fn run_eval(args: EvalArgs) -> CliResult {
    if args.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let chosen = device::choose(args.device)?;
    let loaded = store::load_model(&args.model, args.arch, &chosen.device)?;
    let data = match args.dataset {
        DatasetChoice::FashionMnist => {
            let dir = data::resolve_data_dir(args.data_dir.as_deref())?;
            data::load_split(&dir, Split::Test, &chosen.device)?
        }
        DatasetChoice::Synthetic => data::synthetic(500, 0x7e57, &chosen.device),
    }
    .take(args.limit);
    let report = eval::evaluate(&loaded.model, &data, args.batch);
    if args.json {
        let out = serde_json::json!({
            "model": args.model,
            "arch": loaded.spec.arch,
            "dataset": data.name,
            "device": chosen.description,
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    eprintln!("device: {}", chosen.description);
    println!(
        "{}: {} on {}",
        args.model.display(),
        loaded.spec.arch,
        data.name
    );
    println!(
        "clean accuracy: {:.2}% ({} images)",
        100.0 * report.accuracy,
        report.examples
    );
    println!("\nper-class accuracy:");
    for (i, acc) in report.per_class_accuracy.iter().enumerate() {
        println!("  {i} {:<12} {:6.2}%", class_name(i), 100.0 * acc);
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted):");
    print!("     ");
    for j in 0..report.confusion.len() {
        print!("{j:>6}");
    }
    println!();
    for (i, row) in report.confusion.iter().enumerate() {
        print!("  {i:>2} ");
        for v in row {
            print!("{v:>6}");
        }
        println!();
    }
    Ok(())
}

fn class_name(i: usize) -> &'static str {
    FASHION_CLASSES.get(i).copied().unwrap_or("")
}

fn run_inspect(args: InspectArgs) -> CliResult {
    let loaded = store::load_model(&args.model, args.arch, &burn::tensor::Device::flex())?;
    let tensors = store::expected_tensors(&loaded.spec, &burn::tensor::Device::flex());
    let params: usize = tensors.values().map(|s| s.iter().product::<usize>()).sum();
    let parse = |k: &str| {
        loaded
            .metadata
            .get(k)
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
    };
    if args.json {
        let out = serde_json::json!({
            "model": args.model,
            "spec": loaded.spec,
            "parameters": params,
            "tensors": tensors,
            "config": parse("rampart.config"),
            "summary": parse("rampart.summary"),
            "metadata": loaded.metadata,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let spec = loaded.spec;
    println!("file:          {}", args.model.display());
    println!("architecture:  {}", spec.arch);
    println!("classes:       {}", spec.num_classes);
    println!(
        "normalisation: (x - {}) / {}  (x in [0,1])",
        spec.mean, spec.std
    );
    println!("parameters:    {params}");
    println!("tensors (PyTorch layout):");
    for (name, shape) in &tensors {
        println!("  {name:<14} {shape:?}");
    }
    for key in ["rampart.summary", "rampart.config"] {
        if let Some(v) = parse(key) {
            println!("{key}:\n{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}
