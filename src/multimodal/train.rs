//! Training the fusion model: a config (TOML, `arch = "fusion"`, read by `rampart train`) and
//! a loop you can read top to bottom. Modes: `standard`; `gaussian` (noise of std `sigma` on
//! the network features, for smoothing them); `pgd` (Madry et al. L∞ PGD on the network
//! features inside their box, other modalities fixed); `pgd-embeddings` (L2 PGD on the word
//! and byte embeddings).
//!
//! The run directory gets `model.safetensors` (rewritten atomically after every epoch, so the
//! last good epoch survives an interruption) and `metrics.jsonl`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Distribution, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::data::{self, SECURITY_CLASSES, SecuritySet};
use super::model::{Fusion, FusionSpec, Modality};
use super::{EmbeddingView, NetworkView, evaluate};
use crate::attack::{AttackLoss, Norm, Pgd};
use crate::device::{self, DeviceChoice};

#[derive(Debug, thiserror::Error)]
pub enum FusionTrainError {
    #[error("fusion config: {0}")]
    Invalid(String),
    #[error(transparent)]
    Records(#[from] data::RecordError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("device: {0}")]
    Device(String),
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error(
        "training diverged at epoch {epoch}: the loss is {loss}; lower lr. The model of the last good epoch is kept in {path}"
    )]
    Diverged {
        epoch: usize,
        loss: f64,
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FusionMode {
    Standard,
    /// Gaussian noise on the network features (for certifying them).
    Gaussian,
    /// L∞ PGD on the network features.
    Pgd,
    /// L2 PGD on the word and byte embeddings (radius `embedding_epsilon` per example), one
    /// sequence modality at a time with the others fixed.
    PgdEmbeddings,
}

/// A fusion training run: every key but `class_names` and `network_box` may also come as a
/// `rampart train` flag of that name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FusionTrainConfig {
    /// Must be "fusion" (selects this trainer).
    pub arch: String,
    /// JSONL training records.
    pub train_records: PathBuf,
    /// JSONL evaluation records.
    pub test_records: PathBuf,
    pub class_names: Vec<String>,
    /// `[low, high]` per network feature (unset: [0, 1] for each of 8 features).
    pub network_box: Option<Vec<(f64, f64)>>,
    pub modalities: Vec<Modality>,
    pub fusion: Fusion,
    pub dim: usize,
    pub mode: FusionMode,
    /// Gaussian mode: noise std on the network features, fraction of each feature's range.
    pub sigma: f64,
    /// PGD mode: L∞ radius on the network features, fraction of each feature's range.
    pub epsilon: f64,
    /// pgd-embeddings mode: L2 radius per example on each sequence's embeddings.
    pub embedding_epsilon: f64,
    pub attack_steps: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub seed: u64,
    pub device: DeviceChoice,
    pub out: PathBuf,
}

impl Default for FusionTrainConfig {
    fn default() -> Self {
        Self {
            arch: "fusion".into(),
            train_records: PathBuf::from("runs/security/train.jsonl"),
            test_records: PathBuf::from("runs/security/test.jsonl"),
            class_names: SECURITY_CLASSES.iter().map(|s| s.to_string()).collect(),
            network_box: None,
            modalities: vec![Modality::Text, Modality::Bytes, Modality::Network],
            fusion: Fusion::Gated,
            dim: 64,
            mode: FusionMode::Standard,
            sigma: 0.25,
            epsilon: 0.1,
            embedding_epsilon: 1.0,
            attack_steps: 7,
            lr: 3e-3,
            batch_size: 128,
            epochs: 8,
            seed: 0,
            device: DeviceChoice::Auto,
            out: PathBuf::from("runs/security-fusion"),
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FusionEpoch {
    pub epoch: usize,
    pub loss: f64,
    pub eval_accuracy: f64,
    /// PGD mode: PGD-10 accuracy on the network features of the first 500 evaluation records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robust_accuracy: Option<f64>,
    pub seconds: f64,
}

impl FusionTrainConfig {
    pub fn from_toml_table(table: toml::Table) -> Result<Self, String> {
        let cfg: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.arch != "fusion" {
            return Err(format!("arch must be \"fusion\", got {:?}", self.arch));
        }
        if self.class_names.len() < 2 {
            return Err("class_names needs at least two classes".into());
        }
        if self.modalities.is_empty() {
            return Err("modalities is empty".into());
        }
        if self.dim == 0 || self.batch_size == 0 || self.epochs == 0 {
            return Err("dim, batch_size and epochs must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(format!("sigma must be positive, got {}", self.sigma));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0)
            || !(self.embedding_epsilon.is_finite() && self.embedding_epsilon > 0.0)
            || self.attack_steps == 0
        {
            return Err(
                "epsilon and embedding_epsilon must be positive and attack_steps at least 1".into(),
            );
        }
        if self.mode == FusionMode::PgdEmbeddings
            && !self.modalities.iter().any(|m| *m != Modality::Network)
        {
            return Err("mode pgd-embeddings needs a text or bytes modality".into());
        }
        if let Some(b) = &self.network_box {
            if let Some((j, _)) = b
                .iter()
                .enumerate()
                .find(|(_, (lo, hi))| !(lo.is_finite() && hi.is_finite() && lo < hi))
            {
                return Err(format!("network_box[{j}] must have low < high"));
            }
        }
        Ok(())
    }

    pub fn spec(&self) -> FusionSpec {
        FusionSpec {
            class_names: self.class_names.clone(),
            network_box: self
                .network_box
                .clone()
                .unwrap_or_else(|| data::unit_box(data::FLOW_FEATURES.len())),
            modalities: self.modalities.clone(),
            fusion: self.fusion,
            dim: self.dim,
        }
    }

    pub fn model_path(&self) -> PathBuf {
        self.out.join("model.safetensors")
    }
}

/// PGD on the network features used for training and per-epoch robust accuracy.
pub fn network_pgd(epsilon: f64, steps: usize) -> Pgd {
    Pgd {
        norm: Norm::Linf,
        epsilon,
        alpha: 2.5 * epsilon / steps as f64,
        steps,
        random_start: true,
        loss: AttackLoss::Ce,
    }
}

/// Trains per `cfg` and returns the per-epoch metrics.
pub fn train(cfg: &FusionTrainConfig) -> Result<Vec<FusionEpoch>, FusionTrainError> {
    cfg.validate().map_err(FusionTrainError::Invalid)?;
    let chosen = device::choose(cfg.device).map_err(FusionTrainError::Device)?;
    let device = chosen.device.clone();
    eprintln!("device: {}", chosen.description);
    let spec = cfg.spec();
    let schema = spec.schema();
    let train_set = data::load(&cfg.train_records, &schema, &device)?;
    let eval_set = data::load(&cfg.test_records, &schema, &device)?;
    eprintln!(
        "data: {} training records from {}, {} evaluation records",
        train_set.len(),
        train_set.name,
        eval_set.len()
    );

    let ad = device.clone().autodiff();
    device.seed(cfg.seed);
    let mut model = spec.init(&ad);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let n = train_set.len();
    let batches = n.div_ceil(cfg.batch_size);
    let metrics_path = cfg.out.join("metrics.jsonl");
    let mut history: Vec<FusionEpoch> = Vec::new();
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "rampart.config".to_string(),
        serde_json::to_string(cfg).expect("config serialises"),
    );
    metadata.insert("rampart.dataset".to_string(), train_set.name.clone());

    for epoch in 0..cfg.epochs {
        let started = Instant::now();
        device.seed(cfg.seed.wrapping_add(1 + epoch as u64));
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(cfg.seed ^ (epoch as u64) << 32));
        let bar = crate::train::progress_bar(batches as u64, epoch + 1, cfg.epochs);
        let mut loss_sum = Tensor::<1>::zeros([1], &device);
        for idx in order.chunks(cfg.batch_size) {
            let mut batch = train_set.select(crate::data::indices(idx, &device));
            match cfg.mode {
                FusionMode::Standard | FusionMode::PgdEmbeddings => {}
                FusionMode::Gaussian => {
                    batch.network = batch.network.clone()
                        + batch
                            .network
                            .random_like(Distribution::Normal(0.0, cfg.sigma));
                }
                FusionMode::Pgd => {
                    let valid = model.valid();
                    let view = NetworkView::new(&valid, &batch);
                    batch.network = network_pgd(cfg.epsilon, cfg.attack_steps).perturb(
                        &view,
                        &batch.network,
                        &batch.labels,
                        None,
                    );
                }
            }
            let labels = batch.labels.clone().autodiff();
            let logits = if cfg.mode == FusionMode::PgdEmbeddings {
                // Adversarial offsets found on the frozen model, added to the trainable
                // embeddings so the embedding tables still learn.
                let valid = model.valid();
                let mut parts = model.parts(&to_autodiff(&batch));
                for modality in [Modality::Text, Modality::Bytes] {
                    let view = EmbeddingView {
                        model: &valid,
                        context: batch.clone(),
                        modality,
                    };
                    let Some(clean) = view.embeddings() else {
                        continue;
                    };
                    let attack = Pgd {
                        norm: Norm::L2,
                        epsilon: cfg.embedding_epsilon,
                        alpha: 2.5 * cfg.embedding_epsilon / cfg.attack_steps as f64,
                        steps: cfg.attack_steps,
                        random_start: true,
                        loss: AttackLoss::Ce,
                    };
                    let adv = attack.perturb(&view, &clean, &batch.labels, None);
                    let delta = (adv - clean).autodiff();
                    match modality {
                        Modality::Text => parts.text = parts.text.map(|e| e + delta),
                        _ => parts.bytes = parts.bytes.map(|e| e + delta),
                    }
                }
                model.forward_parts(parts)
            } else {
                model.forward(&to_autodiff(&batch))
            };
            let loss = loss_fn.forward(logits, labels);
            loss_sum = loss_sum + loss.clone().inner().reshape([1]);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.lr, model, grads);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let loss = loss_sum.into_scalar::<f32>() as f64 / batches as f64;
        if !loss.is_finite() {
            return Err(FusionTrainError::Diverged {
                epoch: epoch + 1,
                loss,
                path: cfg.model_path(),
            });
        }
        let valid = model.valid();
        let eval_accuracy = evaluate(&valid, &eval_set, 512).accuracy;
        let robust_accuracy = (cfg.mode == FusionMode::Pgd).then(|| {
            let subset = eval_set.range(0, 500);
            let view = NetworkView::new(&valid, &subset);
            let mut tally = crate::attack::Tally::new(&device);
            tally.add(&crate::attack::worst_case(
                &view,
                &subset.network,
                &subset.labels,
                &[network_pgd(cfg.epsilon, 10)],
                1,
                None,
            ));
            tally.read().1 as f64 / subset.len() as f64
        });
        let m = FusionEpoch {
            epoch: epoch + 1,
            loss,
            eval_accuracy,
            robust_accuracy,
            seconds: started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "epoch {}/{}: loss {:.4}  eval acc {:.2}%{}  {:.1}s",
            m.epoch,
            cfg.epochs,
            m.loss,
            100.0 * m.eval_accuracy,
            m.robust_accuracy
                .map(|r| format!("  PGD-10 network acc {:.2}%", 100.0 * r))
                .unwrap_or_default(),
            m.seconds
        );
        history.push(m);
        metadata.insert(
            "rampart.summary".to_string(),
            serde_json::to_string(history.last().expect("one epoch")).expect("serialises"),
        );
        super::save(&valid, &spec, &metadata, &cfg.model_path())?;
        crate::store::write_jsonl(&metrics_path, &history).map_err(|e| {
            FusionTrainError::Write {
                path: metrics_path.clone(),
                reason: e.to_string(),
            }
        })?;
    }
    Ok(history)
}

/// The same records on the autodiff device (for the training forward pass).
fn to_autodiff(set: &SecuritySet) -> SecuritySet {
    SecuritySet {
        text: set.text.clone().autodiff(),
        bytes: set.bytes.clone().autodiff(),
        histogram: set.histogram.clone().autodiff(),
        network: set.network.clone().autodiff(),
        present: set.present.clone().autodiff(),
        labels: set.labels.clone().autodiff(),
        name: set.name.clone(),
    }
}
