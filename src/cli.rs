//! The `rampart` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::attack::{AttackLoss, Norm, Pgd};
use crate::certify::Smooth;
use crate::certify::run::{CertifyRun, certify_all, predict_all};
use crate::data::{self, FASHION_CLASSES, Split};
use crate::device::{self, DeviceChoice};
use crate::ensemble::{ImageModel, ValidModel};

mod fusion;
use crate::eval;
use crate::model::Arch;
use crate::store;
use crate::train::{self, DatasetChoice, OptimizerKind, Schedule, TrainConfig};

#[derive(Parser, Debug)]
#[command(
    name = "rampart",
    version,
    about = "Adversarial-robustness engine: train, attack and certify classifiers, ensembles and multimodal fusion models",
    long_about = "Adversarial-robustness engine on Burn. Models are safetensors files in PyTorch \
                  layout; inputs are pixels in [0,1]. Fashion-MNIST is looked up in --data-dir, \
                  $RAMPART_DATA, datasets/fashion-mnist, then /usr/share/datasets/fashion-mnist. \
                  An ensemble manifest (.toml/.json) is accepted wherever a model is; a \
                  multimodal fusion model takes JSONL records with --records."
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
    /// Attack a model (FGSM, PGD) and report the per-example worst-case robust accuracy.
    Attack(AttackArgs),
    /// Certify test images with randomized smoothing (Cohen et al. 2019 CERTIFY).
    Certify(CertifyArgs),
    /// Smoothed predictions with abstain (Cohen et al. 2019 PREDICT).
    Predict(PredictArgs),
    /// Ensembles of models that vote: create a manifest from model files, or train members.
    #[command(subcommand)]
    Ensemble(EnsembleCommand),
    /// Data tools: the SYNTHETIC multimodal security set.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write a seeded SYNTHETIC security task (benign / phishing / malware / exfiltration)
    /// as JSONL records with text, bytes_b64 and network fields; each modality alone is only
    /// partly informative.
    SynthSecurity(SynthArgs),
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Records to write.
    #[arg(long, default_value_t = 4000)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of records whose text (and, independently, bytes) points to the wrong pair
    /// of classes.
    #[arg(long, default_value_t = 0.15)]
    pub flip: f64,
    /// Probability that each modality is missing from a record (never all three).
    #[arg(long, default_value_t = 0.1)]
    pub missing: f64,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum EnsembleCommand {
    /// Write a manifest (TOML, or JSON for a .json path) for existing model files, with each
    /// file's sha256; `eval`, `attack`, `certify` and `predict` accept it as --model.
    Create(EnsembleCreateArgs),
    /// Train several members (different modes and/or seeds) from one config, fit their
    /// weights on a held-out validation split and write OUT/ensemble.toml.
    Train(EnsembleTrainArgs),
}

