//! Differential privacy: the Rényi accountant against Opacus 1.6.0's figures for the same
//! sampling rate, noise multiplier, steps and δ (computed with
//! `opacus.accountants.analysis.rdp.compute_rdp` and `get_privacy_spent` over
//! `RDPAccountant.DEFAULT_ALPHAS`; the script is in the test's comments below); DP-SGD's
//! per-example gradient norms against per-example backward passes, clipping that bounds one
//! huge example's contribution, and the noise's deviation.

mod common;

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

mod dp {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use burn::tensor::{Device, Int, Tensor, TensorData};
    use rampart::attack::AttackLoss;
    use rampart::attack::loss::per_example;
    use rampart::model::{Arch, ImageNet, ImageSpec};
    use rampart::privacy::dpsgd::{DpSgd, per_example_norms, private_step};

    use crate::common;

    /// The squared L2 norm of every gradient in `grads` for `model`'s parameters, and their
    /// flattened values.
    struct Collect<'a> {
        grads: &'a GradientsParams,
        values: Vec<f32>,
    }

    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.values.extend(common::floats(g));
            }
        }
    }

    fn flat(model: &ImageNet, grads: &GradientsParams) -> Vec<f32> {
        let mut c = Collect {
            grads,
            values: Vec::new(),
        };
        model.visit(&mut c);
        c.values
    }

    fn norm(v: &[f32]) -> f64 {
        v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
    }

    fn model(arch: Arch) -> ImageNet {
        let device = Device::flex().autodiff();
        device.seed(5);
        ImageSpec::new(arch).init(&device)
    }

    fn batch(n: usize) -> (Tensor<4>, Tensor<1, Int>) {
        let set = common::fashion_test(1, n);
        (set.images, set.labels)
    }

    #[test]
    fn ghost_norms_are_the_per_example_gradient_norms() {
        let _turn = common::serial();
        for arch in [Arch::Mlp, Arch::Cnn] {
            let model = model(arch);
            let (x, y) = batch(6);
            let (logits, layers) = model.forward_probed(x.clone().autodiff());
            let loss = per_example(AttackLoss::Ce, logits, &y.clone().autodiff(), None).sum();
            let ghost = common::floats(per_example_norms(&layers, &loss.backward()));
            for (i, &g) in ghost.iter().enumerate() {
                // Example i alone, through ordinary autodiff.
                let xi = x.clone().narrow(0, i, 1).autodiff();
                let yi = y.clone().narrow(0, i, 1);
                let li = per_example(AttackLoss::Ce, model.forward(xi), &yi.autodiff(), None);
                let grads = GradientsParams::from_grads(li.sum().backward(), &model);
                let exact = norm(&flat(&model, &grads));
                assert!(
                    (f64::from(g) - exact).abs() < 1e-3 * exact.max(1e-3),
                    "{arch}: example {i}: ghost norm {g}, per-example backward {exact}"
                );
            }
        }
    }

    #[test]
    fn clipping_bounds_every_examples_contribution() {
        let _turn = common::serial();
        let model = model(Arch::Cnn);
        let (x, y) = batch(8);
        // Example 0 made huge (pixels × 400, a wrong label): its gradient dwarfs the clip norm.
        let mut pixels = common::floats(x.clone());
        for v in &mut pixels[..784] {
            *v *= 400.0;
        }
        let device = x.device();
        let x_big = Tensor::<4>::from_data(TensorData::new(pixels, [8, 1, 28, 28]), &device);
        let mut labels = common::ints(y.clone());
        labels[0] = (labels[0] + 5) % 10;
        let y_big = Tensor::<1, Int>::from_data(TensorData::new(labels, [8]), &device);
        let dp = DpSgd {
            clip_norm: 1.0,
            noise_multiplier: 0.0,
            expected_batch: 8.0,
        };
        let with = private_step(&model, x_big.clone(), &y_big, &dp);
        let raw = common::floats(with.norms.clone());
        assert!(
            raw[0] > 100.0,
            "the outlier's gradient norm is only {}",
            raw[0]
        );
        let rest = private_step(
            &model,
            x_big.clone().narrow(0, 1, 7),
            &y_big.clone().narrow(0, 1, 7),
            &dp,
        );
        let (a, b) = (flat(&model, &with.grads), flat(&model, &rest.grads));
        // Sums divided by the same expected batch: their difference is the outlier's share.
        let share = norm(&a.iter().zip(&b).map(|(u, v)| u - v).collect::<Vec<_>>()) * 8.0;
        assert!(
            share <= 1.0 + 1e-3,
            "the outlier contributed {share} > C = 1"
        );
        assert!(share > 0.99, "the outlier was clipped to {share}, not to C");
        // Without clipping it would have dominated the step.
        let loose = DpSgd {
            clip_norm: 1e9,
            ..dp
        };
        let all = flat(&model, &private_step(&model, x_big, &y_big, &loose).grads);
        assert!(norm(&all) * 8.0 > 50.0);
    }

    #[test]
    fn the_noise_has_the_stated_deviation() {
        let _turn = common::serial();
        let model = model(Arch::Mlp);
        let (x, y) = batch(4);
        let quiet = DpSgd {
            clip_norm: 0.5,
            noise_multiplier: 0.0,
            expected_batch: 64.0,
        };
        let noisy = DpSgd {
            noise_multiplier: 2.0,
            ..quiet
        };
        let a = flat(&model, &private_step(&model, x.clone(), &y, &quiet).grads);
        let b = flat(&model, &private_step(&model, x, &y, &noisy).grads);
        let diffs: Vec<f64> = a.iter().zip(&b).map(|(u, v)| f64::from(v - u)).collect();
        let n = diffs.len() as f64;
        let sd = (diffs.iter().map(|d| d * d).sum::<f64>() / n).sqrt();
        // σ·C / (q·n) = 2 · 0.5 / 64 over some 270,000 coordinates.
        let want = 2.0 * 0.5 / 64.0;
        assert!((sd / want - 1.0).abs() < 0.01, "noise sd {sd}, want {want}");
    }
}

