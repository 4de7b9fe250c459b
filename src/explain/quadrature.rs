//! Quadrature rules on [0, 1] for the path integral of integrated gradients, as Captum
//! offers them: Riemann sums (left, right, middle, trapezoid) and Gauss-Legendre, whose m
//! nodes integrate polynomials of degree below 2m exactly.

use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

/// How the integral over α in [0, 1] is approximated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    RiemannLeft,
    RiemannRight,
    RiemannMiddle,
    RiemannTrapezoid,
    GaussLegendre,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::RiemannLeft => "riemann-left",
            Rule::RiemannRight => "riemann-right",
            Rule::RiemannMiddle => "riemann-middle",
            Rule::RiemannTrapezoid => "riemann-trapezoid",
            Rule::GaussLegendre => "gauss-legendre",
        }
    }

    /// `steps` nodes α in [0, 1] and their weights (summing to 1). `steps` ≥ 1 (≥ 2 for the
    /// trapezoid).
    pub fn nodes(self, steps: usize) -> (Vec<f64>, Vec<f64>) {
        let m = steps.max(1);
        let h = 1.0 / m as f64;
        match self {
            Rule::RiemannLeft => ((0..m).map(|k| k as f64 * h).collect(), vec![h; m]),
            Rule::RiemannRight => ((1..=m).map(|k| k as f64 * h).collect(), vec![h; m]),
            Rule::RiemannMiddle => ((0..m).map(|k| (k as f64 + 0.5) * h).collect(), vec![h; m]),
            Rule::RiemannTrapezoid => {
                let m = m.max(2);
                let h = 1.0 / (m - 1) as f64;
                let mut w = vec![h; m];
                w[0] = h / 2.0;
                w[m - 1] = h / 2.0;
                ((0..m).map(|k| k as f64 * h).collect(), w)
            }
            Rule::GaussLegendre => gauss_legendre(m),
        }
    }
}

/// Golub-Welsch: the nodes are the eigenvalues of the Jacobi matrix of the Legendre
/// polynomials (off-diagonal k / √(4k² − 1)), the weights 2·v₀² on [−1, 1]; mapped to [0, 1].
fn gauss_legendre(m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut j = DMatrix::<f64>::zeros(m, m);
    for k in 1..m {
        let b = k as f64 / ((4 * k * k - 1) as f64).sqrt();
        j[(k - 1, k)] = b;
        j[(k, k - 1)] = b;
    }
    let eig = SymmetricEigen::new(j);
    let mut pairs: Vec<(f64, f64)> = (0..m)
        .map(|i| {
            let v0 = eig.eigenvectors[(0, i)];
            ((eig.eigenvalues[i] + 1.0) / 2.0, v0 * v0)
        })
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    pairs.into_iter().unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integrate(rule: Rule, m: usize, f: impl Fn(f64) -> f64) -> f64 {
        let (a, w) = rule.nodes(m);
        a.iter().zip(&w).map(|(a, w)| w * f(*a)).sum()
    }

    #[test]
    fn gauss_legendre_is_exact_below_degree_2m_and_riemann_converges() {
        for m in [1, 2, 5, 20, 50] {
            let (a, w) = Rule::GaussLegendre.nodes(m);
            assert_eq!(a.len(), m);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for k in 0..2 * m {
                let got = integrate(Rule::GaussLegendre, m, |t| t.powi(k as i32));
                assert!(
                    (got - 1.0 / (k as f64 + 1.0)).abs() < 1e-10,
                    "m {m}, degree {k}: {got}"
                );
            }
        }
        // Five points: 0.5 ± 0.5·0.9061798459 (Abramowitz & Stegun 25.4).
        let (a, _) = Rule::GaussLegendre.nodes(5);
        assert!((a[0] - 0.5 * (1.0 - 0.906_179_845_938_664)).abs() < 1e-12);
        for rule in [
            Rule::RiemannLeft,
            Rule::RiemannRight,
            Rule::RiemannMiddle,
            Rule::RiemannTrapezoid,
        ] {
            let coarse = (integrate(rule, 10, f64::exp) - (1f64.exp() - 1.0)).abs();
            let fine = (integrate(rule, 100, f64::exp) - (1f64.exp() - 1.0)).abs();
            assert!(
                fine < coarse && fine < 1e-2,
                "{rule:?}: {coarse} then {fine}"
            );
        }
    }
}
