//! Detectors of adversarial inputs. Each scores every example of a batch on the device,
//! larger meaning more suspicious, one file per method: [`confidence`] (maximum softmax
//! probability, entropy), [`squeeze`] (feature squeezing), [`mahalanobis`] (class-conditional
//! Gaussian on the penultimate layer), [`isolation`] (an isolation forest on it) and [`vote`]
//! (the smoothed classifier's vote share).
//! Scores become p-values and alarms in [`super::calibrate`].

pub mod confidence;
pub mod isolation;
pub mod mahalanobis;
pub mod squeeze;
pub mod vote;

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

pub use confidence::{Entropy, Msp};
pub use isolation::IsolationForest;
pub use mahalanobis::Mahalanobis;
pub use squeeze::Squeeze;
pub use vote::Vote;

use super::DetectError;
use crate::classifier::Classifier;

/// The adversarial-input detectors a user can name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// 1 − the maximum softmax probability.
    Msp,
    /// Entropy of the softmax, nats.
    Entropy,
    /// Feature squeezing: L1 change of the softmax under bit-depth reduction and a median.
    Squeeze,
    /// Squared Mahalanobis distance of the penultimate features to the nearest class mean.
    Mahalanobis,
    /// 1 − the top class's share of the votes on noisy copies.
    Vote,
    /// Isolation forest on the penultimate features (100 trees of 256 examples).
    Isolation,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Msp => "msp",
            Kind::Entropy => "entropy",
            Kind::Squeeze => "squeeze",
            Kind::Mahalanobis => "mahalanobis",
            Kind::Vote => "vote",
            Kind::Isolation => "isolation",
        }
    }
}

/// The settings of the detectors that have any.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub squeeze: Squeeze,
    pub vote: Vote,
}

/// A detector of adversarial inputs: a score per example, on the device.
pub trait Detector {
    fn kind(&self) -> Kind;

    /// Scores `[N]` of a batch, larger meaning more suspicious.
    fn score<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1>;

    /// Whether the score is a differentiable function of the input, so that an adaptive
    /// attacker can descend it directly.
    fn differentiable(&self) -> bool {
        false
    }

    /// Whether two calls on the same input can differ.
    fn randomized(&self) -> bool {
        false
    }

    /// How the adaptive attacker gets a gradient of the score: "direct" where the score is
    /// differentiable, else the name of the stand-in [`Detector::surrogate`] computes; None
    /// where there is none and the detector is not attacked adaptively.
    fn gradient(&self) -> Option<&'static str> {
        self.differentiable().then_some("direct")
    }

    /// Scores `[N]` the adaptive attacker descends: the score itself, or a differentiable
    /// stand-in for it (see [`Detector::gradient`]).
    fn surrogate<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        self.score(model, x)
    }

    /// Whether the surrogate's value is the score's (so it can tell the attacker when it is
    /// under the threshold); else the attacker scores its iterates again.
    fn surrogate_exact(&self) -> bool {
        true
    }
}

/// A detector ready to score: any of the methods, as a fitted detector file lists them.
/// (Mahalanobis holds two tensor handles; a few of these live at a time, boxing buys nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Method {
    Msp(Msp),
    Entropy(Entropy),
    Squeeze(Squeeze),
    Mahalanobis(Mahalanobis),
    Vote(Vote),
    Isolation(IsolationForest),
}

/// Runs `$body` with `$d` bound to whichever detector `$m` holds.
macro_rules! each {
    ($m:expr, $d:ident => $body:expr) => {
        match $m {
            Method::Msp($d) => $body,
            Method::Entropy($d) => $body,
            Method::Squeeze($d) => $body,
            Method::Mahalanobis($d) => $body,
            Method::Vote($d) => $body,
            Method::Isolation($d) => $body,
        }
    };
}

impl Method {
    /// The detector of `kind`, fitted on clean `x`, `y` where it needs fitting (Mahalanobis),
    /// after checking that it can read this model's inputs.
    pub fn fit<const D: usize, C: Classifier<D>>(
        kind: Kind,
        settings: &Settings,
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        batch: usize,
        seed: u64,
    ) -> Result<Self, DetectError> {
        Ok(match kind {
            Kind::Msp => Method::Msp(Msp),
            Kind::Entropy => Method::Entropy(Entropy),
            Kind::Squeeze => {
                settings.squeeze.check(&model.domain())?;
                Method::Squeeze(settings.squeeze)
            }
            Kind::Mahalanobis => Method::Mahalanobis(Mahalanobis::fit(model, x, y, batch)?),
            Kind::Vote => Method::Vote(settings.vote),
            Kind::Isolation => Method::Isolation(IsolationForest::fit(model, x, batch, seed)?),
        })
    }
}

impl Detector for Method {
    fn kind(&self) -> Kind {
        each!(self, d => d.kind())
    }

    fn score<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        each!(self, d => d.score(model, x))
    }

    fn differentiable(&self) -> bool {
        each!(self, d => d.differentiable())
    }

    fn randomized(&self) -> bool {
        each!(self, d => d.randomized())
    }

    fn gradient(&self) -> Option<&'static str> {
        each!(self, d => d.gradient())
    }

    fn surrogate<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        each!(self, d => d.surrogate(model, x))
    }

    fn surrogate_exact(&self) -> bool {
        each!(self, d => d.surrogate_exact())
    }
}
