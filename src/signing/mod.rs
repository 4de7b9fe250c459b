//! Signed models in the format of OpenSSF model signing (`model_signing` v1.x, key-based):
//! `python -m model_signing verify key` accepts what [`sign`] writes, and [`verify`] accepts
//! what that tool signs. The steps, as the reference runs them:
//!
//! 1. [`manifest`]: a SHA-256 per file, sorted; the subject digest over them.
//! 2. An in-toto v1 statement (predicate `https://model_signing/signature/v1.0`) listing them.
//! 3. DSSE: ECDSA ([`keys`]) over the pre-authentication encoding of the statement.
//! 4. [`bundle`]: a Sigstore bundle v0.3 with the key's hint, no transparency-log entry.
//!
//! Verification checks the bundle, the hint, the signature, the statement, its subject digest,
//! and then the files on disk against it, naming every file that is missing, extra or changed.

pub mod bundle;
pub mod keys;
pub mod manifest;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::artifact::files::{self, FileError, Limit};
use bundle::{Bundle, PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE};
use keys::{PrivateKey, PublicKey, hex};
use manifest::{Entry, Manifest};

/// Signature files are small JSON; the limit bounds a hostile one.
pub const SIGNATURE_LIMIT: Limit = Limit {
    bytes: 64 << 20,
    what: "model signature",
};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{0}: is a symbolic link; model signing hashes regular files only")]
    Symlink(PathBuf),
    #[error("{0}: is not a regular file or a directory (a device, FIFO or socket)")]
    Special(PathBuf),
    #[error("{0}: its name is not UTF-8, which the signature format cannot hold")]
    Name(PathBuf),
    #[error("the model has more than {0} files; that is not a model")]
    TooMany(usize),
    #[error("{path}: not a model signature: {reason}")]
    Bundle { path: PathBuf, reason: String },
    #[error("{path}: the signature was made with another key (its key hint {hint} is not {key}'s)")]
    WrongKey {
        path: PathBuf,
        hint: String,
        key: PathBuf,
    },
    #[error(
        "{path}: the signature does not verify with {key}: the signed statement or the signature was changed, or another key made it"
    )]
    BadSignature { path: PathBuf, key: PathBuf },
    #[error(
        "{model}: no signature ({beside} or {in_dir}); sign it with `rampart sign`, or leave out --verify-key / RAMPART_VERIFY_KEY"
    )]
    Unsigned {
        model: PathBuf,
        beside: PathBuf,
        in_dir: PathBuf,
    },
    #[error("{model}: does not match its signature: {}", .problems.join("; "))]
    Mismatch {
        model: PathBuf,
        problems: Vec<String>,
    },
}

/// What a signature covers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signed {
    pub model: PathBuf,
    pub signature: PathBuf,
    pub files: usize,
    /// Hex SHA-256 subject digest.
    pub digest: String,
    pub key_hint: String,
    pub ignored: Vec<String>,
    /// The signed files and digests.
    #[serde(skip)]
    pub entries: Vec<Entry>,
}

