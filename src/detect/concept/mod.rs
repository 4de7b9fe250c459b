//! Concept drift from labelled feedback: the model's errors over the stream of examples whose
//! true labels come back. [`Ddm`] is Gama et al.'s drift detection method (SBIA 2004): with
//! p_i the error rate over the first i examples and s_i = √(p_i(1 − p_i)/i), it keeps the
//! minimum of p_i + s_i (after `min_examples`, and once an error has been seen) and warns
//! when p_i + s_i > p_min + 2·s_min, signals drift above p_min + 3·s_min, and then starts afresh (the new concept is the new
//! normal). A 3-sigma rule checked at every example is not a test at a fixed level: over long
//! steady streams it signals now and then (`tests/detect_concept.rs` measures how often).
//! Windowed accuracy and macro-F1 with Clopper-Pearson intervals summarise the same stream.

use serde::Serialize;

use super::DetectError;
use super::evaluate::Rate;

pub mod run;

/// DDM's state over a stream of outcomes.
#[derive(Debug, Clone, Serialize)]
pub struct Ddm {
    /// Outcomes before the minimum is tracked (Gama et al.: 30).
    pub min_examples: usize,
    seen: usize,
    errors: usize,
    /// The smallest p + s so far, and its p and s.
    best: Option<(f64, f64, f64)>,
    /// Examples seen in all (1-based positions below count from the stream's start).
    total: usize,
    /// The example of the first warning, of the first drift signal, and of every one.
    pub warning_at: Option<usize>,
    pub drift_at: Option<usize>,
    pub drifts: Vec<usize>,
}

/// What one outcome led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Stable,
    Warning,
    Drift,
}

impl Ddm {
    pub fn new(min_examples: usize) -> Result<Self, DetectError> {
        if min_examples < 2 {
            return Err(DetectError::Invalid(format!(
                "DDM needs at least 2 outcomes before tracking its minimum, got {min_examples}"
            )));
        }
        Ok(Self {
            min_examples,
            seen: 0,
            errors: 0,
            best: None,
            total: 0,
            warning_at: None,
            drift_at: None,
            drifts: Vec::new(),
        })
    }

    /// Records whether the model erred on the next example.
    pub fn observe(&mut self, error: bool) -> Level {
        self.total += 1;
        self.seen += 1;
        self.errors += usize::from(error);
        let i = self.seen as f64;
        let p = self.errors as f64 / i;
        let s = (p * (1.0 - p) / i).sqrt();
        // Before `min_examples`, and while no error has been seen (p = s = 0 would make any
        // later error a 3-sigma event), there is no minimum to compare with.
        if self.seen < self.min_examples || self.errors == 0 {
            return Level::Stable;
        }
        if self.best.is_none_or(|(sum, _, _)| p + s < sum) {
            self.best = Some((p + s, p, s));
        }
        let (_, p_min, s_min) = self.best.expect("set above");
        if p + s > p_min + 3.0 * s_min {
            self.drift_at.get_or_insert(self.total);
            self.drifts.push(self.total);
            (self.seen, self.errors, self.best) = (0, 0, None);
            Level::Drift
        } else if p + s > p_min + 2.0 * s_min {
            self.warning_at.get_or_insert(self.total);
            Level::Warning
        } else {
            Level::Stable
        }
    }
}

/// Accuracy and macro-F1 of one window of the stream.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Examples `start..end` (0-based, end exclusive) of the stream.
    pub start: usize,
    pub end: usize,
    pub accuracy: Rate,
    /// Unweighted mean over the classes present (as labels or predictions) of F1.
    pub macro_f1: f64,
}

/// Windows of `size` over labelled predictions (the last one may be shorter).
pub fn windows(labels: &[i64], predictions: &[i64], size: usize) -> Vec<Window> {
    let size = size.max(1);
    (0..labels.len())
        .step_by(size)
        .map(|start| {
            let end = (start + size).min(labels.len());
            let (y, p) = (&labels[start..end], &predictions[start..end]);
            let right = y.iter().zip(p).filter(|(a, b)| a == b).count();
            Window {
                start,
                end,
                accuracy: Rate::new(right, end - start),
                macro_f1: macro_f1(y, p),
            }
        })
        .collect()
}

/// Macro-averaged F1 over the classes that occur as a label or a prediction.
pub fn macro_f1(labels: &[i64], predictions: &[i64]) -> f64 {
    let mut classes: Vec<i64> = labels.iter().chain(predictions).copied().collect();
    classes.sort_unstable();
    classes.dedup();
    if classes.is_empty() {
        return 0.0;
    }
    let f1 = |c: i64| {
        let tp = labels
            .iter()
            .zip(predictions)
            .filter(|(y, p)| **y == c && **p == c)
            .count();
        let fp = predictions.iter().filter(|p| **p == c).count() - tp;
        let fn_ = labels.iter().filter(|y| **y == c).count() - tp;
        if tp == 0 {
            0.0
        } else {
            2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
        }
    };
    classes.iter().map(|c| f1(*c)).sum::<f64>() / classes.len() as f64
}
