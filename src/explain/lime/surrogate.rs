//! LIME's surrogate: a weighted ridge regression of the explained output on the binary
//! interpretable features, solved in f64 (as scikit-learn's `Ridge(fit_intercept=True)` with
//! `sample_weight`: centre by the weighted means, then (XᵀWX + αI)β = XᵀWy), and the feature
//! selection of the reference implementation.

use nalgebra::{DMatrix, DVector};

use crate::explain::ExplainError;

/// A fitted weighted linear model over some columns of the design.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// The design's columns the model reads.
    pub columns: Vec<usize>,
    /// One coefficient per column in `columns`.
    pub coef: Vec<f64>,
    pub intercept: f64,
    /// Weighted R² of the fit on the samples (1 − Σw(y−ŷ)² / Σw(y−ȳ)²).
    pub r2: f64,
}

impl Fit {
    /// The surrogate's prediction for design row `z` (all columns of the design).
    pub fn predict(&self, z: &[f64]) -> f64 {
        self.intercept
            + self
                .columns
                .iter()
                .zip(&self.coef)
                .map(|(&j, b)| b * z[j])
                .sum::<f64>()
    }
}

/// Weighted ridge of `y` on the `columns` of `z` (rows are samples) with penalty `alpha` ≥ 0.
pub fn ridge(
    z: &DMatrix<f64>,
    y: &[f64],
    w: &[f64],
    columns: &[usize],
    alpha: f64,
) -> Result<Fit, ExplainError> {
    let (n, k) = (z.nrows(), columns.len());
    let total: f64 = w.iter().sum();
    if n == 0 || total <= 0.0 || !total.is_finite() {
        return Err(ExplainError::Invalid(
            "the LIME samples have no kernel weight: raise --kernel-width".into(),
        ));
    }
    let x = DMatrix::from_fn(n, k, |i, j| z[(i, columns[j])]);
    let x_mean: Vec<f64> = (0..k)
        .map(|j| (0..n).map(|i| w[i] * x[(i, j)]).sum::<f64>() / total)
        .collect();
    let y_mean = y.iter().zip(w).map(|(v, wi)| v * wi).sum::<f64>() / total;
    let xc = DMatrix::from_fn(n, k, |i, j| (x[(i, j)] - x_mean[j]) * w[i].sqrt());
    let yc = DVector::from_fn(n, |i, _| (y[i] - y_mean) * w[i].sqrt());
    let gram = xc.transpose() * &xc + DMatrix::identity(k, k) * alpha;
    let rhs = xc.transpose() * &yc;
    let coef = match gram.clone().cholesky() {
        Some(c) => c.solve(&rhs),
        None => gram.lu().solve(&rhs).ok_or_else(|| {
            ExplainError::Invalid(
                "the surrogate regression is singular: raise --samples (or lower --top-k)".into(),
            )
        })?,
    };
    let intercept = y_mean - (0..k).map(|j| coef[j] * x_mean[j]).sum::<f64>();
    if coef.iter().any(|c| !c.is_finite()) {
        return Err(ExplainError::Invalid(
            "the surrogate regression has no finite solution: raise --samples".into(),
        ));
    }
    let mut fit = Fit {
        columns: columns.to_vec(),
        coef: coef.iter().copied().collect(),
        intercept,
        r2: 0.0,
    };
    fit.r2 = r2(z, y, w, &fit);
    Ok(fit)
}

/// Weighted R² of `fit` on the rows of `z` with weight `w` (as scikit-learn's `r2_score`: a
/// constant target gives 1 if fitted exactly, else 0).
pub fn r2(z: &DMatrix<f64>, y: &[f64], w: &[f64], fit: &Fit) -> f64 {
    let total: f64 = w.iter().sum();
    let y_mean = y.iter().zip(w).map(|(v, wi)| v * wi).sum::<f64>() / total.max(f64::MIN_POSITIVE);
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for (i, row) in z.row_iter().enumerate() {
        let row: Vec<f64> = row.iter().copied().collect();
        ss_res += w[i] * (y[i] - fit.predict(&row)).powi(2);
        ss_tot += w[i] * (y[i] - y_mean).powi(2);
    }
    match (ss_tot > 0.0, ss_res > 0.0) {
        (true, _) => 1.0 - ss_res / ss_tot,
        (false, false) => 1.0,
        (false, true) => 0.0,
    }
}

