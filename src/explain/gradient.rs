//! Saliency (Simonyan et al. 2014): |∂f_c/∂x|; gradient × input (Shrikumar et al. 2016):
//! x ⊙ ∂f_c/∂x, which for a linear model is each coordinate's contribution w_c,i · x_i.

use burn::tensor::{Int, Tensor};

use super::{Explainer, logit_gradient};
use crate::classifier::{Classifier, Input};

/// |∂ f_c / ∂x|.
#[derive(Debug, Clone, Copy, Default)]
pub struct Saliency;

impl Explainer for Saliency {
    fn name(&self) -> String {
        "saliency".into()
    }

    fn attribute<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        target: &Tensor<1, Int>,
    ) -> Tensor<D> {
        logit_gradient(model, x, target).abs()
    }
}

/// x ⊙ ∂ f_c / ∂x.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradientTimesInput;

impl Explainer for GradientTimesInput {
    fn name(&self) -> String {
        "gradient-x-input".into()
    }

    fn attribute<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        target: &Tensor<1, Int>,
    ) -> Tensor<D> {
        logit_gradient(model, x, target) * x.x().clone()
    }
}
