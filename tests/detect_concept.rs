//! Concept drift from labelled feedback: DDM on synthetic error streams, macro-F1, and
//! `rampart detect concept` on Fashion-MNIST with swapped labels.

mod common;

use common::{failed, json, rampart, reference_path, serial};
use rampart::detect::concept::{Ddm, Level, macro_f1};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

#[test]
fn ddm_signals_a_rise_in_the_error_rate_and_not_a_steady_one() {
    // 20 streams of 3,000 outcomes, 10% errors, rising to 30% at 2,000 in the changed ones.
    let (mut steady_alarms, mut caught) = (0, 0);
    for seed in 0..20u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut steady = Ddm::new(30).unwrap();
        let mut changed = Ddm::new(30).unwrap();
        for i in 0..3000 {
            steady.observe(rng.random_bool(0.1));
            let level = changed.observe(rng.random_bool(if i < 2000 { 0.1 } else { 0.3 }));
            if level == Level::Drift {
                assert_eq!(changed.drifts.last(), Some(&(i + 1)));
            }
        }
        steady_alarms += usize::from(!steady.drifts.is_empty());
        caught += usize::from(changed.drifts.iter().any(|at| (2001..=2500).contains(at)));
    }
    // Most rises are caught within 500 outcomes (DDM watches the cumulative rate, so it is
    // slow: about 220 outcomes to move it 2 points here, and a false alarm shortly before the
    // change resets its baseline into the new concept); steady streams signal far less often
    // (the 3-sigma rule is checked at every outcome, so not never: the count is DDM's).
    eprintln!("DDM, 20 streams: {caught} rises caught, {steady_alarms} steady streams signalled");
    assert!(
        caught >= 15,
        "{caught} of 20 rises caught within 500 outcomes"
    );
    assert!(
        steady_alarms <= 10 && caught >= steady_alarms + 5,
        "{steady_alarms} steady streams signalled"
    );
    assert!(Ddm::new(1).is_err());
    // A model that makes no mistakes: p = s = 0 must not turn the first error into drift.
    let mut perfect = Ddm::new(30).unwrap();
    for _ in 0..200 {
        assert_eq!(perfect.observe(false), Level::Stable);
    }
    assert_eq!(perfect.observe(true), Level::Stable);
    assert!(perfect.drifts.is_empty());
}

#[test]
fn macro_f1_averages_each_class_f1() {
    // Class 0: tp 1, fn 1 → 2/3; class 1: tp 2, fp 1 → 4/5.
    let f1 = macro_f1(&[0, 0, 1, 1], &[0, 1, 1, 1]);
    assert!((f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12, "{f1}");
    assert_eq!(macro_f1(&[2, 2], &[2, 2]), 1.0);
}

#[test]
fn swapped_labels_are_found_soon_after_the_change() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let base = [
        "detect",
        "concept",
        "--model",
        m,
        "--limit",
        "3000",
        "--change-at",
        "1500",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.push("--json");
        json(&rampart(&args, dir.path()))
    };
    let swapped = run(&["--swap", "0,6"]);
    assert_eq!(swapped["false_alarms"], 0);
    let delay = swapped["delay"].as_u64().expect("drift after the change");
    assert!(delay <= 300, "{swapped}");
    let before = swapped["windows"][0]["accuracy"]["rate"].as_f64().unwrap();
    let after = swapped["windows"][4]["accuracy"]["rate"].as_f64().unwrap();
    assert!(after < before - 0.05, "{before} → {after}");
    let unchanged = run(&[]);
    assert_eq!(
        unchanged["drift_at"],
        serde_json::Value::Null,
        "{unchanged}"
    );
    for (extra, expected) in [
        (vec!["--swap", "3"], "--swap"),
        (vec!["--shift", "remove-class"], "remove-class"),
        (vec!["--shift", "noise"], "--strength"),
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let err = failed(&rampart(&args, dir.path()));
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
    let err = failed(&rampart(
        &[
            "detect",
            "concept",
            "--model",
            m,
            "--limit",
            "100",
            "--change-at",
            "100",
        ],
        dir.path(),
    ));
    assert!(err.contains("--change-at"), "{err}");
}
