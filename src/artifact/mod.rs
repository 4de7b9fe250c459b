//! One owner of artifacts: every model kind is opened and saved here, with typed metadata,
//! digests, bounded reads and atomic writes.
//!
//! - [`files`]: bounded reads, atomic writes, the input/output guard, run locks.
//! - [`digest`]: SHA-256, streamed.
//! - [`layout`]: safetensors in PyTorch layout for any module, with every tensor checked.
//! - [`metadata`]: the typed `rampart.*` metadata keys.
//! - [`manifest`]: ensemble manifests with member digests, confined to their folder.
//! - [`inspect`]: what `rampart inspect` reports, the same for every kind.
//! - [`sealed`]: encryption at rest (age); every loader here opens sealed files transparently.
//!
//! [`open`] takes any model file or manifest and returns an [`Opened`] model: an image network,
//! an ensemble or a fusion network.

pub mod digest;
pub mod files;
pub mod inspect;
pub mod layout;
pub mod manifest;
pub mod metadata;
pub mod output_kind;
pub mod sealed;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::Serialize;

use crate::model::ensemble::EnsembleError;
use crate::model::{Arch, Ensemble, FusionModel, FusionSpec, ImageNet, ImageSpec, MAX_CLASSES};
pub use files::{FileError, Outputs};
pub use manifest::{Manifest, is_manifest};
pub use metadata::Metadata;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Sealed(#[from] sealed::SealError),
    #[error("{path}: not a valid safetensors file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: metadata {key} is not valid: {reason}")]
    BadMetadata {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
    #[error(
        "{path}: cannot tell the architecture: no rampart.spec metadata and the tensor names match neither mlp (fc1..fc3) nor cnn (conv1, conv2, fc1, fc2); pass --arch"
    )]
    UnknownArch { path: PathBuf },
    #[error("{path}: does not fit the {arch} architecture:\n{problems}")]
    Mismatch {
        path: PathBuf,
        arch: String,
        problems: String,
    },
    #[error(
        "{path}: weights hold NaN or infinite values ({tensors}); the file is corrupt or the training diverged"
    )]
    NotFinite { path: PathBuf, tensors: String },
    #[error("{path}: {reason}")]
    WrongKind { path: PathBuf, reason: String },
    #[error("ensemble manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("signature check: {0}")]
    Signature(String),
    #[error(
        "ensemble manifest {manifest}: member {member} does not match its sha256 in the manifest ({expected}); the file changed since the manifest was written (recreate it with `rampart ensemble create`)"
    )]
    Digest {
        manifest: PathBuf,
        member: PathBuf,
        expected: String,
    },
    #[error(
        "ensemble manifest {manifest}: member {member} lies outside the manifest's folder; move it below the manifest or pass --allow-outside"
    )]
    Outside { manifest: PathBuf, member: PathBuf },
    #[error("ensemble manifest {path}: {source}")]
    Ensemble {
        path: PathBuf,
        source: EnsembleError,
    },
    #[error("{path}: cannot save: {reason}")]
    Save { path: PathBuf, reason: String },
}

/// How to open a model file.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Architecture of an image file without Rampart metadata (saved by PyTorch).
    pub arch: Option<Arch>,
    /// Let ensemble members lie outside the manifest's folder.
    pub allow_outside: bool,
}

/// A model of any kind, as loaded. (One is held per command: variant sizes do not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum AnyModel {
    Image {
        net: ImageNet,
        spec: ImageSpec,
        metadata: Metadata,
    },
    Ensemble {
        ensemble: Ensemble,
        manifest: Manifest,
        /// Each member's metadata, in manifest order.
        members: Vec<Metadata>,
    },
    Fusion {
        net: FusionModel,
        spec: FusionSpec,
        metadata: Metadata,
    },
}

