//! `rampart explain` and `rampart faithfulness` end to end on the reference cnn and the
//! PyTorch-written fusion fixture; a withheld modality gets zero attributions; deletion
//! curves rank a true attribution above its reverse.

mod common;

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{Linear, json, rampart, reference_path};
use rampart::artifact::{self, AnyModel, OpenOptions};
use rampart::classifier::fusion::EmbeddingView;
use rampart::data::records;
use rampart::explain::faithfulness::curves;
use rampart::explain::{Baseline, Explainer, GradientTimesInput, IntegratedGradients, Rule};
use rampart::model::fusion::Modality;

/// `rampart COMMAND --model MODEL --device flex EXTRA...` in `dir`.
fn on_flex(dir: &Path, command: &str, model: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        command,
        "--model",
        model.to_str().unwrap(),
        "--device",
        "flex",
    ];
    args.extend_from_slice(extra);
    rampart(&args, dir)
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn explain_writes_a_heat_map_and_json_for_the_cnn_and_its_adversarial_version() {
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let out = on_flex(
        dir.path(),
        "explain",
        &model,
        &[
            "--index",
            "3",
            "--method",
            "ig",
            "--compare-adversarial",
            "--eps",
            "0.1",
            "--out",
            "ex",
            "--json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["example"], 3);
    let sides = v["sides"].as_array().unwrap();
    assert_eq!(sides.len(), 2);
    assert_eq!(sides[1]["input"], "adversarial");
    for side in sides {
        let map = &side["maps"][0];
        assert_eq!(map["values"].as_array().unwrap().len(), 784);
        // Integrated gradients are complete to a few percent of f(x) − f(0) at 50 steps.
        let sum: f64 = map["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum();
        let delta = map["completeness_delta"].as_f64().unwrap();
        assert!(delta.abs() < 0.05 * sum.abs().max(1.0), "{delta} of {sum}");
    }
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ex/explanation.json")).unwrap())
            .unwrap();
    assert_eq!(written["sides"], v["sides"]);
    let png = image::open(dir.path().join("ex/heatmap.png")).unwrap();
    assert_eq!((png.width(), png.height()), (2 * 224 + 8, 2 * (224 + 8)));
    // A PNG given with --input is explained unlabelled.
    let pixels: Vec<u8> = (0..784)
        .map(|i| {
            if (i % 28) > 8 && (i % 28) < 20 {
                200
            } else {
                0
            }
        })
        .collect();
    image::GrayImage::from_raw(28, 28, pixels)
        .unwrap()
        .save(dir.path().join("x.png"))
        .unwrap();
    let v = json(&on_flex(
        dir.path(),
        "explain",
        &model,
        &["--input", "x.png", "--method", "saliency", "--json"],
    ));
    assert!(v["example"].is_null() && v["label"].is_null(), "{v}");
    assert!(v["data"]["name"].as_str().unwrap().contains("x.png"));
    // Its adversarial version is pushed away from the model's own prediction, not from a
    // label it does not have.
    let v = json(&on_flex(
        dir.path(),
        "explain",
        &model,
        &[
            "--input",
            "x.png",
            "--method",
            "saliency",
            "--compare-adversarial",
            "--eps",
            "0.3",
            "--json",
        ],
    ));
    assert_ne!(
        v["sides"][0]["prediction"], v["sides"][1]["prediction"],
        "{v}"
    );
    // LIME names its patches and reports its fit.
    let out = on_flex(
        dir.path(),
        "explain",
        &model,
        &[
            "--index",
            "3",
            "--method",
            "lime",
            "--samples",
            "300",
            "--patch",
            "7",
        ],
    );
    let text = common::ok(&out);
    assert!(
        text.contains("LIME R²") && text.contains("top features: rows"),
        "{text}"
    );
}

#[test]
fn explain_refuses_bad_requests_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let base = ["explain", "--model", m, "--device", "flex"];
    let fails = |extra: &[&str], want: &str| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let err = common::failed(&rampart(&args, dir.path()));
        assert!(err.contains(want), "{extra:?}: {err}");
    };
    fails(&["--target", "10"], "--target 10");
    fails(&["--method", "smoothgrad", "--inner", "lime"], "--inner");
    fails(&["--method", "lime", "--patch", "0"], "--patch 0");
    fails(&["--input", "missing.png"], "missing.png");
    fails(&["--offset", "3"], "--index");
    fails(
        &["--method", "kernel-shap", "--samples", "2"],
        "--samples 2",
    );
    fails(&["--input", "x.txt"], "--input x.txt");
    fails(&["--steps", "5000"], "--steps");
    std::fs::write(dir.path().join("bad.png"), b"not a png").unwrap();
    fails(&["--input", "bad.png"], "bad.png");
    // Outputs never replace an input.
    std::fs::create_dir(dir.path().join("o")).unwrap();
    std::fs::copy(&model, dir.path().join("o/heatmap.png")).unwrap();
    fails(&["--out", "o"], "heatmap.png");
}

#[test]
fn explain_gives_each_modality_of_a_fusion_model_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixtures();
    let model = root.join("torch-fusion.safetensors");
    let recs = root.join("torch-fusion-records.jsonl");
    let out = on_flex(
        dir.path(),
        "explain",
        &model,
        &[
            "--records",
            recs.to_str().unwrap(),
            "--index",
            "0",
            "--method",
            "ig",
            "--out",
            "ex",
            "--json",
        ],
    );
    let v = json(&out);
    let maps = v["sides"][0]["maps"].as_array().unwrap();
    let modalities: Vec<&str> = maps
        .iter()
        .map(|m| m["modality"].as_str().unwrap())
        .collect();
    assert_eq!(modalities, ["text", "bytes", "network"]);
    let words: Vec<&str> = maps[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(
        words,
        ["urgent", "verify", "your", "account", "password", "now"]
    );
    let shares: f64 = maps.iter().map(|m| m["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    let html = std::fs::read_to_string(dir.path().join("ex/explanation.html")).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains(">urgent</span>"));
    assert!(dir.path().join("ex/bars.svg").exists() && !dir.path().join("ex/heatmap.png").exists());
    // LIME explains the words, the byte chunks and the network features.
    let out = on_flex(
        dir.path(),
        "explain",
        &model,
        &[
            "--records",
            recs.to_str().unwrap(),
            "--index",
            "0",
            "--method",
            "lime",
            "--samples",
            "400",
            "--json",
        ],
    );
    let v = json(&out);
    let maps = v["sides"][0]["maps"].as_array().unwrap();
    assert_eq!(maps.len(), 3);
    assert!(maps.iter().all(|m| m["lime"]["r2"].is_number()));
    // Shares count each interpretable feature once (a word however often it occurs, a byte
    // chunk once), from the surrogates' weights.
    let mass: Vec<f64> = maps
        .iter()
        .map(|m| {
            m["lime"]["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f[1].as_f64().unwrap().abs())
                .sum()
        })
        .collect();
    let total: f64 = mass.iter().sum();
    for (m, w) in maps.iter().zip(&mass) {
        assert!(
            (m["share"].as_f64().unwrap() - w / total).abs() < 1e-9,
            "{m}"
        );
    }
    // Every byte of a 16-byte chunk carries the chunk's weight.
    let bytes: Vec<f64> = maps[1]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(bytes.len() > 16 && bytes[..16].iter().all(|&b| b == bytes[0]));
    assert!(v["skipped"].is_null());
}

#[test]
fn a_withheld_modality_gets_zero_attributions() {
    let d = Device::flex();
    let root = fixtures();
    let opened = artifact::open(
        &root.join("torch-fusion.safetensors"),
        OpenOptions::default(),
        &d,
    )
    .unwrap();
    let AnyModel::Fusion { net, spec, .. } = opened.model else {
        panic!("not a fusion model");
    };
    let net = net.valid();
    let set = records::load(&root.join("torch-fusion-records.jsonl"), &spec.schema(), &d)
        .unwrap()
        .range(0, 1);
    let ig = IntegratedGradients {
        steps: 16,
        rule: Rule::GaussLegendre,
        baseline: Baseline::Zero,
        batch: 64,
    };
    let target = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), &d);
    let text_attributions = |set: &records::SecuritySet| {
        let view = EmbeddingView::new(&net, set, Modality::Text);
        let x = view.input().unwrap();
        common::floats(ig.attribute(&view, &x, &target))
    };
    let given = text_attributions(&set);
    assert!(given.iter().any(|v| v.abs() > 1e-6));
    let withheld = text_attributions(&set.only([false, true, true]));
    assert!(withheld.iter().all(|&v| v == 0.0));
}

#[test]
fn deletion_ranks_the_true_attribution_above_its_reverse() {
    let d = Device::flex();
    // Class 0's logit is Σ w_i x_i with weights of both signs.
    let w: Vec<f32> = vec![4.0, -3.0, 2.0, -1.0, 0.5, 3.5, -2.5, 1.5];
    let weights: Vec<f32> = w.iter().flat_map(|&wi| [wi, 0.0]).collect();
    let model = Linear::new(weights, vec![0.0, 0.0], &d);
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![0.9f32, 0.1, 0.8, 0.2, 0.7, 0.6, 0.3, 0.5], [1, 8]),
        &d,
    );
    let target = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), &d);
    let a = GradientTimesInput.attribute(&model, &x, &target);
    let c = |scores: Tensor<2>| curves(&model, &x, &target, scores, x.zeros_like(), 8, 4).unwrap();
    let (ours, reverse) = (c(a.clone()), c(-a));
    // Deleting the most positive contributions first drops the probability fastest; the curve
    // starts at the input and ends at the baseline whatever the order.
    assert!(ours.deletion_areas()[0] < reverse.deletion_areas()[0]);
    assert!(ours.insertion_areas()[0] > reverse.insertion_areas()[0]);
    assert_eq!(ours.deletion[0].len(), 9);
    assert!((ours.deletion[0][0] - reverse.deletion[0][0]).abs() < 1e-9);
    assert!((ours.deletion[0][8] - reverse.deletion[0][8]).abs() < 1e-9);
    assert!((ours.insertion[0][8] - ours.deletion[0][0]).abs() < 1e-6);
}

