//! A randomized classifier: the base classifier of randomized smoothing, with fresh Gaussian
//! noise added to its input at every forward pass. What `rampart evaluate --sigma` attacks
//! (with `--version rand`, whose APGD averages the gradient over 20 draws).

use burn::tensor::{Distribution, Int, Tensor};

use super::{Classifier, Domain, Input};

/// `inner` with N(0, sigma²) noise on each input coordinate, drawn anew at every call.
pub struct Noisy<'a, C> {
    pub inner: &'a C,
    /// Standard deviation of the noise, input units (positive).
    pub sigma: f64,
}

impl<C> Noisy<'_, C> {
    fn noisy<const D: usize, I: Input<D>>(&self, x: I) -> I {
        let noise = x.x().random_like(Distribution::Normal(0.0, self.sigma));
        x.with_x(x.x().clone() + noise)
    }
}

impl<const D: usize, C: Classifier<D>> Classifier<D> for Noisy<'_, C> {
    type Input = C::Input;

    fn logits(&self, x: C::Input) -> Tensor<2> {
        self.inner.logits(self.noisy(x))
    }

    fn decide(&self, x: C::Input) -> Tensor<1, Int> {
        self.inner.decide(self.noisy(x))
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    fn abstain(&self) -> Option<usize> {
        self.inner.abstain()
    }

    fn domain(&self) -> Domain {
        self.inner.domain()
    }
}
