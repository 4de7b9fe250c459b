//! The incident log: append-only JSON lines, each entry carrying the SHA-256 of the one before
//! it, so that removing, reordering or editing an entry breaks the chain
//! (`rampart incidents verify`). Every entry is written and flushed to disk (`fdatasync`)
//! before the response that caused it returns.
//!
//! A line is `{"seq":N,"time":"RFC 3339","alert":{...},"prev":"hex","hash":"hex"}` where
//! `hash` = SHA-256 of the line's JSON without `hash` (keys in that order). The first entry's
//! `prev` is 64 zeros. A process killed while writing leaves at most one torn last line, which
//! was never acknowledged: at the next start it is moved to `LOG.torn-SECONDS` and the log goes on
//! from the last whole entry, with an entry saying so.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::alerts::{Alert, Severity};
use crate::artifact::digest::sha256_hex;
use crate::artifact::files::{self, Limit};

/// The largest incident log read back: 1 GiB.
pub const LOG: Limit = Limit {
    bytes: 1 << 30,
    what: "incident log",
};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error(transparent)]
    File(#[from] files::FileError),
    #[error("{path}: cannot {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: {reason}; the log has been changed since it was written (keep it as evidence, and move it aside to start a new one)"
    )]
    Broken {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// What is hashed: an entry without its hash.
#[derive(Debug, Clone, Serialize)]
struct Body<'a> {
    seq: u64,
    time: String,
    alert: std::borrow::Cow<'a, Alert>,
    prev: String,
}

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub alert: Alert,
    pub prev: String,
    pub hash: String,
}

impl Entry {
    fn digest(&self) -> String {
        let body = Body {
            seq: self.seq,
            time: self.time.clone(),
            alert: std::borrow::Cow::Borrowed(&self.alert),
            prev: self.prev.clone(),
        };
        sha256_hex(&serde_json::to_vec(&body).expect("an entry serialises"))
    }

    /// When it was written.
    pub fn when(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.time).ok()
    }
}

/// A verified log: its entries, and the bytes after the last whole line (a torn write).
#[derive(Debug, Clone)]
pub struct Verified {
    pub entries: Vec<Entry>,
    pub torn: Vec<u8>,
    /// Bytes up to the end of the last whole line.
    pub whole: u64,
}

/// Reads and verifies the chain of the log at `path`.
pub fn verify(path: &Path) -> Result<Verified, IncidentError> {
    let bytes = files::read_bounded(path, LOG)?;
    verify_bytes(&bytes, path)
}

