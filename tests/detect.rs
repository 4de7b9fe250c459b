//! Drift statistics against scipy 1.17's values (computed once with the script in each test's
//! comment), and the corrections across features on hand-checked cases.

use rampart::detect::DetectError;
use rampart::detect::univariate::{
    benjamini_hochberg, bonferroni, chi_square, jensen_shannon, ks, psi,
};

const A: [f64; 20] = [
    0.61, 0.29, 0.06, 0.59, -1.73, -0.74, 0.51, -0.56, 0.39, 1.64, 0.05, -0.06, 0.64, -0.82, 0.37,
    1.77, 1.09, -1.28, 2.36, 1.31,
];
const B: [f64; 15] = [
    1.05, 0.76, 1.33, 2.61, 0.32, 1.84, 1.30, 0.52, 0.95, 2.19, 1.60, 0.36, 1.48, 0.08, 1.12,
];

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-12)
}

#[test]
fn ks_matches_scipy() {
    // scipy.stats.ks_2samp(A, B, mode='exact'): D 0.48333333333333334, p 0.026114595860107354.
    let r = ks(&A, &B).unwrap();
    assert!(close(r.statistic, 0.48333333333333334, 1e-12), "{r:?}");
    assert!(close(r.p_value, 0.026114595860107354, 1e-6), "{r:?}");
    // With a tie (B[6] = 1.31, also in A) the exact path count does not apply: Kolmogorov's
    // limit, scipy.stats.kstwobign.sf(D * sqrt(nm/(n+m))) = 0.036457036959674095 (same D).
    let mut tied = B;
    tied[6] = 1.31;
    let r = ks(&A, &tied).unwrap();
    assert!(close(r.statistic, 0.48333333333333334, 1e-12), "{r:?}");
    assert!(close(r.p_value, 0.036457036959674095, 1e-6), "{r:?}");
    // Identical samples: no evidence of drift.
    assert!(ks(&A, &A).unwrap().p_value > 0.99);
}

#[test]
fn ks_refuses_what_it_cannot_test() {
    assert!(matches!(ks(&[1.0], &B), Err(DetectError::TooFew { .. })));
    assert!(matches!(
        ks(&A, &[1.0, f64::NAN]),
        Err(DetectError::NotFinite { .. })
    ));
}

#[test]
fn chi_square_matches_scipy_chi2_contingency() {
    // scipy.stats.chi2_contingency([[30,25,20,25],[20,30,15,35]]): 4.8354978354978355,
    // p 0.1842467848757523, 3 degrees of freedom.
    let r = chi_square(&[30, 25, 20, 25], &[20, 30, 15, 35]).unwrap();
    assert!(close(r.statistic, 4.8354978354978355, 1e-12), "{r:?}");
    assert!(close(r.p_value, 0.1842467848757523, 1e-9), "{r:?}");
    // 2x2 with Yates' correction (scipy's default): 4.181333333333333, p 0.04087153408900628.
    let r = chi_square(&[30, 70], &[45, 55]).unwrap();
    assert!(close(r.statistic, 4.181333333333333, 1e-12), "{r:?}");
    assert!(close(r.p_value, 0.04087153408900628, 1e-9), "{r:?}");
    // A category empty in both samples is dropped, not divided by.
    let r2 = chi_square(&[30, 0, 70], &[45, 0, 55]).unwrap();
    assert_eq!(r, r2);
    assert!(chi_square(&[1, 2], &[1, 2, 3]).is_err());
    assert!(chi_square(&[5, 0], &[3, 0]).is_err());
}

#[test]
fn jensen_shannon_matches_scipy_and_psi_matches_its_formula() {
    // scipy.spatial.distance.jensenshannon([.1,.4,.5], [.3,.3,.4]) = 0.18035965602712561.
    let js = jensen_shannon(&[0.1, 0.4, 0.5], &[0.3, 0.3, 0.4]).unwrap();
    assert!(close(js, 0.18035965602712561, 1e-12), "{js}");
    // Counts work as well as probabilities.
    let js2 = jensen_shannon(&[1.0, 4.0, 5.0], &[3.0, 3.0, 4.0]).unwrap();
    assert!(close(js2, js, 1e-12));
    // PSI = Σ (q − p) ln(q/p), by hand.
    let (p, q): ([f64; 3], [f64; 3]) = ([0.25, 0.25, 0.5], [0.2, 0.3, 0.5]);
    let expected: f64 = p.iter().zip(&q).map(|(p, q)| (q - p) * (q / p).ln()).sum();
    assert!(close(psi(&p, &q).unwrap(), expected, 1e-12));
    assert_eq!(psi(&p, &p).unwrap(), 0.0);
    // An empty bin is floored, not infinite.
    assert!(psi(&[0.5, 0.5, 0.0], &[0.4, 0.4, 0.2]).unwrap().is_finite());
    assert!(psi(&[0.5, -0.5], &[0.5, 0.5]).is_err());
}

#[test]
fn corrections_across_features() {
    let p = [0.01, 0.04, 0.03, 0.20];
    assert!(close(bonferroni(&p), 0.04, 1e-12));
    assert_eq!(bonferroni(&[0.5, 0.6, 0.9]), 1.0);
    // BH at q = 0.05 with m = 4: thresholds 0.0125, 0.025, 0.0375, 0.05 for the sorted
    // p-values 0.01, 0.03, 0.04, 0.20: only the first is at or below its threshold.
    assert_eq!(benjamini_hochberg(&p, 0.05), [true, false, false, false]);
    // At q = 0.2 (thresholds 0.05, 0.1, 0.15, 0.2) all four are.
    assert_eq!(benjamini_hochberg(&p, 0.2), [true, true, true, true]);
}
