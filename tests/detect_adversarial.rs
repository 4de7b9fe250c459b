//! Adversarial-input detectors: the squeezers, the Mahalanobis algebra, conformal
//! calibration, fusion, ROC areas, the detector file, and `rampart detect` end to end on
//! Fashion-MNIST with the reference CNN.

mod common;

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use common::{failed, floats, json, rampart, reference_path, serial};
use nalgebra::DMatrix;
use rampart::classifier::{Classifier, Domain};
use rampart::detect::adversarial::squeeze::{median_filter, reduce_bits};
use rampart::detect::adversarial::{Detector, Kind, Mahalanobis, Method, Settings, Squeeze, Vote};
use rampart::detect::calibrate::{Calibration, Fusion, fuse};
use rampart::detect::roc::auc;
use rampart::detect::score::{alarm, p_alarm, score_batch};
use rampart::detect::store::{FORMAT, Fitted, Header};
use rampart::detect::validate::{Invalid, check};

fn tensor1(v: &[f32], d: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), d)
}

#[test]
fn median_filters_match_their_definition() {
    let d = Device::flex();
    d.seed(3);
    let (n, c, h, w) = (2, 2, 5, 6);
    let x = Tensor::<4>::random([n, c, h, w], Distribution::Uniform(0.0, 1.0), &d);
    let v = floats(x.clone());
    for k in [2usize, 3] {
        let got = floats(median_filter(x.clone(), k));
        // scipy.ndimage.median_filter(size=k): window offsets −1..=0 (k = 2) or −1..=1
        // (k = 3), edges reflected, the element of rank k²/2 of the sorted window.
        let lo = -1isize;
        let hi = if k == 2 { 0isize } else { 1 };
        for plane in 0..n * c {
            for r in 0..h {
                for q in 0..w {
                    let mut window = Vec::new();
                    for dr in lo..=hi {
                        for dq in lo..=hi {
                            let rr = (r as isize + dr).clamp(0, h as isize - 1) as usize;
                            let qq = (q as isize + dq).clamp(0, w as isize - 1) as usize;
                            window.push(v[plane * h * w + rr * w + qq]);
                        }
                    }
                    window.sort_by(f32::total_cmp);
                    let at = plane * h * w + r * w + q;
                    assert_eq!(got[at], window[k * k / 2], "k {k} plane {plane} ({r}, {q})");
                }
            }
        }
    }
}

#[test]
fn bit_depth_reduction_rounds_to_evenly_spaced_levels() {
    let d = Device::flex();
    let x = tensor1(&[0.0, 0.1, 0.49, 0.51, 0.8, 1.0], &d);
    assert_eq!(
        floats(reduce_bits(x.clone(), 1, 0.0, 1.0)),
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    );
    let two = floats(reduce_bits(x, 2, 0.0, 1.0));
    let expected = [0.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 1.0];
    for (g, e) in two.iter().zip(expected) {
        assert!((g - e).abs() < 1e-6, "{two:?}");
    }
    assert!(Squeeze::new(0, 2).is_err() && Squeeze::new(4, 4).is_err());
}

#[test]
fn conformal_alarms_are_exactly_the_p_values_at_most_the_rate() {
    let d = Device::flex();
    // 99 clean scores with ties: 1, 1, 2, 2, ..., 49, 49, 50.
    let clean: Vec<f32> = (0..99).map(|i| (i / 2 + 1) as f32).collect();
    let cal = Calibration::new(clean.clone(), &d).unwrap();
    let probes: Vec<f32> = (0..=110)
        .map(|i| i as f32 * 0.5)
        .chain([f32::NAN])
        .collect();
    let p = floats(cal.p_values(tensor1(&probes, &d)));
    for fpr in [0.01, 0.05, 0.1, 0.33] {
        let threshold = cal.threshold(fpr).unwrap();
        for (s, p) in probes.iter().zip(&p) {
            let expected = (1 + clean.iter().filter(|c| **c >= *s).count()) as f32 / 100.0;
            if !s.is_nan() {
                assert_eq!(*p, expected, "score {s}");
            }
            assert_eq!(
                alarm(*s, threshold),
                p_alarm(*p, fpr),
                "fpr {fpr} score {s} p {p}"
            );
        }
    }
    // 99 clean scores allow no alarm at 0.5%: an error that says how many are needed.
    let err = cal.threshold(0.005).unwrap_err().to_string();
    assert!(err.contains("199"), "{err}");
    assert!(Calibration::new(vec![1.0, f32::NAN], &d).is_err());
}

