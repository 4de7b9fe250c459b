//! The fusion model: one encoder per modality and a fusion layer, then a classifier head.
//!
//! - text: hashed word ids → embedding bag (mean over the words present) → linear;
//! - bytes: byte embedding → 1-D convolution (kernel 5) → global max pool over the bytes
//!   present, beside a linear map of the 256-bin byte histogram;
//! - network: flow features in [0, 1] → 2-layer MLP.
//!
//! Fusion is `concat` (modality embeddings, each zeroed when absent, plus the presence flags)
//! or `gated` (a learned attention over the present modalities' embeddings, softmax-weighted).
//! Any modality may be missing for an example; the model predicts from the others. A model
//! may also have a subset of encoders (single-modality baselines).

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, PaddingConfig1d};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::MAX_CLASSES;
use crate::data::records::{BYTES, NETWORK, Schema, SecuritySet, TEXT, VOCAB};

/// How modality embeddings are combined.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    Concat,
    Gated,
}

/// One input modality.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Text,
    Bytes,
    Network,
}

impl Modality {
    /// Column in [`SecuritySet::present`].
    pub fn column(self) -> usize {
        match self {
            Modality::Text => TEXT,
            Modality::Bytes => BYTES,
            Modality::Network => NETWORK,
        }
    }
}

/// Everything needed to rebuild a fusion model; saved as `rampart.fusion` metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionSpec {
    pub class_names: Vec<String>,
    /// `(low, high)` per network feature: the box records are checked against and rescaled
    /// from.
    pub network_box: Vec<(f64, f64)>,
    pub modalities: Vec<Modality>,
    pub fusion: Fusion,
    /// Width of every modality embedding.
    pub dim: usize,
}

/// Byte embedding width.
const BYTE_DIM: usize = 32;
/// Largest embedding width a spec may ask for.
pub const MAX_DIM: usize = 1024;
/// Most network features a spec may declare.
pub const MAX_FEATURES: usize = 4096;

impl FusionSpec {
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn has(&self, m: Modality) -> bool {
        self.modalities.contains(&m)
    }

    /// The input attacks and smoothing work on unless told otherwise: the network features,
    /// or, for a model without them, its first modality.
    pub fn default_input(&self) -> Modality {
        if self.has(Modality::Network) {
            Modality::Network
        } else {
            self.modalities
                .first()
                .copied()
                .unwrap_or(Modality::Network)
        }
    }

    pub fn schema(&self) -> Schema {
        Schema {
            num_classes: self.num_classes(),
            network_box: self.network_box.clone(),
        }
    }

    /// Checks what a file could make absurd or unbuildable before any tensor is allocated:
    /// 2 to [`MAX_CLASSES`] classes, 1 to [`MAX_FEATURES`] network features each with a finite
    /// box `low < high`, a known, non-repeated, non-empty set of modalities and a width of 1
    /// to [`MAX_DIM`].
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=MAX_CLASSES).contains(&self.num_classes()) {
            return Err(format!(
                "{} class names; there must be 2 to {MAX_CLASSES}",
                self.num_classes()
            ));
        }
        if !(1..=MAX_FEATURES).contains(&self.network_box.len()) {
            return Err(format!(
                "network_box has {} features; there must be 1 to {MAX_FEATURES}",
                self.network_box.len()
            ));
        }
        if let Some(j) = self
            .network_box
            .iter()
            .position(|(lo, hi)| !(lo.is_finite() && hi.is_finite() && lo < hi))
        {
            return Err(format!("network_box[{j}] must have finite low < high"));
        }
        if self.modalities.is_empty() {
            return Err("modalities is empty".into());
        }
        let mut seen = self.modalities.clone();
        seen.sort_by_key(|m| m.column());
        seen.dedup();
        if seen.len() != self.modalities.len() {
            return Err(format!("modalities {:?} repeats one", self.modalities));
        }
        if !(1..=MAX_DIM).contains(&self.dim) {
            return Err(format!("dim is {}; it must be 1 to {MAX_DIM}", self.dim));
        }
        Ok(())
    }

    /// The tensors of this network in PyTorch layout, computed without building it (so a
    /// file can be checked before anything is allocated).
    pub fn tensor_shapes(&self) -> std::collections::BTreeMap<String, Vec<usize>> {
        let d = self.dim;
        let k = self.modalities.len();
        let gated = self.fusion == Fusion::Gated;
        let mut shapes = std::collections::BTreeMap::new();
        let mut linear = |name: &str, i: usize, o: usize| {
            shapes.insert(format!("{name}.weight"), vec![o, i]);
            shapes.insert(format!("{name}.bias"), vec![o]);
        };
        if self.has(Modality::Text) {
            linear("text_proj", d, d);
        }
        if self.has(Modality::Bytes) {
            linear("byte_hist", 256, d);
            linear("byte_proj", 2 * d, d);
        }
        if self.has(Modality::Network) {
            linear("net1", self.network_box.len(), d);
            linear("net2", d, d);
        }
        if gated {
            linear("gate_proj", d, d);
            linear("gate", d, 1);
        }
        linear("head1", if gated { d + k } else { k * d + k }, d);
        linear("head2", d, self.num_classes());
        if self.has(Modality::Text) {
            shapes.insert("text_embed.weight".into(), vec![VOCAB, d]);
        }
        if self.has(Modality::Bytes) {
            shapes.insert("byte_embed.weight".into(), vec![257, BYTE_DIM]);
            shapes.insert("byte_conv.weight".into(), vec![d, BYTE_DIM, 5]);
            shapes.insert("byte_conv.bias".into(), vec![d]);
        }
        shapes
    }

    pub fn init(&self, device: &Device) -> FusionModel {
        let d = self.dim;
        let k = self.modalities.len();
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        let text = self.has(Modality::Text);
        let bytes = self.has(Modality::Bytes);
        let network = self.has(Modality::Network);
        let gated = self.fusion == Fusion::Gated;
        FusionModel {
            text_embed: text.then(|| EmbeddingConfig::new(VOCAB, d).init(device)),
            text_proj: text.then(|| lin(d, d)),
            byte_embed: bytes.then(|| EmbeddingConfig::new(257, BYTE_DIM).init(device)),
            byte_conv: bytes.then(|| {
                Conv1dConfig::new(BYTE_DIM, d, 5)
                    .with_padding(PaddingConfig1d::Same)
                    .init(device)
            }),
            byte_hist: bytes.then(|| lin(256, d)),
            byte_proj: bytes.then(|| lin(2 * d, d)),
            net1: network.then(|| lin(self.network_box.len(), d)),
            net2: network.then(|| lin(d, d)),
            gate_proj: gated.then(|| lin(d, d)),
            gate: gated.then(|| lin(d, 1)),
            head1: lin(if gated { d + k } else { k * d + k }, d),
            head2: lin(d, self.num_classes()),
        }
    }
}

