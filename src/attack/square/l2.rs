//! L2 Square's perturbations (Andriushchenko et al. 2020, as in AutoAttack's `square.py`):
//! centred square patterns whose rings fall off as 1/(ring + 1)², one half of the square
//! positive and the other negative, and the proposal that moves the perturbation's mass from
//! two windows into a fresh pattern in one of them.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::RngExt;
use rand::rngs::StdRng;

use crate::attack::ball::l2_norms;

/// Nested rectangles of `x` rows and `y` columns around the centre, ring k weighing
/// 1/(k + 1)², with unit L2 norm.
fn rectangles(x: usize, y: usize) -> Vec<f32> {
    let mut delta = vec![0f32; x * y];
    let (xc, yc) = (x / 2 + 1, y / 2 + 1);
    let (mut r0, mut c0) = (xc as isize - 1, yc as isize - 1);
    for ring in 0..xc.max(yc) {
        let weight = 1.0 / ((ring + 1) * (ring + 1)) as f32;
        let rows = r0.max(0) as usize..((r0 + 2 * ring as isize + 1).max(0) as usize).min(x);
        for r in rows {
            let cols = c0.max(0) as usize..((c0 + 2 * ring as isize + 1).max(0) as usize).min(y);
            for c in cols {
                delta[r * y + c] += weight;
            }
        }
        r0 -= 1;
        c0 -= 1;
    }
    unit(delta)
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|a| *a /= norm);
    }
    v
}

/// The `s`×`s` pattern: the upper half's rectangles positive, the lower half's negative, unit
/// L2 norm, shaped `[1, 1, s, s]`; transposed (left half positive) with probability ½, as
/// the reference's `eta` is at every call.
fn pattern(s: usize, rng: &mut StdRng, device: &Device) -> Tensor<4> {
    let top = rectangles(s / 2, s);
    let bottom = rectangles(s - s / 2, s);
    let values = unit(
        top.into_iter()
            .chain(bottom.into_iter().map(|v| -v))
            .collect(),
    );
    let tile = Tensor::from_data(TensorData::new(values, [1, 1, s, s]), device);
    if rng.random_bool(0.5) {
        tile.swap_dims(2, 3)
    } else {
        tile
    }
}

/// Random ±1 per example and channel, `[n, c, 1, 1]`.
fn signs(n: usize, c: usize, device: &Device) -> Tensor<4> {
    Tensor::<4>::random([n, c, 1, 1], Distribution::Uniform(-1.0, 1.0), device).sign()
}

/// The starting direction, unit L2 norm per example: a grid of patterns of side h/5, each
/// with a random sign per example and channel and a random orientation, centred in the image.
pub(super) fn start(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    rng: &mut StdRng,
    device: &Device,
) -> Tensor<4> {
    let s = (h / 5).max(1);
    let offset = h.saturating_sub(s * 5) / 2;
    let mut delta = Tensor::<4>::zeros([n, c, h, w], device);
    for i in 0..h / s {
        for j in 0..w / s {
            let (r, q) = (offset + i * s, offset + j * s);
            if r + s > h || q + s > w {
                continue;
            }
            let block = pattern(s, rng, device) * signs(n, c, device);
            let ranges = [0..n, 0..c, r..r + s, q..q + s];
            let current = delta.clone().slice(ranges.clone());
            delta = delta.slice_assign(ranges, current + block);
        }
    }
    delta.clone() / (l2_norms(&delta) + 1e-12)
}

/// A proposal from the current best points: the perturbation in a random `s`×`s` window is
/// replaced by a fresh pattern plus its old direction, rescaled to carry the mass of that
/// window and of a second random window (which is emptied) plus what the sphere has left;
/// the result is put back on the epsilon sphere.
pub(super) fn propose(
    clean: &Tensor<4>,
    best: &Tensor<4>,
    s: usize,
    eps: f64,
    rng: &mut StdRng,
) -> Tensor<4> {
    let [m, c, h, w] = clean.dims();
    let device = clean.device();
    let delta = best.clone() - clean.clone();
    let mut corner = || (rng.random_range(0..=h - s), rng.random_range(0..=w - s));
    let ((r1, c1), (r2, c2)) = (corner(), corner());
    let first = [0..m, 0..c, r1..r1 + s, c1..c1 + s];
    let second = [0..m, 0..c, r2..r2 + s, c2..c2 + s];
    let window_norm = |t: Tensor<4>| t.powf_scalar(2.0).sum_dim(2).sum_dim(3).sqrt();

    let old = delta.clone().slice(first.clone());
    let old_norm = window_norm(old.clone());
    let image_norm = l2_norms(&delta);
    let both = {
        let mask = Tensor::<4>::zeros([1, 1, h, w], &device).slice_assign(
            [0..1, 0..1, r1..r1 + s, c1..c1 + s],
            Tensor::ones([1, 1, s, s], &device),
        );
        mask.clone().slice_assign(
            [0..1, 0..1, r2..r2 + s, c2..c2 + s],
            Tensor::ones([1, 1, s, s], &device),
        )
    };
    let windows_norm = window_norm(delta.clone() * both);
    let fresh = pattern(s, rng, &device) * signs(m, c, &device) + old / (old_norm + 1e-12);
    let room = ((image_norm.powf_scalar(2.0).neg() + eps * eps).clamp_min(0.0) / c as f64
        + windows_norm.powf_scalar(2.0))
    .sqrt();
    let fresh = fresh.clone() / (window_norm(fresh) + 1e-12) * room;
    let delta = delta
        .slice_assign(second, Tensor::zeros([m, c, s, s], &device))
        .slice_assign(first, fresh);
    clean.clone() + delta.clone() / (l2_norms(&delta) + 1e-12) * eps
}
