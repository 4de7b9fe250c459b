//! A fitted detector on disk: one safetensors file, its tensors (each detector's sorted clean
//! calibration scores, the Mahalanobis means and precision) beside a `rampart.detector`
//! metadata entry holding the settings as JSON, with a format version. Written atomically;
//! read bounded, with every tensor's name, dtype and shape checked before it is used, and
//! bound to the model it was fitted for by the model file's SHA-256.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::adversarial::{
    Detector, Entropy, IsolationForest, Kind, Mahalanobis, Method, Msp, Settings, Squeeze, Vote,
    isolation,
};
use super::calibrate::{Calibration, Fusion};
use super::{DetectError, RunError};
use crate::artifact::files::{self, FileError};

/// The metadata key of the settings.
pub const KEY: &str = "rampart.detector";
/// The format this version writes and reads.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Sealed(#[from] crate::artifact::sealed::SealError),
    #[error("{path}: not a Rampart detector file: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// What a detector file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: u32,
    /// "adversarial".
    pub family: String,
    /// SHA-256 of the model the detector was fitted for (of its plaintext: the same for the
    /// model encrypted).
    pub model_sha256: String,
    /// The detectors, in the order their p-values are fused.
    pub detectors: Vec<Kind>,
    pub settings: Settings,
    /// The false-positive rate alarms are calibrated to, in (0, 1).
    pub fpr: f64,
    pub fusion: Fusion,
    /// The data it was fitted on, and how many examples.
    pub fit_data: String,
    pub fit_examples: usize,
    /// The data it was calibrated on, and which examples (evaluations refuse to reuse them).
    pub calibration_data: String,
    pub calibration_ids: Vec<usize>,
}

/// A fitted, calibrated set of detectors.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub header: Header,
    pub methods: Vec<Method>,
    pub calibrations: Vec<Calibration>,
}

/// f32 values as the little-endian bytes of a safetensors tensor.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn host(t: &Tensor<2>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor reads back")
}