#[derive(Module, Debug)]
pub struct FusionModel {
    text_embed: Option<Embedding>,
    text_proj: Option<Linear>,
    byte_embed: Option<Embedding>,
    byte_conv: Option<Conv1d>,
    byte_hist: Option<Linear>,
    byte_proj: Option<Linear>,
    net1: Option<Linear>,
    net2: Option<Linear>,
    gate_proj: Option<Linear>,
    gate: Option<Linear>,
    head1: Linear,
    head2: Linear,
}

/// A batch as the model's layers see it: token and byte sequences already embedded (so
/// attacks can perturb the embeddings), network features in [0, 1].
#[derive(Debug, Clone)]
pub struct Parts {
    /// `[N, TEXT_LEN, dim]` when the model reads text.
    pub text: Option<Tensor<3>>,
    /// 1 where a word is, `[N, TEXT_LEN]`.
    pub text_mask: Tensor<2>,
    /// `[N, BYTES_LEN, 32]` when the model reads bytes.
    pub bytes: Option<Tensor<3>>,
    /// 1 where a byte is, `[N, BYTES_LEN]`.
    pub bytes_mask: Tensor<2>,
    pub histogram: Tensor<2>,
    pub network: Tensor<2>,
    /// `[N, 3]` presence flags (text, bytes, network).
    pub present: Tensor<2>,
}

impl Parts {
    /// The rows `rows` of every part (subsets, repeats).
    pub fn select(&self, rows: &Tensor<1, Int>) -> Parts {
        let pick2 = |t: &Tensor<2>| t.clone().select(0, rows.clone());
        let pick3 = |t: &Option<Tensor<3>>| t.clone().map(|t| t.select(0, rows.clone()));
        Parts {
            text: pick3(&self.text),
            text_mask: pick2(&self.text_mask),
            bytes: pick3(&self.bytes),
            bytes_mask: pick2(&self.bytes_mask),
            histogram: pick2(&self.histogram),
            network: pick2(&self.network),
            present: pick2(&self.present),
        }
    }
}

impl FusionModel {
    /// Embeds the batch's sequences; everything else passes through.
    pub fn parts(&self, set: &SecuritySet) -> Parts {
        Parts {
            text: self
                .text_embed
                .as_ref()
                .map(|e| e.forward(set.text.clone())),
            text_mask: set.text.clone().greater_elem(0).float(),
            bytes: self
                .byte_embed
                .as_ref()
                .map(|e| e.forward(set.bytes.clone())),
            bytes_mask: set.bytes.clone().greater_elem(0).float(),
            histogram: set.histogram.clone(),
            network: set.network.clone(),
            present: set.present.clone(),
        }
    }

    /// Logits `[N, classes]`.
    pub fn forward(&self, set: &SecuritySet) -> Tensor<2> {
        self.forward_parts(self.parts(set))
    }

