//! Runs split across processes or machines (`--shard-index I --shard-count K` on `certify`,
//! `predict`, `attack` and `evaluate`): which examples a shard runs ([`Shard`]), the description each
//! shard writes beside its table (`OUT.shard.json`: the command, the model's SHA-256, the
//! data, the protocol, the selection, the shard and its example indices), and the checks
//! `rampart merge` makes before it joins the tables: one run (same command, model, data,
//! protocol and selection), shards 0..K each once, each shard holding exactly its stripe.
//! The commands key their randomness by example (certify, predict) or by batch (attack and
//! evaluate, whose shards are whole batches), so the merged table is the unsharded run's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifact::files::{self, FileError, Limit};
use crate::workload::{Workload, WorkloadSpec};

/// The format tag of a shard description.
pub const FORMAT: &str = "rampart-shard/1";

/// A shard's table or description: 256 MiB, about two million rows.
pub const TABLE: Limit = Limit {
    bytes: 256 << 20,
    what: "shard table",
};

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error("the shards are not one run: {0}")]
    Mismatch(String),
}

/// One of `count` stripes of the selected examples: the k-th selected example (after offset,
/// skip and limit) belongs to shard ⌊k / block⌋ mod `count`, so shards are balanced and
/// together cover the selection exactly once. `block` is 1 where each example's result is
/// its own (certify, predict), and the batch where a batch shares a seed (attack, evaluate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// 0-based, below `count`.
    pub index: usize,
    /// At least 1.
    pub count: usize,
    /// Consecutive examples that go to one shard together, at least 1.
    #[serde(default = "one")]
    pub block: usize,
}

fn one() -> usize {
    1
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            index: 0,
            count: 1,
            block: 1,
        }
    }
}

impl Shard {
    /// This shard's part of `ids`, in order.
    pub fn stripe(&self, ids: Vec<usize>) -> Vec<usize> {
        ids.into_iter()
            .enumerate()
            .filter(|(k, _)| self.owns(*k))
            .map(|(_, id)| id)
            .collect()
    }

    /// Whether the k-th selected example is this shard's.
    pub fn owns(&self, k: usize) -> bool {
        (k / self.block.max(1)) % self.count.max(1) == self.index
    }

    /// The index in the whole run of this shard's `local`-th block.
    pub fn global_block(&self, local: usize) -> usize {
        local * self.count.max(1) + self.index
    }
}

/// Which command wrote a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    Certify,
    Predict,
    Attack,
    Evaluate,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Certify => "certify",
            Command::Predict => "predict",
            Command::Attack => "attack",
            Command::Evaluate => "evaluate",
        })
    }
}

/// What makes shards parts of one run, and which part each is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    pub format: String,
    pub command: Command,
    pub model_sha256: String,
    pub model: PathBuf,
    pub data: String,
    /// Everything else the rows depend on: the command's protocol.
    pub protocol: serde_json::Value,
    pub offset: usize,
    pub skip: usize,
    pub limit: Option<usize>,
    pub shard: Shard,
    /// The example indices of this shard, in order.
    pub ids: Vec<usize>,
    /// What only this shard found beside its rows (evaluate's masking checks of the run's
    /// first batch, which shard 0 runs); not part of the run's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

impl Description {
    /// The description of the shard `work` runs (opened from `spec`) for `command`.
    pub fn new(
        work: &Workload,
        spec: &WorkloadSpec,
        command: Command,
        protocol: &impl Serialize,
    ) -> Self {
        Description {
            format: FORMAT.into(),
            command,
            model_sha256: work.opened.sha256.clone(),
            model: work.opened.path.clone(),
            data: work.data_info().name,
            protocol: serde_json::to_value(protocol).expect("a protocol serialises to JSON"),
            offset: spec.offset,
            skip: spec.skip,
            limit: spec.limit,
            shard: spec.shard,
            ids: work.ids.clone(),
            extra: None,
        }
    }

    /// The run's identity: everything but the shard, its indices, its extras and the model's
    /// path (which may differ between machines).
    fn run(&self) -> Description {
        Description {
            model: PathBuf::new(),
            shard: Shard {
                index: 0,
                ..self.shard
            },
            ids: Vec::new(),
            extra: None,
            ..self.clone()
        }
    }

    /// Whether `other` describes this very shard of this run.
    pub fn same_shard(&self, other: &Description) -> bool {
        self.run() == other.run() && self.shard == other.shard && self.ids == other.ids
    }
}

/// Where the description of the table at `out` goes: `out` with `.shard.json` appended.
pub fn meta_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_os_string();
    p.push(".shard.json");
    PathBuf::from(p)
}

