//! `rampart encrypt` and `rampart decrypt`: model files, manifests and detectors sealed at
//! rest in the age format (see [`crate::artifact::sealed`]), and the encryption key pair of
//! `rampart keygen --for encryption`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{CliError, CliResult, emit};
use crate::artifact::files::{self, OutputKind, Outputs};
use crate::artifact::sealed::{self, SealError};

impl From<SealError> for CliError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::File(f) => CliError::File(f),
            other => CliError::Usage(other.to_string()),
        }
    }
}

#[derive(Args, Debug)]
pub struct EncryptArgs {
    /// The file to encrypt: a model (safetensors), an ensemble manifest or a fitted detector.
    pub input: PathBuf,
    /// The encrypted file (default: INPUT.age); never the input.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Public keys to encrypt to, one `age1...` per line (`rampart keygen --for encryption`'s
    /// public key, or an age recipients file); repeat for several readers.
    #[arg(long, required = true)]
    pub recipients: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// The encrypted file.
    pub input: PathBuf,
    /// Where the plaintext goes (default: INPUT without its .age), mode 0600. Commands read
    /// encrypted files directly; decrypt only to hand a file to another tool.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// What `encrypt` and `decrypt` report.
#[derive(Debug, Serialize)]
struct Crypted {
    input: PathBuf,
    out: PathBuf,
    /// What the plaintext is.
    kind: &'static str,
    /// SHA-256 of the plaintext (the model's identity either way) and of the encrypted file.
    sha256: String,
    file_sha256: String,
    recipients: usize,
}

impl std::fmt::Display for Crypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} -> {} ({}; plaintext SHA-256 {}, encrypted file SHA-256 {})",
            self.input.display(),
            self.out.display(),
            self.kind,
            self.sha256,
            self.file_sha256
        )?;
        if self.recipients > 0 {
            writeln!(
                f,
                "readable with the private key of any of {} recipients",
                self.recipients
            )?;
        }
        Ok(())
    }
}

/// The kind of a plaintext Rampart can seal and load, by its first bytes.
fn kind_of(plain: &[u8], path: &Path) -> Result<OutputKind, CliError> {
    let head = &plain[..plain.len().min(4096)];
    [OutputKind::Detector, OutputKind::Safetensors, OutputKind::Manifest]
        .into_iter()
        .find(|k| k.matches(head))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{}: not a model file, ensemble manifest or detector; rampart encrypts only what it loads",
                path.display()
            ))
        })
}

pub fn encrypt(args: EncryptArgs) -> CliResult {
    let out = args.out.clone().unwrap_or_else(|| {
        let mut p = args.input.clone().into_os_string();
        p.push(".age");
        PathBuf::from(p)
    });
    let mut outputs = Outputs::new();
    outputs.input(&args.input);
    outputs.inputs(&args.recipients);
    outputs.output(&out, "--out", OutputKind::Sealed)?;
    let mut recipients = Vec::new();
    for r in &args.recipients {
        recipients.extend(sealed::read_recipients(r)?);
    }
    let plain = files::read_bounded(&args.input, files::MODEL)?;
    if sealed::is_sealed(&plain) {
        return Err(SealError::AlreadySealed { path: args.input }.into());
    }
    let kind = kind_of(&plain, &args.input)?;
    let sealed_bytes = sealed::encrypt(&plain, &args.input, &recipients)?;
    files::write_atomic(&out, &sealed_bytes)?;
    let report = Crypted {
        input: args.input,
        out,
        kind: kind.name(),
        sha256: crate::artifact::digest::sha256_hex(&plain),
        file_sha256: crate::artifact::digest::sha256_hex(&sealed_bytes),
        recipients: recipients.len(),
    };
    emit(&report, args.json)
}

pub fn decrypt(args: DecryptArgs) -> CliResult {
    let out = match &args.out {
        Some(o) => o.clone(),
        None if args.input.extension().is_some_and(|e| e == "age") => args.input.with_extension(""),
        None => {
            return Err(CliError::Usage(format!(
                "{}: has no .age extension to drop; give --out",
                args.input.display()
            )));
        }
    };
    let file = sealed::read(&args.input, files::MODEL)?;
    if !file.sealed {
        return Err(CliError::Usage(format!(
            "{}: is not encrypted (no age header)",
            args.input.display()
        )));
    }
    let kind = kind_of(&file.bytes, &args.input)?;
    let mut outputs = Outputs::new();
    outputs.input(&args.input);
    outputs.output(&out, "--out", kind)?;
    files::write_atomic_private(&out, &file.bytes)?;
    let report = Crypted {
        input: args.input,
        out,
        kind: kind.name(),
        sha256: crate::artifact::digest::sha256_hex(&file.bytes),
        file_sha256: file.file_sha256,
        recipients: 0,
    };
    emit(&report, args.json)
}

/// `rampart keygen --for encryption`: an age identity (mode 0600) and its public key; neither
/// replaces a file.
pub fn keygen(private: &Path, public: &Path) -> Result<String, CliError> {
    for path in [private, public] {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(CliError::Usage(format!(
                "{}: exists; keygen never replaces a key: choose another name or move it away",
                path.display()
            )));
        }
    }
    let (identity, recipient) = sealed::generate();
    files::write_new(private, identity.as_bytes(), 0o600)?;
    files::write_new(public, format!("{recipient}\n").as_bytes(), 0o644)?;
    Ok(recipient)
}
