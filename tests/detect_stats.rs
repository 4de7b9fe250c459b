//! Shapiro-Wilk and two-sample Cramér-von Mises against scipy 1.17.1's values (numpy 2.4.6).
//! Each figure was printed by `scipy.stats.shapiro(x)` or `scipy.stats.cramervonmises_2samp(x,
//! y)` on the data written here or made by the generators below, whose Python twins are:
//!
//! ```python
//! def lcg(seed):
//!     state = seed
//!     while True:
//!         state = (state * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
//!         yield (state >> 11) / 9007199254740992.0
//! def normalish(n, seed):            # Irwin-Hall: 12 uniforms summed in order, minus 6
//!     g = lcg(seed); out = []
//!     for _ in range(n):
//!         s = 0.0
//!         for _ in range(12):
//!             s += next(g)
//!         out.append(s - 6.0)
//!     return out
//! def exponential(n, seed):
//!     g = lcg(seed)
//!     return [-math.log(1.0 - next(g)) for _ in range(n)]
//! def modseq(n):
//!     return [((i * 7919) % 101) / 10.0 for i in range(n)]
//! ```
//!
//! Tolerances: W and T to 1e-6 relative (the ports follow scipy's arithmetic, so they agree to
//! rounding); p-values to 1e-4 relative or 1e-8 absolute. The exact CvM p-values are ratios of
//! path counts and agree to rounding too; the asymptotic ones rest on a series that scipy cuts
//! at terms below 1e-7, which both sides do at the same term.

use rampart::detect::DetectError;
use rampart::detect::cvm::{CVM_EXACT_MAX, cramer_von_mises};
use rampart::detect::shapiro::{SHAPIRO_MAX_N, shapiro_wilk};

/// 64-bit LCG (Knuth's MMIX constants): the top 53 bits of each state as a uniform in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next_uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Below 2^53: the conversion and the division are exact.
        (self.0 >> 11) as f64 / 9007199254740992.0
    }
}

fn normalish(n: usize, seed: u64) -> Vec<f64> {
    let mut g = Lcg(seed);
    (0..n)
        .map(|_| {
            let mut s = 0.0;
            for _ in 0..12 {
                s += g.next_uniform();
            }
            s - 6.0
        })
        .collect()
}

fn exponential(n: usize, seed: u64) -> Vec<f64> {
    let mut g = Lcg(seed);
    (0..n).map(|_| -(1.0 - g.next_uniform()).ln()).collect()
}

fn modseq(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 7919) % 101) as f64 / 10.0).collect()
}

fn shifted(v: &[f64], by: f64) -> Vec<f64> {
    v.iter().map(|x| x + by).collect()
}

/// |a − b| within `tol` relative to b.
fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs()
}

/// A p-value within 1e-4 relative or 1e-8 absolute.
fn p_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= (1e-4 * b.abs()).max(1e-8)
}

fn check_shapiro(x: &[f64], w: f64, p: f64) {
    let r = shapiro_wilk(x).unwrap();
    assert!(close(r.w, w, 1e-6), "n = {}: {r:?}, scipy W {w}", x.len());
    assert!(p_close(r.p_value, p), "n = {}: {r:?}, scipy p {p}", x.len());
}

const S: [f64; 11] = [2.1, -0.4, 1.3, 0.7, -1.8, 0.2, 3.5, -0.9, 1.1, 0.05, -2.6];
const A: [f64; 20] = [
    0.61, 0.29, 0.06, 0.59, -1.73, -0.74, 0.51, -0.56, 0.39, 1.64, 0.05, -0.06, 0.64, -0.82, 0.37,
    1.77, 1.09, -1.28, 2.36, 1.31,
];

#[test]
fn shapiro_three_values_is_exact() {
    // shapiro([1.0, 2.0, 4.0]), shapiro([0.0, 0.0, 1.0]), shapiro([3.0, 1.0, 2.0]).
    check_shapiro(&[1.0, 2.0, 4.0], 0.9642857142857142, 0.6368868450289689);
    // Two equal values: W at its least, 0.75, and p 0 (scipy: 0.7500000000000002,
    // 7.771561172376096e-16, rounding).
    check_shapiro(&[0.0, 0.0, 1.0], 0.7500000000000002, 7.771561172376096e-16);
    // Equally spaced: W 1, p 1.
    check_shapiro(&[3.0, 1.0, 2.0], 1.0, 1.0);
}

