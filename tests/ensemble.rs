//! Ensembles: each voting strategy on hand-built member outputs, attacks judged on the real
//! decision rule, certification through the decision rule, manifests with digests, and the
//! `ensemble create` command end to end.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rampart::attack::{Logits, Pgd, worst_case};
use rampart::certify::{BaseClassifier, Smooth, Stage};
use rampart::ensemble::{Ensemble, EnsembleError, Manifest, Strategy, decide, surrogate};
use rampart::model::{Arch, ModelSpec};
use rampart::store;

/// Burn's RNG is process-global: tests that seed it take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Member logits `[M, N, K]` from nested rows.
fn logits(members: &[&[&[f32]]]) -> Tensor<3> {
    let (m, n, k) = (members.len(), members[0].len(), members[0][0].len());
    let flat: Vec<f32> = members
        .iter()
        .flat_map(|rows| rows.iter().flat_map(|r| r.iter().copied()))
        .collect();
    Tensor::from_data(TensorData::new(flat, [m, n, k]), &Device::flex())
}

fn weights(w: &[f32]) -> Tensor<1> {
    Tensor::from_data(TensorData::new(w.to_vec(), [w.len()]), &Device::flex())
}

fn classes(t: Tensor<1, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
}

// Three members, four examples, three classes; member votes per example:
//   ex0: 0 0 0   (agree)
//   ex1: 0 1 1   (two against one)
//   ex2: 2 1 0   (three-way split)
//   ex3: 1 2 2   (member 0 is very confident in 1)
fn three_members() -> Tensor<3> {
    logits(&[
        &[
            &[3.0, 0.0, 0.0],
            &[2.0, 0.0, 0.0],
            &[0.0, 0.0, 1.0],
            &[0.0, 9.0, 0.0],
        ],
        &[
            &[2.0, 0.0, 0.0],
            &[0.0, 1.0, 0.0],
            &[0.0, 1.0, 0.0],
            &[0.0, 0.0, 1.0],
        ],
        &[
            &[1.0, 0.0, 0.0],
            &[0.0, 1.0, 0.0],
            &[1.0, 0.0, 0.0],
            &[0.0, 0.0, 1.0],
        ],
    ])
}

#[test]
fn weighted_majority_counts_weights_and_breaks_ties_to_the_lowest_class() {
    let equal = weights(&[1.0 / 3.0; 3]);
    // Equal weights: majority; the three-way split ties and goes to class 0.
    assert_eq!(
        classes(decide(Strategy::WeightedMajority, three_members(), &equal)),
        vec![0, 1, 0, 2]
    );
    // Member 0 outweighs the other two together: its vote wins everywhere.
    let heavy = weights(&[0.6, 0.2, 0.2]);
    assert_eq!(
        classes(decide(Strategy::WeightedMajority, three_members(), &heavy)),
        vec![0, 0, 2, 1]
    );
    // Exactly half against half: ties go to the lowest class (ex1: 0 over 1; ex3: 1 over
    // 2); in the split ex2 member 0's half (class 2) beats two quarters.
    let half = weights(&[0.5, 0.25, 0.25]);
    assert_eq!(
        classes(decide(Strategy::WeightedMajority, three_members(), &half)),
        vec![0, 0, 2, 1]
    );
    // Moving the weight to member 2 moves the decisions with it.
    let flipped = weights(&[0.25, 0.25, 0.5]);
    assert_eq!(
        classes(decide(
            Strategy::WeightedMajority,
            three_members(),
            &flipped
        )),
        vec![0, 1, 0, 2]
    );
}

#[test]
fn unanimous_says_no_decision_on_any_disagreement() {
    let w = weights(&[1.0 / 3.0; 3]);
    // "No decision" is the extra index K = 3.
    assert_eq!(
        classes(decide(Strategy::Unanimous, three_members(), &w)),
        vec![0, 3, 3, 3]
    );
}

