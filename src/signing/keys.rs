//! ECDSA keys for model signing, P-256 (with SHA-256) or P-384 (with SHA-384), in PEM: private
//! keys as PKCS#8 (`BEGIN PRIVATE KEY`, what `rampart keygen` writes) or SEC1 (`BEGIN EC PRIVATE
//! KEY`), public keys as SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`). The cryptography is
//! RustCrypto's (`p256`, `p384`, `ecdsa`); signatures are ASN.1 DER, as `model_signing` writes
//! and reads them.

use std::path::Path;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::OsRng;
use sha2::{Digest, Sha256};

use super::SignError;
use crate::artifact::files::{self, Limit};

/// Key files are small; anything larger is not a key.
const KEY_LIMIT: Limit = Limit {
    bytes: 64 * 1024,
    what: "PEM key",
};

/// The curves a key can be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Curve {
    /// NIST P-256 with SHA-256.
    P256,
    /// NIST P-384 with SHA-384.
    P384,
}

/// A private key.
#[derive(Clone)]
pub enum PrivateKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

fn key_error(path: &Path, reason: impl Into<String>) -> SignError {
    SignError::Key {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl PrivateKey {
    /// Reads a PEM private key (PKCS#8 or SEC1, P-256 or P-384).
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let text = files::read_text(path, KEY_LIMIT)?;
        if text.contains("ENCRYPTED PRIVATE KEY") {
            return Err(key_error(
                path,
                "the key is encrypted; decrypt it first (openssl pkcs8 -in KEY -out PLAIN.pem)",
            ));
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(&text) {
            return Ok(Self::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_pem(&text) {
            return Ok(Self::P384(k.into()));
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(&text) {
            return Ok(Self::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_pem(&text) {
            return Ok(Self::P384(k.into()));
        }
        Err(key_error(
            path,
            "not a PEM ECDSA private key on P-256 or P-384 (PKCS#8 or SEC1); make one with `rampart keygen`",
        ))
    }

    /// A fresh key from the operating system's random source.
    pub fn generate(curve: Curve) -> Self {
        match curve {
            Curve::P256 => Self::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            Curve::P384 => Self::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
        }
    }

    pub fn public(&self) -> PublicKey {
        match self {
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
            Self::P384(k) => PublicKey::P384(*k.verifying_key()),
        }
    }

    /// The DER ECDSA signature of `message` (hashed with the curve's SHA-2).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(message);
                s.to_der().as_bytes().to_vec()
            }
            Self::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(message);
                s.to_der().as_bytes().to_vec()
            }
        }
    }

    fn pkcs8_pem(&self) -> Result<String, String> {
        let pem = match self {
            Self::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            Self::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|p| p.to_string()).map_err(|e| e.to_string())
    }
}

impl PublicKey {
    /// Reads a PEM public key (SubjectPublicKeyInfo, P-256 or P-384).
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let text = files::read_text(path, KEY_LIMIT)?;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(&text) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_pem(&text) {
            return Ok(Self::P384(k));
        }
        Err(key_error(
            path,
            "not a PEM public key (BEGIN PUBLIC KEY) on P-256 or P-384",
        ))
    }

    /// The PEM text, LF line endings (as OpenSSL and `model_signing` write it).
    pub fn pem(&self) -> String {
        match self {
            Self::P256(k) => k.to_public_key_pem(LineEnding::LF),
            Self::P384(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .expect("a valid public key encodes")
    }

    /// `model_signing`'s key hint: the hex SHA-256 of the PEM text.
    pub fn hint(&self) -> String {
        hex(&Sha256::digest(self.pem().as_bytes()))
    }

    /// Whether `der` is a valid signature of `message` by this key. High-S signatures are
    /// accepted, as `model_signing` accepts them.
    pub fn verify(&self, message: &[u8], der: &[u8]) -> bool {
        match self {
            Self::P256(k) => {
                p256::ecdsa::Signature::from_der(der).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
            Self::P384(k) => {
                p384::ecdsa::Signature::from_der(der).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
        }
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a new key pair: the private key (PKCS#8 PEM, mode 0600) and its public key (SPKI
/// PEM). Refuses to replace any existing file: a key is never overwritten.
pub fn write_pair(key: &PrivateKey, private: &Path, public: &Path) -> Result<(), SignError> {
    for path in [private, public] {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(key_error(
                path,
                "exists; keygen never replaces a key: choose another name or move it away",
            ));
        }
    }
    let pem = key.pkcs8_pem().map_err(|e| key_error(private, e))?;
    files::write_new(private, pem.as_bytes(), 0o600)?;
    Ok(files::write_new(
        public,
        key.public().pem().as_bytes(),
        0o644,
    )?)
}
