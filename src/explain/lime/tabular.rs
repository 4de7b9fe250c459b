//! LIME for tabular features (the fusion model's network flow features, any `[N, F]`
//! classifier): a removed feature takes a value drawn from the reference set's distribution of
//! that feature (its marginal; the reference samples from training statistics per feature).
//! Distance: Euclidean in units of each feature's reference standard deviation; reference
//! width 0.75·√d.

use burn::tensor::{Tensor, TensorData};
use rand::RngExt;
use rand::rngs::StdRng;

use nalgebra::DMatrix;

use super::{Representation, Scored, fair_bits, score_batches};
use crate::classifier::{Classifier, Input};
use crate::explain::ExplainError;

pub struct Tabular<'a, C: Classifier<2>> {
    model: &'a C,
    /// The explained input (one row).
    x: C::Input,
    values: Vec<f32>,
    /// Reference rows `[R, F]`, row-major.
    reference: Vec<f32>,
    /// Each feature's reference standard deviation (features that do not vary: 1).
    scale: Vec<f64>,
    names: Vec<String>,
}

impl<'a, C: Classifier<2>> Tabular<'a, C> {
    /// `x`: one input row; `reference`: rows `[R, F]` from the training distribution (values
    /// as the model reads them); `names`: one per feature.
    pub fn new(
        model: &'a C,
        x: C::Input,
        reference: Vec<f32>,
        names: Vec<String>,
    ) -> Result<Self, ExplainError> {
        let f = names.len();
        let values = super::super::host_floats(x.x().clone())?;
        if x.len() != 1 || values.len() != f || f == 0 {
            return Err(ExplainError::Invalid(format!(
                "LIME explains one row of {f} features; got {} values",
                values.len()
            )));
        }
        if reference.is_empty() || !reference.len().is_multiple_of(f) {
            return Err(ExplainError::Invalid(format!(
                "the reference set must hold whole rows of {f} features (got {} values)",
                reference.len()
            )));
        }
        let r = (reference.len() / f) as f64;
        let scale = (0..f)
            .map(|j| {
                let col = reference.iter().skip(j).step_by(f).map(|&v| v as f64);
                let mean = col.clone().sum::<f64>() / r;
                let var = col.map(|v| (v - mean).powi(2)).sum::<f64>() / r;
                if var > 0.0 { var.sqrt() } else { 1.0 }
            })
            .collect();
        Ok(Self {
            model,
            x,
            values,
            reference,
            scale,
            names,
        })
    }
}

impl<C: Classifier<2>> Representation for Tabular<'_, C> {
    fn features(&self) -> usize {
        self.names.len()
    }

    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn kernel_width(&self) -> f64 {
        0.75 * (self.features() as f64).sqrt()
    }

    fn deterministic(&self) -> bool {
        false
    }

    fn design(&self, n: usize, rng: &mut StdRng) -> DMatrix<f64> {
        fair_bits(n, self.features(), rng)
    }

    fn score(
        &self,
        z: &DMatrix<f64>,
        rng: &mut StdRng,
        batch: usize,
    ) -> Result<Scored, ExplainError> {
        let (n, f) = (z.nrows(), self.features());
        let rows = self.reference.len() / f;
        let mut perturbed = vec![0f32; n * f];
        let mut distance = vec![0.0; n];
        for i in 0..n {
            let mut sq = 0.0;
            for j in 0..f {
                let v = if z[(i, j)] == 1.0 {
                    self.values[j]
                } else {
                    self.reference[rng.random_range(0..rows) * f + j]
                };
                perturbed[i * f + j] = v;
                sq += ((v - self.values[j]) as f64 / self.scale[j]).powi(2);
            }
            distance[i] = sq.sqrt();
        }
        let device = self.x.x().device();
        let (logits, classes) = score_batches(n, batch, |start, end| {
            let b = end - start;
            let x = Tensor::<2>::from_data(
                TensorData::new(perturbed[start * f..end * f].to_vec(), [b, f]),
                &device,
            );
            let copies = self.x.select(super::super::repeated_rows(1, b, &device));
            self.model.logits(copies.with_x(x))
        })?;
        Ok(Scored {
            distance,
            logits,
            classes,
        })
    }
}