#[test]
fn highest_confidence_follows_the_most_confident_member_even_in_the_minority() {
    let w = weights(&[1.0 / 3.0; 3]);
    // ex3: member 0 (softmax ≈ 1.0 on class 1) beats two members at ≈ 0.58 on class 2.
    // ex1: member 0's softmax on 0 is 0.79 against 0.58 for the others.
    // ex2: all three put 0.58 on their class: the first member (class 2) decides.
    assert_eq!(
        classes(decide(Strategy::HighestConfidence, three_members(), &w)),
        vec![0, 0, 2, 1]
    );
}

#[test]
fn mean_logits_and_mean_probs_can_disagree() {
    // Member 0 says [3, 0] (p0 = 0.953); two members say [0, 1] (p0 = 0.269).
    // Mean logits: (1, 0.67) -> class 0. Mean probs: p0 = 0.497 -> class 1.
    let l = logits(&[&[&[3.0, 0.0]], &[&[0.0, 1.0]], &[&[0.0, 1.0]]]);
    let w = weights(&[1.0 / 3.0; 3]);
    assert_eq!(
        classes(decide(Strategy::MeanLogits, l.clone(), &w)),
        vec![0]
    );
    assert_eq!(classes(decide(Strategy::MeanProbs, l.clone(), &w)), vec![1]);
    // The surrogate of mean_probs is the log of the mean probabilities.
    let s: Vec<f32> = surrogate(Strategy::MeanProbs, l, &w)
        .exp()
        .into_data()
        .try_to_vec()
        .unwrap();
    assert!(
        (s[0] - 0.4969).abs() < 1e-3 && (s[0] + s[1] - 1.0).abs() < 1e-5,
        "{s:?}"
    );
}

fn mlp(seed: u64, device: &Device) -> rampart::model::Classifier {
    device.seed(seed);
    ModelSpec::new(Arch::Mlp).init(device)
}

#[test]
fn attacks_on_an_ensemble_are_judged_on_its_decision_rule() {
    let _guard = serial();
    let device = Device::flex();
    let members = vec![mlp(1, &device), mlp(2, &device)];
    let ens = Ensemble::new(members, vec![1.0, 1.0], Strategy::Unanimous).unwrap();
    device.seed(9);
    let x = Tensor::<4>::random(
        [64, 1, 28, 28],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        &device,
    );
    // Labels that the differentiable surrogate gets right on every example.
    let y = ens.logits(x.clone()).argmax(1).squeeze_dim::<1>(1);
    let decided_right = ens
        .decide(x.clone())
        .equal(y.clone())
        .int()
        .sum()
        .into_scalar::<i64>();
    assert!(
        decided_right < 64,
        "two random members should disagree somewhere"
    );
    let out = worst_case(&ens, &x, &y, &[Pgd::fgsm(1e-4)], 1, None);
    let clean = out.clean_correct.int().sum().into_scalar::<i64>();
    // Clean accuracy is the decision rule's (no decision is wrong), not the surrogate's 64.
    assert_eq!(clean, decided_right);
    let robust = out.robust.int().sum().into_scalar::<i64>();
    assert!(robust <= clean);
}

