//! Drift: the MMD permutation test against a direct computation, its false-alarm rate under
//! no drift on real features, `rampart detect drift` on shifted Fashion-MNIST, and a saved
//! drift reference scored by `rampart detect score`.

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use common::{
    failed, fashion_test, floats, json, ok, rampart, reference_cnn, reference_path, serial,
    tensor_f32,
};
use rampart::detect::drift::mmd::mmd_test;

/// Unbiased MMD² with k(a, b) = exp(−‖a − b‖²/(2σ²)), straight from the definition.
fn mmd2(x: &[Vec<f32>], y: &[Vec<f32>], sigma: f64) -> f64 {
    let k = |a: &[f32], b: &[f32]| {
        let d2: f64 = a.iter().zip(b).map(|(p, q)| f64::from(p - q).powi(2)).sum();
        (-d2 / (2.0 * sigma * sigma)).exp()
    };
    let within = |s: &[Vec<f32>]| {
        let n = s.len() as f64;
        let mut t = 0.0;
        for (i, a) in s.iter().enumerate() {
            for (j, b) in s.iter().enumerate() {
                if i != j {
                    t += k(a, b);
                }
            }
        }
        t / (n * (n - 1.0))
    };
    let cross: f64 = x.iter().flat_map(|a| y.iter().map(move |b| k(a, b))).sum();
    within(x) + within(y) - 2.0 * cross / (x.len() * y.len()) as f64
}

fn rows(t: &Tensor<2>) -> Vec<Vec<f32>> {
    let width = t.dims()[1];
    floats(t.clone())
        .chunks(width)
        .map(<[f32]>::to_vec)
        .collect()
}

#[test]
fn mmd_matches_its_definition_and_separates_shifted_samples() {
    let d = Device::flex();
    d.seed(1);
    let x = Tensor::<2>::random([40, 3], Distribution::Normal(0.0, 1.0), &d);
    let y = Tensor::<2>::random([30, 3], Distribution::Normal(0.0, 1.0), &d) + 1.0;
    let test = mmd_test(x.clone(), y.clone(), 199, 7).unwrap();
    let direct = mmd2(&rows(&x), &rows(&y), test.sigma);
    assert!(
        (test.statistic - direct).abs() < 1e-4,
        "{} vs {direct}",
        test.statistic
    );
    // A shift of one standard deviation in every coordinate: no permutation comes close.
    assert_eq!(test.p_value, 1.0 / 200.0);
    // Errors instead of panics.
    let one = Tensor::<2>::zeros([1, 3], &d);
    assert!(mmd_test(one, y.clone(), 10, 0).is_err());
    assert!(mmd_test(x, y, 0, 0).is_err());
}

#[test]
fn mmd_false_alarms_stay_at_the_nominal_rate_on_real_features() {
    let _turn = serial();
    let d = Device::flex();
    let model = reference_cnn();
    let set = fashion_test(1, 1000);
    let features = model.features(set.images.clone());
    // 40 random splits of the same 1,000 test images into two samples of 100: no drift.
    let trials = 40;
    let mut alarms = 0;
    for seed in 0..trials {
        d.seed(seed);
        let order = Tensor::<1>::random([1000], Distribution::Uniform(0.0, 1.0), &d).argsort(0);
        let pick = |from: usize| {
            features
                .clone()
                .select(0, order.clone().narrow(0, from, 100).reshape([100]))
        };
        let test = mmd_test(pick(0), pick(100), 99, seed).unwrap();
        alarms += usize::from(test.p_value <= 0.05);
    }
    // α + 3 sd of a binomial(40, 0.05) count: 2 + 3·1.38.
    assert!(alarms <= 6, "{alarms} false alarms in {trials} at α = 0.05");
}

