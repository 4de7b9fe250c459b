//! Building ensembles: weights fitted on a held-out validation split, and `rampart ensemble
//! train`, which trains several members from one config and writes their manifest. (Voting is
//! [`crate::model::ensemble`]; manifests are [`crate::artifact::manifest`].)

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::artifact::files;
use crate::artifact::{self, ArtifactError, Manifest, Metadata};
use crate::data::{self, DataError, DatasetChoice, ImageSet, Split};
use crate::eval;
use crate::model::{Arch, ImageNet, Strategy};
use crate::train::config::{DataConfig, TrainConfig, nested};
use crate::train::observe::Observer;
use crate::train::{TrainError, keys, legacy};
use crate::workload::Examples;

#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    #[error("ensemble config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("ensemble member {index}: {reason}")]
    Member { index: usize, reason: String },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("device: {0}")]
    Device(String),
}

/// `rampart ensemble train`: several members trained in one command, then one manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleTrainConfig {
    pub strategy: Strategy,
    /// Weights proportional to each member's validation accuracy (false: equal weights).
    #[serde(default = "default_fit")]
    pub fit_weights: bool,
    /// Validation split for fitting: the last N Fashion-MNIST training images, which the
    /// members do not train on (their `train_limit` is capped below it); for the synthetic
    /// set, N fresh synthetic images.
    #[serde(default = "default_validation")]
    pub validation_size: usize,
    /// Directory of the run: `member-I-MODE/` per member and `ensemble.toml`.
    pub out: PathBuf,
    /// Training keys shared by every member (any key of `rampart train`).
    #[serde(default)]
    pub base: toml::Table,
    /// Per member, training keys laid over `base` (for example `mode` and `seed`).
    #[serde(rename = "member")]
    pub members: Vec<toml::Table>,
}

fn default_fit() -> bool {
    true
}

fn default_validation() -> usize {
    5000
}

/// Fashion-MNIST training images.
const FASHION_TRAIN: usize = 60_000;

impl EnsembleTrainConfig {
    /// Reads an ensemble config (at most 1 MiB).
    pub fn read(path: &Path) -> Result<Self, EnsembleError> {
        let err = |reason: String| EnsembleError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = files::read_text(path, files::CONFIG).map_err(|e| err(e.to_string()))?;
        let cfg: Self = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        if cfg.members.is_empty() {
            return Err(err("no [[member]] tables".into()));
        }
        if !(1..FASHION_TRAIN).contains(&cfg.validation_size) {
            return Err(err(format!(
                "validation_size must be between 1 and {}, got {}",
                FASHION_TRAIN - 1,
                cfg.validation_size
            )));
        }
        Ok(cfg)
    }

    /// The training config of member `i`: `base` with the member's keys laid over it (both
    /// flat, or both nested), its own run directory, and (Fashion-MNIST) a train limit that
    /// keeps the validation split unseen.
    pub fn member_config(&self, i: usize) -> Result<TrainConfig, EnsembleError> {
        let member_err = |reason: String| EnsembleError::Member { index: i, reason };
        let member = self.members[i].clone();
        let table = if legacy::is_flat(&self.base) || legacy::is_flat(&member) {
            let mut flat = self.base.clone();
            flat.extend(member);
            nested(flat).map_err(member_err)?
        } else {
            let top = keys::with_default_kinds(&self.base, member);
            keys::overlay(self.base.clone(), top)
        };
        let mut cfg = TrainConfig::from_table(table).map_err(member_err)?;
        if cfg.image_spec().is_none() {
            return Err(member_err(
                "ensembles vote over image models; use arch mlp or cnn".into(),
            ));
        }
        cfg.out = self.out.join(format!("member-{i}-{}", cfg.mode.name()));
        if let DataConfig::FashionMnist(d) = &mut cfg.data {
            let cap = FASHION_TRAIN - self.validation_size;
            match d.train_limit {
                Some(l) if l > cap => {
                    return Err(member_err(format!(
                        "train_limit {l} overlaps the validation split (the last {} training images); use at most {cap}",
                        self.validation_size
                    )));
                }
                None => d.train_limit = Some(cap),
                _ => {}
            }
        }
        Ok(cfg)
    }
}

/// The split ensemble weights are fitted on.
pub struct Validation {
    pub set: ImageSet,
    /// How the weights were chosen, for the manifest's `weights_from`.
    pub description: String,
    /// Fashion-MNIST: the first training-image index of the split (it runs to the end).
    pub fashion_start: Option<usize>,
}

/// The last `size` Fashion-MNIST training images, or `size` fresh SYNTHETIC images drawn with
/// `seed`.
pub fn validation_split(
    dataset: DatasetChoice,
    data_dir: Option<&Path>,
    size: usize,
    seed: u64,
    device: &Device,
) -> Result<Validation, DataError> {
    Ok(match dataset {
        DatasetChoice::FashionMnist => {
            let dir = data::resolve_data_dir(data_dir)?;
            let train = data::load_split(&dir, Split::Train, device)?;
            let n = train.len();
            let start = n.saturating_sub(size);
            Validation {
                set: train.slice(start, n),
                description: format!(
                    "validation accuracy on Fashion-MNIST training images {start}..{n}"
                ),
                fashion_start: Some(start),
            }
        }
        DatasetChoice::Synthetic => Validation {
            set: data::synthetic(size, seed ^ 0x7a11d, device),
            description: format!("validation accuracy on {size} fresh SYNTHETIC images"),
            fashion_start: None,
        },
    })
}

