//! Ensembles: several classifiers that vote, used wherever a single model is.
//!
//! An ensemble is its members, one weight per member (normalised to sum 1) and a strategy:
//! - `weighted_majority`: each member votes for its argmax class with its weight; the heaviest
//!   class wins.
//! - `unanimous`: the class if every member agrees, else an explicit "no decision" (decision
//!   index `classes`), which callers see and which never counts as correct.
//! - `highest_confidence`: the member with the largest softmax probability decides.
//! - `mean_logits` / `mean_probs`: argmax of the weighted mean of the members' logits or
//!   softmax probabilities (differentiable).
//!
//! Ties go to the lowest class (or member) index. Attacks differentiate a surrogate (the
//! weighted mean logits for `mean_logits`, the log of the weighted mean probabilities for every
//! other strategy) and are judged on the real decision rule; randomized smoothing uses the
//! decision rule as its base classifier (one forward of all members per noisy batch).
//!
//! An ensemble is stored as a manifest (TOML, or JSON by extension) naming each member file
//! with its sha256 digest and weight; loading refuses a member whose digest does not match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::attack::Logits;
use crate::certify::BaseClassifier;
use crate::data::ImageSet;
use crate::model::{Arch, Classifier};
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    #[error("ensemble manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("ensemble config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(
        "ensemble manifest {manifest}: member {member} has sha256 {found}, but the manifest expects {expected}; the file changed since the manifest was written (recreate it with `rampart ensemble create`)"
    )]
    Digest {
        manifest: PathBuf,
        member: PathBuf,
        expected: String,
        found: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bad ensemble: {0}")]
    Invalid(String),
}

/// How the members' outputs become one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Strategy {
    WeightedMajority,
    Unanimous,
    HighestConfidence,
    MeanLogits,
    MeanProbs,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = serde_json::to_value(self).expect("strategy serialises");
        f.write_str(v.as_str().unwrap_or_default())
    }
}

/// Row-wise argmax with ties going to the lowest index, independent of the backend's own
/// tie rule: among entries within 1e-5 of the row maximum, the first one.
pub fn first_max(scores: Tensor<2>) -> Tensor<1, Int> {
    let [_, k] = scores.dims();
    let device = scores.device();
    let top = scores.clone().max_dim(1);
    let is_max = (scores - top).greater_equal_elem(-1e-5).float();
    let rank = Tensor::<1, Int>::arange(0..k as i64, &device)
        .float()
        .neg()
        .add_scalar(k as f64)
        .unsqueeze_dim::<2>(0);
    (is_max * rank).argmax(1).squeeze_dim::<1>(1)
}

/// The decision of `strategy` for member logits `[M, N, K]` with normalised `weights` `[M]`:
/// a class in `0..K`, or `K` ("no decision") for a unanimous ensemble that disagrees.
pub fn decide(strategy: Strategy, logits: Tensor<3>, weights: &Tensor<1>) -> Tensor<1, Int> {
    let [m, n, k] = logits.dims();
    let w = weights.clone().reshape([m, 1, 1]);
    let preds = || logits.clone().argmax(2).reshape([m, n]);
    match strategy {
        Strategy::WeightedMajority => {
            let votes = (preds().one_hot::<3>(k).float() * w).sum_dim(0);
            first_max(votes.reshape([n, k]))
        }
        Strategy::Unanimous => {
            let preds = preds();
            let first = preds.clone().narrow(0, 0, 1);
            let all_agree = preds.equal(first.clone().expand([m, n])).int().min_dim(0);
            let decision = first.clone() * all_agree.clone() + (all_agree.neg() + 1) * k as i64;
            decision.reshape([n])
        }
        Strategy::HighestConfidence => {
            let confidence = softmax(logits.clone(), 2).max_dim(2).reshape([m, n]);
            let member = first_max(confidence.transpose()).reshape([n, 1]);
            preds().transpose().gather(1, member).reshape([n])
        }
        Strategy::MeanLogits => first_max((logits * w).sum_dim(0).reshape([n, k])),
        Strategy::MeanProbs => first_max((softmax(logits, 2) * w).sum_dim(0).reshape([n, k])),
    }
}

