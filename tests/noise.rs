//! The counter-based smoothing noise: the device's tensor arithmetic computes exactly the
//! function its host reference defines, the values are N(0, σ²) (moments, tail fractions,
//! no correlation between coordinates, pairs or consecutive samples), and a sample's noise
//! does not depend on what else is drawn beside it.

use burn::tensor::{Device, Tensor};
use rampart::certify::noise;
use statrs::distribution::{ContinuousCDF, Normal};

fn keys(example: u64, samples: std::ops::Range<u64>) -> Vec<u64> {
    let base = noise::base(7, 1, example);
    samples.map(|j| noise::key(base, j)).collect()
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// The largest difference between `got` `[rows, dims]` and the host reference for `keys`.
fn worst_against_host(got: Vec<f32>, keys: &[u64], dims: usize, sigma: f64) -> f64 {
    let host = noise::gaussian_host(keys, dims, sigma);
    assert_eq!(got.len(), keys.len() * dims);
    got.iter()
        .zip(host.iter().flatten())
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn the_tensor_noise_is_its_host_reference() {
    let d = Device::flex();
    // 49 coordinates: an odd count, so the last pair is cut in half.
    let k = keys(3, 0..6);
    let t = noise::gaussian_tensor(&k, [6, 1, 7, 7], 0.3, &d).reshape([6, 49]);
    let worst = worst_against_host(values(t), &k, 49, 0.3);
    assert!(worst < 2e-6, "tensor and host noise differ by {worst}");
}

/// The CPU's one-pass kernel computes the same function, for widths that fill its blocks of
/// eight pairs exactly, partly, or not at all, and one pair cut in half; `gaussian` runs it on
/// flex (the same bits), also for one coordinate per row, no coordinates, or no rows.
#[test]
fn the_cpu_noise_is_its_host_reference() {
    let d = Device::flex();
    let k = keys(5, 0..7);
    for dims in [1, 2, 15, 16, 17, 49, 784] {
        let z = noise::gaussian_cpu(&k, dims, 0.3);
        assert_eq!(values(noise::gaussian(&k, [7, dims], 0.3, &d)), z);
        let worst = worst_against_host(z, &k, dims, 0.3);
        assert!(
            worst < 2e-6,
            "{dims} coordinates: CPU and host noise differ by {worst}"
        );
    }
    let column = noise::gaussian(&k, [7], 0.3, &d).into_data();
    assert_eq!(
        column.try_to_vec::<f32>().unwrap(),
        noise::gaussian_cpu(&k, 1, 0.3)
    );
    assert_eq!(noise::gaussian(&k, [7, 0], 0.3, &d).dims(), [7, 0]);
    assert_eq!(noise::gaussian(&[], [0, 784], 0.3, &d).dims(), [0, 784]);
}

#[test]
fn the_noise_is_standard_gaussian_and_uncorrelated() {
    let d = Device::flex();
    let (rows, dims, sigma) = (2000usize, 784usize, 0.5);
    let z = values(noise::gaussian(
        &keys(0, 0..rows as u64),
        [rows, dims],
        sigma,
        &d,
    ));
    let n = z.len() as f64;
    let x: Vec<f64> = z.iter().map(|&v| v as f64 / sigma).collect();
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let kurt = x.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n / (var * var);
    // Standard errors: mean 1/√n, variance √(2/n), kurtosis √(24/n); 5 of each.
    assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
    assert!((var - 1.0).abs() < 5.0 * (2.0 / n).sqrt(), "variance {var}");
    assert!(
        (kurt - 3.0).abs() < 5.0 * (24.0 / n).sqrt(),
        "kurtosis {kurt}"
    );
    let normal = Normal::new(0.0, 1.0).unwrap();
    for t in [1.0, 2.0, 3.0, 4.0] {
        let p = 2.0 * (1.0 - normal.cdf(t));
        let seen = x.iter().filter(|v| v.abs() > t).count() as f64 / n;
        let sd = (p * (1.0 - p) / n).sqrt();
        assert!(
            (seen - p).abs() < 5.0 * sd,
            "P(|z| > {t}) = {seen}, expected {p}"
        );
    }
    // Correlations (standard error 1/√pairs): the two halves of a Box-Muller pair, their
    // squares (a radius shared badly would show there), neighbouring pairs, consecutive
    // samples (keys j and j + 1) at one coordinate.
    let at = |r: usize, e: usize| x[r * dims + e];
    let corr = |pairs: &[(f64, f64)]| {
        let m = pairs.len() as f64;
        let (ma, mb) = (
            pairs.iter().map(|p| p.0).sum::<f64>() / m,
            pairs.iter().map(|p| p.1).sum::<f64>() / m,
        );
        let cov = pairs.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum::<f64>() / m;
        let va = pairs.iter().map(|p| (p.0 - ma).powi(2)).sum::<f64>() / m;
        let vb = pairs.iter().map(|p| (p.1 - mb).powi(2)).sum::<f64>() / m;
        (cov / (va * vb).sqrt(), 5.0 / m.sqrt())
    };
    let cases: Vec<(&str, Vec<(f64, f64)>)> = vec![
        (
            "cos and sin of a pair",
            (0..rows)
                .flat_map(|r| (0..dims / 2).map(move |m| (r, m)))
                .map(|(r, m)| (at(r, 2 * m), at(r, 2 * m + 1)))
                .collect(),
        ),
        (
            "squares of a pair",
            (0..rows)
                .flat_map(|r| (0..dims / 2).map(move |m| (r, m)))
                .map(|(r, m)| (at(r, 2 * m).powi(2), at(r, 2 * m + 1).powi(2)))
                .collect(),
        ),
        (
            "neighbouring pairs",
            (0..rows)
                .flat_map(|r| (0..dims / 2 - 1).map(move |m| (r, m)))
                .map(|(r, m)| (at(r, 2 * m), at(r, 2 * m + 2)))
                .collect(),
        ),
        (
            "consecutive samples",
            (0..rows - 1)
                .flat_map(|r| (0..dims).map(move |e| (r, e)))
                .map(|(r, e)| (at(r, e), at(r + 1, e)))
                .collect(),
        ),
    ];
    for (what, pairs) in cases {
        let (c, bound) = corr(&pairs);
        assert!(c.abs() < bound, "{what}: correlation {c} (bound {bound})");
    }
}

#[test]
fn a_samples_noise_does_not_depend_on_its_neighbours() {
    let d = Device::flex();
    let all = keys(5, 0..40);
    let together = values(noise::gaussian(&all, [40, 30], 1.0, &d));
    let alone = values(noise::gaussian(&all[17..18], [1, 30], 1.0, &d));
    assert_eq!(&together[17 * 30..18 * 30], &alone[..]);
    // Another example, seed or stage gives other noise.
    let other = values(noise::gaussian(&keys(6, 17..18), [1, 30], 1.0, &d));
    assert_ne!(other, alone);
    let other_stage = noise::key(noise::base(7, 2, 5), 17);
    let other_seed = noise::key(noise::base(8, 1, 5), 17);
    for k in [other_stage, other_seed] {
        assert_ne!(values(noise::gaussian(&[k], [1, 30], 1.0, &d)), alone);
    }
}

/// Sound smoothing's lattice noise: the device computes exactly the integers its host
/// reference defines, and their law is round(N(0, s²)), checked cell by cell where rounding
/// matters most (s = 0.5 grid steps: P(0) = Φ(1) − Φ(−1)).
#[test]
fn the_lattice_noise_is_its_host_reference_and_the_rounded_gaussian() {
    let d = Device::flex();
    let k = keys(9, 0..8);
    let lattice = noise::Lattice::new(0.25, 255);
    let got = values(lattice.sample(&k, [8, 1, 7, 7], &d).reshape([8, 49]));
    let host: Vec<f32> = lattice
        .sample_host(&k, 49)
        .into_iter()
        .flatten()
        .map(|m| m as f32)
        .collect();
    assert_eq!(got, host);
    assert!(got.iter().any(|&m| m.abs() > 60.0), "s = 63.75 grid steps");

    // s = 0.5 grid steps: sigma 0.5 / 255.
    let sigma = 0.5 / 255.0;
    let lattice = noise::Lattice::new(sigma, 255);
    let (rows, dims) = (500usize, 784usize);
    let m = values(lattice.sample(&keys(1, 0..rows as u64), [rows, dims], &d));
    let n = m.len() as f64;
    assert!(m.iter().all(|v| v.fract() == 0.0), "whole grid steps");
    // scipy: norm.cdf((m + 0.5) / 0.5) - norm.cdf((m - 0.5) / 0.5).
    let scipy = [
        0.6826894921370859,
        0.15730535589982697,
        0.00134961138005818,
        2.866502920584324e-07,
    ];
    for cell in -3i64..=3 {
        let p = lattice.probability(cell);
        let want = scipy[cell.unsigned_abs() as usize];
        assert!((p - want).abs() < 1e-15, "P({cell}) = {p}, scipy {want}");
        let seen = m.iter().filter(|&&v| v as i64 == cell).count() as f64 / n;
        let sd = (p * (1.0 - p) / n).sqrt();
        assert!(
            (seen - p).abs() < 5.0 * sd + 1e-12,
            "P(m = {cell}) = {seen}, the rounded Gaussian gives {p}"
        );
    }
    // The sampler's total-variation bound for a Fashion-MNIST image is negligible but not 0.
    let slack = noise::Lattice::new(0.25, 255).slack(784);
    assert!(slack > 0.0 && slack < 1e-8, "slack {slack}");
}

#[test]
fn lattice_noise_keeps_inputs_on_the_grid() {
    let d = Device::flex();
    let lattice = noise::Lattice::new(0.25, 255);
    let pixels: Vec<f32> = (0..4 * 49).map(|i| (i % 256) as f32 / 255.0).collect();
    let x = Tensor::<2>::from_data(burn::tensor::TensorData::new(pixels.clone(), [4, 49]), &d);
    assert_eq!(lattice.off_grid(x.clone()), 0.0);
    let k = keys(2, 0..4);
    let noisy = values(lattice.perturb(x, &k));
    let m = lattice.sample_host(&k, 49);
    for (i, v) in noisy.iter().enumerate() {
        let want = (pixels[i] * 255.0).round() + m[i / 49][i % 49] as f32;
        assert_eq!(*v, want / 255.0, "coordinate {i}");
    }
    let off = Tensor::<2>::full([1, 3], 0.3, &d);
    assert!(
        (lattice.off_grid(off) - 0.5).abs() < 1e-3,
        "0.3 is 76.5 grid steps"
    );
}
