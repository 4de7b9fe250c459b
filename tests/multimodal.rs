//! Multimodal fusion: JSONL validation, missing modalities, save/load in PyTorch layout,
//! fused versus single-modality accuracy on the SYNTHETIC task, and the commands end to end.

mod common;

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Distribution};
use common::serial;
use rampart::artifact::{self, AnyModel, Metadata, OpenOptions};
use rampart::attack::{Attack, Norm, Pgd};
use rampart::classifier::Classifier;
use rampart::classifier::fusion::NetworkView;
use rampart::data::records::{self as data, Record, Schema, SecuritySet};
use rampart::data::synth_security::synth_security;
use rampart::model::fusion::{Fusion, FusionSpec, Modality};
use rampart::train::config::{
    DataConfig, FusionModel, ModelConfig, Optimizer, RecordsData, TrainConfig,
};

fn schema() -> Schema {
    Schema {
        num_classes: 4,
        network_box: vec![(0.0, 1.0), (0.0, 100.0)],
    }
}

#[test]
fn bad_jsonl_lines_are_named_with_their_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"text": "hello", "network": [0.5, 50], "label": 1}"#;
    let cases = [
        ("{not json", "key must be a string"),
        (r#"{"text": "x", "label": 4}"#, "label 4 is out of range"),
        (r#"{"label": 0}"#, "no modality"),
        (
            r#"{"network": [0.5], "label": 0}"#,
            "network has 1 features, expected 2",
        ),
        (
            r#"{"network": [0.5, 200], "label": 0}"#,
            "network[1] = 200 is outside its box [0, 100]",
        ),
        (
            r#"{"bytes_b64": "@@@", "label": 0}"#,
            "bytes_b64 is not valid base64",
        ),
        (
            r#"{"text": "x", "label": 0, "colour": 1}"#,
            "unknown field `colour`",
        ),
        (r#"{"text": "x", "label": -1}"#, "invalid value"),
    ];
    for (bad, expected) in cases {
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, format!("{good}\n\n{good}\n{bad}\n{good}\n")).unwrap();
        let err = data::read_jsonl(&path, &schema()).unwrap_err().to_string();
        assert!(err.contains("r.jsonl:4:"), "{bad}: {err}");
        assert!(err.contains(expected), "{bad}: {err}");
    }
    let path = dir.path().join("empty.jsonl");
    std::fs::write(&path, "\n").unwrap();
    assert!(
        data::read_jsonl(&path, &schema())
            .unwrap_err()
            .to_string()
            .contains("no records")
    );
    let ok = dir.path().join("ok.jsonl");
    std::fs::write(&ok, format!("{good}\n")).unwrap();
    let set = data::load(&ok, &schema(), &Device::flex()).unwrap();
    // Network features are rescaled by the box: 50 in [0, 100] is 0.5.
    let net: Vec<f32> = set.network.into_data().try_to_vec().unwrap();
    assert_eq!(net, vec![0.5, 0.5]);
    assert!(!set.name.contains("SYNTHETIC"));
}

fn spec(fusion: Fusion, modalities: &[Modality]) -> FusionSpec {
    FusionSpec {
        class_names: data::SECURITY_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        network_box: data::unit_box(8),
        modalities: modalities.to_vec(),
        fusion,
        dim: 16,
    }
}

const ALL: [Modality; 3] = [Modality::Text, Modality::Bytes, Modality::Network];

fn synthetic_set(n: usize, seed: u64, device: &Device) -> SecuritySet {
    let records = synth_security(n, seed, 0.15, 0.1);
    data::to_set(
        &records,
        &spec(Fusion::Gated, &ALL).schema(),
        "test",
        device,
    )
    .unwrap()
}

#[test]
fn a_missing_modality_is_ignored_not_read() {
    let _guard = serial();
    let device = Device::flex();
    let set = synthetic_set(32, 1, &device);
    assert!(set.name.contains("SYNTHETIC"));
    for fusion in [Fusion::Concat, Fusion::Gated] {
        device.seed(3);
        let model = spec(fusion, &ALL).init(&device);
        // Network withheld: changing its values must not change any prediction.
        let without = set.only([true, true, false]);
        let mut scrambled = without.clone();
        scrambled.network = scrambled
            .network
            .random_like(Distribution::Uniform(0.0, 1.0));
        let a: Vec<f32> = model.forward(&without).into_data().try_to_vec().unwrap();
        let b: Vec<f32> = model.forward(&scrambled).into_data().try_to_vec().unwrap();
        assert_eq!(a, b, "{fusion:?}");
        assert!(a.iter().all(|v| v.is_finite()));
        // With the network present, the values do matter.
        let mut moved = set.clone();
        moved.network = moved.network.random_like(Distribution::Uniform(0.0, 1.0));
        let c: Vec<f32> = model.forward(&set).into_data().try_to_vec().unwrap();
        let d: Vec<f32> = model.forward(&moved).into_data().try_to_vec().unwrap();
        assert_ne!(c, d, "{fusion:?}");
        // Each modality alone still predicts.
        for keep in [
            [true, false, false],
            [false, true, false],
            [false, false, true],
        ] {
            let logits = model.forward(&set.only(keep));
            assert_eq!(logits.dims(), [32, 4]);
        }
    }
    // Records without some fields load and predict.
    let records = vec![Record {
        text: None,
        bytes_b64: None,
        network: Some(vec![0.5; 8]),
        label: 2,
        synthetic: false,
    }];
    let s = spec(Fusion::Gated, &ALL);
    let one = data::to_set(&records, &s.schema(), "one", &device).unwrap();
    assert_eq!(s.init(&device).forward(&one).dims(), [1, 4]);
}

#[test]
fn save_and_load_keep_the_logits_in_pytorch_layout() {
    let _guard = serial();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    device.seed(4);
    let s = spec(Fusion::Concat, &ALL);
    let model = s.init(&device);
    artifact::save_fusion(&model, &s, &Metadata::default(), &path).unwrap();
    let AnyModel::Fusion {
        net, spec: loaded, ..
    } = artifact::open(&path, OpenOptions::default(), &device)
        .unwrap()
        .model
    else {
        panic!("not a fusion model")
    };
    assert_eq!(loaded, s);
    let set = synthetic_set(8, 2, &device);
    let a: Vec<f32> = model.forward(&set).into_data().try_to_vec().unwrap();
    let b: Vec<f32> = net.forward(&set).into_data().try_to_vec().unwrap();
    assert_eq!(a, b);
    let bytes = std::fs::read(&path).unwrap();
    let found = artifact::layout::read_header(&bytes, &path)
        .unwrap()
        .tensors;
    // nn.Linear(16, 4) keeps its weight as [out, in]; nn.Conv1d(32, 16, 5) as [out, in, k].
    assert_eq!(found["head2.weight"].0, vec![4, 16]);
    assert_eq!(found["byte_conv.weight"].0, vec![16, 32, 5]);
    assert_eq!(found["text_embed.weight"].0, vec![data::VOCAB, 16]);
    // An image-model loader refuses it with a pointer to --records.
    let err = artifact::open_image(&path, None, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--records"), "{err}");
}

#[test]
fn network_attacks_stay_in_the_box_and_the_ball() {
    let _guard = serial();
    let device = Device::flex();
    device.seed(5);
    let model = spec(Fusion::Gated, &ALL).init(&device).valid();
    let set = synthetic_set(64, 3, &device);
    let view = NetworkView::new(&model, &set);
    // The view's cached text and bytes encodings give the model's own logits.
    let direct: Vec<f32> = model.forward(&set).into_data().try_to_vec().unwrap();
    let input = NetworkView::input(&set);
    let cached: Vec<f32> = view.logits(input.clone()).into_data().try_to_vec().unwrap();
    assert!(
        direct
            .iter()
            .zip(&cached)
            .all(|(a, b)| (a - b).abs() < 1e-5)
    );
    for norm in [Norm::Linf, Norm::L2] {
        let attack = Pgd::new(norm, 0.2, 5).unwrap().with_alpha(0.05).unwrap();
        let adv = attack.perturb(&view, &input, &set.labels, None);
        let v: Vec<f32> = adv.clone().into_data().try_to_vec().unwrap();
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        let delta = adv - set.network.clone();
        let size: Vec<f32> = match norm {
            Norm::Linf => delta.abs().max_dim(1),
            Norm::L2 => delta.powf_scalar(2.0).sum_dim(1).sqrt(),
        }
        .into_data()
        .try_to_vec()
        .unwrap();
        assert!(size.iter().all(|s| *s <= 0.2 + 1e-5), "{norm:?}");
        assert!(view.logits(input.clone()).dims() == [64, 4]);
    }
}

fn train_on(dir: &Path, name: &str, modalities: &[Modality]) -> f64 {
    let cfg = TrainConfig {
        model: ModelConfig::Fusion(FusionModel {
            modalities: modalities.to_vec(),
            dim: 32,
            ..FusionModel::default()
        }),
        data: DataConfig::Records(RecordsData {
            train_records: dir.join("train.jsonl"),
            test_records: dir.join("test.jsonl"),
            ..RecordsData::default()
        }),
        optimizer: Optimizer::Adam(rampart::train::config::Adam {
            lr: 3e-3,
            ..Default::default()
        }),
        epochs: 6,
        batch_size: 64,
        device: rampart::device::DeviceChoice::Flex,
        out: dir.join(name),
        ..TrainConfig::default()
    };
    let report = rampart::train::train(&cfg, &[], false, &mut []).unwrap();
    report.history.last().unwrap().eval_accuracy
}

#[test]
fn the_fused_model_beats_every_single_modality_model() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    data::write_jsonl(
        &dir.path().join("train.jsonl"),
        &synth_security(4000, 11, 0.15, 0.1),
    )
    .unwrap();
    data::write_jsonl(
        &dir.path().join("test.jsonl"),
        &synth_security(1000, 12, 0.15, 0.1),
    )
    .unwrap();
    let fused = train_on(dir.path(), "fused", &ALL);
    let singles: Vec<f64> = ALL
        .iter()
        .map(|m| train_on(dir.path(), &format!("{m:?}"), &[*m]))
        .collect();
    let best = singles.iter().cloned().fold(0.0, f64::max);
    assert!(
        fused >= best + 0.08,
        "fused {fused:.3} vs single modalities {singles:?}"
    );
    assert!(dir.path().join("fused/model.safetensors").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fused/metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        6
    );
}

#[test]
fn synth_train_eval_attack_certify_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = common::rampart(args, dir.path());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    for (n, seed, file) in [("1000", "1", "train.jsonl"), ("200", "2", "test.jsonl")] {
        let (ok, stdout, err) = run(&[
            "data",
            "synth-security",
            "--n",
            n,
            "--seed",
            seed,
            "--out",
            file,
        ]);
        assert!(ok && stdout.contains("SYNTHETIC"), "{err}");
    }
    std::fs::write(
        dir.path().join("f.toml"),
        "arch = \"fusion\"\ntrain_records = \"train.jsonl\"\ntest_records = \"test.jsonl\"\nmode = \"gaussian\"\nsigma = 0.25\ndim = 16\nepochs = 6\n",
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "train", "--config", "f.toml", "--device", "flex", "--out", "fus",
    ]);
    assert!(ok, "{err}");
    // Adversarial training on the embeddings runs and writes its model.
    let (ok, _, err) = run(&[
        "train",
        "--config",
        "f.toml",
        "--device",
        "flex",
        "--mode",
        "pgd-embeddings",
        "--attack-steps",
        "2",
        "--epochs",
        "1",
        "--out",
        "fus-adv",
    ]);
    assert!(ok, "{err}");
    assert!(dir.path().join("fus-adv/model.safetensors").is_file());
    // A fusion-only mode on an image model is refused by name.
    let (ok, _, err) = run(&["train", "--arch", "mlp", "--mode", "pgd-embeddings"]);
    assert!(!ok && err.contains("pgd-embeddings"), "{err}");
    let (ok, _, err) = run(&["train", "--config", "f.toml", "--arch", "cnn"]);
    assert!(!ok && err.contains("--arch"), "{err}");
    let model = "fus/model.safetensors";
    let (ok, stdout, err) = run(&[
        "eval",
        "--model",
        model,
        "--records",
        "test.jsonl",
        "--device",
        "flex",
        "--json",
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["data"]["name"]
            .as_str()
            .unwrap()
            .contains("SYNTHETIC")
    );
    assert_eq!(report["data"]["synthetic"], true);
    let alone = report["modalities"]["network"]["alone"].as_f64().unwrap();
    let fused = report["accuracy"].as_f64().unwrap();
    // Chance is 25%; six short epochs on 1,000 records reach about 41%, and the network
    // features alone (text and bytes withheld) give less.
    assert!(fused >= 0.35 && alone < fused, "{report}");
    for modality in ["network", "text", "bytes"] {
        let (ok, stdout, err) = run(&[
            "attack",
            "--model",
            model,
            "--records",
            "test.jsonl",
            "--device",
            "flex",
            "--modality",
            modality,
            "--eps",
            "0.1",
            "--steps",
            "3",
            "--json",
        ]);
        assert!(ok, "{modality}: {err}");
        let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let clean = r["clean_accuracy"].as_f64().unwrap();
        let robust = r["robust_accuracy"].as_f64().unwrap();
        assert!(clean >= 0.35, "{modality}: clean {clean}");
        assert!(
            robust < clean,
            "{modality}: robust {robust} vs clean {clean}"
        );
        // The byte embeddings carry most of what this model learnt: attacking them costs
        // more than 10 points.
        if modality == "bytes" {
            assert!(
                robust < clean - 0.1,
                "bytes: robust {robust} vs clean {clean}"
            );
        }
        assert_eq!(r["input"], modality);
    }
    // sigma defaults to the training sigma.
    let (ok, stdout, err) = run(&[
        "certify",
        "--model",
        model,
        "--records",
        "test.jsonl",
        "--device",
        "flex",
        "--n0",
        "10",
        "--n",
        "200",
        "--limit",
        "5",
        "--skip",
        "3",
        "--out",
        "cert.tsv",
        "--json",
    ]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["summary"]["sigma"], 0.25);
    assert!(r["data"]["name"].as_str().unwrap().contains("SYNTHETIC"));
    let tsv = std::fs::read_to_string(dir.path().join("cert.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 6);
    // --skip 3: records 0, 3, 6, 9, 12 of the test file, each with its own label.
    let records = data::read_jsonl(
        &dir.path().join("test.jsonl"),
        &spec(Fusion::Gated, &ALL).schema(),
    )
    .unwrap();
    for (line, want) in tsv.lines().skip(1).zip([0usize, 3, 6, 9, 12]) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols[0], want.to_string(), "{tsv}");
        assert_eq!(cols[1], records[want].label.to_string(), "{tsv}");
    }
    let (ok, stdout, err) = run(&["inspect", "--model", model]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("fusion (gated") && stdout.contains("SYNTHETIC"),
        "{stdout}"
    );
    // Without --records the error says what to pass.
    let (ok, _, err) = run(&["eval", "--model", model, "--device", "flex"]);
    assert!(!ok && err.contains("--records"), "{err}");
}
