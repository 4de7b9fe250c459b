//! Evasion attacks that measure empirical robustness, one file per attack behind one trait.
//!
//! Inputs are in the classifier's input units (pixels in [0, 1] for images); epsilon and the
//! step size are in the same units (L∞: per coordinate; L2: Euclidean norm of the whole
//! perturbation). Every adversarial example stays in the epsilon ball around its clean input
//! and in the input box. The input gradient of a whole batch comes from one backward pass per
//! step; the model is evaluated as given (pass a `valid()` copy) and is not modified.
//!
//! - [`ball`]: the threat model (norm, projection, random starts).
//! - [`loss`]: cross-entropy, margin and KL, in one place.
//! - [`fgsm`], [`pgd`], [`trades`]: gradient attacks with a fixed step.
//! - [`apgd`]: Auto-PGD (APGD-CE, APGD-DLR, APGD-T), [`square`]: the score-based Square attack;
//!   with [`suite`], AutoAttack's versions.
//! - [`worst_case`]: per-example worst case over attacks and restarts, robust accuracy after
//!   each attack.
//! - [`run`]: `rampart attack` over any workload, and its report.
//! - [`examples`]: saving adversarial images.
//!
//! A new attack is a file with a struct whose constructor validates its parameters, an
//! [`Attack`] impl, and a variant of [`Method`].

pub mod apgd;
pub mod ball;
pub mod examples;
pub mod fgsm;
pub mod loss;
pub mod pgd;
pub mod run;
pub mod shard;
pub mod square;
pub mod suite;
pub mod trades;
pub mod worst_case;

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

pub use apgd::Apgd;
pub use ball::Norm;
pub use fgsm::Fgsm;
pub use loss::AttackLoss;
pub use pgd::Pgd;
pub use square::Square;
pub use trades::Trades;
pub use worst_case::{Outcome, Tally, worst_case};

use crate::classifier::{Classifier, Domain};

/// A parameter an attack's constructor refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param} {message}")]
pub struct AttackError {
    /// The parameter's name: "epsilon", "alpha", "steps".
    pub param: &'static str,
    pub message: String,
}

impl AttackError {
    pub fn new(param: &'static str, message: String) -> Self {
        Self { param, message }
    }
}

/// Checks that `value` is a positive, finite number.
pub(crate) fn positive(param: &'static str, value: f64) -> Result<(), AttackError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(AttackError::new(
            param,
            format!("must be a positive number, got {value}"),
        ))
    }
}

/// Checks that `steps` is between 1 and [`pgd::MAX_STEPS`].
pub(crate) fn step_count(steps: usize) -> Result<(), AttackError> {
    if (1..=pgd::MAX_STEPS).contains(&steps) {
        Ok(())
    } else {
        Err(AttackError::new(
            "steps",
            format!("must be between 1 and {}, got {steps}", pgd::MAX_STEPS),
        ))
    }
}

/// A perturbation method.
pub trait Attack {
    /// Adversarial examples for inputs `x` with labels `y`: untargeted (move away from `y`)
    /// when `target` is `None`, else towards `target`. Returns the perturbed tensor.
    fn perturb<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
    ) -> Tensor<D>;

    /// A short name for reports: "fgsm", "pgd-40", "apgd-t".
    fn name(&self) -> String;

    /// Separate runs the attack makes, each on the examples the runs before left robust
    /// (APGD: restarts × target classes). Default 1.
    fn runs(&self) -> usize {
        1
    }

    /// Run `run` (below [`runs`](Attack::runs)) with, where the attack tracks it, the
    /// iteration at which each example was first fooled.
    fn run<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
        _run: usize,
    ) -> Traced<D> {
        Traced {
            adversarial: self.perturb(model, x, y, target),
            iteration: None,
        }
    }

    /// Whether a second run from the same input can find something else (a random start);
    /// deterministic attacks are not restarted.
    fn randomized(&self) -> bool {
        true
    }

    /// Whether the attack can aim at a user's target class.
    fn supports_target(&self) -> bool {
        true
    }
}

