//! TRADES' inner maximisation (Zhang et al. 2019): L∞ PGD from a small random start that
//! ascends KL(f(x) ‖ f(x')), the divergence of the prediction from the clean one, rather
//! than a loss against the label.

use burn::tensor::{Distribution, Int, Tensor};
use serde::Serialize;

use super::ball::{Ball, Norm};
use super::loss::kl_divergence;
use super::pgd::{default_alpha, input_gradient};
use super::{Attack, AttackError, positive, step_count};
use crate::classifier::{Classifier, Input};

/// TRADES' attack with validated parameters; build it with [`Trades::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trades {
    /// L∞ radius, input units.
    epsilon: f64,
    /// Step size, input units.
    alpha: f64,
    steps: usize,
}

impl Trades {
    /// `steps` steps of the default size [`default_alpha`] in the L∞ ball of `epsilon`.
    pub fn new(epsilon: f64, steps: usize) -> Result<Self, AttackError> {
        positive("epsilon", epsilon)?;
        step_count(steps)?;
        Ok(Self {
            epsilon,
            alpha: default_alpha(epsilon, steps),
            steps,
        })
    }

    pub fn with_alpha(self, alpha: f64) -> Result<Self, AttackError> {
        positive("alpha", alpha)?;
        Ok(Self { alpha, ..self })
    }
}

impl Attack for Trades {
    /// Ignores the labels: the attack moves away from the clean prediction.
    fn perturb<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        _y: &Tensor<1, Int>,
        _target: Option<&Tensor<1, Int>>,
    ) -> Tensor<D> {
        let ball = Ball {
            norm: Norm::Linf,
            epsilon: self.epsilon,
        };
        let bounds = model.domain().bounds;
        let clean_x = x.x();
        let clean = model.logits(x.clone());
        let start = clean_x.clone() + clean_x.random_like(Distribution::Normal(0.0, 0.001));
        let mut x_adv = ball.project(clean_x, start, bounds);
        for _ in 0..self.steps {
            let xa = x_adv.clone().autodiff().require_grad();
            let adv = model.logits(x.with_x(xa.clone()));
            let kl = kl_divergence(clean.clone().autodiff(), adv).sum();
            let grad = input_gradient(&xa, kl);
            x_adv = ball.project(clean_x, x_adv + grad.sign() * self.alpha, bounds);
        }
        x_adv
    }

    fn name(&self) -> String {
        format!("trades-kl-pgd{}", self.steps)
    }
}