mod training {
    use rampart::device::DeviceChoice;
    use rampart::privacy::accountant;
    use rampart::train::config::{
        DataConfig, DpSgdConfig, ImageModel, Mode, ModelConfig, Optimizer, Privacy, Sgd,
        SyntheticData, TrainConfig,
    };
    use rampart::train::{self, TrainError};

    use crate::common;

    fn cfg(out: &std::path::Path, privacy: Privacy) -> TrainConfig {
        TrainConfig {
            model: ModelConfig::Mlp(ImageModel::default()),
            data: DataConfig::Synthetic(SyntheticData {
                synthetic_size: 2000,
                ..SyntheticData::default()
            }),
            privacy,
            // DP-SGD's usual optimiser: plain SGD with a large step (Adam would rescale the noise).
            optimizer: Optimizer::Sgd(Sgd {
                lr: 0.5,
                momentum: 0.9,
                ..Sgd::default()
            }),
            batch_size: 50,
            epochs: 4,
            seed: 1,
            device: DeviceChoice::Flex,
            out: out.to_path_buf(),
            ..TrainConfig::default()
        }
    }

    fn dp(noise_multiplier: f64, delta: f64) -> Privacy {
        Privacy::DpSgd(DpSgdConfig {
            clip_norm: 1.0,
            noise_multiplier,
            delta,
        })
    }

    #[test]
    fn a_private_run_learns_and_reports_its_guarantee() {
        let _turn = common::serial();
        let dir = tempfile::tempdir().unwrap();
        let report = train::train(&cfg(dir.path(), dp(1.0, 1e-4)), &[], false, &mut []).unwrap();
        let n = report.train_examples;
        let steps_per_epoch = n.div_ceil(50) as u64;
        for (e, m) in report.history.iter().enumerate() {
            let g = m
                .privacy
                .expect("every epoch of a private run reports its guarantee");
            let steps = steps_per_epoch * (e as u64 + 1);
            let want = accountant::epsilon(50.0 / n as f64, 1.0, steps, 1e-4);
            assert_eq!(g.steps, steps);
            assert_eq!(g.epsilon, want.epsilon);
        }
        let last = report.history.last().unwrap();
        // 10 classes: chance is 0.1 (this short noisy run reaches about 0.5).
        assert!(
            last.eval_accuracy > 0.3,
            "DP-SGD learnt nothing: {}",
            last.eval_accuracy
        );
        // The model file carries the guarantee.
        let opened = rampart::artifact::open(
            &report.model_path,
            Default::default(),
            &burn::tensor::Device::flex(),
        )
        .unwrap();
        let rampart::artifact::AnyModel::Image { metadata, .. } = opened.model else {
            panic!("an image model")
        };
        let summary = metadata.summary().expect("a training summary");
        assert_eq!(summary.privacy, last.privacy);
        // Ordinary training reports none.
        let plain = tempfile::tempdir().unwrap();
        let ordinary = TrainConfig {
            optimizer: TrainConfig::default().optimizer,
            ..cfg(plain.path(), Privacy::None)
        };
        let report = train::train(&ordinary, &[], false, &mut []).unwrap();
        assert!(report.history.iter().all(|m| m.privacy.is_none()));
    }

