//! The first check on every input, before the model or any detector sees it: the shape the
//! model reads (one error for the batch), and per example finite values inside the model's
//! box. It runs on the device and is read back with the batch's scores. An invalid example
//! is replaced by the box's lower corner (zeros for unbounded inputs) for the detectors, so
//! that a NaN cannot spread through a batch's statistics, and raises the alarm whatever they
//! say. The element type is
//! the readers' concern: files and requests are decoded to f32 before they get here.

use burn::tensor::{Bool, Tensor};
use serde::Serialize;

use super::DetectError;
use crate::classifier::Domain;

/// How far outside the box a coordinate may be before it counts as out of range (f32
/// rounding of a clamped value).
pub const BOX_TOLERANCE: f64 = 1e-6;

/// Why an input failed the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invalid {
    /// A NaN or infinite coordinate.
    NotFinite,
    /// A coordinate outside the model's input box.
    OutOfRange,
}

impl Invalid {
    /// The code [`check`] gives: 0 valid, 1 not finite, 2 out of range.
    pub fn from_code(code: f32) -> Option<Self> {
        match code as i32 {
            1 => Some(Invalid::NotFinite),
            2 => Some(Invalid::OutOfRange),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Invalid::NotFinite => "not-finite",
            Invalid::OutOfRange => "out-of-range",
        }
    }
}

/// A batch `[N, ...]` checked: per-example codes `[N]` (see [`Invalid::from_code`]), the
/// invalid rows, and the batch with those rows replaced.
pub struct Checked<const D: usize> {
    pub codes: Tensor<1>,
    pub invalid: Tensor<1, Bool>,
    pub x: Tensor<D>,
}

/// Checks `x` against `domain`.
pub fn check<const D: usize>(domain: &Domain, x: Tensor<D>) -> Result<Checked<D>, DetectError> {
    let dims = x.dims();
    if dims[1..] != domain.shape[..] {
        return Err(DetectError::Invalid(format!(
            "inputs of shape {:?} where the model reads {:?} per example",
            &dims[1..],
            domain.shape
        )));
    }
    let n = dims[0];
    let device = x.device();
    if n == 0 {
        return Ok(Checked {
            codes: Tensor::zeros([0], &device),
            invalid: Tensor::<1>::zeros([0], &device).greater_elem(0.0),
            x,
        });
    }
    let per_example = |t: Tensor<D, Bool>| -> Tensor<1> {
        t.float().reshape([n as i32, -1]).max_dim(1).reshape([n])
    };
    let not_finite = per_example(x.clone().is_finite().bool_not());
    let (codes, fill) = match domain.bounds {
        Some((lo, hi)) => {
            let outside = x
                .clone()
                .lower_elem(lo - BOX_TOLERANCE)
                .bool_or(x.clone().greater_elem(hi + BOX_TOLERANCE));
            let out = per_example(outside);
            // Not finite wins: a NaN compares false, an infinity also lies outside.
            (
                not_finite.clone() + (out * (not_finite.clone().neg() + 1.0)) * 2.0,
                lo,
            )
        }
        None => (not_finite, 0.0),
    };
    let invalid = codes.clone().greater_elem(0.0);
    let mut shape = [1usize; D];
    shape[0] = n;
    let rows = invalid.clone().reshape(shape).expand(dims);
    let x = x.mask_fill(rows, fill);
    Ok(Checked { codes, invalid, x })
}
