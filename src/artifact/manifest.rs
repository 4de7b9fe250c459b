//! Ensemble manifests: the strategy and, per member, its model file, SHA-256 digest and
//! weight. TOML, or JSON for a `.json` path.
//!
//! Members are confined to the manifest's folder: a member path that is absolute, climbs out
//! with `..` or resolves (through symlinks) outside the folder is refused unless the caller
//! allows it explicitly (`--allow-outside`). A member whose bytes do not match its digest is
//! refused by name; the error does not echo the digest of whatever file was found there.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ArtifactError, digest, files, sealed};
use crate::model::{Arch, Strategy};

/// Most members a manifest may list.
pub const MAX_MEMBERS: usize = 64;

/// One member of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Model file, relative to the manifest's directory (or absolute, with `--allow-outside`).
    pub path: PathBuf,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub weight: f64,
    /// Architecture, for files without Rampart metadata (PyTorch-saved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    /// The member's validation accuracy when the weights were fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
}

/// An ensemble on disk: strategy and members with digests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub strategy: Strategy,
    /// How the weights were chosen ("hand", "equal", or the validation split they were
    /// fitted on).
    #[serde(default)]
    pub weights_from: String,
    #[serde(rename = "member")]
    pub members: Vec<Member>,
}

/// Whether `path` names an ensemble manifest (`.toml` or `.json`) rather than a model file.
pub fn is_manifest(path: &Path) -> bool {
    matches!(plain_extension(path), Some("toml" | "json"))
}

fn is_json(path: &Path) -> bool {
    plain_extension(path) == Some("json")
}

/// The extension of `path`, or of the name under an encrypted file's `.age`
/// (`ensemble.toml.age` is a manifest).
fn plain_extension(path: &Path) -> Option<&str> {
    let ext = path.extension().and_then(|e| e.to_str());
    if ext == Some("age") {
        return path
            .file_stem()
            .map(Path::new)
            .and_then(|stem| stem.extension())
            .and_then(|e| e.to_str());
    }
    ext
}

