//! Training: the configuration (TOML, every key also a CLI flag) and the loop.
//!
//! A run writes into its output directory:
//! - `model.safetensors`: the final model, PyTorch layout, with config and summary metadata;
//! - `metrics.jsonl`: one JSON object per epoch;
//! - `checkpoint/`: model and optimiser state after the last finished epoch, for `--resume`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig,
};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Distribution, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::attack::{self, AttackLoss, Norm, Pgd};
use crate::data::{self, DataError, ImageSet, Split};
use crate::device::{self, DeviceChoice};
use crate::eval;
use crate::model::{Arch, Classifier, ModelSpec};
use crate::store::{self, StoreError, write_atomic};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("bad setting: {0}")]
    Invalid(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("device: {0}")]
    Device(String),
    #[error("{path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error(
        "training diverged at epoch {epoch}: the loss is {loss} (NaN or infinite); lower the learning rate. The last good checkpoint is kept in {checkpoint}"
    )]
    Diverged {
        epoch: usize,
        loss: f64,
        checkpoint: PathBuf,
    },
}

/// Which images to train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetChoice {
    /// Fashion-MNIST IDX files (see `data_dir`).
    FashionMnist,
    /// A seeded SYNTHETIC set of bars (for tests and demos).
    Synthetic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    /// SGD with (heavy-ball) momentum.
    Sgd,
}

/// What the model is trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TrainMode {
    /// Clean images.
    Standard,
    /// Gaussian noise augmentation N(0, sigma²) in pixel space, fresh per batch (Cohen et al.
    /// 2019): the base classifier randomized smoothing needs.
    Gaussian,
    /// Wong, Rice & Kolter 2020 ("Fast is better than free"): FGSM from a uniform random start
    /// in the L∞ ball, step 1.25·epsilon.
    FgsmRs,
    /// Madry et al. 2018: train on L∞ PGD examples (random start, `attack_steps` steps).
    Pgd,
    /// Zhang et al. 2019: cross-entropy on clean images + trades_beta · KL(clean ‖ adversarial).
    Trades,
    /// Epsilon ramps from 0 to `epsilon` over `ramp_epochs`; after each epoch FGSM-RS and
    /// PGD-k are measured on held-out images and the next epoch trains against the one that
    /// breaks the model most.
    Adaptive,
}

/// The attack that makes an epoch's training examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochAttack {
    FgsmRs,
    Pgd,
}

impl EpochAttack {
    fn name(self, cfg: &TrainConfig) -> String {
        match self {
            EpochAttack::FgsmRs => "fgsm-rs".into(),
            EpochAttack::Pgd => format!("pgd{}", cfg.attack_steps),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        if name == "fgsm-rs" {
            Some(EpochAttack::FgsmRs)
        } else if name.starts_with("pgd") {
            Some(EpochAttack::Pgd)
        } else {
            None
        }
    }

    /// The attack at radius `epsilon`; step sizes scale with it.
    fn at(self, cfg: &TrainConfig, epsilon: f64) -> Pgd {
        let scale = epsilon / cfg.epsilon;
        let pgd = Pgd {
            norm: Norm::Linf,
            epsilon,
            alpha: cfg.attack_alpha() * scale,
            steps: cfg.attack_steps,
            random_start: true,
            loss: AttackLoss::Ce,
        };
        match self {
            EpochAttack::FgsmRs => Pgd {
                steps: 1,
                alpha: cfg.attack_alpha.map_or(1.25 * epsilon, |a| a * scale),
                ..pgd
            },
            EpochAttack::Pgd => pgd,
        }
    }
}

impl TrainMode {
    pub fn adversarial(self) -> bool {
        matches!(
            self,
            TrainMode::FgsmRs | TrainMode::Pgd | TrainMode::Trades | TrainMode::Adaptive
        )
    }
}

/// Learning-rate schedule over the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Cosine decay from `lr` to 0 over all steps.
    Cosine,
    /// Multiply by `gamma` every `step_epochs` epochs.
    Step,
}

