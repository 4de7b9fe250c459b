//! Scoring with a fitted detector: input validation first ([`super::validate`]), then every
//! detector's score and conformal p-value, the fused p-value and the alarms, for each example
//! of a batch, computed on the device and read back in one transfer per batch.

use burn::tensor::Tensor;
use serde::Serialize;

use super::adversarial::Detector;
use super::calibrate::fuse;
use super::store::Fitted;
use super::validate::{self, Invalid};
use super::{DetectError, RunError};
use crate::classifier::{Classifier, Input};
use crate::workload::{Examples, Job, Workload};

/// One batch's figures, read back: `scores[d][i]` and `p_values[d][i]` of detector `d` on
/// example `i`, the fused p-value and the model's decision of each example.
#[derive(Debug, Clone, Default)]
pub struct BatchScores {
    pub scores: Vec<Vec<f32>>,
    pub p_values: Vec<Vec<f32>>,
    /// Fused p-values; 0 for inputs that failed validation.
    pub fused: Vec<f32>,
    pub decision: Vec<i64>,
    /// Why each input failed validation, if it did.
    pub invalid: Vec<Option<Invalid>>,
}

/// Validates and scores a batch (one read-back). Inputs that fail validation are scored as
/// the box's corner and alarm (fused p-value 0).
pub fn score_batch<const D: usize, C: Classifier<D>>(
    fitted: &Fitted,
    model: &C,
    x: &C::Input,
) -> Result<BatchScores, DetectError> {
    Ok(score_batch_with(fitted, model, x, None)?.0)
}

/// [`score_batch`], reading back `extra` rows `[R, N]` in the same transfer (returned
/// row-major, `R · N` values).
pub fn score_batch_with<const D: usize, C: Classifier<D>>(
    fitted: &Fitted,
    model: &C,
    x: &C::Input,
    extra: Option<Tensor<2>>,
) -> Result<(BatchScores, Vec<f32>), DetectError> {
    let k = fitted.methods.len();
    let n = x.len();
    let checked = validate::check(&model.domain(), x.x().clone())?;
    let x = &x.with_x(checked.x);
    let scores: Vec<Tensor<1>> = fitted.methods.iter().map(|m| m.score(model, x)).collect();
    let p: Vec<Tensor<1>> = scores
        .iter()
        .zip(&fitted.calibrations)
        .map(|(s, c)| c.p_values(s.clone()))
        .collect();
    let fused = fuse(fitted.header.fusion, &p).mask_fill(checked.invalid, 0.0);
    let decision = model.decide(x.clone()).float();
    let mut rows = scores;
    rows.extend(p);
    rows.push(fused);
    rows.push(decision);
    rows.push(checked.codes);
    let mut stacked = Tensor::stack::<2>(rows, 0);
    if let Some(e) = extra {
        stacked = Tensor::cat(vec![stacked, e], 0);
    }
    let all = crate::detect::host_floats(stacked, "scores")?;
    let row = |r: usize| all[r * n..(r + 1) * n].to_vec();
    let scores = BatchScores {
        scores: (0..k).map(row).collect(),
        p_values: (k..2 * k).map(row).collect(),
        fused: row(2 * k),
        decision: row(2 * k + 1).into_iter().map(|d| d as i64).collect(),
        invalid: row(2 * k + 2).into_iter().map(Invalid::from_code).collect(),
    };
    let rest = all[(2 * k + 3) * n..].to_vec();
    Ok((scores, rest))
}

/// The alarm thresholds of a fitted detector at its false-positive rate, one per detector.
pub fn thresholds(fitted: &Fitted) -> Result<Vec<f32>, DetectError> {
    fitted
        .calibrations
        .iter()
        .map(|c| c.threshold(fitted.header.fpr))
        .collect()
}

/// Whether a score raises its detector's alarm: above the threshold, or NaN (an input that
/// breaks the detector is suspicious).
pub fn alarm(score: f32, threshold: f32) -> bool {
    score > threshold || score.is_nan()
}

/// Whether a (fused) p-value raises the alarm at `fpr`. p-values come back as f32, so a
/// p-value equal to the rate (a multiple of 1/(n + 1)) may read a rounding above it; the
/// comparison allows for that.
pub fn p_alarm(p: f32, fpr: f64) -> bool {
    f64::from(p) <= fpr * (1.0 + 1e-6) || p.is_nan()
}

/// One example's scores, as `rampart detect score` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreRow {
    pub id: usize,
    pub label: i64,
    pub prediction: i64,
    pub scores: Vec<f32>,
    pub p_values: Vec<f32>,
    pub alarms: Vec<bool>,
    pub fused_p_value: f32,
    /// The fused p-value is at most the false-positive rate, or the input failed validation.
    pub alarm: bool,
    /// Why the input failed validation, if it did.
    pub invalid: Option<Invalid>,
}