impl Manifest {
    /// A manifest for existing model files, to be written at `out`: each member's digest is
    /// taken now (streamed); paths are stored relative to `out`'s directory when they lie
    /// below it, else absolute.
    pub fn describe(
        out: &Path,
        models: &[(PathBuf, Option<Arch>)],
        weights: &[f64],
        strategy: Strategy,
        weights_from: &str,
    ) -> Result<Self, ArtifactError> {
        let digests = models
            .iter()
            .map(|(path, _)| digest::sha256_file(path, files::MODEL))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::with_digests(
            out,
            models,
            &digests,
            weights,
            strategy,
            weights_from,
        ))
    }

    /// [`Manifest::describe`] with the members' digests already taken (from the bytes that
    /// were loaded and checked, so the manifest vouches for exactly those).
    pub fn with_digests(
        out: &Path,
        models: &[(PathBuf, Option<Arch>)],
        digests: &[String],
        weights: &[f64],
        strategy: Strategy,
        weights_from: &str,
    ) -> Self {
        let dir = files::parent_of(out);
        let base = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let members = models
            .iter()
            .zip(digests)
            .zip(weights)
            .map(|(((path, arch), sha256), &weight)| {
                let full = path.canonicalize().unwrap_or_else(|_| path.clone());
                let stored = full
                    .strip_prefix(&base)
                    .map(Path::to_path_buf)
                    .unwrap_or(full.clone());
                Member {
                    path: stored,
                    sha256: sha256.clone(),
                    weight,
                    arch: *arch,
                    validation_accuracy: None,
                }
            })
            .collect();
        Self {
            strategy,
            weights_from: weights_from.into(),
            members,
        }
    }

    /// Reads a manifest (at most 1 MiB); unknown keys, bad values, no members or more than
    /// [`MAX_MEMBERS`] are errors naming the file.
    pub fn read(path: &Path) -> Result<Self, ArtifactError> {
        Ok(Self::read_digested(path)?.0)
    }

    /// Reads and validates a manifest (decrypted if sealed), with the SHA-256 of the text
    /// parsed and of the file as stored (read once).
    pub fn read_digested(path: &Path) -> Result<(Self, String, String), ArtifactError> {
        let err = |reason: String| ArtifactError::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        let file = sealed::read(path, files::MANIFEST)?;
        let text =
            std::str::from_utf8(&file.bytes).map_err(|e| err(format!("not UTF-8 text: {e}")))?;
        let manifest = Self::parse(text, is_json(path)).map_err(err)?;
        Ok((manifest, digest::sha256_hex(&file.bytes), file.file_sha256))
    }

    /// Parses manifest text (JSON or TOML).
    pub fn parse(text: &str, json: bool) -> Result<Self, String> {
        let manifest: Manifest = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        } else {
            toml::from_str(text).map_err(|e| e.to_string())?
        };
        if manifest.members.is_empty() {
            return Err("no [[member]] entries".into());
        }
        if manifest.members.len() > MAX_MEMBERS {
            return Err(format!(
                "{} members; at most {MAX_MEMBERS} are allowed",
                manifest.members.len()
            ));
        }
        Ok(manifest)
    }

    /// Writes the manifest atomically (TOML, or JSON for a `.json` path).
    pub fn write(&self, path: &Path) -> Result<(), ArtifactError> {
        let err = |reason: String| ArtifactError::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        let text = if is_json(path) {
            serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?
        } else {
            format!(
                "# Rampart ensemble manifest: members are checked against their sha256 on load.\n{}",
                toml::to_string_pretty(self).map_err(|e| err(e.to_string()))?
            )
        };
        files::write_atomic(path, text.as_bytes())?;
        Ok(())
    }

    /// The file of member `i` of the manifest at `manifest`, refusing one outside the
    /// manifest's folder (unless `allow_outside`) and one that is the manifest itself.
    pub fn member_path(
        &self,
        manifest: &Path,
        i: usize,
        allow_outside: bool,
    ) -> Result<PathBuf, ArtifactError> {
        let member = &self.members[i].path;
        let dir = files::parent_of(manifest);
        let file = dir.join(member);
        let outside = || ArtifactError::Outside {
            manifest: manifest.to_path_buf(),
            member: member.clone(),
        };
        if !allow_outside {
            let climbs = member.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_)
                )
            });
            if member.is_absolute() || climbs {
                return Err(outside());
            }
            if let (Ok(real), Ok(base)) = (file.canonicalize(), dir.canonicalize())
                && !real.starts_with(&base)
            {
                return Err(outside());
            }
        }
        if let (Ok(a), Ok(b)) = (file.canonicalize(), manifest.canonicalize())
            && a == b
        {
            return Err(ArtifactError::Manifest {
                path: manifest.to_path_buf(),
                reason: format!(
                    "member {} is the manifest itself; list model files",
                    member.display()
                ),
            });
        }
        Ok(file)
    }

    /// Reads member `i`'s bytes, checks them (as stored) against its digest, and decrypts
    /// them if the member is sealed.
    pub fn member_bytes(
        &self,
        manifest: &Path,
        i: usize,
        allow_outside: bool,
    ) -> Result<(PathBuf, Vec<u8>), ArtifactError> {
        let file = self.member_path(manifest, i, allow_outside)?;
        let bytes = files::read_bounded(&file, files::MODEL)?;
        if !digest::sha256_hex(&bytes).eq_ignore_ascii_case(&self.members[i].sha256) {
            return Err(ArtifactError::Digest {
                manifest: manifest.to_path_buf(),
                member: file,
                expected: self.members[i].sha256.clone(),
            });
        }
        let bytes = sealed::unseal(bytes, &file, files::MODEL)?;
        Ok((file, bytes))
    }
}
