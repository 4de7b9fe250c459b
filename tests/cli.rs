//! The `rampart` binary end to end: train, resume, eval, inspect, attack with saved examples,
//! certify and predict, one JSON schema per command across model kinds, flags derived from the
//! config, and bad input.

mod common;

use clap::Parser;
use common::{failed, json, ok, rampart, top_keys};
use rampart::cli::{Cli, Command};
use rampart::train::config::{Mode, PgdMode, TrainConfig};

#[test]
fn train_eval_inspect_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "epochs = 5\nout = \"ignored\"\n[model]\narch = \"mlp\"\n[data]\ndataset = \"synthetic\"\nsynthetic_size = 800\n",
    )
    .unwrap();
    let out = rampart(
        &[
            "train", "--config", "c.toml", "--epochs", "2", "--out", "run", "--device", "flex",
            "--seed", "3",
        ],
        dir.path(),
    );
    let stdout = ok(&out);
    assert!(stdout.contains("epoch 2/2"), "{stdout}");
    assert!(
        !stdout.contains("epoch 3/"),
        "flag must override the config's epochs"
    );
    let model = dir.path().join("run/model.safetensors");
    assert!(model.is_file());
    assert!(!dir.path().join("ignored").exists());

    let v = json(&rampart(
        &[
            "eval",
            "--model",
            "run/model.safetensors",
            "--dataset",
            "synthetic",
            "--device",
            "flex",
            "--json",
        ],
        dir.path(),
    ));
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(acc > 0.8, "{v}");
    assert_eq!(v["confusion"].as_array().unwrap().len(), 10);
    let total: u64 = v["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()))
        .sum();
    assert_eq!(total, v["examples"].as_u64().unwrap());

    let human = ok(&rampart(
        &[
            "eval",
            "--model",
            "run/model.safetensors",
            "--dataset",
            "synthetic",
            "--device",
            "flex",
        ],
        dir.path(),
    ));
    assert!(
        human.contains("clean accuracy") && human.contains("confusion matrix"),
        "{human}"
    );

    let v = json(&rampart(
        &["inspect", "--model", "run/model.safetensors", "--json"],
        dir.path(),
    ));
    // 784*256+256 + 256*256+256 + 256*10+10
    assert_eq!(v["parameters"], 269_322);
    assert_eq!(v["spec"]["arch"], "mlp");
    assert_eq!(v["config"]["epochs"], 2);
    assert_eq!(v["config"]["model"]["arch"], "mlp");
    assert_eq!(v["summary"]["epochs"], 2);
    assert!(
        v["summary"]["dataset"]
            .as_str()
            .unwrap()
            .contains("SYNTHETIC")
    );
}

