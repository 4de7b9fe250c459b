//! Counter-based Gaussian noise for smoothing: the noise of coordinate e of Monte Carlo sample
//! j of example i in a stage is a fixed function of (seed, stage, i, j, e), so counts do not
//! depend on how samples are grouped into forward passes, and the noise of a whole forward
//! batch is drawn in one pass (no generator state, no re-seeding): element-wise tensor
//! operations on a GPU, with no host work but one 64-bit key per row, and one vectorised
//! kernel over the rows on the CPU, where those operations would each make a pass and an
//! allocation (`cargo bench --bench layers`: `noise_batch` against `noise_batch_tensor`).
//!
//! The construction, in the manner of counter-based generators (Salmon et al., "Parallel
//! random numbers: as easy as 1, 2, 3", SC 2011):
//! - Each row (example i, sample j) has a 64-bit key: SplitMix64's j-th output from a base
//!   drawn by ChaCha12 from (seed, stage, i). Distinct samples of one example have distinct
//!   keys (SplitMix64 is a bijection of its counter).
//! - Coordinates come in pairs m = e / 2. Lane c ∈ {2m, 2m + 1} of a row with key (k0, k1) is
//!   h(h(c ⊕ k0) ⊕ k1), where h is Wellons' `triple32` integer hash (three multiply-xorshift
//!   rounds, a bijection of u32 with near-ideal avalanche). Wrapping u32 arithmetic gives the
//!   same bits on every backend.
//! - Box-Muller turns lane 2m into a radius and lane 2m + 1 into an angle: coordinates 2m and
//!   2m + 1 are r·cos θ and r·sin θ, times σ. The radius's uniform keeps all 32 bits (its
//!   smallest value is 2^-33), so the noise is N(0, σ²) truncated at 6.76σ (mass 1.4e-11 per
//!   coordinate); the angle has 24 bits.
//!
//! The same keys give the same integers on flex and wgpu; the floats then agree to the
//! rounding of each backend's `ln`, `sqrt`, `cos` and `sin`.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// The golden-ratio increment of SplitMix64.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The base of an example's keys in a stream: ChaCha12 keyed by (seed, stream, example).
pub fn base(seed: u64, stream: u64, example: u64) -> u64 {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&stream.to_le_bytes());
    key[16..24].copy_from_slice(&example.to_le_bytes());
    key[24..].copy_from_slice(b"rs-noise");
    StdRng::from_seed(key).next_u64()
}