/// A training run. Every field is a TOML key of the same name and a `--kebab-case` flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub arch: Arch,
    pub mode: TrainMode,
    /// Noise level for `mode = "gaussian"`: standard deviation in pixel units (inputs in [0,1]).
    pub sigma: f64,
    /// L∞ radius for adversarial modes, pixel units.
    pub epsilon: f64,
    /// PGD / TRADES steps per batch.
    pub attack_steps: usize,
    /// Attack step size; unset: 1.25·epsilon for fgsm-rs, 2.5·epsilon/attack_steps otherwise.
    pub attack_alpha: Option<f64>,
    /// TRADES weight of the KL term.
    pub trades_beta: f64,
    /// Adversarial modes: PGD-10 robust accuracy on this many evaluation images each epoch.
    pub robust_eval_size: usize,
    /// Adaptive mode: epochs over which epsilon ramps up to its target.
    pub ramp_epochs: usize,
    /// Single-step epochs (fgsm-rs, adaptive on FGSM): if PGD robust accuracy falls below
    /// guard_ratio × its best so far while FGSM accuracy stays 10 points above it
    /// (catastrophic overfitting), roll back to the last checkpoint and continue with PGD.
    /// 0 disables the guard.
    pub guard_ratio: f64,
    pub dataset: DatasetChoice,
    /// Fashion-MNIST directory; unset: $RAMPART_DATA, datasets/fashion-mnist, Debian's path.
    pub data_dir: Option<PathBuf>,
    /// Train on the first N training images only.
    pub train_limit: Option<usize>,
    /// Evaluate each epoch on the first N test images only.
    pub eval_limit: Option<usize>,
    /// Size of the synthetic training set (the synthetic test set is a quarter of it).
    pub synthetic_size: usize,
    /// Normalise inputs inside the model with the Fashion-MNIST mean and std.
    pub normalize: bool,
    pub optimizer: OptimizerKind,
    /// Learning rate (peak for schedules).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Step schedule: epochs between decays.
    pub step_epochs: usize,
    /// Step schedule: decay factor.
    pub gamma: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub seed: u64,
    pub device: DeviceChoice,
    /// Run directory.
    pub out: PathBuf,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Cnn,
            mode: TrainMode::Standard,
            sigma: 0.25,
            epsilon: 0.1,
            attack_steps: 7,
            attack_alpha: None,
            trades_beta: 6.0,
            robust_eval_size: 500,
            ramp_epochs: 3,
            guard_ratio: 0.5,
            dataset: DatasetChoice::FashionMnist,
            data_dir: None,
            train_limit: None,
            eval_limit: None,
            synthetic_size: 2000,
            normalize: true,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            step_epochs: 10,
            gamma: 0.1,
            batch_size: 128,
            epochs: 2,
            seed: 0,
            device: DeviceChoice::Auto,
            out: PathBuf::from("runs/model"),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML config; unknown keys and bad values are errors naming the file.
    pub fn from_toml_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            path: path.into(),
            reason: e.to_string(),
        })?;
        Self::from_toml_table(toml::from_str(&text).map_err(|e| TrainError::Config {
            path: path.into(),
            reason: e.to_string(),
        })?)
        .map_err(|reason| TrainError::Config {
            path: path.into(),
            reason,
        })
    }

    pub fn from_toml_table(table: toml::Table) -> Result<Self, String> {
        let cfg: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a positive number, got {v}"))
            }
        };
        positive("lr", self.lr)?;
        if self.mode == TrainMode::Gaussian {
            positive("sigma", self.sigma)?;
        }
        if self.mode.adversarial() {
            positive("epsilon", self.epsilon)?;
            positive("attack_alpha", self.attack_alpha())?;
            if self.attack_steps == 0 {
                return Err("attack_steps must be at least 1".into());
            }
            if self.mode == TrainMode::Adaptive && self.ramp_epochs == 0 {
                return Err("ramp_epochs must be at least 1".into());
            }
            if !(self.guard_ratio.is_finite() && self.guard_ratio >= 0.0) {
                return Err(format!(
                    "guard_ratio must be >= 0, got {}",
                    self.guard_ratio
                ));
            }
            if !(self.trades_beta.is_finite() && self.trades_beta >= 0.0) {
                return Err(format!(
                    "trades_beta must be >= 0, got {}",
                    self.trades_beta
                ));
            }
        }
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!(
                "weight_decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if self.schedule == Schedule::Step {
            positive("gamma", self.gamma)?;
            if self.step_epochs == 0 {
                return Err("step_epochs must be at least 1".into());
            }
        }
        Ok(())
    }

    /// The attack step size in effect.
    pub fn attack_alpha(&self) -> f64 {
        self.attack_alpha.unwrap_or(match self.mode {
            TrainMode::FgsmRs => 1.25 * self.epsilon,
            _ => 2.5 * self.epsilon / self.attack_steps as f64,
        })
    }

    /// Epsilon of epoch `epoch` (0-based): ramped in adaptive mode, else constant.
    fn epsilon_at(&self, epoch: usize) -> f64 {
        match self.mode {
            TrainMode::Adaptive => {
                self.epsilon * ((epoch + 1) as f64 / self.ramp_epochs as f64).min(1.0)
            }
            _ => self.epsilon,
        }
    }

    /// Learning rate at `epoch` (0-based) after `progress` in [0, 1) of the whole run.
    pub fn lr_at(&self, epoch: usize, progress: f64) -> f64 {
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Schedule::Step => self.lr * self.gamma.powi((epoch / self.step_epochs) as i32),
        }
    }

    pub fn spec(&self) -> ModelSpec {
        if self.normalize {
            ModelSpec::fashion_normalised(self.arch)
        } else {
            ModelSpec::new(self.arch)
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
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
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
    /// `robust_eval_size` evaluation images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robust_accuracy: Option<f64>,
    /// Adaptive mode: robust accuracy under each candidate attack at the next epoch's epsilon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<BTreeMap<String, f64>>,
    /// The attack the next epoch trains against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attack: Option<String>,
    /// Something the run did on its own, such as the overfitting guard's rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// What `checkpoint/state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    epochs_done: usize,
    config: TrainConfig,
    history: Vec<EpochMetrics>,
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

/// Training and evaluation sets for a config, on `device`.
pub fn load_sets(cfg: &TrainConfig, device: &Device) -> Result<(ImageSet, ImageSet), TrainError> {
    Ok(match cfg.dataset {
        DatasetChoice::FashionMnist => {
            let dir = data::resolve_data_dir(cfg.data_dir.as_deref())?;
            (
                data::load_split(&dir, Split::Train, device)?.take(cfg.train_limit),
                data::load_split(&dir, Split::Test, device)?.take(cfg.eval_limit),
            )
        }
        DatasetChoice::Synthetic => (
            data::synthetic(cfg.synthetic_size, cfg.seed, device).take(cfg.train_limit),
            data::synthetic((cfg.synthetic_size / 4).max(1), cfg.seed ^ 0x7e57, device)
                .take(cfg.eval_limit),
        ),
    })
}

fn build_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    let decay = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32));
    match cfg.optimizer {
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(decay).init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_weight_decay(decay)
            .with_momentum((cfg.momentum > 0.0).then(|| MomentumConfig {
                momentum: cfg.momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .init(),
    }
}

/// Trains per `cfg`, resuming from the run's checkpoint when `resume` is set.
pub fn train(cfg: &TrainConfig, resume: bool) -> Result<TrainReport, TrainError> {
    cfg.validate().map_err(TrainError::Invalid)?;
    let chosen = device::choose(cfg.device).map_err(TrainError::Device)?;
    let device = chosen.device.clone();
    eprintln!("device: {}", chosen.description);
    let (train_set, eval_set) = load_sets(cfg, &device)?;
    eprintln!(
        "data: {} training images from {}, {} evaluation images",
        train_set.len(),
        train_set.name,
        eval_set.len()
    );
    if train_set.is_empty() || eval_set.is_empty() {
        return Err(TrainError::Invalid(
            "empty training or evaluation set".into(),
        ));
    }

    let spec = cfg.spec();
    let ad = device.clone().autodiff();
    device.seed(cfg.seed);
    let mut model = spec.init(&ad);
    let mut optim = build_optimizer(cfg);
    let mut history = Vec::new();
    let ckpt = cfg.checkpoint_dir();
    if resume {
        let state = read_checkpoint(&ckpt, cfg)?;
        model = load_checkpoint_model(model, &ckpt)?;
        optim = optim
            .load(ckpt.join("optim.bpk"))
            .map_err(|e| ckpt_err(&ckpt.join("optim.bpk"), e))?;
        history = state.history;
        eprintln!(
            "resuming {} after epoch {}",
            ckpt.display(),
            state.epochs_done
        );
    } else if ckpt.exists() {
        return Err(TrainError::Checkpoint {
            path: ckpt,
            reason: "a checkpoint from an earlier run is here: pass --resume to continue it, or choose another --out".into(),
        });
    }
    rewrite_metrics(&cfg.metrics_path(), &history)?;

    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let n = train_set.len();
    let batches = n.div_ceil(cfg.batch_size);
    let total_steps = (cfg.epochs * batches) as f64;
    // The attack of the next epoch: what the last finished epoch chose, else the mode's own.
    let mut attack = history
        .last()
        .and_then(|m| m.next_attack.as_deref())
        .and_then(EpochAttack::parse)
        .or(match cfg.mode {
            TrainMode::FgsmRs | TrainMode::Adaptive => Some(EpochAttack::FgsmRs),
            TrainMode::Pgd => Some(EpochAttack::Pgd),
            _ => None,
        });
    let mut event = None;
    while history.len() < cfg.epochs {
        let epoch = history.len();
        let epsilon = cfg.epsilon_at(epoch);
        let started = Instant::now();
        // Every epoch draws from its own seed: a resumed run replays exactly.
        device.seed(cfg.seed.wrapping_add(1 + epoch as u64));
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(cfg.seed ^ (epoch as u64) << 32));
        let bar = progress_bar(batches as u64, epoch + 1, cfg.epochs);
        let mut loss_sum = Tensor::<1>::zeros([1], &device);
        let mut correct = Tensor::<1>::zeros([1], &device);
        let mut lr = cfg.lr;
        let training_attack = attack.map(|a| a.at(cfg, epsilon));
        for (b, idx) in order.chunks(cfg.batch_size).enumerate() {
            lr = cfg.lr_at(epoch, (epoch * batches + b) as f64 / total_steps);
            let (x, y) = train_set.gather(idx);
            let (logits, loss) = match cfg.mode {
                TrainMode::Trades => {
                    let alpha = cfg.attack_alpha();
                    let x_adv = attack::trades_perturb(
                        &model.valid(),
                        &x,
                        epsilon,
                        alpha,
                        cfg.attack_steps,
                    );
                    let clean = model.forward(x.autodiff());
                    let adv = model.forward(x_adv.autodiff());
                    let kl = attack::kl_divergence(clean.clone(), adv).mean() * cfg.trades_beta;
                    let loss = loss_fn.forward(clean.clone(), y.clone().autodiff()) + kl;
                    (clean, loss)
                }
                mode => {
                    let x = match (mode, &training_attack) {
                        (TrainMode::Gaussian, _) => {
                            let noise = x.random_like(Distribution::Normal(0.0, cfg.sigma));
                            x + noise
                        }
                        (_, Some(a)) => a.perturb(&model.valid(), &x, &y, None),
                        _ => x,
                    };
                    let logits = model.forward(x.autodiff());
                    let loss = loss_fn.forward(logits.clone(), y.clone().autodiff());
                    (logits, loss)
                }
            };
            loss_sum = loss_sum + loss.clone().inner() * idx.len() as f32;
            correct = correct
                + logits
                    .inner()
                    .argmax(1)
                    .squeeze_dim::<1>(1)
                    .equal(y.clone())
                    .float()
                    .sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            bar.inc(1);
            if b % 20 == 19 || b + 1 == batches {
                let seen = ((b + 1) * cfg.batch_size).min(n) as f64;
                let l = loss_sum.clone().into_scalar::<f32>() as f64 / seen;
                let a = correct.clone().into_scalar::<f32>() as f64 / seen;
                let ips = seen / started.elapsed().as_secs_f64();
                bar.set_message(format!("loss {l:.4} acc {:.2}% {ips:.0} img/s", 100.0 * a));
            }
        }
        bar.finish_and_clear();
        let train_seconds = started.elapsed().as_secs_f64();
        let train_loss = loss_sum.into_scalar::<f32>() as f64 / n as f64;
        let train_accuracy = correct.into_scalar::<f32>() as f64 / n as f64;
        if !train_loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch: epoch + 1,
                loss: train_loss,
                checkpoint: ckpt,
            });
        }
        let valid = model.valid();
        let report = eval::evaluate(&valid, &eval_set, 512);
        let held_out = cfg.robust_eval_size.min(eval_set.len());
        let measure = |a: Pgd| robust_accuracy(&valid, &eval_set, held_out, a);
        let robust = (cfg.mode.adversarial() && held_out > 0).then(|| measure(pgd10(epsilon)));

        // Catastrophic overfitting: single-step training whose PGD accuracy collapses while
        // FGSM accuracy stays up. Roll back and redo the epoch against PGD.
        if let (Some(EpochAttack::FgsmRs), Some(pgd_acc)) = (attack, robust) {
            let best = history
                .iter()
                .filter_map(|m| m.robust_accuracy)
                .fold(0.0, f64::max);
            let fgsm_acc = measure(EpochAttack::FgsmRs.at(cfg, epsilon));
            if cfg.guard_ratio > 0.0
                && best > 0.0
                && pgd_acc < cfg.guard_ratio * best
                && fgsm_acc > pgd_acc + 0.1
            {
                let note = format!(
                    "overfitting guard: epoch {} PGD accuracy {:.1}% (best {:.1}%) with FGSM accuracy {:.1}%; rolled back to epoch {} and continuing with {}",
                    epoch + 1,
                    100.0 * pgd_acc,
                    100.0 * best,
                    100.0 * fgsm_acc,
                    epoch,
                    EpochAttack::Pgd.name(cfg)
                );
                eprintln!("{note}");
                model = load_checkpoint_model(spec.init(&ad), &ckpt)?;
                optim = build_optimizer(cfg)
                    .load(ckpt.join("optim.bpk"))
                    .map_err(|e| ckpt_err(&ckpt.join("optim.bpk"), e))?;
                attack = Some(EpochAttack::Pgd);
                event = Some(note);
                continue;
            }
        }
        // Adaptive: the candidate that leaves the lowest robust accuracy at the next epsilon.
        let candidates = (cfg.mode == TrainMode::Adaptive && held_out > 0).then(|| {
            let next = cfg.epsilon_at(epoch + 1);
            [EpochAttack::FgsmRs, EpochAttack::Pgd]
                .into_iter()
                .map(|a| (a.name(cfg), measure(a.at(cfg, next))))
                .collect::<BTreeMap<String, f64>>()
        });
        let this_attack = attack;
        if let Some(c) = &candidates {
            // min_by keeps the first of equal minima: ties go to the cheaper single-step
            // attack (fgsm-rs comes first in name order).
            let (name, _) = c
                .iter()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .expect("two candidates");
            attack = EpochAttack::parse(name);
        }
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss,
            train_accuracy,
            eval_accuracy: report.accuracy,
            eval_examples: report.examples,
            images_per_sec: n as f64 / train_seconds,
            seconds: started.elapsed().as_secs_f64(),
            epsilon: cfg.mode.adversarial().then_some(epsilon),
            attack: match cfg.mode {
                TrainMode::Trades => Some(format!("trades-kl-pgd{}", cfg.attack_steps)),
                _ => this_attack.map(|a| a.name(cfg)),
            },
            robust_accuracy: robust,
            candidates,
            next_attack: attack.map(|a| a.name(cfg)),
            event: event.take(),
        };
        println!(
            "epoch {}/{}: loss {:.4}  train acc {:.2}%  eval acc {:.2}% ({} images)  {:.0} img/s  {:.1}s",
            m.epoch,
            cfg.epochs,
            m.train_loss,
            100.0 * m.train_accuracy,
            100.0 * m.eval_accuracy,
            m.eval_examples,
            m.images_per_sec,
            m.seconds
        );
        if let Some(r) = m.robust_accuracy {
            println!(
                "          {}: epsilon {epsilon:.4}, PGD-10 robust accuracy {:.2}% ({held_out} images){}",
                m.attack.as_deref().unwrap_or(""),
                100.0 * r,
                m.candidates
                    .as_ref()
                    .map(|c| format!(
                        "; next epoch: {} ({c:?})",
                        m.next_attack.as_deref().unwrap_or("")
                    ))
                    .unwrap_or_default()
            );
        }
        history.push(m);
        write_checkpoint(&ckpt, &model, &optim, cfg, &history)?;
        rewrite_metrics(&cfg.metrics_path(), &history)?;
    }

    let model_path = cfg.model_path();
    let summary = serde_json::json!({
        "dataset": train_set.name,
        "train_examples": n,
        "device": chosen.description,
        "epochs": history.len(),
        "final_eval_accuracy": history.last().map(|m| m.eval_accuracy),
        "eval_examples": history.last().map(|m| m.eval_examples),
        "train_seconds": history.iter().map(|m| m.seconds).sum::<f64>(),
    });
    let mut meta = BTreeMap::new();
    meta.insert("rampart.config".into(), serde_json::to_string(cfg).unwrap());
    meta.insert("rampart.summary".into(), summary.to_string());
    store::save_model(&model.valid(), &spec, &meta, &model_path)?;
    Ok(TrainReport {
        model_path,
        history,
        device: chosen.description,
        train_examples: n,
        dataset: train_set.name,
    })
}

