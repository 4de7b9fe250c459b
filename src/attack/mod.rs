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
//! - [`fgsm`], [`pgd`], [`trades`]: the attacks.
//! - [`worst_case`]: per-example worst case over attacks and restarts, robust accuracy after
//!   each attack.
//! - [`run`]: `rampart attack` over any workload, and its report.
//! - [`examples`]: saving adversarial images.
//!
//! A new attack is a file with a struct whose constructor validates its parameters, an
//! [`Attack`] impl, and a variant of [`Method`].

pub mod ball;
pub mod examples;
pub mod fgsm;
pub mod loss;
pub mod pgd;
pub mod run;
pub mod trades;
pub mod worst_case;

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

pub use ball::Norm;
pub use fgsm::Fgsm;
pub use loss::AttackLoss;
pub use pgd::Pgd;
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

    /// A short name for reports: "fgsm", "pgd-40".
    fn name(&self) -> String;
}

/// Any attack of a user's evaluation plan, by name and parameters (what reports show).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "attack", rename_all = "lowercase")]
pub enum Method {
    Fgsm(Fgsm),
    Pgd(Pgd),
}

impl Method {
    pub fn norm(&self) -> Norm {
        match self {
            Method::Fgsm(_) => Norm::Linf,
            Method::Pgd(p) => p.norm(),
        }
    }

    pub fn epsilon(&self) -> f64 {
        match self {
            Method::Fgsm(f) => f.epsilon(),
            Method::Pgd(p) => p.epsilon(),
        }
    }

    /// Refuses a radius larger than the domain itself (an epsilon of 5 on pixels in [0, 1]):
    /// such an attack is not a threat model but a replacement of the input.
    pub fn check_domain(&self, domain: &Domain) -> Result<(), AttackError> {
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
        match self {
            Method::Fgsm(a) => a.perturb(model, x, y, target),
            Method::Pgd(a) => a.perturb(model, x, y, target),
        }
    }

    fn name(&self) -> String {
        match self {
            Method::Fgsm(a) => a.name(),
            Method::Pgd(a) => a.name(),
        }
    }
}
