//! Every file Rampart reads or writes goes through here.
//!
//! - Reads are bounded: a path must name a regular file (a FIFO, a device or a directory is
//!   refused before it is opened for reading), and its size is checked against a limit for its
//!   kind before a byte is allocated.
//! - Writes are atomic: a temporary file beside the target, `fsync`, then `rename`. Only a new
//!   path or an existing regular file is ever replaced; a symlink, a device node or a directory
//!   at the target is refused, never renamed over.
//! - [`Outputs`]: a command names its inputs and outputs before it works, and an output that
//!   is one of the inputs (or another output) is refused.
//! - [`RunLock`]: one writer per run directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {what} not found")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path}: is {what}, not a regular file; give the path of a {expected}")]
    NotRegular {
        path: PathBuf,
        what: &'static str,
        expected: &'static str,
    },
    #[error(
        "{path}: is {size} bytes, more than the {limit} bytes allowed for a {what}; is this the right file?"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        what: &'static str,
    },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: refused: {reason}")]
    Refused { path: PathBuf, reason: String },
}

/// How large a file of one kind may be, and what to call it in errors.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub bytes: u64,
    /// "model file", "ensemble manifest", ...
    pub what: &'static str,
}

/// Model files (safetensors): 4 GiB.
pub const MODEL: Limit = Limit {
    bytes: 4 << 30,
    what: "model file",
};
/// Ensemble manifests and training configs: 1 MiB.
pub const MANIFEST: Limit = Limit {
    bytes: 1 << 20,
    what: "ensemble manifest",
};
pub const CONFIG: Limit = Limit {
    bytes: 1 << 20,
    what: "config file",
};
/// JSONL records: 1 GiB.
pub const RECORDS: Limit = Limit {
    bytes: 1 << 30,
    what: "JSONL record file",
};
/// IDX files, compressed or not, and their decompressed contents: 1 GiB.
pub const IDX: Limit = Limit {
    bytes: 1 << 30,
    what: "IDX file",
};
/// A checkpoint's `state.json`: 64 MiB.
pub const STATE: Limit = Limit {
    bytes: 64 << 20,
    what: "checkpoint state file",
};

/// An image to explain or classify (PNG): 1 MiB.
pub const PNG: Limit = Limit {
    bytes: 1 << 20,
    what: "PNG image",
};
/// A fitted detector: 1 GiB (a covariance of 16,000 features).
pub const DETECTOR: Limit = Limit {
    bytes: 1 << 30,
    what: "detector file",
};
/// A resumable evaluation's state file: 256 MiB (about a million rows).
pub const EVALUATION_STATE: Limit = Limit {
    bytes: 256 << 20,
    what: "evaluation state file",
};

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "a regular file"
    }
}

/// Opens `path` for reading if it is a regular file no larger than `limit`; returns it with
/// its size. The file is opened non-blocking, so a FIFO swapped in after the check cannot hang
/// the open, and checked again on the open handle.
pub fn open_bounded(path: &Path, limit: Limit) -> Result<(File, u64), FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            FileError::Missing {
                path: path.to_path_buf(),
                what: limit.what,
            }
        } else {
            read_err(source)
        }
    })?;
    check_regular(path, &meta, limit)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    check_regular(path, &meta, limit)?;
    Ok((file, meta.len()))
}

fn check_regular(path: &Path, meta: &std::fs::Metadata, limit: Limit) -> Result<(), FileError> {
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            what: kind_of(meta),
            expected: limit.what,
        });
    }
    if meta.len() > limit.bytes {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: limit.bytes,
            what: limit.what,
        });
    }
    Ok(())
}

/// Reads a whole regular file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: Limit) -> Result<Vec<u8>, FileError> {
    let (file, size) = open_bounded(path, limit)?;
    let mut bytes = Vec::with_capacity(size as usize);
    // A file that grew after the check is still cut at the limit.
    file.take(limit.bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit.bytes {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: limit.bytes,
            what: limit.what,
        });
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text(path: &Path, limit: Limit) -> Result<String, FileError> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|e| FileError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Refuses a write target that exists and is not a regular file (a symlink, a device node, a
/// directory, a FIFO): Rampart writes only new paths and regular files.
pub fn check_writable(path: &Path) -> Result<(), FileError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => Err(FileError::Refused {
            path: path.to_path_buf(),
            reason: format!(
                "it is {}; Rampart writes only new paths or regular files, never through or over anything else",
                kind_of(&meta)
            ),
        }),
        _ => Ok(()),
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A temporary path beside `path`, unique within this process.
pub fn temp_beside(path: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_of(path).join(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: a new temporary file beside it, fsync, rename, fsync
/// of the directory. A reader sees the old file or the new one, never a torn one. Creates
/// parent directories. Refuses a target that is not a regular file (see [`check_writable`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic_mode(path, bytes, 0o666)
}

/// [`write_atomic`] for secrets (a decrypted model): the file is created with mode 0600.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic_mode(path, bytes, 0o600)
}

/// Creates `path` (never an existing one, nor through a link) with `mode`, writes and syncs
/// it: for keys, which are never replaced.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let werr = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let werr = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    check_writable(path)?;
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).map_err(werr)?;
    let tmp = temp_beside(path, "tmp");
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // The check again, as late as possible: the rename must not replace a non-file.
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.file_type().is_file()
        {
            return Err(std::io::Error::other(format!(
                "{} appeared at the target",
                kind_of(&meta)
            )));
        }
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}

/// The identity of a path for comparing inputs and outputs: (device, inode) when it exists,
/// else its canonical parent joined with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    Inode(u64, u64),
    Path(PathBuf),
}