#[test]
fn fusion_matches_bonferroni_and_the_cauchy_combination() {
    let d = Device::flex();
    let p = [tensor1(&[0.01, 0.3], &d), tensor1(&[0.5, 0.4], &d)];
    let bonferroni = floats(fuse(Fusion::Bonferroni, &p));
    assert!((bonferroni[0] - 0.02).abs() < 1e-7 && (bonferroni[1] - 0.6).abs() < 1e-6);
    // 0.5 − atan(mean tan((0.5 − p)π))/π for p = (0.01, 0.5), by Python's math module.
    let cauchy = floats(fuse(Fusion::Cauchy, &p));
    assert!(
        (f64::from(cauchy[0]) - 0.019980299664053736).abs() < 1e-5,
        "{cauchy:?}"
    );
    // p = 1 (a score at or below every clean one) must not turn into an alarm: in f32,
    // (0.5 − 1)·π lies just past −π/2, where tan is +2·10⁷.
    let ones = [tensor1(&[1.0, 1.0, 0.2], &d), tensor1(&[1.0, 0.3, 1.0], &d)];
    for fused in floats(fuse(Fusion::Cauchy, &ones)) {
        assert!(fused > 0.3, "{fused}");
    }
}

#[test]
fn roc_area_counts_pairs_and_half_ties() {
    assert_eq!(auc(&[0.1, 0.2, 0.3], &[0.25, 0.35]), Some(5.0 / 6.0));
    assert_eq!(auc(&[1.0, 1.0], &[1.0]), Some(0.5));
    assert_eq!(auc(&[0.0], &[f32::NAN]), Some(1.0));
    assert_eq!(auc(&[], &[1.0]), None);
}

/// Features = the input itself (4 coordinates), logits = the features; two or four classes.
struct Identity {
    classes: usize,
}

impl Classifier<2> for Identity {
    type Input = Tensor<2>;
    fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        x.narrow(1, 0, self.classes)
    }
    fn features(&self, x: Tensor<2>) -> Option<Tensor<2>> {
        Some(x)
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn domain(&self) -> Domain {
        Domain {
            shape: vec![4],
            bounds: None,
            units: "units",
        }
    }
}

#[test]
fn mahalanobis_fits_class_means_and_the_shared_covariance() {
    let d = Device::flex();
    // Two classes with means (0,0,0,0) and (3,0,0,0) and the same spread.
    let rows = [
        [1.0f32, 0.0, 0.0, 1.0],
        [-1.0, 0.0, 0.0, -1.0],
        [0.0, 2.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 0.0],
        [4.0, 0.0, 0.0, 1.0],
        [2.0, 0.0, 0.0, -1.0],
        [3.0, 2.0, 1.0, 0.0],
        [3.0, -2.0, -1.0, 0.0],
    ];
    let x = Tensor::<2>::from_data(TensorData::new(rows.concat(), [8, 4]), &d);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 0, 0, 0, 1, 1, 1, 1], [8]), &d);
    let model = Identity { classes: 2 };
    let m = Mahalanobis::fit(&model, &x, &y, 3).unwrap();
    assert_eq!(
        floats(m.means.clone()),
        [0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0]
    );
    // Centred rows give Σ = (1/8)·Σ rowᵀrow, singular (coordinates 1 and 2 move together).
    let centred: Vec<[f64; 4]> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mean = if i < 4 { 0.0 } else { 3.0 };
            [
                f64::from(r[0]) - mean,
                f64::from(r[1]),
                f64::from(r[2]),
                f64::from(r[3]),
            ]
        })
        .collect();
    let sigma = DMatrix::from_fn(4, 4, |a, b| {
        centred.iter().map(|r| r[a] * r[b]).sum::<f64>() / 8.0
    });
    let pinv = sigma.clone().pseudo_inverse(1e-12).unwrap();
    let got = floats(m.precision.clone());
    for a in 0..4 {
        for b in 0..4 {
            assert!(
                (f64::from(got[a * 4 + b]) - pinv[(a, b)]).abs() < 1e-5,
                "{a},{b}"
            );
        }
    }
    // Scores: the smaller of the two squared distances, each (f − μ)ᵀ Σ⁺ (f − μ).
    let probe = [0.5f32, 1.0, -0.5, 2.0];
    let f = Tensor::<2>::from_data(TensorData::new(probe.to_vec(), [1, 4]), &d);
    let score = floats(m.score(&model, &f))[0];
    let dist = |mu: f64| {
        let v = nalgebra::DVector::from_fn(4, |i, _| {
            f64::from(probe[i]) - if i == 0 { mu } else { 0.0 }
        });
        (v.transpose() * &pinv * &v)[(0, 0)]
    };
    let expected = dist(0.0).min(dist(3.0));
    assert!(
        (f64::from(score) - expected).abs() < 1e-4 * expected.max(1.0),
        "{score} vs {expected}"
    );
    // A class without two examples cannot be fitted.
    let y1 = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 0, 0, 0, 0, 0, 0, 1], [8]), &d);
    let err = Mahalanobis::fit(&model, &x, &y1, 8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("class 1 has 1"), "{err}");
}

