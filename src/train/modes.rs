//! Training modes: what the model is trained on, tagged by `kind`, each with only the keys it
//! uses.

use schemars::JsonSchema;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::sections::{MAX_EPOCHS, count, non_negative, positive};
use crate::attack::pgd::{MAX_STEPS, default_alpha};

/// What the model is trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mode {
    /// Clean inputs.
    Standard,
    /// Gaussian noise N(0, sigma²) on the inputs, fresh per batch (Cohen et al. 2019): the
    /// base classifier randomized smoothing needs.
    Gaussian(Gaussian),
    /// Wong, Rice & Kolter 2020: FGSM from a uniform random start, step 1.25·epsilon, with the
    /// catastrophic-overfitting guard.
    FgsmRs(FgsmRs),
    /// Madry et al. 2018: L∞ PGD examples with a random start.
    Pgd(PgdMode),
    /// Zhang et al. 2019: cross-entropy on clean inputs + beta · KL(clean ‖ adversarial).
    Trades(TradesMode),
    /// Epsilon ramps up over ramp_epochs; after each epoch FGSM-RS and PGD are measured and
    /// the next epoch trains against the one that breaks the model most.
    Adaptive(Adaptive),
    /// Fusion models: L2 PGD on the word and byte embeddings (radius epsilon per example).
    PgdEmbeddings(PgdEmbeddings),
    /// Papernot et al. 2016 defensive distillation: the student's softmax at temperature T trained on the teacher's soft labels (its softmax at the temperature it was trained at); the student is saved as is and read at temperature 1, where its logits are about T times larger.
    Distill(Distill),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Distill {
    /// The teacher: an image model file of the same task.
    pub teacher: PathBuf,
    /// Softmax temperature T the student trains at, > 0 (Papernot et al.: 20 to 100).
    pub temperature: f64,
    /// The temperature the teacher was trained at, > 0: 1 for an ordinary model; T for
    /// Papernot's teacher trained at T (either gives the same soft labels).
    pub teacher_temperature: f64,
}