#[test]
fn shapiro_small_samples_match_scipy() {
    // shapiro(S[:n]) for n = 4..11, S as in this file.
    let expected = [
        (0.9932345221643277, 0.973402701075219),
        (0.9726409753957868, 0.8919179253833671),
        (0.9870240134223072, 0.9806837588157035),
        (0.998223513898988, 0.9999588244573759),
        (0.9880230292517143, 0.99142018181226),
        (0.9915015224470426, 0.9977971840458925),
        (0.9875538631943497, 0.9928533083958105),
        (0.9927055079584173, 0.9993527538343938),
    ];
    for (n, (w, p)) in (4..=11).zip(expected) {
        check_shapiro(&S[..n], w, p);
    }
    // shapiro([1.0, 1.0, 1.0, 1.0, 2.0]): far from normal even at n = 5.
    check_shapiro(
        &[1.0, 1.0, 1.0, 1.0, 2.0],
        0.552181683501241,
        0.00013097817774592973,
    );
}

#[test]
fn shapiro_larger_samples_match_scipy() {
    // shapiro(A), A as in this file (and in tests/detect.rs).
    check_shapiro(&A, 0.983524970691557, 0.9711386147314252);
    // shapiro(normalish(20, 1)).
    check_shapiro(&normalish(20, 1), 0.9520517864206546, 0.3993128251742799);
    // shapiro(modseq(100)): evenly spread values, too flat for a normal.
    check_shapiro(&modseq(100), 0.9533209839960163, 0.001381986678336719);
    // shapiro(normalish(100, 2)).
    check_shapiro(&normalish(100, 2), 0.9768724552306809, 0.07565214694027357);
    // shapiro(normalish(1000, 3)).
    check_shapiro(&normalish(1000, 3), 0.9977136276398352, 0.18235395694576867);
    // shapiro(normalish(5000, 4)): the largest n taken.
    check_shapiro(&normalish(5000, 4), 0.9996299856967781, 0.49732054911351536);
    // shapiro([1e6 + v for v in normalish(30, 6)]): far from zero, as scipy's shift handles.
    check_shapiro(
        &shifted(&normalish(30, 6), 1e6),
        0.8961719451208936,
        0.006778508314064555,
    );
}

#[test]
fn shapiro_rejects_a_skewed_sample() {
    // shapiro(exponential(50, 5)).
    let x = exponential(50, 5);
    check_shapiro(&x, 0.7567813566324807, 1.0116985243149299e-07);
    assert!(shapiro_wilk(&x).unwrap().p_value < 1e-6);
}

#[test]
fn shapiro_refuses_what_it_cannot_test() {
    assert!(matches!(
        shapiro_wilk(&[1.0, 2.0]),
        Err(DetectError::TooFew {
            need: 3,
            got: 2,
            ..
        })
    ));
    assert!(matches!(
        shapiro_wilk(&[1.0, f64::NAN, 2.0, 3.0]),
        Err(DetectError::NotFinite { .. })
    ));
    assert!(matches!(
        shapiro_wilk(&[1.0, f64::INFINITY, 2.0, 3.0]),
        Err(DetectError::NotFinite { .. })
    ));
    // All equal: zero range, W undefined (scipy warns and returns 1, 1).
    assert!(matches!(
        shapiro_wilk(&[5.0; 8]),
        Err(DetectError::Invalid(_))
    ));
    assert!(matches!(
        shapiro_wilk(&[2.5; 3]),
        Err(DetectError::Invalid(_))
    ));
    // Past Royston's range.
    let big = normalish(SHAPIRO_MAX_N + 1, 4);
    assert!(matches!(shapiro_wilk(&big), Err(DetectError::Invalid(_))));
}

const X5: [f64; 5] = [0.31, 1.42, -0.57, 2.08, 0.95];
const Y7: [f64; 7] = [1.73, 2.64, 0.12, 3.05, 1.88, 2.41, 0.77];

fn check_cvm(x: &[f64], y: &[f64], statistic: f64, p: f64, exact: bool) {
    let r = cramer_von_mises(x, y).unwrap();
    let sizes = (x.len(), y.len());
    assert_eq!(r.exact, exact, "{sizes:?}: {r:?}");
    if statistic == 0.0 {
        assert!(r.statistic.abs() < 1e-12, "{sizes:?}: {r:?}");
    } else {
        assert!(
            close(r.statistic, statistic, 1e-6),
            "{sizes:?}: {r:?}, scipy T {statistic}"
        );
    }
    assert!(p_close(r.p_value, p), "{sizes:?}: {r:?}, scipy p {p}");
}

