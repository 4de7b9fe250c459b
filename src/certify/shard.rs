//! Certification split across processes or machines: each shard's TSV has beside it
//! `OUT.shard.json`, naming the model (SHA-256), the data, the protocol, the selection and the
//! shard with its example indices. [`merge`] checks that the shards belong to one run and
//! cover its selection exactly once, and gives the rows of the unsharded run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::run::Row;
use crate::artifact::files::{self, FileError, Limit};
use crate::workload::Shard;

/// The format tag of a shard description.
pub const FORMAT: &str = "rampart-certify-shard/1";

/// A certification TSV (and its description): 256 MiB, about two million rows.
const TSV: Limit = Limit {
    bytes: 256 << 20,
    what: "certification TSV",
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

/// What makes two shards parts of one run, and which part each is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMeta {
    pub format: String,
    pub model_sha256: String,
    pub model: PathBuf,
    pub data: String,
    pub sigma: f64,
    pub n0: usize,
    pub n: usize,
    pub alpha: f64,
    pub seed: u64,
    /// Early stopping for a target radius, if the run used it.
    pub target: Option<super::sequential::Target>,
    pub offset: usize,
    pub skip: usize,
    pub limit: Option<usize>,
    pub shard: Shard,
    /// The example indices of this shard, in order.
    pub ids: Vec<usize>,
}

impl ShardMeta {
    /// The run's identity: everything but the shard and its indices (and the model's path,
    /// which may differ between machines).
    fn run(&self) -> ShardMeta {
        ShardMeta {
            model: PathBuf::new(),
            shard: Shard::default(),
            ids: Vec::new(),
            ..self.clone()
        }
    }
}

/// Where the description of the TSV at `out` goes: `out` with `.shard.json` appended.
pub fn meta_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_os_string();
    p.push(".shard.json");
    PathBuf::from(p)
}

/// The rows a re-run with description `planned` and output `out` already has: all of them if
/// `out` is complete with the same description, those of `out.partial` if an interrupted run
/// with the same description left it, else none.
pub fn resume(out: &Path, planned: &ShardMeta) -> Result<Vec<Row>, ShardError> {
    let same = |p: &Path| {
        read_meta(p).is_ok_and(|m| {
            m.run() == planned.run() && m.shard == planned.shard && m.ids == planned.ids
        })
    };
    if out.exists() && same(out) {
        return read_rows(out);
    }
    let partial = super::run::partial_path(out);
    if partial.exists() && same(&partial) {
        let rows = read_partial(&partial)?;
        let planned_ids: BTreeSet<usize> = planned.ids.iter().copied().collect();
        if rows.iter().all(|r| planned_ids.contains(&r.idx)) {
            return Ok(rows);
        }
    }
    Ok(Vec::new())
}

/// Writes `meta` beside the TSV at `out`, atomically.
pub fn write_meta(out: &Path, meta: &ShardMeta) -> Result<(), FileError> {
    let text = serde_json::to_string_pretty(meta).map_err(|e| FileError::Write {
        path: meta_path(out),
        source: std::io::Error::other(e),
    })?;
    files::write_atomic(&meta_path(out), text.as_bytes())
}

/// The description beside the TSV at `out`, checked.
pub fn read_meta(out: &Path) -> Result<ShardMeta, ShardError> {
    let path = meta_path(out);
    let text = files::read_text(&path, TSV)?;
    let bad = |reason: String| ShardError::Bad {
        path: path.clone(),
        reason,
    };
    let meta: ShardMeta = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if meta.format != FORMAT {
        return Err(bad(format!(
            "format {:?}, expected {FORMAT:?}",
            meta.format
        )));
    }
    if meta.shard.count == 0 || meta.shard.index >= meta.shard.count {
        return Err(bad(format!(
            "shard {} of {} is not a shard",
            meta.shard.index, meta.shard.count
        )));
    }
    Ok(meta)
}

/// The rows of a certification TSV (`idx label predict radius correct time`), checked.
pub fn read_rows(path: &Path) -> Result<Vec<Row>, ShardError> {
    parse_rows(&files::read_text(path, TSV)?, path)
}