/// L∞ PGD-10 with random start and step epsilon/4: the per-epoch robustness check.
fn pgd10(epsilon: f64) -> Pgd {
    Pgd {
        norm: Norm::Linf,
        epsilon,
        alpha: epsilon / 4.0,
        steps: 10,
        random_start: true,
        loss: AttackLoss::Ce,
    }
}

/// Accuracy under `attack` on the first `size` images.
fn robust_accuracy(model: &Classifier, data: &ImageSet, size: usize, attack: Pgd) -> f64 {
    let n = size.min(data.len());
    let mut tally = attack::Tally::new(&data.images.device());
    for start in (0..n).step_by(256) {
        let (x, y) = data.range(start, (start + 256).min(n));
        tally.add(&attack::worst_case(model, &x, &y, &[attack], 1, None));
    }
    tally.read().1 as f64 / n.max(1) as f64
}

/// The per-epoch progress bar over `len` batches (also used by the fusion trainer).
pub(crate) fn progress_bar(len: u64, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} batches {msg} ({elapsed} < {eta})",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {epoch}/{epochs}"));
    bar
}

fn ckpt_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn rewrite_metrics(path: &Path, history: &[EpochMetrics]) -> Result<(), TrainError> {
    store::write_jsonl(path, history).map_err(|e| ckpt_err(path, e))
}