impl BatchScores {
    /// The rows of this batch, with the examples' ids and labels.
    pub fn rows(
        &self,
        ids: &[usize],
        labels: &[i64],
        thresholds: &[f32],
        fpr: f64,
    ) -> Vec<ScoreRow> {
        (0..self.fused.len())
            .map(|i| {
                let scores: Vec<f32> = self.scores.iter().map(|s| s[i]).collect();
                ScoreRow {
                    id: ids[i],
                    label: labels[i],
                    prediction: self.decision[i],
                    alarms: scores
                        .iter()
                        .zip(thresholds)
                        .map(|(s, t)| alarm(*s, *t))
                        .collect(),
                    scores,
                    p_values: self.p_values.iter().map(|p| p[i]).collect(),
                    fused_p_value: self.fused[i],
                    alarm: p_alarm(self.fused[i], fpr) || self.invalid[i].is_some(),
                    invalid: self.invalid[i],
                }
            })
            .collect()
    }
}

/// The rows as a TSV: `id label prediction`, then each detector's score, p-value and alarm,
/// then the fused p-value and alarm.
pub fn tsv(rows: &[ScoreRow], names: &[&str]) -> String {
    let mut out = String::from("id\tlabel\tprediction");
    for n in names {
        out.push_str(&format!("\t{n}_score\t{n}_p\t{n}_alarm"));
    }
    out.push_str("\tfused_p\talarm\tinvalid\n");
    for r in rows {
        out.push_str(&format!("{}\t{}\t{}", r.id, r.label, r.prediction));
        for d in 0..names.len() {
            out.push_str(&format!(
                "\t{}\t{}\t{}",
                r.scores[d],
                r.p_values[d],
                u8::from(r.alarms[d])
            ));
        }
        out.push_str(&format!(
            "\t{}\t{}\t{}\n",
            r.fused_p_value,
            u8::from(r.alarm),
            r.invalid.map_or("", Invalid::name)
        ));
    }
    out
}

/// Refuses a detector the model cannot feed: a squeezer for inputs it cannot squeeze, or
/// Mahalanobis statistics whose class count or feature width differ from the model's
/// (checked on the first example, one forward pass).
pub fn check_model<const D: usize, C: Classifier<D>>(
    fitted: &Fitted,
    model: &C,
    x: &C::Input,
) -> Result<(), DetectError> {
    for method in &fitted.methods {
        match method {
            super::adversarial::Method::Squeeze(s) => s.check(&model.domain())?,
            super::adversarial::Method::Mahalanobis(m) => {
                let width = model
                    .features(x.range(0, 1))
                    .map(|f| f.dims()[1])
                    .ok_or_else(|| {
                        DetectError::Invalid(
                            "the detector has a Mahalanobis part, and this model has no penultimate layer".into(),
                        )
                    })?;
                let [k, f] = m.means.dims();
                if k != model.num_classes() || f != width || m.precision.dims() != [f, f] {
                    return Err(DetectError::Invalid(format!(
                        "the Mahalanobis means are {k} classes × {f} features, the model has {} classes × {width} features",
                        model.num_classes()
                    )));
                }
            }
            super::adversarial::Method::Isolation(forest) => {
                let width = model.features(x.range(0, 1)).map(|f| f.dims()[1]);
                if width != Some(forest.width) {
                    return Err(DetectError::Invalid(format!(
                        "the isolation forest splits {} features; the model's penultimate layer has {width:?}",
                        forest.width
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

struct ScoreJob<'a> {
    fitted: &'a Fitted,
    batch: usize,
    seed: u64,
}

impl Job for ScoreJob<'_> {
    type Output = Result<Vec<ScoreRow>, DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        check_model(self.fitted, model, &ex.inputs)?;
        ex.labels.device().seed(self.seed);
        let thresholds = thresholds(self.fitted)?;
        let labels = super::host_ints(ex.labels.clone(), "labels")?;
        let mut rows = Vec::with_capacity(ex.inputs.len());
        for start in (0..ex.inputs.len()).step_by(self.batch) {
            let x = ex.inputs.range(start, start + self.batch);
            let end = start + x.len();
            let b = score_batch(self.fitted, model, &x)?;
            rows.extend(b.rows(
                &ex.ids[start..end],
                &labels[start..end],
                &thresholds,
                self.fitted.header.fpr,
            ));
        }
        Ok(rows)
    }
}

/// Scores every example of the workload with `fitted`, `batch` per pass.
pub fn score_all(
    work: &Workload,
    fitted: &Fitted,
    batch: usize,
    seed: u64,
) -> Result<Vec<ScoreRow>, RunError> {
    Ok(work.run(
        ScoreJob {
            fitted,
            batch,
            seed,
        },
        None,
    )??)
}
