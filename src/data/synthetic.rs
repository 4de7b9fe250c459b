//! A seeded SYNTHETIC 10-class image set for fast tests and demos, labelled SYNTHETIC
//! wherever it shows.

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{ImageSet, from_bytes};

/// A seeded SYNTHETIC 10-class set of 28x28 images for fast tests: each class is a bright bar
/// at its own position and angle, drawn with random shift, contrast and pixel noise. Learnable
/// in an epoch or two by both architectures, but not linearly trivial.
pub fn synthetic(n: usize, seed: u64, device: &Device) -> ImageSet {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * 784];
    let mut labels = vec![0u8; n];
    for (i, img) in pixels.chunks_mut(784).enumerate() {
        let class = rng.random_range(0..10u8);
        labels[i] = class;
        let angle = class as f32 * std::f32::consts::PI / 10.0;
        let (s, c) = angle.sin_cos();
        let dx = rng.random_range(-3.0..3.0f32);
        let dy = rng.random_range(-3.0..3.0f32);
        let contrast = rng.random_range(0.5..1.0f32);
        for y in 0..28 {
            for x in 0..28 {
                let (u, v) = (x as f32 - 13.5 - dx, y as f32 - 13.5 - dy);
                // Distance from the class's line through the (shifted) centre.
                let d = (u * s - v * c).abs();
                let along = (u * c + v * s).abs();
                let bar = if d < 2.0 && along < 10.0 {
                    contrast
                } else {
                    0.0
                };
                let noise = rng.random_range(0.0..0.35f32);
                img[y * 28 + x] = ((bar + noise).min(1.0) * 255.0) as u8;
            }
        }
    }
    from_bytes(
        &pixels,
        &labels,
        n,
        10,
        format!("SYNTHETIC bars (seed {seed})"),
        device,
    )
}
