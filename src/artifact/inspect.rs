//! `rampart inspect`: what a model file or manifest holds, in one schema for every kind.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::{AnyModel, ModelInfo, Opened, layout};
use crate::model::Arch;
use crate::train::config::TrainConfig;

/// One ensemble member as inspected (its digest was checked when the manifest was opened).
#[derive(Debug, Clone, Serialize)]
pub struct MemberInfo {
    pub path: PathBuf,
    pub arch: Arch,
    pub sha256: String,
    /// Normalised weight.
    pub weight: f64,
    pub validation_accuracy: Option<f64>,
}

/// What `inspect` reports; every key is present for every kind (null where it does not apply).
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub model: ModelInfo,
    /// The image or fusion spec; for an ensemble, its strategy and weights.
    pub spec: serde_json::Value,
    pub parameters: usize,
    /// Tensor names and shapes in PyTorch layout (`memberI/name` for an ensemble).
    pub tensors: BTreeMap<String, Vec<usize>>,
    /// The training config (migrated to the current layout), if the file has one.
    pub config: Option<TrainConfig>,
    /// The training summary as written.
    pub summary: Option<serde_json::Value>,
    /// The training data's name, if recorded.
    pub dataset: Option<String>,
    /// Every string metadata key (for an ensemble: none).
    pub metadata: BTreeMap<String, String>,
    /// Ensemble members, in manifest order.
    pub members: Option<Vec<MemberInfo>>,
}

impl Inspection {
    pub fn of(opened: &Opened) -> Self {
        let (spec, tensors, metadata, members) = match &opened.model {
            AnyModel::Image {
                net,
                spec,
                metadata,
            } => (
                serde_json::to_value(spec).unwrap_or_default(),
                layout::tensor_shapes(net),
                Some(metadata),
                None,
            ),
            AnyModel::Fusion {
                net,
                spec,
                metadata,
            } => (
                serde_json::to_value(spec).unwrap_or_default(),
                layout::tensor_shapes(net),
                Some(metadata),
                None,
            ),
            AnyModel::Ensemble {
                ensemble, manifest, ..
            } => {
                let tensors = ensemble
                    .members
                    .iter()
                    .enumerate()
                    .flat_map(|(i, m)| {
                        layout::tensor_shapes(m)
                            .into_iter()
                            .map(move |(k, v)| (format!("member{i}/{k}"), v))
                    })
                    .collect();
                let members = manifest
                    .members
                    .iter()
                    .zip(&ensemble.members)
                    .zip(&ensemble.weights)
                    .map(|((m, net), w)| MemberInfo {
                        path: m.path.clone(),
                        arch: net.arch(),
                        sha256: m.sha256.clone(),
                        weight: *w,
                        validation_accuracy: m.validation_accuracy,
                    })
                    .collect();
                let spec = serde_json::json!({
                    "strategy": manifest.strategy,
                    "weights_from": manifest.weights_from,
                });
                (spec, tensors, None, Some(members))
            }
        };
        let parameters = tensors.values().map(|s| s.iter().product::<usize>()).sum();
        Self {
            model: opened.info(),
            spec,
            parameters,
            tensors,
            config: metadata.and_then(|m| m.config()),
            summary: metadata.and_then(|m| m.json(super::metadata::SUMMARY)),
            dataset: metadata.and_then(|m| m.dataset()),
            metadata: metadata.map(|m| m.raw.clone()).unwrap_or_default(),
            members,
        }
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.model;
        writeln!(f, "file:        {}", m.path.display())?;
        writeln!(f, "model:       {} ({})", m.description, m.kind)?;
        writeln!(f, "classes:     {}", m.classes)?;
        writeln!(f, "sha256:      {}", m.sha256)?;
        writeln!(f, "parameters:  {}", self.parameters)?;
        if let Some(d) = &self.dataset {
            writeln!(f, "trained on:  {d}")?;
        }
        writeln!(f, "spec:        {}", self.spec)?;
        if let Some(members) = &self.members {
            writeln!(f, "members (every digest checked):")?;
            for mb in members {
                writeln!(
                    f,
                    "  {:<40} {:<4} weight {:.4}  sha256 {}{}",
                    mb.path.display(),
                    mb.arch.to_string(),
                    mb.weight,
                    &mb.sha256[..16.min(mb.sha256.len())],
                    mb.validation_accuracy
                        .map(|a| format!("  validation accuracy {:.2}%", 100.0 * a))
                        .unwrap_or_default()
                )?;
            }
        }
        writeln!(f, "tensors (PyTorch layout):")?;
        for (name, shape) in &self.tensors {
            writeln!(f, "  {name:<24} {shape:?}")?;
        }
        if let Some(s) = &self.summary {
            writeln!(f, "summary:\n{}", pretty(s))?;
        }
        if let Some(c) = &self.config {
            let c = serde_json::to_value(c).unwrap_or_default();
            writeln!(f, "config:\n{}", pretty(&c))?;
        }
        Ok(())
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}