#[test]
fn certification_goes_through_the_decision_rule() {
    let _guard = serial();
    let device = Device::flex();
    let single = mlp(4, &device);
    // Two copies of one model always agree: the unanimous ensemble is that model, and
    // "no decision" (index 10) never gets a vote.
    let twins = Ensemble::new(
        vec![single.clone(), single.clone()],
        vec![1.0, 1.0],
        Strategy::Unanimous,
    )
    .unwrap();
    assert_eq!(BaseClassifier::num_classes(&twins), 11);
    assert_eq!(twins.abstain_class(), Some(10));
    device.seed(5);
    let x = Tensor::<4>::random(
        [3, 1, 28, 28],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let smooth = |b| Smooth {
        base: b,
        sigma: 0.25,
        batch: 256,
        seed: 7,
    };
    let a = smooth(&single).sample_noise(&x, &[0, 1, 2], 256, Stage::Estimation);
    let b = Smooth {
        base: &twins,
        sigma: 0.25,
        batch: 256,
        seed: 7,
    }
    .sample_noise(&x, &[0, 1, 2], 256, Stage::Estimation);
    for (ra, rb) in a.iter().zip(&b) {
        assert_eq!(&rb[..10], &ra[..]);
        assert_eq!(rb[10], 0);
    }
    // Two different members disagree under noise: some votes land on "no decision".
    let split = Ensemble::new(
        vec![single, mlp(6, &device)],
        vec![1.0, 1.0],
        Strategy::Unanimous,
    )
    .unwrap();
    let c = Smooth {
        base: &split,
        sigma: 0.25,
        batch: 256,
        seed: 7,
    }
    .sample_noise(&x, &[0, 1, 2], 256, Stage::Estimation);
    assert!(c.iter().any(|r| r[10] > 0), "{c:?}");
    assert!(c.iter().all(|r| r.iter().sum::<u64>() == 256));
}

fn save_mlp(path: &Path, seed: u64) {
    let device = Device::flex();
    let spec = ModelSpec::new(Arch::Mlp);
    store::save_model(&mlp(seed, &device), &spec, &BTreeMap::new(), path).unwrap();
}

#[test]
fn manifest_round_trip_and_digest_mismatch_is_refused() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    save_mlp(&a, 1);
    save_mlp(&b, 2);
    let out = dir.path().join("ens.toml");
    let manifest = Manifest::describe(
        &out,
        &[(a.clone(), None), (b.clone(), None)],
        &[2.0, 1.0],
        Strategy::WeightedMajority,
        "hand",
    )
    .unwrap();
    manifest.write(&out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("path = \"a.safetensors\""), "{text}");
    let read = Manifest::read(&out).unwrap();
    assert_eq!(read, manifest);
    let ens = read.load(&out, &Device::flex()).unwrap();
    assert_eq!(ens.weights.len(), 2);
    assert!((ens.weights[0] - 2.0 / 3.0).abs() < 1e-12);

    // A member replaced after the manifest was written: refused, naming it.
    save_mlp(&b, 3);
    match read.load(&out, &Device::flex()) {
        Err(EnsembleError::Digest { member, .. }) => assert_eq!(member, b),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a changed member must be refused"),
    }
    // JSON manifests work too.
    let json = dir.path().join("ens.json");
    Manifest::describe(&json, &[(a, None)], &[1.0], Strategy::MeanProbs, "hand")
        .unwrap()
        .write(&json)
        .unwrap();
    assert_eq!(Manifest::read(&json).unwrap().strategy, Strategy::MeanProbs);
}

#[test]
fn bad_weights_are_refused() {
    let device = Device::flex();
    let members = || vec![mlp(1, &device), mlp(2, &device)];
    for w in [
        vec![1.0],
        vec![-1.0, 1.0],
        vec![0.0, 0.0],
        vec![f64::NAN, 1.0],
    ] {
        assert!(
            Ensemble::new(members(), w.clone(), Strategy::WeightedMajority).is_err(),
            "{w:?}"
        );
    }
}