/// What one run of an attack returned for a batch.
pub struct Traced<const D: usize> {
    /// The perturbed inputs, in the ball and the box.
    pub adversarial: Tensor<D>,
    /// Per example, the iteration (APGD) or query (Square) at which the attack's own
    /// criterion was first met (0: at its starting point), −1 if never; `None` where the
    /// attack does not track it.
    pub iteration: Option<Tensor<1, Int>>,
}

/// Any attack of a user's evaluation plan, by name and parameters (what reports show).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "attack", rename_all = "lowercase")]
pub enum Method {
    Fgsm(Fgsm),
    Pgd(Pgd),
    Apgd(Apgd),
    Square(Square),
}

/// Calls `$body` with `$a` bound to the attack inside any [`Method`].
macro_rules! each {
    ($m:expr, $a:ident => $body:expr) => {
        match $m {
            Method::Fgsm($a) => $body,
            Method::Pgd($a) => $body,
            Method::Apgd($a) => $body,
            Method::Square($a) => $body,
        }
    };
}

impl Method {
    pub fn norm(&self) -> Norm {
        match self {
            Method::Fgsm(_) => Norm::Linf,
            Method::Pgd(p) => p.norm(),
            Method::Apgd(a) => a.norm(),
            Method::Square(s) => s.norm(),
        }
    }

    pub fn epsilon(&self) -> f64 {
        each!(self, a => a.epsilon())
    }

    /// Refuses a model with too few classes for the attack's loss (DLR: 3; APGD-T: 4).
    pub fn check_classes(&self, classes: usize, targeted: bool) -> Result<(), AttackError> {
        let (loss, targeted) = match self {
            Method::Fgsm(f) => (f.loss(), targeted),
            Method::Pgd(p) => (p.loss(), targeted),
            Method::Apgd(a) => (a.loss(), targeted || a.targets() > 0),
            Method::Square(_) => (AttackLoss::Margin, false),
        };
        let need = loss.min_classes(targeted);
        if classes < need {
            return Err(AttackError::new(
                "classes",
                format!(
                    "{} needs a model with at least {need} classes; this one has {classes}",
                    self.name()
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a radius larger than the domain itself (an epsilon of 5 on pixels in [0, 1]):
    /// such an attack is not a threat model but a replacement of the input.
    pub fn check_domain(&self, domain: &Domain) -> Result<(), AttackError> {
        if let Method::Square(s) = self {
            let side = |i: usize| domain.shape.get(i).copied().unwrap_or(0);
            if s.norm() == Norm::L2
                && (domain.shape.len() != 3 || side(1).min(side(2)) < square::L2_MIN_SIDE)
            {
                return Err(AttackError::new(
                    "norm",
                    format!(
                        "l2: the L2 Square attack works on images of at least {0}x{0} pixels; these inputs have shape {1:?} (use linf, or leave square out)",
                        square::L2_MIN_SIDE,
                        domain.shape
                    ),
                ));
            }
        }
        let diameter = match self.norm() {
            Norm::Linf => domain.linf_diameter(),
            Norm::L2 => domain.l2_diameter(),
        };
        match diameter {
            Some(d) if self.epsilon() > d => Err(AttackError::new(
                "epsilon",
                format!(
                    "{} is larger than the input domain itself ({:?} distance {d} across {}); use a radius inside it",
                    self.epsilon(),
                    self.norm(),
                    domain.units
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl Attack for Method {
    fn perturb<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
    ) -> Tensor<D> {
        each!(self, a => a.perturb(model, x, y, target))
    }

    fn name(&self) -> String {
        each!(self, a => a.name())
    }

    fn runs(&self) -> usize {
        each!(self, a => a.runs())
    }

    fn run<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
        run: usize,
    ) -> Traced<D> {
        each!(self, a => a.run(model, x, y, target, run))
    }

    fn randomized(&self) -> bool {
        each!(self, a => a.randomized())
    }

    fn supports_target(&self) -> bool {
        each!(self, a => a.supports_target())
    }
}
