//! The `rampart` binary end to end: train, eval, inspect, and bad input.

use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;
use rampart::cli::Cli;
use rampart::train::TrainConfig;

fn rampart(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run rampart")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure");
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn train_eval_inspect_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "arch = \"mlp\"\ndataset = \"synthetic\"\nsynthetic_size = 800\nepochs = 5\nout = \"ignored\"\n",
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

    let eval = ok(&rampart(
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
    let v: serde_json::Value = serde_json::from_str(&eval).unwrap();
    let acc = v["report"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.8, "{eval}");
    assert_eq!(v["report"]["confusion"].as_array().unwrap().len(), 10);
    let total: u64 = v["report"]["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()))
        .sum();
    assert_eq!(total, v["report"]["examples"].as_u64().unwrap());

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

    let inspect = ok(&rampart(
        &["inspect", "--model", "run/model.safetensors", "--json"],
        dir.path(),
    ));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    // 784*256+256 + 256*256+256 + 256*10+10
    assert_eq!(v["parameters"], 269_322);
    assert_eq!(v["spec"]["arch"], "mlp");
    assert_eq!(v["config"]["epochs"], 2);
    assert_eq!(v["summary"]["epochs"], 2);
    assert!(
        v["summary"]["dataset"]
            .as_str()
            .unwrap()
            .contains("SYNTHETIC")
    );
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
}

/// Every key of the training config can be set from the command line.
#[test]
fn every_config_key_is_a_flag() {
    let cmd = Cli::command();
    let train = cmd.find_subcommand("train").unwrap();
    let flags: Vec<String> = train
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let keys = toml::Table::try_from(TrainConfig {
        data_dir: Some("x".into()),
        train_limit: Some(1),
        eval_limit: Some(1),
        attack_alpha: Some(0.01),
        ..TrainConfig::default()
    })
    .unwrap();
    for key in keys.keys() {
        let flag = key.replace('_', "-");
        assert!(flags.contains(&flag), "config key {key} has no --{flag}");
    }
}

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
        "--sigma",
        "0.25",
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
    let v: serde_json::Value = serde_json::from_str(&ok(&rampart(&args, dir.path()))).unwrap();
    let tsv = std::fs::read_to_string(dir.path().join("cert.tsv")).unwrap();
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines[0], "idx\tlabel\tpredict\tradius\tcorrect\ttime");
    assert_eq!(lines.len(), 7);
    let idx: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(idx, ["0", "3", "6", "9", "12", "15"]);
    assert!(dir.path().join("cert.png").is_file());
    assert!(!dir.path().join("cert.tsv.partial").exists());
    let acc = &v["summary"]["certified_accuracy"];
    assert_eq!(acc.as_array().unwrap().len(), 5);
    // Certified accuracy can only fall as the radius grows; a noise-trained model on this easy
    // set certifies most images at radius 0.
    let at: Vec<f64> = acc
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "{at:?}");
    assert!(at[0] >= 0.5, "{at:?}");

    let mut args = vec!["predict", "--n", "200", "--alpha", "0.01", "--json"];
    args.extend(common);
    let v: serde_json::Value = serde_json::from_str(&ok(&rampart(&args, dir.path()))).unwrap();
    assert_eq!(v["predictions"].as_array().unwrap().len(), 6);
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
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fmnist-cnn.safetensors");
    let model = model.to_str().unwrap();
    let out = ok(&rampart(
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
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (clean, robust) = (
        v["clean_accuracy"].as_f64().unwrap(),
        v["robust_accuracy"].as_f64().unwrap(),
    );
    assert!(
        clean > 0.8 && robust < clean,
        "clean {clean} robust {robust}"
    );
    assert_eq!(v["images"], 40);
    assert!(dir.path().join("adv/grid.png").is_file());
    let bytes = std::fs::read(dir.path().join("adv/examples.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("adversarial").unwrap().shape(), &[40, 1, 28, 28]);
    let robust_flags = st
        .tensor("robust")
        .unwrap()
        .data()
        .iter()
        .filter(|b| **b == 1)
        .count();
    assert_eq!(robust_flags as f64 / 40.0, robust);

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
}
