//! A saved drift reference (`rampart detect fit --kind drift`): the reference sample's
//! features, softmax entropies and predicted-class counts as the model saw them, with the
//! tests' settings, in a detector file of family "drift". `rampart detect score` (and a
//! service) compares new inputs with it without the reference data at hand.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::mmd::MAX_POOLED;
use super::{Comparison, DriftReport, FeatureTest, Shift, Summary, Tests, compare, summarise};
use crate::classifier::Classifier;
use crate::detect::store::{self, FORMAT, KEY, StoreError, read_f32};
use crate::detect::{DetectError, RunError, host_floats};
use crate::workload::{Examples, Job, Workload};

/// Most reference examples: half of what the MMD test can pool, so that a new sample as
/// large fits beside it.
pub const MAX_REFERENCE: usize = MAX_POOLED / 2;

/// What a drift reference file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceHeader {
    pub format: u32,
    /// "drift".
    pub family: String,
    pub model_sha256: String,
    /// The data the reference was taken from, and how many examples.
    pub data: String,
    pub examples: usize,
    /// Whether the features are the penultimate layer's (else the inputs).
    pub penultimate: bool,
    pub feature_test: FeatureTest,
    pub permutations: usize,
    pub alpha: f64,
}

/// A drift reference, ready to compare with.
#[derive(Debug, Clone)]
pub struct Reference {
    pub header: ReferenceHeader,
    pub summary: Summary,
}

struct SummaryJob {
    batch: usize,
}

impl Job for SummaryJob {
    type Output = Result<Summary, DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        summarise(model, &ex.inputs, self.batch)
    }
}

impl Reference {
    /// The workload's selected examples as a reference for `tests`.
    pub fn fit(work: &Workload, tests: &Tests, batch: usize) -> Result<Self, RunError> {
        super::check_alpha(tests.alpha)?;
        if !(1..=super::mmd::MAX_PERMUTATIONS).contains(&tests.permutations) {
            return Err(DetectError::Invalid(format!(
                "--permutations must be between 1 and {}, got {}",
                super::mmd::MAX_PERMUTATIONS,
                tests.permutations
            ))
            .into());
        }
        let n = work.ids.len();
        if !(2..=MAX_REFERENCE).contains(&n) {
            return Err(DetectError::Invalid(format!(
                "a drift reference holds 2 to {MAX_REFERENCE} examples; {n} are selected (set --limit)"
            ))
            .into());
        }
        let summary = work.run(SummaryJob { batch }, None)??;
        Ok(Self {
            header: ReferenceHeader {
                format: FORMAT,
                family: "drift".into(),
                model_sha256: work.opened.sha256.clone(),
                data: work.data_info().name,
                examples: n,
                penultimate: summary.penultimate,
                feature_test: tests.feature_test,
                permutations: tests.permutations,
                alpha: tests.alpha,
            },
            summary,
        })
    }

    /// Writes the reference atomically.
    pub fn save(&self, path: &Path) -> Result<(), RunError> {
        let bytes = |v: Vec<f32>| store::f32_bytes(&v);
        let s = &self.summary;
        let counts: Vec<f32> = s.counts.iter().map(|c| *c as f32).collect();
        let tensors = vec![
            (
                "drift.features".to_string(),
                s.features.dims().to_vec(),
                bytes(host_floats(s.features.clone(), "reference features")?),
            ),
            (
                "drift.entropy".to_string(),
                s.entropy.dims().to_vec(),
                bytes(host_floats(s.entropy.clone(), "reference entropies")?),
            ),
            (
                "drift.counts".to_string(),
                vec![counts.len()],
                bytes(counts),
            ),
        ];
        let header = serde_json::to_string(&self.header).expect("reference header serialises");
        Ok(store::write_file(path, &tensors, header)?)
    }

    /// Reads a reference, checking settings, shapes and values before building tensors.
    pub fn load(path: &Path, device: &Device) -> Result<Self, StoreError> {
        let (bytes, text) = store::read_file(path)?;
        let bad = |reason: String| StoreError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let header: ReferenceHeader =
            serde_json::from_str(&text).map_err(|e| bad(format!("{KEY} metadata: {e}")))?;
        if header.format != FORMAT || header.family != "drift" {
            return Err(bad(format!(
                "format {} of family {:?}, where this rampart reads drift references of format {FORMAT}; fit it again",
                header.format, header.family
            )));
        }
        store::check_sha256(&header.model_sha256).map_err(bad)?;
        super::check_alpha(header.alpha).map_err(|e| bad(e.to_string()))?;
        if !(1..=super::mmd::MAX_PERMUTATIONS).contains(&header.permutations) {
            return Err(bad(format!(
                "permutations {} is out of range",
                header.permutations
            )));
        }
        let tensors =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let (fs, features) = read_f32(&tensors, "drift.features", 2).map_err(bad)?;
        let (es, entropy) = read_f32(&tensors, "drift.entropy", 1).map_err(bad)?;
        let (_, counts) = read_f32(&tensors, "drift.counts", 1).map_err(bad)?;
        let n = header.examples;
        if !(2..=MAX_REFERENCE).contains(&n) || fs[0] != n || es[0] != n || fs[1] == 0 {
            return Err(bad(format!(
                "{n} examples with features {fs:?} and entropies {es:?} do not fit together"
            )));
        }
        if counts.len() < 2
            || counts.iter().any(|c| *c < 0.0 || c.fract() != 0.0)
            || counts.iter().map(|c| *c as f64).sum::<f64>() != n as f64
        {
            return Err(bad(format!(
                "drift.counts must be whole class counts summing to the {n} examples"
            )));
        }
        Ok(Self {
            summary: Summary {
                features: Tensor::from_data(TensorData::new(features, [fs[0], fs[1]]), device),
                entropy: Tensor::from_data(TensorData::new(entropy, [n]), device),
                counts: counts.iter().map(|c| *c as u64).collect(),
                penultimate: header.penultimate,
            },
            header,
        })
    }

    /// [`Reference::load`] for the workload's model.
    pub fn load_for(path: &Path, work: &Workload) -> Result<Self, RunError> {
        let reference = Self::load(path, &work.device.device)?;
        store::check_model(path, &reference.header.model_sha256, work)?;
        Ok(reference)
    }

    /// The workload's selected examples against the reference, with the saved tests.
    pub fn score(&self, work: &Workload, batch: usize, seed: u64) -> Result<DriftReport, RunError> {
        let h = &self.header;
        let tests = Tests {
            feature_test: h.feature_test,
            permutations: h.permutations,
            alpha: h.alpha,
            seed,
        };
        if work.ids.len() + h.examples > MAX_POOLED {
            return Err(DetectError::Invalid(format!(
                "the reference holds {} examples; score at most {} at once (set --limit)",
                h.examples,
                MAX_POOLED - h.examples
            ))
            .into());
        }
        let sample = work.run(SummaryJob { batch }, None)??;
        let c: Comparison = compare(&self.summary, &sample, &tests)?;
        Ok(super::report(
            work,
            h.examples,
            (Shift::None, 0.0),
            h.alpha,
            c,
        ))
    }
}