/// `--resume` on the command line continues a run from its checkpoint.
#[test]
fn train_resumes_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let args = |epochs: &'static str| {
        vec![
            "train",
            "--arch",
            "mlp",
            "--dataset",
            "synthetic",
            "--synthetic-size",
            "400",
            "--device",
            "flex",
            "--out",
            "run",
            "--epochs",
            epochs,
        ]
    };
    ok(&rampart(&args("1"), dir.path()));
    let e = failed(&rampart(&args("2"), dir.path()));
    assert!(e.contains("--resume"), "{e}");
    let mut resume = args("2");
    resume.push("--resume");
    let out = rampart(&resume, dir.path());
    let stdout = ok(&out);
    assert!(
        stdout.contains("epoch 2/2") && !stdout.contains("epoch 1/2"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming after epoch 1"));
    let lines = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = failed(&rampart(
        &["eval", "--model", "nope.safetensors", "--device", "flex"],
        dir.path(),
    ));
    assert!(e.contains("nope.safetensors: model file not found"), "{e}");

    let e = failed(&rampart(
        &["train", "--lr", "-0.5", "--dataset", "synthetic"],
        dir.path(),
    ));
    assert!(e.contains("lr must be a positive number"), "{e}");

    let e = failed(&rampart(&["train", "--config", "missing.toml"], dir.path()));
    assert!(e.contains("missing.toml"), "{e}");

    let e = failed(&rampart(&["train", "--arch", "resnet"], dir.path()));
    assert!(e.contains("resnet"), "{e}");

    let e = failed(&rampart(
        &[
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            "no/such/dir",
            "--device",
            "flex",
        ],
        dir.path(),
    ));
    assert!(
        e.contains("no/such/dir") && e.contains("fetch-data.sh"),
        "{e}"
    );
    // A key of another mode is refused, naming the mode's keys.
    let e = failed(&rampart(
        &["train", "--mode", "pgd", "--sigma", "0.3"],
        dir.path(),
    ));
    assert!(e.contains("sigma") && e.contains("\"pgd\""), "{e}");
}

/// Every config key comes out of its flag into the resolved config, at its place in the
/// nested layout; the old flag names still work; a flag's kind change drops the file's keys
/// of the other kind.
#[test]
fn flags_set_the_config_keys_they_name() {
    let resolve = |args: &[&str]| -> Result<TrainConfig, String> {
        let mut argv = vec!["rampart", "train"];
        argv.extend(args);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Train(t) => t.resolve().map_err(|e| e.to_string()),
            _ => unreachable!(),
        }
    };
    let cfg = resolve(&[
        "--mode",
        "pgd",
        "--epsilon",
        "0.2",
        "--steps",
        "3",
        "--alpha",
        "0.05",
        "--robust-eval-size",
        "7",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--momentum",
        "0.5",
        "--weight-decay",
        "0.001",
        "--schedule",
        "step",
        "--step-epochs",
        "2",
        "--gamma",
        "0.5",
        "--arch",
        "mlp",
        "--normalize",
        "false",
        "--dataset",
        "synthetic",
        "--synthetic-size",
        "100",
        "--train-limit",
        "50",
        "--eval-limit",
        "20",
        "--batch-size",
        "16",
        "--epochs",
        "3",
        "--seed",
        "9",
        "--device",
        "flex",
        "--out",
        "x",
    ])
    .unwrap();
    let v = serde_json::to_value(&cfg).unwrap();
    let expect = [
        (
            "mode",
            serde_json::json!({"kind": "pgd", "epsilon": 0.2, "steps": 3, "alpha": 0.05, "robust_eval_size": 7}),
        ),
        (
            "optimizer",
            serde_json::json!({"kind": "sgd", "lr": 0.01, "momentum": 0.5, "weight_decay": 0.001}),
        ),
        (
            "schedule",
            serde_json::json!({"kind": "step", "step_epochs": 2, "gamma": 0.5}),
        ),
        (
            "model",
            serde_json::json!({"arch": "mlp", "normalize": false}),
        ),
        (
            "data",
            serde_json::json!({"dataset": "synthetic", "synthetic_size": 100, "train_limit": 50, "eval_limit": 20}),
        ),
    ];
    for (key, want) in expect {
        assert_eq!(v[key], want, "{key}");
    }
    assert_eq!((cfg.batch_size, cfg.epochs, cfg.seed), (16, 3, 9));
    // The flat layout's flag names.
    let old = resolve(&[
        "--mode",
        "trades",
        "--attack-steps",
        "4",
        "--trades-beta",
        "2",
    ])
    .unwrap();
    assert_eq!(old.mode.pgd_steps().unwrap().0, 4);
    // A config file's pgd keys give way when a flag chooses another mode's kind.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "[mode]\nkind = \"pgd\"\nepsilon = 0.3\nsteps = 5\nalpha = 0.1\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let trades = resolve(&["--config", path, "--mode", "gaussian", "--sigma", "0.4"]).unwrap();
    assert_eq!(trades.sigma(), Some(0.4));
    let kept = resolve(&["--config", path, "--epsilon", "0.2"]).unwrap();
    assert_eq!(
        kept.mode,
        Mode::Pgd(PgdMode {
            epsilon: 0.2,
            steps: 5,
            alpha: Some(0.1),
            ..PgdMode::default()
        })
    );
    let e = resolve(&["--epochs", "x"]).unwrap_err();
    assert!(e.contains("--epochs"), "{e}");
    let e = resolve(&["--seed", "99999999999999999999999"]).unwrap_err();
    assert!(e.contains("--seed"), "{e}");
}

