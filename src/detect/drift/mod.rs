//! Drift between a reference sample and a new one, as a model sees them: the kernel
//! two-sample test ([`mmd`]) on the penultimate features (on the inputs for models without
//! them), Kolmogorov-Smirnov or Cramér-von Mises on each feature with Bonferroni across them,
//! and prediction drift: KS on the softmax entropy and chi-square on the predicted-class
//! counts. The report
//! fuses the four families by Bonferroni into one decision at `alpha`.
//!
//! For measuring the detectors, [`Shift`] corrupts the new sample on purpose (brighter
//! images, Gaussian noise, one class removed); reports say which.

pub mod mmd;
pub mod online;
pub mod online_run;
pub mod reference;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::univariate::{self, TestResult};
use super::{DetectError, RunError};
use crate::artifact::ModelInfo;
use crate::classifier::{Classifier, Input};
use crate::workload::{DataInfo, Examples, Job, Workload};
use mmd::MmdTest;

/// A deliberate corruption of the new sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Shift {
    /// The new sample as it is.
    None,
    /// Every input coordinate raised by `strength` (clipped to the box).
    Brightness,
    /// Gaussian noise of standard deviation `strength` (clipped to the box).
    Noise,
    /// The examples of class `strength` (rounded) removed.
    RemoveClass,
}

/// The two-sample test run on each feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FeatureTest {
    /// Kolmogorov-Smirnov: the largest gap between the two empirical distributions.
    Ks,
    /// Cramér-von Mises: the summed squared gap, more sensitive to shifts spread over the
    /// whole distribution.
    Cvm,
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct DriftPlan {
    pub tests: Tests,
    /// The first `reference` examples are the reference; the rest the new sample.
    pub reference: usize,
    pub shift: Shift,
    pub strength: f64,
    pub batch: usize,
}

/// Per-feature tests.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureTests {
    pub test: FeatureTest,
    pub features: usize,
    /// Features whose test Benjamini-Hochberg declares drifted at false-discovery rate
    /// alpha.
    pub drifted: usize,
    /// Bonferroni's p-value for "some feature drifted".
    pub p_value: f64,
}

/// `rampart detect drift`'s report.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    pub reference_examples: usize,
    pub sample_examples: usize,
    pub shift: Shift,
    pub strength: f64,
    /// "penultimate features" or "inputs".
    pub space: &'static str,
    pub mmd: MmdTest,
    pub features: FeatureTests,
    pub entropy_ks: TestResult,
    pub predicted_classes_chi_square: TestResult,
    pub alpha: f64,
    /// Bonferroni over the four families.
    pub p_value: f64,
    pub drift: bool,
}

/// What the tests need from one sample: its features (penultimate, or the inputs), softmax
/// entropies and predicted-class counts, on the device.
#[derive(Debug, Clone)]
pub struct Summary {
    pub features: Tensor<2>,
    pub entropy: Tensor<1>,
    pub counts: Vec<u64>,
    /// Whether `features` are the penultimate layer's (else the flattened inputs).
    pub penultimate: bool,
}

/// The tests and their settings.
#[derive(Debug, Clone, Copy)]
pub struct Tests {
    pub feature_test: FeatureTest,
    pub permutations: usize,
    /// Significance level, in (0, 1).
    pub alpha: f64,
    pub seed: u64,
}

/// The four families' outcomes on one pair of samples.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub mmd: MmdTest,
    pub features: FeatureTests,
    pub entropy_ks: TestResult,
    pub chi: TestResult,
    pub sample_examples: usize,
    pub space: &'static str,
}

/// Summarises `x` through `model`, batch by batch; one read of the class counts at the end.
pub fn summarise<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    batch: usize,
) -> Result<Summary, DetectError> {
    let (mut f, mut h, mut d) = (Vec::new(), Vec::new(), Vec::new());
    let mut penultimate = true;
    for start in (0..x.len()).step_by(batch) {
        let xs = x.range(start, start + batch);
        let logits = model.logits(xs.clone());
        let log_p = log_softmax(logits.clone(), 1);
        h.push(
            (log_p.clone().exp() * log_p)
                .sum_dim(1)
                .squeeze_dim::<1>(1)
                .neg(),
        );
        d.push(model.decide(xs.clone()));
        f.push(match model.features(xs.clone()) {
            Some(feat) => feat,
            None => {
                penultimate = false;
                xs.x().clone().flatten::<2>(1, D - 1)
            }
        });
    }
    Ok(Summary {
        features: Tensor::cat(f, 0),
        entropy: Tensor::cat(h, 0),
        counts: counts(Tensor::cat(d, 0), model.decisions())?,
        penultimate,
    })
}