impl Fitted {
    /// Writes the detector to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (method, cal) in self.methods.iter().zip(&self.calibrations) {
            let name = method.kind().name();
            owned.push((
                format!("{name}.calibration"),
                vec![cal.len()],
                f32_bytes(&cal.scores),
            ));
            if let Method::Isolation(forest) = method {
                let host1 = |t: &Tensor<1>| {
                    t.clone()
                        .into_data()
                        .convert::<f32>()
                        .try_into_vec::<f32>()
                        .expect("f32 tensor reads back")
                };
                let features = forest.feature.clone().float();
                for (name, values) in [
                    ("isolation.feature", host1(&features)),
                    ("isolation.threshold", host1(&forest.threshold)),
                    ("isolation.leaf", host1(&forest.leaf)),
                    ("isolation.value", host1(&forest.value)),
                    (
                        "isolation.meta",
                        vec![forest.norm as f32, forest.width as f32],
                    ),
                ] {
                    owned.push((name.into(), vec![values.len()], f32_bytes(&values)));
                }
            }
            if let Method::Mahalanobis(m) = method {
                owned.push((
                    "mahalanobis.means".into(),
                    m.means.dims().to_vec(),
                    f32_bytes(&host(&m.means)),
                ));
                owned.push((
                    "mahalanobis.precision".into(),
                    m.precision.dims().to_vec(),
                    f32_bytes(&host(&m.precision)),
                ));
            }
        }
        let header = serde_json::to_string(&self.header).expect("detector header serialises");
        write_file(path, &owned, header)
    }

    /// Reads a detector file, checking everything before building tensors on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, StoreError> {
        let (bytes, text) = read_file(path)?;
        let bad = |reason: String| StoreError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let header: Header =
            serde_json::from_str(&text).map_err(|e| bad(format!("{KEY} metadata: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!(
                "format {} (this rampart reads {FORMAT}); fit the detector again",
                header.format
            )));
        }
        if !(header.fpr > 0.0 && header.fpr < 1.0) {
            return Err(bad(format!("fpr {} is not in (0, 1)", header.fpr)));
        }
        if header.family != "adversarial" {
            return Err(bad(format!(
                "family {:?} where adversarial-input detectors were expected",
                header.family
            )));
        }
        check_sha256(&header.model_sha256).map_err(bad)?;
        let mut kinds = header.detectors.clone();
        kinds.sort();
        kinds.dedup();
        if header.detectors.is_empty() || kinds.len() != header.detectors.len() {
            return Err(bad(
                "it must list each detector once, and at least one".into()
            ));
        }
        // The settings go through the same checks as the flags that set them.
        let squeeze = header.settings.squeeze;
        Squeeze::new(squeeze.bits, squeeze.median).map_err(|e| bad(e.to_string()))?;
        let vote = header.settings.vote;
        Vote::new(vote.sigma, vote.copies).map_err(|e| bad(e.to_string()))?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str, rank: usize| read_f32(&tensors, name, rank).map_err(bad);
        let mut methods = Vec::new();
        let mut calibrations = Vec::new();
        for kind in &header.detectors {
            let (_, scores) = read(&format!("{}.calibration", kind.name()), 1)?;
            if scores.len() != header.calibration_ids.len() {
                return Err(bad(format!(
                    "{}.calibration has {} scores for {} calibration examples",
                    kind.name(),
                    scores.len(),
                    header.calibration_ids.len()
                )));
            }
            calibrations.push(Calibration::new(scores, device).map_err(|e| bad(e.to_string()))?);
            methods.push(match kind {
                Kind::Msp => Method::Msp(Msp),
                Kind::Entropy => Method::Entropy(Entropy),
                Kind::Squeeze => Method::Squeeze(header.settings.squeeze),
                Kind::Vote => Method::Vote(header.settings.vote),
                Kind::Isolation => {
                    let total = isolation::TREES * isolation::NODES;
                    let table = |name: &str| -> Result<Vec<f32>, StoreError> {
                        let (shape, v) = read(name, 1)?;
                        if shape != [total] {
                            return Err(bad(format!("{name} has shape {shape:?}, expected [{total}]")));
                        }
                        Ok(v)
                    };
                    let (meta_shape, meta) = read("isolation.meta", 1)?;
                    if meta_shape != [2] || meta[0] <= 0.0 || meta[1] < 1.0 || meta[1].fract() != 0.0 {
                        return Err(bad("isolation.meta is not [c(ψ) > 0, feature width]".into()));
                    }
                    let width = meta[1] as usize;
                    let feature = table("isolation.feature")?;
                    if feature.iter().any(|f| f.fract() != 0.0 || *f < 0.0 || *f >= meta[1]) {
                        return Err(bad(format!("isolation.feature holds indices outside 0..{width}")));
                    }
                    let leaf = table("isolation.leaf")?;
                    if leaf.iter().any(|l| *l != 0.0 && *l != 1.0) {
                        return Err(bad("isolation.leaf holds values other than 0 and 1".into()));
                    }
                    let ints: Vec<i64> = feature.iter().map(|f| *f as i64).collect();
                    let tensor = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [total]), device);
                    Method::Isolation(IsolationForest {
                        feature: Tensor::from_data(TensorData::new(ints, [total]), device),
                        threshold: tensor(table("isolation.threshold")?),
                        leaf: tensor(leaf),
                        value: tensor(table("isolation.value")?),
                        norm: f64::from(meta[0]),
                        width,
                    })
                }
                Kind::Mahalanobis => {
                    let (ms, means) = read("mahalanobis.means", 2)?;
                    let (ps, precision) = read("mahalanobis.precision", 2)?;
                    if ps[0] != ps[1] || ms[1] != ps[0] {
                        return Err(bad(format!(
                            "mahalanobis.means {ms:?} and mahalanobis.precision {ps:?} do not fit together"
                        )));
                    }
                    Method::Mahalanobis(Mahalanobis {
                        means: Tensor::from_data(TensorData::new(means, [ms[0], ms[1]]), device),
                        precision: Tensor::from_data(
                            TensorData::new(precision, [ps[0], ps[1]]),
                            device,
                        ),
                    })
                }
            });
        }
        Ok(Self {
            header,
            methods,
            calibrations,
        })
    }

    /// [`Fitted::load`] for the workload's model, refusing a detector fitted for another one.
    pub fn load_for(path: &Path, work: &crate::workload::Workload) -> Result<Self, RunError> {
        let fitted = Self::load(path, &work.device.device)?;
        check_model(path, &fitted.header.model_sha256, work)?;
        Ok(fitted)
    }
}

