//! LIME (Ribeiro, Singh and Guestrin 2016), as the reference implementation (`lime` 0.2)
//! does it: perturbation samples around one input in an interpretable binary representation
//! z ∈ {0, 1}^d (1: the feature as in the input; row 0 is the input itself), an exponential
//! kernel π(z) = √exp(−D(z)² / width²) on their distance D to the input, and a weighted ridge
//! regression (α = 1, with intercept, in f64) of the explained output on z over the selected
//! features. The surrogate's weighted R² says how well it fits locally.
//!
//! A [`Representation`] is one kind of input (image patches, words, tabular features): it
//! draws the samples and runs the perturbed inputs through the model in batches on the device,
//! one read-back per batch.

pub mod image;
pub mod sequence;
pub mod surrogate;
pub mod tabular;

use burn::tensor::Tensor;
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::ExplainError;

pub use image::Patches;
pub use sequence::Sequence;
pub use tabular::Tabular;

/// What the surrogate regresses: the class probability (the reference's choice) or its logit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    Probability,
    Logit,
}

#[derive(Debug, Clone, Copy)]
pub struct Lime {
    /// Perturbation samples, the input included (reference: 5000 text/tabular, 1000 images).
    pub samples: usize,
    /// Features kept in the surrogate (`None`: all).
    pub top_k: Option<usize>,
    /// Kernel width in the representation's distance units (`None`: its reference width).
    pub kernel_width: Option<f64>,
    /// Ridge penalty of the final surrogate (reference: 1).
    pub alpha: f64,
    pub output: Output,
    pub seed: u64,
    /// Most perturbed inputs per forward pass.
    pub batch: usize,
    pub kernel: Kernel,
}

impl Default for Lime {
    fn default() -> Self {
        Self {
            samples: 1000,
            top_k: None,
            kernel_width: None,
            alpha: 1.0,
            output: Output::Probability,
            seed: 0,
            batch: 256,
            kernel: Kernel::Lime,
        }
    }
}

/// The model's scores for a binary design around one input.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Distance of each design row's input to the explained one, in the representation's
    /// units, `[n]`.
    pub distance: Vec<f64>,
    /// Logits `[n, classes]`, row-major.
    pub logits: Vec<f32>,
    pub classes: usize,
}

/// One kind of interpretable representation of one input.
pub trait Representation {
    /// Interpretable features d.
    fn features(&self) -> usize;
    /// A name per feature (the word, the patch, the network feature).
    fn names(&self) -> Vec<String>;
    /// The reference implementation's kernel width for this kind of input.
    fn kernel_width(&self) -> f64;
    /// Whether a design row always gives the same input (false where removed features are
    /// drawn at random: one draw of the empty coalition is then no constraint).
    fn deterministic(&self) -> bool {
        true
    }
    /// LIME's sampling of `n` design rows for this kind of input (row 0 all ones).
    fn design(&self, n: usize, rng: &mut StdRng) -> DMatrix<f64>;
    /// Runs the inputs of the design's rows through the model (batches of at most `batch`;
    /// `rng` draws what a removed feature becomes, where that is random).
    fn score(
        &self,
        z: &DMatrix<f64>,
        rng: &mut StdRng,
        batch: usize,
    ) -> Result<Scored, ExplainError>;
}

/// How samples are drawn and weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernel {
    /// LIME: the representation's sampling, the exponential kernel on the distance.
    Lime,
    /// KernelSHAP (Lundberg and Lee 2017): coalition sizes drawn in proportion to the
    /// Shapley kernel's mass, the empty and full coalitions weighted to act as constraints;
    /// the weights are Shapley values.
    Shapley,
}

/// A LIME explanation of one class for one input.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub target: usize,
    pub output: Output,
    pub names: Vec<String>,
    /// One weight per feature; zero for features the surrogate does not use.
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// Weighted R² of the surrogate on the samples.
    pub r2: f64,
    /// The surrogate's value at the input, and the model's.
    pub local_prediction: f64,
    pub model_prediction: f64,
    pub samples: usize,
    pub kernel_width: f64,
    pub seed: u64,
}

