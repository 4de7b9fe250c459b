//! The fast gradient sign method (Goodfellow et al. 2015): x + epsilon · sign(∇x loss), one
//! L∞ step from the clean input, projected onto the input box.

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::ball::Norm;
use super::loss::AttackLoss;
use super::pgd::Pgd;
use super::{Attack, AttackError, positive};
use crate::classifier::Classifier;

/// FGSM with a validated radius; build it with [`Fgsm::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FgsmParams")]
pub struct Fgsm {
    /// L∞ radius, input units.
    epsilon: f64,
    loss: AttackLoss,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct FgsmParams {
    epsilon: f64,
    loss: AttackLoss,
}

impl TryFrom<FgsmParams> for Fgsm {
    type Error = AttackError;

    fn try_from(p: FgsmParams) -> Result<Self, AttackError> {
        Ok(Fgsm::new(p.epsilon)?.with_loss(p.loss))
    }
}

impl Fgsm {
    /// FGSM of radius `epsilon` (positive, finite) on the cross-entropy loss.
    pub fn new(epsilon: f64) -> Result<Self, AttackError> {
        positive("epsilon", epsilon)?;
        Ok(Self {
            epsilon,
            loss: AttackLoss::Ce,
        })
    }

    pub fn with_loss(self, loss: AttackLoss) -> Self {
        Self { loss, ..self }
    }

    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    pub fn loss(&self) -> AttackLoss {
        self.loss
    }

    /// FGSM is one PGD step of size epsilon from the clean input.
    fn as_pgd(&self) -> Pgd {
        Pgd::checked(Norm::Linf, self.epsilon, self.epsilon, 1, false, self.loss)
    }
}

impl Attack for Fgsm {
    fn perturb<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
    ) -> Tensor<D> {
        self.as_pgd().perturb(model, x, y, target)
    }

    fn name(&self) -> String {
        "fgsm".into()
    }

    fn randomized(&self) -> bool {
        false
    }
}