fn host_f64<const K: usize>(t: Tensor<K>) -> Result<Vec<f64>, DetectError> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .map_err(|e| DetectError::Invalid(format!("reading back from the device: {e:?}")))
}

fn counts(decisions: Tensor<1, Int>, classes: usize) -> Result<Vec<u64>, DetectError> {
    let c = decisions.one_hot::<2>(classes.max(2)).float().sum_dim(0);
    Ok(host_f64(c)?
        .into_iter()
        .take(classes)
        .map(|v| v as u64)
        .collect())
}

/// Runs the four tests of reference `r` against sample `s`.
pub fn compare(r: &Summary, s: &Summary, tests: &Tests) -> Result<Comparison, DetectError> {
    let width = r.features.dims()[1];
    if s.features.dims()[1] != width || r.counts.len() != s.counts.len() {
        return Err(DetectError::Invalid(format!(
            "the reference has {width} features and {} classes, the sample {} and {}: they come from different models",
            r.counts.len(),
            s.features.dims()[1],
            s.counts.len()
        )));
    }
    let mmd = mmd::mmd_test(
        r.features.clone(),
        s.features.clone(),
        tests.permutations,
        tests.seed,
    )?;
    let (fr, fs) = (host_f64(r.features.clone())?, host_f64(s.features.clone())?);
    let column = |v: &[f64], j: usize| v.iter().skip(j).step_by(width).copied().collect::<Vec<_>>();
    let mut p = Vec::with_capacity(width);
    for j in 0..width {
        let (a, b) = (column(&fr, j), column(&fs, j));
        // A feature that is constant in both samples (a dead unit) cannot drift.
        p.push(match tests.feature_test {
            FeatureTest::Ks => univariate::ks(&a, &b).map_or(1.0, |t| t.p_value),
            FeatureTest::Cvm => super::cvm::cramer_von_mises(&a, &b).map_or(1.0, |t| t.p_value),
        });
    }
    let features = FeatureTests {
        test: tests.feature_test,
        features: width,
        drifted: univariate::benjamini_hochberg(&p, tests.alpha)
            .iter()
            .filter(|d| **d)
            .count(),
        p_value: univariate::bonferroni(&p),
    };
    let entropy_ks = univariate::ks(&host_f64(r.entropy.clone())?, &host_f64(s.entropy.clone())?)?;
    let chi = univariate::chi_square(&r.counts, &s.counts).unwrap_or(TestResult {
        statistic: 0.0,
        p_value: 1.0,
    });
    Ok(Comparison {
        mmd,
        features,
        entropy_ks,
        chi,
        sample_examples: s.entropy.dims()[0],
        space: if r.penultimate && s.penultimate {
            "penultimate features"
        } else {
            "inputs"
        },
    })
}

struct DriftJob<'a> {
    plan: &'a DriftPlan,
}

impl Job for DriftJob<'_> {
    type Output = Result<Comparison, DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let plan = self.plan;
        let n = ex.inputs.len();
        if plan.reference < 2 || plan.reference > n.saturating_sub(2) {
            return Err(DetectError::Invalid(format!(
                "--reference {}: needs at least 2 reference examples and 2 left for the new sample, of the {n} selected; raise --limit or lower --reference",
                plan.reference
            )));
        }
        let device = ex.labels.device();
        device.seed(plan.tests.seed);
        let reference = ex.inputs.range(0, plan.reference);
        let labels = ex
            .labels
            .clone()
            .narrow(0, plan.reference, n - plan.reference);
        let sample = shifted(model, ex.inputs.range(plan.reference, n), labels, plan)?;
        let r = summarise(model, &reference, plan.batch)?;
        let s = summarise(model, &sample, plan.batch)?;
        compare(&r, &s, &plan.tests)
    }
}