/// A noise-trained model certified and predicted end to end: sigma defaults from its
/// metadata, the TSV rows agree with the summary, and PREDICT names the right classes.
#[test]
fn certify_and_predict_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    ok(&rampart(
        &[
            "train",
            "--arch",
            "mlp",
            "--dataset",
            "synthetic",
            "--synthetic-size",
            "800",
            "--epochs",
            "2",
            "--mode",
            "gaussian",
            "--sigma",
            "0.25",
            "--out",
            "run",
            "--device",
            "flex",
        ],
        dir.path(),
    ));
    let common = [
        "--model",
        "run/model.safetensors",
        "--dataset",
        "synthetic",
        "--device",
        "flex",
        "--limit",
        "6",
        "--skip",
        "3",
        "--batch",
        "256",
    ];
    let mut args = vec![
        "certify", "--n0", "50", "--n", "400", "--alpha", "0.01", "--out", "cert.tsv", "--json",
    ];
    args.extend(common);
    let v = json(&rampart(&args, dir.path()));
    // No --sigma: the training sigma from the model's metadata.
    assert_eq!(v["summary"]["sigma"], 0.25);
    let tsv = std::fs::read_to_string(dir.path().join("cert.tsv")).unwrap();
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines[0], "idx\tlabel\tpredict\tradius\tcorrect\ttime");
    assert_eq!(lines.len(), 7);
    let rows: Vec<(usize, i64, i64, f64, bool)> = lines[1..]
        .iter()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (
                c[0].parse().unwrap(),
                c[1].parse().unwrap(),
                c[2].parse().unwrap(),
                c[3].parse().unwrap(),
                c[4] == "1",
            )
        })
        .collect();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 3, 6, 9, 12, 15]
    );
    for &(idx, label, predict, radius, correct) in &rows {
        assert_eq!(correct, predict == label, "row {idx}");
        assert_eq!(
            predict == -1,
            radius == 0.0,
            "row {idx}: abstain iff radius 0"
        );
    }
    assert!(dir.path().join("cert.png").is_file());
    assert!(!dir.path().join("cert.tsv.partial").exists());
    // The summary at each radius is the fraction of rows correct and certified that far.
    let summary = v["summary"]["certified_accuracy"].as_array().unwrap();
    assert_eq!(summary.len(), 5);
    for point in summary {
        let (r, acc) = (point[0].as_f64().unwrap(), point[1].as_f64().unwrap());
        let expect = rows.iter().filter(|x| x.4 && x.3 >= r).count() as f64 / rows.len() as f64;
        // The TSV rounds radii to 4 decimals (radius 0 is exact: abstentions).
        let near = r > 0.0 && rows.iter().any(|x| (x.3 - r).abs() < 1e-4);
        assert!(
            near || (acc - expect).abs() < 1e-12,
            "radius {r}: {acc} vs {expect}"
        );
    }
    // A noise-trained model on this easy set certifies most images at radius 0.
    assert!(summary[0][1].as_f64().unwrap() >= 0.5, "{v}");

    let mut args = vec!["predict", "--n", "200", "--alpha", "0.01", "--json"];
    args.extend(common);
    let v = json(&rampart(&args, dir.path()));
    let predictions = v["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 6);
    // PREDICT's classes are the ones CERTIFY certified (same model, noise, large margins).
    for (p, row) in predictions.iter().zip(&rows) {
        assert_eq!(p["idx"].as_u64().unwrap() as usize, row.0);
        assert_eq!(p["label"].as_i64().unwrap(), row.1);
        if row.2 >= 0 && p["predict"].as_i64().unwrap() >= 0 {
            assert_eq!(p["predict"].as_i64().unwrap(), row.2, "{p}");
        }
    }
    let correct = predictions
        .iter()
        .filter(|p| p["predict"] == p["label"])
        .count() as f64;
    assert_eq!(v["accuracy"].as_f64().unwrap(), correct / 6.0);
    assert!(v["accuracy"].as_f64().unwrap() >= 0.5, "{v}");

    let e = failed(&rampart(
        &[
            "certify",
            "--model",
            "run/model.safetensors",
            "--sigma",
            "-1",
        ],
        dir.path(),
    ));
    assert!(e.contains("--sigma must be a positive number"), "{e}");
    let e = failed(&rampart(
        &[
            "certify",
            "--model",
            "run/model.safetensors",
            "--sigma",
            "0.25",
            "--alpha",
            "2",
        ],
        dir.path(),
    ));
    assert!(e.contains("--alpha must be in (0, 1)"), "{e}");
}