/// The differentiable stand-in attacks ascend, `[N, K]`: weighted mean logits for
/// `mean_logits`, else the log of the weighted mean probabilities.
pub fn surrogate(strategy: Strategy, logits: Tensor<3>, weights: &Tensor<1>) -> Tensor<2> {
    let [m, n, k] = logits.dims();
    let w = weights.clone().reshape([m, 1, 1]);
    match strategy {
        Strategy::MeanLogits => (logits * w).sum_dim(0).reshape([n, k]),
        _ => (softmax(logits, 2) * w)
            .sum_dim(0)
            .reshape([n, k])
            .clamp_min(1e-12)
            .log(),
    }
}

/// Member models with weights and a strategy.
#[derive(Debug, Clone)]
pub struct Ensemble {
    pub members: Vec<Classifier>,
    /// One per member, normalised to sum 1.
    pub weights: Vec<f64>,
    pub strategy: Strategy,
    pub num_classes: usize,
}

impl Ensemble {
    /// Checks that the members agree on the class count and that the weights are finite,
    /// non-negative and not all zero; normalises them.
    pub fn new(
        members: Vec<Classifier>,
        weights: Vec<f64>,
        strategy: Strategy,
    ) -> Result<Self, EnsembleError> {
        if members.is_empty() {
            return Err(EnsembleError::Invalid("no members".into()));
        }
        if weights.len() != members.len() {
            return Err(EnsembleError::Invalid(format!(
                "{} weights for {} members",
                weights.len(),
                members.len()
            )));
        }
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(EnsembleError::Invalid(format!(
                "weights must be finite and non-negative, got {weights:?}"
            )));
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(EnsembleError::Invalid("the weights are all zero".into()));
        }
        let num_classes = members[0].num_classes();
        if let Some(i) = members.iter().position(|m| m.num_classes() != num_classes) {
            return Err(EnsembleError::Invalid(format!(
                "member {i} has {} classes, member 0 has {num_classes}",
                members[i].num_classes()
            )));
        }
        Ok(Self {
            members,
            weights: weights.iter().map(|w| w / total).collect(),
            strategy,
            num_classes,
        })
    }

    /// Every member's logits for pixels `x` `[N, 1, 28, 28]`, stacked `[M, N, K]`.
    pub fn member_logits(&self, x: Tensor<4>) -> Tensor<3> {
        Tensor::stack(
            self.members.iter().map(|m| m.forward(x.clone())).collect(),
            0,
        )
    }

    /// Inference-mode copies of the members (no autodiff, no dropout).
    pub fn valid(&self) -> Self {
        Self {
            members: self.members.iter().map(|m| m.valid()).collect(),
            ..self.clone()
        }
    }

    /// The decisions the ensemble can make: the classes, plus "no decision" if unanimous.
    pub fn decisions(&self) -> usize {
        self.num_classes + usize::from(self.strategy == Strategy::Unanimous)
    }

    fn weight_tensor(&self, device: &Device) -> Tensor<1> {
        let w: Vec<f32> = self.weights.iter().map(|&w| w as f32).collect();
        Tensor::from_data(TensorData::new(w, [self.weights.len()]), device)
    }
}

impl Logits<4> for Ensemble {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let w = self.weight_tensor(&x.device());
        surrogate(self.strategy, self.member_logits(x), &w)
    }

    fn decide(&self, x: Tensor<4>) -> Tensor<1, Int> {
        let w = self.weight_tensor(&x.device());
        decide(self.strategy, self.member_logits(x), &w)
    }
}

impl BaseClassifier<4> for Ensemble {
    fn classify(&self, x: Tensor<4>, _ids: Tensor<1, Int>) -> Tensor<1, Int> {
        Logits::decide(self, x)
    }

    fn num_classes(&self) -> usize {
        self.decisions()
    }

    fn abstain_class(&self) -> Option<usize> {
        (self.strategy == Strategy::Unanimous).then_some(self.num_classes)
    }
}

/// One member of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Model file, relative to the manifest's directory (or absolute).
    pub path: PathBuf,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
    pub weight: f64,
    /// Architecture, for files without Rampart metadata (PyTorch-saved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    /// The member's validation accuracy when the weights were fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
}

/// An ensemble on disk: strategy and members with digests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub strategy: Strategy,
    /// How the weights were chosen ("hand", or the validation split they were fitted on).
    #[serde(default)]
    pub weights_from: String,
    #[serde(rename = "member")]
    pub members: Vec<Member>,
}

