//! Encryption at rest in the age format (age-encryption.org/v1, the `age` crate): `rampart
//! encrypt` seals a model file, manifest or detector to the public keys
//! of its readers, and every loader opens a sealed file transparently, decrypting it in
//! memory only, with a private key (an age identity file) named by `--decrypt-key FILE`,
//! `$RAMPART_DECRYPT_KEY_FILE`, or the key itself in `$RAMPART_DECRYPT_KEY`; never a key on
//! the command line. age authenticates its header (HMAC-SHA-256) and every 64 KiB chunk of
//! the payload (ChaCha20-Poly1305), so a wrong key, a changed byte or a cut file is an error
//! naming the file, never a model. Keys are age's: `rampart keygen --for encryption` makes a
//! post-quantum hybrid pair (ML-KEM-768 + X25519, `age1pq1...`, readable by age 1.3 and
//! later); X25519 keys from `age-keygen` (`age1...`) work too, for older age tools. Files stay
//! readable by the `age` tool itself (`age -d -i KEY model.safetensors.age`), and the other
//! way round.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use age::secrecy::ExposeSecret;

use super::files::{self, FileError, Limit};

/// How every age file begins.
pub const MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// The environment variable naming an identity file.
pub const KEY_FILE_ENV: &str = "RAMPART_DECRYPT_KEY_FILE";
/// The environment variable holding an identity itself (`AGE-SECRET-KEY-1...`).
pub const KEY_ENV: &str = "RAMPART_DECRYPT_KEY";

/// An identity or recipients file: 64 KiB.
pub const KEY_FILE: Limit = Limit {
    bytes: 64 << 10,
    what: "key file",
};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "{path}: is encrypted (age) and no decryption key was given: pass --decrypt-key FILE, or set ${KEY_FILE_ENV} (a key file) or ${KEY_ENV} (the key)"
    )]
    NoKey { path: PathBuf },
    #[error(
        "{path}: {source_} cannot open it: it was encrypted to other keys, or its header was changed"
    )]
    WrongKey { path: PathBuf, source_: String },
    #[error(
        "{path}: cannot decrypt: the file is corrupt or was changed after encryption ({reason})"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: decrypted, it is larger than the {limit}-byte limit for a {what}")]
    TooLarge {
        path: PathBuf,
        limit: u64,
        what: &'static str,
    },
    #[error("{source_}: {reason}")]
    BadKey { source_: String, reason: String },
    #[error("recipient {0:?}: not an age public key (age1pq1... or age1...)")]
    BadRecipient(String),
    #[error("{path}: is already encrypted (age); encrypting it again would hide nothing more")]
    AlreadySealed { path: PathBuf },
    #[error("encrypting: {0}")]
    Encrypt(String),
}

/// Private keys that can open sealed files, and where they came from (for errors).
pub struct Keys {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    source: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} from {})", self.identities.len(), self.source)
    }
}

impl Keys {
    /// The X25519 identities of an age identity file (comments and blank lines allowed).
    pub fn from_file(path: &Path) -> Result<Keys, SealError> {
        let text = files::read_text(path, KEY_FILE)?;
        Keys::parse(&text, format!("decryption key {}", path.display()))
    }

    /// The identities in `text` (an identity file's contents); `source` names it in errors.
    pub fn parse(text: &str, source: String) -> Result<Keys, SealError> {
        let bad = |reason: String| SealError::BadKey {
            source_: source.clone(),
            reason,
        };
        let mut identities: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            identities.push(parse_identity(line).ok_or_else(|| {
                bad("a line is not an age private key (AGE-SECRET-KEY-PQ-1... or AGE-SECRET-KEY-1...); give the private key, not the public one".into())
            })?);
        }
        if identities.is_empty() {
            return Err(bad("holds no private key".into()));
        }
        Ok(Keys { identities, source })
    }

    /// Decrypts `sealed` (the bytes of the file at `path`), refusing a plaintext larger than
    /// `limit`.
    pub fn decrypt(&self, sealed: &[u8], path: &Path, limit: Limit) -> Result<Vec<u8>, SealError> {
        let corrupt = |reason: String| SealError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let decryptor = age::Decryptor::new_buffered(sealed).map_err(|e| corrupt(e.to_string()))?;
        let reader = decryptor
            .decrypt(
                self.identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            )
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => SealError::WrongKey {
                    path: path.to_path_buf(),
                    source_: self.source.clone(),
                },
                other => corrupt(other.to_string()),
            })?;
        let mut plain = Vec::new();
        reader
            .take(limit.bytes + 1)
            .read_to_end(&mut plain)
            .map_err(|e| corrupt(e.to_string()))?;
        if plain.len() as u64 > limit.bytes {
            return Err(SealError::TooLarge {
                path: path.to_path_buf(),
                limit: limit.bytes,
                what: limit.what,
            });
        }
        Ok(plain)
    }
}

/// A post-quantum or X25519 identity.
#[allow(deprecated)]
fn parse_identity(line: &str) -> Option<Box<dyn age::Identity + Send + Sync>> {
    if let Ok(id) = age::pq::Identity::from_str(line) {
        return Some(Box::new(id));
    }
    age::x25519::Identity::from_str(line)
        .ok()
        .map(|id| Box::new(id) as Box<dyn age::Identity + Send + Sync>)
}

/// A recipient (public key) to encrypt to.
pub type Recipient = Box<dyn age::Recipient + Send + Sync>;

