//! Saving and loading models as safetensors in PyTorch layout, and atomic file writes.
//!
//! A saved file holds the tensors a PyTorch module with the same attribute names expects
//! (`conv1.weight` `[out, in, kh, kw]`, `fc1.weight` `[out, in]`, `*.bias`), so
//! `model.load_state_dict(safetensors.torch.load_file(path))` works, plus string metadata:
//! `rampart.spec` (architecture, classes, normalisation) and whatever summary the caller adds.
//! Files written by PyTorch load too; their architecture is inferred from the tensor names.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Device;

use crate::model::{Arch, Classifier, ModelSpec};

/// Metadata key holding the JSON [`ModelSpec`].
pub const SPEC_KEY: &str = "rampart.spec";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: model file not found")]
    Missing { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: metadata {SPEC_KEY} is not valid: {reason}")]
    BadSpec { path: PathBuf, reason: String },
    #[error(
        "{path}: cannot tell the architecture: no {SPEC_KEY} metadata and the tensor names match neither mlp (fc1..fc3) nor cnn (conv1, conv2, fc1, fc2); pass --arch"
    )]
    UnknownArch { path: PathBuf },
    #[error("{path}: does not fit the {arch} architecture:\n{problems}")]
    Mismatch {
        path: PathBuf,
        arch: String,
        problems: String,
    },
    #[error(
        "{path}: is a multimodal fusion model (rampart.fusion metadata); give it JSONL records with --records"
    )]
    Fusion { path: PathBuf },
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// A model read from disk, with what its file says about it.
pub struct Loaded {
    pub model: Classifier,
    pub spec: ModelSpec,
    /// All string metadata in the file (training summary, config, ...).
    pub metadata: BTreeMap<String, String>,
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, then rename. A
/// reader sees the old file or the new one, never a torn one. Creates parent directories.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Saves `model` in PyTorch layout with its spec and `extra` metadata. Atomic: an existing
/// file at `path` is replaced only once the new one is complete.
pub fn save_model(
    model: &Classifier,
    spec: &ModelSpec,
    extra: &BTreeMap<String, String>,
    path: &Path,
) -> Result<(), StoreError> {
    let mut metadata = extra.clone();
    metadata.insert(
        SPEC_KEY.into(),
        serde_json::to_string(spec).expect("spec serialises"),
    );
    save_module(model, &metadata, path)
}

/// Saves any module in PyTorch layout with string `metadata`, atomically.
pub fn save_module<M: ModuleSnapshot>(
    model: &M,
    metadata: &BTreeMap<String, String>,
    path: &Path,
) -> Result<(), StoreError> {
    let write_err = |reason: String| StoreError::Write {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| write_err(e.to_string()))?;
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true)
        .overwrite(true);
    for (k, v) in metadata {
        store = store.metadata(k.clone(), v.clone());
    }
    model
        .save_into(&mut store)
        .map_err(|e| write_err(e.to_string()))
}

/// The tensor names and shapes a model of `spec` has in PyTorch layout.
pub fn expected_tensors(spec: &ModelSpec, device: &Device) -> BTreeMap<String, Vec<usize>> {
    tensor_shapes(&spec.init(device))
}

/// The tensor names and shapes `model` has in PyTorch layout.
pub fn tensor_shapes<M: ModuleSnapshot>(model: &M) -> BTreeMap<String, Vec<usize>> {
    model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect()
}

/// Writes one JSON object per line (metrics, records) atomically.
pub fn write_jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> std::io::Result<()> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Loads a model saved by Rampart or by PyTorch. `arch` overrides the architecture when the
/// file has no Rampart metadata. Every tensor name and shape is checked; all problems are
/// named in one error.
pub fn load_model(path: &Path, arch: Option<Arch>, device: &Device) -> Result<Loaded, StoreError> {
    load_model_bytes(read_file(path)?, path, arch, device)
}