    #[test]
    fn private_runs_that_cannot_keep_their_promise_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run =
            |c: TrainConfig| -> TrainError { train::train(&c, &[], false, &mut []).unwrap_err() };
        let e = run(cfg(dir.path(), dp(1.0, 0.01)));
        assert!(
            e.to_string().contains("delta 0.01 is not below 1 / "),
            "{e}"
        );
        let e = run(cfg(dir.path(), dp(-1.0, 1e-5)));
        assert!(e.to_string().contains("noise_multiplier"), "{e}");
        let e = run(TrainConfig {
            mode: Mode::Gaussian(Default::default()),
            ..cfg(dir.path(), dp(1.0, 1e-5))
        });
        assert!(e.to_string().contains("mode standard"), "{e}");
        let e = run(TrainConfig {
            replicas: 2,
            ..cfg(dir.path(), dp(1.0, 1e-5))
        });
        assert!(e.to_string().contains("replicas = 1"), "{e}");
    }
}

mod membership {
    use rampart::device::DeviceChoice;
    use rampart::train::config::{DataConfig, FashionData, ImageModel, ModelConfig, TrainConfig};

    use crate::common::{self, json};

    fn attack(dir: &std::path::Path, offset: &str) -> serde_json::Value {
        attack_with(dir, offset, "2000", &[])
    }

    fn attack_with(
        dir: &std::path::Path,
        offset: &str,
        limit: &str,
        extra: &[&str],
    ) -> serde_json::Value {
        let mut args = vec![
            "membership",
            "--model",
            "m/model.safetensors",
            "--member-offset",
            offset,
            "--limit",
            limit,
            "--device",
            "flex",
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&common::rampart(&args, dir))
    }

    /// The error of `rampart membership` on `dir/m`'s model with 1,000 members and `extra`
    /// flags, which must fail.
    fn refusal(dir: &std::path::Path, extra: &[&str]) -> String {
        let mut args = vec![
            "membership",
            "--model",
            "m/model.safetensors",
            "--limit",
            "1000",
            "--device",
            "flex",
        ];
        args.extend_from_slice(extra);
        common::failed(&common::rampart(&args, dir))
    }

    /// An mlp overfitted on its first `n` training images, in `dir/m`; its recipe.
    fn overfitted(dir: &std::path::Path, n: usize) -> TrainConfig {
        let cfg = TrainConfig {
            model: ModelConfig::Mlp(ImageModel::default()),
            data: DataConfig::FashionMnist(FashionData {
                train_limit: Some(n),
                eval_limit: Some(500),
                ..FashionData::default()
            }),
            batch_size: 50,
            epochs: 15,
            seed: 2,
            device: DeviceChoice::Flex,
            out: dir.join("m"),
            ..TrainConfig::default()
        };
        rampart::train::train(&cfg, &[], false, &mut []).unwrap();
        cfg
    }

