//! One objective per training mode: what a batch becomes before the forward pass, and the loss.
//!
//! - [`Clean`]: cross-entropy on the batch (`standard`).
//! - [`Noise`]: Gaussian noise on the perturbable input (`gaussian`).
//! - [`Adversarial`]: examples from the epoch's attack, FGSM-RS or PGD (`fgsm-rs`, `pgd`,
//!   `adaptive`).
//! - [`TradesLoss`]: clean cross-entropy + beta · KL(clean ‖ adversarial) (`trades`).
//! - [`EmbeddingPgd`]: L2 PGD on a fusion model's word and byte embeddings
//!   (`pgd-embeddings`).
//!
//! Attacks run on an inference-mode copy of the model ([`burn::module::Module::valid`]), so
//! they neither train it nor touch its statistics.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Distribution, Int, Tensor};

use super::TrainError;
use super::config::Mode;
use super::policy::EpochAttack;
use super::task::{FusionTask, Task, to_autodiff};
use crate::attack::loss::kl_divergence;
use crate::attack::{Attack, Norm, Pgd, Trades};
use crate::classifier::fusion::EmbeddingView;
use crate::model::{ImageNet, Modality};

/// What changes from epoch to epoch: the radius (ramped in adaptive mode) and the attack the
/// epoch trains against.
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    pub epsilon: Option<f64>,
    pub attack: Option<Pgd>,
}

/// The logits of the training forward pass (for the running accuracy) and the loss to
/// descend (both on the autodiff device).
pub struct Step {
    pub logits: Tensor<2>,
    pub loss: Tensor<1>,
}

/// A training mode's loss on a batch.
pub trait Objective<T: Task<D>, const D: usize> {
    fn step(&self, task: &T, model: &T::Model, batch: &T::Batch, epoch: &Epoch) -> Step;
}

/// Mean cross-entropy of `logits` against `labels` (moved to the autodiff device).
pub fn cross_entropy(logits: Tensor<2>, labels: &Tensor<1, Int>) -> Tensor<1> {
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, labels.clone().autodiff())
}

fn clean_step<T: Task<D>, const D: usize>(task: &T, model: &T::Model, batch: &T::Batch) -> Step {
    let logits = task.forward(model, batch);
    let loss = cross_entropy(logits.clone(), &task.labels(batch));
    Step { logits, loss }
}

/// Cross-entropy on the batch as it is.
pub struct Clean;

impl<T: Task<D>, const D: usize> Objective<T, D> for Clean {
    fn step(&self, task: &T, model: &T::Model, batch: &T::Batch, _: &Epoch) -> Step {
        clean_step(task, model, batch)
    }
}

/// Gaussian noise of standard deviation `sigma` on the perturbable input, fresh per batch.
pub struct Noise {
    pub sigma: f64,
}

impl<T: Task<D>, const D: usize> Objective<T, D> for Noise {
    fn step(&self, task: &T, model: &T::Model, batch: &T::Batch, _: &Epoch) -> Step {
        let x = task.perturbable(batch);
        let noisy = x.clone() + x.random_like(Distribution::Normal(0.0, self.sigma));
        clean_step(task, model, &task.perturbed(batch, noisy))
    }
}

/// Cross-entropy on the epoch attack's adversarial examples.
pub struct Adversarial;

impl<T: Task<D>, const D: usize> Objective<T, D> for Adversarial {
    fn step(&self, task: &T, model: &T::Model, batch: &T::Batch, epoch: &Epoch) -> Step {
        let Some(attack) = epoch.attack else {
            return clean_step(task, model, batch);
        };
        let (view, input) = task.view(&model.valid(), batch);
        let x_adv = attack.perturb(&view, &input, &task.labels(batch), None);
        clean_step(task, model, &task.perturbed(batch, x_adv))
    }
}

/// TRADES: clean cross-entropy + beta · KL(f(x) ‖ f(x')), x' from the KL attack.
pub struct TradesLoss {
    pub attack: Trades,
    pub beta: f64,
}

impl<T: Task<D>, const D: usize> Objective<T, D> for TradesLoss {
    fn step(&self, task: &T, model: &T::Model, batch: &T::Batch, _: &Epoch) -> Step {
        let labels = task.labels(batch);
        let (view, input) = task.view(&model.valid(), batch);
        let x_adv = self.attack.perturb(&view, &input, &labels, None);
        let clean = task.forward(model, batch);
        let adv = task.forward(model, &task.perturbed(batch, x_adv));
        let kl = kl_divergence(clean.clone(), adv).mean() * self.beta;
        let loss = cross_entropy(clean.clone(), &labels) + kl;
        Step {
            logits: clean,
            loss,
        }
    }
}

/// Fusion models: adversarial offsets on the word and byte embeddings, found on the frozen
/// model one sequence modality at a time (the others fixed) and added to the trainable
/// embeddings so the embedding tables still learn.
pub struct EmbeddingPgd {
    pub attack: Pgd,
}