/// The bytes of a detector file (decrypted, if it is sealed) and the JSON settings under its
/// [`KEY`], read bounded.
pub fn read_file(path: &Path) -> Result<(Vec<u8>, String), StoreError> {
    let bytes = crate::artifact::sealed::read(path, files::DETECTOR)?.bytes;
    let bad = |reason: String| StoreError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(KEY))
        .ok_or_else(|| {
            bad(format!(
                "no {KEY} metadata (is it a model file? fit one with `rampart detect fit`)"
            ))
        })?
        .clone();
    Ok((bytes, text))
}

/// What a detector file holds: "adversarial", "drift" or "extraction".
pub fn family(path: &Path) -> Result<String, StoreError> {
    let (_, text) = read_file(path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| StoreError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{KEY} metadata: {e}"),
        })?;
    match value.get("family").and_then(|f| f.as_str()) {
        Some(f @ ("adversarial" | "drift" | "extraction")) => Ok(f.to_string()),
        other => Err(StoreError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "family {other:?}; this rampart reads adversarial, drift and extraction detectors"
            ),
        }),
    }
}

/// Writes f32 tensors (name, shape, little-endian bytes) and the settings JSON atomically.
pub fn write_file(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    header: String,
) -> Result<(), StoreError> {
    let werr = |e: &dyn std::fmt::Display| {
        StoreError::File(FileError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    };
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, bytes) in tensors {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| werr(&e))?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([(KEY.to_string(), header)]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| werr(&e))?;
    files::write_atomic(path, &bytes)?;
    Ok(())
}

/// An F32 tensor of rank `rank` with finite values: its shape and values.
pub fn read_f32(
    tensors: &SafeTensors,
    name: &str,
    rank: usize,
) -> Result<(Vec<usize>, Vec<f32>), String> {
    let t = tensors
        .tensor(name)
        .map_err(|_| format!("tensor {name} is missing"))?;
    if t.dtype() != Dtype::F32 || t.shape().len() != rank {
        return Err(format!(
            "tensor {name} is {:?} of shape {:?}, expected F32 of rank {rank}",
            t.dtype(),
            t.shape()
        ));
    }
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(format!("tensor {name} has NaN or infinite values"));
    }
    Ok((t.shape().to_vec(), values))
}

/// Checks that `digest` looks like a SHA-256 (64 hex digits).
pub fn check_sha256(digest: &str) -> Result<(), String> {
    if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("model_sha256 is not a SHA-256 digest (64 hex digits)".into())
    }
}

/// Refuses a detector file fitted for another model than the workload's.
pub fn check_model(
    path: &Path,
    model_sha256: &str,
    work: &crate::workload::Workload,
) -> Result<(), DetectError> {
    check_opened(path, model_sha256, &work.opened)
}

/// Refuses a detector file fitted for another model than `opened`.
pub fn check_opened(
    path: &Path,
    model_sha256: &str,
    opened: &crate::artifact::Opened,
) -> Result<(), DetectError> {
    if model_sha256 == opened.sha256 {
        return Ok(());
    }
    Err(DetectError::Invalid(format!(
        "--detector {}: was fitted for another model (SHA-256 {}…), not {}; fit one for this model with `rampart detect fit`",
        path.display(),
        &model_sha256[..12.min(model_sha256.len())],
        opened.path.display()
    )))
}