/// Whether `path` names an ensemble manifest (`.toml` or `.json`) rather than a model file.
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("toml" | "json")
    )
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

impl Manifest {
    /// A manifest for existing model files, to be written at `out`: each member's digest is
    /// taken now; paths are stored relative to `out`'s directory when they lie below it.
    pub fn describe(
        out: &Path,
        models: &[(PathBuf, Option<Arch>)],
        weights: &[f64],
        strategy: Strategy,
        weights_from: &str,
    ) -> Result<Self, EnsembleError> {
        let base = manifest_dir(out)
            .canonicalize()
            .unwrap_or_else(|_| manifest_dir(out).to_path_buf());
        let members = models
            .iter()
            .zip(weights)
            .map(|((path, arch), &weight)| {
                let bytes = store::read_file(path)?;
                let full = path.canonicalize().unwrap_or_else(|_| path.clone());
                let stored = full
                    .strip_prefix(&base)
                    .map(Path::to_path_buf)
                    .unwrap_or(full.clone());
                Ok(Member {
                    path: stored,
                    sha256: sha256_hex(&bytes),
                    weight,
                    arch: *arch,
                    validation_accuracy: None,
                })
            })
            .collect::<Result<Vec<_>, EnsembleError>>()?;
        Ok(Self {
            strategy,
            weights_from: weights_from.into(),
            members,
        })
    }

