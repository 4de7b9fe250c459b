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

pub use super::modes::*;
pub use super::sections::*;
use crate::data::records::{FLOW_FEATURES, unit_box};
use crate::device::DeviceChoice;
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
    /// Differential privacy of the training data.
    pub privacy: Privacy,
    /// Examples per training batch.
    pub batch_size: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of initialisation, shuffling and noise: the same seed on the same device gives the
    /// same model, bit for bit.
    pub seed: u64,
    /// auto (a GPU if wgpu finds one, else flex), flex or wgpu.
    pub device: DeviceChoice,
    /// Data-parallel replicas, 1 to 16: each batch is split into this many parts, one per
    /// device (the chosen device, then wgpu's discrete GPUs 1, 2, ...; on flex every replica
    /// shares the CPU), and one optimiser step is taken over the sum of their gradients.
    pub replicas: usize,
    /// Trigger-set watermark (Adi et al. 2018): this many secret noise images with chosen
    /// labels mixed into the training set (repeated to about 1% of it, at least 4 times), 0 for none; the secret
    /// is OUT/watermark.secret (mode 0600) and `rampart watermark verify` checks a copy.
    pub watermark: usize,
    /// Start from this model's weights instead of a fresh initialisation (fine-tuning; image
    /// models, the architecture must match [model]). The optimiser starts afresh.
    pub init: Option<PathBuf>,
    /// Run directory: model.safetensors, metrics.jsonl, checkpoint/.
    pub out: PathBuf,
}

/// The most data-parallel replicas a run may ask for.
pub const MAX_REPLICAS: usize = 16;

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelConfig::Cnn(ImageModel::default()),
            data: DataConfig::FashionMnist(FashionData::default()),
            mode: Mode::Standard,
            optimizer: Optimizer::Adam(Adam::default()),
            schedule: Schedule::Constant,
            privacy: Privacy::None,
            batch_size: 128,
            epochs: 2,
            seed: 0,
            device: DeviceChoice::Auto,
            replicas: 1,
            watermark: 0,
            init: None,
            out: PathBuf::from("runs/model"),
        }
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
        count("replicas", self.replicas, MAX_REPLICAS)?;
        self.privacy.validate()?;
        if self.watermark > crate::watermark::MAX_TRIGGERS {
            return Err(format!(
                "watermark must be at most {}, got {}",
                crate::watermark::MAX_TRIGGERS,
                self.watermark
            ));
        }
        if self.init.is_some() && matches!(self.model, ModelConfig::Fusion(_)) {
            return Err("init (fine-tuning) takes image models; fusion models start fresh".into());
        }
        if self.watermark > 0 && matches!(self.model, ModelConfig::Fusion(_)) {
            return Err("watermark trigger sets are images: fusion models take none".into());
        }
        if let Privacy::DpSgd(_) = self.privacy {
            if !matches!(self.mode, Mode::Standard) || matches!(self.model, ModelConfig::Fusion(_))
            {
                return Err(
                    "privacy dp-sgd trains image models (mlp, cnn) in mode standard; per-example clipping of the other modes and of fusion models is not implemented".into(),
                );
            }
            if self.replicas > 1 {
                return Err("privacy dp-sgd runs on one device: set replicas = 1".into());
            }
        }
        if self.replicas > self.batch_size {
            return Err(format!(
                "replicas {} is more than batch_size {}: every replica needs examples",
                self.replicas, self.batch_size
            ));
        }
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
        if let (Mode::Distill(_), ModelConfig::Fusion(_)) = (&self.mode, &self.model) {
            return Err("mode distill trains image models (mlp, cnn)".into());
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

    /// Where a watermarked run keeps its secret.
    pub fn watermark_path(&self) -> PathBuf {
        self.out.join("watermark.secret")
    }

    /// The sigma of Gaussian training, if that is the mode.
    pub fn sigma(&self) -> Option<f64> {
        match self.mode {
            Mode::Gaussian(g) => Some(g.sigma),
            _ => None,
        }
    }

    /// Whether two configs describe the same recipe (everything but `epochs`, `device` and
    /// `replicas`; `out` compared as normalised paths); the keys that differ otherwise.
    pub fn differences(&self, other: &TrainConfig) -> Vec<String> {
        let flat = |c: &TrainConfig| {
            let mut c = c.clone();
            c.epochs = 0;
            c.device = DeviceChoice::Auto;
            c.replicas = 1;
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
        let value = toml::Value::Table(nested(table)?);
        let cfg: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let reason = e.into_inner().message().to_string();
            format!("key `{key}`: {reason}")
        })?;
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
