//! Counter-based Gaussian noise for smoothing: the noise of coordinate e of Monte Carlo sample
//! j of example i in a stage is a fixed function of (seed, stage, i, j, e), so counts do not
//! depend on how samples are grouped into forward passes, and the noise of a whole forward
//! batch is drawn in one pass of element-wise tensor operations on the device (no generator
//! state, no re-seeding, no host work but one 64-bit key per row).
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
/// the sample with key `keys[r]`, its coordinates in row-major order.
pub fn gaussian<const D: usize>(
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

/// The noise [`gaussian`] draws, computed on the host in f64 (the reference for tests).
pub fn gaussian_host(keys: &[u64], dims: usize, sigma: f64) -> Vec<Vec<f64>> {
    keys.iter()
        .map(|&k| {
            let (k0, k1) = (k as u32, (k >> 32) as u32);
            let lane = |c: u32| triple32_scalar(triple32_scalar(c ^ k0) ^ k1);
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

#[cfg(test)]
mod tests {
    use super::*;

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