/// A model opened from disk, with every file that was read for it.
#[derive(Debug, Clone)]
pub struct Opened {
    pub path: PathBuf,
    /// SHA-256 of the model's plaintext (of the manifest's, for an ensemble): its identity,
    /// the same whether the file is encrypted or not.
    pub sha256: String,
    /// SHA-256 of the file as stored (encrypted, if it is): what a signature covers.
    pub file_sha256: String,
    pub model: AnyModel,
    /// The files read: the model file, or the manifest and its members.
    pub files: Vec<PathBuf>,
}

/// The identity of a model in every report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// "image", "ensemble" or "fusion".
    pub kind: &'static str,
    /// "cnn", "ensemble of 3 (weighted_majority)", "fusion (gated: text, bytes, network)".
    pub description: String,
    pub classes: usize,
    pub sha256: String,
}

/// Opens a model file or an ensemble manifest (by its `.toml`/`.json` extension).
pub fn open(path: &Path, options: OpenOptions, device: &Device) -> Result<Opened, ArtifactError> {
    if is_manifest(path) {
        return open_ensemble(path, options, device);
    }
    let file = sealed::read(path, files::MODEL)?;
    let sha256 = match file.sealed {
        true => digest::sha256_hex(&file.bytes),
        false => file.file_sha256.clone(),
    };
    let model = load_bytes(file.bytes, path, options.arch, device)?;
    Ok(Opened {
        path: path.to_path_buf(),
        sha256,
        file_sha256: file.file_sha256,
        model,
        files: vec![path.to_path_buf()],
    })
}

/// [`open`], after verifying the model's signature with `verify_key` when one is given
/// (see [`crate::signing::verify_before_load`]); the bytes loaded must be the ones signed (as
/// stored: a signature of an encrypted file covers its ciphertext).
pub fn open_verified(
    path: &Path,
    options: OpenOptions,
    verify_key: Option<&Path>,
    device: &Device,
) -> Result<Opened, ArtifactError> {
    let Some(key) = verify_key else {
        return open(path, options, device);
    };
    let signed = crate::signing::verify_before_load(path, key)
        .map_err(|e| ArtifactError::Signature(e.to_string()))?;
    let opened = open(path, options, device)?;
    let signed = crate::signing::keys::hex(&signed);
    if opened.file_sha256 != signed {
        return Err(ArtifactError::Signature(format!(
            "{}: changed between verification and loading (SHA-256 {} where {signed} was signed)",
            path.display(),
            opened.file_sha256
        )));
    }
    Ok(opened)
}

/// An image or fusion model from the bytes of the file at `path`, by its metadata.
pub fn load_bytes(
    bytes: Vec<u8>,
    path: &Path,
    arch: Option<Arch>,
    device: &Device,
) -> Result<AnyModel, ArtifactError> {
    let header = layout::read_header(&bytes, path)?;
    if header.metadata.raw.contains_key(metadata::FUSION) {
        if arch.is_some() {
            return Err(ArtifactError::WrongKind {
                path: path.to_path_buf(),
                reason: "is a multimodal fusion model; --arch is for image models".into(),
            });
        }
        let (net, spec) = load_fusion(bytes, &header, path, device)?;
        return Ok(AnyModel::Fusion {
            net,
            spec,
            metadata: header.metadata,
        });
    }
    let (net, spec) = load_image(bytes, &header, path, arch, device)?;
    Ok(AnyModel::Image {
        net,
        spec,
        metadata: header.metadata,
    })
}

fn bad_metadata<'a>(path: &'a Path, key: &'static str) -> impl Fn(String) -> ArtifactError + 'a {
    move |reason| ArtifactError::BadMetadata {
        path: path.to_path_buf(),
        key,
        reason,
    }
}

