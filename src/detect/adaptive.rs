//! The adaptive attack on a detector (Carlini & Wagner, AISec 2017: "Adversarial examples
//! are not easily detected"): projected gradient ascent, in the same ball as the attacks it
//! is compared with, on an objective that rewards fooling the classifier and penalises the
//! detector's score above its alarm threshold τ:
//!
//!   min(max_{i≠y} z_i − z_y, κ) − λ · [fooled] · max(0, (s(x) − τ) / σ + margin)
//!
//! where σ is the spread of the clean calibration scores (their interquartile range), so that
//! one λ fits detectors on any scale. An example succeeds when it is misclassified and not
//! flagged; the first iterate that succeeds is kept (sign steps oscillate across the
//! threshold), else the last. Each detector's score is descended through
//! [`Detector::surrogate`]: the score itself where it is differentiable, BPDA through feature
//! squeezing's rounding, and EOT over the vote's noise (Athalye, Carlini & Wagner 2018). The
//! isolation forest has no gradient and is not attacked this way.

use burn::tensor::{Bool, Int, Tensor};

use super::adversarial::{Detector, Method};
use crate::attack::ball::{self, Ball, Norm};
use crate::attack::loss::{AttackLoss, per_example};
use crate::attack::pgd::{default_alpha, input_gradient};
use crate::classifier::{Classifier, Input};

/// Confidence κ the margin term stops rewarding at, logits.
const KAPPA: f64 = 10.0;
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
    /// Adversarial examples `[N, ...]` against `targets`, each a detector with its alarm
    /// threshold and clean-score spread (positive): the hinge is on the largest normalised
    /// excess, so that all of them stay under their thresholds (one target: a single
    /// detector; several: the differentiable part of a Bonferroni fusion). From a random
    /// start in the ball.
    pub fn perturb<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        targets: &[(&Method, f64, f64)],
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
        // A random start in the ball, as PGD's.
        let mut x_adv = ball.project(clean, clean.clone() + ball.random_delta(clean), bounds);
        let mut found = clean.clone();
        let mut done = Tensor::<1, Bool>::full([y.dims()[0]], false, &clean.device());
        for _ in 0..self.steps {
            let xa = x_adv.clone().autodiff().require_grad();
            let input = x.with_x(xa.clone());
            let margin = per_example(AttackLoss::Margin, model.logits(input.clone()), &ya, None);
            // The largest excess over the thresholds, in each detector's clean spread: of the
            // surrogates (descended), and of the scores themselves (judged).
            let mut descended = Vec::with_capacity(targets.len());
            let mut judged = Vec::with_capacity(targets.len());
            for (detector, threshold, spread) in targets {
                let excess = (detector.surrogate(model, &input) - *threshold) / *spread;
                judged.push(if detector.surrogate_exact() {
                    excess.clone().inner()
                } else {
                    (detector.score(model, &x.with_x(x_adv.clone())) - *threshold) / *spread
                });
                descended.push(excess);
            }
            let worst = Tensor::stack::<2>(descended, 0)
                .max_dim(0)
                .squeeze_dim::<1>(0);
            let under = Tensor::stack::<2>(judged, 0)
                .max_dim(0)
                .squeeze_dim::<1>(0)
                .lower_equal_elem(0.0);
            // This iterate fools the model and stays under every threshold: keep the first.
            let success = margin
                .clone()
                .inner()
                .greater_elem(0.0)
                .bool_and(under)
                .bool_and(done.clone().bool_not());
            found = blend(&success, &x_adv, found);
            done = done.bool_or(success);
            // The detector term counts only once the example is fooled: to reach another
            // class an input must cross the low-confidence region most detectors flag, so a
            // penalty from the start would hold it back (it pushes back inside afterwards).
            let fooled = margin.clone().inner().greater_elem(0.0).float();
            let excess = (worst + MARGIN).clamp_min(0.0) * fooled;
            let loss = (margin.clamp_max(KAPPA) - excess * LAMBDA).sum();
            let grad = input_gradient(&xa, loss);
            x_adv = ball.project(clean, x_adv + ball.step(grad, alpha), bounds);
        }
        blend(&done, &found, x_adv)
    }
}

/// Rows of `a` where `mask` holds, else rows of `b`.
fn blend<const D: usize>(mask: &Tensor<1, Bool>, a: &Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    let m = mask.clone().reshape(ball::per_example(&b)).expand(b.dims());
    b.mask_where(m, a.clone())
}
