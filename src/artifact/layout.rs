//! Safetensors in PyTorch layout, for any Burn module.
//!
//! A saved file holds the tensors a PyTorch module with the same attribute names expects
//! (`conv1.weight` `[out, in, kh, kw]`, `fc1.weight` `[out, in]`, `*.bias`), so
//! `model.load_state_dict(safetensors.torch.load_file(path))` works, plus string metadata
//! (see [`super::metadata`]). Loading checks every name, shape and dtype against the module
//! (all problems in one error) and that every value is finite, before anything is applied.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use safetensors::Dtype;

use super::ArtifactError;
use super::files;
use super::metadata::Metadata;

/// Tensor names with their shapes and dtypes, as a file's header lists them.
pub type Found = BTreeMap<String, (Vec<usize>, Dtype)>;

/// What a safetensors header says: the tensors and the string metadata.
#[derive(Debug, Clone)]
pub struct Header {
    pub tensors: Found,
    pub metadata: Metadata,
}

/// Reads the header of safetensors `bytes` (of the file at `path`). The safetensors crate
/// checks the header length against the buffer and every tensor's byte range against the
/// data before anything is allocated for it.
pub fn read_header(bytes: &[u8], path: &Path) -> Result<Header, ArtifactError> {
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| ArtifactError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let metadata = header
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    let tensors = header
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, (info.shape.clone(), info.dtype)))
        .collect();
    Ok(Header {
        tensors,
        metadata: Metadata::new(metadata),
    })
}

/// The tensor names and shapes `model` has in PyTorch layout.
pub fn tensor_shapes<M: ModuleSnapshot>(model: &M) -> BTreeMap<String, Vec<usize>> {
    model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect()
}

/// Checks `found` against the `expected` names and shapes (f32 only); every problem is named
/// in one error.
pub fn check_tensors(
    expected: &BTreeMap<String, Vec<usize>>,
    found: &Found,
    path: &Path,
    arch: &str,
) -> Result<(), ArtifactError> {
    let mut problems = Vec::new();
    for (name, shape) in expected {
        match found.get(name) {
            None => problems.push(format!("  missing tensor {name} {shape:?}")),
            Some((s, _)) if s != shape => {
                problems.push(format!("  {name}: shape {s:?}, expected {shape:?}"))
            }
            Some((_, dtype)) if *dtype != Dtype::F32 => {
                problems.push(format!("  {name}: dtype {dtype:?}, expected F32"))
            }
            _ => {}
        }
    }
    for name in found.keys().filter(|n| !expected.contains_key(*n)) {
        problems.push(format!("  unexpected tensor {name}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ArtifactError::Mismatch {
            path: path.to_path_buf(),
            arch: arch.to_string(),
            problems: problems.join("\n"),
        })
    }
}

/// Refuses weights that hold NaN or infinite values, naming the tensors and counts.
pub fn check_finite(bytes: &[u8], path: &Path) -> Result<(), ArtifactError> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| ArtifactError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut bad: Vec<String> = st
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == Dtype::F32)
        .filter_map(|(name, t)| {
            let count = t
                .data()
                .chunks_exact(4)
                .filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
                .count();
            (count > 0).then(|| format!("{name} ({count})"))
        })
        .collect();
    bad.sort();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ArtifactError::NotFinite {
            path: path.to_path_buf(),
            tensors: bad.join(", "),
        })
    }
}

/// Checks `bytes` against `model` (names, shapes, dtypes, finite values), then loads the
/// PyTorch-layout tensors into it.
pub fn apply<M: ModuleSnapshot>(
    model: &mut M,
    bytes: Vec<u8>,
    found: &Found,
    path: &Path,
    arch: &str,
) -> Result<(), ArtifactError> {
    check_tensors(&tensor_shapes(model), found, path, arch)?;
    check_finite(&bytes, path)?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(PyTorchToBurnAdapter)
        .skip_enum_variants(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| ArtifactError::Corrupt {
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
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ArtifactError::Mismatch {
            path: path.to_path_buf(),
            arch: arch.to_string(),
            problems: problems.join("\n"),
        })
    }
}

/// The safetensors bytes of `model` in PyTorch layout with `metadata`.
pub fn to_bytes<M: ModuleSnapshot>(
    model: &M,
    metadata: &Metadata,
    path: &Path,
) -> Result<Vec<u8>, ArtifactError> {
    let write_err = |reason: String| ArtifactError::Save {
        path: path.to_path_buf(),
        reason,
    };
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true);
    for (k, v) in &metadata.raw {
        store = store.metadata(k.clone(), v.clone());
    }
    model
        .save_into(&mut store)
        .map_err(|e| write_err(e.to_string()))?;
    store.get_bytes().map_err(|e| write_err(e.to_string()))
}

/// Saves `model` in PyTorch layout with `metadata` at `path`, atomically (an existing regular
/// file is replaced only once the new one is complete).
pub fn save<M: ModuleSnapshot>(
    model: &M,
    metadata: &Metadata,
    path: &Path,
) -> Result<(), ArtifactError> {
    let bytes = to_bytes(model, metadata, path)?;
    files::write_atomic(path, &bytes)?;
    Ok(())
}