#[derive(Args, Debug)]
pub struct EnsembleCreateArgs {
    /// Member model files (safetensors; Rampart's or PyTorch's).
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// weighted_majority: weighted vote of argmax classes; unanimous: the class if all agree,
    /// else "no decision"; highest_confidence: the most confident member decides;
    /// mean_logits / mean_probs: argmax of the weighted mean.
    #[arg(long, value_enum)]
    pub strategy: crate::ensemble::Strategy,
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
    #[arg(long, default_value_t = 5000)]
    pub validation_size: usize,
    /// Architecture of members without Rampart metadata (PyTorch-saved files).
    #[arg(long)]
    pub arch: Option<Arch>,
    #[arg(long, value_enum, default_value_t = DatasetChoice::FashionMnist)]
    pub dataset: DatasetChoice,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

#[derive(Args, Debug)]
pub struct EnsembleTrainArgs {
    /// Ensemble config (see configs/fmnist-ensemble.toml): strategy, out, [base] training
    /// keys shared by all members, one [[member]] table of keys per member.
    #[arg(long)]
    pub config: PathBuf,
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
    /// Training mode: standard, gaussian, fgsm-rs, pgd, trades, adaptive; fusion configs:
    /// standard, gaussian, pgd, pgd-embeddings.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new([
        "standard", "gaussian", "fgsm-rs", "pgd", "trades", "adaptive", "pgd-embeddings",
    ]))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Gaussian noise level (pixel units) for --mode gaussian.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma: Option<f64>,
    /// L-infinity radius for adversarial modes (pixel units).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// PGD / TRADES steps per training batch.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack_steps: Option<usize>,
    /// Attack step size (default 1.25·epsilon for fgsm-rs, 2.5·epsilon/steps otherwise).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack_alpha: Option<f64>,
    /// TRADES weight of the KL term.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trades_beta: Option<f64>,
    /// Adversarial modes: PGD-10 robust accuracy on this many evaluation images per epoch.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robust_eval_size: Option<usize>,
    /// Adaptive mode: epochs over which epsilon ramps up to its target.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp_epochs: Option<usize>,
    /// Catastrophic-overfitting guard threshold (0 disables).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard_ratio: Option<f64>,
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
    /// Fusion configs: JSONL training records.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_records: Option<PathBuf>,
    /// Fusion configs: JSONL evaluation records.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_records: Option<PathBuf>,
    /// Fusion configs: encoders to build, comma-separated (e.g. text for a text-only model).
    #[arg(long, value_enum, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<crate::multimodal::model::Modality>>,
    /// Fusion configs: how modality embeddings are combined.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fusion: Option<crate::multimodal::model::Fusion>,
    /// Fusion configs, mode pgd-embeddings: L2 radius per example on the embeddings.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_epsilon: Option<f64>,
    /// Fusion configs: width of each modality embedding.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
}

impl TrainArgs {
    /// The config file (or the defaults) with the flags laid over it.
    pub fn resolve(&self) -> Result<TrainConfig, String> {
        let table = self.table()?;
        TrainConfig::from_toml_table(table).map_err(|e| self.in_config(e))
    }

    fn in_config(&self, e: String) -> String {
        match &self.config {
            Some(p) => format!("config {} (with flags): {e}", p.display()),
            None => e,
        }
    }

    /// Whether the config selects the multimodal fusion trainer (`arch = "fusion"`).
    pub fn is_fusion(&self) -> Result<bool, String> {
        Ok(self.config.is_some()
            && self.table()?.get("arch").and_then(|a| a.as_str()) == Some("fusion"))
    }

    /// The fusion config with the flags laid over it.
    pub fn resolve_fusion(&self) -> Result<crate::multimodal::train::FusionTrainConfig, String> {
        crate::multimodal::train::FusionTrainConfig::from_toml_table(self.table()?)
            .map_err(|e| self.in_config(e))
    }

    /// The config file's table with the set flags laid over it.
    fn table(&self) -> Result<toml::Table, String> {
        let mut table = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--config {}: {e}", path.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| format!("--config {}: {e}", path.display()))?
            }
            None => toml::Table::new(),
        };
        let mut flags = toml::Table::try_from(&self.set).map_err(|e| e.to_string())?;
        // `--arch` is an image architecture; a fusion config keeps its own.
        if table.get("arch").and_then(|a| a.as_str()) == Some("fusion") {
            if let Some(a) = flags.remove("arch") {
                return Err(format!(
                    "--arch {a} does not apply to a fusion config (arch = \"fusion\")"
                ));
            }
        }
        table.extend(flags);
        Ok(table)
    }
}

/// A model and the test set it is run on: shared by `eval`, `attack`, `certify`, `predict`.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Model file (safetensors, PyTorch layout), or an ensemble manifest (.toml/.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Architecture, for files without Rampart metadata (e.g. saved by PyTorch).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Test set to run on.
    #[arg(long, value_enum, default_value_t = DatasetChoice::FashionMnist)]
    pub dataset: DatasetChoice,
    /// Fashion-MNIST directory (unset: $RAMPART_DATA, datasets/fashion-mnist, then
    /// /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// JSONL records to run a multimodal fusion model on (instead of --dataset).
    #[arg(long)]
    pub records: Option<PathBuf>,
}

