//! Certification split across processes or machines ([`crate::shard`]): the certify
//! protocol a shard's description carries, resuming a shard from its TSV, reading the TSVs
//! back and merging them into the unsharded run's rows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::run::Row;
use crate::artifact::files;
use crate::shard::{self, Description, Part, ShardError, TABLE};

/// What a certification's rows depend on besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifyProtocol {
    pub sigma: f64,
    pub n0: usize,
    pub n: usize,
    pub alpha: f64,
    pub seed: u64,
    /// Early stopping, if the run used it.
    pub target: Option<super::sequential::Target>,
    /// Sound smoothing (`--sound`); absent in descriptions of Gaussian runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sound: bool,
}

/// The protocol of the certification shard described beside `path`.
pub fn protocol(meta: &Description, path: &Path) -> Result<CertifyProtocol, ShardError> {
    serde_json::from_value(meta.protocol.clone()).map_err(|e| ShardError::Bad {
        path: shard::meta_path(path),
        reason: format!("not a certification protocol: {e}"),
    })
}

/// The rows a re-run with description `planned` and output `out` already has: all of them if
/// `out` is complete with the same description, those of `out.partial` if an interrupted run
/// with the same description left it, else none.
pub fn resume(out: &Path, planned: &Description) -> Result<Vec<Row>, ShardError> {
    if shard::written_by(out, planned) {
        return read_rows(out);
    }
    let partial = shard::partial_path(out);
    if shard::written_by(&partial, planned) {
        let rows = read_partial(&partial)?;
        let planned_ids: BTreeSet<usize> = planned.ids.iter().copied().collect();
        if rows.iter().all(|r| planned_ids.contains(&r.idx)) {
            return Ok(rows);
        }
    }
    Ok(Vec::new())
}

/// The rows of a certification TSV (`idx label predict radius correct time`), checked.
pub fn read_rows(path: &Path) -> Result<Vec<Row>, ShardError> {
    parse_rows(&files::read_text(path, TABLE)?, path)
}

/// The whole rows of an interrupted run's `OUT.partial` (a torn last line is dropped).
pub fn read_partial(path: &Path) -> Result<Vec<Row>, ShardError> {
    let text = files::read_text(path, TABLE)?;
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
/// refused unless [`shard::check`] finds them one run, each a certification.
pub fn merge(tsvs: &[PathBuf]) -> Result<(Description, Vec<Row>), ShardError> {
    let mut parts = Vec::with_capacity(tsvs.len());
    let mut tables = Vec::with_capacity(tsvs.len());
    for path in tsvs {
        let meta = shard::read_meta(path)?;
        let rows = read_rows(path)?;
        parts.push(Part {
            path: path.clone(),
            ids: rows.iter().map(|r| r.idx).collect(),
            meta,
        });
        tables.push(rows);
    }
    let (meta, _) = shard::check(parts)?;
    let mut rows: Vec<Row> = tables.into_iter().flatten().collect();
    rows.sort_by_key(|r| r.idx);
    Ok((meta, rows))
}
