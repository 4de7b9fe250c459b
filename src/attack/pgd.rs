//! Projected gradient descent (Madry et al. 2018) under the L∞ or L2 norm: steps of size
//! alpha along the steepest ascent direction of the loss, each projected back onto the epsilon
//! ball and the input box, from a random start in the ball or from the clean input.

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::ball::{Ball, Norm};
use super::loss::{AttackLoss, ascent};
use super::{Attack, AttackError, positive, step_count};
use crate::classifier::{Classifier, Input};

/// Most steps an attack may take.
pub const MAX_STEPS: usize = 100_000;

/// The default PGD step: 2.5 · epsilon / steps (Madry et al.), so that the steps can cross
/// the ball and back.
pub fn default_alpha(epsilon: f64, steps: usize) -> f64 {
    2.5 * epsilon / steps as f64
}

/// PGD with validated parameters; build it with [`Pgd::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PgdParams")]
pub struct Pgd {
    norm: Norm,
    /// Radius of the threat model, input units.
    epsilon: f64,
    /// Step size, input units.
    alpha: f64,
    steps: usize,
    /// Start from a random point of the ball (L∞: uniform; L2: random direction and radius).
    random_start: bool,
    loss: AttackLoss,
}

/// The serialised form of [`Pgd`], checked on the way in.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct PgdParams {
    norm: Norm,
    epsilon: f64,
    alpha: f64,
    steps: usize,
    random_start: bool,
    loss: AttackLoss,
}

impl TryFrom<PgdParams> for Pgd {
    type Error = AttackError;

    fn try_from(p: PgdParams) -> Result<Self, AttackError> {
        Ok(Pgd::new(p.norm, p.epsilon, p.steps)?
            .with_alpha(p.alpha)?
            .with_random_start(p.random_start)
            .with_loss(p.loss))
    }
}

impl Pgd {
    /// PGD of `steps` steps in the `norm` ball of radius `epsilon`, with the default step
    /// ([`default_alpha`]), a random start and the cross-entropy loss. `epsilon` must be
    /// positive and finite, `steps` between 1 and [`MAX_STEPS`].
    pub fn new(norm: Norm, epsilon: f64, steps: usize) -> Result<Self, AttackError> {
        positive("epsilon", epsilon)?;
        step_count(steps)?;
        Ok(Self {
            norm,
            epsilon,
            alpha: default_alpha(epsilon, steps),
            steps,
            random_start: true,
            loss: AttackLoss::Ce,
        })
    }

    /// A PGD from parameters its caller has already validated.
    pub(super) fn checked(
        norm: Norm,
        epsilon: f64,
        alpha: f64,
        steps: usize,
        random_start: bool,
        loss: AttackLoss,
    ) -> Self {
        Self {
            norm,
            epsilon,
            alpha,
            steps,
            random_start,
            loss,
        }
    }

    /// The step size, positive and finite.
    pub fn with_alpha(self, alpha: f64) -> Result<Self, AttackError> {
        positive("alpha", alpha)?;
        Ok(Self { alpha, ..self })
    }

    pub fn with_random_start(self, random_start: bool) -> Self {
        Self {
            random_start,
            ..self
        }
    }

    pub fn with_loss(self, loss: AttackLoss) -> Self {
        Self { loss, ..self }
    }

    /// The same attack at another radius, the step scaled with it (epsilon ramps).
    pub fn at_epsilon(self, epsilon: f64) -> Result<Self, AttackError> {
        positive("epsilon", epsilon)?;
        Ok(Self {
            epsilon,
            alpha: self.alpha * epsilon / self.epsilon,
            ..self
        })
    }

    pub fn norm(&self) -> Norm {
        self.norm
    }

    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    pub fn random_start(&self) -> bool {
        self.random_start
    }

    pub fn loss(&self) -> AttackLoss {
        self.loss
    }

    pub fn ball(&self) -> Ball {
        Ball {
            norm: self.norm,
            epsilon: self.epsilon,
        }
    }
}

impl Attack for Pgd {
    fn perturb<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
    ) -> Tensor<D> {
        let bounds = model.domain().bounds;
        let ball = self.ball();
        let clean = x.x();
        let mut x_adv = if self.random_start {
            ball.project(clean, clean.clone() + ball.random_delta(clean), bounds)
        } else {
            clean.clone()
        };
        let ya = y.clone().autodiff();
        let ta = target.map(|t| t.clone().autodiff());
        for _ in 0..self.steps {
            let xa = x_adv.clone().autodiff().require_grad();
            let logits = model.logits(x.with_x(xa.clone()));
            let loss = ascent(self.loss, logits, &ya, ta.as_ref());
            let grad = input_gradient(&xa, loss);
            x_adv = ball.project(clean, x_adv + ball.step(grad, self.alpha), bounds);
        }
        x_adv
    }

    fn name(&self) -> String {
        format!("pgd-{}", self.steps)
    }

    fn randomized(&self) -> bool {
        self.random_start
    }
}

/// The gradient of `loss` with respect to the leaf `xa`, as a plain tensor; zeros when the loss
/// does not depend on it (a model that ignores the attacked input).
pub fn input_gradient<const D: usize>(xa: &Tensor<D>, loss: Tensor<1>) -> Tensor<D> {
    match xa.grad(&loss.backward()) {
        Some(g) => g.inner(),
        None => xa.clone().inner().zeros_like(),
    }
}
