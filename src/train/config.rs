//! Training configs: TOML files (and the JSON copy each model carries), nested by concept and
//! tagged where one choice decides which keys exist, so an invalid combination cannot be
//! written: `[model] arch = ...`, `[data] dataset = ...`, `[mode] kind = ...`,
//! `[optimizer] kind = ...`, `[schedule] kind = ...`. Every key is also a `rampart train`
//! flag (see [`super::keys`]). Older flat configs are migrated ([`super::legacy`]).
//!
//! ```toml
//! epochs = 10
//! out = "runs/trades"
//! [model]
//! arch = "cnn"
//! [mode]
//! kind = "trades"
//! epsilon = 0.1
//! beta = 6.0
//! ```

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::attack::pgd::{MAX_STEPS, default_alpha};
use crate::data::records::{FLOW_FEATURES, SECURITY_CLASSES, unit_box};
use crate::device::DeviceChoice;
use crate::model::fusion::Fusion;
use crate::model::{Arch, FusionSpec, ImageSpec, Modality};

/// A training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The network to train.
    pub model: ModelConfig,
    /// What to train and evaluate on.
    pub data: DataConfig,
    /// What the model is trained on: clean inputs, noisy ones or adversarial examples.
    pub mode: Mode,
    /// The optimiser and its learning rate.
    pub optimizer: Optimizer,
    /// Learning-rate schedule over the whole run.
    pub schedule: Schedule,
    /// Examples per training batch.
    pub batch_size: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of initialisation, shuffling and noise: the same seed on the same device gives the
    /// same model, bit for bit.
    pub seed: u64,
    /// auto (a GPU if wgpu finds one, else flex), flex or wgpu.
    pub device: DeviceChoice,
    /// Run directory: model.safetensors, metrics.jsonl, checkpoint/.
    pub out: PathBuf,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelConfig::Cnn(ImageModel::default()),
            data: DataConfig::FashionMnist(FashionData::default()),
            mode: Mode::Standard,
            optimizer: Optimizer::Adam(Adam::default()),
            schedule: Schedule::Constant,
            batch_size: 128,
            epochs: 2,
            seed: 0,
            device: DeviceChoice::Auto,
            out: PathBuf::from("runs/model"),
        }
    }
}

/// The network, by architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum ModelConfig {
    /// 784-256-256-10 multilayer perceptron.
    Mlp(ImageModel),
    /// Madry et al. cnn: conv 5x5x32, pool, conv 5x5x64, pool, fc 1024, fc 10.
    Cnn(ImageModel),
    /// Multimodal fusion of text, bytes and network-flow features.
    Fusion(FusionModel),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ImageModel {
    /// Normalise inside the model with the Fashion-MNIST mean and std (inputs stay pixels).
    pub normalize: bool,
}

