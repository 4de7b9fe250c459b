//! Clean accuracy, per-class accuracy and the confusion matrix, counted on the device, and the
//! `rampart eval` report (one schema for every model kind).

use std::collections::BTreeMap;
use std::fmt;

use burn::tensor::{Device, Int, Tensor};
use serde::Serialize;

use crate::artifact::ModelInfo;
use crate::classifier::{Classifier, Input};
use crate::model::Modality;
use crate::workload::{DataInfo, Examples, Job, Workload, WorkloadError, modality_name};

/// Counts of a model's decisions on labelled examples.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evaluation {
    pub examples: usize,
    pub accuracy: f64,
    /// Accuracy per true class (a class with no examples reports 0).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Examples the model refused to decide (a unanimous ensemble whose members disagree);
    /// counted as errors.
    pub no_decision: u64,
}

/// Evaluates `model` by its decision rule ([`Classifier::decide`]) on `examples`, in batches
/// of `batch`, with one read-back at the end.
pub fn evaluate<const D: usize, C: Classifier<D>>(
    model: &C,
    examples: &Examples<C::Input>,
    batch: usize,
) -> Evaluation {
    let n = examples.inputs.len();
    let batch = batch.max(1);
    let mut confusion = Confusion::new(model.num_classes(), &examples.labels.device());
    for s in (0..n).step_by(batch) {
        let x = examples.inputs.range(s, s + batch);
        let y = examples.labels.clone().narrow(0, s, batch.min(n - s));
        confusion.add(y, model.decide(x));
    }
    confusion.report()
}

/// [`evaluate`] as a [`Job`].
pub struct Evaluate {
    pub batch: usize,
}

impl Job for Evaluate {
    type Output = Evaluation;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        examples: Examples<C::Input>,
    ) -> Evaluation {
        evaluate(model, &examples, self.batch)
    }
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

    pub fn report(self) -> Evaluation {
        let (c, n) = (self.classes, self.examples);
        let flat = self
            .counts
            .into_data()
            .try_to_vec::<f32>()
            .expect("the confusion matrix reads back from the device as f32");
        let mut confusion: Vec<Vec<u64>> = flat
            .chunks(c + 1)
            .map(|row| row.iter().map(|&v| v.round() as u64).collect())
            .collect();
        let totals: Vec<u64> = confusion.iter().map(|row| row.iter().sum()).collect();
        let no_decision = confusion.iter_mut().map(|row| row.pop().unwrap_or(0)).sum();
        let correct: u64 = confusion.iter().enumerate().map(|(i, row)| row[i]).sum();
        let per_class_accuracy = confusion
            .iter()
            .zip(&totals)
            .enumerate()
            .map(|(i, (row, &total))| ratio(row[i], total as usize))
            .collect();
        Evaluation {
            examples: n,
            accuracy: ratio(correct, n),
            per_class_accuracy,
            confusion,
            no_decision,
        }
    }
}

fn ratio(k: u64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { k as f64 / n as f64 }
}

/// A fusion model's accuracy with one modality alone and with it withheld.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModalityAccuracy {
    pub alone: f64,
    pub withheld: f64,
}

/// `rampart eval`: every key is present for every model kind.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    #[serde(flatten)]
    pub evaluation: Evaluation,
    pub class_names: Vec<String>,
    /// Fusion models: accuracy with each modality alone and withheld (null otherwise).
    pub modalities: Option<BTreeMap<String, ModalityAccuracy>>,
}

/// Evaluates a workload in batches of `batch`; for a fusion model also with each modality
/// alone and withheld.
pub fn run(work: &Workload, batch: usize) -> Result<EvalReport, WorkloadError> {
    let evaluation = work.run(Evaluate { batch }, None)?;
    let mut modalities = None;
    if let crate::artifact::AnyModel::Fusion { spec, .. } = &work.opened.model {
        let mut table = BTreeMap::new();
        for m in &spec.modalities {
            let accuracy = |keep: [bool; 3]| -> Result<f64, WorkloadError> {
                let variant = work.only(keep).ok_or_else(|| {
                    WorkloadError::Mismatch("modality ablation needs records".into())
                })?;
                Ok(variant.run(Evaluate { batch }, None)?.accuracy)
            };
            let column = Modality::column(*m);
            let alone = accuracy(std::array::from_fn(|i| i == column))?;
            let withheld = accuracy(std::array::from_fn(|i| i != column))?;
            table.insert(
                modality_name(*m).to_string(),
                ModalityAccuracy { alone, withheld },
            );
        }
        modalities = Some(table);
    }
    Ok(EvalReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        evaluation,
        class_names: work.class_names(),
        modalities,
    })
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.evaluation;
        writeln!(
            f,
            "{}: {} on {}",
            self.model.path.display(),
            self.model.description,
            self.data.name
        )?;
        writeln!(
            f,
            "clean accuracy: {:.2}% ({} examples)",
            100.0 * e.accuracy,
            e.examples
        )?;
        if e.no_decision > 0 {
            writeln!(
                f,
                "no decision (members disagree): {} examples, counted as errors",
                e.no_decision
            )?;
        }
        if let Some(table) = &self.modalities {
            writeln!(
                f,
                "\nmodalities (the fused model with one alone / one withheld):"
            )?;
            for (name, m) in table {
                writeln!(
                    f,
                    "  {name:<8} alone {:6.2}%   withheld {:6.2}%",
                    100.0 * m.alone,
                    100.0 * m.withheld
                )?;
            }
        }
        writeln!(f, "\nper-class accuracy:")?;
        for (i, acc) in e.per_class_accuracy.iter().enumerate() {
            let name = self.class_names.get(i).map(String::as_str).unwrap_or("");
            writeln!(f, "  {i:>2} {name:<14} {:6.2}%", 100.0 * acc)?;
        }
        writeln!(
            f,
            "\nconfusion matrix (rows: true class, columns: predicted):"
        )?;
        write!(f, "     ")?;
        for j in 0..e.confusion.len() {
            write!(f, "{j:>6}")?;
        }
        writeln!(f)?;
        for (i, row) in e.confusion.iter().enumerate() {
            write!(f, "  {i:>2} ")?;
            for v in row {
                write!(f, "{v:>6}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
