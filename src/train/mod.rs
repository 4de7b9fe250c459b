//! Training: one loop for every kind of model.
//!
//! - [`config`]: the nested config, validated; [`keys`]: its keys and flags, from its
//!   declaration; [`legacy`]: migration of the older flat layout.
//! - [`task`]: what a kind of model brings (image networks, fusion networks).
//! - [`objective`]: one objective per mode; [`policy`]: the overfitting guard and the
//!   adaptive attack choice, consulted after each epoch.
//! - [`checkpoint`]: model, optimiser and run state after every epoch, for `--resume`.
//! - [`observe`]: events to observers ([`metrics::MetricsLog`] writes `metrics.jsonl`).
//!
//! A run writes into its output directory: `model.safetensors` (PyTorch layout, with config
//! and summary metadata), `metrics.jsonl` and `checkpoint/`. The same seed on the same device
//! gives the same model bit for bit, and a resumed run ends exactly where an uninterrupted one
//! would: every epoch reseeds from `seed` and its index.

pub mod checkpoint;
pub mod config;
pub mod keys;
pub mod legacy;
pub mod metrics;
pub mod modes;
pub mod objective;
pub mod observe;
pub mod policy;
mod run;
pub mod sections;
mod step;
pub mod task;

use std::path::PathBuf;

use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig};

use crate::artifact::ArtifactError;
use crate::artifact::files::FileError;
use crate::data::DataError;
use crate::data::records::RecordError;
use crate::device;
use config::{Mode, Optimizer, TrainConfig};
use metrics::EpochMetrics;
use observe::Observer;
use task::{FusionTask, ImageTask};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("bad setting: {0}")]
    Invalid(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("device: {0}")]
    Device(String),
    #[error("{path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error(
        "training diverged at epoch {epoch}: the loss is {loss} (NaN or infinite); lower the learning rate. {kept}"
    )]
    Diverged {
        epoch: usize,
        loss: f64,
        /// What survives: the last good checkpoint, or that none was written yet.
        kept: String,
    },
}

/// The result of a finished run.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub model_path: PathBuf,
    pub history: Vec<EpochMetrics>,
    pub device: String,
    pub train_examples: usize,
    pub dataset: String,
}

/// Trains per `cfg`, resuming from its checkpoint when `resume` is set, telling `observers`
/// what happens (a metrics log is always attached). Takes a lock on the run directory.
/// `inputs` are files the caller read (its config): like the data files, no output may be one.
pub fn train(
    cfg: &TrainConfig,
    inputs: &[PathBuf],
    resume: bool,
    observers: &mut [&mut dyn Observer],
) -> Result<TrainReport, TrainError> {
    train_reshaped(cfg, inputs, resume, observers, None)
}

/// [`train`] an image model on the training images `reshape` makes of the config's (a
/// membership attack's shadow models: the config's images with some left out or added).
/// Fusion models take no reshaping.
pub fn train_reshaped(
    cfg: &TrainConfig,
    inputs: &[PathBuf],
    resume: bool,
    observers: &mut [&mut dyn Observer],
    reshape: Option<&task::Reshape<'_>>,
) -> Result<TrainReport, TrainError> {
    cfg.validate().map_err(TrainError::Invalid)?;
    let chosen = device::choose(cfg.device).map_err(TrainError::Device)?;
    match cfg.image_spec() {
        Some(spec) => {
            let secret = watermark_secret(cfg, spec.num_classes)?;
            let task = ImageTask::load(cfg, spec, &chosen.device, secret.as_ref(), reshape)?;
            let objective = objective::for_images(&cfg.mode, &chosen.device, spec.num_classes)?;
            // A teacher or a starting model is read like the data: no output may be it.
            let mut inputs = inputs.to_vec();
            if let Mode::Distill(d) = &cfg.mode {
                inputs.push(d.teacher.clone());
            }
            inputs.extend(cfg.init.clone());
            run::run(
                &task,
                objective.as_ref(),
                cfg,
                &inputs,
                resume,
                &chosen,
                observers,
            )
        }
        None if reshape.is_some() => Err(TrainError::Invalid(
            "only image models can train on reshaped training sets".into(),
        )),
        None => {
            let spec = cfg.fusion_spec().map_err(TrainError::Invalid)?;
            let task = FusionTask::load(cfg, spec, &chosen.device)?;
            let objective = objective::for_fusion(&cfg.mode)?;
            run::run(
                &task,
                objective.as_ref(),
                cfg,
                inputs,
                resume,
                &chosen,
                observers,
            )
        }
    }
}

/// A watermarked run's secret: the one an earlier run of this directory left (checked to
/// fit), else a fresh one written there (mode 0600).
fn watermark_secret(
    cfg: &TrainConfig,
    classes: usize,
) -> Result<Option<crate::watermark::Secret>, TrainError> {
    use crate::watermark::Secret;
    if cfg.watermark == 0 {
        return Ok(None);
    }
    let path = cfg.watermark_path();
    let invalid = |e: crate::watermark::WatermarkError| TrainError::Invalid(e.to_string());
    if path.exists() {
        let secret = Secret::read(&path).map_err(invalid)?;
        if secret.triggers != cfg.watermark || secret.classes != classes {
            return Err(TrainError::Invalid(format!(
                "{} holds {} triggers over {} classes, the run asks for {} over {classes}; move it away or train into another --out",
                path.display(),
                secret.triggers,
                secret.classes,
                cfg.watermark
            )));
        }
        return Ok(Some(secret));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|source| {
        TrainError::Invalid(format!("cannot create {}: {source}", cfg.out.display()))
    })?;
    let secret = Secret::generate(cfg.watermark, classes).map_err(invalid)?;
    secret.write_new(&path).map_err(invalid)?;
    Ok(Some(secret))
}

/// The optimiser a config names, with weight decay when set.
pub fn build_optimizer(cfg: &Optimizer) -> ModuleOptimizer {
    let decay = |wd: f64| (wd > 0.0).then(|| WeightDecayConfig::new(wd as f32));
    match *cfg {
        Optimizer::Adam(a) => AdamConfig::new()
            .with_weight_decay(decay(a.weight_decay))
            .init(),
        Optimizer::Sgd(s) => SgdConfig::new()
            .with_weight_decay(decay(s.weight_decay))
            .with_momentum((s.momentum > 0.0).then_some(MomentumConfig {
                momentum: s.momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .init(),
    }
}