/// Reads a whole model file; a missing file is [`StoreError::Missing`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            StoreError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// [`load_model`] on the bytes of the file at `path` (already read, e.g. to check a digest).
pub fn load_model_bytes(
    bytes: Vec<u8>,
    path: &Path,
    arch: Option<Arch>,
    device: &Device,
) -> Result<Loaded, StoreError> {
    let (found, metadata) = read_header(&bytes, path)?;

    if metadata.contains_key(FUSION_KEY) {
        return Err(StoreError::Fusion {
            path: path.to_path_buf(),
        });
    }
    let spec = match metadata.get(SPEC_KEY) {
        Some(json) => serde_json::from_str::<ModelSpec>(json).map_err(|e| StoreError::BadSpec {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?,
        None => infer_spec(&found, arch).ok_or_else(|| StoreError::UnknownArch {
            path: path.to_path_buf(),
        })?,
    };

    let mut model = spec.init(device);
    apply_tensors(&mut model, bytes, &found, path, &spec.arch.to_string())?;
    Ok(Loaded {
        model,
        spec,
        metadata,
    })
}

/// A metadata value parsed as JSON (`rampart.config`, `rampart.summary`), if it is there.
pub fn metadata_json(metadata: &BTreeMap<String, String>, key: &str) -> Option<serde_json::Value> {
    metadata
        .get(key)
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
}

/// Metadata key of a fusion model's spec.
pub const FUSION_KEY: &str = "rampart.fusion";

/// Tensor names and shapes and string metadata of a safetensors file, from its header.
pub type Header = (
    BTreeMap<String, (Vec<usize>, safetensors::Dtype)>,
    BTreeMap<String, String>,
);

/// Reads the header of safetensors `bytes` (of the file at `path`).
pub fn read_header(bytes: &[u8], path: &Path) -> Result<Header, StoreError> {
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let metadata = header
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    let found = header
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, (info.shape.clone(), info.dtype)))
        .collect();
    Ok((found, metadata))
}

/// Checks every tensor name, shape and dtype in `found` against what `model` expects (all
/// problems in one error), then loads the PyTorch-layout tensors of `bytes` into `model`.
pub fn apply_tensors<M: ModuleSnapshot>(
    model: &mut M,
    bytes: Vec<u8>,
    found: &BTreeMap<String, (Vec<usize>, safetensors::Dtype)>,
    path: &Path,
    arch: &str,
) -> Result<(), StoreError> {
    let expected = tensor_shapes(model);
    let mut problems = Vec::new();
    for (name, shape) in &expected {
        match found.get(name) {
            None => problems.push(format!("  missing tensor {name} {shape:?}")),
            Some((s, _)) if s != shape => {
                problems.push(format!("  {name}: shape {s:?}, expected {shape:?}"))
            }
            Some((_, dtype)) if *dtype != safetensors::Dtype::F32 => {
                problems.push(format!("  {name}: dtype {dtype:?}, expected F32"))
            }
            _ => {}
        }
    }
    for name in found.keys().filter(|n| !expected.contains_key(*n)) {
        problems.push(format!("  unexpected tensor {name}"));
    }
    let mismatch = |problems: Vec<String>| StoreError::Mismatch {
        path: path.to_path_buf(),
        arch: arch.to_string(),
        problems: problems.join("\n"),
    };
    if !problems.is_empty() {
        return Err(mismatch(problems));
    }

    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(PyTorchToBurnAdapter)
        .skip_enum_variants(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut problems: Vec<String> = result.errors.iter().map(|e| format!("  {e}")).collect();
    problems.extend(
        result
            .missing
            .iter()
            .map(|(p, _)| format!("  not applied: {p}")),
    );
    if !problems.is_empty() {
        return Err(mismatch(problems));
    }
    Ok(())
}

/// Architecture and class count from PyTorch tensor names, for files without Rampart metadata.
fn infer_spec(
    found: &BTreeMap<String, (Vec<usize>, safetensors::Dtype)>,
    arch: Option<Arch>,
) -> Option<ModelSpec> {
    let arch = arch.or_else(|| {
        if found.contains_key("conv1.weight") {
            Some(Arch::Cnn)
        } else if found.contains_key("fc3.weight") {
            Some(Arch::Mlp)
        } else {
            None
        }
    })?;
    let head = match arch {
        Arch::Mlp => "fc3.weight",
        Arch::Cnn => "fc2.weight",
    };
    let num_classes = found.get(head).map(|(s, _)| s[0]).unwrap_or(10);
    Some(ModelSpec {
        num_classes,
        ..ModelSpec::new(arch)
    })
}