impl Objective<FusionTask, 2> for EmbeddingPgd {
    fn step(
        &self,
        task: &FusionTask,
        model: &crate::model::FusionModel,
        batch: &crate::data::records::SecuritySet,
        _: &Epoch,
    ) -> Step {
        let valid = model.valid();
        let mut parts = model.parts(&to_autodiff(batch));
        for modality in [Modality::Text, Modality::Bytes] {
            let view = EmbeddingView::new(&valid, batch, modality);
            let Some(clean) = view.input() else { continue };
            let adv = self.attack.perturb(&view, &clean, &batch.labels, None);
            let delta = (adv - clean.x).autodiff();
            match modality {
                Modality::Text => parts.text = parts.text.map(|e| e + delta),
                _ => parts.bytes = parts.bytes.map(|e| e + delta),
            }
        }
        let logits = model.forward_parts(parts);
        let loss = cross_entropy(logits.clone(), &task.labels(batch));
        Step { logits, loss }
    }
}

/// Defensive distillation: cross-entropy between the student's softmax at temperature T and
/// the teacher's soft labels, its softmax at the temperature it was trained at, on the same
/// clean batch (Papernot et al.'s loss, unscaled: its gradients are about 1/T of ordinary
/// training's, which Adam absorbs and plain SGD needs a larger learning rate for).
pub struct Distillation {
    /// The teacher, inference mode on the training device (no autodiff).
    pub teacher: ImageNet,
    pub temperature: f64,
    pub teacher_temperature: f64,
}

impl<T: Task<4>> Objective<T, 4> for Distillation {
    fn step(&self, task: &T, model: &T::Model, batch: &T::Batch, _: &Epoch) -> Step {
        let x = task.perturbable(batch);
        let soft = softmax(self.teacher.forward(x) / self.teacher_temperature, 1);
        let logits = task.forward(model, batch);
        let log_p = log_softmax(logits.clone() / self.temperature, 1);
        let loss = (log_p * soft.autodiff()).sum_dim(1).mean().neg();
        Step { logits, loss }
    }
}

/// The objective of the modes every task supports; `None` for task-specific ones.
pub fn generic<T: Task<D>, const D: usize>(
    mode: &Mode,
) -> Result<Option<Box<dyn Objective<T, D>>>, TrainError> {
    let invalid = |e: crate::attack::AttackError| TrainError::Invalid(e.to_string());
    Ok(Some(match mode {
        Mode::Standard => Box::new(Clean),
        Mode::Gaussian(g) => Box::new(Noise { sigma: g.sigma }),
        Mode::FgsmRs(_) | Mode::Pgd(_) | Mode::Adaptive(_) => Box::new(Adversarial),
        Mode::Trades(t) => {
            let mut attack = Trades::new(t.epsilon, t.steps).map_err(invalid)?;
            if let Some(a) = t.alpha {
                attack = attack.with_alpha(a).map_err(invalid)?;
            }
            Box::new(TradesLoss {
                attack,
                beta: t.beta,
            })
        }
        Mode::PgdEmbeddings(_) | Mode::Distill(_) => return Ok(None),
    }))
}

/// The objective of `mode` for fusion models (every generic mode, plus `pgd-embeddings`).
pub fn for_fusion(mode: &Mode) -> Result<Box<dyn Objective<FusionTask, 2>>, TrainError> {
    if let Mode::PgdEmbeddings(m) = mode {
        let attack = Pgd::new(Norm::L2, m.epsilon, m.steps)
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        return Ok(Box::new(EmbeddingPgd { attack }));
    }
    generic(mode)?
        .ok_or_else(|| TrainError::Invalid(format!("mode {} is not supported", mode.name())))
}

/// The objective of `mode` for image models; distillation's teacher is loaded on `device`
/// and must have `classes` classes.
pub fn for_images<T: Task<4>>(
    mode: &Mode,
    device: &Device,
    classes: usize,
) -> Result<Box<dyn Objective<T, 4>>, TrainError> {
    if let Mode::Distill(d) = mode {
        let (teacher, _, _) = crate::artifact::open_image(&d.teacher, None, device)?;
        if teacher.num_classes() != classes {
            return Err(TrainError::Invalid(format!(
                "teacher {} has {} classes, the model {classes}",
                d.teacher.display(),
                teacher.num_classes()
            )));
        }
        return Ok(Box::new(Distillation {
            teacher,
            temperature: d.temperature,
            teacher_temperature: d.teacher_temperature,
        }));
    }
    generic(mode)?.ok_or_else(|| {
        TrainError::Invalid(format!(
            "mode {} is for fusion models; image models train with standard, gaussian, fgsm-rs, pgd, trades, adaptive or distill",
            mode.name()
        ))
    })
}

/// The attack an adversarial epoch starts with: what the last finished epoch chose, else the
/// mode's own.
pub fn first_attack(mode: &Mode, chosen: Option<EpochAttack>) -> Option<EpochAttack> {
    chosen.or(match mode {
        Mode::FgsmRs(_) | Mode::Adaptive(_) => Some(EpochAttack::FgsmRs),
        Mode::Pgd(_) => Some(EpochAttack::Pgd),
        _ => None,
    })
}
