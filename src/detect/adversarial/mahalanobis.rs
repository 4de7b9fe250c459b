//! The Mahalanobis detector (Lee, Lee, Lee & Shin, NeurIPS 2018), on the penultimate layer
//! without their input preprocessing: class means μ_c and one shared covariance Σ of clean
//! training features; an input's score is min_c (f − μ_c)ᵀ Σ⁺ (f − μ_c), feature units
//! squared. Σ⁺ is the pseudo-inverse as sklearn's `EmpiricalCovariance` takes it (`pinvh`),
//! except that the covariance is summed in f32 on the device, so eigenvalues below
//! max |λ| · F · ε_f32 (not ε_f64) count as zero: f32 rounding noise in directions without
//! variance is dropped, not inverted. Differentiable in the input.

use burn::tensor::{Int, Tensor, TensorData};
use nalgebra::{DMatrix, SymmetricEigen};

use super::{Detector, Kind};
use crate::classifier::{Classifier, Input};
use crate::detect::DetectError;

/// Fewest clean examples of each class the means and covariance are fitted on.
pub const MIN_PER_CLASS: usize = 2;

/// Class means `[K, F]` and the covariance's pseudo-inverse `[F, F]`, on the device.
#[derive(Debug, Clone)]
pub struct Mahalanobis {
    pub means: Tensor<2>,
    pub precision: Tensor<2>,
}

impl Mahalanobis {
    /// Fits on clean `x` with labels `y`, `batch` rows per forward pass: one pass for the
    /// means, one for the covariance of the features around their class means, each summed
    /// on the device and read back once.
    pub fn fit<const D: usize, C: Classifier<D>>(
        model: &C,
        x: &C::Input,
        y: &Tensor<1, Int>,
        batch: usize,
    ) -> Result<Self, DetectError> {
        let k = model.num_classes();
        let n = x.len();
        let features = |start: usize| {
            let xs = x.range(start, start + batch);
            let ys = y.clone().narrow(0, start, xs.len());
            let f = model.features(xs).ok_or_else(|| {
                DetectError::Invalid("the Mahalanobis detector reads the penultimate layer, and this model has none (an ensemble or a fusion adapter): leave mahalanobis out".into())
            })?;
            Ok::<_, DetectError>((f, ys.one_hot::<2>(k).float()))
        };
        let (mut sums, mut counts) = (None::<Tensor<2>>, None::<Tensor<2>>);
        for start in (0..n).step_by(batch) {
            let (f, onehot) = features(start)?;
            let s = onehot.clone().transpose().matmul(f);
            let c = onehot.sum_dim(0);
            sums = Some(sums.map_or(s.clone(), |t| t + s));
            counts = Some(counts.map_or(c.clone(), |t| t + c));
        }
        let (Some(sums), Some(counts)) = (sums, counts) else {
            return Err(DetectError::TooFew {
                what: "Mahalanobis fit examples",
                need: MIN_PER_CLASS * k,
                got: 0,
            });
        };
        let per_class = host(counts.clone())?;
        if let Some((c, got)) = per_class
            .iter()
            .enumerate()
            .find(|(_, v)| (**v as usize) < MIN_PER_CLASS)
        {
            return Err(DetectError::Invalid(format!(
                "the Mahalanobis detector needs at least {MIN_PER_CLASS} clean examples of every class to fit on; class {c} has {got}: fit on more examples"
            )));
        }
        let means = sums / counts.transpose();
        let mut gram = None::<Tensor<2>>;
        for start in (0..n).step_by(batch) {
            let (f, onehot) = features(start)?;
            let centred = f - onehot.matmul(means.clone());
            let g = centred.clone().transpose().matmul(centred);
            gram = Some(gram.map_or(g.clone(), |t| t + g));
        }
        let gram = gram.expect("at least one batch");
        let dim = gram.dims()[0];
        let covariance = host(gram.clone())?
            .into_iter()
            .map(|v| f64::from(v) / n as f64)
            .collect::<Vec<_>>();
        if covariance.iter().any(|v| !v.is_finite()) {
            return Err(DetectError::NotFinite {
                what: "penultimate features of the fit examples",
            });
        }
        let precision = pinvh(
            DMatrix::from_row_slice(dim, dim, &covariance),
            f64::from(f32::EPSILON),
        );
        let values: Vec<f32> = precision.transpose().iter().map(|v| *v as f32).collect();
        let device = gram.device();
        Ok(Self {
            means,
            precision: Tensor::from_data(TensorData::new(values, [dim, dim]), &device),
        })
    }

    /// Squared distances of features `[N, F]` to every class mean, `[N, K]`.
    pub fn distances(&self, f: Tensor<2>) -> Tensor<2> {
        let fp = f.clone().matmul(self.precision.clone());
        let own = (fp.clone() * f).sum_dim(1);
        let cross = fp.matmul(self.means.clone().transpose());
        let mp = self.means.clone().matmul(self.precision.clone());
        let means = (mp * self.means.clone()).sum_dim(1).transpose();
        // The expansion cancels in f32; a distance is never negative.
        (own - cross * 2.0 + means).clamp_min(0.0)
    }
}

impl Detector for Mahalanobis {
    fn kind(&self) -> Kind {
        Kind::Mahalanobis
    }

    /// Scores `[N]`: the squared Mahalanobis distance to the nearest class mean, from one
    /// forward pass as fᵀPf − 2fᵀPμ_c + μ_cᵀPμ_c. (A model without penultimate features
    /// is refused when the detector is fitted or loaded for it.)
    fn score<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        let f = model
            .features(x.clone())
            .expect("checked when the detector was fitted or loaded for this model");
        self.distances(f).min_dim(1).squeeze_dim::<1>(1)
    }

    fn differentiable(&self) -> bool {
        true
    }
}

/// The pseudo-inverse of a symmetric positive semi-definite matrix, as `scipy.linalg.pinvh`
/// (eigenvalues with |λ| ≤ max |λ| · n · `epsilon` count as zero; scipy's `epsilon` is the
/// machine epsilon of the matrix's precision).
pub fn pinvh(m: DMatrix<f64>, epsilon: f64) -> DMatrix<f64> {
    let n = m.nrows();
    let eig = SymmetricEigen::new(m);
    let largest = eig.eigenvalues.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let cutoff = largest * n as f64 * epsilon;
    let inverted = eig
        .eigenvalues
        .map(|v| if v.abs() > cutoff { 1.0 / v } else { 0.0 });
    &eig.eigenvectors * DMatrix::from_diagonal(&inverted) * eig.eigenvectors.transpose()
}

fn host(t: Tensor<2>) -> Result<Vec<f32>, DetectError> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| DetectError::Invalid(format!("reading back from the device: {e:?}")))
}
