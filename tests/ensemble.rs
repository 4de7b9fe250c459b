//! Ensembles: each voting strategy on hand-built member outputs, attacks judged on the real
//! decision rule, certification through the decision rule, manifests with digests, and the
//! `ensemble create` command end to end.

mod common;

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{bools, ints, serial};
use rampart::artifact::{self, AnyModel, ArtifactError, Manifest, Metadata, OpenOptions};
use rampart::attack::{Attack, Method, Norm, Pgd, worst_case};
use rampart::certify::{Smooth, Stage};
use rampart::classifier::{Classifier, Domain, ImageModel};
use rampart::model::ensemble::{decide, surrogate};
use rampart::model::{Arch, Ensemble, ImageNet, ImageSpec, Strategy};
use rampart::workload::Examples;

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

fn mlp(seed: u64, device: &Device) -> ImageNet {
    device.seed(seed);
    ImageSpec::new(Arch::Mlp).init(device)
}

fn pgd(eps: f64, steps: usize) -> Method {
    Method::Pgd(Pgd::new(Norm::Linf, eps, steps).unwrap())
}

#[test]
fn attacks_on_an_ensemble_are_judged_on_its_decision_rule() {
    let _guard = serial();
    let device = Device::flex();
    // A trained member and a random one: they agree on some of the bars.
    let dir = tempfile::tempdir().unwrap();
    let cfg = rampart::train::config::TrainConfig {
        model: rampart::train::config::ModelConfig::Mlp(Default::default()),
        data: rampart::train::config::DataConfig::Synthetic(Default::default()),
        epochs: 1,
        device: rampart::device::DeviceChoice::Flex,
        out: dir.path().to_path_buf(),
        ..Default::default()
    };
    let report = rampart::train::train(&cfg, &[], false, &mut []).unwrap();
    let (trained, _, _) = artifact::open_image(&report.model_path, None, &device).unwrap();
    let members = vec![trained, mlp(2, &device)];
    let ens = Ensemble::new(members, vec![1.0, 1.0], Strategy::Unanimous).unwrap();
    let x = rampart::data::synthetic(64, 9, &device).images;
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
    // An attack strong enough to break examples.
    let out = worst_case(&ens, &x, &y, &[pgd(0.3, 10)], 1, None);
    let clean = bools(out.clean_correct.clone());
    let robust = bools(out.robust.clone());
    // Clean accuracy is the decision rule's (no decision is wrong), not the surrogate's 64.
    assert_eq!(clean.iter().filter(|c| **c).count() as i64, decided_right);
    let broken = clean
        .iter()
        .zip(&robust)
        .filter(|(c, r)| **c && !**r)
        .count();
    assert!(broken > 0, "the attack broke nothing");
    // Every example reported broken is misjudged by the decision rule on its adversarial
    // example; every robust one is decided right.
    let decided = ints(ens.decide(out.adversarial));
    let labels = ints(y);
    for i in 0..64 {
        if clean[i] {
            assert_eq!(robust[i], decided[i] == labels[i], "example {i}");
        }
    }
}

/// A classifier whose surrogate is an mlp but whose decision is always class 0.
struct SteadyVote {
    surrogate: ImageNet,
}

impl Classifier<4> for SteadyVote {
    type Input = Tensor<4>;

    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.surrogate.forward(x)
    }

    fn decide(&self, x: Tensor<4>) -> Tensor<1, Int> {
        Tensor::zeros([x.dims()[0]], &x.device())
    }

    fn num_classes(&self) -> usize {
        10
    }

    fn domain(&self) -> Domain {
        Domain::pixels()
    }
}

/// When the attack flips the surrogate but not the vote, the example counts as robust.
#[test]
fn a_surrogate_that_flips_under_a_steady_vote_is_robust() {
    let _guard = serial();
    let device = Device::flex();
    let model = SteadyVote {
        surrogate: mlp(3, &device),
    };
    device.seed(4);
    let x = Tensor::<4>::random(
        [16, 1, 28, 28],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let y = Tensor::<1, Int>::zeros([16], &device);
    let out = worst_case(&model, &x, &y, &[pgd(0.5, 10)], 1, None);
    assert!(bools(out.robust).iter().all(|r| *r));
    let surrogate = ints(model.logits(x.clone()).argmax(1).squeeze_dim::<1>(1));
    let attacked = ints(
        model
            .logits(
                Pgd::new(Norm::Linf, 0.5, 10)
                    .unwrap()
                    .perturb(&model, &x, &y, None),
            )
            .argmax(1)
            .squeeze_dim::<1>(1),
    );
    assert!(
        surrogate.iter().zip(&attacked).any(|(a, b)| a != b),
        "the attack should move the surrogate: {surrogate:?} {attacked:?}"
    );
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
    assert_eq!(twins.decisions(), 11);
    assert_eq!(twins.abstain(), Some(10));
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
        lattice: None,
    };
    let a = smooth(&single).sample_noise(&x, &[0, 1, 2], 256, Stage::Estimation);
    let b = Smooth {
        base: &twins,
        sigma: 0.25,
        batch: 256,
        seed: 7,
        lattice: None,
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
        lattice: None,
    }
    .sample_noise(&x, &[0, 1, 2], 256, Stage::Estimation);
    assert!(c.iter().any(|r| r[10] > 0), "{c:?}");
    assert!(c.iter().all(|r| r.iter().sum::<u64>() == 256));
}