#[test]
fn validation_names_non_finite_and_out_of_box_inputs_and_refuses_a_wrong_shape() {
    let d = Device::flex();
    let domain = Domain {
        shape: vec![2, 2],
        bounds: Some((0.0, 1.0)),
        units: "pixels",
    };
    let x = Tensor::<3>::from_data(
        TensorData::new(
            vec![
                0.0,
                0.5,
                1.0,
                1.0, // valid, on the box's edges
                0.2,
                f32::NAN,
                0.3,
                0.4, // NaN
                0.2,
                1.01,
                0.3,
                0.4, // above the box
                -0.5,
                f32::NAN,
                0.3,
                0.4, // both: not finite wins
                f32::NEG_INFINITY,
                0.0,
                0.0,
                0.0, // infinite
            ],
            [5, 2, 2],
        ),
        &d,
    );
    let checked = check(&domain, x).unwrap();
    let codes: Vec<Option<Invalid>> = floats(checked.codes)
        .into_iter()
        .map(Invalid::from_code)
        .collect();
    assert_eq!(
        codes,
        [
            None,
            Some(Invalid::NotFinite),
            Some(Invalid::OutOfRange),
            Some(Invalid::NotFinite),
            Some(Invalid::NotFinite)
        ]
    );
    // Invalid rows become the box's lower corner; the valid one is untouched.
    let cleaned = floats(checked.x);
    assert_eq!(cleaned[..4], [0.0, 0.5, 1.0, 1.0]);
    assert!(cleaned[4..].iter().all(|v| *v == 0.0));
    let err = check(&domain, Tensor::<3>::zeros([2, 2, 3], &d))
        .err()
        .unwrap();
    assert!(err.to_string().contains("[2, 3]"), "{err}");
}