/// Writes the checkpoint into `dir.tmp`, then swaps it in: the previous checkpoint survives
/// any failure before the swap, and is moved aside (`dir.old`) only for the instant of it.
fn write_checkpoint(
    dir: &Path,
    model: &Classifier,
    optim: &ModuleOptimizer,
    cfg: &TrainConfig,
    history: &[EpochMetrics],
) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ckpt_err(&tmp, e))?;
    let mut store = BurnpackStore::from_file(tmp.join("model.bpk")).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| ckpt_err(&tmp.join("model.bpk"), e))?;
    optim
        .save(tmp.join("optim.bpk"))
        .map_err(|e| ckpt_err(&tmp.join("optim.bpk"), e))?;
    let state = CheckpointState {
        epochs_done: history.len(),
        config: cfg.clone(),
        history: history.to_vec(),
    };
    write_atomic(
        &tmp.join("state.json"),
        serde_json::to_string_pretty(&state).unwrap().as_bytes(),
    )
    .map_err(|e| ckpt_err(&tmp, e))?;
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| ckpt_err(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| ckpt_err(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Reads `state.json`, falling back to `checkpoint.old` if a swap was interrupted, and checks
/// that the checkpoint belongs to this config (only `epochs` and `device` may change).
fn read_checkpoint(dir: &Path, cfg: &TrainConfig) -> Result<CheckpointState, TrainError> {
    let old = dir.with_extension("old");
    if !dir.exists() && old.exists() {
        std::fs::rename(&old, dir).map_err(|e| ckpt_err(dir, e))?;
    }
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ckpt_err(
            &path,
            format!("{e}; nothing to resume (train without --resume to start fresh)"),
        )
    })?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| ckpt_err(&path, e))?;
    let comparable = |c: &TrainConfig| TrainConfig {
        epochs: 0,
        device: DeviceChoice::Auto,
        ..c.clone()
    };
    if comparable(&state.config) != comparable(cfg) {
        return Err(ckpt_err(
            &path,
            "the checkpoint was made with a different config (only epochs and device may change on --resume)",
        ));
    }
    if state.epochs_done >= cfg.epochs {
        return Err(ckpt_err(
            &path,
            format!(
                "the run already finished {} of {} epochs; raise --epochs to train further",
                state.epochs_done, cfg.epochs
            ),
        ));
    }
    if state.history.len() != state.epochs_done {
        return Err(ckpt_err(&path, "history and epoch count disagree"));
    }
    Ok(state)
}

fn load_checkpoint_model(mut model: Classifier, dir: &Path) -> Result<Classifier, TrainError> {
    let path = dir.join("model.bpk");
    let mut store = BurnpackStore::from_file(&path);
    let result = model
        .load_from(&mut store)
        .map_err(|e| ckpt_err(&path, e))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(ckpt_err(
            &path,
            format!(
                "does not fit the model: {:?} {:?}",
                result.errors, result.missing
            ),
        ));
    }
    Ok(model)
}