#[test]
fn drift_is_found_in_shifted_fashion_mnist_and_not_in_an_unshifted_split() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let run_with = |shift: &str, strength: &str, test: &str| {
        json(&rampart(
            &[
                "detect",
                "drift",
                "--model",
                m,
                "--limit",
                "800",
                "--reference",
                "400",
                "--shift",
                shift,
                "--strength",
                strength,
                "--permutations",
                "99",
                "--feature-test",
                test,
                "--json",
            ],
            dir.path(),
        ))
    };
    let run = |shift: &str, strength: &str| run_with(shift, strength, "ks");
    let none = run("none", "0");
    assert_eq!(none["drift"], false, "{none}");
    assert_eq!(none["space"], "penultimate features");
    for (shift, strength) in [
        ("brightness", "0.1"),
        ("noise", "0.1"),
        ("remove-class", "0"),
    ] {
        let r = run(shift, strength);
        assert_eq!(r["drift"], true, "{shift}: {r}");
    }
    // Cramér-von Mises on each feature instead of KS: the same verdicts.
    for (shift, strength, drift) in [("none", "0", false), ("brightness", "0.1", true)] {
        let r = run_with(shift, strength, "cvm");
        assert_eq!(r["features"]["test"], "cvm");
        assert_eq!(r["drift"], drift, "{shift}: {r}");
        assert_eq!(
            r["features"]["drifted"].as_u64().unwrap() > 0,
            drift,
            "{shift}: {r}"
        );
    }
    // Removing a class shows in the predicted-class counts.
    let removed = run("remove-class", "0");
    assert!(
        removed["predicted_classes_chi_square"]["p_value"]
            .as_f64()
            .unwrap()
            < 0.01
    );
    assert!(removed["sample_examples"].as_u64().unwrap() < 400);
    for (args, expected) in [
        (vec!["--reference", "799"], "--reference"),
        (vec!["--reference", "100", "--alpha", "0"], "--alpha"),
        (vec!["--reference", "100", "--shift", "noise"], "--strength"),
    ] {
        let mut all = vec!["detect", "drift", "--model", m, "--limit", "800"];
        all.extend(args.iter().copied());
        let err = failed(&rampart(&all, dir.path()));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn a_saved_drift_reference_scores_exactly_as_the_two_sample_run_and_refuses_damage() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let reference = dir.path().join("reference.safetensors");
    let r = reference.to_str().unwrap();
    ok(&rampart(
        &[
            "detect",
            "fit",
            "--kind",
            "drift",
            "--model",
            m,
            "--limit",
            "400",
            "--permutations",
            "99",
            "--out",
            r,
        ],
        dir.path(),
    ));
    let (shape, _) = tensor_f32(&reference, "drift.features");
    assert_eq!(shape, [400, 1024]);
    let scored = json(&rampart(
        &[
            "detect",
            "score",
            "--detector",
            r,
            "--model",
            m,
            "--offset",
            "400",
            "--limit",
            "400",
            "--json",
        ],
        dir.path(),
    ));
    let pooled = json(&rampart(
        &[
            "detect",
            "drift",
            "--model",
            m,
            "--limit",
            "800",
            "--reference",
            "400",
            "--permutations",
            "99",
            "--json",
        ],
        dir.path(),
    ));
    for key in [
        "mmd",
        "features",
        "entropy_ks",
        "predicted_classes_chi_square",
        "p_value",
        "drift",
        "sample_examples",
        "reference_examples",
    ] {
        assert_eq!(scored[key], pooled[key], "{key}");
    }
    // Per-example rows are for adversarial-input detectors; a cut file names itself.
    let err = failed(&rampart(
        &[
            "detect",
            "score",
            "--detector",
            r,
            "--model",
            m,
            "--limit",
            "10",
            "--per-example",
            "rows.tsv",
        ],
        dir.path(),
    ));
    assert!(
        err.contains("--per-example") && err.contains("drift"),
        "{err}"
    );
    let bytes = std::fs::read(&reference).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = failed(&rampart(
        &[
            "detect",
            "score",
            "--detector",
            cut.to_str().unwrap(),
            "--model",
            m,
        ],
        dir.path(),
    ));
    assert!(err.contains("cut.safetensors"), "{err}");
    // A reference its own loader would refuse is not written.
    let err = failed(&rampart(
        &[
            "detect",
            "fit",
            "--kind",
            "drift",
            "--model",
            m,
            "--limit",
            "40",
            "--permutations",
            "0",
            "--out",
            "never.safetensors",
        ],
        dir.path(),
    ));
    assert!(err.contains("--permutations"), "{err}");
    assert!(!dir.path().join("never.safetensors").exists());
}
