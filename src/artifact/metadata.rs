//! Typed metadata of model files: the string keys a Rampart safetensors file carries and what
//! they mean. PyTorch ignores them; Rampart reads them back.
//!
//! | key | value |
//! | --- | --- |
//! | `rampart.spec` | image network spec (JSON [`crate::model::ImageSpec`]) |
//! | `rampart.fusion` | fusion network spec (JSON [`crate::model::FusionSpec`]) |
//! | `rampart.config` | the training config (JSON [`TrainConfig`]; older flat configs are migrated on read) |
//! | `rampart.summary` | training summary (JSON [`TrainSummary`]) |
//! | `rampart.provenance` | what wrote the file (JSON [`Provenance`]) |
//! | `rampart.dataset` | training data of fusion files written before the summary held it |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::train::config::{Mode, TrainConfig};

pub const SPEC: &str = "rampart.spec";
pub const FUSION: &str = "rampart.fusion";
pub const CONFIG: &str = "rampart.config";
pub const SUMMARY: &str = "rampart.summary";
pub const PROVENANCE: &str = "rampart.provenance";
pub const DATASET: &str = "rampart.dataset";

/// What a training run records about itself in the model it writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSummary {
    /// The training data's name (SYNTHETIC sets say so).
    pub dataset: Option<String>,
    pub train_examples: Option<usize>,
    pub device: Option<String>,
    pub epochs: Option<usize>,
    pub final_eval_accuracy: Option<f64>,
    pub eval_examples: Option<usize>,
    /// Adversarial modes: the last epoch's PGD-10 robust accuracy.
    pub final_robust_accuracy: Option<f64>,
    pub train_seconds: Option<f64>,
    /// DP-SGD: the (epsilon, delta) guarantee of the whole run.
    pub privacy: Option<crate::privacy::accountant::Guarantee>,
}

/// Which program wrote a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// "rampart 0.1.0".
    pub tool: String,
}

impl Provenance {
    pub fn this_build() -> Self {
        Self {
            tool: format!("rampart {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The string metadata of a model file, with typed readers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub raw: BTreeMap<String, String>,
}

impl Metadata {
    pub fn new(raw: BTreeMap<String, String>) -> Self {
        Self { raw }
    }

    /// The metadata a training run writes beside the spec.
    pub fn trained(config: &TrainConfig, summary: &TrainSummary) -> Self {
        let mut raw = BTreeMap::new();
        raw.insert(CONFIG.to_string(), to_json(config));
        raw.insert(SUMMARY.to_string(), to_json(summary));
        raw.insert(PROVENANCE.to_string(), to_json(&Provenance::this_build()));
        Self { raw }
    }

    /// A key's value parsed as JSON, if it is there and parses.
    pub fn json(&self, key: &str) -> Option<serde_json::Value> {
        self.raw
            .get(key)
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
    }

    /// The training config, migrated from the flat layout of older files; `None` when absent
    /// or unreadable (e.g. a file saved by PyTorch).
    pub fn config(&self) -> Option<TrainConfig> {
        self.raw
            .get(CONFIG)
            .and_then(|c| TrainConfig::from_json(c).ok())
    }

    pub fn summary(&self) -> Option<TrainSummary> {
        self.raw
            .get(SUMMARY)
            .and_then(|s| serde_json::from_str(s).ok())
    }

    /// The sigma of Gaussian-noise training, if the model was trained that way: the noise
    /// level its smoothed classifier is meant for.
    pub fn training_sigma(&self) -> Option<f64> {
        match self.config()?.mode {
            Mode::Gaussian(g) => Some(g.sigma),
            _ => None,
        }
    }

    /// The training data's name: the summary's, else the older `rampart.dataset` key.
    pub fn dataset(&self) -> Option<String> {
        self.summary()
            .and_then(|s| s.dataset)
            .or_else(|| self.raw.get(DATASET).cloned())
    }
}

/// A metadata value as a JSON string. The types stored are plain data (strings, numbers,
/// options, maps with string keys), on which serde_json cannot fail.
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
