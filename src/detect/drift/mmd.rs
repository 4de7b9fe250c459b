//! The kernel two-sample test (Gretton et al., JMLR 2012) as Alibi Detect's `MMDDrift` runs
//! it: the unbiased estimate of the squared maximum mean discrepancy with a Gaussian kernel
//! k(a, b) = exp(−‖a − b‖² / (2σ²)), σ by the median heuristic (σ² = half the median squared
//! distance between the two samples), and a permutation test. The kernel matrix and every
//! permutation's statistic are Burn tensors; the permutations are drawn on the host from a
//! seeded generator and uploaded once, and the statistics come back in one read.

use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::detect::DetectError;

/// Most examples in the two samples together (the kernel matrix is their square).
pub const MAX_POOLED: usize = 10_000;
/// Most permutations.
pub const MAX_PERMUTATIONS: usize = 100_000;

/// A test's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MmdTest {
    /// Unbiased MMD², kernel units (can be slightly negative when the samples agree).
    pub statistic: f64,
    /// (1 + #{permutations with a statistic ≥ the observed}) / (1 + permutations); Alibi
    /// Detect counts without the ones, which can give 0.
    pub p_value: f64,
    /// The kernel width σ, feature units.
    pub sigma: f64,
    pub permutations: usize,
}

/// Tests whether `x` `[n, F]` and `y` `[m, F]` come from one distribution.
pub fn mmd_test(
    x: Tensor<2>,
    y: Tensor<2>,
    permutations: usize,
    seed: u64,
) -> Result<MmdTest, DetectError> {
    let (n, m) = (x.dims()[0], y.dims()[0]);
    for (what, size) in [("MMD reference", n), ("MMD sample", m)] {
        if size < 2 {
            return Err(DetectError::TooFew {
                what,
                need: 2,
                got: size,
            });
        }
    }
    let total = n + m;
    if total > MAX_POOLED {
        return Err(DetectError::Invalid(format!(
            "the MMD test keeps a {total}×{total} kernel matrix; use at most {MAX_POOLED} examples in both samples together (a random subsample tests the same hypothesis)"
        )));
    }
    if !(1..=MAX_PERMUTATIONS).contains(&permutations) {
        return Err(DetectError::Invalid(format!(
            "--permutations must be between 1 and {MAX_PERMUTATIONS}, got {permutations}"
        )));
    }
    let device = x.device();
    let z = Tensor::cat(vec![x, y], 0);
    let sq = z.clone().powf_scalar(2.0).sum_dim(1);
    let d2 = (sq.clone() + sq.transpose() - z.clone().matmul(z.transpose()) * 2.0).clamp_min(0.0);
    // The median heuristic on the cross-sample distances (one read).
    let mut cross = crate::detect::host_floats(d2.clone().slice([0..n, n..total]), "distances")?;
    if cross.iter().any(|v| !v.is_finite()) {
        return Err(DetectError::NotFinite {
            what: "MMD features",
        });
    }
    let mid = cross.len() / 2;
    let median = f64::from(*cross.select_nth_unstable_by(mid, f32::total_cmp).1);
    let two_sigma2 = if median > 0.0 { median } else { 1.0 };
    let eye = Tensor::<2>::from_data(
        TensorData::new(
            (0..total * total)
                .map(|i| if i / total == i % total { 0f32 } else { 1.0 })
                .collect::<Vec<_>>(),
            [total, total],
        ),
        &device,
    );
    let kernel = (d2 / -two_sigma2).exp() * eye;
    // Row 0: the observed split; rows 1..: random relabellings of the pooled sample.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..total).collect();
    let mut assign = vec![0f32; (permutations + 1) * total];
    assign[..n].fill(1.0);
    for row in assign.chunks_exact_mut(total).skip(1) {
        order.shuffle(&mut rng);
        for &i in &order[..n] {
            row[i] = 1.0;
        }
    }
    let u = Tensor::<2>::from_data(TensorData::new(assign, [permutations + 1, total]), &device);
    let v = u.clone().neg() + 1.0;
    let ku = u.clone().matmul(kernel.clone());
    let s_xx = (ku.clone() * u).sum_dim(1);
    let s_xy = (ku * v).sum_dim(1);
    let s_all = kernel.sum();
    let s_yy = (s_xx.clone() + s_xy.clone() * 2.0).neg() + s_all.unsqueeze_dim::<2>(1);
    let (nf, mf) = (n as f64, m as f64);
    let mmd2 = s_xx / (nf * (nf - 1.0)) + s_yy / (mf * (mf - 1.0)) - s_xy * (2.0 / (nf * mf));
    let values = mmd2
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .map_err(|e| DetectError::Invalid(format!("reading statistics back: {e:?}")))?;
    let observed = values[0];
    let at_least = values[1..].iter().filter(|v| **v >= observed).count();
    Ok(MmdTest {
        statistic: observed,
        p_value: (1 + at_least) as f64 / (1 + permutations) as f64,
        sigma: (two_sigma2 / 2.0).sqrt(),
        permutations,
    })
}
