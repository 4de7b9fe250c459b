//! Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that halves itself.
//!
//! Each run starts at a random corner-like point on the epsilon sphere, takes steps of size
//! eta (2 · epsilon at first, one eta per example) with momentum alpha = 0.75 (1.0 on the first
//! step), and keeps each example's best point. At checkpoints (after 22% of the iterations,
//! then every time 3% fewer, down to 6%) an example's eta is halved and it restarts from its best
//! point when its loss rose on at most 75% of the steps since the last checkpoint, or when its
//! best loss did not improve since the last checkpoint and eta was not halved there.
//!
//! APGD-CE ascends cross-entropy, APGD-DLR the difference of logits ratio; APGD-T runs the
//! targeted DLR once towards each of the `targets` classes with the highest clean logits
//! after the top one. Every iteration is one forward and one backward pass of the whole batch
//! (`eot` of each for randomized models); nothing is read back to the host.

use burn::tensor::{Bool, Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::ball::{Ball, Norm, l2_norms, per_example};
use super::loss::{AttackLoss, per_example as loss_per_example};
use super::pgd::input_gradient;
use super::{Attack, AttackError, Traced, positive, step_count};
use crate::classifier::{Classifier, Input};

/// AutoAttack's iterations per run.
pub const DEFAULT_STEPS: usize = 100;
/// AutoAttack's target classes for APGD-T.
pub const DEFAULT_TARGETS: usize = 9;
/// Most gradient draws per iteration (expectation over transformation).
pub const MAX_EOT: usize = 1_000;
/// Most restarts of one attack.
pub const MAX_RESTARTS: usize = 1_000;

/// Momentum after the first step.
const MOMENTUM: f64 = 0.75;
/// An example whose loss rose on at most this fraction of the steps since the last checkpoint
/// has its step halved.
const RHO: f64 = 0.75;

/// APGD with validated parameters; build it with [`Apgd::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ApgdParams")]
pub struct Apgd {
    norm: Norm,
    /// Radius of the threat model, input units.
    epsilon: f64,
    /// Iterations per run.
    steps: usize,
    /// Cross-entropy or DLR (untargeted); APGD-T always uses the targeted DLR.
    loss: AttackLoss,
    /// 0: untargeted; else APGD-T towards this many classes in turn.
    targets: usize,
    /// Runs from fresh random starts (per target class for APGD-T).
    restarts: usize,
    /// Gradient draws averaged per iteration (1 for deterministic models).
    eot: usize,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApgdParams {
    norm: Norm,
    epsilon: f64,
    steps: usize,
    loss: AttackLoss,
    targets: usize,
    restarts: usize,
    eot: usize,
}

impl TryFrom<ApgdParams> for Apgd {
    type Error = AttackError;

    fn try_from(p: ApgdParams) -> Result<Self, AttackError> {
        let a = Apgd::new(p.norm, p.epsilon, p.steps)?
            .with_restarts(p.restarts)?
            .with_eot(p.eot)?;
        if p.targets > 0 {
            a.targeted(p.targets)
        } else {
            a.with_loss(p.loss)
        }
    }
}

impl Apgd {
    /// APGD-CE of `steps` iterations in the `norm` ball of radius `epsilon` (positive, finite),
    /// one run, one gradient draw per iteration.
    pub fn new(norm: Norm, epsilon: f64, steps: usize) -> Result<Self, AttackError> {
        positive("epsilon", epsilon)?;
        step_count(steps)?;
        Ok(Self {
            norm,
            epsilon,
            steps,
            loss: AttackLoss::Ce,
            targets: 0,
            restarts: 1,
            eot: 1,
        })
    }

    /// The untargeted loss: cross-entropy (APGD-CE) or DLR (APGD-DLR); margin is refused.
    pub fn with_loss(self, loss: AttackLoss) -> Result<Self, AttackError> {
        if loss == AttackLoss::Margin {
            return Err(AttackError::new(
                "loss",
                "APGD ascends ce or dlr, not margin".into(),
            ));
        }
        Ok(Self {
            loss,
            targets: 0,
            ..self
        })
    }

    /// APGD-T: the targeted DLR towards each of the `targets` (≥ 1) classes with the highest
    /// clean logits after the top one, in turn.
    pub fn targeted(self, targets: usize) -> Result<Self, AttackError> {
        if targets == 0 {
            return Err(AttackError::new("targets", "must be at least 1".into()));
        }
        Ok(Self {
            loss: AttackLoss::Dlr,
            targets,
            ..self
        })
    }

    /// Runs from fresh random starts, 1 to [`MAX_RESTARTS`].
    pub fn with_restarts(self, restarts: usize) -> Result<Self, AttackError> {
        if !(1..=MAX_RESTARTS).contains(&restarts) {
            return Err(AttackError::new(
                "restarts",
                format!("must be between 1 and {MAX_RESTARTS}, got {restarts}"),
            ));
        }
        Ok(Self { restarts, ..self })
    }

    /// Gradient draws averaged per iteration, 1 to [`MAX_EOT`] (20 for randomized models).
    pub fn with_eot(self, eot: usize) -> Result<Self, AttackError> {
        if !(1..=MAX_EOT).contains(&eot) {
            return Err(AttackError::new(
                "eot",
                format!("must be between 1 and {MAX_EOT}, got {eot}"),
            ));
        }
        Ok(Self { eot, ..self })
    }

    /// The same attack with at most `classes - 1` target classes (a model with 5 classes has
    /// only 4 others).
    pub fn for_classes(self, classes: usize) -> Self {
        Self {
            targets: self.targets.min(classes.saturating_sub(1)),
            ..self
        }
    }

    pub fn norm(&self) -> Norm {
        self.norm
    }

    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    pub fn loss(&self) -> AttackLoss {
        self.loss
    }

    pub fn targets(&self) -> usize {
        self.targets
    }

    pub fn restarts(&self) -> usize {
        self.restarts
    }

    pub fn eot(&self) -> usize {
        self.eot
    }

    /// The fewest classes a model needs for this attack (DLR: 3; APGD-T: 4).
    pub fn min_classes(&self) -> usize {
        self.loss.min_classes(self.targets > 0)
    }

    fn ball(&self) -> Ball {
        Ball {
            norm: self.norm,
            epsilon: self.epsilon,
        }
    }

    /// One run on `x` with fixed target classes `target` (APGD-T or a user's target).
    fn single<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
        fooled_by: Success,
    ) -> Traced<D> {
        let bounds = model.domain().bounds;
        let ball = self.ball();
        let clean = x.x();
        let n = clean.dims()[0];
        let device = clean.device();
        let col = |t: Tensor<1>| t.reshape(per_example(clean));
        let ya = y.clone().autodiff();
        let ta = target.map(|t| t.clone().autodiff());
        let goal = match fooled_by {
            Success::Target => target.cloned(),
            Success::Untargeted => None,
        };

        let mut x_adv = ball.project(clean, clean.clone() + self.start(clean), bounds);
        let (mut grad, loss, logits) = self.gradient(model, x, &x_adv, &ya, ta.as_ref());
        let mut wrong = fooled(logits, y, goal.as_ref());
        let never = (self.steps + 1) as f64;
        let mut first = Tensor::<1>::full([n], never, &device).mask_fill(wrong.clone(), 0.0);
        let mut x_best_adv = x_adv.clone();
        let mut x_best = x_adv.clone();
        let mut grad_best = grad.clone();
        let mut loss_best = loss;
        let mut eta = Tensor::<1>::full([n], 2.0 * self.epsilon, &device);
        let mut x_prev = x_adv.clone();

        let schedule = Schedule::new(self.steps);
        let mut since_check = 0;
        let mut window = schedule.first;
        // The reference compares the first step with an all-zero loss row; so does this.
        let mut loss_prev = Tensor::<1>::zeros([n], &device);
        let mut rises = Tensor::<1>::zeros([n], &device);
        let mut loss_best_at_check = loss_best.clone();
        let mut halved_at_check = Tensor::<1, Bool>::full([n], true, &device);

        // L∞: the ball intersected with the box is a pair of bounds, computed once.
        let linf_box = (self.norm == Norm::Linf).then(|| {
            let lo = clean.clone() - self.epsilon;
            let hi = clean.clone() + self.epsilon;
            match bounds {
                Some((a, b)) => (lo.clamp(a, b), hi.clamp(a, b)),
                None => (lo, hi),
            }
        });
        let project = |t: Tensor<D>| match &linf_box {
            Some((lo, hi)) => t.max_pair(lo.clone()).min_pair(hi.clone()),
            None => ball.project(clean, t, bounds),
        };
        for i in 0..self.steps {
            let step = match self.norm {
                Norm::Linf => grad.sign(),
                Norm::L2 => ball.step(grad, 1.0),
            } * col(eta.clone());
            let z = project(x_adv.clone() + step);
            x_adv = if i == 0 {
                // Momentum 1.0 on the first step: the step itself.
                x_prev = x_adv;
                z
            } else {
                // x + α(z − x) + (1 − α)(x − x_prev), as z·α + (2x − x_prev)·(1 − α).
                let next = z * MOMENTUM + (x_adv.clone() * 2.0 - x_prev) * (1.0 - MOMENTUM);
                x_prev = x_adv;
                project(next)
            };

            // The last point's gradient would never be used: its loss needs a forward only.
            let last = i + 1 == self.steps;
            let (g, l, logits) = if last {
                self.forward(model, x, &x_adv, y, target)
            } else {
                self.gradient(model, x, &x_adv, &ya, ta.as_ref())
            };
            grad = g;
            let now_wrong = fooled(logits, y, goal.as_ref());
            x_best_adv = blend(&now_wrong, &x_adv, x_best_adv);
            first = first.min_pair(
                Tensor::<1>::full([n], never, &device).mask_fill(now_wrong.clone(), (i + 1) as f64),
            );
            wrong = wrong.bool_or(now_wrong);

            let improved = l.clone().greater(loss_best.clone());
            x_best = blend(&improved, &x_adv, x_best);
            grad_best = blend(&improved, &grad, grad_best);
            loss_best = loss_best.mask_where(improved, l.clone());
            rises = rises + l.clone().greater(loss_prev).float();
            loss_prev = l;

            since_check += 1;
            if since_check == window {
                let oscillating = rises.clone().lower_equal_elem(window as f64 * RHO);
                let stalled = halved_at_check
                    .bool_not()
                    .bool_and(loss_best_at_check.greater_equal(loss_best.clone()));
                let halve = oscillating.bool_or(stalled);
                eta = eta.clone().mask_where(halve.clone(), eta * 0.5);
                x_adv = blend(&halve, &x_best, x_adv);
                grad = blend(&halve, &grad_best, grad);
                halved_at_check = halve;
                loss_best_at_check = loss_best.clone();
                rises = rises.zeros_like();
                since_check = 0;
                window = schedule.next(window);
            }
        }
        // Fooled examples return the point that fooled them; the others their best-loss point.
        Traced {
            adversarial: blend(&wrong, &x_best_adv, x_best),
            iteration: Some(
                first
                    .clone()
                    .mask_fill(first.greater_equal_elem(never), -1.0)
                    .int(),
            ),
        }
    }

    /// A random start: L∞, uniform noise scaled so that its largest coordinate is epsilon;
    /// L2, a Gaussian direction of norm epsilon (both then clipped to the box by the caller).
    fn start<const D: usize>(&self, clean: &Tensor<D>) -> Tensor<D> {
        match self.norm {
            Norm::Linf => {
                let t = clean.random_like(Distribution::Uniform(-1.0, 1.0));
                let largest = t
                    .clone()
                    .abs()
                    .flatten::<2>(1, D - 1)
                    .max_dim(1)
                    .reshape(per_example(clean));
                t / (largest + 1e-12) * self.epsilon
            }
            Norm::L2 => {
                let t = clean.random_like(Distribution::Normal(0.0, 1.0));
                t.clone() / (l2_norms(&t) + 1e-12) * self.epsilon
            }
        }
    }

    /// The per-example loss and logits at `x_adv` without a gradient (zeros in its place).
    fn forward<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        x_adv: &Tensor<D>,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
    ) -> (Tensor<D>, Tensor<1>, Tensor<2>) {
        let logits = model.logits(x.with_x(x_adv.clone()));
        let loss = loss_per_example(self.loss, logits.clone(), y, target);
        (x_adv.zeros_like(), loss, logits)
    }

    /// The input gradient of the summed per-example loss at `x_adv`, averaged over `eot`
    /// draws, with the last draw's per-example loss and logits (plain tensors).
    fn gradient<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        x_adv: &Tensor<D>,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
    ) -> (Tensor<D>, Tensor<1>, Tensor<2>) {
        let mut total: Option<Tensor<D>> = None;
        let mut last = None;
        for _ in 0..self.eot {
            let xa = x_adv.clone().autodiff().require_grad();
            let logits = model.logits(x.with_x(xa.clone()));
            let loss = loss_per_example(self.loss, logits.clone(), y, target);
            let plain = (loss.clone().inner(), logits.inner());
            let g = input_gradient(&xa, loss.sum());
            total = Some(match total {
                Some(t) => t + g,
                None => g,
            });
            last = Some(plain);
        }
        let (loss, logits) = last.expect("eot is at least 1");
        let grad = total.expect("eot is at least 1");
        let grad = if self.eot > 1 {
            grad / self.eot as f64
        } else {
            grad
        };
        (grad, loss, logits)
    }
}