/// The image spec a file declares (or, for a PyTorch file, that its tensor names imply),
/// validated before anything is allocated.
fn image_spec(
    header: &layout::Header,
    path: &Path,
    arch: Option<Arch>,
) -> Result<ImageSpec, ArtifactError> {
    let bad = bad_metadata(path, metadata::SPEC);
    match header.metadata.raw.get(metadata::SPEC) {
        Some(json) => {
            let spec = serde_json::from_str::<ImageSpec>(json).map_err(|e| bad(e.to_string()))?;
            spec.validate().map_err(bad)?;
            Ok(spec)
        }
        None => {
            let spec =
                infer_spec(&header.tensors, arch).ok_or_else(|| ArtifactError::UnknownArch {
                    path: path.to_path_buf(),
                })?;
            spec.validate().map_err(|reason| ArtifactError::Mismatch {
                path: path.to_path_buf(),
                arch: spec.arch.to_string(),
                problems: format!("  its head {}: {reason}", ImageSpec::head(spec.arch)),
            })?;
            Ok(spec)
        }
    }
}

fn load_image(
    bytes: Vec<u8>,
    header: &layout::Header,
    path: &Path,
    arch: Option<Arch>,
    device: &Device,
) -> Result<(ImageNet, ImageSpec), ArtifactError> {
    let spec = image_spec(header, path, arch)?;
    let name = spec.arch.to_string();
    layout::check_tensors(&spec.tensor_shapes(), &header.tensors, path, &name)?;
    let mut net = spec.init(device);
    layout::apply(&mut net, bytes, &header.tensors, path, &name)?;
    Ok((net, spec))
}

fn load_fusion(
    bytes: Vec<u8>,
    header: &layout::Header,
    path: &Path,
    device: &Device,
) -> Result<(FusionModel, FusionSpec), ArtifactError> {
    let bad = bad_metadata(path, metadata::FUSION);
    let json = header
        .metadata
        .raw
        .get(metadata::FUSION)
        .ok_or_else(|| bad("missing".into()))?;
    let spec: FusionSpec = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    spec.validate().map_err(bad)?;
    layout::check_tensors(&spec.tensor_shapes(), &header.tensors, path, "fusion")?;
    let mut net = spec.init(device);
    layout::apply(&mut net, bytes, &header.tensors, path, "fusion")?;
    Ok((net, spec))
}

/// Architecture and class count from PyTorch tensor names, for files without Rampart metadata.
fn infer_spec(found: &layout::Found, arch: Option<Arch>) -> Option<ImageSpec> {
    let arch = arch.or_else(|| {
        if found.contains_key("conv1.weight") {
            Some(Arch::Cnn)
        } else if found.contains_key("fc3.weight") {
            Some(Arch::Mlp)
        } else {
            None
        }
    })?;
    // A head that is missing or not 2-D is reported by the tensor check; 10 is a placeholder.
    let num_classes = found
        .get(ImageSpec::head(arch))
        .filter(|(s, _)| s.len() == 2)
        .map(|(s, _)| s[0].min(MAX_CLASSES + 1))
        .unwrap_or(10);
    Some(ImageSpec {
        num_classes,
        ..ImageSpec::new(arch)
    })
}

