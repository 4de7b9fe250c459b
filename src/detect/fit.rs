//! Fitting and calibrating adversarial-input detectors on clean examples: one set fits what
//! needs fitting (the Mahalanobis class means and covariance, on training data), and a
//! second, held out from training, gives each detector its clean calibration scores.

use burn::tensor::Tensor;

use super::adversarial::{Detector, Kind, Method, Settings};
use super::calibrate::{Calibration, Fusion};
use super::store::{FORMAT, Fitted, Header};
use super::{DetectError, RunError};
use crate::classifier::{Classifier, Input};
use crate::workload::{Examples, Job, Workload};

/// What to fit.
#[derive(Debug, Clone)]
pub struct FitPlan {
    /// The detectors, in the order their p-values are fused (no repeats).
    pub detectors: Vec<Kind>,
    pub settings: Settings,
    /// False-positive rate of the alarms, in (0, 1).
    pub fpr: f64,
    pub fusion: Fusion,
    /// Examples per forward pass.
    pub batch: usize,
    pub seed: u64,
}

struct FitJob<'a> {
    plan: &'a FitPlan,
}

impl Job for FitJob<'_> {
    type Output = Result<(Vec<Method>, usize), DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let plan = self.plan;
        ex.labels.device().seed(plan.seed);
        let methods = plan
            .detectors
            .iter()
            .map(|k| {
                Method::fit(
                    *k,
                    &plan.settings,
                    model,
                    &ex.inputs,
                    &ex.labels,
                    plan.batch,
                    plan.seed,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((methods, ex.inputs.len()))
    }
}

struct CalibrateJob<'a> {
    plan: &'a FitPlan,
    methods: &'a [Method],
}

impl Job for CalibrateJob<'_> {
    type Output = Result<Vec<Calibration>, DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let plan = self.plan;
        let device = ex.labels.device();
        device.seed(plan.seed.wrapping_add(1));
        let n = ex.inputs.len();
        let mut clean: Vec<Vec<f32>> = vec![Vec::with_capacity(n); self.methods.len()];
        for start in (0..n).step_by(plan.batch) {
            let x = ex.inputs.range(start, start + plan.batch);
            let scores: Vec<Tensor<1>> = self.methods.iter().map(|m| m.score(model, &x)).collect();
            let values = crate::detect::host_floats(Tensor::stack::<2>(scores, 0), "scores")?;
            for (d, row) in values.chunks_exact(x.len()).enumerate() {
                clean[d].extend_from_slice(row);
            }
        }
        let calibrations = clean
            .into_iter()
            .map(|s| Calibration::new(s, &device))
            .collect::<Result<Vec<_>, _>>()?;
        calibrations[0].alarm_rank(plan.fpr)?;
        Ok(calibrations)
    }
}

/// Fits `plan.detectors` for the model on `fit_on`'s examples and calibrates them on
/// `calibrate_on`'s (clean examples the model was not trained on).
pub fn fit(fit_on: &Workload, calibrate_on: &Workload, plan: &FitPlan) -> Result<Fitted, RunError> {
    if !(plan.fpr > 0.0 && plan.fpr < 1.0) {
        return Err(
            DetectError::Invalid(format!("--fpr must be in (0, 1), got {}", plan.fpr)).into(),
        );
    }
    if plan.detectors.is_empty() {
        return Err(DetectError::Invalid(
            "--detectors names no detector; name at least one".into(),
        )
        .into());
    }
    if fit_on.data_info().name == calibrate_on.data_info().name {
        let fitted: std::collections::HashSet<usize> = fit_on.ids.iter().copied().collect();
        if let Some(id) = calibrate_on.ids.iter().find(|i| fitted.contains(i)) {
            return Err(DetectError::Invalid(format!(
                "example {id} would be both fitted and calibrated on, and calibration must see examples the fit did not (or the false-positive rate is not held): calibrate past the fit examples with --offset {}",
                fit_on.ids.iter().max().map_or(0, |m| m.saturating_add(1))
            ))
            .into());
        }
    }
    let (methods, fit_examples) = fit_on.run(FitJob { plan }, None)??;
    let calibrations = calibrate_on.run(
        CalibrateJob {
            plan,
            methods: &methods,
        },
        None,
    )??;
    let data = calibrate_on.data_info();
    Ok(Fitted {
        header: Header {
            format: FORMAT,
            family: "adversarial".into(),
            model_sha256: calibrate_on.opened.sha256.clone(),
            detectors: plan.detectors.clone(),
            settings: plan.settings,
            fpr: plan.fpr,
            fusion: plan.fusion,
            fit_data: fit_on.data_info().name,
            fit_examples,
            calibration_data: data.name,
            calibration_ids: calibrate_on.ids.clone(),
        },
        methods,
        calibrations,
    })
}