fn verify_bytes(bytes: &[u8], path: &Path) -> Result<Verified, IncidentError> {
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let broken = |line: usize, reason: String| IncidentError::Broken {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut entries: Vec<Entry> = Vec::new();
    // Every whole line ends in a newline; the text before the last one splits into them.
    let lines: Vec<&[u8]> = match whole {
        0 => Vec::new(),
        _ => bytes[..whole - 1].split(|b| *b == b'\n').collect(),
    };
    for (i, line) in lines.into_iter().enumerate() {
        let entry: Entry = serde_json::from_slice(line)
            .map_err(|e| broken(i + 1, format!("not an incident entry ({e})")))?;
        let (want_seq, want_prev) = match entries.last() {
            Some(p) => (p.seq + 1, p.hash.as_str()),
            None => (1, GENESIS),
        };
        if entry.seq != want_seq {
            return Err(broken(
                i + 1,
                format!("entry {} where {want_seq} should follow", entry.seq),
            ));
        }
        if entry.prev != want_prev {
            return Err(broken(
                i + 1,
                "its `prev` is not the hash of the entry before it".into(),
            ));
        }
        if entry.digest() != entry.hash {
            return Err(broken(i + 1, "its contents do not match its hash".into()));
        }
        entries.push(entry);
    }
    Ok(Verified {
        entries,
        torn: bytes[whole..].to_vec(),
        whole: whole as u64,
    })
}

/// The open log, appended to by one writer at a time.
#[derive(Debug)]
pub struct IncidentLog {
    path: PathBuf,
    file: File,
    seq: u64,
    last: String,
    /// The newest entries, for the dashboard.
    pub recent: std::collections::VecDeque<Entry>,
    /// A failed write could not be cut off again: no more appends (the part-written line
    /// stays last, and is moved aside at the next start).
    poisoned: bool,
}

/// Entries kept in memory for the dashboard and `/v1/status`.
const RECENT: usize = 50;

impl IncidentLog {
    /// Opens the log at `path`, verifying what is there, or starts a new one. A torn last line
    /// is moved aside and recorded.
    pub fn open(path: &Path) -> Result<Self, IncidentError> {
        let io = |what| {
            let path = path.to_path_buf();
            move |source| IncidentError::Io { path, what, source }
        };
        if std::fs::symlink_metadata(path).is_err() {
            files::check_writable(path)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o640)
            .open(path)
            .map_err(io("open"))?;
        // One writer per log: a second service on the same file would break the chain.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            return Err(files::FileError::Refused {
                path: path.to_path_buf(),
                reason: "another process is writing this incident log (one service per log)".into(),
            }
            .into());
        }
        if !file.metadata().map_err(io("inspect"))?.is_file() {
            return Err(files::FileError::Refused {
                path: path.to_path_buf(),
                reason: "the incident log must be a regular file".into(),
            }
            .into());
        }
        // Verified while locked: no other writer can append in between.
        let verified = verify(path)?;
        let mut torn_to = None;
        if !verified.torn.is_empty() {
            let secs = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = (0..)
                .map(|k| PathBuf::from(format!("{}.torn-{secs}-{k}", path.display())))
                .find(|p| std::fs::symlink_metadata(p).is_err())
                .expect("a free name");
            files::write_atomic(&aside, &verified.torn)?;
            file.set_len(verified.whole)
                .map_err(io("truncate the torn line of"))?;
            file.sync_all().map_err(io("flush"))?;
            torn_to = Some(aside);
        }
        let mut log = Self {
            path: path.to_path_buf(),
            seq: verified.entries.last().map_or(0, |e| e.seq),
            last: verified
                .entries
                .last()
                .map_or(GENESIS.to_string(), |e| e.hash.clone()),
            recent: verified
                .entries
                .iter()
                .rev()
                .take(RECENT)
                .rev()
                .cloned()
                .collect(),
            file,
            poisoned: false,
        };
        if let Some(aside) = torn_to {
            log.append(
                Alert::new(
                    Severity::Warning,
                    "log_recovered",
                    format!(
                        "the last line of the incident log was torn (an unacknowledged write); its {} bytes were moved to {}",
                        verified.torn.len(),
                        aside.display()
                    ),
                )
                .evidence(serde_json::json!({ "sha256": sha256_hex(&verified.torn) })),
            )?;
        }
        Ok(log)
    }

    /// Appends an entry and flushes it to disk; returns it.
    pub fn append(&mut self, alert: Alert) -> Result<Entry, IncidentError> {
        if self.poisoned {
            return Err(IncidentError::Io {
                path: self.path.clone(),
                what: "append to",
                source: std::io::Error::other(
                    "an earlier write failed and could not be undone; restart the service",
                ),
            });
        }
        let mut entry = Entry {
            seq: self.seq + 1,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            alert,
            prev: self.last.clone(),
            hash: String::new(),
        };
        entry.hash = entry.digest();
        let mut line = serde_json::to_vec(&entry).expect("an entry serialises");
        line.push(b'\n');
        let io = |what| {
            let path = self.path.clone();
            move |source| IncidentError::Io { path, what, source }
        };
        use std::io::Seek;
        let end = self
            .file
            .seek(std::io::SeekFrom::End(0))
            .map_err(io("append to"))?;
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A part-written line would break the chain for good: cut it off again, or stop
            // writing so that it stays the last line.
            if self
                .file
                .set_len(end)
                .and_then(|()| self.file.sync_all())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(io("append to")(e));
        }
        self.seq = entry.seq;
        self.last = entry.hash.clone();
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(entry.clone());
        Ok(entry)
    }

    /// Entries written so far (including earlier runs).
    pub fn len(&self) -> u64 {
        self.seq
    }

    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let mut log = IncidentLog::open(&path).unwrap();
        for i in 0..n {
            log.append(
                Alert::new(Severity::Warning, "drift", format!("window {i}")).statistic(
                    "p",
                    1e-3 * i as f64,
                    0.01,
                ),
            )
            .unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    #[test]
    fn the_chain_catches_edits_deletions_and_reordering() {
        let (_dir, path) = log_with(4);
        assert_eq!(verify(&path).unwrap().entries.len(), 4);
        let good = lines(&path);
        let edited: Vec<String> = good
            .iter()
            .map(|l| l.replace("window 2", "window 9"))
            .collect();
        write(&path, &edited);
        let e = verify(&path).unwrap_err().to_string();
        assert!(
            e.contains(":3:") && e.contains("do not match its hash"),
            "{e}"
        );
        let mut dropped = good.clone();
        dropped.remove(1);
        write(&path, &dropped);
        let e = verify(&path).unwrap_err().to_string();
        assert!(
            e.contains(":2:") && e.contains("where 2 should follow"),
            "{e}"
        );
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        write(&path, &swapped);
        assert!(verify(&path).is_err());
        // A re-hashed edit still breaks the link to the next entry.
        let mut forged: Entry = serde_json::from_str(&good[1]).unwrap();
        forged.alert.summary = "nothing happened".into();
        forged.hash = forged.digest();
        let mut rehashed = good.clone();
        rehashed[1] = serde_json::to_string(&forged).unwrap();
        write(&path, &rehashed);
        let e = verify(&path).unwrap_err().to_string();
        assert!(e.contains(":3:") && e.contains("`prev`"), "{e}");
    }

    #[test]
    fn a_torn_last_line_is_moved_aside_and_the_log_goes_on() {
        let (dir, path) = log_with(2);
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"{\"seq\":3,\"ti");
        std::fs::write(&path, &text).unwrap();
        let v = verify(&path).unwrap();
        assert_eq!((v.entries.len(), v.torn.len()), (2, 12));
        let mut log = IncidentLog::open(&path).unwrap();
        assert_eq!(log.len(), 3, "the recovery is itself an entry");
        log.append(Alert::new(Severity::Info, "start", "again"))
            .unwrap();
        let v = verify(&path).unwrap();
        assert_eq!(v.entries.len(), 4);
        assert!(v.torn.is_empty());
        assert_eq!(v.entries[2].alert.kind, "log_recovered");
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), b"{\"seq\":3,\"ti");
    }

    #[test]
    fn a_log_that_does_not_verify_is_not_opened() {
        let (_dir, path) = log_with(2);
        let mut l = lines(&path);
        l[0] = l[0].replace("\"warning\"", "\"info\"");
        write(&path, &l);
        let e = IncidentLog::open(&path).unwrap_err().to_string();
        assert!(e.contains("move it aside"), "{e}");
    }
}