#[test]
fn ensemble_create_then_eval_attack_certify_accept_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    for (seed, name) in [("1", "m1"), ("2", "m2")] {
        let (ok, _, err) = run(&[
            "train",
            "--arch",
            "mlp",
            "--dataset",
            "synthetic",
            "--synthetic-size",
            "400",
            "--epochs",
            "1",
            "--seed",
            seed,
            "--device",
            "flex",
            "--out",
            name,
        ]);
        assert!(ok, "{err}");
    }
    let (ok, stdout, err) = run(&[
        "ensemble",
        "create",
        "--strategy",
        "weighted_majority",
        "--fit-weights",
        "--dataset",
        "synthetic",
        "--validation-size",
        "200",
        "--device",
        "flex",
        "--out",
        "ens.toml",
        "m1/model.safetensors",
        "m2/model.safetensors",
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("validation accuracy"), "{stdout}");
    let (ok, stdout, err) = run(&[
        "eval",
        "--model",
        "ens.toml",
        "--dataset",
        "synthetic",
        "--device",
        "flex",
        "--json",
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["arch"], "ensemble of 2 (weighted_majority)");
    let (ok, stdout, err) = run(&[
        "attack",
        "--model",
        "ens.toml",
        "--dataset",
        "synthetic",
        "--device",
        "flex",
        "--eps",
        "0.1",
        "--steps",
        "3",
        "--limit",
        "50",
        "--json",
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["robust_accuracy"].as_f64().unwrap() <= report["clean_accuracy"].as_f64().unwrap()
    );
    let (ok, _, err) = run(&[
        "certify",
        "--model",
        "ens.toml",
        "--dataset",
        "synthetic",
        "--device",
        "flex",
        "--sigma",
        "0.25",
        "--n0",
        "10",
        "--n",
        "100",
        "--limit",
        "4",
        "--out",
        "cert.tsv",
    ]);
    assert!(ok, "{err}");
    let tsv = std::fs::read_to_string(dir.path().join("cert.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 5, "{tsv}");
    // No member was trained with Gaussian noise: no sigma to default to.
    let (ok, _, err) = run(&[
        "certify",
        "--model",
        "ens.toml",
        "--dataset",
        "synthetic",
        "--device",
        "flex",
        "--n",
        "100",
        "--limit",
        "2",
    ]);
    assert!(!ok && err.contains("pass --sigma"), "{err}");

    let (ok, stdout, err) = run(&["inspect", "--model", "ens.toml"]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("weighted_majority") && stdout.contains("m2/model.safetensors"),
        "{stdout}"
    );
    // Tampering with a member after the fact is caught by every command.
    std::fs::copy(
        dir.path().join("m1/model.safetensors"),
        dir.path().join("m2/model.safetensors"),
    )
    .unwrap();
    let (ok, _, err) = run(&["eval", "--model", "ens.toml", "--dataset", "synthetic"]);
    assert!(!ok);
    assert!(err.contains("sha256") && err.contains("m2"), "{err}");
}

#[test]
fn ensemble_train_trains_every_member_and_fits_weights() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("e.toml"),
        "strategy = \"mean_probs\"\nvalidation_size = 200\nout = \"ens\"\n\
         [base]\narch = \"mlp\"\ndataset = \"synthetic\"\nsynthetic_size = 400\nepochs = 1\ndevice = \"flex\"\n\
         [[member]]\nseed = 1\n[[member]]\nmode = \"gaussian\"\nsigma = 0.25\nseed = 2\n",
    )
    .unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["ensemble", "train", "--config", "e.toml"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest_path = dir.path().join("ens/ensemble.toml");
    let manifest = Manifest::read(&manifest_path).unwrap();
    assert_eq!(manifest.strategy, Strategy::MeanProbs);
    assert_eq!(manifest.members.len(), 2);
    assert!(manifest.weights_from.contains("SYNTHETIC"));
    assert!(
        manifest.members[1]
            .path
            .ends_with("member-1-gaussian/model.safetensors")
    );
    let total: f64 = manifest.members.iter().map(|m| m.weight).sum();
    assert!((total - 1.0).abs() < 1e-9);
    for m in &manifest.members {
        let a = m.validation_accuracy.unwrap();
        assert!(
            (m.weight
                - a / (manifest
                    .members
                    .iter()
                    .map(|m| m.validation_accuracy.unwrap())
                    .sum::<f64>()))
            .abs()
                < 1e-9
        );
    }
    manifest.load(&manifest_path, &Device::flex()).unwrap();
    // A second run keeps the trained members.
    let again = run();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists, kept"));
}