#[test]
fn cvm_exact_matches_scipy() {
    // cramervonmises_2samp(X5, Y7), and with the samples swapped (same T and p).
    check_cvm(&X5, &Y7, 0.23373015873015857, 0.2398989898989899, true);
    check_cvm(&Y7, &X5, 0.23373015873015857, 0.2398989898989899, true);
    // cramervonmises_2samp(X5, [v + 3 for v in Y7]): separated, p = 2/792 (two orderings as
    // extreme of C(12, 5)).
    let r = cramer_von_mises(&X5, &shifted(&Y7, 3.0)).unwrap();
    assert!(
        r.exact && p_close(r.p_value, 0.0025252525252525255),
        "{r:?}"
    );
    // The smallest samples: cramervonmises_2samp([1.0, 2.0], [3.0, 4.0]).
    check_cvm(&[1.0, 2.0], &[3.0, 4.0], 0.375, 0.3333333333333333, true);
    // At the largest exact sizes: cramervonmises_2samp(A[:19], [v + 0.8 for v in
    // normalish(20, 7)]) and cramervonmises_2samp(normalish(20, 8), normalish(20, 9)).
    check_cvm(
        &A[..19],
        &shifted(&normalish(20, 7), 0.8),
        0.10240665766981571,
        0.596008717123966,
        true,
    );
    check_cvm(
        &normalish(CVM_EXACT_MAX, 8),
        &normalish(CVM_EXACT_MAX, 9),
        0.08499999999999996,
        0.6949848679548346,
        true,
    );
}

#[test]
fn cvm_exact_with_ties_matches_scipy() {
    // cramervonmises_2samp([1.0, 2.0, 2.0, 3.5, 4.0], [2.0, 3.5, 3.5, 5.0, 6.0, 1.0, 7.0]):
    // midranks, a statistic that is not on the untied lattice.
    check_cvm(
        &[1.0, 2.0, 2.0, 3.5, 4.0],
        &[2.0, 3.5, 3.5, 5.0, 6.0, 1.0, 7.0],
        0.16706349206349214,
        0.39646464646464646,
        true,
    );
}

#[test]
fn cvm_identical_samples_show_no_difference() {
    // cramervonmises_2samp(X5, X5): T 0.0, p 1.0.
    check_cvm(&X5, &X5, 0.0, 1.0, true);
    // cramervonmises_2samp(normalish(50, 10), normalish(50, 10)): T 0.0, p 1.0.
    let x = normalish(50, 10);
    check_cvm(&x, &x, 0.0, 1.0, false);
}

#[test]
fn cvm_asymptotic_matches_scipy() {
    let x = normalish(50, 10);
    // cramervonmises_2samp(normalish(50, 10), normalish(80, 11)).
    check_cvm(
        &x,
        &normalish(80, 11),
        0.11376923076923262,
        0.5281460387813046,
        false,
    );
    // ... with the second sample shifted by 0.3 and by 1.5.
    check_cvm(
        &x,
        &shifted(&normalish(80, 11), 0.3),
        0.14034615384615634,
        0.4251178087057217,
        false,
    );
    check_cvm(
        &x,
        &shifted(&normalish(80, 11), 1.5),
        3.8270192307692312,
        1.155736173430455e-09,
        false,
    );
    // One sample past the exact limit is enough: cramervonmises_2samp(normalish(21, 12),
    // normalish(5, 13)).
    check_cvm(
        &normalish(21, 12),
        &normalish(5, 13),
        0.044871794871795156,
        0.9747410842092826,
        false,
    );
    // Many ties: cramervonmises_2samp(modseq(50), [v + 0.5 for v in modseq(80)]).
    check_cvm(
        &modseq(50),
        &shifted(&modseq(80), 0.5),
        0.07972596153846112,
        0.70327474144684,
        false,
    );
}

#[test]
fn cvm_refuses_what_it_cannot_test() {
    assert!(matches!(
        cramer_von_mises(&[1.0], &Y7),
        Err(DetectError::TooFew {
            need: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        cramer_von_mises(&X5, &[]),
        Err(DetectError::TooFew { got: 0, .. })
    ));
    assert!(matches!(
        cramer_von_mises(&X5, &[1.0, f64::NAN]),
        Err(DetectError::NotFinite { .. })
    ));
    assert!(matches!(
        cramer_von_mises(&[f64::NEG_INFINITY, 1.0], &Y7),
        Err(DetectError::NotFinite { .. })
    ));
}