/// A fusion model and the records it is run on.
struct OpenedFusion {
    chosen: device::Chosen,
    loaded: crate::multimodal::LoadedFusion,
    records: crate::multimodal::data::SecuritySet,
}

/// What [`ModelArgs`] name, opened.
struct Opened {
    chosen: device::Chosen,
    loaded: ImageModel,
    /// The whole test split.
    test: data::ImageSet,
}

impl ModelArgs {
    /// Whether --model is a multimodal fusion model.
    fn is_fusion(&self) -> bool {
        !crate::ensemble::is_manifest(&self.model) && crate::multimodal::is_fusion_file(&self.model)
    }

    fn open_fusion(&self) -> Result<OpenedFusion, Box<dyn std::error::Error>> {
        let path = self.records.as_ref().ok_or_else(|| {
            format!(
                "{} is a multimodal fusion model: pass its JSONL records with --records",
                self.model.display()
            )
        })?;
        let chosen = device::choose(self.device)?;
        let loaded = crate::multimodal::load(&self.model, &chosen.device)?;
        let records = crate::multimodal::data::load(path, &loaded.spec.schema(), &chosen.device)?;
        Ok(OpenedFusion {
            chosen,
            loaded,
            records,
        })
    }

    fn open(&self) -> Result<Opened, Box<dyn std::error::Error>> {
        if self.records.is_some() {
            return Err(format!(
                "--records is for multimodal fusion models; {} is an image model (use --dataset)",
                self.model.display()
            )
            .into());
        }
        let chosen = device::choose(self.device)?;
        let loaded = ImageModel::open(&self.model, self.arch, &chosen.device)?;
        let test = match self.dataset {
            DatasetChoice::FashionMnist => {
                let dir = data::resolve_data_dir(self.data_dir.as_deref())?;
                data::load_split(&dir, Split::Test, &chosen.device)?
            }
            DatasetChoice::Synthetic => data::synthetic(500, 0x7e57, &chosen.device),
        };
        Ok(Opened {
            chosen,
            loaded,
            test,
        })
    }
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub on: ModelArgs,
    /// Evaluate the first N test images.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttackKind {
    Fgsm,
    Pgd,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct AttackArgs {
    #[command(flatten)]
    pub on: ModelArgs,
    /// Attacks to run, comma-separated; robust means surviving all of them.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pgd")]
    pub attack: Vec<AttackKind>,
    #[arg(long, value_enum, default_value_t = Norm::Linf)]
    pub norm: Norm,
    /// Radius of the threat model, pixel units (inputs in [0,1]).
    #[arg(long)]
    pub eps: f64,
    /// PGD step size, pixel units (default 2.5 · eps / steps).
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Runs of each attack; every PGD run starts at a fresh random point.
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// PGD without a random start (the first run starts at the clean image).
    #[arg(long)]
    pub no_random_start: bool,
    #[arg(long, value_enum, default_value_t = AttackLoss::Ce)]
    pub loss: AttackLoss,
    /// Fusion models: which input to perturb (network features in their box, or the text or
    /// byte embeddings). Default: network.
    #[arg(long, value_enum)]
    pub modality: Option<crate::multimodal::model::Modality>,
    /// Targeted attack towards this class for every image.
    #[arg(long)]
    pub target: Option<usize>,
    /// Attack the first N test images.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the adversarial images (safetensors: clean, adversarial, labels, robust) and a
    /// PNG grid of clean / adversarial / perturbation for the first 8 into this directory.
    #[arg(long)]
    pub save_examples: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Which test images and which model, shared by `certify` and `predict`.
#[derive(Args, Debug)]
pub struct SmoothArgs {
    #[command(flatten)]
    pub on: ModelArgs,
    /// Noise standard deviation, pixel units (inputs in [0,1]). Default: the sigma the model
    /// was trained with (`--mode gaussian`), read from its metadata.
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Monte Carlo samples per image (estimation).
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Failure probability of each certificate / prediction.
    #[arg(long, default_value_t = 0.001)]
    pub alpha: f64,
    /// Noisy inputs per forward pass.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Take every k-th test image (Cohen et al.: 20 on CIFAR-10).
    #[arg(long, default_value_t = 1)]
    pub skip: usize,
    /// At most this many images (after --skip).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the noise: same seed, same device, same counts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct CertifyArgs {
    #[command(flatten)]
    pub common: SmoothArgs,
    /// Samples that select the top class.
    #[arg(long, default_value_t = 100)]
    pub n0: usize,
    /// TSV in the reference layout: idx label predict radius correct time.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// PNG plot of certified accuracy against radius (default: the --out path with .png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct PredictArgs {
    #[command(flatten)]
    pub common: SmoothArgs,
}

/// What `certify` and `predict` work on: device, model, noise level, images and their ids.
struct SmoothJob {
    chosen: device::Chosen,
    model: ValidModel,
    /// Noise standard deviation, pixel units.
    sigma: f64,
    set: data::ImageSet,
    /// Test-set index of each image in `set`.
    ids: Vec<usize>,
}

impl SmoothArgs {
    fn check(&self) -> Result<(), String> {
        if let Some(sigma) = self.sigma.filter(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("--sigma must be a positive number, got {sigma}"));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("--alpha must be in (0, 1), got {}", self.alpha));
        }
        if self.n == 0 || self.batch == 0 || self.skip == 0 {
            return Err("--n, --batch and --skip must be at least 1".into());
        }
        Ok(())
    }