/// An unpenalised fit where the design allows one, else a barely penalised one.
fn least_squares(
    z: &DMatrix<f64>,
    y: &[f64],
    w: &[f64],
    columns: &[usize],
) -> Result<Fit, ExplainError> {
    ridge(z, y, w, columns, 0.0).or_else(|_| ridge(z, y, w, columns, 1e-6))
}

/// The `k` columns LIME explains with, as its `feature_selection="auto"`: forward selection
/// by weighted R² (unpenalised least squares) when `k` ≤ 6, else the `k` largest
/// |coefficients| of a ridge (α = 0.01) on every column. All columns when `k` ≥ their number.
pub fn select(
    z: &DMatrix<f64>,
    y: &[f64],
    w: &[f64],
    k: usize,
) -> Result<Vec<usize>, ExplainError> {
    let d = z.ncols();
    if k >= d {
        return Ok((0..d).collect());
    }
    if k <= 6 {
        let mut chosen: Vec<usize> = Vec::with_capacity(k);
        for _ in 0..k {
            let mut best: Option<(f64, usize)> = None;
            for j in (0..d).filter(|j| !chosen.contains(j)) {
                let mut cols = chosen.clone();
                cols.push(j);
                let r2 = least_squares(z, y, w, &cols)?.r2;
                if best.is_none_or(|(b, _)| r2 > b) {
                    best = Some((r2, j));
                }
            }
            chosen.extend(best.map(|(_, j)| j));
        }
        return Ok(chosen);
    }
    let all: Vec<usize> = (0..d).collect();
    let fit = ridge(z, y, w, &all, 0.01)?;
    let mut order = all;
    order.sort_by(|&a, &b| fit.coef[b].abs().total_cmp(&fit.coef[a].abs()));
    order.truncate(k);
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y = 1 + 2·z0 − 3·z1 exactly: an unpenalised fit recovers it with R² = 1 whatever the
    /// weights, and forward selection picks z1 (the larger effect) first, z2 (noise) never.
    #[test]
    fn ridge_recovers_an_exact_linear_rule_and_selection_ranks_it() {
        let rows = [
            [0., 0., 1.],
            [1., 0., 0.],
            [0., 1., 1.],
            [1., 1., 0.],
            [1., 0., 1.],
            [0., 1., 0.],
        ];
        let z = DMatrix::from_fn(6, 3, |i, j| rows[i][j]);
        let y: Vec<f64> = rows.iter().map(|r| 1.0 + 2.0 * r[0] - 3.0 * r[1]).collect();
        let w = [1.0, 0.5, 2.0, 1.0, 0.1, 3.0];
        let fit = ridge(&z, &y, &w, &[0, 1, 2], 0.0).unwrap();
        assert!((fit.coef[0] - 2.0).abs() < 1e-9, "{fit:?}");
        assert!((fit.coef[1] + 3.0).abs() < 1e-9, "{fit:?}");
        assert!(fit.coef[2].abs() < 1e-9, "{fit:?}");
        assert!((fit.intercept - 1.0).abs() < 1e-9 && (fit.r2 - 1.0).abs() < 1e-12);
        // A penalty shrinks the coefficients towards zero.
        let shrunk = ridge(&z, &y, &w, &[0, 1, 2], 1.0).unwrap();
        assert!(shrunk.coef[1].abs() < 3.0 && shrunk.r2 < 1.0);
        assert_eq!(select(&z, &y, &w, 2).unwrap(), vec![1, 0]);
    }
}