/// What counts as fooling the model inside a run.
#[derive(Clone, Copy)]
enum Success {
    /// The prediction is not the label (AutoAttack's criterion, also for APGD-T).
    Untargeted,
    /// The prediction is the user's target class.
    Target,
}

/// Examples whose prediction (argmax of `logits`) fooled the model: not `y`, or `goal`.
fn fooled(logits: Tensor<2>, y: &Tensor<1, Int>, goal: Option<&Tensor<1, Int>>) -> Tensor<1, Bool> {
    let pred = logits.argmax(1).squeeze_dim::<1>(1);
    match goal {
        None => pred.not_equal(y.clone()),
        Some(t) => pred.equal(t.clone()),
    }
}

/// Rows of `a` where `mask` holds, else rows of `b`.
fn blend<const D: usize>(mask: &Tensor<1, Bool>, a: &Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    let shape = b.dims();
    let m = mask.clone().reshape(per_example(&b)).expand(shape);
    b.mask_where(m, a.clone())
}

/// The checkpoint schedule: the first window is 22% of the iterations, each next one 3% of
/// them shorter, never below 6% (each at least one iteration).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    first: usize,
    decrease: usize,
    min: usize,
}

impl Schedule {
    pub fn new(steps: usize) -> Self {
        let frac = |f: f64| ((f * steps as f64) as usize).max(1);
        Self {
            first: frac(0.22),
            decrease: frac(0.03),
            min: frac(0.06),
        }
    }