/// The whole rows of an interrupted run's `OUT.partial` (a torn last line is dropped).
pub fn read_partial(path: &Path) -> Result<Vec<Row>, ShardError> {
    let text = files::read_text(path, TSV)?;
    let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
    parse_rows(whole, path)
}

fn parse_rows(text: &str, path: &Path) -> Result<Vec<Row>, ShardError> {
    let bad = |reason: String| ShardError::Bad {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    if header.iter().collect::<Vec<_>>() != super::run::TSV_COLUMNS {
        return Err(bad(format!(
            "columns {:?}, expected {:?}",
            header.iter().collect::<Vec<_>>(),
            super::run::TSV_COLUMNS
        )));
    }
    let mut rows = Vec::new();
    for (line, record) in reader.deserialize::<TsvRow>().enumerate() {
        let r = record.map_err(|e| bad(format!("row {}: {e}", line + 1)))?;
        if !(r.radius.is_finite() && r.radius >= 0.0 && r.time.is_finite() && r.correct <= 1) {
            return Err(bad(format!("row {}: values out of range", line + 1)));
        }
        rows.push(Row {
            idx: r.idx,
            label: r.label,
            predict: r.predict,
            radius: r.radius,
            correct: r.correct == 1,
            time: r.time,
        });
    }
    Ok(rows)
}

#[derive(Deserialize)]
struct TsvRow {
    idx: usize,
    label: usize,
    predict: i64,
    radius: f64,
    correct: u8,
    time: f64,
}

/// The shards' rows as one run, in index order, with the run's description (shard 0 of 1):
/// refused unless every shard has the same model, data, protocol and selection, the shards
/// are 0..count each once, each TSV holds exactly its shard's indices, and each shard's
/// indices are its stripe of their union.
pub fn merge(tsvs: &[PathBuf]) -> Result<(ShardMeta, Vec<Row>), ShardError> {
    let mut parts = Vec::with_capacity(tsvs.len());
    for path in tsvs {
        let meta = read_meta(path)?;
        let rows = read_rows(path)?;
        let have: Vec<usize> = rows.iter().map(|r| r.idx).collect();
        if have != meta.ids {
            return Err(ShardError::Bad {
                path: path.clone(),
                reason: format!(
                    "its {} rows are not the {} examples its description lists (an unfinished or edited shard?)",
                    have.len(),
                    meta.ids.len()
                ),
            });
        }
        parts.push((path, meta, rows));
    }
    let Some(first) = parts.first().map(|(_, m, _)| m.clone()) else {
        return Err(ShardError::Mismatch("no shard files given".into()));
    };
    let run = first.run();
    let count = first.shard.count;
    let mut seen = vec![None; count];
    for (path, meta, _) in &parts {
        if meta.run() != run || meta.shard.count != count {
            return Err(ShardError::Mismatch(format!(
                "{} differs from {} in model, data, protocol or selection",
                path.display(),
                tsvs[0].display()
            )));
        }
        if let Some(other) = seen[meta.shard.index].replace(path) {
            return Err(ShardError::Mismatch(format!(
                "{} and {} are both shard {}",
                other.display(),
                path.display(),
                meta.shard.index
            )));
        }
    }
    if let Some(missing) = seen.iter().position(Option::is_none) {
        return Err(ShardError::Mismatch(format!(
            "shard {missing} of {count} is missing"
        )));
    }
    let all: BTreeSet<usize> = parts.iter().flat_map(|(_, m, _)| m.ids.clone()).collect();
    let union: Vec<usize> = all.into_iter().collect();
    for (path, meta, _) in &parts {
        if meta.shard.stripe(union.clone()) != meta.ids {
            return Err(ShardError::Mismatch(format!(
                "{} does not hold shard {}'s stripe of the examples (an index appears twice or in the wrong shard)",
                path.display(),
                meta.shard.index
            )));
        }
    }
    let mut rows: Vec<Row> = parts.into_iter().flat_map(|(_, _, r)| r).collect();
    rows.sort_by_key(|r| r.idx);
    let meta = ShardMeta {
        model: first.model.clone(),
        shard: Shard::default(),
        ids: union,
        ..run
    };
    Ok((meta, rows))
}