    fn load(&self) -> Result<SmoothJob, Box<dyn std::error::Error>> {
        self.check()?;
        let Opened {
            chosen,
            loaded,
            test: all,
        } = self.on.open()?;
        let trained_sigma = loaded.training_sigma(&self.on.model);
        let sigma = self.sigma.or(trained_sigma).ok_or_else(|| {
            format!(
                "{}: not trained with --mode gaussian (every member, for an ensemble, with one sigma), so there is no sigma to default to; pass --sigma",
                self.on.model.display()
            )
        })?;
        let ids = data::every_index(all.len(), self.skip, self.limit);
        let (images, labels) = all.gather(&ids);
        let set = data::ImageSet {
            images,
            labels,
            ..all
        };
        Ok(SmoothJob {
            chosen,
            model: loaded.valid(),
            sigma,
            set,
            ids,
        })
    }
}

impl SmoothJob {
    fn smooth(&self, args: &SmoothArgs) -> Smooth<'_, ValidModel, 4> {
        Smooth {
            base: &self.model,
            sigma: self.sigma,
            batch: args.batch,
            seed: args.seed,
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Inspect(a) => run_inspect(a),
        Command::Attack(a) => run_attack(a),
        Command::Certify(a) => run_certify(a),
        Command::Predict(a) => run_predict(a),
        Command::Ensemble(EnsembleCommand::Create(a)) => run_ensemble_create(a),
        Command::Ensemble(EnsembleCommand::Train(a)) => run_ensemble_train(a),
        Command::Data(DataCommand::SynthSecurity(a)) => run_synth(a),
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
    if args.is_fusion()? {
        if args.resume {
            return Err("--resume: fusion runs keep the model of the last finished epoch in OUT/model.safetensors but have no optimiser checkpoint; start a new run".into());
        }
        let cfg = args.resolve_fusion()?;
        let history = crate::multimodal::train::train(&cfg)?;
        let last = history.last().expect("at least one epoch");
        println!(
            "saved {} ({} epochs, eval accuracy {:.2}%)",
            cfg.model_path().display(),
            history.len(),
            100.0 * last.eval_accuracy
        );
        return Ok(());
    }
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
    if args.on.is_fusion() {
        return fusion::eval(&args);
    }
    let Opened {
        chosen,
        loaded,
        test,
    } = args.on.open()?;
    let data = test.take(args.limit);
    let report = eval::evaluate(&loaded.valid(), &data, args.batch);
    if args.json {
        let out = serde_json::json!({
            "model": args.on.model,
            "arch": loaded.describe(),
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
        args.on.model.display(),
        loaded.describe(),
        data.name
    );
    println!(
        "clean accuracy: {:.2}% ({} images)",
        100.0 * report.accuracy,
        report.examples
    );
    if report.no_decision > 0 {
        println!(
            "no decision (members disagree): {} images, counted as errors",
            report.no_decision
        );
    }
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
    if crate::ensemble::is_manifest(&args.model) {
        return inspect_manifest(&args);
    }
    if crate::multimodal::is_fusion_file(&args.model) {
        return fusion::inspect(&args);
    }
    let loaded = store::load_model(&args.model, args.arch, &burn::tensor::Device::flex())?;
    let tensors = store::expected_tensors(&loaded.spec, &burn::tensor::Device::flex());
    let params: usize = tensors.values().map(|s| s.iter().product::<usize>()).sum();
    let parse = |k: &str| store::metadata_json(&loaded.metadata, k);
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

/// A finished CERTIFY run, whatever the model.
struct Certified {
    device: String,
    /// The data set's name (SYNTHETIC sets say so).
    name: String,
    sigma: f64,
    rows: Vec<crate::certify::run::Row>,
    summary: crate::certify::run::Summary,
}

fn announce(what: &str, count: usize, name: &str, sigma: f64, args: &CertifyArgs) {
    let c = &args.common;
    eprintln!(
        "certifying {count} {what} of {name} (sigma {sigma}, n0 {}, n {}, alpha {}, batch {})",
        args.n0, c.n, c.alpha, c.batch
    );
}

fn certify_images(args: &CertifyArgs) -> Result<Certified, Box<dyn std::error::Error>> {
    let c = &args.common;
    let job = c.load()?;
    let (chosen, sigma, set, ids) = (&job.chosen, job.sigma, &job.set, &job.ids);
    eprintln!("device: {}", chosen.description);
    announce("images", set.len(), &set.name, sigma, args);
    let labels = set.host_labels();
    let run = CertifyRun {
        inputs: &set.images,
        labels: &labels,
        ids,
        n0: args.n0,
        n: c.n,
        alpha: c.alpha,
    };
    let (rows, summary) = certify_all(&job.smooth(c), &run, args.out.as_deref())?;
    Ok(Certified {
        device: chosen.description.clone(),
        name: set.name.clone(),
        sigma,
        rows,
        summary,
    })
}

fn run_certify(args: CertifyArgs) -> CliResult {
    if args.n0 == 0 {
        return Err("--n0 must be at least 1".into());
    }
    let c = &args.common;
    c.check()?;
    let Certified {
        device,
        name,
        sigma,
        rows,
        summary,
    } = if c.on.is_fusion() {
        fusion::certify(&args)?
    } else {
        certify_images(&args)?
    };
    let set_name = &name;
    let plot = args
        .plot
        .clone()
        .or_else(|| args.out.as_ref().map(|o| o.with_extension("png")));
    if let Some(plot) = &plot {
        let title = format!(
            "{} (sigma {}, n {}, {} images)",
            set_name,
            sigma,
            c.n,
            rows.len()
        );
        if !crate::certify::plot::certified_accuracy_png(&rows, &title, plot)? {
            eprintln!(
                "note: no DejaVu font found (fonts-dejavu-core): {} has no axis labels",
                plot.display()
            );
        }
    }
    if c.json {
        let out = serde_json::json!({
            "model": c.on.model,
            "dataset": set_name,
            "device": device,
            "tsv": args.out,
            "plot": plot,
            "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("certified accuracy (L2 radius in pixel space):");
    for (r, acc) in &summary.certified_accuracy {
        println!("  radius {r:.2}: {:6.2}%", 100.0 * acc);
    }
    println!("abstain rate: {:.2}%", 100.0 * summary.abstain_rate);
    println!(
        "seconds per image: {:.3} ({} images)",
        summary.seconds_per_image, summary.images
    );
    for path in args.out.iter().chain(&plot) {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn run_predict(args: PredictArgs) -> CliResult {
    let c = &args.common;
    if c.on.is_fusion() {
        return fusion::predict(&args);
    }
    let job = c.load()?;
    let (chosen, sigma, set, ids) = (&job.chosen, job.sigma, &job.set, &job.ids);
    let labels = set.host_labels();
    let started = std::time::Instant::now();
    let predictions = predict_all(&job.smooth(c), &set.images, ids, c.n, c.alpha);
    print_predictions(
        c,
        &chosen.description,
        &set.name,
        sigma,
        ids,
        &labels,
        &predictions,
        started.elapsed().as_secs_f64(),
    )
}

/// Prints PREDICT's results (a table, or JSON with --json).
#[allow(clippy::too_many_arguments)]
fn print_predictions(
    c: &SmoothArgs,
    device: &str,
    set_name: &str,
    sigma: f64,
    ids: &[usize],
    labels: &[usize],
    predictions: &[Option<usize>],
    seconds: f64,
) -> CliResult {
    eprintln!("device: {device}");
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == Some(**l))
        .count();
    let abstained = predictions.iter().filter(|p| p.is_none()).count();
    let n = predictions.len().max(1) as f64;
    if c.json {
        let out = serde_json::json!({
            "model": c.on.model,
            "dataset": set_name,
            "device": device,
            "sigma": sigma, "n": c.n, "alpha": c.alpha,
            "images": predictions.len(),
            "accuracy": correct as f64 / n,
            "abstain_rate": abstained as f64 / n,
            "seconds_per_image": seconds / n,
            "predictions": ids.iter().zip(labels).zip(predictions).map(|((i, l), p)| {
                serde_json::json!({"idx": i, "label": l, "predict": p.map_or(-1, |c| c as i64)})
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("idx\tlabel\tpredict\tcorrect");
    for ((i, l), p) in ids.iter().zip(labels).zip(predictions) {
        println!(
            "{i}\t{l}\t{}\t{}",
            p.map_or(-1, |c| c as i64),
            (*p == Some(*l)) as u8
        );
    }
    println!(
        "smoothed accuracy {:.2}%, abstain rate {:.2}%, {:.3} s per example",
        100.0 * correct as f64 / n,
        100.0 * abstained as f64 / n,
        seconds / n
    );
    Ok(())
}

fn run_attack(args: AttackArgs) -> CliResult {
    if !(args.eps.is_finite() && args.eps > 0.0) {
        return Err(format!("--eps must be a positive number, got {}", args.eps).into());
    }
    if args.steps == 0 || args.batch == 0 || args.restarts == 0 {
        return Err("--steps, --batch and --restarts must be at least 1".into());
    }
    let alpha = args.alpha.unwrap_or(2.5 * args.eps / args.steps as f64);
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(format!("--alpha must be a positive number, got {alpha}").into());
    }
    if args.norm == Norm::L2 && args.attack.contains(&AttackKind::Fgsm) {
        return Err("--attack fgsm is an L-infinity attack; use pgd with --norm l2".into());
    }
    let attacks = build_attacks(&args, alpha);
    if args.on.is_fusion() {
        return fusion::attack(&args, &attacks, alpha);
    }
    if let Some(m) = args.modality {
        return Err(format!("--modality {m:?} is for multimodal fusion models").into());
    }
    let Opened {
        chosen,
        loaded,
        test,
    } = args.on.open()?;
    let classes = loaded.num_classes();
    if let Some(t) = args.target.filter(|t| *t >= classes) {
        return Err(format!("--target {t}: the model has {classes} classes").into());
    }
    let data = test.take(args.limit);
    eprintln!("device: {}", chosen.description);
    chosen.device.seed(args.seed);
    let model = loaded.valid();
    let started = std::time::Instant::now();
    let mut tally = crate::attack::Tally::new(&chosen.device);
    let mut saved: Vec<(
        burn::tensor::Tensor<4>,
        burn::tensor::Tensor<4>,
        burn::tensor::Tensor<1, burn::tensor::Int>,
        burn::tensor::Tensor<1, burn::tensor::Bool>,
    )> = Vec::new();
    for start in (0..data.len()).step_by(args.batch) {
        let (x, y) = data.range(start, start + args.batch);
        let target = args.target.map(|t| {
            burn::tensor::Tensor::<1, burn::tensor::Int>::full(
                [y.dims()[0]],
                t as i64,
                &chosen.device,
            )
        });
        let out =
            crate::attack::worst_case(&model, &x, &y, &attacks, args.restarts, target.as_ref());
        tally.add(&out);
        if args.save_examples.is_some() {
            saved.push((x, out.adversarial, y, out.robust));
        }
    }
    let (clean, robust) = tally.read();
    let seconds = started.elapsed().as_secs_f64();
    let n = data.len();
    if let Some(dir) = &args.save_examples {
        crate::attack::save_examples(dir, saved)?;
    }
    let report = serde_json::json!({
        "model": args.on.model,
        "arch": loaded.describe(),
        "dataset": data.name,
        "device": chosen.description,
        "attacks": attacks,
        "restarts": args.restarts,
        "target": args.target,
        "images": n,
        "clean_accuracy": clean as f64 / n as f64,
        "robust_accuracy": robust as f64 / n as f64,
        "images_per_sec": n as f64 / seconds,
        "seconds": seconds,
        "examples": args.save_examples,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let names: Vec<String> = args
        .attack
        .iter()
        .map(|a| format!("{a:?}").to_lowercase())
        .collect();
    println!(
        "{} on {} ({} images): {} {:?} eps {} (alpha {alpha:.4}, {} steps, {} restarts{})",
        args.on.model.display(),
        data.name,
        n,
        names.join("+"),
        args.norm,
        args.eps,
        args.steps,
        args.restarts,
        args.target
            .map(|t| format!(", target {t}"))
            .unwrap_or_default()
    );
    println!("clean accuracy:  {:.2}%", 100.0 * clean as f64 / n as f64);
    println!(
        "robust accuracy: {:.2}% (worst case over every run)",
        100.0 * robust as f64 / n as f64
    );
    println!("{:.1} images/s, {seconds:.1} s", n as f64 / seconds);
    if let Some(dir) = &args.save_examples {
        println!("examples in {}", dir.display());
    }
    Ok(())
}

fn run_ensemble_create(args: EnsembleCreateArgs) -> CliResult {
    use crate::ensemble::{Manifest, fit_weights};
    let n = args.models.len();
    let models: Vec<(PathBuf, Option<Arch>)> =
        args.models.iter().map(|p| (p.clone(), args.arch)).collect();
    let (weights, from) = match &args.weights {
        Some(w) if w.len() != n => {
            return Err(format!("--weights has {} values for {n} models", w.len()).into());
        }
        Some(w) => (w.clone(), "hand".to_string()),
        None => (vec![1.0; n], "equal".to_string()),
    };
    let mut manifest = Manifest::describe(&args.out, &models, &weights, args.strategy, &from)?;
    // Loading checks the members (shapes, classes, weights) before anything is written.
    let chosen = device::choose(args.device)?;
    let ensemble = manifest.load(&args.out, &chosen.device)?;
    if args.fit_weights {
        let validation = crate::ensemble::validation_split(
            args.dataset,
            args.data_dir.as_deref(),
            args.validation_size,
            0,
            &chosen.device,
        )?;
        if let Some(start) = validation.fashion_start {
            let split = format!("Fashion-MNIST training images {start}.. (the validation split)");
            for (path, _) in &models {
                match crate::ensemble::trained_past(path, start) {
                    Some(false) => {}
                    Some(true) => eprintln!(
                        "warning: {} was trained on {split}: its fitted weight is optimistic",
                        path.display()
                    ),
                    None => eprintln!(
                        "warning: {} does not say what it was trained on; if it saw {split}, its fitted weight is optimistic",
                        path.display()
                    ),
                }
            }
        }
        let (w, accuracy) = fit_weights(&ensemble.members, &validation.set);
        for ((m, w), a) in manifest.members.iter_mut().zip(w).zip(accuracy) {
            m.weight = w;
            m.validation_accuracy = Some(a);
        }
        manifest.weights_from = validation.description;
    }
    manifest.write(&args.out)?;
    println!(
        "wrote {} ({} members, {}, weights from {})",
        args.out.display(),
        n,
        args.strategy,
        manifest.weights_from
    );
    for m in &manifest.members {
        println!(
            "  {:<40} weight {:.4}{}",
            m.path.display(),
            m.weight,
            m.validation_accuracy
                .map(|a| format!("  validation accuracy {:.2}%", 100.0 * a))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn run_ensemble_train(args: EnsembleTrainArgs) -> CliResult {
    let cfg = crate::ensemble::EnsembleTrainConfig::read(&args.config)?;
    let out = crate::ensemble::train_members(&cfg)?;
    let manifest = crate::ensemble::Manifest::read(&out)?;
    println!(
        "wrote {} ({} members, {}, weights from {})",
        out.display(),
        manifest.members.len(),
        manifest.strategy,
        manifest.weights_from
    );
    for m in &manifest.members {
        println!("  {:<40} weight {:.4}", m.path.display(), m.weight);
    }
    Ok(())
}

/// The attacks `--attack` names, with the flags' radius, step and loss.
fn build_attacks(args: &AttackArgs, alpha: f64) -> Vec<Pgd> {
    args.attack
        .iter()
        .map(|k| match k {
            AttackKind::Fgsm => Pgd {
                loss: args.loss,
                ..Pgd::fgsm(args.eps)
            },
            AttackKind::Pgd => Pgd {
                norm: args.norm,
                epsilon: args.eps,
                alpha,
                steps: args.steps,
                random_start: !args.no_random_start,
                loss: args.loss,
            },
        })
        .collect()
}

fn run_synth(args: SynthArgs) -> CliResult {
    for (flag, v) in [("--flip", args.flip), ("--missing", args.missing)] {
        if !(0.0..1.0).contains(&v) {
            return Err(format!("{flag} must be in [0, 1), got {v}").into());
        }
    }
    let records =
        crate::multimodal::data::synth_security(args.n, args.seed, args.flip, args.missing);
    crate::multimodal::data::write_jsonl(&args.out, &records)?;
    println!(
        "wrote {} SYNTHETIC security records to {} (seed {}, flip {}, missing {})",
        records.len(),
        args.out.display(),
        args.seed,
        args.flip,
        args.missing
    );
    Ok(())
}

/// `inspect` of an ensemble manifest: strategy and members, each checked against its digest.
fn inspect_manifest(args: &InspectArgs) -> CliResult {
    let manifest = crate::ensemble::Manifest::read(&args.model)?;
    let ensemble = manifest.load(&args.model, &burn::tensor::Device::flex())?;
    if args.json {
        let out = serde_json::json!({
            "manifest": args.model,
            "classes": ensemble.num_classes,
            "normalised_weights": ensemble.weights,
            "ensemble": manifest,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("manifest:  {}", args.model.display());
    println!("strategy:  {}", manifest.strategy);
    println!("classes:   {}", ensemble.num_classes);
    println!("weights:   {}", manifest.weights_from);
    println!("members (every digest checked):");
    for (m, (w, model)) in manifest
        .members
        .iter()
        .zip(ensemble.weights.iter().zip(&ensemble.members))
    {
        println!(
            "  {:<40} {:<4} weight {w:.4}  sha256 {}",
            m.path.display(),
            model.arch().to_string(),
            &m.sha256[..16.min(m.sha256.len())]
        );
    }
    Ok(())
}
