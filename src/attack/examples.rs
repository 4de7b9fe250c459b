//! Saving adversarial examples: `examples.safetensors` (clean, adversarial, labels, robust)
//! and, for images, a PNG grid of clean, adversarial and perturbation images.

use burn::tensor::{Bool, DataError, Int, Tensor};

use crate::artifact::files::{self, FileError};

/// The tensors file written into `--save-examples DIR`.
pub const EXAMPLES: &str = "examples.safetensors";
/// The picture written beside it for images.
pub const GRID: &str = "grid.png";

/// Attacked examples read back to the host, batch after batch.
#[derive(Debug, Clone, Default)]
pub struct Saved {
    /// Shape of one example, e.g. `[1, 28, 28]` or `[8]`.
    pub shape: Vec<usize>,
    pub clean: Vec<f32>,
    pub adversarial: Vec<f32>,
    pub labels: Vec<i64>,
    pub robust: Vec<u8>,
}

impl Saved {
    /// Appends a batch (one read-back of each tensor).
    pub fn push<const D: usize>(
        &mut self,
        clean: &Tensor<D>,
        adversarial: Tensor<D>,
        labels: &Tensor<1, Int>,
        robust: &Tensor<1, Bool>,
    ) -> Result<(), DataError> {
        self.shape = clean.dims()[1..].to_vec();
        self.clean
            .extend(clean.clone().into_data().try_to_vec::<f32>()?);
        self.adversarial
            .extend(adversarial.into_data().try_to_vec::<f32>()?);
        self.labels.extend(
            labels
                .clone()
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()?,
        );
        let flags = robust
            .clone()
            .into_data()
            .convert::<bool>()
            .try_to_vec::<bool>()?;
        self.robust.extend(flags.into_iter().map(u8::from));
        Ok(())
    }
}

/// Writes `examples.safetensors` into `dir` (tensors `clean`, `adversarial` `[N, ...]` f32,
/// `labels` i64, `robust` u8) and, when the examples are 28x28 images, `grid.png` (rows: the
/// first 8 images; columns: clean, adversarial, perturbation with grey = 0), each atomically.
pub fn save(dir: &std::path::Path, saved: &Saved) -> Result<(), FileError> {
    let werr = |e: &dyn std::fmt::Display| FileError::Write {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let n = saved.labels.len();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let (cb, ab) = (f32_bytes(&saved.clean), f32_bytes(&saved.adversarial));
    let lb: Vec<u8> = saved.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    use safetensors::{Dtype, tensor::TensorView};
    let mut shape = vec![n];
    shape.extend(&saved.shape);
    let view = |dtype, shape: Vec<usize>, bytes| TensorView::new(dtype, shape, bytes);
    let tensors = vec![
        (
            "clean",
            view(Dtype::F32, shape.clone(), &cb).map_err(|e| werr(&e))?,
        ),
        (
            "adversarial",
            view(Dtype::F32, shape, &ab).map_err(|e| werr(&e))?,
        ),
        (
            "labels",
            view(Dtype::I64, vec![n], &lb).map_err(|e| werr(&e))?,
        ),
        (
            "robust",
            view(Dtype::U8, vec![n], &saved.robust).map_err(|e| werr(&e))?,
        ),
    ];
    let bytes = safetensors::serialize(tensors, None).map_err(|e| werr(&e))?;
    files::write_atomic(&dir.join(EXAMPLES), &bytes)?;
    if saved.shape == [1, 28, 28] {
        let png = grid_png(&saved.clean, &saved.adversarial, n.min(8)).map_err(|e| werr(&e))?;
        files::write_atomic(&dir.join(GRID), &png)?;
    }
    Ok(())
}

/// A PNG of the first `rows` images: clean | adversarial | perturbation (grey = 0, scaled to
/// the largest change), each pixel drawn as a 4x4 block.
fn grid_png(clean: &[f32], adv: &[f32], rows: usize) -> Result<Vec<u8>, image::ImageError> {
    const SCALE: u32 = 4;
    let side = 28 * SCALE;
    let mut grid =
        image::GrayImage::from_pixel(3 * side + 8, rows as u32 * (side + 4), image::Luma([255]));
    for (r, (img, a)) in clean
        .chunks(784)
        .zip(adv.chunks(784))
        .take(rows)
        .enumerate()
    {
        let delta: Vec<f32> = a.iter().zip(img).map(|(p, q)| p - q).collect();
        let scale = delta.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let columns: [Vec<f32>; 3] = [
            img.to_vec(),
            a.to_vec(),
            delta.iter().map(|d| 0.5 + 0.5 * d / scale).collect(),
        ];
        for (c, col) in columns.iter().enumerate() {
            for (i, v) in col.iter().enumerate() {
                let (px, py) = ((i % 28) as u32, (i / 28) as u32);
                let value = image::Luma([(v.clamp(0.0, 1.0) * 255.0) as u8]);
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let gx = c as u32 * (side + 4) + px * SCALE + dx;
                        let gy = r as u32 * (side + 4) + py * SCALE + dy;
                        grid.put_pixel(gx, gy, value);
                    }
                }
            }
        }
    }
    let mut png = std::io::Cursor::new(Vec::new());
    grid.write_to(&mut png, image::ImageFormat::Png)?;
    Ok(png.into_inner())
}