impl Default for Distill {
    fn default() -> Self {
        Self {
            teacher: PathBuf::new(),
            temperature: 20.0,
            teacher_temperature: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Gaussian {
    /// Noise standard deviation, input units (pixels in [0, 1]; fractions of a network
    /// feature's box).
    pub sigma: f64,
}

impl Default for Gaussian {
    fn default() -> Self {
        Self { sigma: 0.25 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FgsmRs {
    /// L∞ radius, input units.
    pub epsilon: f64,
    /// FGSM step (unset: 1.25·epsilon).
    pub alpha: Option<f64>,
    /// Steps of the PGD the guard falls back to (step 2.5·epsilon/steps).
    pub steps: usize,
    /// Catastrophic-overfitting guard: when PGD robust accuracy falls below guard_ratio × its
    /// best at the same epsilon while FGSM accuracy stays 10 points above it, roll back and
    /// continue with PGD; 0 disables.
    pub guard_ratio: f64,
    /// PGD-10 robust accuracy on this many evaluation examples per epoch (0: none).
    pub robust_eval_size: usize,
}

impl Default for FgsmRs {
    fn default() -> Self {
        Self {
            epsilon: 0.1,
            alpha: None,
            steps: 7,
            guard_ratio: 0.5,
            robust_eval_size: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PgdMode {
    /// L∞ radius, input units.
    pub epsilon: f64,
    /// PGD steps per batch.
    pub steps: usize,
    /// PGD step (unset: 2.5·epsilon/steps).
    pub alpha: Option<f64>,
    /// PGD-10 robust accuracy on this many evaluation examples per epoch (0: none).
    pub robust_eval_size: usize,
}

impl Default for PgdMode {
    fn default() -> Self {
        Self {
            epsilon: 0.1,
            steps: 7,
            alpha: None,
            robust_eval_size: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TradesMode {
    /// L∞ radius, input units.
    pub epsilon: f64,
    /// Steps of the KL attack per batch.
    pub steps: usize,
    /// Attack step (unset: 2.5·epsilon/steps).
    pub alpha: Option<f64>,
    /// Weight of the KL term.
    pub beta: f64,
    /// PGD-10 robust accuracy on this many evaluation examples per epoch (0: none).
    pub robust_eval_size: usize,
}

impl Default for TradesMode {
    fn default() -> Self {
        Self {
            epsilon: 0.1,
            steps: 7,
            alpha: None,
            beta: 6.0,
            robust_eval_size: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Adaptive {
    /// Target L∞ radius, input units.
    pub epsilon: f64,
    /// Steps of the PGD candidate.
    pub steps: usize,
    /// PGD step at the target radius (unset: 2.5·epsilon/steps); scaled with the ramp.
    pub alpha: Option<f64>,
    /// Epochs over which epsilon ramps from epsilon/ramp_epochs up to epsilon.
    pub ramp_epochs: usize,
    /// The catastrophic-overfitting guard for FGSM-RS epochs (see fgsm-rs); 0 disables.
    pub guard_ratio: f64,
    /// Robust accuracy of the candidates on this many evaluation examples per epoch.
    pub robust_eval_size: usize,
}

impl Default for Adaptive {
    fn default() -> Self {
        Self {
            epsilon: 0.1,
            steps: 7,
            alpha: None,
            ramp_epochs: 3,
            guard_ratio: 0.5,
            robust_eval_size: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PgdEmbeddings {
    /// L2 radius per example on each sequence's embeddings, embedding units.
    pub epsilon: f64,
    /// PGD steps per batch (step 2.5·epsilon/steps).
    pub steps: usize,
}

impl Default for PgdEmbeddings {
    fn default() -> Self {
        Self {
            epsilon: 1.0,
            steps: 7,
        }
    }
}

impl Mode {
    /// The mode's name as configs write it.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Gaussian(_) => "gaussian",
            Mode::FgsmRs(_) => "fgsm-rs",
            Mode::Pgd(_) => "pgd",
            Mode::Trades(_) => "trades",
            Mode::Adaptive(_) => "adaptive",
            Mode::PgdEmbeddings(_) => "pgd-embeddings",
            Mode::Distill(_) => "distill",
        }
    }

    /// The L∞ training radius of the adversarial modes on the input box.
    pub fn epsilon(&self) -> Option<f64> {
        match self {
            Mode::FgsmRs(m) => Some(m.epsilon),
            Mode::Pgd(m) => Some(m.epsilon),
            Mode::Trades(m) => Some(m.epsilon),
            Mode::Adaptive(m) => Some(m.epsilon),
            _ => None,
        }
    }

    /// Epsilon of epoch `epoch` (0-based): ramped in adaptive mode, else constant.
    pub fn epsilon_at(&self, epoch: usize) -> Option<f64> {
        match self {
            Mode::Adaptive(m) => {
                Some(m.epsilon * ((epoch + 1) as f64 / m.ramp_epochs as f64).min(1.0))
            }
            _ => self.epsilon(),
        }
    }

    /// Evaluation examples for the per-epoch PGD-10 robust accuracy (0 outside adversarial
    /// modes).
    pub fn robust_eval_size(&self) -> usize {
        match self {
            Mode::FgsmRs(m) => m.robust_eval_size,
            Mode::Pgd(m) => m.robust_eval_size,
            Mode::Trades(m) => m.robust_eval_size,
            Mode::Adaptive(m) => m.robust_eval_size,
            _ => 0,
        }
    }

    /// Steps and the PGD step at the full radius, for modes that train against PGD.
    pub fn pgd_steps(&self) -> Option<(usize, f64)> {
        let pick = |e: f64, steps: usize, alpha: Option<f64>| {
            Some((steps, alpha.unwrap_or_else(|| default_alpha(e, steps))))
        };
        match self {
            Mode::FgsmRs(m) => pick(m.epsilon, m.steps, None),
            Mode::Pgd(m) => pick(m.epsilon, m.steps, m.alpha),
            Mode::Trades(m) => pick(m.epsilon, m.steps, m.alpha),
            Mode::Adaptive(m) => pick(m.epsilon, m.steps, m.alpha),
            _ => None,
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        let adversarial = |e: f64, steps: usize, alpha: Option<f64>| -> Result<(), String> {
            positive("epsilon", e)?;
            count("steps", steps, MAX_STEPS)?;
            alpha.map_or(Ok(()), |a| positive("alpha", a))
        };
        match self {
            Mode::Standard => Ok(()),
            Mode::Gaussian(m) => positive("sigma", m.sigma),
            Mode::FgsmRs(m) => {
                adversarial(m.epsilon, m.steps, m.alpha)?;
                non_negative("guard_ratio", m.guard_ratio)
            }
            Mode::Pgd(m) => adversarial(m.epsilon, m.steps, m.alpha),
            Mode::Trades(m) => {
                adversarial(m.epsilon, m.steps, m.alpha)?;
                non_negative("beta", m.beta)
            }
            Mode::Adaptive(m) => {
                adversarial(m.epsilon, m.steps, m.alpha)?;
                count("ramp_epochs", m.ramp_epochs, MAX_EPOCHS)?;
                non_negative("guard_ratio", m.guard_ratio)
            }
            Mode::PgdEmbeddings(m) => {
                positive("epsilon", m.epsilon)?;
                count("steps", m.steps, MAX_STEPS)
            }
            Mode::Distill(m) => {
                if m.teacher.as_os_str().is_empty() {
                    return Err("mode distill needs teacher = \"path/to/teacher.safetensors\" (or --teacher)".into());
                }
                positive("temperature", m.temperature)?;
                positive("teacher_temperature", m.teacher_temperature)
            }
        }
    }
}