/// Each member's accuracy on `validation` and weights proportional to it (equal weights if
/// every member scores 0).
pub fn fit_weights(members: &[ImageNet], validation: &ImageSet) -> (Vec<f64>, Vec<f64>) {
    let examples = Examples {
        inputs: validation.images.clone(),
        labels: validation.labels.clone(),
        ids: (0..validation.len()).collect(),
    };
    let accuracy: Vec<f64> = members
        .iter()
        .map(|m| eval::evaluate(&m.valid(), &examples, 512).accuracy)
        .collect();
    let total: f64 = accuracy.iter().sum();
    let weights = if total > 0.0 {
        accuracy.iter().map(|a| a / total).collect()
    } else {
        vec![1.0 / members.len() as f64; members.len()]
    };
    (weights, accuracy)
}

/// Whether a model trained on Fashion-MNIST training image `start` or later (per its
/// `rampart.config`); `None` when it does not say (e.g. saved by PyTorch).
pub fn trained_past(metadata: &Metadata, start: usize) -> Option<bool> {
    match metadata.config()?.data {
        DataConfig::FashionMnist(d) => Some(d.train_limit.is_none_or(|l| l > start)),
        _ => Some(false),
    }
}

/// Trains every member of `cfg` (a member whose `model.safetensors` exists is kept; one with
/// a checkpoint resumes), fits the weights and writes `OUT/ensemble.toml`. `observers` hears
/// every member's training; `note` is told what happens to each member. `inputs` are the
/// files the caller read (the ensemble config): no member's output nor the manifest may be one.
/// Returns the manifest's path and the manifest.
pub fn train_members(
    cfg: &EnsembleTrainConfig,
    inputs: &[PathBuf],
    observers: &mut [&mut dyn Observer],
    note: &mut dyn FnMut(&str),
) -> Result<(PathBuf, Manifest), EnsembleError> {
    let configs = (0..cfg.members.len())
        .map(|i| cfg.member_config(i))
        .collect::<Result<Vec<_>, _>>()?;
    let out = cfg.out.join("ensemble.toml");
    let mut guard = files::Outputs::new();
    guard.inputs(inputs);
    guard
        .output(&out, "out (ensemble.toml)", files::OutputKind::Manifest)
        .map_err(ArtifactError::from)?;
    for (i, member) in configs.iter().enumerate() {
        let model = member.model_path();
        if model.exists() {
            note(&format!(
                "member {i}: {} exists, kept (delete it to retrain)",
                model.display()
            ));
            continue;
        }
        note(&format!(
            "member {i}: training {} (mode {}, seed {}) into {}",
            member.arch_name(),
            member.mode.name(),
            member.seed,
            member.out.display()
        ));
        let resume = member.checkpoint_dir().exists();
        crate::train::train(member, inputs, resume, observers)?;
    }
    let device = crate::device::choose(configs[0].device)
        .map_err(EnsembleError::Device)?
        .device;
    let models: Vec<(PathBuf, Option<Arch>)> =
        configs.iter().map(|c| (c.model_path(), None)).collect();
    let members = open_members(&models, &device)?;
    let digests: Vec<String> = members.iter().map(|m| m.sha256.clone()).collect();
    let weights = vec![1.0; members.len()];
    let mut manifest =
        Manifest::with_digests(&out, &models, &digests, &weights, cfg.strategy, "equal");
    if cfg.fit_weights {
        let dataset = match configs[0].data {
            DataConfig::Synthetic(_) => DatasetChoice::Synthetic,
            _ => DatasetChoice::FashionMnist,
        };
        let dir = match &configs[0].data {
            DataConfig::FashionMnist(d) => d.data_dir.clone(),
            _ => None,
        };
        let validation = validation_split(
            dataset,
            dir.as_deref(),
            cfg.validation_size,
            configs[0].seed,
            &device,
        )?;
        let nets: Vec<ImageNet> = members.into_iter().map(|m| m.net).collect();
        fit_into(&mut manifest, &nets, &validation);
    }
    manifest.write(&out)?;
    Ok((out, manifest))
}

/// An ensemble member as loaded: its network, its metadata and the sha256 of its file as
/// stored (what the manifest records; the ciphertext, for an encrypted member).
pub struct Member {
    pub net: ImageNet,
    pub metadata: Metadata,
    pub sha256: String,
}

/// Opens each model file (with its architecture, when given) as a member: an image model.
pub fn open_members(
    models: &[(PathBuf, Option<Arch>)],
    device: &Device,
) -> Result<Vec<Member>, EnsembleError> {
    models
        .iter()
        .map(|(path, arch)| {
            let options = artifact::OpenOptions {
                arch: *arch,
                ..Default::default()
            };
            let opened = artifact::open(path, options, device)?;
            match opened.model {
                artifact::AnyModel::Image { net, metadata, .. } => Ok(Member {
                    net,
                    metadata,
                    sha256: opened.file_sha256,
                }),
                other => Err(EnsembleError::Config {
                    path: path.clone(),
                    reason: format!(
                        "is a {} model; ensembles vote over image models",
                        other.kind()
                    ),
                }),
            }
        })
        .collect()
}

/// Sets each member's weight and validation accuracy in `manifest` from its accuracy on
/// `validation`, and records where the weights came from.
pub fn fit_into(manifest: &mut Manifest, nets: &[ImageNet], validation: &Validation) {
    let (weights, accuracy) = fit_weights(nets, &validation.set);
    for ((m, w), a) in manifest.members.iter_mut().zip(weights).zip(accuracy) {
        m.weight = w;
        m.validation_accuracy = Some(a);
    }
    manifest.weights_from = validation.description.clone();
}
