//! Detectors: drift, adversarial inputs and model extraction (issue 13, in progress).
//!
//! So far: [`univariate`], the per-feature two-sample drift tests and distances, with the
//! corrections across features. Each later detector will be a file behind one `Detector` trait
//! (fit on reference data, score a batch into statistics and p-values, save and load its
//! state), as docs/ARCHITECTURE.md describes.

pub mod univariate;

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
