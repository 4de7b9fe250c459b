//! Evaluation split across machines ([`crate::shard`]): a shard runs every K-th batch of
//! `--batch` examples, seeded as that batch of the whole run, and keeps its per-example table
//! with a description; shard 0 runs the masking checks of the run's first batch. Merging
//! reads the tables back and gives the unsharded run's rows, figures and checks.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::checks::{self, Check};
use super::report::{EvaluateReport, Figures, figures, write_accuracies};
use super::{Plan, Row, attack_names};
use crate::artifact::files;
use crate::attack::suite::Version;
use crate::attack::{Method, Norm};
use crate::shard::{self, Description, Part, ShardError, TABLE};

/// What an evaluation's rows depend on besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateProtocol {
    /// The attacked input ("images", or a fusion model's modality) and its units.
    pub input: String,
    pub units: String,
    pub norm: Norm,
    pub epsilon: f64,
    pub version: Version,
    pub sigma: Option<f64>,
    pub notes: Vec<String>,
    /// The attacks as run, in order.
    pub attacks: Vec<Method>,
    pub batch: usize,
    pub seed: u64,
    /// Whether the masking checks ran.
    pub checks: bool,
    /// Seeds give other numbers on another backend: shards of one run share the device.
    pub device: String,
}

impl EvaluateProtocol {
    /// The protocol of a finished evaluation under `plan`.
    pub fn of(report: &EvaluateReport, plan: &Plan) -> Self {
        EvaluateProtocol {
            input: report.input.clone(),
            units: report.units.clone(),
            norm: report.norm,
            epsilon: report.epsilon,
            version: report.version,
            sigma: report.sigma,
            notes: report.notes.clone(),
            attacks: report.attacks.clone(),
            batch: plan.batch,
            seed: plan.seed,
            checks: plan.checks,
            device: report.device.clone(),
        }
    }
}

/// The merged run's result: its protocol, the figures of every row, and the checks.
#[derive(Debug, Clone, Serialize)]
pub struct MergedEvaluation {
    #[serde(flatten)]
    pub protocol: EvaluateProtocol,
    #[serde(flatten)]
    pub figures: Figures,
    pub checks: Vec<Check>,
    pub warnings: Vec<String>,
}

impl fmt::Display for MergedEvaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.protocol;
        writeln!(
            f,
            "  {} examples ({}): {} {:?} eps {} ({}), on {}",
            self.figures.examples,
            p.input,
            format!("{:?}", p.version).to_lowercase(),
            p.norm,
            p.epsilon,
            p.units,
            p.device
        )?;
        let g = &self.figures;
        write_accuracies(
            f,
            "  ",
            g.clean_accuracy,
            &g.after_each,
            g.robust_accuracy,
            "attack",
        )?;
        for c in &self.checks {
            writeln!(f, "  check {:<24} {:.4}", c.name, c.value)?;
        }
        for w in &self.warnings {
            writeln!(f, "  WARNING: {w}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct TsvRow {
    id: usize,
    label: i64,
    clean_prediction: i64,
    clean_correct: u8,
    broken_by: String,
    iteration: String,
    final_prediction: i64,
    linf: String,
    l2: String,
    nan: u8,
}

/// The rows of a per-example table written under `attacks`, checked.
pub fn read_tsv(path: &Path, attacks: &[Method]) -> Result<Vec<Row>, ShardError> {
    let text = files::read_text(path, TABLE)?;
    let bad = |reason: String| ShardError::Bad {
        path: path.to_path_buf(),
        reason,
    };
    let names = attack_names(attacks);
    let number = |v: &str, line: usize| -> Result<Option<f64>, ShardError> {
        match v {
            "nan" => Ok(None),
            v => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(Some)
                .ok_or_else(|| bad(format!("row {line}: {v:?} is not a norm"))),
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for (k, record) in reader.deserialize::<TsvRow>().enumerate() {
        let line = k + 1;
        let r = record.map_err(|e| bad(format!("row {line}: {e}")))?;
        let broken_by = match r.broken_by.as_str() {
            "clean" | "-" => None,
            name => Some(
                names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| bad(format!("row {line}: no attack {name:?} in the run")))?,
            ),
        };
        let iteration = match r.iteration.as_str() {
            "-" => None,
            v => Some(
                v.parse::<i64>()
                    .map_err(|_| bad(format!("row {line}: iteration {v:?}")))?,
            ),
        };
        if r.clean_correct > 1 || r.nan > 1 || ((r.clean_correct == 0) != (r.broken_by == "clean"))
        {
            return Err(bad(format!("row {line}: values out of range")));
        }
        rows.push(Row {
            id: r.id,
            label: r.label,
            clean_prediction: r.clean_prediction,
            clean_correct: r.clean_correct == 1,
            broken_by,
            iteration,
            final_prediction: r.final_prediction,
            linf: number(&r.linf, line)?,
            l2: number(&r.l2, line)?,
            nan: r.nan == 1,
        });
    }
    Ok(rows)
}

/// The protocol of type `P` (named `what` in errors) of the shard described beside `path`.
pub fn protocol<P: DeserializeOwned>(
    meta: &Description,
    path: &Path,
    what: &str,
) -> Result<P, ShardError> {
    serde_json::from_value(meta.protocol.clone()).map_err(|e| ShardError::Bad {
        path: shard::meta_path(path),
        reason: format!("not {what} protocol: {e}"),
    })
}

/// The per-example tables at `tsvs` (each read under the attacks its protocol names) checked
/// to be the shards of one run: the run's description, its protocol and every row in index
/// order.
pub fn merge_rows<P: DeserializeOwned>(
    tsvs: &[PathBuf],
    what: &str,
    attacks: impl Fn(&P) -> &[Method],
) -> Result<(Description, P, Vec<Row>), ShardError> {
    let mut parts = Vec::with_capacity(tsvs.len());
    let mut tables = Vec::with_capacity(tsvs.len());
    for path in tsvs {
        let meta = shard::read_meta(path)?;
        let p: P = protocol(&meta, path, what)?;
        let rows = read_tsv(path, attacks(&p))?;
        parts.push(Part {
            path: path.clone(),
            ids: rows.iter().map(|r| r.id).collect(),
            meta,
        });
        tables.push(rows);
    }
    let (meta, _) = shard::check(parts)?;
    let p = protocol(&meta, &tsvs[0], what)?;
    let mut rows: Vec<Row> = tables.into_iter().flatten().collect();
    rows.sort_by_key(|r| r.id);
    Ok((meta, p, rows))
}

/// The shards' rows as one run, in index order, with the run's description and result.
pub fn merge(tsvs: &[PathBuf]) -> Result<(Description, Vec<Row>, MergedEvaluation), ShardError> {
    let (meta, p, rows) =
        merge_rows::<EvaluateProtocol>(tsvs, "an evaluation", |p| p.attacks.as_slice())?;
    let before: Vec<Check> = match &meta.extra {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| ShardError::Bad {
            path: shard::meta_path(&tsvs[0]),
            reason: format!("its masking checks: {e}"),
        })?,
        None => Vec::new(),
    };
    let mut checks = before;
    if p.checks {
        checks.extend(checks::after(&p.attacks, &rows));
    }
    let merged = MergedEvaluation {
        figures: figures(&rows, &p.attacks),
        warnings: checks.iter().filter_map(|c| c.warning.clone()).collect(),
        checks,
        protocol: p,
    };
    Ok((meta, rows, merged))
}