    /// Logits `[N, classes]` from already embedded parts.
    pub fn forward_parts(&self, p: Parts) -> Tensor<2> {
        let mut encoded = self.encode_sequences(&p);
        if let Some(h) = self.encode_network(p.network.clone()) {
            encoded.push((h, p.present.clone().narrow(1, NETWORK, 1)));
        }
        self.fuse(encoded)
    }

    /// The text and bytes encoders' outputs `[N, dim]` with their presence flags `[N, 1]`, in
    /// modality order (what stays fixed while the network features are attacked or noised).
    pub fn encode_sequences(&self, p: &Parts) -> Vec<(Tensor<2>, Tensor<2>)> {
        let presence = |col: usize| p.present.clone().narrow(1, col, 1);
        let mut embeddings: Vec<(Tensor<2>, Tensor<2>)> = Vec::new();
        if let (Some(emb), Some(proj)) = (p.text.clone(), &self.text_proj) {
            let mask = p.text_mask.clone().unsqueeze_dim::<3>(2);
            let count = mask.clone().sum_dim(1).clamp_min(1.0);
            let bag = ((emb * mask).sum_dim(1) / count).squeeze_dim::<2>(1);
            embeddings.push((relu(proj.forward(bag)), presence(TEXT)));
        }
        if let (Some(emb), Some(conv), Some(hist), Some(proj)) = (
            p.bytes.clone(),
            &self.byte_conv,
            &self.byte_hist,
            &self.byte_proj,
        ) {
            let seq = conv.forward(emb.swap_dims(1, 2));
            let mask = p.bytes_mask.clone().unsqueeze_dim::<3>(1);
            let pooled = relu((seq + (mask - 1.0) * 1e4).max_dim(2).squeeze_dim::<2>(2));
            let h = relu(hist.forward(p.histogram.clone()));
            let both = Tensor::cat(vec![pooled, h], 1);
            embeddings.push((relu(proj.forward(both)), presence(BYTES)));
        }
        embeddings
    }

    /// The network encoder's output `[N, dim]` for features in [0, 1], if the model has one.
    pub fn encode_network(&self, network: Tensor<2>) -> Option<Tensor<2>> {
        match (&self.net1, &self.net2) {
            (Some(l1), Some(l2)) => Some(relu(l2.forward(relu(l1.forward(network))))),
            _ => None,
        }
    }

    /// Logits from the modality encodings (modality order) and their presence flags.
    pub fn fuse(&self, embeddings: Vec<(Tensor<2>, Tensor<2>)>) -> Tensor<2> {
        let n = embeddings[0].0.dims()[0];
        let flags = Tensor::cat(embeddings.iter().map(|(_, f)| f.clone()).collect(), 1);
        let fused = match (&self.gate_proj, &self.gate) {
            (Some(proj), Some(gate)) => {
                let scores: Vec<Tensor<2>> = embeddings
                    .iter()
                    .map(|(h, _)| gate.forward(proj.forward(h.clone()).tanh()))
                    .collect();
                let attention = softmax(Tensor::cat(scores, 1) + (flags.clone() - 1.0) * 1e4, 1);
                let mut fused = Tensor::<2>::zeros([n, embeddings[0].0.dims()[1]], &flags.device());
                for (m, (h, f)) in embeddings.iter().enumerate() {
                    fused = fused + h.clone() * f.clone() * attention.clone().narrow(1, m, 1);
                }
                Tensor::cat(vec![fused, flags], 1)
            }
            _ => {
                let mut parts: Vec<Tensor<2>> = embeddings
                    .iter()
                    .map(|(h, f)| h.clone() * f.clone())
                    .collect();
                parts.push(flags);
                Tensor::cat(parts, 1)
            }
        };
        self.head2.forward(relu(self.head1.forward(fused)))
    }

    pub fn num_classes(&self) -> usize {
        self.head2.weight.dims()[1]
    }

    /// Hashed word embeddings `[N, TEXT_LEN, dim]`, if the model reads text.
    pub fn embed_text(&self, ids: Tensor<2, Int>) -> Option<Tensor<3>> {
        self.text_embed.as_ref().map(|e| e.forward(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes computed without building the network are the built network's.
    #[test]
    fn tensor_shapes_match_the_built_network() {
        let device = Device::flex();
        for fusion in [Fusion::Gated, Fusion::Concat] {
            for modalities in [
                vec![Modality::Text, Modality::Bytes, Modality::Network],
                vec![Modality::Text],
                vec![Modality::Bytes, Modality::Network],
            ] {
                let spec = FusionSpec {
                    class_names: vec!["a".into(), "b".into(), "c".into()],
                    network_box: vec![(0.0, 1.0); 5],
                    modalities,
                    fusion,
                    dim: 6,
                };
                let built = crate::artifact::layout::tensor_shapes(&spec.init(&device));
                assert_eq!(
                    spec.tensor_shapes(),
                    built,
                    "{fusion:?} {:?}",
                    spec.modalities
                );
            }
        }
    }
}