/// The signature file's path relative to the model directory, when it lies inside it.
fn inside(model: &Path, signature: &Path) -> Option<String> {
    let dir = model.canonicalize().ok()?;
    let parent = files::parent_of(signature).canonicalize().ok()?;
    let full = parent.join(signature.file_name()?);
    let rel = full.strip_prefix(&dir).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// The ignore list of a model: `ignore` (relative to the model directory) plus the signature
/// file when it lies inside.
fn ignore_list(model: &Path, signature: &Path, ignore: &[String]) -> Vec<String> {
    let mut all = ignore.to_vec();
    if model.is_dir()
        && let Some(rel) = inside(model, signature)
    {
        all.push(rel);
    }
    all
}

/// Signs the model at `model` (a file or a directory) with `key`, writing the bundle to
/// `signature` atomically.
pub fn sign(
    model: &Path,
    key: &PrivateKey,
    signature: &Path,
    ignore: &[String],
) -> Result<Signed, SignError> {
    let manifest = manifest::build(model, &ignore_list(model, signature, ignore), true)?;
    let payload = statement(&manifest);
    let sig = key.sign(&bundle::pae(&payload));
    let hint = key.public().hint();
    let bundle = Bundle::new(&payload, &sig, hint.clone());
    let text = serde_json::to_string(&bundle).expect("bundle serialises");
    // Only a new path or an earlier signature is replaced, never a model file or a key.
    files::check_kind(signature, files::OutputKind::Signature)?;
    files::write_atomic(signature, text.as_bytes())?;
    Ok(Signed {
        model: model.to_path_buf(),
        signature: signature.to_path_buf(),
        files: manifest.entries.len(),
        digest: hex(&manifest::root_digest(&manifest.entries)),
        key_hint: hint,
        ignored: manifest.ignore_paths,
        entries: manifest.entries,
    })
}

/// The in-toto statement of a manifest, compact JSON with sorted keys.
fn statement(m: &Manifest) -> Vec<u8> {
    let resources: Vec<Value> = m
        .entries
        .iter()
        .map(|e| json!({"name": e.name, "algorithm": "sha256", "digest": hex(&e.digest)}))
        .collect();
    let mut serialization = json!({
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": false,
    });
    if !m.ignore_paths.is_empty() {
        serialization["ignore_paths"] = json!(m.ignore_paths);
    }
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": m.model_name, "digest": {"sha256": hex(&manifest::root_digest(&m.entries))}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"serialization": serialization, "resources": resources},
    });
    serde_json::to_vec(&statement).expect("statement serialises")
}