    fn named<'a>(report: &'a serde_json::Value, prefix: &str) -> &'a serde_json::Value {
        report["attacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["attack"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {report}"))
    }

    /// LiRA with four shadows trained on the target's recorded recipe finds more members at
    /// low false-positive rates than the loss threshold does, finds nothing in images the
    /// target never saw, reuses its shadows and refuses shadows of another assignment.
    #[test]
    fn lira_beats_the_loss_threshold_and_only_on_members() {
        let _turn = common::serial();
        let dir = tempfile::tempdir().unwrap();
        let recipe = overfitted(dir.path(), 2000);
        let lira = ["--attack", "lira", "--shadows", "4", "--shadow-dir", "sh"];
        let seen = attack_with(dir.path(), "0", "1000", &lira);
        assert_eq!(seen["shadows"], 4);
        assert_eq!(seen["members_in_training_set"], true);
        let (loss, online) = (named(&seen, "loss"), named(&seen, "LiRA online"));
        assert_eq!(seen["attack"], online["attack"]);
        let auc = online["auc"].as_f64().unwrap();
        assert!(auc > 0.58, "LiRA on an overfitted model: {seen}");
        assert!(auc > loss["auc"].as_f64().unwrap() + 0.02, "{seen}");
        assert!(
            online["tpr_at_1_fpr"].as_f64().unwrap() > 2.0 * loss["tpr_at_1_fpr"].as_f64().unwrap(),
            "{seen}"
        );
        // The shadows are reused: the same figures, and no new training.
        let modified = |k: usize| {
            std::fs::metadata(dir.path().join(format!("sh/shadow-{k}/model.safetensors")))
                .and_then(|m| m.modified())
                .unwrap()
        };
        let before: Vec<_> = (0..4).map(modified).collect();
        let again = attack_with(dir.path(), "0", "1000", &lira);
        assert_eq!(again["attacks"], seen["attacks"]);
        assert_eq!((0..4).map(modified).collect::<Vec<_>>(), before);
        let out = refusal(dir.path(), &[&["--seed", "9"][..], &lira].concat());
        assert!(out.contains("another IN/OUT assignment"), "{out}");
        // The same recipe one epoch longer: these shadows are not taken (nor resumed) for it.
        let longer = TrainConfig {
            epochs: recipe.epochs + 1,
            ..recipe
        };
        std::fs::write(
            dir.path().join("longer.toml"),
            toml::to_string(&longer).unwrap(),
        )
        .unwrap();
        let out = refusal(
            dir.path(),
            &[&["--shadow-config", "longer.toml"][..], &lira].concat(),
        );
        assert!(out.contains("epoch count"), "{out}");
        assert_eq!((0..4).map(modified).collect::<Vec<_>>(), before);
        // 500 members (the training split ends) against 1,000 non-members: refused before
        // any shadow trains.
        let unbalanced = [
            "--member-offset",
            "59500",
            "--attack",
            "lira",
            "--shadow-dir",
            "sh3",
        ];
        let out = refusal(dir.path(), &unbalanced);
        assert!(
            out.contains("500 members against 1000 non-members"),
            "{out}"
        );
        assert!(!dir.path().join("sh3").exists());
        // Training images 30,000-30,999, never seen: chance (sd of the area about 0.013).
        let lira_unseen = ["--attack", "lira", "--shadows", "4", "--shadow-dir", "sh2"];
        let unseen = attack_with(dir.path(), "30000", "1000", &lira_unseen);
        assert_eq!(unseen["members_in_training_set"], false);
        for name in ["LiRA online", "LiRA offline"] {
            let auc = named(&unseen, name)["auc"].as_f64().unwrap();
            assert!(
                (auc - 0.5).abs() < 0.045,
                "{name} on unseen images: {unseen}"
            );
        }
    }

    /// An mlp overfitted on the first 2,000 training images: the attack finds its members,
    /// and finds nothing in 2,000 training images it never saw.
    #[test]
    fn the_loss_attack_tells_members_and_only_members() {
        let _turn = common::serial();
        let dir = tempfile::tempdir().unwrap();
        overfitted(dir.path(), 2000);
        let seen = attack(dir.path(), "0");
        let auc = seen["auc"].as_f64().unwrap();
        // Under no leak the area of 2,000 + 2,000 scores has a standard deviation of 0.009.
        assert!(auc > 0.55, "members of an overfitted model: ROC area {auc}");
        assert!(seen["member_mean_loss"].as_f64() < seen["nonmember_mean_loss"].as_f64());
        // Training images 30,000-31,999 are as unseen as the test images.
        let unseen = attack(dir.path(), "30000");
        let auc = unseen["auc"].as_f64().unwrap();
        assert!(
            (auc - 0.5).abs() < 0.03,
            "never-seen images: ROC area {auc}"
        );
        assert!(unseen["tpr_at_1_fpr"].as_f64().unwrap() < 0.03);
    }
}