fn save_mlp(path: &Path, seed: u64) {
    let device = Device::flex();
    let spec = ImageSpec::new(Arch::Mlp);
    artifact::save_image(&mlp(seed, &device), &spec, &Metadata::default(), path).unwrap();
}

fn open_ensemble(path: &Path) -> Result<(Ensemble, Manifest), ArtifactError> {
    match artifact::open(path, OpenOptions::default(), &Device::flex())?.model {
        AnyModel::Ensemble {
            ensemble, manifest, ..
        } => Ok((ensemble, manifest)),
        other => panic!("not an ensemble: {}", other.kind()),
    }
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
    let (ens, _) = open_ensemble(&out).unwrap();
    assert_eq!(ens.weights.len(), 2);
    assert!((ens.weights[0] - 2.0 / 3.0).abs() < 1e-12);

    // A member replaced after the manifest was written: refused, naming it.
    save_mlp(&b, 3);
    match open_ensemble(&out) {
        Err(ArtifactError::Digest { member, .. }) => assert_eq!(member, b),
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
        vec![f64::INFINITY, 1.0],
    ] {
        assert!(
            Ensemble::new(members(), w.clone(), Strategy::WeightedMajority).is_err(),
            "{w:?}"
        );
    }
    // Huge weights do not overflow their sum: they normalise to equal halves.
    let e = Ensemble::new(members(), vec![1e308, 1e308], Strategy::WeightedMajority).unwrap();
    assert_eq!(e.weights, vec![0.5, 0.5]);
}

#[test]
fn ensemble_create_then_eval_attack_certify_accept_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = common::rampart(args, dir.path());
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
    assert_eq!(
        report["model"]["description"],
        "ensemble of 2 (weighted_majority)"
    );
    assert_eq!(report["model"]["kind"], "ensemble");
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
    let clean = report["clean_accuracy"].as_f64().unwrap();
    let robust = report["robust_accuracy"].as_f64().unwrap();
    // Two mlps trained one epoch on 400 bars (about 54% right, chance is 10%); PGD at 0.1
    // breaks nearly all of them.
    assert!(clean >= 0.4, "clean {clean}");
    assert!(robust <= 0.5 * clean, "robust {robust} vs clean {clean}");
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
    let run = || common::rampart(&["ensemble", "train", "--config", "e.toml"], dir.path());
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
    open_ensemble(&manifest_path).unwrap();
    // A second run keeps the trained members.
    let again = run();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists, kept"));
}

/// A member that always predicts `class`: zero weights, a one-hot bias in the head.
fn constant_mlp(path: &Path, class: usize) {
    use safetensors::{Dtype, tensor::TensorView};
    let shapes = ImageSpec::new(Arch::Mlp).tensor_shapes();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let mut v = vec![0f32; n];
            if name == "fc3.bias" {
                v[class] = 10.0;
            }
            let bytes = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A unanimous ensemble whose members never agree: `eval` counts every example as "no
/// decision" (and wrong), and CERTIFY and PREDICT abstain because "no decision" tops the vote.
#[test]
fn no_decision_is_counted_by_eval_and_abstained_on_by_smoothing() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    constant_mlp(&a, 0);
    constant_mlp(&b, 1);
    let out = dir.path().join("ens.toml");
    Manifest::describe(
        &out,
        &[(a, None), (b, None)],
        &[1.0, 1.0],
        Strategy::Unanimous,
        "hand",
    )
    .unwrap()
    .write(&out)
    .unwrap();
    let (ens, _) = open_ensemble(&out).unwrap();
    let model = ImageModel::Ensemble(ens.valid());
    let device = Device::flex();
    let set = rampart::data::synthetic(40, 3, &device);
    let examples = Examples {
        inputs: set.images.clone(),
        labels: set.labels.clone(),
        ids: (0..40).collect(),
    };
    let eval = rampart::eval::evaluate(&model, &examples, 16);
    assert_eq!(eval.no_decision, 40);
    assert_eq!(eval.accuracy, 0.0);
    let ids: Vec<u64> = (0..40).collect();
    let smooth = Smooth {
        base: &model,
        sigma: 0.25,
        batch: 1024,
        seed: 1,
        lattice: None,
    };
    let certs = smooth.certify(&set.images, &ids, 20, 200, 0.01);
    assert!(certs.iter().all(|c| c.class.is_none() && c.radius == 0.0));
    // Yet the vote for "no decision" was certain: the abstention is the rule, not the bound.
    assert!(certs.iter().all(|c| c.n_a == 200), "{certs:?}");
    assert!(
        smooth
            .predict(&set.images, &ids, 200, 0.01)
            .iter()
            .all(Option::is_none)
    );
    // The same members in a majority vote decide (class 0 wins the tie).
    let majority = Ensemble::new(
        ens.members.clone(),
        vec![1.0, 1.0],
        Strategy::WeightedMajority,
    )
    .unwrap();
    let decided = ints(majority.decide(set.images.clone()));
    assert!(decided.iter().all(|d| *d == 0));
}