impl Lime {
    /// LIME's settings for KernelSHAP: Shapley sampling and weights, a vanishing penalty
    /// (it only keeps the solve stable), every feature.
    pub fn kernel_shap(self) -> Self {
        Self {
            kernel: Kernel::Shapley,
            alpha: 1e-6,
            top_k: None,
            ..self
        }
    }

    pub fn name(&self) -> String {
        match self.kernel {
            Kernel::Lime => format!("lime-{}", self.samples),
            Kernel::Shapley => format!("kernel-shap-{}", self.samples),
        }
    }

    /// Explains class `target` of the representation's input.
    pub fn explain<R: Representation>(
        &self,
        rep: &R,
        target: usize,
    ) -> Result<Explanation, ExplainError> {
        let d = rep.features();
        if d == 0 {
            return Err(ExplainError::Invalid(
                "the input has no interpretable features to explain (an empty text?)".into(),
            ));
        }
        if self.samples < 2 {
            return Err(ExplainError::Invalid(format!(
                "--samples {} is too few: LIME needs at least 2 (reference: 1000 to 5000)",
                self.samples
            )));
        }
        if self.kernel == Kernel::Shapley && self.samples < d + 2 {
            return Err(ExplainError::Invalid(format!(
                "--samples {} is too few for KernelSHAP over {d} features: it needs at least {} \
                 (d + 2), and many more for stable values",
                self.samples,
                d + 2
            )));
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        let z = match self.kernel {
            Kernel::Lime => rep.design(self.samples, &mut rng),
            Kernel::Shapley => shapley_design(self.samples, d, &mut rng),
        };
        let s = rep.score(&z, &mut rng, self.batch.max(1))?;
        if target >= s.classes {
            return Err(ExplainError::Invalid(format!(
                "--target {target} is not a class of a {}-class model",
                s.classes
            )));
        }
        let y = self.outputs(&s, target);
        if y.iter().any(|v| !v.is_finite()) {
            return Err(ExplainError::Invalid(
                "the model gave a non-finite output on a perturbed input".into(),
            ));
        }
        let width = self.kernel_width.unwrap_or_else(|| rep.kernel_width());
        if !(width > 0.0 && width.is_finite()) {
            return Err(ExplainError::Invalid(format!(
                "--kernel-width {width} must be a positive number"
            )));
        }
        let w: Vec<f64> = match self.kernel {
            Kernel::Lime => s
                .distance
                .iter()
                .map(|dist| (-(dist * dist) / (width * width)).exp().sqrt())
                .collect(),
            Kernel::Shapley => shapley_weights(&z, rep.deterministic()),
        };
        let k = self.top_k.unwrap_or(d).min(d);
        let columns = surrogate::select(&z, &y, &w, k)?;
        let mut fit = surrogate::ridge(&z, &y, &w, &columns, self.alpha)?;
        if self.kernel == Kernel::Shapley {
            // The constraint rows are fitted by construction: judge the fit on the sampled
            // coalitions only.
            let sampled: Vec<f64> = w
                .iter()
                .map(|&v| f64::from(u8::from(v < CONSTRAINT)))
                .collect();
            fit.r2 = surrogate::r2(&z, &y, &sampled, &fit);
        }
        let mut weights = vec![0.0; d];
        for (&j, &b) in fit.columns.iter().zip(&fit.coef) {
            weights[j] = b;
        }
        Ok(Explanation {
            target,
            output: self.output,
            names: rep.names(),
            weights,
            intercept: fit.intercept,
            r2: fit.r2,
            local_prediction: fit.predict(&vec![1.0; d]),
            model_prediction: y[0],
            samples: self.samples,
            kernel_width: width,
            seed: self.seed,
        })
    }

    /// The explained output of each sample (host f64: the regression's precision).
    fn outputs(&self, s: &Scored, target: usize) -> Vec<f64> {
        s.logits
            .chunks(s.classes)
            .map(|row| match self.output {
                Output::Logit => row[target] as f64,
                Output::Probability => {
                    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                    let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                    (row[target] as f64 - m).exp() / z
                }
            })
            .collect()
    }
}

/// Weight of the empty and full coalitions in KernelSHAP (their kernel weight is infinite:
/// large enough to hold f(∅) and f(x) as constraints).
const CONSTRAINT: f64 = 1e6;

/// KernelSHAP's design: row 0 the full coalition, row 1 the empty one, then coalitions whose
/// size s in 1..d is drawn with probability ∝ (d − 1) / (s (d − s)) (the Shapley kernel's
/// mass at that size), their members at random.
pub fn shapley_design(n: usize, d: usize, rng: &mut StdRng) -> DMatrix<f64> {
    let mut z = DMatrix::zeros(n.max(2), d);
    z.row_mut(0).fill(1.0);
    let mass: Vec<f64> = (1..d)
        .map(|s| (d - 1) as f64 / (s * (d - s)) as f64)
        .collect();
    let total: f64 = mass.iter().sum();
    let mut order: Vec<usize> = (0..d).collect();
    for i in 2..n {
        if mass.is_empty() {
            z.row_mut(i).fill(if i % 2 == 0 { 1.0 } else { 0.0 });
            continue;
        }
        let mut u = rng.random_range(0.0..total);
        let mut size = mass.len();
        for (k, m) in mass.iter().enumerate() {
            if u < *m {
                size = k + 1;
                break;
            }
            u -= m;
        }
        order.shuffle(rng);
        for &j in &order[..size] {
            z[(i, j)] = 1.0;
        }
    }
    z
}

/// KernelSHAP's weights for a [`shapley_design`]: 1 per sampled coalition (the sampling
/// already follows the kernel), [`CONSTRAINT`] for the full one and, when a coalition always
/// gives the same input, the empty one.
fn shapley_weights(z: &DMatrix<f64>, deterministic: bool) -> Vec<f64> {
    let d = z.ncols() as f64;
    z.row_iter()
        .map(|r| {
            let s: f64 = r.iter().sum();
            if s == d || (s == 0.0 && deterministic) {
                CONSTRAINT
            } else {
                1.0
            }
        })
        .collect()
}

/// Binary design rows: row 0 all ones, then `n − 1` rows of independent fair bits (LIME's
/// image sampling).
pub fn fair_bits(n: usize, d: usize, rng: &mut StdRng) -> DMatrix<f64> {
    DMatrix::from_fn(n, d, |i, _| {
        if i == 0 || rng.random_bool(0.5) {
            1.0
        } else {
            0.0
        }
    })
}

/// LIME's text sampling: row 0 all ones; every other row removes a number of features drawn
/// uniformly from 1..=d, at random positions.
pub fn remove_some(n: usize, d: usize, rng: &mut StdRng) -> DMatrix<f64> {
    let mut z = DMatrix::from_element(n, d, 1.0);
    let mut order: Vec<usize> = (0..d).collect();
    for i in 1..n {
        let k = rng.random_range(1..=d);
        order.shuffle(rng);
        for &j in &order[..k] {
            z[(i, j)] = 0.0;
        }
    }
    z
}

/// Cosine distance of each row of `z` to the all-ones row (1 for an all-zero row, as
/// scikit-learn's `cosine_distances`).
pub fn cosine_to_ones(z: &DMatrix<f64>) -> Vec<f64> {
    let d = z.ncols() as f64;
    z.row_iter()
        .map(|r| {
            let dot: f64 = r.iter().sum();
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm == 0.0 {
                1.0
            } else {
                1.0 - dot / (norm * d.sqrt())
            }
        })
        .collect()
}

/// Scores `n` perturbed inputs in batches: `logits(start, end)` builds and runs rows
/// `start..end`; each batch is read back once.
pub fn score_batches(
    n: usize,
    batch: usize,
    mut logits: impl FnMut(usize, usize) -> Tensor<2>,
) -> Result<(Vec<f32>, usize), ExplainError> {
    let mut out = Vec::new();
    let mut classes = 0;
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let l = logits(start, end);
        classes = l.dims()[1];
        out.extend(super::host_floats(l)?);
    }
    Ok((out, classes))
}

/// The rows `start..end` of the design as a device tensor `[end − start, d]`.
pub fn design_rows(
    z: &DMatrix<f64>,
    start: usize,
    end: usize,
    device: &burn::tensor::Device,
) -> Tensor<2> {
    let d = z.ncols();
    let v: Vec<f32> = (start..end)
        .flat_map(|i| (0..d).map(move |j| (i, j)))
        .map(|(i, j)| z[(i, j)] as f32)
        .collect();
    Tensor::from_data(burn::tensor::TensorData::new(v, [end - start, d]), device)
}