fn open_ensemble(
    path: &Path,
    options: OpenOptions,
    device: &Device,
) -> Result<Opened, ArtifactError> {
    let (manifest, sha256, file_sha256) = Manifest::read_digested(path)?;
    let mut nets = Vec::new();
    let mut members = Vec::new();
    let mut read = vec![path.to_path_buf()];
    for (i, m) in manifest.members.iter().enumerate() {
        let (file, bytes) = manifest.member_bytes(path, i, options.allow_outside)?;
        match load_bytes(bytes, &file, m.arch, device)? {
            AnyModel::Image { net, metadata, .. } => {
                nets.push(net);
                members.push(metadata);
            }
            _ => {
                return Err(ArtifactError::Manifest {
                    path: path.to_path_buf(),
                    reason: format!(
                        "member {} is not an image model; ensembles vote over image models",
                        m.path.display()
                    ),
                });
            }
        }
        read.push(file);
    }
    let weights = manifest.members.iter().map(|m| m.weight).collect();
    let ensemble = Ensemble::new(nets, weights, manifest.strategy).map_err(|source| {
        ArtifactError::Ensemble {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(Opened {
        path: path.to_path_buf(),
        sha256,
        file_sha256,
        model: AnyModel::Ensemble {
            ensemble,
            manifest,
            members,
        },
        files: read,
    })
}

/// Opens an image model file (not an ensemble or fusion model).
pub fn open_image(
    path: &Path,
    arch: Option<Arch>,
    device: &Device,
) -> Result<(ImageNet, ImageSpec, Metadata), ArtifactError> {
    let bytes = sealed::read(path, files::MODEL)?.bytes;
    match load_bytes(bytes, path, arch, device)? {
        AnyModel::Image {
            net,
            spec,
            metadata,
        } => Ok((net, spec, metadata)),
        other => Err(ArtifactError::WrongKind {
            path: path.to_path_buf(),
            reason: format!(
                "is a {} model; give it JSONL records with --records, or use an image model",
                other.kind()
            ),
        }),
    }
}

/// Saves an image network with its spec (`rampart.spec`) and `metadata`, atomically.
pub fn save_image(
    net: &ImageNet,
    spec: &ImageSpec,
    metadata: &Metadata,
    path: &Path,
) -> Result<(), ArtifactError> {
    layout::save(net, &with_spec(metadata, metadata::SPEC, spec), path)
}

/// Saves a fusion network with its spec (`rampart.fusion`) and `metadata`, atomically.
pub fn save_fusion(
    net: &FusionModel,
    spec: &FusionSpec,
    metadata: &Metadata,
    path: &Path,
) -> Result<(), ArtifactError> {
    layout::save(net, &with_spec(metadata, metadata::FUSION, spec), path)
}

/// `metadata` with `spec` as JSON under `key`.
fn with_spec<S: Serialize>(metadata: &Metadata, key: &str, spec: &S) -> Metadata {
    let mut metadata = metadata.clone();
    metadata.raw.insert(key.into(), metadata::to_json(spec));
    metadata
}

impl AnyModel {
    pub fn kind(&self) -> &'static str {
        match self {
            AnyModel::Image { .. } => "image",
            AnyModel::Ensemble { .. } => "ensemble",
            AnyModel::Fusion { .. } => "fusion",
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            AnyModel::Image { spec, .. } => spec.num_classes,
            AnyModel::Ensemble { ensemble, .. } => ensemble.num_classes,
            AnyModel::Fusion { spec, .. } => spec.num_classes(),
        }
    }

    /// "cnn", "ensemble of 3 (weighted_majority)", "fusion (gated: text, bytes, network)".
    pub fn describe(&self) -> String {
        match self {
            AnyModel::Image { spec, .. } => spec.arch.to_string(),
            AnyModel::Ensemble { ensemble, .. } => format!(
                "ensemble of {} ({})",
                ensemble.members.len(),
                ensemble.strategy
            ),
            AnyModel::Fusion { spec, .. } => {
                let mods: Vec<String> = spec
                    .modalities
                    .iter()
                    .map(|m| format!("{m:?}").to_lowercase())
                    .collect();
                format!(
                    "fusion ({}: {})",
                    format!("{:?}", spec.fusion).to_lowercase(),
                    mods.join(", ")
                )
            }
        }
    }

    /// The sigma the model (every member, for an ensemble) was trained with for smoothing.
    pub fn training_sigma(&self) -> Option<f64> {
        match self {
            AnyModel::Image { metadata, .. } | AnyModel::Fusion { metadata, .. } => {
                metadata.training_sigma()
            }
            AnyModel::Ensemble { members, .. } => {
                let first = members.first()?.training_sigma()?;
                members
                    .iter()
                    .all(|m| m.training_sigma() == Some(first))
                    .then_some(first)
            }
        }
    }
}

impl Opened {
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            path: self.path.clone(),
            kind: self.model.kind(),
            description: self.model.describe(),
            classes: self.model.num_classes(),
            sha256: self.sha256.clone(),
        }
    }
}

/// Writes one JSON object per line (metrics, records) atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<(), FileError> {
    let mut text = String::new();
    for item in items {
        let line = serde_json::to_string(item).map_err(|e| FileError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    files::write_atomic(path, text.as_bytes())
}
