//! Per-epoch metrics: one JSON object per line of `metrics.jsonl`, rewritten (atomically)
//! from the kept history after every epoch, so a resumed or rolled-back run leaves exactly the
//! epochs that count.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::observe::{Event, Observer};
use crate::artifact;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean training loss over the epoch's examples.
    pub train_loss: f64,
    /// Accuracy of the training forward passes (on the inputs trained on: noisy or
    /// adversarial in those modes).
    pub train_accuracy: f64,
    pub eval_accuracy: f64,
    pub eval_examples: usize,
    pub images_per_sec: f64,
    pub seconds: f64,
    /// Adversarial modes: the training attack's radius and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack: Option<String>,
    /// Adversarial modes: L∞ PGD-10 robust accuracy at `epsilon` on the first
    /// `robust_eval_size` evaluation examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robust_accuracy: Option<f64>,
    /// Single-step epochs: FGSM-RS robust accuracy there (what the overfitting guard compares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fgsm_accuracy: Option<f64>,
    /// Adaptive mode: robust accuracy under each candidate attack at the next epoch's epsilon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<BTreeMap<String, f64>>,
    /// The attack the next epoch trains against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attack: Option<String>,
    /// Something the run did on its own, such as the overfitting guard's rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// DP-SGD: the (epsilon, delta) guarantee after the steps so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<crate::privacy::accountant::Guarantee>,
}

/// Rewrites `metrics.jsonl` from the history after every epoch.
pub struct MetricsLog {
    pub path: PathBuf,
}

impl Observer for MetricsLog {
    fn on(&mut self, event: &Event<'_>) -> Result<(), TrainError> {
        if let Event::EpochDone { history, .. } = event {
            artifact::write_jsonl(&self.path, history)?;
        }
        Ok(())
    }
}