    /// Reads a manifest; unknown keys and bad values are errors naming the file.
    pub fn read(path: &Path) -> Result<Self, EnsembleError> {
        let err = |reason: String| EnsembleError::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let manifest: Manifest = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| err(e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| err(e.to_string()))?
        };
        if manifest.members.is_empty() {
            return Err(err("no [[member]] entries".into()));
        }
        Ok(manifest)
    }

    /// Writes the manifest atomically (TOML, or JSON for a `.json` path).
    pub fn write(&self, path: &Path) -> Result<(), EnsembleError> {
        let err = |reason: String| EnsembleError::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        let text = if path.extension().is_some_and(|e| e == "json") {
            serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?
        } else {
            format!(
                "# Rampart ensemble manifest: members are checked against their sha256 on load.\n{}",
                toml::to_string_pretty(self).map_err(|e| err(e.to_string()))?
            )
        };
        store::write_atomic(path, text.as_bytes()).map_err(|e| err(e.to_string()))
    }

    /// Loads every member, refusing any whose bytes do not match its digest.
    pub fn load(&self, path: &Path, device: &Device) -> Result<Ensemble, EnsembleError> {
        let dir = manifest_dir(path);
        let mut members = Vec::new();
        for m in &self.members {
            let file = dir.join(&m.path);
            let bytes = store::read_file(&file)?;
            let found = sha256_hex(&bytes);
            if !found.eq_ignore_ascii_case(&m.sha256) {
                return Err(EnsembleError::Digest {
                    manifest: path.to_path_buf(),
                    member: file,
                    expected: m.sha256.clone(),
                    found,
                });
            }
            members.push(store::load_model_bytes(bytes, &file, m.arch, device)?.model);
        }
        let weights = self.members.iter().map(|m| m.weight).collect();
        Ensemble::new(members, weights, self.strategy).map_err(|e| EnsembleError::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// The sigma the members were trained with (`--mode gaussian`), if they all share one.
    pub fn training_sigma(&self, path: &Path) -> Option<f64> {
        let dir = manifest_dir(path);
        let sigmas: Vec<Option<f64>> = self
            .members
            .iter()
            .map(|m| {
                let path = dir.join(&m.path);
                let bytes = std::fs::read(&path).ok()?;
                let (_, metadata) = store::read_header(&bytes, &path).ok()?;
                training_sigma(&metadata)
            })
            .collect();
        let first = sigmas.first().copied().flatten()?;
        sigmas.iter().all(|s| *s == Some(first)).then_some(first)
    }
}

/// The sigma in a model's `rampart.config` metadata if it was trained with Gaussian noise.
pub fn training_sigma(metadata: &BTreeMap<String, String>) -> Option<f64> {
    metadata
        .get("rampart.config")
        .and_then(|c| serde_json::from_str::<crate::train::TrainConfig>(c).ok())
        .filter(|c| c.mode == crate::train::TrainMode::Gaussian)
        .map(|c| c.sigma)
}

/// Whether the model file at `path` trained on Fashion-MNIST training image `start` or later
/// (per its `rampart.config`); `None` when the file does not say (e.g. saved by PyTorch).
pub fn trained_past(path: &Path, start: usize) -> Option<bool> {
    let bytes = std::fs::read(path).ok()?;
    let (_, metadata) = store::read_header(&bytes, path).ok()?;
    let cfg: crate::train::TrainConfig =
        serde_json::from_str(metadata.get("rampart.config")?).ok()?;
    Some(
        cfg.dataset == crate::train::DatasetChoice::FashionMnist
            && cfg.train_limit.is_none_or(|l| l > start),
    )
}

fn manifest_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Each member's accuracy on `validation` and weights proportional to it.
pub fn fit_weights(members: &[Classifier], validation: &ImageSet) -> (Vec<f64>, Vec<f64>) {
    let accuracy: Vec<f64> = members
        .iter()
        .map(|m| crate::eval::evaluate(&m.valid(), validation, 512).accuracy)
        .collect();
    let total: f64 = accuracy.iter().sum();
    let weights = if total > 0.0 {
        accuracy.iter().map(|a| a / total).collect()
    } else {
        vec![1.0 / members.len() as f64; members.len()]
    };
    (weights, accuracy)
}

/// A single model or an ensemble: what `eval`, `attack`, `certify` and `predict` accept.
pub enum ImageModel {
    Single(store::Loaded),
    Ensemble(Ensemble, Manifest),
}

impl ImageModel {
    /// A manifest (`.toml`/`.json`) opens as an ensemble, anything else as one model file.
    pub fn open(path: &Path, arch: Option<Arch>, device: &Device) -> Result<Self, EnsembleError> {
        if is_manifest(path) {
            let manifest = Manifest::read(path)?;
            Ok(Self::Ensemble(manifest.load(path, device)?, manifest))
        } else {
            Ok(Self::Single(store::load_model(path, arch, device)?))
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Self::Single(l) => l.spec.num_classes,
            Self::Ensemble(e, _) => e.num_classes,
        }
    }

    /// "cnn", or "ensemble of 3 (weighted_majority)".
    pub fn describe(&self) -> String {
        match self {
            Self::Single(l) => l.spec.arch.to_string(),
            Self::Ensemble(e, _) => {
                format!("ensemble of {} ({})", e.members.len(), e.strategy)
            }
        }
    }

    /// The sigma the model (every member) was trained with for smoothing, if any.
    pub fn training_sigma(&self, path: &Path) -> Option<f64> {
        match self {
            Self::Single(l) => training_sigma(&l.metadata),
            Self::Ensemble(_, m) => m.training_sigma(path),
        }
    }

    /// Inference-mode copy.
    pub fn valid(&self) -> ValidModel {
        match self {
            Self::Single(l) => ValidModel::Single(l.model.valid()),
            Self::Ensemble(e, _) => ValidModel::Ensemble(e.valid()),
        }
    }
}

/// An inference-mode single model or ensemble, ready to attack, evaluate or smooth.
pub enum ValidModel {
    Single(Classifier),
    Ensemble(Ensemble),
}

impl Logits<4> for ValidModel {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Single(m) => m.forward(x),
            Self::Ensemble(e) => e.logits(x),
        }
    }

    fn decide(&self, x: Tensor<4>) -> Tensor<1, Int> {
        match self {
            Self::Single(m) => m.decide(x),
            Self::Ensemble(e) => e.decide(x),
        }
    }
}

impl BaseClassifier<4> for ValidModel {
    fn classify(&self, x: Tensor<4>, ids: Tensor<1, Int>) -> Tensor<1, Int> {
        match self {
            Self::Single(m) => m.classify(x, ids),
            Self::Ensemble(e) => e.classify(x, ids),
        }
    }

    fn num_classes(&self) -> usize {
        match self {
            Self::Single(m) => BaseClassifier::num_classes(m),
            Self::Ensemble(e) => BaseClassifier::num_classes(e),
        }
    }

