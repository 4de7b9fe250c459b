//! LIME for images: superpixels as a grid of square patches (every channel of a patch is one
//! feature); a hidden patch is filled with its own mean (the reference's `hide_color=None`).
//! Distance: cosine to the all-ones row; reference width 0.25.

use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;

use nalgebra::DMatrix;

use super::{Representation, Scored, cosine_to_ones, design_rows, fair_bits, score_batches};
use crate::classifier::Classifier;
use crate::explain::ExplainError;

/// One image `[1, C, H, W]` cut into `patch`×`patch` squares (the last row and column of
/// patches may be smaller).
pub struct Patches<'a, C> {
    model: &'a C,
    x: Tensor<2>,
    shape: [usize; 3],
    patch: usize,
    /// Patch membership `[d, C·H·W]`, 1 where a pixel belongs to the patch.
    assign: Tensor<2>,
    /// The image with every patch at its mean `[1, C·H·W]`.
    fill: Tensor<2>,
}

impl<'a, C: Classifier<4, Input = Tensor<4>>> Patches<'a, C> {
    /// `x` is one image `[1, C, H, W]`; `patch` (pixels, ≥ 1) is the side of a superpixel.
    pub fn new(model: &'a C, x: Tensor<4>, patch: usize) -> Result<Self, ExplainError> {
        let [n, c, h, w] = x.dims();
        if n != 1 || patch == 0 || patch > h.max(w) {
            return Err(ExplainError::Invalid(format!(
                "--patch {patch} must be between 1 and {} pixels (one image at a time)",
                h.max(w)
            )));
        }
        let (rows, cols) = (h.div_ceil(patch), w.div_ceil(patch));
        let d = rows * cols;
        let mut assign = vec![0f32; d * c * h * w];
        let mut counts = vec![0f32; d];
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    let f = (i / patch) * cols + j / patch;
                    assign[f * c * h * w + (ch * h + i) * w + j] = 1.0;
                    counts[f] += 1.0;
                }
            }
        }
        let device = x.device();
        let assign = Tensor::<2>::from_data(TensorData::new(assign, [d, c * h * w]), &device);
        let counts = Tensor::<2>::from_data(TensorData::new(counts, [1, d]), &device);
        let flat = x.reshape([1, c * h * w]);
        let means = flat.clone().matmul(assign.clone().transpose()) / counts;
        let fill = means.matmul(assign.clone());
        Ok(Self {
            model,
            x: flat,
            shape: [c, h, w],
            patch,
            assign,
            fill,
        })
    }

    /// Patch `f`'s pixel rows and columns (half-open).
    pub fn bounds(&self, f: usize) -> ([usize; 2], [usize; 2]) {
        let [_, h, w] = self.shape;
        let cols = w.div_ceil(self.patch);
        let (r, c) = (f / cols, f % cols);
        let p = self.patch;
        ([r * p, ((r + 1) * p).min(h)], [c * p, ((c + 1) * p).min(w)])
    }

    /// Per-pixel values `[H, W]` of per-patch weights (each pixel carries its patch's weight).
    pub fn paint(&self, weights: &[f64]) -> Vec<f64> {
        let [_, h, w] = self.shape;
        let mut out = vec![0.0; h * w];
        for (f, wt) in weights.iter().enumerate() {
            let ([r0, r1], [c0, c1]) = self.bounds(f);
            for i in r0..r1 {
                for j in c0..c1 {
                    out[i * w + j] = *wt;
                }
            }
        }
        out
    }
}

impl<C: Classifier<4, Input = Tensor<4>>> Representation for Patches<'_, C> {
    fn features(&self) -> usize {
        self.assign.dims()[0]
    }

    fn names(&self) -> Vec<String> {
        (0..self.features())
            .map(|f| {
                let ([r0, r1], [c0, c1]) = self.bounds(f);
                format!("rows {r0}-{} cols {c0}-{}", r1 - 1, c1 - 1)
            })
            .collect()
    }

    fn kernel_width(&self) -> f64 {
        0.25
    }

    fn design(&self, n: usize, rng: &mut StdRng) -> DMatrix<f64> {
        fair_bits(n, self.features(), rng)
    }

    fn score(
        &self,
        z: &DMatrix<f64>,
        _rng: &mut StdRng,
        batch: usize,
    ) -> Result<Scored, ExplainError> {
        let [c, h, w] = self.shape;
        let device = self.x.device();
        let (logits, classes) = score_batches(z.nrows(), batch, |start, end| {
            let m = design_rows(z, start, end, &device).matmul(self.assign.clone());
            let kept = self.x.clone() * m.clone() + self.fill.clone() * (m.ones_like() - m);
            self.model.logits(kept.reshape([end - start, c, h, w]))
        })?;
        Ok(Scored {
            distance: cosine_to_ones(z),
            logits,
            classes,
        })
    }
}