#[test]
fn a_saved_detector_loads_and_scores_identically() {
    let d = Device::flex();
    d.seed(9);
    let model = Identity { classes: 4 };
    let x = Tensor::<2>::random([64, 4], Distribution::Normal(0.0, 1.0), &d);
    let y = x.clone().argmax(1).squeeze_dim::<1>(1);
    let settings = Settings {
        squeeze: Squeeze::new(4, 0).unwrap(),
        vote: Vote::new(0.25, 8).unwrap(),
    };
    let kinds = [Kind::Msp, Kind::Entropy, Kind::Mahalanobis];
    let methods: Vec<Method> = kinds
        .iter()
        .map(|k| Method::fit(*k, &settings, &model, &x, &y, 16, 3).unwrap())
        .collect();
    let calibrations = methods
        .iter()
        .map(|m| Calibration::new(floats(m.score(&model, &x)), &d).unwrap())
        .collect();
    let fitted = Fitted {
        header: Header {
            format: FORMAT,
            family: "adversarial".into(),
            model_sha256: "ab".repeat(32),
            detectors: kinds.to_vec(),
            settings,
            fpr: 0.1,
            fusion: Fusion::Cauchy,
            fit_data: "toy".into(),
            fit_examples: 64,
            calibration_data: "toy".into(),
            calibration_ids: (0..64).collect(),
        },
        methods,
        calibrations,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.safetensors");
    fitted.save(&path).unwrap();
    let loaded = Fitted::load(&path, &d).unwrap();
    assert_eq!(loaded.header, fitted.header);
    let probe = Tensor::<2>::random([16, 4], Distribution::Normal(0.0, 2.0), &d);
    let (a, b) = (
        score_batch(&fitted, &model, &probe).unwrap(),
        score_batch(&loaded, &model, &probe).unwrap(),
    );
    assert_eq!(
        (a.scores.clone(), a.p_values.clone(), a.fused.clone()),
        (b.scores, b.p_values, b.fused)
    );
    // Validation comes first: a NaN row and an infinite row alarm as not finite, are scored
    // as zeros, and leave the other rows' figures as they were.
    let mut values = floats(probe.clone());
    values[4 * 3 + 1] = f32::NAN;
    values[4 * 7] = f32::INFINITY;
    let broken = Tensor::<2>::from_data(TensorData::new(values, [16, 4]), &d);
    let c = score_batch(&fitted, &model, &broken).unwrap();
    let zeros = score_batch(&fitted, &model, &Tensor::<2>::zeros([1, 4], &d)).unwrap();
    for i in 0..16 {
        if i == 3 || i == 7 {
            assert_eq!(c.invalid[i], Some(Invalid::NotFinite));
            assert_eq!(c.fused[i], 0.0);
            for (s, z) in c.scores.iter().zip(&zeros.scores) {
                assert_eq!(s[i], z[0]);
            }
        } else {
            assert_eq!(c.invalid[i], None);
            assert_eq!(c.fused[i], a.fused[i]);
        }
    }
    let rows = c.rows(&(0..16).collect::<Vec<_>>(), &[0; 16], &[f32::MAX; 3], 1e-9);
    assert!(rows[3].alarm && rows[7].alarm && !rows[0].alarm);
    // A damaged file: cut short, or a model file instead.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(
        dir.path().join("cut.safetensors"),
        &bytes[..bytes.len() - 9],
    )
    .unwrap();
    for (file, expected) in [
        (
            dir.path().join("cut.safetensors"),
            "not a Rampart detector file",
        ),
        (reference_path(), "no rampart.detector metadata"),
    ] {
        let err = Fitted::load(&file, &d).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
    // Hostile headers: each is refused by name, before anything is built from it.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let header = meta.metadata().as_ref().unwrap()["rampart.detector"].clone();
    for (from, to, expected) in [
        ("\"median\":0", "\"median\":1", "--median"),
        ("\"bits\":4", "\"bits\":40", "--squeeze-bits"),
        ("\"copies\":8", "\"copies\":0", "--vote-copies"),
        (
            "\"model_sha256\":\"abab",
            "\"model_sha256\":\"éabab",
            "SHA-256",
        ),
        (
            "[\"msp\",\"entropy\",",
            "[\"msp\",\"entropy\",\"msp\",",
            "each detector once",
        ),
        (
            "\"calibration_ids\":[0,",
            "\"calibration_ids\":[",
            "63 calibration examples",
        ),
        (
            "\"family\":\"adversarial\"",
            "\"family\":\"drift\"",
            "family",
        ),
    ] {
        assert!(header.contains(from), "{from} not in {header}");
        let metadata = std::collections::HashMap::from([(
            "rampart.detector".to_string(),
            header.replacen(from, to, 1),
        )]);
        let hostile = dir.path().join("hostile.safetensors");
        let bytes = safetensors::serialize(st.tensors(), Some(metadata)).unwrap();
        std::fs::write(&hostile, bytes).unwrap();
        let err = Fitted::load(&hostile, &d).unwrap_err().to_string();
        assert!(err.contains(expected), "{from} → {to}: {err}");
    }
}

#[test]
fn detect_fits_calibrates_and_measures_on_fashion_mnist() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let fit = json(&rampart(
        &[
            "detect",
            "fit",
            "--model",
            m,
            "--fit-limit",
            "2000",
            "--limit",
            "1000",
            "--fpr",
            "0.1",
            "--vote-copies",
            "8",
            "--out",
            "d.safetensors",
            "--json",
        ],
        p,
    ));
    assert_eq!(fit["calibration_examples"], 1000);
    assert_eq!(fit["detectors"].as_array().unwrap().len(), 6);
    // Evaluated on the calibration examples themselves: refused.
    let err = failed(&rampart(
        &[
            "detect",
            "evaluate",
            "--model",
            m,
            "--detector",
            "d.safetensors",
            "--limit",
            "10",
        ],
        p,
    ));
    assert!(err.contains("--offset 1000"), "{err}");
    let report = json(&rampart(
        &[
            "detect",
            "evaluate",
            "--model",
            m,
            "--detector",
            "d.safetensors",
            "--offset",
            "1000",
            "--limit",
            "600",
            "--steps",
            "10",
            "--apgd-steps",
            "10",
            "--roc",
            "roc.png",
            "--json",
        ],
        p,
    ));
    // Calibration holds on fresh test images (exchangeable with the calibration ones): no
    // detector's false-positive rate is above the upper end of its 99.9% interval around the
    // target; ties among clean scores and Bonferroni's fusion only make it smaller, so the
    // lower end is held for the tie-free scores only.
    let n = 600.0;
    let sd = (0.1f64 * 0.9 / n).sqrt();
    for rate in report["false_positives"].as_array().unwrap() {
        let (name, measured) = (rate[0].as_str().unwrap(), rate[1]["rate"].as_f64().unwrap());
        assert!(
            measured <= 0.1 + 3.3 * sd,
            "{name}: false-positive rate {measured}"
        );
        if ["mahalanobis", "squeeze"].contains(&name) {
            assert!(
                measured >= 0.1 - 3.3 * sd,
                "{name}: false-positive rate {measured}"
            );
        }
    }
    // Against PGD the best detector catches clearly more than its false-positive rate (the
    // lower end of its 95% interval above 15%, at a 10% rate) and ranks better than chance.
    let pgd = &report["attacks"][1];
    assert!(pgd["attack"].as_str().unwrap().starts_with("PGD-10 L∞"));
    let detectors = pgd["detectors"].as_array().unwrap();
    let low = detectors
        .iter()
        .map(|d| d["detection"]["low"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let auc = detectors
        .iter()
        .map(|d| d["auc"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(low > 0.15 && auc > 0.7, "{pgd}");
    // The adaptive attack on each detector with a gradient (its own, BPDA through squeezing,
    // EOT over the vote's noise) slips past it at least about as often as plain PGD at the
    // same radius does (the same budget, aimed at both goals).
    let adaptive = report["adaptive"].as_array().unwrap();
    // msp, entropy, squeeze, mahalanobis, vote, and the Bonferroni fusion of those (the
    // isolation forest has no gradient, so the fused attack is not held to PGD's rate).
    let names: Vec<&str> = adaptive
        .iter()
        .map(|a| a["detector"].as_str().unwrap())
        .collect();
    assert_eq!(
        names[..5],
        ["msp", "entropy", "squeeze", "mahalanobis", "vote"]
    );
    assert!(
        adaptive[2]["gradient"]
            .as_str()
            .unwrap()
            .starts_with("BPDA")
    );
    assert!(adaptive[4]["gradient"].as_str().unwrap().starts_with("EOT"));
    let fused = &adaptive[5];
    assert!(fused["detector"].as_str().unwrap().starts_with("fused"));
    assert!(
        fused["evaded"]["count"].as_u64().unwrap() <= fused["fooled"]["count"].as_u64().unwrap()
    );
    for a in &adaptive[..5] {
        let name = a["detector"].as_str().unwrap();
        let row = detectors.iter().find(|d| d["detector"] == name).unwrap();
        let pgd_evaded = pgd["success"]["rate"].as_f64().unwrap()
            * (1.0 - row["detection"]["rate"].as_f64().unwrap());
        let evaded = a["evaded"]["rate"].as_f64().unwrap();
        assert!(
            evaded >= pgd_evaded - 0.05,
            "{name}: adaptive {evaded}, PGD {pgd_evaded}"
        );
    }
    assert!(p.join("roc.png").exists());
    // The detector file of this model, scored on new images, written per example.
    let scored = json(&rampart(
        &[
            "detect",
            "score",
            "--model",
            m,
            "--detector",
            "d.safetensors",
            "--offset",
            "1000",
            "--limit",
            "50",
            "--per-example",
            "s.tsv",
            "--json",
        ],
        p,
    ));
    assert_eq!(scored["examples"], 50);
    let tsv = std::fs::read_to_string(p.join("s.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 51);
    assert!(tsv.starts_with("id\tlabel\tprediction\tmsp_score\tmsp_p\tmsp_alarm"));
    // Careless requests: one clear error each, the detector file never overwritten.
    let before = std::fs::read(p.join("d.safetensors")).unwrap();
    for (args, expected) in [
        (
            vec![
                "detect",
                "fit",
                "--model",
                m,
                "--fpr",
                "1.5",
                "--out",
                "e.safetensors",
            ],
            "--fpr",
        ),
        (
            vec![
                "detect",
                "fit",
                "--model",
                m,
                "--detectors",
                "msp,entropy,msp",
                "--out",
                "e.safetensors",
            ],
            "twice",
        ),
        (
            vec![
                "detect",
                "fit",
                "--model",
                m,
                "--median",
                "5",
                "--out",
                "e.safetensors",
            ],
            "--median",
        ),
        (
            vec![
                "detect",
                "fit",
                "--model",
                m,
                "--limit",
                "5",
                "--fpr",
                "0.01",
                "--fit-limit",
                "20",
                "--detectors",
                "msp",
                "--out",
                "e.safetensors",
            ],
            "calibration examples",
        ),
        (vec!["detect", "fit", "--model", m, "--out", m], "overwrite"),
        (
            vec!["detect", "score", "--model", m, "--detector", m],
            "no rampart.detector metadata",
        ),
        (
            vec![
                "detect",
                "score",
                "--model",
                m,
                "--detector",
                "d.safetensors",
                "--per-example",
                "d.safetensors",
            ],
            "overwrite",
        ),
    ] {
        let err = failed(&rampart(&args, p));
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(std::fs::read(p.join("d.safetensors")).unwrap(), before);
    // A detector fitted for another model (its recorded digest changed) is refused.
    let st = safetensors::SafeTensors::deserialize(&before).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&before).unwrap();
    let mut metadata = meta.metadata().clone().unwrap();
    let header = metadata.get_mut("rampart.detector").unwrap();
    let mut value: serde_json::Value = serde_json::from_str(header).unwrap();
    value["model_sha256"] = "0".repeat(64).into();
    *header = value.to_string();
    let other = safetensors::serialize(st.tensors(), Some(metadata)).unwrap();
    std::fs::write(p.join("other.safetensors"), other).unwrap();
    let err = failed(&rampart(
        &[
            "detect",
            "score",
            "--model",
            m,
            "--detector",
            "other.safetensors",
            "--limit",
            "5",
        ],
        p,
    ));
    assert!(err.contains("another model"), "{err}");
}

#[test]
fn the_isolation_forest_walks_its_trees_on_the_device_as_on_paper() {
    use rampart::detect::adversarial::isolation::{
        IsolationForest, NODES, TREES, average_path_length,
    };
    let d = Device::flex();
    d.seed(12);
    // sklearn's _average_path_length: c(256), c(3), c(10) (Python's math module).
    for (n, c) in [
        (256, 10.244770920119917),
        (3, 1.207392357589623),
        (10, 3.748880484475505),
    ] {
        assert!((average_path_length(n) - c).abs() < 1e-12, "c({n})");
    }
    let model = Identity { classes: 4 };
    let x = Tensor::<2>::random([300, 4], Distribution::Normal(0.0, 1.0), &d);
    let forest = IsolationForest::fit(&model, &x, 64, 7).unwrap();
    let probe = Tensor::<2>::from_data(
        TensorData::new(
            vec![
                0.0f32, 0.0, 0.0, 0.0, 0.3, -0.2, 0.1, 0.0, 6.0, -6.0, 6.0, 6.0,
            ],
            [3, 4],
        ),
        &d,
    );
    let got = floats(forest.score_features(probe.clone()));
    // The same walk on the host, from the tables.
    let feature: Vec<i64> = forest
        .feature
        .clone()
        .into_data()
        .convert::<i64>()
        .try_to_vec()
        .unwrap();
    let (threshold, leaf, value) = (
        floats(forest.threshold.clone()),
        floats(forest.leaf.clone()),
        floats(forest.value.clone()),
    );
    let rows = floats(probe);
    for (i, row) in rows.chunks(4).enumerate() {
        let mut total = 0.0f64;
        for t in 0..TREES {
            let mut node = 0;
            while leaf[t * NODES + node] == 0.0 {
                let f = feature[t * NODES + node] as usize;
                node = if row[f] < threshold[t * NODES + node] {
                    2 * node + 1
                } else {
                    2 * node + 2
                };
            }
            total += f64::from(value[t * NODES + node]);
        }
        let expected = 2f64.powf(-(total / TREES as f64) / forest.norm);
        assert!(
            (f64::from(got[i]) - expected).abs() < 1e-5,
            "row {i}: {} vs {expected}",
            got[i]
        );
    }
    // The far point is the easiest to isolate.
    assert!(got[2] > got[0] + 0.1 && got[2] > got[1] + 0.1, "{got:?}");
    assert!(got.iter().all(|s| *s > 0.0 && *s <= 1.0));
}
