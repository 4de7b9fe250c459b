//! The sections of a training config other than the mode: the network, the data, the
//! optimiser and the learning-rate schedule, each tagged by its choice.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::data::records::SECURITY_CLASSES;
use crate::model::Modality;
use crate::model::fusion::Fusion;

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

/// Differential privacy of the training data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Privacy {
    /// Ordinary training: no privacy guarantee.
    #[default]
    None,
    /// DP-SGD (Abadi et al. 2016): Poisson-sampled batches of expected size batch_size, every example's gradient clipped, Gaussian noise; (epsilon, delta) from the Renyi accountant after every epoch.
    DpSgd(DpSgdConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DpSgdConfig {
    /// Largest L2 norm an example's gradient keeps (C), > 0.
    pub clip_norm: f64,
    /// Noise standard deviation over the clip norm (sigma), >= 0.
    pub noise_multiplier: f64,
    /// The delta of the (epsilon, delta) guarantee, in (0, 1); well below 1 / training examples.
    pub delta: f64,
}

impl Default for DpSgdConfig {
    fn default() -> Self {
        Self {
            clip_norm: 1.0,
            noise_multiplier: 1.0,
            delta: 1e-5,
        }
    }
}

impl Privacy {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if let Privacy::DpSgd(d) = self {
            positive("clip_norm", d.clip_norm)?;
            if !(d.noise_multiplier.is_finite() && d.noise_multiplier >= 0.0) {
                return Err(format!(
                    "noise_multiplier must be a finite number >= 0, got {}",
                    d.noise_multiplier
                ));
            }
            if !(d.delta > 0.0 && d.delta < 1.0) {
                return Err(format!("delta must lie in (0, 1), got {}", d.delta));
            }
        }
        Ok(())
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

pub(super) fn positive(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{name} must be a positive number, got {v}"))
    }
}

pub(super) fn non_negative(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("{name} must be a number >= 0, got {v}"))
    }
}

pub(super) fn count(name: &str, v: usize, max: usize) -> Result<(), String> {
    if (1..=max).contains(&v) {
        Ok(())
    } else {
        Err(format!("{name} must be between 1 and {max}, got {v}"))
    }
}

impl Optimizer {
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Adam(a) => a.lr,
            Optimizer::Sgd(s) => s.lr,
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
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

    pub(super) fn validate(&self) -> Result<(), String> {
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
