//! The fusion network as a classifier of one modality with the others fixed per example.
//!
//! Each adapter owns the fixed context of its examples (encoded once, when it is made) and
//! reads [`Rows`]: the perturbed modality with, per row, the example whose context it uses.
//! Subsets and noisy copies select rows of the input, and the context follows.

use burn::tensor::Tensor;

use super::{Classifier, Domain, Rows};
use crate::data::records::{NETWORK, SecuritySet};
use crate::model::fusion::{FusionModel, Modality, Parts};

/// Records encoded at once when an adapter is made.
const CHUNK: usize = 512;

/// The fusion model as a function of its network features `[N, F]` (rescaled to [0, 1] by
/// the feature box), text and bytes fixed. Their encodings are computed once; each call runs
/// only the network encoder and the fusion head.
#[derive(Debug, Clone)]
pub struct NetworkView {
    model: FusionModel,
    /// Text and bytes encodings `[N, dim]` with presence flags `[N, 1]`, per context row.
    fixed: Vec<(Tensor<2>, Tensor<2>)>,
    /// Presence of the network features `[N, 1]`.
    network_present: Tensor<2>,
    features: usize,
}

impl NetworkView {
    /// `model` should be a `valid()` copy; `context` holds the examples' other modalities.
    pub fn new(model: &FusionModel, context: &SecuritySet) -> Self {
        let n = context.len();
        let mut chunks: Vec<Vec<(Tensor<2>, Tensor<2>)>> = Vec::new();
        for start in (0..n).step_by(CHUNK) {
            let part = context.range(start, start + CHUNK);
            chunks.push(model.encode_sequences(&model.parts(&part)));
        }
        let slots = chunks.first().map_or(0, Vec::len);
        let fixed = (0..slots)
            .map(|s| {
                let h = chunks.iter().map(|c| c[s].0.clone()).collect();
                let p = chunks.iter().map(|c| c[s].1.clone()).collect();
                (Tensor::cat(h, 0), Tensor::cat(p, 0))
            })
            .collect();
        Self {
            model: model.clone(),
            fixed,
            network_present: context.present.clone().narrow(1, NETWORK, 1),
            features: context.network.dims()[1],
        }
    }

    /// The input for the context's own examples: their network features, row i reading
    /// context row i.
    pub fn input(context: &SecuritySet) -> Rows<2> {
        Rows::aligned(context.network.clone())
    }
}

impl Classifier<2> for NetworkView {
    type Input = Rows<2>;

    fn logits(&self, x: Rows<2>) -> Tensor<2> {
        let pick = |t: &Tensor<2>| t.clone().select(0, x.rows.clone());
        let mut encoded: Vec<(Tensor<2>, Tensor<2>)> =
            self.fixed.iter().map(|(h, p)| (pick(h), pick(p))).collect();
        if let Some(h) = self.model.encode_network(x.x) {
            encoded.push((h, pick(&self.network_present)));
        }
        self.model.fuse(encoded)
    }

    fn num_classes(&self) -> usize {
        self.model.num_classes()
    }

    fn domain(&self) -> Domain {
        Domain {
            shape: vec![self.features],
            bounds: Some((0.0, 1.0)),
            units: "fractions of each network feature's box",
        }
    }
}

/// The fusion model as a function of one sequence modality's embeddings (`[N, TEXT_LEN, dim]`
/// for text, `[N, BYTES_LEN, 32]` for bytes), the rest fixed. Embeddings are unbounded, so
/// attacks on them have no box.
#[derive(Debug, Clone)]
pub struct EmbeddingView {
    model: FusionModel,
    /// The context, embedded.
    parts: Parts,
    modality: Modality,
}

impl EmbeddingView {
    /// `modality` is `Text` or `Bytes` and must be one the model reads (see
    /// [`EmbeddingView::input`]).
    pub fn new(model: &FusionModel, context: &SecuritySet, modality: Modality) -> Self {
        Self {
            model: model.clone(),
            parts: model.parts(context),
            modality,
        }
    }

    /// The clean embeddings of the context's own examples for this view's modality, row i
    /// reading context row i; `None` if the model does not read the modality.
    pub fn input(&self) -> Option<Rows<3>> {
        let clean = match self.modality {
            Modality::Text => self.parts.text.clone(),
            Modality::Bytes => self.parts.bytes.clone(),
            Modality::Network => None,
        };
        clean.map(Rows::aligned)
    }

    fn parts_with(&self, x: Rows<3>) -> Parts {
        let parts = self.parts.select(&x.rows);
        match self.modality {
            Modality::Text => Parts {
                text: Some(x.x),
                ..parts
            },
            _ => Parts {
                bytes: Some(x.x),
                ..parts
            },
        }
    }
}

impl Classifier<3> for EmbeddingView {
    type Input = Rows<3>;

    fn logits(&self, x: Rows<3>) -> Tensor<2> {
        self.model.forward_parts(self.parts_with(x))
    }

    fn num_classes(&self) -> usize {
        self.model.num_classes()
    }

    fn domain(&self) -> Domain {
        let shape = match (self.modality, &self.parts.text, &self.parts.bytes) {
            (Modality::Text, Some(t), _) => t.dims()[1..].to_vec(),
            (_, _, Some(b)) => b.dims()[1..].to_vec(),
            _ => Vec::new(),
        };
        Domain {
            shape,
            bounds: None,
            units: "embedding units (unbounded)",
        }
    }
}
