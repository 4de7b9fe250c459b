//! Detectors: of adversarial inputs, of drift, of model extraction.
//!
//! - [`univariate`]: per-feature two-sample drift tests and distances (KS, chi-square, PSI,
//!   Jensen-Shannon) with the corrections across features.
//! - [`shapiro`]: the Shapiro-Wilk test of normality (Royston's AS R94, as scipy's `shapiro`).
//! - [`cvm`]: the two-sample Cramér-von Mises test, exact or asymptotic (as scipy's).
//! - [`validate`]: the first check on every input (shape, finite, inside the box).
//! - [`adversarial`]: per-example scores of suspicious inputs, one file per method.
//! - [`calibrate`]: conformal p-values and alarms at a chosen false-positive rate; fusion.
//! - [`fit`], [`score`], [`evaluate`]: the jobs behind `rampart detect fit|score|evaluate`;
//!   [`store`] the fitted detector file; [`adaptive`] the attack that tries to slip past a
//!   detector; [`roc`] ROC areas and curves.
//! - [`drift`]: two-sample drift (MMD, per-feature KS, prediction drift); [`concept`]: DDM and
//!   windowed accuracy over labelled feedback; [`extraction`]: PRADA per client.

pub mod adaptive;
pub mod adversarial;
pub mod calibrate;
pub mod concept;
pub mod cvm;
pub mod drift;
pub mod evaluate;
pub mod extraction;
pub mod fit;
pub mod roc;
pub mod score;
pub mod shapiro;
pub mod store;
pub mod univariate;
pub mod validate;

use burn::tensor::{Int, Tensor};

use crate::workload::WorkloadError;

/// Float values read back from the device, `what` naming them in the error.
pub fn host_floats<const K: usize>(t: Tensor<K>, what: &str) -> Result<Vec<f32>, DetectError> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| DetectError::Invalid(format!("reading {what} back from the device: {e:?}")))
}

/// Integer values (labels, decisions) read back from the device, `what` naming them in the
/// error.
pub fn host_ints(t: Tensor<1, Int>, what: &str) -> Result<Vec<i64>, DetectError> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| DetectError::Invalid(format!("reading {what} back from the device: {e:?}")))
}

/// A detector's input it cannot use, named.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectError {
    #[error("{what}: needs at least {need} values, got {got}")]
    TooFew {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{what}: contains NaN or an infinite value; clean or drop those values first")]
    NotFinite { what: &'static str },
    #[error("{0}")]
    Invalid(String),
}

/// What a detector job can fail on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}
