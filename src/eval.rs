//! Clean accuracy, per-class accuracy and the confusion matrix, counted on the device.

use burn::tensor::{Device, Int, Tensor};
use serde::Serialize;

use crate::attack::Logits;
use crate::data::ImageSet;

/// Evaluation of a model on a labelled set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalReport {
    pub examples: usize,
    pub accuracy: f64,
    /// Accuracy per true class (NaN-free: a class with no examples reports 0).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Examples the model refused to decide (a unanimous ensemble whose members disagree);
    /// counted as errors.
    pub no_decision: u64,
}

/// Evaluates `model` (use a `valid()` copy) on `data` by its decision rule
/// ([`Logits::decide`]), in batches of `batch`.
pub fn evaluate<M: Logits<4>>(model: &M, data: &ImageSet, batch: usize) -> EvalReport {
    let mut confusion = Confusion::new(data.num_classes, &data.images.device());
    for s in (0..data.len()).step_by(batch.max(1)) {
        let (x, y) = data.range(s, s + batch);
        confusion.add(y, model.decide(x));
    }
    confusion.report()
}

/// A confusion matrix with an extra "no decision" column, accumulated on the device as
/// `onehot(true)^T · onehot(decision)` and read back once by [`Confusion::report`].
pub struct Confusion {
    counts: Tensor<2>,
    classes: usize,
    examples: usize,
}

impl Confusion {
    pub fn new(classes: usize, device: &Device) -> Self {
        Self {
            counts: Tensor::zeros([classes, classes + 1], device),
            classes,
            examples: 0,
        }
    }

    /// Adds a batch: true classes and decisions `[N]` (a decision of `classes` or more is "no
    /// decision").
    pub fn add(&mut self, truth: Tensor<1, Int>, decision: Tensor<1, Int>) {
        let c = self.classes;
        self.examples += truth.dims()[0];
        let truth = truth.one_hot::<2>(c).float();
        let decision = decision.clamp_max(c as i64).one_hot::<2>(c + 1).float();
        self.counts = self.counts.clone() + truth.transpose().matmul(decision);
    }

    pub fn report(self) -> EvalReport {
        let (c, n) = (self.classes, self.examples);
        let flat = self
            .counts
            .into_data()
            .try_to_vec::<f32>()
            .expect("confusion matrix reads back as f32");
        let mut confusion: Vec<Vec<u64>> = flat
            .chunks(c + 1)
            .map(|row| row.iter().map(|&v| v.round() as u64).collect())
            .collect();
        let totals: Vec<u64> = confusion.iter().map(|row| row.iter().sum()).collect();
        let no_decision = confusion.iter_mut().map(|row| row.pop().unwrap_or(0)).sum();
        let correct: u64 = (0..c).map(|i| confusion[i][i]).sum();
        let per_class_accuracy = confusion
            .iter()
            .zip(&totals)
            .enumerate()
            .map(|(i, (row, &total))| {
                if total == 0 {
                    0.0
                } else {
                    row[i] as f64 / total as f64
                }
            })
            .collect();
        EvalReport {
            examples: n,
            accuracy: if n == 0 {
                0.0
            } else {
                correct as f64 / n as f64
            },
            per_class_accuracy,
            confusion,
            no_decision,
        }
    }
}
