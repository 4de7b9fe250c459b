//! Certifying or predicting a whole test set: groups of examples per device call, the
//! reference TSV (`idx label predict radius correct time`) and a summary.

use std::io::Write;
use std::path::{Path, PathBuf};

use std::time::Instant;

use serde::Serialize;

use super::Smooth;
use crate::artifact::files::{self, FileError};
use crate::classifier::{Classifier, Input};

/// The reference TSV's columns.
pub const TSV_COLUMNS: [&str; 6] = ["idx", "label", "predict", "radius", "correct", "time"];

/// One row of the reference TSV (no newline).
pub fn tsv_line(r: &Row) -> String {
    format!(
        "{}\t{}\t{}\t{:.4}\t{}\t{:.4}",
        r.idx, r.label, r.predict, r.radius, r.correct as u8, r.time
    )
}

/// Radii at which certified accuracy is reported (L2, pixel space).
pub const REPORT_RADII: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// One certified test image.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Index in the test set.
    pub idx: usize,
    pub label: usize,
    /// Certified class, or -1 for abstain.
    pub predict: i64,
    pub radius: f64,
    pub correct: bool,
    /// Seconds spent on this image (its share of a batched group).
    pub time: f64,
}

/// Certified accuracy at the report radii and the rest of a run's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub images: usize,
    pub sigma: f64,
    pub n0: usize,
    pub n: usize,
    pub alpha: f64,
    /// (radius, certified accuracy).
    pub certified_accuracy: Vec<(f64, f64)>,
    pub abstain_rate: f64,
    pub seconds_per_image: f64,
    /// Early stopping (`None`: fixed n).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<super::sequential::Target>,
    /// Mean estimation samples per example: n with fixed n, fewer when stopping early
    /// (unknown for merged shards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_samples: Option<f64>,
}

/// Certified accuracy at `radius`: the fraction of rows certified with the correct class and
/// a radius of at least `radius` (0 for no rows).
pub fn certified_accuracy(rows: &[Row], radius: f64) -> f64 {
    let ok = rows
        .iter()
        .filter(|r| r.correct && r.radius >= radius)
        .count();
    ok as f64 / rows.len().max(1) as f64
}

/// Parameters of a CERTIFY run over a data set.
pub struct CertifyRun<'a, I> {
    /// The clean inputs `[N, ...]` (pixels in [0, 1], or scaled network features).
    pub inputs: &'a I,
    pub labels: &'a [usize],
    /// Test-set index of each input (e.g. 0, 20, 40, ... for `--skip 20`).
    pub ids: &'a [usize],
    pub n0: usize,
    pub n: usize,
    pub alpha: f64,
    /// Rows of a resumed run, written first and counted in the summary.
    pub done: &'a [Row],
    /// Stop early (`--target-radius`, `--early-stop`).
    pub target: Option<super::sequential::Target>,
}

/// Certifies every example, streaming rows to `out` (written to `out.partial`, renamed when
/// complete, so an interrupted run never leaves a file that looks finished). `progress` is
/// told the rows certified so far after each group.
pub fn certify_all<C: Classifier<D>, const D: usize>(
    smooth: &Smooth<'_, C, D>,
    run: &CertifyRun<'_, C::Input>,
    out: Option<&Path>,
    progress: &mut dyn FnMut(&[Row]),
) -> Result<(Vec<Row>, Summary), FileError> {
    let total = run.labels.len().min(run.inputs.len()).min(run.ids.len());
    let group = group_size(smooth.batch, run.n);
    let mut writer = out.map(|o| TsvWriter::create(o, run.done)).transpose()?;
    let labels = run.labels;
    let started = Instant::now();
    let mut rows = run.done.to_vec();
    let mut samples = 0u64;
    for start in (0..total).step_by(group) {
        let t = Instant::now();
        let x = run.inputs.range(start, start + group);
        let ids: Vec<u64> = run.ids[start..(start + group).min(total)]
            .iter()
            .map(|&i| i as u64)
            .collect();
        let certs: Vec<super::Certificate> = match run.target {
            None => {
                samples += (ids.len() * run.n) as u64;
                smooth.certify(&x, &ids, run.n0, run.n, run.alpha)
            }
            Some(target) => smooth
                .certify_target(&x, &ids, run.n0, run.n, run.alpha, target)
                .into_iter()
                .map(|e| {
                    samples += e.samples as u64;
                    e.certificate
                })
                .collect(),
        };
        let each = t.elapsed().as_secs_f64() / certs.len() as f64;
        for (j, cert) in certs.into_iter().enumerate() {
            let label = labels[start + j];
            let row = Row {
                idx: ids[j] as usize,
                label,
                predict: cert.class.map_or(-1, |c| c as i64),
                radius: cert.radius,
                correct: cert.class == Some(label),
                time: each,
            };
            if let Some(w) = writer.as_mut() {
                w.row(&row)?;
            }
            rows.push(row);
        }
        progress(&rows);
    }
    if let Some(w) = writer {
        w.finish()?;
    }
    let seconds = started.elapsed().as_secs_f64() / total.max(1) as f64;
    rows.sort_by_key(|r| r.idx);
    let mut summary = summarise(&rows, smooth.sigma, run.n0, run.n, run.alpha, seconds);
    summary.target = run.target;
    // Over the examples certified now (a resumed run's earlier rows do not say).
    summary.mean_samples = (total > 0).then(|| samples as f64 / total as f64);
    Ok((rows, summary))
}