#[test]
fn faithfulness_measures_integrated_gradients_against_a_random_ranking() {
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let out = on_flex(
        dir.path(),
        "faithfulness",
        &model,
        &[
            "--limit",
            "16",
            "--method",
            "ig",
            "--resamples",
            "500",
            "--json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["deletion_area"]["n"], 16);
    // On the reference cnn, IG's ranking beats chance by a wide margin on both curves.
    assert!(v["deletion_gain"]["low"].as_f64().unwrap() > 0.1, "{v}");
    assert!(v["insertion_gain"]["low"].as_f64().unwrap() > 0.1, "{v}");
    // Completeness improves with the steps.
    let deltas: Vec<f64> = v["completeness"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mean_abs_delta"]["mean"].as_f64().unwrap())
        .collect();
    assert_eq!(deltas.len(), 3);
    assert!(deltas[0] > deltas[1] && deltas[1] > deltas[2], "{deltas:?}");
    let rho = v["noise_spearman"]["mean"].as_f64().unwrap();
    assert!(rho > 0.3 && rho <= 1.0, "{rho}");
}

/// An ensemble is explained through its surrogate like any image model, and LIME and the
/// faithfulness measures run on a fusion model's network features.
#[test]
fn ensembles_and_fusion_records_are_explained_and_measured() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for (i, src) in [reference_path(), fixtures().join("torch-cnn.safetensors")]
        .iter()
        .enumerate()
    {
        std::fs::copy(src, p.join(format!("m{i}.safetensors"))).unwrap();
    }
    common::ok(&rampart(
        &[
            "ensemble",
            "create",
            "--strategy",
            "mean_probs",
            "--out",
            "ens.toml",
            "m0.safetensors",
            "m1.safetensors",
        ],
        p,
    ));
    let v = json(&rampart(
        &[
            "explain",
            "--model",
            "ens.toml",
            "--index",
            "2",
            "--method",
            "gradient-x-input",
            "--device",
            "flex",
            "--json",
        ],
        p,
    ));
    assert_eq!(v["model"]["kind"], "ensemble");
    assert_eq!(
        v["sides"][0]["maps"][0]["values"].as_array().unwrap().len(),
        784
    );
    let model = fixtures().join("torch-fusion.safetensors");
    let recs = fixtures().join("torch-fusion-records.jsonl");
    let v = json(&on_flex(
        p,
        "faithfulness",
        &model,
        &[
            "--records",
            recs.to_str().unwrap(),
            "--method",
            "lime",
            "--samples",
            "200",
            "--modality",
            "network",
            "--resamples",
            "200",
            "--json",
        ],
    ));
    let n = v["deletion_area"]["n"].as_u64().unwrap();
    assert!(n >= 4, "{v}");
    assert_eq!(v["input"], "network");
    assert!(v["seed_spearman"]["mean"].is_number(), "{v}");
}