/// `sample` (with its `labels`) corrupted as `plan` asks.
fn shifted<const D: usize, C: Classifier<D>>(
    model: &C,
    sample: C::Input,
    labels: Tensor<1, Int>,
    plan: &DriftPlan,
) -> Result<C::Input, DetectError> {
    let bounds = model.domain().bounds;
    let clip = |t: Tensor<D>| match bounds {
        Some((lo, hi)) => t.clamp(lo, hi),
        None => t,
    };
    Ok(match plan.shift {
        Shift::None => sample,
        Shift::Brightness => sample.with_x(clip(sample.x().clone() + plan.strength)),
        Shift::Noise => {
            let noise = sample
                .x()
                .random_like(Distribution::Normal(0.0, plan.strength));
            sample.with_x(clip(sample.x().clone() + noise))
        }
        Shift::RemoveClass => {
            let classes = model.num_classes();
            if plan.strength.fract() != 0.0 || !(0.0..classes as f64).contains(&plan.strength) {
                return Err(DetectError::Invalid(format!(
                    "--shift remove-class takes the class to remove as --strength, a whole number from 0 to {}; got {}",
                    classes - 1,
                    plan.strength
                )));
            }
            let keep = labels
                .not_equal_elem(plan.strength.round() as i64)
                .nonzero();
            match keep.into_iter().next() {
                Some(rows) if rows.dims()[0] >= 2 => sample.select(rows),
                _ => {
                    return Err(DetectError::Invalid(
                        "--shift remove-class leaves fewer than 2 examples in the new sample"
                            .into(),
                    ));
                }
            }
        }
    })
}

/// Checks a significance level.
pub fn check_alpha(alpha: f64) -> Result<(), DetectError> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(DetectError::Invalid(format!(
            "--alpha must be in (0, 1), got {alpha}"
        )))
    }
}

/// The report of a comparison: the four families fused by Bonferroni at `alpha`.
pub fn report(
    work: &Workload,
    reference_examples: usize,
    shift: (Shift, f64),
    alpha: f64,
    c: Comparison,
) -> DriftReport {
    let p_value = univariate::bonferroni(&[
        c.mmd.p_value,
        c.features.p_value,
        c.entropy_ks.p_value,
        c.chi.p_value,
    ]);
    DriftReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        reference_examples,
        sample_examples: c.sample_examples,
        shift: shift.0,
        strength: shift.1,
        space: c.space,
        mmd: c.mmd,
        features: c.features,
        entropy_ks: c.entropy_ks,
        predicted_classes_chi_square: c.chi,
        alpha,
        p_value,
        drift: p_value <= alpha,
    }
}

/// Compares the workload's first `plan.reference` examples with the rest (shifted as asked).
pub fn drift(work: &Workload, plan: &DriftPlan) -> Result<DriftReport, RunError> {
    check_alpha(plan.tests.alpha)?;
    let c = work.run(DriftJob { plan }, None)??;
    Ok(report(
        work,
        plan.reference,
        (plan.shift, plan.strength),
        plan.tests.alpha,
        c,
    ))
}

impl std::fmt::Display for DriftReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "reference {} examples, new sample {} (shift {:?} {}) of {}; model {}",
            self.reference_examples,
            self.sample_examples,
            self.shift,
            self.strength,
            self.data.name,
            self.model.path.display()
        )?;
        writeln!(
            f,
            "  MMD² on {} {:.3e} (σ {:.3}), p {:.4} over {} permutations",
            self.space, self.mmd.statistic, self.mmd.sigma, self.mmd.p_value, self.mmd.permutations
        )?;
        writeln!(
            f,
            "  per-feature {:?}: {} of {} drifted (Benjamini-Hochberg), Bonferroni p {:.4}",
            self.features.test,
            self.features.drifted,
            self.features.features,
            self.features.p_value
        )?;
        writeln!(f, "  entropy KS p {:.4}", self.entropy_ks.p_value)?;
        writeln!(
            f,
            "  predicted classes chi-square p {:.4}",
            self.predicted_classes_chi_square.p_value
        )?;
        writeln!(
            f,
            "drift: {} (Bonferroni p {:.4} at alpha {})",
            if self.drift { "yes" } else { "no" },
            self.p_value,
            self.alpha
        )
    }
}
