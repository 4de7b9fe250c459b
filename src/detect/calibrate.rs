//! Calibration to a false-positive rate the user chooses, by conformal p-values (Vovk et al.
//! 2005; Bates et al., Annals of Statistics 2023, for outlier detection): with the scores
//! s_1..s_n of held-out clean examples, a new score s gets p = (1 + #{i : s_i ≥ s}) / (n + 1).
//! If the new input is exchangeable with the clean ones, P(p ≤ α) ≤ α, so raising an alarm
//! at p ≤ α holds the false-positive rate at α without any assumption on the scores'
//! distribution. Several detectors' p-values are fused by Bonferroni (valid at α for any
//! dependence) or by the Cauchy combination test (Liu & Xie, JASA 2020: exact for
//! independent p-values, and close to α in the tail under arbitrary dependence, which the
//! measured false-positive rates check).

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::DetectError;

/// The clean calibration scores of one detector (sorted ascending on the host, and on the
/// device).
#[derive(Debug, Clone)]
pub struct Calibration {
    pub scores: Vec<f32>,
    device_scores: Tensor<2>,
}

impl Calibration {
    /// From clean scores; at least one, all finite.
    pub fn new(mut scores: Vec<f32>, device: &Device) -> Result<Self, DetectError> {
        if scores.is_empty() {
            return Err(DetectError::TooFew {
                what: "calibration scores",
                need: 1,
                got: 0,
            });
        }
        if scores.len() > MAX_CALIBRATION {
            return Err(DetectError::Invalid(format!(
                "{} calibration scores, more than the {MAX_CALIBRATION} a detector keeps; calibrate on fewer examples",
                scores.len()
            )));
        }
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(DetectError::NotFinite {
                what: "calibration scores (the detector gave NaN on a clean example)",
            });
        }
        scores.sort_by(f32::total_cmp);
        let n = scores.len();
        let device_scores = Tensor::from_data(TensorData::new(scores.clone(), [1, n]), device);
        Ok(Self {
            scores,
            device_scores,
        })
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Conformal p-values `[N]` of scores `[N]`, on the device. A NaN score gets p = 1/(n+1)
    /// (no clean score is ≥ NaN): an input that breaks the detector is suspicious.
    pub fn p_values(&self, scores: Tensor<1>) -> Tensor<1> {
        let n = self.len() as f64;
        let at_least = self
            .device_scores
            .clone()
            .greater_equal(scores.unsqueeze_dim::<2>(1))
            .float()
            .sum_dim(1)
            .squeeze_dim::<1>(1);
        (at_least + 1.0) / (n + 1.0)
    }

    /// The most clean scores at least as large as an alarming score may have, plus one:
    /// m = ⌊fpr · (n + 1)⌋, so that p ≤ fpr exactly when #{s_i ≥ s} + 1 ≤ m. An error when n
    /// is too small for any alarm at that rate.
    pub fn alarm_rank(&self, fpr: f64) -> Result<usize, DetectError> {
        let n = self.len();
        let m = (fpr * (n as f64 + 1.0)).floor() as usize;
        if m == 0 {
            return Err(DetectError::Invalid(format!(
                "--fpr {fpr} needs at least {} clean calibration examples, there are {n}: calibrate on more or raise --fpr",
                (1.0 / fpr).ceil() as usize - 1
            )));
        }
        Ok(m.min(n))
    }

    /// The score above which an alarm is raised at `fpr`: the m-th largest clean score.
    pub fn threshold(&self, fpr: f64) -> Result<f32, DetectError> {
        let m = self.alarm_rank(fpr)?;
        Ok(self.scores[self.len() - m])
    }
}

/// The largest p-value the Cauchy combination takes as it is.
const CAUCHY_P_MAX: f64 = 1.0 - 1e-6;
/// Most clean calibration scores per detector (each scored batch compares with all).
pub const MAX_CALIBRATION: usize = 1_000_000;

/// How several detectors' p-values become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// min(1, k · min_i p_i).
    Bonferroni,
    /// 1/2 − arctan(Σ_i tan((1/2 − p_i)π) / k)/π, equal weights.
    Cauchy,
}

/// The fused p-value `[N]` of the detectors' p-values, each `[N]`.
pub fn fuse(fusion: Fusion, p: &[Tensor<1>]) -> Tensor<1> {
    let k = p.len() as f64;
    let stacked = Tensor::stack::<2>(p.to_vec(), 0);
    match fusion {
        Fusion::Bonferroni => (stacked.min_dim(0).squeeze_dim::<1>(0) * k).clamp_max(1.0),
        Fusion::Cauchy => {
            // p = 1 puts tan at −π/2, where f32 rounding can give +2·10⁷; 1 − 1e-6 cannot.
            let t = ((stacked.clamp(0.0, CAUCHY_P_MAX).neg() + 0.5) * std::f64::consts::PI)
                .tan()
                .mean_dim(0)
                .squeeze_dim::<1>(0);
            (t.atan() / std::f64::consts::PI).neg() + 0.5
        }
    }
}