    fn abstain_class(&self) -> Option<usize> {
        match self {
            Self::Single(_) => None,
            Self::Ensemble(e) => e.abstain_class(),
        }
    }
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
    pub fn read(path: &Path) -> Result<Self, EnsembleError> {
        let err = |reason: String| EnsembleError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let cfg: Self = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        if cfg.members.is_empty() {
            return Err(err("no [[member]] tables".into()));
        }
        Ok(cfg)
    }

    /// The training config of member `i`: `base` with the member's keys over it, its own run
    /// directory, and (Fashion-MNIST) a train limit that keeps the validation split unseen.
    pub fn member_config(&self, i: usize) -> Result<crate::train::TrainConfig, EnsembleError> {
        let mut table = self.base.clone();
        table.extend(self.members[i].clone());
        let mut cfg = crate::train::TrainConfig::from_toml_table(table)
            .map_err(|e| EnsembleError::Invalid(format!("member {i}: {e}")))?;
        cfg.out = self.out.join(format!("member-{i}-{}", mode_name(&cfg)));
        if cfg.dataset == crate::train::DatasetChoice::FashionMnist {
            let cap = FASHION_TRAIN.saturating_sub(self.validation_size);
            match cfg.train_limit {
                Some(l) if l > cap => {
                    return Err(EnsembleError::Invalid(format!(
                        "member {i}: train_limit {l} overlaps the validation split (the last {} training images); use at most {cap}",
                        self.validation_size
                    )));
                }
                None => cfg.train_limit = Some(cap),
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
    dataset: crate::train::DatasetChoice,
    data_dir: Option<&Path>,
    size: usize,
    seed: u64,
    device: &Device,
) -> Result<Validation, crate::data::DataError> {
    Ok(match dataset {
        crate::train::DatasetChoice::FashionMnist => {
            let dir = crate::data::resolve_data_dir(data_dir)?;
            let train = crate::data::load_split(&dir, crate::data::Split::Train, device)?;
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
        crate::train::DatasetChoice::Synthetic => Validation {
            set: crate::data::synthetic(size, seed ^ 0x7a11d, device),
            description: format!("validation accuracy on {size} fresh SYNTHETIC images"),
            fashion_start: None,
        },
    })
}

fn mode_name(cfg: &crate::train::TrainConfig) -> String {
    serde_json::to_value(cfg.mode)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Trains every member of `cfg` (a member whose `model.safetensors` exists is kept; one with
/// a checkpoint resumes), fits the weights and writes `OUT/ensemble.toml`. Returns its path.
pub fn train_members(cfg: &EnsembleTrainConfig) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let configs = (0..cfg.members.len())
        .map(|i| cfg.member_config(i))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, member) in configs.iter().enumerate() {
        let model = member.model_path();
        if model.exists() {
            eprintln!(
                "member {i}: {} exists, kept (delete it to retrain)",
                model.display()
            );
            continue;
        }
        eprintln!(
            "member {i}: training {} (mode {}, seed {}) into {}",
            member.arch,
            mode_name(member),
            member.seed,
            member.out.display()
        );
        let resume = member.checkpoint_dir().exists();
        crate::train::train(member, resume)?;
    }
    let device = crate::device::choose(configs[0].device)?.device;
    let models: Vec<(PathBuf, Option<Arch>)> =
        configs.iter().map(|c| (c.model_path(), None)).collect();
    let out = cfg.out.join("ensemble.toml");
    let members = models
        .iter()
        .map(|(p, _)| store::load_model(p, None, &device).map(|l| l.model))
        .collect::<Result<Vec<_>, _>>()?;
    let (weights, accuracy, from) = if cfg.fit_weights {
        let first = &configs[0];
        let validation = validation_split(
            first.dataset,
            first.data_dir.as_deref(),
            cfg.validation_size,
            first.seed,
            &device,
        )?;
        let (w, a) = fit_weights(&members, &validation.set);
        (w, Some(a), validation.description)
    } else {
        (vec![1.0; members.len()], None, "equal".to_string())
    };
    let mut manifest = Manifest::describe(&out, &models, &weights, cfg.strategy, &from)?;
    if let Some(accuracy) = accuracy {
        for (m, a) in manifest.members.iter_mut().zip(accuracy) {
            m.validation_accuracy = Some(a);
        }
    }
    manifest.write(&out)?;
    Ok(out)
}
