//! `rampart keygen`, `rampart sign` and `rampart verify`: signatures in the OpenSSF model
//! signing format (see [`crate::signing`]).

use std::path::{Path, PathBuf};

use clap::Args;

use super::{CliError, CliResult, emit};
use crate::artifact::files::{OutputKind, Outputs};
use crate::signing::keys::{self, Curve, PrivateKey, PublicKey};
use crate::signing::{self, SignError, Signed};

impl From<SignError> for CliError {
    fn from(e: SignError) -> Self {
        CliError::Usage(e.to_string())
    }
}

/// What a key pair is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// ECDSA keys for `rampart sign` and `--verify-key` (PEM).
    Signing,
    /// An age post-quantum hybrid key pair (ML-KEM-768 + X25519) for `rampart encrypt`
    /// (public key) and `--decrypt-key` (private key).
    Encryption,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// The private key to write (mode 0600); never replaces a file.
    #[arg(long)]
    pub private: PathBuf,
    /// The public key to write; never replaces a file.
    #[arg(long)]
    pub public: PathBuf,
    #[arg(long = "for", value_enum, default_value_t = Purpose::Signing)]
    pub purpose: Purpose,
    /// The signing curve.
    #[arg(long, value_enum, default_value_t = Curve::P256)]
    pub curve: Curve,
}

/// Where the signature goes when `--signature` is not given: `model.sig` inside a model
/// directory, `FILE.sig` beside a model file.
fn default_signature(model: &Path) -> PathBuf {
    if model.is_dir() {
        model.join("model.sig")
    } else {
        signing::beside(model)
    }
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// A model file, or a directory (an ensemble with its members, a fusion model with its
    /// sidecar files), signed as one.
    pub model: PathBuf,
    /// The private key (PEM: PKCS#8 or SEC1, P-256 or P-384).
    #[arg(long)]
    pub key: PathBuf,
    /// The signature to write (default: MODEL_DIR/model.sig, or MODEL_FILE.sig).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// Paths under the model directory to leave out (relative to it); recorded in the signature.
    #[arg(long, value_delimiter = ',')]
    pub ignore_paths: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The model file or directory that was signed.
    pub model: PathBuf,
    /// The public key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// The signature (default: MODEL_DIR/model.sig, or MODEL_FILE.sig).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// More paths under the model directory to skip (relative to it).
    #[arg(long, value_delimiter = ',')]
    pub ignore_paths: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// What `keygen` prints.
#[derive(Debug, serde::Serialize)]
struct Keys {
    private: PathBuf,
    public: PathBuf,
    curve: String,
    hint: String,
}

impl std::fmt::Display for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} key pair: private {} (mode 0600), public {}; key hint {}",
            self.curve,
            self.private.display(),
            self.public.display(),
            self.hint
        )
    }
}

impl std::fmt::Display for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} files, SHA-256 {} (key hint {}); signature {}",
            self.model.display(),
            self.files,
            self.digest,
            self.key_hint,
            self.signature.display()
        )?;
        if !self.ignored.is_empty() {
            writeln!(f, "ignored: {}", self.ignored.join(", "))?;
        }
        Ok(())
    }
}

pub fn keygen(args: KeygenArgs) -> CliResult {
    if args.purpose == Purpose::Encryption {
        let recipient = super::crypt::keygen(&args.private, &args.public)?;
        return emit(
            &Keys {
                private: args.private,
                public: args.public,
                curve: "age post-quantum hybrid (ML-KEM-768 + X25519)".into(),
                hint: format!("{}...", &recipient[..24.min(recipient.len())]),
            },
            false,
        );
    }
    let key = PrivateKey::generate(args.curve);
    keys::write_pair(&key, &args.private, &args.public)?;
    emit(
        &Keys {
            private: args.private,
            public: args.public,
            curve: format!("{:?}", args.curve),
            hint: key.public().hint(),
        },
        false,
    )
}

pub fn sign(args: SignArgs) -> CliResult {
    let signature = args
        .signature
        .clone()
        .unwrap_or_else(|| default_signature(&args.model));
    let mut outputs = Outputs::new();
    outputs.input(&args.key);
    if args.model.is_file() {
        outputs.input(&args.model);
    }
    outputs.output(&signature, "--signature", OutputKind::Signature)?;
    let key = PrivateKey::load(&args.key)?;
    let signed = signing::sign(&args.model, &key, &signature, &args.ignore_paths)?;
    emit(&signed, args.json)
}

pub fn verify(args: VerifyArgs) -> CliResult {
    let signature = args
        .signature
        .clone()
        .unwrap_or_else(|| default_signature(&args.model));
    let key = PublicKey::load(&args.key)?;
    let verified = signing::verify(&args.model, &key, &args.key, &signature, &args.ignore_paths)?;
    emit(&verified, args.json)
}