/// The key of sample `j` from `base`: SplitMix64's j-th output.
pub fn key(base: u64, j: u64) -> u64 {
    let mut z = base.wrapping_add(j.wrapping_add(1).wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Wellons' `triple32` on every element of a u32 tensor.
fn triple32<const D: usize>(x: Tensor<D, Int>) -> Tensor<D, Int> {
    let x = x.clone().bitwise_xor(x.bitwise_right_shift_scalar(17u32));
    let x = x.mul_scalar(0xed5a_d4bbu32);
    let x = x.clone().bitwise_xor(x.bitwise_right_shift_scalar(11u32));
    let x = x.mul_scalar(0xac4c_1b51u32);
    let x = x.clone().bitwise_xor(x.bitwise_right_shift_scalar(15u32));
    let x = x.mul_scalar(0x3184_8babu32);
    x.clone().bitwise_xor(x.bitwise_right_shift_scalar(14u32))
}

/// The same hash on one value (the reference for tests and host-side checks).
pub fn triple32_scalar(mut x: u32) -> u32 {
    x ^= x >> 17;
    x = x.wrapping_mul(0xed5a_d4bb);
    x ^= x >> 11;
    x = x.wrapping_mul(0xac4c_1b51);
    x ^= x >> 15;
    x = x.wrapping_mul(0x3184_8bab);
    x ^ (x >> 14)
}

/// Lanes `[rows, 2 · pairs]` of u32: lane c of row r is h(h(c ⊕ k0_r) ⊕ k1_r).
fn lanes(keys: &[u64], pairs: usize, device: &Device) -> Tensor<2, Int> {
    let rows = keys.len();
    let words: Vec<u32> = keys
        .iter()
        .flat_map(|&k| [k as u32, (k >> 32) as u32])
        .collect();
    let keys = Tensor::<2, Int>::from_data(TensorData::new(words, [rows, 2]), (device, DType::U32));
    let k0 = keys.clone().narrow(1, 0, 1);
    let k1 = keys.narrow(1, 1, 1);
    let counter = Tensor::<1, Int>::arange(0..(2 * pairs) as i64, device)
        .cast(burn::tensor::IntDType::U32)
        .reshape([1, 2 * pairs]);
    triple32(triple32(counter.bitwise_xor(k0)).bitwise_xor(k1))
}

/// Gaussian noise N(0, σ²) of `shape` (`shape[0]` = `keys.len()` rows): row r is the noise of
/// the sample with key `keys[r]`, its coordinates in row-major order. On the CPU one pass of
/// [`gaussian_cpu`] writes it; elsewhere [`gaussian_tensor`]'s element-wise operations run on
/// the device (fused by Burn's fusion on a GPU).
pub fn gaussian<const D: usize>(
    keys: &[u64],
    shape: [usize; D],
    sigma: f64,
    device: &Device,
) -> Tensor<D> {
    assert_eq!(shape[0], keys.len(), "one key per row");
    let dims: usize = shape[1..].iter().product();
    if dims == 0 {
        return Tensor::zeros(shape, device);
    }
    if !crate::device::is_cpu(device) {
        return gaussian_tensor(keys, shape, sigma, device);
    }
    let z = gaussian_cpu(keys, dims, sigma as f32);
    Tensor::from_data(TensorData::new(z, shape), (device, DType::F32))
}

/// [`gaussian`] as element-wise tensor operations on `device` (about 30 of them: integer
/// hashing, Box-Muller), for devices other than the CPU. Rows must have at least one
/// coordinate.
pub fn gaussian_tensor<const D: usize>(
    keys: &[u64],
    shape: [usize; D],
    sigma: f64,
    device: &Device,
) -> Tensor<D> {
    let rows = shape[0];
    assert_eq!(rows, keys.len(), "one key per row");
    let dims: usize = shape[1..].iter().product();
    let pairs = dims.div_ceil(2).max(1);
    let lanes = lanes(keys, pairs, device).reshape([rows, pairs, 2]);
    let radial = lanes.clone().narrow(2, 0, 1).reshape([rows, pairs]);
    let angular = lanes.narrow(2, 1, 1).reshape([rows, pairs]);
    // u1 = (hi + (lo + 1/2) / 2^9) / 2^23 in (0, 1]: all 32 bits, exact near 0.
    let hi = radial.clone().bitwise_right_shift_scalar(9u32).float();
    let lo = radial.bitwise_and_scalar(511u32).float();
    let u1 = (hi + (lo + 0.5) / 512.0) / 8_388_608.0;
    // u2 = (top 24 bits + 1/2) / 2^24 in (0, 1).
    let u2 = (angular.bitwise_right_shift_scalar(8u32).float() + 0.5) / 16_777_216.0;
    let r = u1.log().mul_scalar(-2.0).sqrt().mul_scalar(sigma);
    let theta = u2.mul_scalar(std::f64::consts::TAU);
    let z = Tensor::stack::<3>(vec![r.clone() * theta.clone().cos(), r * theta.sin()], 2)
        .reshape([rows, 2 * pairs]);
    let z = if 2 * pairs == dims {
        z
    } else {
        z.narrow(1, 0, dims)
    };
    z.reshape(shape)
}

/// [`gaussian_tensor`]'s noise, `[keys.len(), dims]` row-major, in one pass on the CPU: rows
/// in parallel, the hash per lane, then Box-Muller eight pairs at a time with `wide`'s vector
/// `ln`, `sqrt` and `sin_cos` (Agner Fog's VCL polynomials), in the tensor path's order of f32
/// operations. The values agree with the tensor path to the rounding of those functions.
pub fn gaussian_cpu(keys: &[u64], dims: usize, sigma: f32) -> Vec<f32> {
    let mut z = vec![0f32; keys.len() * dims];
    if dims == 0 {
        return z;
    }
    let pairs = dims.div_ceil(2);
    z.par_chunks_mut(dims).zip(keys).for_each_init(
        || vec![[0f32; 2]; pairs.next_multiple_of(8)],
        |polar, (row, &k)| box_muller_row(k, sigma, polar, row),
    );
    z
}

/// One row of [`gaussian_cpu`]: `polar` (scratch, a multiple of 8 pairs) receives (u1, u2) per
/// pair (its padding fixed uniforms, so no lane takes the log of a previous row's output), then
/// (r cos θ, r sin θ), of which `row` takes its first `row.len()` values.
fn box_muller_row(k: u64, sigma: f32, polar: &mut [[f32; 2]], row: &mut [f32]) {
    use wide::f32x8;
    let pairs = row.len().div_ceil(2);
    for (m, p) in polar[..pairs].iter_mut().enumerate() {
        let (a, b) = (host_lane(k, 2 * m as u32), host_lane(k, 2 * m as u32 + 1));
        // As in [`gaussian_tensor`]: u1 keeps all 32 bits, u2 the top 24.
        let u1 = ((a >> 9) as f32 + ((a & 511) as f32 + 0.5) / 512.0) / 8_388_608.0;
        let u2 = ((b >> 8) as f32 + 0.5) / 16_777_216.0;
        *p = [u1, u2];
    }
    polar[pairs..].fill([1.0, 0.5]);
    for block in polar.chunks_exact_mut(8) {
        let u1 = f32x8::new(std::array::from_fn(|i| block[i][0]));
        let u2 = f32x8::new(std::array::from_fn(|i| block[i][1]));
        let r = (u1.ln() * f32x8::splat(-2.0)).sqrt() * f32x8::splat(sigma);
        let (sin, cos) = (u2 * f32x8::splat(std::f32::consts::TAU)).sin_cos();
        let (x, y) = ((r * cos).to_array(), (r * sin).to_array());
        for (i, p) in block.iter_mut().enumerate() {
            *p = [x[i], y[i]];
        }
    }
    let flat = polar[..pairs].as_flattened();
    row.copy_from_slice(&flat[..row.len()]);
}

/// Lane `c` of the row with key `k`, on the host: h(h(c ⊕ k0) ⊕ k1), as [`lanes`] computes it.
fn host_lane(k: u64, c: u32) -> u32 {
    triple32_scalar(triple32_scalar(c ^ k as u32) ^ (k >> 32) as u32)
}

/// The noise [`gaussian`] draws, computed on the host in f64 (the reference for tests).
pub fn gaussian_host(keys: &[u64], dims: usize, sigma: f64) -> Vec<Vec<f64>> {
    keys.iter()
        .map(|&k| {
            let lane = |c: u32| host_lane(k, c);
            (0..dims)
                .map(|e| {
                    let m = (e / 2) as u32;
                    let (a, b) = (lane(2 * m), lane(2 * m + 1));
                    let u1 = ((a >> 9) as f64 + ((a & 511) as f64 + 0.5) / 512.0) / 8_388_608.0;
                    let u2 = ((b >> 8) as f64 + 0.5) / 16_777_216.0;
                    let r = (-2.0 * u1.ln()).sqrt() * sigma;
                    let theta = std::f64::consts::TAU * u2;
                    if e % 2 == 0 {
                        r * theta.cos()
                    } else {
                        r * theta.sin()
                    }
                })
                .collect()
        })
        .collect()
}

/// Sound smoothing's noise (after Voráček & Hein, "Sound randomized smoothing in
/// floating-point arithmetic", ICLR 2023): inputs on the grid (1/levels)ℤᵈ (8-bit images:
/// levels 255) get integer noise m ~ round(N(0, s²)), s = σ · levels, in grid steps, and the
/// model reads (round(levels · x) + m) / levels. The noisy input is then computed exactly (an
/// integer sum), so the model sees a function of integers and float rounding cannot leak x
/// into its decision. For x on the grid, round(levels · (x + ε)) = levels · x + round(levels ·
/// ε), so this is Cohen et al.'s smoothing of the base classifier z ↦ f(round(levels · z) /
/// levels) with continuous Gaussian noise, and Cohen's radius holds for every x' in the ball.
///
/// m is drawn exactly by integer comparison: a 62-bit uniform (two hashed lanes of 31 bits)
/// against the 62-bit fixed-point CDF of round(N(0, s²)) at the cell boundaries (k + ½) / s,
/// found by binary search on the device. The sampled law Q differs from the exact P only by
/// the f64 error of Φ at the boundaries and by the tails beyond ±M, M = ⌈7s⌉ + 1 (mass below
/// 2.6e-12 per coordinate); their total-variation bound [`Lattice::slack`] is subtracted
/// from pA's lower bound, so the certificate holds for P. The hash is assumed to be a fair
/// coin, as the paper assumes one.
#[derive(Debug, Clone)]
pub struct Lattice {
    /// Grid steps per input unit (255 for 8-bit images).
    pub levels: u32,
    /// s = σ · levels: the noise's standard deviation in grid steps.
    scale: f64,
    /// Cells m ∈ [−M, M].
    half_width: i64,
    /// The 2M cell boundaries B_j = ⌊2⁶² Φ((j − M + ½) / s)⌋, non-decreasing.
    boundaries: Vec<u64>,
    /// Total-variation distance between Q and P for one coordinate (an upper bound).
    tv: f64,
}

/// An upper bound on the absolute error of [`phi`] in f64 (musl's erfc is accurate to about
/// an ulp; checked against scipy in the tests).
const PHI_ERROR: f64 = 1e-15;
const FIXED: f64 = 4_611_686_018_427_387_904.0; // 2^62
const MASK31: u64 = (1 << 31) - 1;

/// The standard normal CDF, Φ(x) = erfc(−x/√2) / 2, to about an ulp.
pub fn phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

impl Lattice {
    /// The lattice noise of σ (input units) on a grid of `levels` steps per unit.
    pub fn new(sigma: f64, levels: u32) -> Self {
        let s = sigma * levels as f64;
        let half_width = (7.0 * s).ceil() as i64 + 1;
        let mut boundaries = Vec::with_capacity(2 * half_width as usize);
        let mut last = 0u64;
        for j in -half_width..half_width {
            let b = ((phi((j as f64 + 0.5) / s) * FIXED).floor() as u64).max(last);
            boundaries.push(b);
            last = b;
        }
        let tail = 2.0 * phi(-(half_width as f64 + 0.5) / s);
        let tv = boundaries.len() as f64 * (PHI_ERROR + 1.0 / FIXED) + tail;
        Self {
            levels,
            scale: s,
            half_width,
            boundaries,
            tv,
        }
    }

    /// The bound on pA's error for inputs of `dims` coordinates: TV(Qᵈ, Pᵈ) ≤ d · TV(Q, P).
    pub fn slack(&self, dims: usize) -> f64 {
        dims as f64 * self.tv
    }

    /// P(m), the exact law: Φ((m + ½) / s) − Φ((m − ½) / s).
    pub fn probability(&self, m: i64) -> f64 {
        let s = self.scale;
        phi((m as f64 + 0.5) / s) - phi((m as f64 - 0.5) / s)
    }

    /// The largest distance of a coordinate of `x` from the grid, in grid steps (one
    /// read-back).
    pub fn off_grid<const D: usize>(&self, x: Tensor<D>) -> f64 {
        let scaled = x.mul_scalar(self.levels as f64);
        let off = (scaled.clone() - scaled.round()).abs().max();
        off.into_scalar::<f32>() as f64
    }

    /// The noisy inputs (round(levels · x) + m) / levels, row r with the noise of `keys[r]`.
    pub fn perturb<const D: usize>(&self, x: Tensor<D>, keys: &[u64]) -> Tensor<D> {
        let m = self.sample(keys, x.dims(), &x.device());
        let levels = self.levels as f64;
        (x.mul_scalar(levels).round() + m).div_scalar(levels)
    }

    /// Integer noise (as floats) of `shape` (`shape[0]` = `keys.len()` rows), grid steps.
    pub fn sample<const D: usize>(
        &self,
        keys: &[u64],
        shape: [usize; D],
        device: &Device,
    ) -> Tensor<D> {
        let rows = shape[0];
        assert_eq!(rows, keys.len(), "one key per row");
        let dims: usize = shape[1..].iter().product();
        let total = rows * dims;
        let lanes = lanes(keys, dims.max(1), device).reshape([rows * dims.max(1), 2]);
        let lanes = lanes.narrow(0, 0, total);
        let v_hi = lanes
            .clone()
            .narrow(1, 0, 1)
            .reshape([total])
            .bitwise_right_shift_scalar(1u32);
        let v_lo = lanes
            .narrow(1, 1, 1)
            .reshape([total])
            .bitwise_right_shift_scalar(1u32);
        let (b_hi, b_lo) = self.boundary_tensors(device);
        // count = #{j : B_j ≤ v} by a branchless binary search over the boundaries padded to
        // 2^k entries with values above every v: at each power-of-two step the position moves
        // up if the boundary just below the candidate is ≤ v.
        let mut pos = Tensor::<1, Int>::zeros([total], device);
        let mut step = b_hi.dims()[0] / 2;
        while step >= 1 {
            let at = pos.clone().add_scalar(step as i64 - 1);
            let bh = b_hi.clone().select(0, at.clone());
            let bl = b_lo.clone().select(0, at);
            // B ≤ v, lexicographically on (hi, lo).
            let below = bh.clone().lower(v_hi.clone()).bool_or(
                bh.equal(v_hi.clone())
                    .bool_and(bl.lower_equal(v_lo.clone())),
            );
            pos = pos.clone().mask_where(below, pos.add_scalar(step as i64));
            step /= 2;
        }
        pos.sub_scalar(self.half_width).float().reshape(shape)
    }

    /// The boundaries' high and low 31 bits as u32 tensors, padded to a power of two with
    /// 2^31 (above every 31-bit high word).
    fn boundary_tensors(&self, device: &Device) -> (Tensor<1, Int>, Tensor<1, Int>) {
        let n = (self.boundaries.len() + 1).next_power_of_two();
        let split = |f: fn(u64) -> u32| {
            let mut words: Vec<u32> = self.boundaries.iter().map(|&b| f(b)).collect();
            words.resize(n, 1 << 31);
            Tensor::<1, Int>::from_data(TensorData::new(words, [n]), (device, DType::U32))
        };
        (split(|b| (b >> 31) as u32), split(|b| (b & MASK31) as u32))
    }

    /// The noise [`Lattice::sample`] draws, computed on the host (the reference for tests).
    pub fn sample_host(&self, keys: &[u64], dims: usize) -> Vec<Vec<i64>> {
        keys.iter()
            .map(|&k| {
                (0..dims)
                    .map(|e| {
                        let (a, b) = (host_lane(k, 2 * e as u32), host_lane(k, 2 * e as u32 + 1));
                        let v = (((a >> 1) as u64) << 31) | (b >> 1) as u64;
                        self.boundaries.partition_point(|&b| b <= v) as i64 - self.half_width
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lattice's boundaries rest on statrs' Φ being within [`PHI_ERROR`] of the truth:
    /// scipy.stats.norm.cdf at the same points.
    #[test]
    fn phi_is_within_its_error_bound_of_scipy() {
        let scipy = [
            (-7.0, 1.279812543885835e-12),
            (-5.0, 2.866515718791933e-07),
            (-1.0, 0.15865525393145707),
            (-0.5 / 63.75, 0.4968710730172815),
            (0.5, 0.6914624612740131),
            (3.0, 0.9986501019683699),
            (6.5, 0.99999999995984),
        ];
        for (x, want) in scipy {
            let got = phi(x);
            assert!(
                (got - want).abs() <= PHI_ERROR,
                "Φ({x}) = {got}, scipy {want}"
            );
        }
    }

    #[test]
    fn keys_of_one_example_are_distinct() {
        let b = base(1, 2, 3);
        let mut keys: Vec<u64> = (0..100_000).map(|j| key(b, j)).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 100_000);
        assert_ne!(base(1, 2, 3), base(1, 2, 4));
        assert_ne!(base(1, 2, 3), base(1, 3, 3));
    }
}
