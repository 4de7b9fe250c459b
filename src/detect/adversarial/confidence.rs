//! Confidence scores (Hendrycks & Gimpel, ICLR 2017): an input the model is unsure about is
//! suspicious. [`msp`] is one minus the maximum softmax probability, in [0, 1 − 1/K];
//! [`entropy`] is the softmax's entropy in nats, in [0, ln K]. Both from one forward pass and
//! differentiable, so an adaptive attacker can steer them.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};

use super::{Detector, Kind};
use crate::classifier::Classifier;

/// The maximum-softmax-probability detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msp;

/// The entropy detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entropy;

impl Detector for Msp {
    fn kind(&self) -> Kind {
        Kind::Msp
    }

    fn score<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        msp(model.logits(x.clone()))
    }

    fn differentiable(&self) -> bool {
        true
    }
}

impl Detector for Entropy {
    fn kind(&self) -> Kind {
        Kind::Entropy
    }

    fn score<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        entropy(model.logits(x.clone()))
    }

    fn differentiable(&self) -> bool {
        true
    }
}

/// 1 − max_c softmax(z)_c per row of logits `[N, K]`, `[N]`.
pub fn msp(logits: Tensor<2>) -> Tensor<1> {
    softmax(logits, 1).max_dim(1).squeeze_dim::<1>(1).neg() + 1.0
}

/// −Σ_c p_c ln p_c per row of logits `[N, K]`, nats, `[N]`.
pub fn entropy(logits: Tensor<2>) -> Tensor<1> {
    let log_p = log_softmax(logits, 1);
    (log_p.clone().exp() * log_p)
        .sum_dim(1)
        .squeeze_dim::<1>(1)
        .neg()
}
