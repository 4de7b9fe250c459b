//! Differential privacy: the Rényi accountant against Opacus 1.6.0's figures for the same
//! sampling rate, noise multiplier, steps and δ (computed with
//! `opacus.accountants.analysis.rdp.compute_rdp` and `get_privacy_spent` over
//! `RDPAccountant.DEFAULT_ALPHAS`; the script is in the test's comments below).

use rampart::privacy::accountant::{self, default_orders, rdp_step};

// from opacus.accountants.analysis import rdp as R
// from opacus.accountants import RDPAccountant
// rdp = R.compute_rdp(q=q, noise_multiplier=s, steps=steps, orders=RDPAccountant.DEFAULT_ALPHAS)
// R.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=d)
const OPACUS: [(f64, f64, u64, f64, f64, f64); 5] = [
    // q, sigma, steps, delta, epsilon, order
    (
        256.0 / 60000.0,
        1.1,
        60 * 235,
        1e-5,
        2.6003429386103023,
        8.1,
    ),
    (0.01, 1.0, 1000, 1e-5, 2.1013652716430564, 7.8),
    (128.0 / 60000.0, 0.8, 5 * 469, 1e-5, 1.5895289705402398, 7.3),
    (0.1, 4.0, 100, 1e-6, 1.2282987301348232, 18.0),
    (0.005, 2.0, 10000, 1e-5, 1.0988757833524172, 16.0),
];

// R._compute_rdp(q, s, alpha): integer and fractional orders.
const STEPS: [(f64, f64, f64, f64); 4] = [
    (0.01, 1.0, 2.5, 0.00021757533233085147),
    (0.01, 1.0, 8.0, 0.0008936439076060279),
    (0.05, 0.7, 3.3, 0.07864728734929496),
    (0.3, 1.5, 17.0, 2.5005952319708973),
];

#[test]
fn the_accountant_gives_opacus_epsilons() {
    assert_eq!(default_orders().len(), 99 + 52);
    for (q, sigma, steps, delta, eps, order) in OPACUS {
        let spent = accountant::epsilon(q, sigma, steps, delta);
        assert!(
            (spent.epsilon - eps).abs() < 1e-6 * eps,
            "q {q}, sigma {sigma}, {steps} steps: epsilon {} where Opacus says {eps}",
            spent.epsilon
        );
        assert!((spent.order - order).abs() < 1e-9, "order {}", spent.order);
    }
}

#[test]
fn one_step_rdp_matches_opacus_at_integer_and_fractional_orders() {
    for (q, sigma, alpha, want) in STEPS {
        let got = rdp_step(q, sigma, alpha);
        assert!(
            (got - want).abs() < 1e-8 * want,
            "q {q}, sigma {sigma}, alpha {alpha}: {got} where Opacus says {want}"
        );
    }
}

#[test]
fn more_noise_or_fewer_steps_spend_less() {
    let e = |sigma, steps| accountant::epsilon(0.01, sigma, steps, 1e-5).epsilon;
    assert!(e(2.0, 1000) < e(1.0, 1000));
    assert!(e(1.0, 100) < e(1.0, 1000));
    assert!(
        accountant::epsilon(0.01, 0.0, 10, 1e-5)
            .epsilon
            .is_infinite()
    );
}
