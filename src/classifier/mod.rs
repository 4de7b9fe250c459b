//! The one classifier interface that evaluation, attacks, smoothing, training objectives and
//! (later) detectors and explainers are written against.
//!
//! A [`Classifier`] maps a batch of inputs to logits (which attacks differentiate), has a
//! decision rule (which robustness is judged on, and which may include an explicit "no
//! decision"), a number of classes and an input [`Domain`]. What it reads is an [`Input`]: the
//! tensor that attacks perturb and smoothing adds noise to, plus, for adapters, the index of
//! each row's fixed context. Selecting rows of an input (a subset still to attack, noisy copies
//! of one example) selects the context with them, so no engine needs to know about it.
//!
//! Implementations: image networks and ensembles ([`ImageModel`]); the fusion network's
//! adapters over one modality with the others fixed ([`fusion::NetworkView`],
//! [`fusion::EmbeddingView`]).

pub mod fusion;
pub mod noisy;

use burn::tensor::{Int, Tensor};
use serde::Serialize;

use crate::model::ensemble::{self, Strategy};
use crate::model::image::IMAGE_SHAPE;
use crate::model::{Ensemble, ImageNet};

/// What a classifier reads: a batch whose first dimension is the example.
pub trait Input<const D: usize>: Clone {
    /// The tensor attacks perturb and smoothing adds noise to, `[N, ...]`.
    fn x(&self) -> &Tensor<D>;
    /// The same rows with `x` in place of the tensor.
    fn with_x(&self, x: Tensor<D>) -> Self;
    /// The rows at `rows` (a subset, or repeats).
    fn select(&self, rows: Tensor<1, Int>) -> Self;
    /// Rows `start..end` (clamped to the batch; `start` below its length), without a gather.
    fn range(&self, start: usize, end: usize) -> Self;
    fn len(&self) -> usize {
        self.x().dims()[0]
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<const D: usize> Input<D> for Tensor<D> {
    fn x(&self) -> &Tensor<D> {
        self
    }

    fn with_x(&self, x: Tensor<D>) -> Self {
        x
    }

    fn select(&self, rows: Tensor<1, Int>) -> Self {
        self.clone().select(0, rows)
    }

    fn range(&self, start: usize, end: usize) -> Self {
        let end = end.min(self.dims()[0]);
        self.clone().narrow(0, start, end - start)
    }
}

/// Inputs of an adapter with fixed per-example context: each row of `x` with the index of its
/// context row in the adapter.
#[derive(Debug, Clone)]
pub struct Rows<const D: usize> {
    pub x: Tensor<D>,
    /// `[N]` indices into the adapter's fixed rows.
    pub rows: Tensor<1, Int>,
}

impl<const D: usize> Rows<D> {
    /// Row `i` of `x` reads context row `i`.
    pub fn aligned(x: Tensor<D>) -> Self {
        let n = x.dims()[0];
        let rows = Tensor::<1, Int>::arange(0..n as i64, &x.device());
        Self { x, rows }
    }
}

impl<const D: usize> Input<D> for Rows<D> {
    fn x(&self) -> &Tensor<D> {
        &self.x
    }

    fn with_x(&self, x: Tensor<D>) -> Self {
        Self {
            x,
            rows: self.rows.clone(),
        }
    }

    fn select(&self, rows: Tensor<1, Int>) -> Self {
        Self {
            x: self.x.clone().select(0, rows.clone()),
            rows: self.rows.clone().select(0, rows),
        }
    }

    fn range(&self, start: usize, end: usize) -> Self {
        Self {
            x: Input::range(&self.x, start, end),
            rows: self
                .rows
                .clone()
                .narrow(0, start, end.min(self.len()) - start),
        }
    }
}

/// Where a classifier's inputs live.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Domain {
    /// The shape of one example, e.g. `[1, 28, 28]` or `[8]`.
    pub shape: Vec<usize>,
    /// Every coordinate lies in `[low, high]`; `None` for unbounded inputs (embeddings).
    pub bounds: Option<(f64, f64)>,
    /// The unit of distances (epsilon, sigma, radii), for reports.
    pub units: &'static str,
}

impl Domain {
    /// Pixels of 28x28 grey images in [0, 1].
    pub fn pixels() -> Self {
        Self {
            shape: IMAGE_SHAPE.to_vec(),
            bounds: Some((0.0, 1.0)),
            units: "pixels in [0, 1]",
        }
    }

