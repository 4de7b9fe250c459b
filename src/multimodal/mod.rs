//! Multimodal security models: text, raw bytes and network-flow features fused into one
//! classifier, trained, attacked and certified like the image models.
//!
//! - [`data`]: the JSONL record format, its validating loader and the SYNTHETIC generator.
//! - [`model`]: per-modality encoders, concat or gated-attention fusion, missing modalities.
//! - [`train`]: the training loop (standard, Gaussian noise or PGD on the network features).
//!
//! Attacks and smoothing see the model through a view of one modality with the others fixed
//! per example: [`NetworkView`] (network features in their box, rescaled to [0, 1]) and
//! [`EmbeddingView`] (the embedded words or bytes, unbounded).

pub mod data;
pub mod model;
pub mod train;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor};

use crate::attack::Logits;
use crate::certify::BaseClassifier;
use crate::eval::{Confusion, EvalReport};
use crate::store::{self, FUSION_KEY, StoreError};
use data::SecuritySet;
use model::{FusionModel, FusionSpec, Modality, Parts};

/// A fusion model read from disk.
pub struct LoadedFusion {
    pub model: FusionModel,
    pub spec: FusionSpec,
    pub metadata: BTreeMap<String, String>,
}

/// Whether the file at `path` is a fusion model (has `rampart.fusion` metadata).
pub fn is_fusion_file(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| store::read_header(&b, path).ok())
        .is_some_and(|(_, meta)| meta.contains_key(FUSION_KEY))
}

/// Loads a fusion model, checking every tensor against its spec.
pub fn load(path: &Path, device: &Device) -> Result<LoadedFusion, StoreError> {
    let bytes = store::read_file(path)?;
    let (found, metadata) = store::read_header(&bytes, path)?;
    let spec: FusionSpec = metadata
        .get(FUSION_KEY)
        .ok_or_else(|| StoreError::BadSpec {
            path: path.to_path_buf(),
            reason: format!("no {FUSION_KEY} metadata: not a fusion model"),
        })
        .and_then(|json| {
            serde_json::from_str(json).map_err(|e| StoreError::BadSpec {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        })?;
    let mut model = spec.init(device);
    store::apply_tensors(&mut model, bytes, &found, path, "fusion")?;
    Ok(LoadedFusion {
        model,
        spec,
        metadata,
    })
}

/// Saves a fusion model in PyTorch layout with its spec and `extra` metadata, atomically.
pub fn save(
    model: &FusionModel,
    spec: &FusionSpec,
    extra: &BTreeMap<String, String>,
    path: &Path,
) -> Result<(), StoreError> {
    let mut metadata = extra.clone();
    metadata.insert(
        FUSION_KEY.into(),
        serde_json::to_string(spec).expect("spec serialises"),
    );
    store::save_module(model, &metadata, path)
}

/// Accuracy, per-class accuracy and confusion matrix of `model` (a `valid()` copy) on `set`,
/// in batches.
pub fn evaluate(model: &FusionModel, set: &SecuritySet, batch: usize) -> EvalReport {
    let mut confusion = Confusion::new(model.num_classes(), &set.labels.device());
    for s in (0..set.len()).step_by(batch.max(1)) {
        let b = set.range(s, s + batch);
        confusion.add(
            b.labels.clone(),
            model.forward(&b).argmax(1).squeeze_dim::<1>(1),
        );
    }
    confusion.report()
}

/// The fusion model as a function of its network features `[N, F]` (in [0, 1]), with the
/// other modalities of each example fixed by `context`. Their encodings are computed once, when
/// the view is made; each call runs only the network encoder and the fusion head.
pub struct NetworkView<'a> {
    model: &'a FusionModel,
    /// Text and bytes encodings `[N, dim]` with presence flags `[N, 1]`, per context row.
    fixed: Vec<(Tensor<2>, Tensor<2>)>,
    /// Presence of the network features `[N, 1]`.
    network_present: Tensor<2>,
}

impl<'a> NetworkView<'a> {
    /// `model` should be a `valid()` copy; `context` holds the examples' other modalities.
    pub fn new(model: &'a FusionModel, context: &SecuritySet) -> Self {
        let parts = model.parts(context);
        Self {
            model,
            fixed: model.encode_sequences(&parts),
            network_present: context.present.clone().narrow(1, data::NETWORK, 1),
        }
    }

    fn rows(&self, rows: &Tensor<1, Int>) -> Self {
        let pick = |t: &Tensor<2>| t.clone().select(0, rows.clone());
        Self {
            model: self.model,
            fixed: self.fixed.iter().map(|(h, p)| (pick(h), pick(p))).collect(),
            network_present: pick(&self.network_present),
        }
    }
}

impl Logits<2> for NetworkView<'_> {
    fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        let mut encoded = self.fixed.clone();
        if let Some(h) = self.model.encode_network(x) {
            encoded.push((h, self.network_present.clone()));
        }
        self.model.fuse(encoded)
    }

    fn restrict(&self, rows: &Tensor<1, Int>) -> Option<Self> {
        Some(self.rows(rows))
    }
}

/// For smoothing, the view holds the whole set and `ids` pick each noisy row's example.
impl BaseClassifier<2> for NetworkView<'_> {
    fn classify(&self, x: Tensor<2>, ids: Tensor<1, Int>) -> Tensor<1, Int> {
        self.rows(&ids).logits(x).argmax(1).squeeze_dim::<1>(1)
    }

    fn num_classes(&self) -> usize {
        self.model.num_classes()
    }
}

/// The fusion model as a function of one sequence modality's embeddings (`[N, TEXT_LEN,
/// dim]` for text, `[N, BYTES_LEN, 32]` for bytes), the rest fixed by `context`. Embeddings
/// are unbounded, so attacks on them have no box.
pub struct EmbeddingView<'a> {
    pub model: &'a FusionModel,
    pub context: SecuritySet,
    /// `Text` or `Bytes`.
    pub modality: Modality,
}

impl EmbeddingView<'_> {
    /// The clean embeddings of `context` for this view's modality.
    pub fn embeddings(&self) -> Option<Tensor<3>> {
        let parts = self.model.parts(&self.context);
        match self.modality {
            Modality::Text => parts.text,
            Modality::Bytes => parts.bytes,
            Modality::Network => None,
        }
    }
}

impl Logits<3> for EmbeddingView<'_> {
    fn logits(&self, x: Tensor<3>) -> Tensor<2> {
        let parts = self.model.parts(&self.context);
        self.model.forward_parts(match self.modality {
            Modality::Text => Parts {
                text: Some(x),
                ..parts
            },
            _ => Parts {
                bytes: Some(x),
                ..parts
            },
        })
    }

    fn input_box(&self) -> Option<(f64, f64)> {
        None
    }

    fn restrict(&self, rows: &Tensor<1, Int>) -> Option<Self> {
        Some(Self {
            model: self.model,
            context: self.context.select(rows.clone()),
            modality: self.modality,
        })
    }
}
