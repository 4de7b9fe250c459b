//! The manifest of a model as OpenSSF `model_signing` (v1.x, "files" serialization) builds it:
//! one SHA-256 per regular file under the model directory, named by its path relative to the
//! directory (POSIX separators), sorted component by component; a single-file model is one
//! entry named `.`. Ignored: the paths given, the signature file, and at the top level `.git`,
//! `.gitattributes`, `.github` and `.gitignore`. Symbolic links and special files are refused.
//! Files are hashed in 1 MiB reads, so memory does not grow with their size.

use std::cmp::Ordering;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::SignError;

/// What `model_signing` ignores at the top level unless told not to.
pub const GIT_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];
/// Most entries (files and folders) in one model directory (more is hostile or a mistake).
pub const MAX_FILES: usize = 100_000;

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative POSIX path (`.` for a single-file model).
    pub name: String,
    pub digest: [u8; 32],
}

/// A model's files and digests, sorted as `model_signing` sorts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The model directory's (or file's) name: the in-toto subject's name.
    pub model_name: String,
    pub entries: Vec<Entry>,
    /// The relative paths that were ignored, as recorded in the signature.
    pub ignore_paths: Vec<String>,
}

/// `model_signing`'s order: component by component (`a/b` before `a.txt`).
pub fn compare_names(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// SHA-256 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<[u8; 32], SignError> {
    let io = |source| SignError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Never through a link, never blocking on a FIFO swapped in after the walk looked; the
    // open file itself must be a regular file.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(SignError::Special(path.to_path_buf()));
    }
    crate::artifact::digest::sha256_stream(&mut file).map_err(io)
}

/// The subject digest: SHA-256 over the entries' raw digests, in order.
pub fn root_digest(entries: &[Entry]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for e in entries {
        hasher.update(e.digest);
    }
    hasher.finalize().into()
}

/// Whether `relative` (components) lies at or under one of `ignored` (relative POSIX paths).
fn is_ignored(relative: &[String], ignored: &[Vec<String>]) -> bool {
    ignored
        .iter()
        .any(|i| !i.is_empty() && relative.len() >= i.len() && relative[..i.len()] == i[..])
}

/// Hashes the model at `model` (a directory or one file), skipping `ignore` (paths relative to
/// the model directory, POSIX) and, when `git` is set, the top-level git paths.
pub fn build(model: &Path, ignore: &[String], git: bool) -> Result<Manifest, SignError> {
    let meta = std::fs::symlink_metadata(model).map_err(|source| SignError::Io {
        path: model.to_path_buf(),
        source,
    })?;
    let model_name = model_name(model)?;
    if meta.file_type().is_symlink() {
        return Err(SignError::Symlink(model.to_path_buf()));
    }
    if meta.is_file() {
        return Ok(Manifest {
            model_name,
            entries: vec![Entry {
                name: ".".into(),
                digest: hash_file(model)?,
            }],
            ignore_paths: Vec::new(),
        });
    }
    if !meta.is_dir() {
        return Err(SignError::Special(model.to_path_buf()));
    }
    let mut ignore_paths: Vec<String> = ignore.to_vec();
    if git {
        ignore_paths.extend(GIT_PATHS.iter().map(|p| p.to_string()));
    }
    ignore_paths.sort();
    ignore_paths.dedup();
    let ignored: Vec<Vec<String>> = ignore_paths
        .iter()
        .map(|p| {
            p.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(String::from)
                .collect()
        })
        .collect();
    let mut entries = Vec::new();
    walk(
        model,
        &mut Vec::new(),
        &ignored,
        &mut entries,
        false,
        &mut 0,
    )?;
    entries.sort_by(|a, b| compare_names(&a.name, &b.name));
    Ok(Manifest {
        model_name,
        entries,
        ignore_paths,
    })
}

fn model_name(model: &Path) -> Result<String, SignError> {
    let resolved = model.canonicalize().unwrap_or_else(|_| model.to_path_buf());
    let name = resolved.file_name().unwrap_or(resolved.as_os_str());
    name.to_str()
        .map(String::from)
        .ok_or_else(|| SignError::Name(model.to_path_buf()))
}

/// Adds the files under `dir` (at `relative` from the model directory) to `entries`; inside
/// ignored paths (`skip`), only checks that nothing is a link or a special file, as the
/// reference does. `seen` counts every entry against [`MAX_FILES`].
fn walk(
    dir: &Path,
    relative: &mut Vec<String>,
    ignored: &[Vec<String>],
    entries: &mut Vec<Entry>,
    skip: bool,
    seen: &mut usize,
) -> Result<(), SignError> {
    let io = |source| SignError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut children: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        *seen += 1;
        if *seen > MAX_FILES {
            return Err(SignError::TooMany(MAX_FILES));
        }
        children.push(entry.map_err(io)?.path());
    }
    children.sort();
    for path in children {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| SignError::Name(path.clone()))?
            .to_string();
        relative.push(name);
        let result = (|| {
            let meta = std::fs::symlink_metadata(&path).map_err(|source| SignError::Io {
                path: path.clone(),
                source,
            })?;
            if meta.file_type().is_symlink() {
                return Err(SignError::Symlink(path.clone()));
            }
            let skip = skip || is_ignored(relative, ignored);
            if meta.is_dir() {
                walk(&path, relative, ignored, entries, skip, seen)
            } else if !meta.is_file() {
                Err(SignError::Special(path.clone()))
            } else if skip {
                Ok(())
            } else {
                entries.push(Entry {
                    name: relative.join("/"),
                    digest: hash_file(&path)?,
                });
                Ok(())
            }
        })();
        relative.pop();
        result?;
    }
    Ok(())
}