    /// The largest L∞ distance two inputs of the domain can have (`None`: unbounded).
    pub fn linf_diameter(&self) -> Option<f64> {
        self.bounds.map(|(lo, hi)| hi - lo)
    }

    /// The largest L2 distance two inputs of the domain can have (`None`: unbounded).
    pub fn l2_diameter(&self) -> Option<f64> {
        let d: usize = self.shape.iter().product();
        self.linf_diameter().map(|w| w * (d as f64).sqrt())
    }
}

/// A model attacks, smoothing and evaluation can use.
pub trait Classifier<const D: usize> {
    type Input: Input<D>;

    /// Differentiable scores `[N, classes]` an attacker ascends; for an ensemble, its
    /// surrogate (mean logits, or the log of the mean probabilities).
    fn logits(&self, x: Self::Input) -> Tensor<2>;

    /// The decision robustness is judged on, `[N]`: a class below [`num_classes`], or
    /// [`abstain`]'s "no decision", which is never correct. Default: argmax of the logits.
    ///
    /// [`num_classes`]: Classifier::num_classes
    /// [`abstain`]: Classifier::abstain
    fn decide(&self, x: Self::Input) -> Tensor<1, Int> {
        self.logits(x).argmax(1).squeeze_dim::<1>(1)
    }

    fn num_classes(&self) -> usize;

    /// The penultimate layer's activations `[N, F]` (what the last layer reads), for
    /// detectors that model the representation; `None` where there is no single such layer
    /// (ensembles, adapters).
    fn features(&self, _x: Self::Input) -> Option<Tensor<2>> {
        None
    }

    /// The decision meaning "no decision" (index `num_classes`), for models that can refuse.
    fn abstain(&self) -> Option<usize> {
        None
    }

    /// Distinct decisions: the classes, plus "no decision" if the model has it.
    fn decisions(&self) -> usize {
        self.num_classes() + usize::from(self.abstain().is_some())
    }

    fn domain(&self) -> Domain;
}

impl Classifier<4> for ImageNet {
    type Input = Tensor<4>;

    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }

    fn num_classes(&self) -> usize {
        ImageNet::num_classes(self)
    }

    fn features(&self, x: Tensor<4>) -> Option<Tensor<2>> {
        Some(ImageNet::features(self, x))
    }

    fn domain(&self) -> Domain {
        Domain::pixels()
    }
}

impl Classifier<4> for Ensemble {
    type Input = Tensor<4>;

    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let w = self.weight_tensor(&x.device());
        ensemble::surrogate(self.strategy, self.member_logits(x), &w)
    }

    fn decide(&self, x: Tensor<4>) -> Tensor<1, Int> {
        let w = self.weight_tensor(&x.device());
        ensemble::decide(self.strategy, self.member_logits(x), &w)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn abstain(&self) -> Option<usize> {
        (self.strategy == Strategy::Unanimous).then_some(self.num_classes)
    }

    fn domain(&self) -> Domain {
        Domain::pixels()
    }
}

/// A single image network or an ensemble, in inference mode: what image workloads run.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ImageModel {
    Single(ImageNet),
    Ensemble(Ensemble),
}

impl Classifier<4> for ImageModel {
    type Input = Tensor<4>;

    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Single(m) => m.logits(x),
            Self::Ensemble(e) => e.logits(x),
        }
    }

    fn decide(&self, x: Tensor<4>) -> Tensor<1, Int> {
        match self {
            Self::Single(m) => m.decide(x),
            Self::Ensemble(e) => e.decide(x),
        }
    }

    fn num_classes(&self) -> usize {
        match self {
            Self::Single(m) => Classifier::num_classes(m),
            Self::Ensemble(e) => Classifier::num_classes(e),
        }
    }

    fn abstain(&self) -> Option<usize> {
        match self {
            Self::Single(_) => None,
            Self::Ensemble(e) => e.abstain(),
        }
    }

    fn features(&self, x: Tensor<4>) -> Option<Tensor<2>> {
        match self {
            Self::Single(m) => Classifier::features(m, x),
            Self::Ensemble(_) => None,
        }
    }

    fn domain(&self) -> Domain {
        Domain::pixels()
    }
}