/// A post-quantum (`age1pq1...`) or X25519 (`age1...`) recipient.
#[allow(deprecated)]
fn parse_recipient(line: &str) -> Option<Recipient> {
    if let Ok(r) = age::pq::Recipient::from_str(line) {
        return Some(Box::new(r));
    }
    age::x25519::Recipient::from_str(line)
        .ok()
        .map(|r| Box::new(r) as Recipient)
}

/// Whether `bytes` are an age file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Where the process's keys come from: the `--decrypt-key` file, set once by the command line.
static KEY_FILE_FLAG: OnceLock<PathBuf> = OnceLock::new();
/// The process's keys, read when the first sealed file is opened.
static KEYS: OnceLock<Result<Keys, String>> = OnceLock::new();

/// Names the identity file this process decrypts with (the `--decrypt-key` flag); read only
/// when a sealed file is opened. The first call wins.
pub fn use_key_file(path: &Path) {
    let _ = KEY_FILE_FLAG.set(path.to_path_buf());
}

/// The process's keys: the `--decrypt-key` file, else `$RAMPART_DECRYPT_KEY_FILE`, else
/// `$RAMPART_DECRYPT_KEY`; `None` when none is set.
fn process_keys() -> Option<Result<&'static Keys, String>> {
    let file = KEY_FILE_FLAG
        .get()
        .cloned()
        .or_else(|| std::env::var_os(KEY_FILE_ENV).map(PathBuf::from));
    let text = std::env::var(KEY_ENV).ok();
    if file.is_none() && text.is_none() {
        return None;
    }
    let keys = KEYS.get_or_init(|| {
        match (file, text) {
            (Some(f), _) => Keys::from_file(&f),
            (None, Some(t)) => Keys::parse(&t, format!("${KEY_ENV}")),
            (None, None) => unreachable!("checked above"),
        }
        .map_err(|e| e.to_string())
    });
    Some(keys.as_ref().map_err(Clone::clone))
}

/// The plaintext of a file's `bytes`: the bytes themselves when the file is not sealed, else
/// their decryption with the process's keys (at most `limit` bytes).
pub fn unseal(bytes: Vec<u8>, path: &Path, limit: Limit) -> Result<Vec<u8>, SealError> {
    if !is_sealed(&bytes) {
        return Ok(bytes);
    }
    match process_keys() {
        None => Err(SealError::NoKey {
            path: path.to_path_buf(),
        }),
        Some(Err(reason)) => Err(SealError::BadKey {
            source_: "the decryption key".into(),
            reason,
        }),
        Some(Ok(keys)) => keys.decrypt(&bytes, path, limit),
    }
}

/// A file as read: the SHA-256 of its bytes as stored (what a signature covers), its
/// plaintext, and whether it was sealed.
pub struct Unsealed {
    pub file_sha256: String,
    pub bytes: Vec<u8>,
    pub sealed: bool,
}

/// Reads the file at `path` (at most `limit` bytes, stored and decrypted) and unseals it.
pub fn read(path: &Path, limit: Limit) -> Result<Unsealed, SealError> {
    let stored = files::read_bounded(path, limit)?;
    let file_sha256 = super::digest::sha256_hex(&stored);
    let sealed = is_sealed(&stored);
    Ok(Unsealed {
        file_sha256,
        bytes: unseal(stored, path, limit)?,
        sealed,
    })
}

/// Recipients (public keys, `age1pq1...` or `age1...`), one per line of `text` (comments and
/// blank lines allowed).
pub fn parse_recipients(text: &str) -> Result<Vec<Recipient>, SealError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_recipient(l).ok_or_else(|| SealError::BadRecipient(l.into())))
        .collect()
}

/// `plain` (the contents of the file at `path`) encrypted to `recipients` in the age format.
pub fn encrypt(plain: &[u8], path: &Path, recipients: &[Recipient]) -> Result<Vec<u8>, SealError> {
    if is_sealed(plain) {
        return Err(SealError::AlreadySealed {
            path: path.to_path_buf(),
        });
    }
    let fail = |e: &dyn std::fmt::Display| SealError::Encrypt(e.to_string());
    let encryptor = age::Encryptor::with_recipients(
        recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| fail(&e))?;
    let mut sealed = Vec::with_capacity(plain.len() + plain.len() / 4096 + 512);
    let mut writer = encryptor.wrap_output(&mut sealed).map_err(|e| fail(&e))?;
    writer.write_all(plain).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))?;
    Ok(sealed)
}

/// A new post-quantum hybrid key pair: the identity file's text (with a comment naming its
/// public key) and the public key.
pub fn generate() -> (String, String) {
    let identity = age::pq::Identity::generate();
    let public = identity.to_public().to_string();
    let secret = identity.to_string();
    let text = format!(
        "# created by rampart keygen --for encryption\n# public key: {public}\n{}\n",
        secret.expose_secret()
    );
    (text, public)
}

/// Reads a recipients file (`rampart keygen`'s public key, or age's recipients format).
pub fn read_recipients(path: &Path) -> Result<Vec<Recipient>, SealError> {
    let text = files::read_text(path, KEY_FILE)?;
    let recipients = parse_recipients(&text).map_err(|e| SealError::BadKey {
        source_: format!("recipients file {}", path.display()),
        reason: e.to_string(),
    })?;
    if recipients.is_empty() {
        return Err(SealError::BadKey {
            source_: format!("recipients file {}", path.display()),
            reason: "holds no public key (age1...)".into(),
        });
    }
    Ok(recipients)
}