#[test]
fn attack_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::reference_path();
    let model = model.to_str().unwrap();
    let v = json(&rampart(
        &[
            "attack",
            "--model",
            model,
            "--attack",
            "fgsm,pgd",
            "--eps",
            "0.1",
            "--steps",
            "5",
            "--restarts",
            "2",
            "--limit",
            "40",
            "--device",
            "flex",
            "--save-examples",
            "adv",
            "--json",
        ],
        dir.path(),
    ));
    let (clean, robust) = (
        v["clean_accuracy"].as_f64().unwrap(),
        v["robust_accuracy"].as_f64().unwrap(),
    );
    // The clean-trained cnn: about 90% clean, almost nothing survives eps 0.1.
    assert!(clean > 0.8, "clean {clean}");
    assert!(robust <= 0.25, "robust {robust}");
    assert_eq!(v["examples"], 40);
    let after = v["after_each"].as_array().unwrap();
    assert_eq!(after.len(), 2);
    assert!(
        after[1]["robust_accuracy"].as_f64().unwrap()
            <= after[0]["robust_accuracy"].as_f64().unwrap()
    );
    assert_eq!(after[1]["robust_accuracy"].as_f64().unwrap(), robust);
    assert!(dir.path().join("adv/grid.png").is_file());

    // The saved examples: in the ball and the box, labels right, and every example marked
    // non-robust is misclassified by the model.
    let path = dir.path().join("adv/examples.safetensors");
    let (shape, clean_px) = common::tensor_f32(&path, "clean");
    let (_, adv_px) = common::tensor_f32(&path, "adversarial");
    assert_eq!(shape, [40, 1, 28, 28]);
    assert!(adv_px.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(
        clean_px
            .iter()
            .zip(&adv_px)
            .all(|(c, a)| (c - a).abs() <= 0.1 + 1e-6)
    );
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let labels: Vec<i64> = st
        .tensor("labels")
        .unwrap()
        .data()
        .chunks(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let flags: Vec<bool> = st
        .tensor("robust")
        .unwrap()
        .data()
        .iter()
        .map(|b| *b == 1)
        .collect();
    assert_eq!(flags.iter().filter(|f| **f).count() as f64 / 40.0, robust);
    let truth = common::fashion_test(1, 40);
    assert_eq!(labels, common::ints(truth.labels.clone()));
    let device = burn::tensor::Device::flex();
    let adv = burn::tensor::Tensor::<4>::from_data(
        burn::tensor::TensorData::new(adv_px, [40, 1, 28, 28]),
        &device,
    );
    let cnn = common::reference_cnn();
    let predicted = common::ints(cnn.forward(adv).argmax(1).squeeze_dim::<1>(1));
    for i in 0..40 {
        assert_eq!(flags[i], predicted[i] == labels[i], "example {i}");
    }

    let e = failed(&rampart(
        &["attack", "--model", model, "--eps", "-0.1"],
        dir.path(),
    ));
    assert!(e.contains("--eps must be a positive number"), "{e}");
    let e = failed(&rampart(
        &[
            "attack", "--model", model, "--eps", "0.1", "--target", "12", "--device", "flex",
        ],
        dir.path(),
    ));
    assert!(e.contains("--target 12"), "{e}");
    let e = failed(&rampart(
        &[
            "attack", "--model", model, "--eps", "5", "--device", "flex", "--limit", "4",
        ],
        dir.path(),
    ));
    assert!(
        e.contains("--eps") && e.contains("larger than the input domain"),
        "{e}"
    );
}

/// `eval`, `attack`, `certify`, `predict` and `inspect` print the same top-level keys for an
/// image model, an ensemble and a fusion model.
#[test]
fn one_json_schema_per_command_across_model_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for seed in ["1", "2"] {
        ok(&rampart(
            &[
                "train",
                "--arch",
                "mlp",
                "--dataset",
                "synthetic",
                "--synthetic-size",
                "300",
                "--epochs",
                "1",
                "--device",
                "flex",
                "--seed",
                seed,
                "--out",
                &format!("m{seed}"),
            ],
            d,
        ));
    }
    ok(&rampart(
        &[
            "ensemble",
            "create",
            "--strategy",
            "unanimous",
            "--device",
            "flex",
            "--out",
            "ens.toml",
            "m1/model.safetensors",
            "m2/model.safetensors",
        ],
        d,
    ));
    for (n, seed, file) in [("300", "1", "train.jsonl"), ("60", "2", "test.jsonl")] {
        ok(&rampart(
            &[
                "data",
                "synth-security",
                "--n",
                n,
                "--seed",
                seed,
                "--out",
                file,
            ],
            d,
        ));
    }
    ok(&rampart(
        &[
            "train",
            "--arch",
            "fusion",
            "--dataset",
            "records",
            "--train-records",
            "train.jsonl",
            "--test-records",
            "test.jsonl",
            "--dim",
            "8",
            "--epochs",
            "1",
            "--device",
            "flex",
            "--out",
            "fus",
        ],
        d,
    ));
    let kinds: [(&str, &[&str]); 3] = [
        ("m1/model.safetensors", &["--dataset", "synthetic"]),
        ("ens.toml", &["--dataset", "synthetic"]),
        ("fus/model.safetensors", &["--records", "test.jsonl"]),
    ];
    let commands: [&[&str]; 4] = [
        &["eval"],
        &["attack", "--eps", "0.05", "--steps", "2"],
        &["certify", "--sigma", "0.25", "--n0", "10", "--n", "50"],
        &["predict", "--sigma", "0.25", "--n", "50"],
    ];
    for command in commands {
        let mut schemas = Vec::new();
        for (model, data) in kinds {
            let mut args: Vec<&str> = command.to_vec();
            args.extend([
                "--model", model, "--device", "flex", "--limit", "8", "--json",
            ]);
            args.extend(data);
            let v = json(&rampart(&args, d));
            assert_eq!(v["data"]["examples"], 8, "{} {model}", command[0]);
            schemas.push((model, top_keys(&v)));
        }
        for (model, keys) in &schemas[1..] {
            assert_eq!(
                keys, &schemas[0].1,
                "{}: {model} vs {}",
                command[0], schemas[0].0
            );
        }
    }
    let inspected: Vec<Vec<String>> = kinds
        .iter()
        .map(|(m, _)| top_keys(&json(&rampart(&["inspect", "--model", m, "--json"], d))))
        .collect();
    assert!(inspected.windows(2).all(|w| w[0] == w[1]), "{inspected:?}");
    let kinds_seen: Vec<String> = kinds
        .iter()
        .map(|(m, data)| {
            let mut args = vec!["eval", "--model", m, "--device", "flex", "--json"];
            args.extend(*data);
            json(&rampart(&args, d))["model"]["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds_seen, ["image", "ensemble", "fusion"]);
}
