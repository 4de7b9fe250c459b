//! The adaptive attack on a detector (Carlini & Wagner, AISec 2017: "Adversarial examples
//! are not easily detected"): projected gradient ascent, in the same ball as the attacks it
//! is compared with, on an objective that rewards fooling the classifier and penalises the
//! detector's score above its alarm threshold τ:
//!
//!   min(max_{i≠y} z_i − z_y, κ) − λ · max(0, (s(x) − τ) / σ + margin)
//!
//! where σ is the spread of the clean calibration scores (their interquartile range), so that
//! one λ fits detectors on any scale. An example succeeds when it is misclassified and not
//! flagged. Only detectors whose score is differentiable are attacked this way.

use burn::tensor::{Int, Tensor};

use super::adversarial::{Detector, Method};
use crate::attack::ball::{Ball, Norm};
use crate::attack::loss::{AttackLoss, per_example};
use crate::attack::pgd::{default_alpha, input_gradient};
use crate::classifier::{Classifier, Input};

/// Confidence κ the margin term stops rewarding at, logits.
const KAPPA: f64 = 2.0;
/// Weight λ of the detector term.
const LAMBDA: f64 = 10.0;
/// How far below the threshold (in σ) the attacker aims, so that rounding does not flag it.
const MARGIN: f64 = 0.05;

/// The adaptive attack's threat model and budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    pub norm: Norm,
    /// Radius, input units.
    pub epsilon: f64,
    pub steps: usize,
}

impl Adaptive {
    /// Adversarial examples `[N, ...]` against `detector` with alarm threshold `threshold`
    /// and clean-score spread `spread` (positive), from the clean input, no random start.
    pub fn perturb<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        detector: &Method,
        threshold: f64,
        spread: f64,
        x: &C::Input,
        y: &Tensor<1, Int>,
    ) -> Tensor<D> {
        let ball = Ball {
            norm: self.norm,
            epsilon: self.epsilon,
        };
        let alpha = default_alpha(self.epsilon, self.steps);
        let bounds = model.domain().bounds;
        let clean = x.x();
        let ya = y.clone().autodiff();
        let mut x_adv = clean.clone();
        for _ in 0..self.steps {
            let xa = x_adv.clone().autodiff().require_grad();
            let input = x.with_x(xa.clone());
            let margin = per_example(AttackLoss::Margin, model.logits(input.clone()), &ya, None)
                .clamp_max(KAPPA);
            let excess =
                ((detector.score(model, &input) - threshold) / spread + MARGIN).clamp_min(0.0);
            let loss = (margin - excess * LAMBDA).sum();
            let grad = input_gradient(&xa, loss);
            x_adv = ball.project(clean, x_adv + ball.step(grad, alpha), bounds);
        }
        x_adv
    }
}