/// The summary of certified `rows` under the protocol (σ, n0, n, α).
pub fn summarise(
    rows: &[Row],
    sigma: f64,
    n0: usize,
    n: usize,
    alpha: f64,
    seconds_per_image: f64,
) -> Summary {
    Summary {
        images: rows.len(),
        sigma,
        n0,
        n,
        alpha,
        certified_accuracy: REPORT_RADII
            .iter()
            .map(|&r| (r, certified_accuracy(rows, r)))
            .collect(),
        abstain_rate: rows.iter().filter(|r| r.predict < 0).count() as f64
            / rows.len().max(1) as f64,
        seconds_per_image,
        target: None,
        mean_samples: None,
    }
}

/// Images per device call: enough that their `n` noisy copies fill a forward pass of `batch`.
fn group_size(batch: usize, n: usize) -> usize {
    (batch / n.max(1)).clamp(1, 256)
}

/// PREDICT for every input of `inputs` `[N, ...]` (`ids`: their test-set indices), grouped
/// per device call.
pub fn predict_all<C: Classifier<D>, const D: usize>(
    smooth: &Smooth<'_, C, D>,
    inputs: &C::Input,
    ids: &[usize],
    n: usize,
    alpha: f64,
) -> Vec<Option<usize>> {
    let group = group_size(smooth.batch, n);
    let ids: Vec<u64> = ids.iter().map(|&i| i as u64).collect();
    let total = inputs.len().min(ids.len());
    (0..total)
        .step_by(group)
        .flat_map(|start| {
            let end = (start + group).min(total);
            smooth.predict(&inputs.range(start, end), &ids[start..end], n, alpha)
        })
        .collect()
}

/// Writes the reference TSV incrementally into `PATH.partial`, then renames it to `PATH`.
struct TsvWriter {
    path: PathBuf,
    partial: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl TsvWriter {
    /// A new `PATH.partial` with the header and the `done` rows of a resumed run.
    fn create(path: &Path, done: &[Row]) -> Result<Self, FileError> {
        let err = |source| FileError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let partial = crate::shard::partial_path(path);
        files::check_writable(path)?;
        files::check_writable(&partial)?;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(err)?);
        writeln!(file, "{}", TSV_COLUMNS.join("\t")).map_err(err)?;
        for r in done {
            writeln!(file, "{}", tsv_line(r)).map_err(err)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            partial,
            file,
        })
    }

    fn row(&mut self, r: &Row) -> Result<(), FileError> {
        writeln!(self.file, "{}", tsv_line(r))
            .and_then(|_| self.file.flush())
            .map_err(|source| FileError::Write {
                path: self.partial.clone(),
                source,
            })
    }

    fn finish(self) -> Result<(), FileError> {
        let err = |source| FileError::Write {
            path: self.path.clone(),
            source,
        };
        let file = self.file.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)?;
        files::check_writable(&self.path)?;
        std::fs::rename(&self.partial, &self.path).map_err(err)
    }
}