    fn next(&self, window: usize) -> usize {
        window.saturating_sub(self.decrease).max(self.min)
    }

    /// The iterations (1-based) after which the step size is checked, up to `steps`.
    pub fn checkpoints(steps: usize) -> Vec<usize> {
        let s = Self::new(steps);
        let mut at = Vec::new();
        let (mut done, mut window) = (0, s.first);
        while done + window <= steps {
            done += window;
            at.push(done);
            window = s.next(window);
        }
        at
    }
}

impl Attack for Apgd {
    fn perturb<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
    ) -> Tensor<D> {
        self.run(model, x, y, target, 0).adversarial
    }

    fn name(&self) -> String {
        match (self.targets, self.loss) {
            (0, AttackLoss::Dlr) => "apgd-dlr".into(),
            (0, _) => "apgd-ce".into(),
            _ => "apgd-t".into(),
        }
    }

    fn runs(&self) -> usize {
        self.restarts * self.targets.max(1)
    }

    /// Run `run`: APGD-T's target class is the (`run / restarts` + 2)-th highest clean logit.
    fn run<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
        run: usize,
    ) -> Traced<D> {
        match (target, self.targets) {
            (Some(t), _) => self.single(model, x, y, Some(t), Success::Target),
            (None, 0) => self.single(model, x, y, None, Success::Untargeted),
            (None, _) => {
                // More targets than other classes repeat the last one (no panic).
                let rank = 1 + run / self.restarts;
                let t = super::loss::class_at_rank(&model.logits(x.clone()), rank);
                self.single(model, x, y, Some(&t), Success::Untargeted)
            }
        }
    }
}