/// Where a table is written until it is complete: `out` with `.partial` appended.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut partial = out.as_os_str().to_os_string();
    partial.push(".partial");
    PathBuf::from(partial)
}

/// Writes `meta` beside the table at `out`, atomically.
pub fn write_meta(out: &Path, meta: &Description) -> Result<(), FileError> {
    let text = serde_json::to_string_pretty(meta).map_err(|e| FileError::Write {
        path: meta_path(out),
        source: std::io::Error::other(e),
    })?;
    files::write_atomic(&meta_path(out), text.as_bytes())
}

/// The description beside the table at `out`, checked.
pub fn read_meta(out: &Path) -> Result<Description, ShardError> {
    let path = meta_path(out);
    let text = files::read_text(&path, TABLE)?;
    let bad = |reason: String| ShardError::Bad {
        path: path.clone(),
        reason,
    };
    let format = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("format").and_then(|f| f.as_str()).map(String::from));
    if format.as_deref() != Some(FORMAT) {
        return Err(bad(format!(
            "format {format:?}, expected {FORMAT:?} (a shard from another rampart version: run it again)"
        )));
    }
    let meta: Description = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let s = meta.shard;
    if s.count == 0 || s.index >= s.count || s.block == 0 {
        return Err(bad(format!(
            "shard {} of {} (block {}) is not a shard",
            s.index, s.count, s.block
        )));
    }
    Ok(meta)
}

/// Whether the table at `path` (complete or `.partial`) was written by the shard `planned`.
pub fn written_by(path: &Path, planned: &Description) -> bool {
    path.exists() && read_meta(path).is_ok_and(|m| m.same_shard(planned))
}

/// One shard as `merge` reads it: its table's path, its description, the ids of its rows.
pub struct Part {
    pub path: PathBuf,
    pub meta: Description,
    pub ids: Vec<usize>,
}

/// Checks that `parts` are the shards of one run, each once, covering its selection exactly
/// once; returns the run's description (shard 0 of 1, every index, shard 0's extras) and
/// the parts in shard order.
pub fn check(mut parts: Vec<Part>) -> Result<(Description, Vec<Part>), ShardError> {
    for p in &parts {
        if p.ids != p.meta.ids {
            return Err(ShardError::Bad {
                path: p.path.clone(),
                reason: format!(
                    "its {} rows are not the {} examples its description lists (an unfinished or edited shard?)",
                    p.ids.len(),
                    p.meta.ids.len()
                ),
            });
        }
    }
    let Some(first) = parts.first() else {
        return Err(ShardError::Mismatch("no shard files given".into()));
    };
    let run = first.meta.run();
    let count = first.meta.shard.count;
    let first_path = first.path.clone();
    let mut seen: Vec<Option<&Path>> = vec![None; count];
    for p in &parts {
        if p.meta.run() != run {
            return Err(ShardError::Mismatch(format!(
                "{} differs from {} in command, model, data, protocol or selection",
                p.path.display(),
                first_path.display()
            )));
        }
        if let Some(other) = seen[p.meta.shard.index].replace(&p.path) {
            return Err(ShardError::Mismatch(format!(
                "{} and {} are both shard {}",
                other.display(),
                p.path.display(),
                p.meta.shard.index
            )));
        }
    }
    if let Some(missing) = seen.iter().position(Option::is_none) {
        return Err(ShardError::Mismatch(format!(
            "shard {missing} of {count} is missing"
        )));
    }
    let all: BTreeSet<usize> = parts.iter().flat_map(|p| p.meta.ids.clone()).collect();
    let union: Vec<usize> = all.into_iter().collect();
    for p in &parts {
        if p.meta.shard.stripe(union.clone()) != p.meta.ids {
            return Err(ShardError::Mismatch(format!(
                "{} does not hold shard {}'s stripe of the examples (an index appears twice or in the wrong shard)",
                p.path.display(),
                p.meta.shard.index
            )));
        }
    }
    parts.sort_by_key(|p| p.meta.shard.index);
    let meta = Description {
        model: parts[0].meta.model.clone(),
        shard: Shard::default(),
        ids: union,
        extra: parts[0].meta.extra.clone(),
        ..run
    };
    Ok((meta, parts))
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn blocks_go_round_the_shards() {
        let s = |index| Shard {
            index,
            count: 3,
            block: 2,
        };
        let ids: Vec<usize> = (0..11).collect();
        assert_eq!(s(0).stripe(ids.clone()), vec![0, 1, 6, 7]);
        assert_eq!(s(1).stripe(ids.clone()), vec![2, 3, 8, 9]);
        assert_eq!(s(2).stripe(ids), vec![4, 5, 10]);
        assert_eq!(s(1).global_block(1), 4);
    }
}
