//! The state file of a resumable evaluation: after every batch, the rows so far and a
//! fingerprint of everything that decides them (model digest, data, attacks, seed, batch,
//! device), written atomically. A run given the same file continues after its last batch; a
//! file from another run is refused, never mixed in.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{EvaluateError, Plan, Row};
use crate::artifact::digest::sha256_hex;
use crate::artifact::files::{self, FileError};
use crate::model::Modality;
use crate::workload::{Workload, modality_name};

/// The format's version, checked on reading.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    format: u32,
    fingerprint: String,
    rows: Vec<Row>,
}

/// What a run's rows depend on, hashed (the labels are checked row by row on resuming).
pub fn fingerprint(work: &Workload, plan: &Plan, modality: Option<Modality>) -> String {
    let identity = serde_json::json!({
        "rampart": env!("CARGO_PKG_VERSION"),
        "model": work.opened.sha256,
        "data": work.data_info().name,
        "ids": work.ids,
        "modality": modality.map(modality_name),
        "attacks": plan.attacks,
        "seed": plan.seed,
        "sigma": plan.sigma,
        "batch": plan.batch,
        "shard": plan.shard,
        "device": work.device.description,
    });
    sha256_hex(identity.to_string().as_bytes())
}

/// The rows of an earlier run with this fingerprint; none if `path` does not exist yet.
pub fn read(path: &Path, fingerprint: &str) -> Result<Vec<Row>, EvaluateError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bad = |message: String| EvaluateError::State {
        path: path.to_path_buf(),
        message,
    };
    let text = files::read_text(path, files::EVALUATION_STATE)?;
    let state: State = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "not an evaluation state file ({e}); pass another --state path or delete it"
        ))
    })?;
    if state.format != FORMAT {
        return Err(bad(format!(
            "format {} (this rampart writes {FORMAT}); delete it to start over",
            state.format
        )));
    }
    if state.fingerprint != fingerprint {
        return Err(bad("was written by an evaluation with another model, data, attack plan, seed, batch size, device or rampart version; pass another --state path, or delete it to start over".into()));
    }
    Ok(state.rows)
}

/// Checks that resumed rows are whole batches of the first examples, with their labels.
pub fn check_prefix(
    plan: &Plan,
    rows: &[Row],
    ids: &[usize],
    labels: &[i64],
) -> Result<(), EvaluateError> {
    let whole = rows.len().is_multiple_of(plan.batch.max(1)) || rows.len() == ids.len();
    let same = rows.len() <= ids.len()
        && rows
            .iter()
            .zip(ids.iter().zip(labels))
            .all(|(r, (id, label))| r.id == *id && r.label == *label);
    if whole && same {
        return Ok(());
    }
    Err(EvaluateError::State {
        path: plan.state.clone().unwrap_or_default(),
        message: "its rows are not whole batches of this run's examples with their labels; delete it to start over"
            .into(),
    })
}

/// Writes the rows so far atomically.
pub fn write(path: &Path, fingerprint: &str, rows: &[Row]) -> Result<(), FileError> {
    let state = State {
        format: FORMAT,
        fingerprint: fingerprint.to_string(),
        rows: rows.to_vec(),
    };
    let json = serde_json::to_vec(&state).expect("evaluation state serialises to JSON");
    let limit = files::EVALUATION_STATE;
    if json.len() as u64 > limit.bytes {
        return Err(FileError::Refused {
            path: path.to_path_buf(),
            reason: format!(
                "the {} would be {} bytes, more than the {} a later run may read; evaluate fewer examples (--limit) per run",
                limit.what,
                json.len(),
                limit.bytes
            ),
        });
    }
    files::write_atomic(path, &json)
}