fn identity(path: &Path) -> Identity {
    if let Ok(meta) = std::fs::metadata(path) {
        return Identity::Inode(meta.dev(), meta.ino());
    }
    let parent = parent_of(path);
    let parent = parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf());
    Identity::Path(parent.join(path.file_name().unwrap_or_default()))
}

pub use super::output_kind::OutputKind;

/// Refuses an existing file at `path` that does not look like an output of `kind`.
pub fn check_kind(path: &Path, kind: OutputKind) -> Result<(), FileError> {
    let Ok(mut file) = File::open(path) else {
        return Ok(());
    };
    let mut head = vec![0u8; 512];
    let n = read_prefix(&mut file, &mut head).unwrap_or(0);
    head.truncate(n);
    if kind.matches(&head) {
        Ok(())
    } else {
        Err(FileError::Refused {
            path: path.to_path_buf(),
            reason: format!(
                "the file there is not {} {}; Rampart replaces only an earlier output of the same kind (move it, or choose another path)",
                if kind.name().starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                },
                kind.name()
            ),
        })
    }
}

/// Reads into `buf` until it is full or the input ends; returns how much was read.
pub fn read_prefix(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What a command reads and what it will write, checked before it does any work: no output
/// may be an input (through any path, symlink or hard link) or another output, every output
/// must be a new path or a regular file, and an existing one must be an earlier output of the
/// same kind.
#[derive(Debug, Default)]
pub struct Outputs {
    inputs: Vec<(Identity, PathBuf)>,
    outputs: Vec<(Identity, PathBuf, String)>,
}

impl Outputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a file the command reads.
    pub fn input(&mut self, path: &Path) {
        self.inputs.push((identity(path), path.to_path_buf()));
    }

    /// Records every file of `paths` as read.
    pub fn inputs<'a>(&mut self, paths: impl IntoIterator<Item = &'a PathBuf>) {
        for p in paths {
            self.input(p);
        }
    }

    /// Records a file of `kind` the command will write under `flag`, refusing one that is an
    /// input, another output, not a regular file, or an existing file of another kind.
    pub fn output(&mut self, path: &Path, flag: &str, kind: OutputKind) -> Result<(), FileError> {
        check_writable(path)?;
        let id = identity(path);
        let refused = |reason: String| FileError::Refused {
            path: path.to_path_buf(),
            reason,
        };
        if let Some((_, input)) = self.inputs.iter().find(|(i, _)| *i == id) {
            return Err(refused(format!(
                "{flag} would overwrite {}, which this command reads; choose another path",
                input.display()
            )));
        }
        if let Some((_, _, other)) = self.outputs.iter().find(|(i, _, _)| *i == id) {
            return Err(refused(format!(
                "{flag} and {other} name the same file; give them different paths"
            )));
        }
        check_kind(path, kind)?;
        self.outputs
            .push((id, path.to_path_buf(), flag.to_string()));
        Ok(())
    }
}

/// An exclusive lock on a run directory, held while a run writes into it (released when
/// dropped, and by the kernel when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes `dir/.rampart.lock`, creating `dir`; fails at once if another process holds it.
    pub fn take(dir: &Path) -> Result<Self, FileError> {
        let werr = |source| FileError::Write {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(werr)?;
        let path = dir.join(".rampart.lock");
        check_writable(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(werr)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(FileError::Refused {
                path: dir.to_path_buf(),
                reason: "another Rampart run is writing into this directory; wait for it or choose another --out".into(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(werr(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_kinds_recognise_their_files_and_nothing_else() {
        let safetensors = {
            let mut b = 20u64.to_le_bytes().to_vec();
            b.extend(b"{\"a\":1}");
            b
        };
        let cases: [(&[u8], [bool; 5]); 6] = [
            // Safetensors, Tsv, Png, Jsonl, Manifest
            (&safetensors, [true, false, false, false, false]),
            (
                b"idx\tlabel\tpredict\tradius\n",
                [false, true, false, false, false],
            ),
            (b"\x89PNG\r\n\x1a\nrest", [false, false, true, false, false]),
            (
                b"{\"epoch\": 1}\n{\"epoch\": 2}\n",
                [false, false, false, true, false],
            ),
            (
                b"# Rampart ensemble manifest\nstrategy = 1",
                [false, false, false, false, true],
            ),
            (
                b"{\n  \"strategy\": \"mean_probs\"",
                [false, false, false, false, true],
            ),
        ];
        let kinds = [
            OutputKind::Safetensors,
            OutputKind::Tsv,
            OutputKind::Png,
            OutputKind::Jsonl,
            OutputKind::Manifest,
        ];
        for (head, expected) in cases {
            for (kind, want) in kinds.iter().zip(expected) {
                assert_eq!(
                    kind.matches(head),
                    want,
                    "{kind:?} on {:?}",
                    String::from_utf8_lossy(head)
                );
            }
        }
        assert!(
            OutputKind::Jsonl.matches(b""),
            "an empty file may be replaced"
        );
    }

    #[test]
    fn outputs_refuse_inputs_through_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, "{}\n").unwrap();
        std::fs::hard_link(&input, dir.path().join("hard.jsonl")).unwrap();
        let mut outputs = Outputs::new();
        outputs.input(&input);
        let e = outputs.output(&dir.path().join("hard.jsonl"), "--out", OutputKind::Jsonl);
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("which this command reads")
        );
        let dotted = dir.path().join(".").join("in.jsonl");
        assert!(outputs.output(&dotted, "--out", OutputKind::Jsonl).is_err());
        let fresh = dir.path().join("new.jsonl");
        outputs.output(&fresh, "--out", OutputKind::Jsonl).unwrap();
        assert!(
            outputs
                .output(&fresh, "--other", OutputKind::Jsonl)
                .is_err()
        );
    }
}