/// Verifies the model at `model` against `signature` with `key`; `ignore` adds paths to skip
/// (relative to the model directory) to those the signature records.
pub fn verify(
    model: &Path,
    key: &PublicKey,
    key_path: &Path,
    signature: &Path,
    ignore: &[String],
) -> Result<Signed, SignError> {
    let bad = |reason: String| SignError::Bundle {
        path: signature.to_path_buf(),
        reason,
    };
    let text = files::read_text(signature, SIGNATURE_LIMIT)?;
    let bundle: Bundle = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if bundle.media_type != bundle::MEDIA_TYPE {
        return Err(bad(format!(
            "media type {:?}, expected {}",
            bundle.media_type,
            bundle::MEDIA_TYPE
        )));
    }
    let hint = bundle
        .verification_material
        .public_key
        .hint
        .clone()
        .unwrap_or_default();
    if !hint.is_empty() && hint != key.hint() {
        return Err(SignError::WrongKey {
            path: signature.to_path_buf(),
            hint,
            key: key_path.to_path_buf(),
        });
    }
    let envelope = &bundle.dsse_envelope;
    let first = envelope
        .signatures
        .first()
        .ok_or_else(|| bad("the envelope holds no signature".into()))?;
    let payload = bundle::decode(&envelope.payload).map_err(|e| bad(format!("payload: {e}")))?;
    let sig = bundle::decode(&first.sig).map_err(|e| bad(format!("signature: {e}")))?;
    if !key.verify(&bundle::pae(&payload), &sig) {
        return Err(SignError::BadSignature {
            path: signature.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(bad(format!(
            "payload type {:?}, expected {PAYLOAD_TYPE}",
            envelope.payload_type
        )));
    }
    let signed = parse_statement(&payload).map_err(bad)?;
    let mut skip = ignore_list(model, signature, ignore);
    skip.extend(signed.ignore_paths.iter().cloned());
    let local = manifest::build(model, &skip, true)?;
    compare(model, &signed.entries, &local.entries)?;
    Ok(Signed {
        model: model.to_path_buf(),
        signature: signature.to_path_buf(),
        files: local.entries.len(),
        digest: hex(&manifest::root_digest(&signed.entries)),
        key_hint: hint,
        ignored: local.ignore_paths,
        entries: signed.entries,
    })
}

/// The signed statement's resources (in the listed order) and ignored paths, after checking
/// its types, its one subject and that the subject digest matches the resources.
fn parse_statement(payload: &[u8]) -> Result<Manifest, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("statement: {e}"))?;
    let field = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(String::from);
    if field(&v, "_type").as_deref() != Some(STATEMENT_TYPE) {
        return Err(format!(
            "statement type {:?}, expected {STATEMENT_TYPE}",
            v.get("_type")
        ));
    }
    if field(&v, "predicateType").as_deref() != Some(PREDICATE_TYPE) {
        return Err(format!(
            "predicate type {:?}, expected {PREDICATE_TYPE}",
            v.get("predicateType")
        ));
    }
    let subjects = v
        .get("subject")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let [subject] = subjects.as_slice() else {
        return Err(format!("{} subjects, expected one", subjects.len()));
    };
    let root = subject
        .get("digest")
        .and_then(|d| field(d, "sha256"))
        .ok_or("the subject has no sha256 digest")?;
    let predicate = v.get("predicate").ok_or("no predicate")?;
    let mut entries = Vec::new();
    for r in predicate
        .get("resources")
        .and_then(Value::as_array)
        .ok_or("no resources")?
    {
        let (Some(name), Some(alg), Some(digest)) =
            (field(r, "name"), field(r, "algorithm"), field(r, "digest"))
        else {
            return Err("a resource lacks its name, algorithm or digest".into());
        };
        if alg != "sha256" {
            return Err(format!(
                "{name}: digest algorithm {alg:?}; only sha256 (files) is read"
            ));
        }
        entries.push(Entry {
            digest: unhex(&digest)
                .ok_or_else(|| format!("{name}: digest {digest:?} is not 64 hex digits"))?,
            name,
        });
    }
    if hex(&manifest::root_digest(&entries)) != root {
        return Err("the subject digest does not match the listed files".into());
    }
    let ignore_paths = predicate
        .get("serialization")
        .and_then(|s| s.get("ignore_paths"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(Manifest {
        model_name: field(subject, "name").unwrap_or_default(),
        entries,
        ignore_paths,
    })
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Every difference between the signed files and those on disk, named.
fn compare(model: &Path, signed: &[Entry], local: &[Entry]) -> Result<(), SignError> {
    use std::collections::BTreeMap;
    let signed: BTreeMap<&str, &[u8; 32]> = signed
        .iter()
        .map(|e| (e.name.as_str(), &e.digest))
        .collect();
    let local: BTreeMap<&str, &[u8; 32]> =
        local.iter().map(|e| (e.name.as_str(), &e.digest)).collect();
    let mut problems = Vec::new();
    for (name, digest) in &signed {
        match local.get(name) {
            None => problems.push(format!("{name} is missing")),
            Some(d) if d != digest => problems.push(format!(
                "{name} has changed (SHA-256 {} where {} was signed)",
                hex(&d[..]),
                hex(&digest[..])
            )),
            _ => {}
        }
    }
    for name in local.keys().filter(|n| !signed.contains_key(*n)) {
        problems.push(format!("{name} is not in the signature (an added file)"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SignError::Mismatch {
            model: model.to_path_buf(),
            problems,
        })
    }
}

/// The signature of a single file: `FILE.sig` beside it.
pub fn beside(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Verification before a model is loaded (`--verify-key`): the signature of the model file
/// (`FILE.sig` beside it), or of the directory holding it (`DIR/model.sig`: an ensemble with
/// its members, a fusion model with its sidecar files). Refuses an unsigned model. Returns the
/// signed SHA-256 of `model` itself, so that the loader can check the bytes it then reads.
pub fn verify_before_load(model: &Path, key_path: &Path) -> Result<[u8; 32], SignError> {
    let key = PublicKey::load(key_path)?;
    let beside = beside(model);
    let dir = files::parent_of(model).to_path_buf();
    let in_dir = dir.join("model.sig");
    let (root, signature) = if beside.is_file() {
        (model.to_path_buf(), beside)
    } else if in_dir.is_file() {
        (dir.clone(), in_dir)
    } else {
        return Err(SignError::Unsigned {
            model: model.to_path_buf(),
            beside,
            in_dir,
        });
    };
    let signed = verify(&root, &key, key_path, &signature, &[])?;
    let name = if root == model {
        ".".to_string()
    } else {
        model
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| SignError::Name(model.to_path_buf()))?
            .to_string()
    };
    signed
        .entries
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.digest)
        .ok_or_else(|| SignError::Mismatch {
            model: root.clone(),
            problems: vec![format!("{name} is not in the signature")],
        })
}
