//! `rampart predict` over any workload: PREDICT for every example, its report (one schema for
//! every model kind), and its table (`idx label predict correct`), which a shard writes with
//! its description and `rampart merge` reads back.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::report::Protocol;
use super::run::predict_all;
use crate::artifact::ModelInfo;
use crate::artifact::files;
use crate::classifier::Classifier;
use crate::data::host_labels;
use crate::shard::{self, Description, Part, ShardError, TABLE};
use crate::workload::{DataInfo, Examples, Job, Workload, WorkloadError};

/// The table's columns.
pub const COLUMNS: [&str; 4] = ["idx", "label", "predict", "correct"];

/// One PREDICT result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    pub idx: usize,
    pub label: usize,
    /// The smoothed class, or -1 for abstain.
    pub predict: i64,
}

impl Prediction {
    pub fn correct(&self) -> bool {
        self.predict == self.label as i64
    }
}

/// What a PREDICT run's rows depend on besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictProtocol {
    pub sigma: f64,
    pub n: usize,
    pub alpha: f64,
    pub seed: u64,
}

/// The figures of a PREDICT run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PredictSummary {
    pub sigma: f64,
    pub n: usize,
    pub alpha: f64,
    pub examples: usize,
    /// Correct smoothed predictions (abstentions count as wrong).
    pub accuracy: f64,
    pub abstain_rate: f64,
}

impl PredictSummary {
    pub fn of(p: &PredictProtocol, rows: &[Prediction]) -> Self {
        let n = rows.len().max(1) as f64;
        PredictSummary {
            sigma: p.sigma,
            n: p.n,
            alpha: p.alpha,
            examples: rows.len(),
            accuracy: rows.iter().filter(|r| r.correct()).count() as f64 / n,
            abstain_rate: rows.iter().filter(|r| r.predict < 0).count() as f64 / n,
        }
    }
}

impl fmt::Display for PredictSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "smoothed accuracy {:.2}%, abstain rate {:.2}% over {} examples (sigma {}, n {}, alpha {})",
            100.0 * self.accuracy,
            100.0 * self.abstain_rate,
            self.examples,
            self.sigma,
            self.n,
            self.alpha
        )
    }
}

/// `rampart predict`: every key is present for every model kind.
#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    #[serde(flatten)]
    pub summary: PredictSummary,
    pub seconds_per_example: f64,
    /// The table written (`--out`).
    pub tsv: Option<PathBuf>,
    pub predictions: Vec<Prediction>,
}

struct PredictJob {
    protocol: Protocol,
    sigma: f64,
}

impl Job for PredictJob {
    type Output = Vec<Prediction>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let p = self.protocol;
        let smooth = p.smooth(model, self.sigma);
        let labels = host_labels(&ex.labels);
        let predicted = predict_all(&smooth, &ex.inputs, &ex.ids, p.n, p.alpha);
        ex.ids
            .iter()
            .zip(labels)
            .zip(predicted)
            .map(|((&idx, label), p)| Prediction {
                idx,
                label,
                predict: p.map_or(-1, |c| c as i64),
            })
            .collect()
    }
}

/// The protocol a PREDICT run with `protocol` records (sigma resolved).
pub fn recorded(protocol: &Protocol, sigma: f64) -> PredictProtocol {
    PredictProtocol {
        sigma,
        n: protocol.n,
        alpha: protocol.alpha,
        seed: protocol.seed,
    }
}

/// PREDICT for every example of the workload.
pub fn predict(work: &Workload, protocol: Protocol) -> Result<PredictReport, WorkloadError> {
    let sigma = protocol.sigma_for(work)?;
    let started = Instant::now();
    let predictions = work.run(PredictJob { protocol, sigma }, None)?;
    let seconds = started.elapsed().as_secs_f64() / predictions.len().max(1) as f64;
    Ok(report(
        work,
        &recorded(&protocol, sigma),
        predictions,
        seconds,
    ))
}

/// The report of `predictions` made on `work` under `protocol`.
pub fn report(
    work: &Workload,
    protocol: &PredictProtocol,
    predictions: Vec<Prediction>,
    seconds_per_example: f64,
) -> PredictReport {
    PredictReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        summary: PredictSummary::of(protocol, &predictions),
        seconds_per_example,
        tsv: None,
        predictions,
    }
}

impl fmt::Display for PredictReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", tsv(&self.predictions))?;
        write!(f, "{}", self.summary)?;
        writeln!(f, "{:.3} s per example", self.seconds_per_example)?;
        if let Some(p) = &self.tsv {
            writeln!(f, "wrote {}", p.display())?;
        }
        Ok(())
    }
}

/// The table: a header line, then one line per prediction.
pub fn tsv(rows: &[Prediction]) -> String {
    let mut out = COLUMNS.join("\t");
    out.push('\n');
    for p in rows {
        let correct = u8::from(p.correct());
        out.push_str(&format!(
            "{}\t{}\t{}\t{correct}\n",
            p.idx, p.label, p.predict
        ));
    }
    out
}

#[derive(Deserialize)]
struct TsvRow {
    idx: usize,
    label: usize,
    predict: i64,
    correct: u8,
}

/// The rows of a PREDICT table, checked.
pub fn read_tsv(path: &Path) -> Result<Vec<Prediction>, ShardError> {
    let text = files::read_text(path, TABLE)?;
    let bad = |reason: String| ShardError::Bad {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| bad(e.to_string()))?
        .iter()
        .map(String::from)
        .collect();
    if header != COLUMNS {
        return Err(bad(format!("columns {header:?}, expected {COLUMNS:?}")));
    }
    let mut rows = Vec::new();
    for (line, record) in reader.deserialize::<TsvRow>().enumerate() {
        let r = record.map_err(|e| bad(format!("row {}: {e}", line + 1)))?;
        let p = Prediction {
            idx: r.idx,
            label: r.label,
            predict: r.predict,
        };
        if r.predict < -1 || r.correct != u8::from(p.correct()) {
            return Err(bad(format!("row {}: values out of range", line + 1)));
        }
        rows.push(p);
    }
    Ok(rows)
}

/// The shards' predictions as one run, in index order, with the run's description.
pub fn merge(tsvs: &[PathBuf]) -> Result<(Description, Vec<Prediction>), ShardError> {
    let mut parts = Vec::with_capacity(tsvs.len());
    let mut tables = Vec::with_capacity(tsvs.len());
    for path in tsvs {
        let meta = shard::read_meta(path)?;
        let rows = read_tsv(path)?;
        parts.push(Part {
            path: path.clone(),
            ids: rows.iter().map(|r| r.idx).collect(),
            meta,
        });
        tables.push(rows);
    }
    let (meta, _) = shard::check(parts)?;
    let mut rows: Vec<Prediction> = tables.into_iter().flatten().collect();
    rows.sort_by_key(|r| r.idx);
    Ok((meta, rows))
}

/// The protocol of the PREDICT shard described beside `path`.
pub fn protocol(meta: &Description, path: &Path) -> Result<PredictProtocol, ShardError> {
    serde_json::from_value(meta.protocol.clone()).map_err(|e| ShardError::Bad {
        path: shard::meta_path(path),
        reason: format!("not a PREDICT protocol: {e}"),
    })
}