impl Default for ImageModel {
    fn default() -> Self {
        Self { normalize: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FusionModel {
    /// The class names, in label order.
    pub class_names: Vec<String>,
    /// [low, high] per network feature (unset: [0, 1] for each of 8 features).
    pub network_box: Option<Vec<(f64, f64)>>,
    /// Encoders to build (a subset gives a single-modality baseline).
    pub modalities: Vec<Modality>,
    /// How modality embeddings are combined: concat or gated.
    pub fusion: Fusion,
    /// Width of every modality embedding.
    pub dim: usize,
}

impl Default for FusionModel {
    fn default() -> Self {
        Self {
            class_names: SECURITY_CLASSES.iter().map(|s| s.to_string()).collect(),
            network_box: None,
            modalities: vec![Modality::Text, Modality::Bytes, Modality::Network],
            fusion: Fusion::Gated,
            dim: 64,
        }
    }
}

/// The data, by data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "dataset", rename_all = "kebab-case")]
pub enum DataConfig {
    /// Fashion-MNIST IDX files.
    FashionMnist(FashionData),
    /// A seeded SYNTHETIC set of bars (for tests and demos).
    Synthetic(SyntheticData),
    /// JSONL security records (fusion models).
    Records(RecordsData),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FashionData {
    /// Fashion-MNIST directory (unset: $RAMPART_DATA, datasets/fashion-mnist, Debian's path).
    pub data_dir: Option<PathBuf>,
    /// Train on the first N training examples only.
    pub train_limit: Option<usize>,
    /// Evaluate each epoch on the first N test examples only.
    pub eval_limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticData {
    /// Images in the synthetic training set (the test set is a quarter of it).
    pub synthetic_size: usize,
    pub train_limit: Option<usize>,
    pub eval_limit: Option<usize>,
}

impl Default for SyntheticData {
    fn default() -> Self {
        Self {
            synthetic_size: 2000,
            train_limit: None,
            eval_limit: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RecordsData {
    /// JSONL training records.
    pub train_records: PathBuf,
    /// JSONL evaluation records.
    pub test_records: PathBuf,
    pub train_limit: Option<usize>,
    pub eval_limit: Option<usize>,
}

impl Default for RecordsData {
    fn default() -> Self {
        Self {
            train_records: PathBuf::from("runs/security/train.jsonl"),
            test_records: PathBuf::from("runs/security/test.jsonl"),
            train_limit: None,
            eval_limit: None,
        }
    }
}

/// What the model is trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mode {
    /// Clean inputs.
    Standard,
    /// Gaussian noise N(0, sigma²) on the inputs, fresh per batch (Cohen et al. 2019): the
    /// base classifier randomized smoothing needs.
    Gaussian(Gaussian),
    /// Wong, Rice & Kolter 2020: FGSM from a uniform random start, step 1.25·epsilon, with the
    /// catastrophic-overfitting guard.
    FgsmRs(FgsmRs),
    /// Madry et al. 2018: L∞ PGD examples with a random start.
    Pgd(PgdMode),
    /// Zhang et al. 2019: cross-entropy on clean inputs + beta · KL(clean ‖ adversarial).
    Trades(TradesMode),
    /// Epsilon ramps up over ramp_epochs; after each epoch FGSM-RS and PGD are measured and
    /// the next epoch trains against the one that breaks the model most.
    Adaptive(Adaptive),
    /// Fusion models: L2 PGD on the word and byte embeddings (radius epsilon per example).
    PgdEmbeddings(PgdEmbeddings),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Gaussian {
    /// Noise standard deviation, input units (pixels in [0, 1]; fractions of a network
    /// feature's box).
    pub sigma: f64,
}

impl Default for Gaussian {
    fn default() -> Self {
        Self { sigma: 0.25 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FgsmRs {
    /// L∞ radius, input units.
    pub epsilon: f64,
    /// FGSM step (unset: 1.25·epsilon).
    pub alpha: Option<f64>,
    /// Steps of the PGD the guard falls back to (step 2.5·epsilon/steps).
    pub steps: usize,
    /// Catastrophic-overfitting guard: when PGD robust accuracy falls below guard_ratio × its
    /// best at the same epsilon while FGSM accuracy stays 10 points above it, roll back and
    /// continue with PGD; 0 disables.
    pub guard_ratio: f64,
    /// PGD-10 robust accuracy on this many evaluation examples per epoch (0: none).
    pub robust_eval_size: usize,
}

impl Default for FgsmRs {
    fn default() -> Self {
        Self {
            epsilon: 0.1,
            alpha: None,
            steps: 7,
            guard_ratio: 0.5,
            robust_eval_size: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PgdMode {
    /// L∞ radius, input units.
    pub epsilon: f64,
    /// PGD steps per batch.
    pub steps: usize,
    /// PGD step (unset: 2.5·epsilon/steps).
    pub alpha: Option<f64>,
    /// PGD-10 robust accuracy on this many evaluation examples per epoch (0: none).
    pub robust_eval_size: usize,
}

impl Default for PgdMode {
    fn default() -> Self {
        Self {
            epsilon: 0.1,
            steps: 7,
            alpha: None,
            robust_eval_size: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TradesMode {
    /// L∞ radius, input units.
    pub epsilon: f64,
    /// Steps of the KL attack per batch.
    pub steps: usize,
    /// Attack step (unset: 2.5·epsilon/steps).
    pub alpha: Option<f64>,
    /// Weight of the KL term.
    pub beta: f64,
    /// PGD-10 robust accuracy on this many evaluation examples per epoch (0: none).
    pub robust_eval_size: usize,
}

impl Default for TradesMode {
    fn default() -> Self {
        Self {
            epsilon: 0.1,
            steps: 7,
            alpha: None,
            beta: 6.0,
            robust_eval_size: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Adaptive {
    /// Target L∞ radius, input units.
    pub epsilon: f64,
    /// Steps of the PGD candidate.
    pub steps: usize,
    /// PGD step at the target radius (unset: 2.5·epsilon/steps); scaled with the ramp.
    pub alpha: Option<f64>,
    /// Epochs over which epsilon ramps from epsilon/ramp_epochs up to epsilon.
    pub ramp_epochs: usize,
    /// The catastrophic-overfitting guard for FGSM-RS epochs (see fgsm-rs); 0 disables.
    pub guard_ratio: f64,
    /// Robust accuracy of the candidates on this many evaluation examples per epoch.
    pub robust_eval_size: usize,
}

impl Default for Adaptive {
    fn default() -> Self {
        Self {
            epsilon: 0.1,
            steps: 7,
            alpha: None,
            ramp_epochs: 3,
            guard_ratio: 0.5,
            robust_eval_size: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PgdEmbeddings {
    /// L2 radius per example on each sequence's embeddings, embedding units.
    pub epsilon: f64,
    /// PGD steps per batch (step 2.5·epsilon/steps).
    pub steps: usize,
}

impl Default for PgdEmbeddings {
    fn default() -> Self {
        Self {
            epsilon: 1.0,
            steps: 7,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam (Kingma & Ba 2015) with its default betas.
    Adam(Adam),
    /// SGD with heavy-ball momentum.
    Sgd(Sgd),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Adam {
    /// Learning rate (the peak, for schedules).
    pub lr: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl Default for Adam {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            weight_decay: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Sgd {
    /// Learning rate (the peak, for schedules).
    pub lr: f64,
    /// Momentum in [0, 1).
    pub momentum: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl Default for Sgd {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// The learning rate throughout.
    Constant,
    /// Cosine decay from the learning rate to 0 over all steps.
    Cosine,
    /// Multiply by gamma every step_epochs epochs.
    Step(StepSchedule),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StepSchedule {
    /// Epochs between decays.
    pub step_epochs: usize,
    /// Decay factor.
    pub gamma: f64,
}

impl Default for StepSchedule {
    fn default() -> Self {
        Self {
            step_epochs: 10,
            gamma: 0.1,
        }
    }
}

/// Largest batch and epoch counts a config may ask for.
pub const MAX_BATCH: usize = 65_536;
pub const MAX_EPOCHS: usize = 100_000;
/// Largest synthetic set.
pub const MAX_SYNTHETIC: usize = 1_000_000;

fn positive(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{name} must be a positive number, got {v}"))
    }
}

fn non_negative(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("{name} must be a number >= 0, got {v}"))
    }
}

fn count(name: &str, v: usize, max: usize) -> Result<(), String> {
    if (1..=max).contains(&v) {
        Ok(())
    } else {
        Err(format!("{name} must be between 1 and {max}, got {v}"))
    }
}

impl Mode {
    /// The mode's name as configs write it.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Gaussian(_) => "gaussian",
            Mode::FgsmRs(_) => "fgsm-rs",
            Mode::Pgd(_) => "pgd",
            Mode::Trades(_) => "trades",
            Mode::Adaptive(_) => "adaptive",
            Mode::PgdEmbeddings(_) => "pgd-embeddings",
        }
    }

    /// The L∞ training radius of the adversarial modes on the input box.
    pub fn epsilon(&self) -> Option<f64> {
        match self {
            Mode::FgsmRs(m) => Some(m.epsilon),
            Mode::Pgd(m) => Some(m.epsilon),
            Mode::Trades(m) => Some(m.epsilon),
            Mode::Adaptive(m) => Some(m.epsilon),
            _ => None,
        }
    }

    /// Epsilon of epoch `epoch` (0-based): ramped in adaptive mode, else constant.
    pub fn epsilon_at(&self, epoch: usize) -> Option<f64> {
        match self {
            Mode::Adaptive(m) => {
                Some(m.epsilon * ((epoch + 1) as f64 / m.ramp_epochs as f64).min(1.0))
            }
            _ => self.epsilon(),
        }
    }

    /// Evaluation examples for the per-epoch PGD-10 robust accuracy (0 outside adversarial
    /// modes).
    pub fn robust_eval_size(&self) -> usize {
        match self {
            Mode::FgsmRs(m) => m.robust_eval_size,
            Mode::Pgd(m) => m.robust_eval_size,
            Mode::Trades(m) => m.robust_eval_size,
            Mode::Adaptive(m) => m.robust_eval_size,
            _ => 0,
        }
    }

    /// Steps and the PGD step at the full radius, for modes that train against PGD.
    pub fn pgd_steps(&self) -> Option<(usize, f64)> {
        let pick = |e: f64, steps: usize, alpha: Option<f64>| {
            Some((steps, alpha.unwrap_or_else(|| default_alpha(e, steps))))
        };
        match self {
            Mode::FgsmRs(m) => pick(m.epsilon, m.steps, None),
            Mode::Pgd(m) => pick(m.epsilon, m.steps, m.alpha),
            Mode::Trades(m) => pick(m.epsilon, m.steps, m.alpha),
            Mode::Adaptive(m) => pick(m.epsilon, m.steps, m.alpha),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let adversarial = |e: f64, steps: usize, alpha: Option<f64>| -> Result<(), String> {
            positive("epsilon", e)?;
            count("steps", steps, MAX_STEPS)?;
            alpha.map_or(Ok(()), |a| positive("alpha", a))
        };
        match self {
            Mode::Standard => Ok(()),
            Mode::Gaussian(m) => positive("sigma", m.sigma),
            Mode::FgsmRs(m) => {
                adversarial(m.epsilon, m.steps, m.alpha)?;
                non_negative("guard_ratio", m.guard_ratio)
            }
            Mode::Pgd(m) => adversarial(m.epsilon, m.steps, m.alpha),
            Mode::Trades(m) => {
                adversarial(m.epsilon, m.steps, m.alpha)?;
                non_negative("beta", m.beta)
            }
            Mode::Adaptive(m) => {
                adversarial(m.epsilon, m.steps, m.alpha)?;
                count("ramp_epochs", m.ramp_epochs, MAX_EPOCHS)?;
                non_negative("guard_ratio", m.guard_ratio)
            }
            Mode::PgdEmbeddings(m) => {
                positive("epsilon", m.epsilon)?;
                count("steps", m.steps, MAX_STEPS)
            }
        }
    }
}

impl Optimizer {
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Adam(a) => a.lr,
            Optimizer::Sgd(s) => s.lr,
        }
    }

    fn validate(&self) -> Result<(), String> {
        positive("lr", self.lr())?;
        match self {
            Optimizer::Adam(a) => non_negative("weight_decay", a.weight_decay),
            Optimizer::Sgd(s) => {
                if !(0.0..1.0).contains(&s.momentum) {
                    return Err(format!("momentum must be in [0, 1), got {}", s.momentum));
                }
                non_negative("weight_decay", s.weight_decay)
            }
        }
    }
}

impl DataConfig {
    pub fn name(&self) -> &'static str {
        match self {
            DataConfig::FashionMnist(_) => "fashion-mnist",
            DataConfig::Synthetic(_) => "synthetic",
            DataConfig::Records(_) => "records",
        }
    }

    /// (train_limit, eval_limit).
    pub fn limits(&self) -> (Option<usize>, Option<usize>) {
        match self {
            DataConfig::FashionMnist(d) => (d.train_limit, d.eval_limit),
            DataConfig::Synthetic(d) => (d.train_limit, d.eval_limit),
            DataConfig::Records(d) => (d.train_limit, d.eval_limit),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let (train, eval) = self.limits();
        for (name, limit) in [("train_limit", train), ("eval_limit", eval)] {
            if limit == Some(0) {
                return Err(format!(
                    "{name} must be at least 1 (unset it to use every example)"
                ));
            }
        }
        if let DataConfig::Synthetic(d) = self {
            count("synthetic_size", d.synthetic_size, MAX_SYNTHETIC)?;
        }
        Ok(())
    }
}

impl TrainConfig {
    /// Checks every value and that the model, data and mode fit together.
    pub fn validate(&self) -> Result<(), String> {
        self.mode.validate()?;
        self.optimizer.validate()?;
        self.data.validate()?;
        if let Schedule::Step(s) = self.schedule {
            positive("gamma", s.gamma)?;
            count("step_epochs", s.step_epochs, MAX_EPOCHS)?;
        }
        count("batch_size", self.batch_size, MAX_BATCH)?;
        count("epochs", self.epochs, MAX_EPOCHS)?;
        match (&self.model, &self.data) {
            (ModelConfig::Fusion(_), DataConfig::Records(_)) => self.fusion_spec().map(|_| ())?,
            (ModelConfig::Fusion(_), d) => {
                return Err(format!(
                    "a fusion model trains on records ([data] dataset = \"records\"), not on {}",
                    d.name()
                ));
            }
            (_, DataConfig::Records(_)) => {
                return Err("records are for fusion models ([model] arch = \"fusion\")".into());
            }
            _ => {}
        }
        if let Some(e) = self.mode.epsilon().filter(|e| *e > 1.0) {
            return Err(format!(
                "epsilon {e} is larger than the input box [0, 1] itself; use a radius below 1"
            ));
        }
        if let Mode::PgdEmbeddings(_) = self.mode {
            let reads_sequences = match &self.model {
                ModelConfig::Fusion(f) => f.modalities.iter().any(|m| *m != Modality::Network),
                _ => false,
            };
            if !reads_sequences {
                return Err(
                    "mode pgd-embeddings needs a fusion model with a text or bytes modality".into(),
                );
            }
        }
        Ok(())
    }

    /// Learning rate at `epoch` (0-based) after `progress` in [0, 1) of the whole run.
    pub fn lr_at(&self, epoch: usize, progress: f64) -> f64 {
        let lr = self.optimizer.lr();
        match self.schedule {
            Schedule::Constant => lr,
            Schedule::Cosine => lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Schedule::Step(s) => lr * s.gamma.powi((epoch / s.step_epochs) as i32),
        }
    }

    /// The image network spec, for mlp and cnn configs.
    pub fn image_spec(&self) -> Option<ImageSpec> {
        let (arch, m) = match &self.model {
            ModelConfig::Mlp(m) => (Arch::Mlp, m),
            ModelConfig::Cnn(m) => (Arch::Cnn, m),
            ModelConfig::Fusion(_) => return None,
        };
        Some(if m.normalize {
            ImageSpec::fashion_normalised(arch)
        } else {
            ImageSpec::new(arch)
        })
    }

    /// The fusion network spec, for fusion configs (validated).
    pub fn fusion_spec(&self) -> Result<FusionSpec, String> {
        let ModelConfig::Fusion(f) = &self.model else {
            return Err("not a fusion config".into());
        };
        let spec = FusionSpec {
            class_names: f.class_names.clone(),
            network_box: f
                .network_box
                .clone()
                .unwrap_or_else(|| unit_box(FLOW_FEATURES.len())),
            modalities: f.modalities.clone(),
            fusion: f.fusion,
            dim: f.dim,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// "cnn", "mlp" or "fusion".
    pub fn arch_name(&self) -> &'static str {
        match self.model {
            ModelConfig::Mlp(_) => "mlp",
            ModelConfig::Cnn(_) => "cnn",
            ModelConfig::Fusion(_) => "fusion",
        }
    }

    pub fn model_path(&self) -> PathBuf {
        self.out.join("model.safetensors")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.out.join("metrics.jsonl")
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.out.join("checkpoint")
    }

    /// The sigma of Gaussian training, if that is the mode.
    pub fn sigma(&self) -> Option<f64> {
        match self.mode {
            Mode::Gaussian(g) => Some(g.sigma),
            _ => None,
        }
    }

    /// Whether two configs describe the same recipe (everything but `epochs` and `device`;
    /// `out` compared as normalised paths); the keys that differ otherwise.
    pub fn differences(&self, other: &TrainConfig) -> Vec<String> {
        let flat = |c: &TrainConfig| {
            let mut c = c.clone();
            c.epochs = 0;
            c.device = DeviceChoice::Auto;
            c.out = normalised(&c.out);
            super::keys::leaves(&serde_json::to_value(&c).unwrap_or_default())
        };
        let (a, b) = (flat(self), flat(other));
        let mut keys: Vec<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// `path` without `.` components (so `./run` and `run` compare equal).
pub fn normalised(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// A config that cannot be read or is not valid.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {reason}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub reason: String,
}

impl TrainConfig {
    /// A config from a TOML table, nested or flat (migrated): keys checked against the
    /// schema, then values.
    pub fn from_table(table: toml::Table) -> Result<Self, String> {
        let cfg: Self = toml::Value::Table(nested(table)?)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a TOML config (at most 1 MiB); every problem names the file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_table(read_table(path)?).map_err(|reason| ConfigError {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The config a model file or checkpoint carries (JSON, either layout).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        match json_to_toml(value) {
            Some(toml::Value::Table(t)) => Self::from_table(t),
            _ => Err("not a JSON object".into()),
        }
    }
}

/// The table in the nested layout (flat tables migrated) with its keys checked.
pub fn nested(table: toml::Table) -> Result<toml::Table, String> {
    let table = if super::legacy::is_flat(&table) {
        super::legacy::migrate(&table)?
    } else {
        table
    };
    super::keys::check(&table)?;
    Ok(table)
}

/// A TOML file's table (at most 1 MiB), as written.
pub fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let err = |reason: String| ConfigError {
        path: path.to_path_buf(),
        reason,
    };
    let text = crate::artifact::files::read_text(path, crate::artifact::files::CONFIG)
        .map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e: toml::de::Error| err(e.to_string()))
}

/// JSON as TOML, nulls (unset options) left out.
fn json_to_toml(v: serde_json::Value) -> Option<toml::Value> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::Bool(b) => toml::Value::Boolean(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        J::String(s) => toml::Value::String(s),
        J::Array(a) => toml::Value::Array(a.into_iter().filter_map(json_to_toml).collect()),
        J::Object(m) => toml::Value::Table(
            m.into_iter()
                .filter_map(|(k, v)| json_to_toml(v).map(|v| (k, v)))
                .collect(),
        ),
    })
}
