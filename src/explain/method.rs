//! The methods a command can name, as one [`Explainer`] (gradient methods) or LIME.

use burn::tensor::{Int, Tensor};

use super::lime::Lime;
use super::{Explainer, GradientTimesInput, IntegratedGradients, Saliency, SmoothGrad};
use crate::classifier::Classifier;

/// A gradient method.
#[derive(Debug, Clone, Copy)]
pub enum Gradient {
    Saliency,
    GradientTimesInput,
    Integrated(IntegratedGradients),
    /// SmoothGrad's noise tunnel over saliency.
    SmoothSaliency(SmoothGrad<Saliency>),
    /// SmoothGrad's noise tunnel over integrated gradients.
    SmoothIntegrated(SmoothGrad<IntegratedGradients>),
}

impl Gradient {
    /// Integrated gradients on their own: what the completeness delta is about.
    pub fn integrated(&self) -> Option<IntegratedGradients> {
        match self {
            Gradient::Integrated(ig) => Some(*ig),
            _ => None,
        }
    }

    /// The integrated-gradients settings, alone or under the noise tunnel: whose baseline the
    /// deletion and insertion curves use.
    pub fn path(&self) -> Option<IntegratedGradients> {
        match self {
            Gradient::Integrated(ig) => Some(*ig),
            Gradient::SmoothIntegrated(sg) => Some(sg.inner),
            _ => None,
        }
    }
}

impl Explainer for Gradient {
    fn name(&self) -> String {
        match self {
            Gradient::Saliency => Saliency.name(),
            Gradient::GradientTimesInput => GradientTimesInput.name(),
            Gradient::Integrated(m) => m.name(),
            Gradient::SmoothSaliency(m) => m.name(),
            Gradient::SmoothIntegrated(m) => m.name(),
        }
    }

    fn attribute<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        target: &Tensor<1, Int>,
    ) -> Tensor<D> {
        match self {
            Gradient::Saliency => Saliency.attribute(model, x, target),
            Gradient::GradientTimesInput => GradientTimesInput.attribute(model, x, target),
            Gradient::Integrated(m) => m.attribute(model, x, target),
            Gradient::SmoothSaliency(m) => m.attribute(model, x, target),
            Gradient::SmoothIntegrated(m) => m.attribute(model, x, target),
        }
    }
}

/// What `rampart explain --method` runs.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    Gradient(Gradient),
    /// LIME or KernelSHAP; images are cut into `patch`×`patch` superpixels, byte sequences
    /// into chunks of `chunk` bytes.
    Lime {
        lime: Lime,
        patch: usize,
        chunk: usize,
    },
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Gradient(g) => g.name(),
            Method::Lime { lime, .. } => lime.name(),
        }
    }
}
