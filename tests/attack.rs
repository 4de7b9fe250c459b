//! Attacks: the analytic worst case on a linear model, the ball and the box, PGD at least as
//! strong as FGSM, robust accuracy falling with epsilon, targeted success, worst case over
//! restarts. Real-model checks use the reference cnn in models/.

use std::path::Path;

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rampart::attack::{AttackLoss, Logits, Norm, Pgd, worst_case};
use rampart::data::{self, Split};
use rampart::model::Classifier;

/// Burn's random generator is process-global: tests that seed it take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Two classes, logits [0, w·x + b].
struct Linear {
    w: Tensor<2>,
}

impl Logits<4> for Linear {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let z = x.flatten::<2>(1, 3).matmul(self.w.clone());
        Tensor::cat(vec![z.zeros_like(), z], 1)
    }
}

fn vec4(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec().unwrap()
}

fn reference_cnn() -> Classifier {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fmnist-cnn.safetensors");
    rampart::store::load_model(&path, None, &Device::flex())
        .unwrap()
        .model
}

fn fashion_test(n: usize) -> (Tensor<4>, Tensor<1, Int>) {
    let dir = data::resolve_data_dir(None).expect("Fashion-MNIST: run scripts/fetch-data.sh");
    let set = data::load_split(&dir, Split::Test, &Device::flex())
        .unwrap()
        .every(7, Some(n));
    (set.images, set.labels)
}

fn accuracy(model: &Classifier, x: Tensor<4>, y: &Tensor<1, Int>) -> f64 {
    let correct: i64 = model
        .forward(x)
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(y.clone())
        .int()
        .sum()
        .into_scalar();
    correct as f64 / y.dims()[0] as f64
}

#[test]
fn linear_model_perturbation_is_epsilon_sign_w() {
    let _turn = serial();
    let d = Device::flex();
    d.seed(1);
    let w = Tensor::<2>::random([784, 1], Distribution::Normal(0.0, 1.0), &d);
    let sign_w = vec4(w.clone().sign().reshape([1, 1, 28, 28]));
    let model = Linear { w };
    let x = Tensor::<4>::full([1, 1, 28, 28], 0.5, &d);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64], [1]), &d);
    let eps = 0.1;
    let pgd = Pgd {
        norm: Norm::Linf,
        epsilon: eps,
        alpha: 0.025,
        steps: 10,
        random_start: false,
        loss: AttackLoss::Ce,
    };
    for attack in [
        Pgd::fgsm(eps),
        pgd,
        Pgd {
            loss: AttackLoss::Margin,
            ..pgd
        },
    ] {
        let delta = vec4(attack.perturb(&model, &x, &y, None) - x.clone());
        // Lowering the class-1 logit w·x: the worst case is -epsilon · sign(w).
        for (dl, s) in delta.iter().zip(&sign_w) {
            assert!(
                (dl + (eps as f32) * s).abs() < 1e-6,
                "delta {dl} sign {s} ({attack:?})"
            );
        }
    }
}

#[test]
fn adversarial_examples_stay_in_the_ball_and_the_box() {
    let _turn = serial();
    let d = Device::flex();
    d.seed(2);
    let model = rampart::model::ModelSpec::fashion_normalised(rampart::model::Arch::Cnn).init(&d);
    // Pixels at 0, 1 and in between, so the box binds.
    let x =
        Tensor::<4>::random([8, 1, 28, 28], Distribution::Uniform(-0.5, 1.5), &d).clamp(0.0, 1.0);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3, 4, 5, 6, 7], [8]), &d);
    for (norm, eps, alpha) in [(Norm::Linf, 0.1, 0.03), (Norm::L2, 1.5, 0.5)] {
        let attack = Pgd {
            norm,
            epsilon: eps,
            alpha,
            steps: 5,
            random_start: true,
            loss: AttackLoss::Ce,
        };
        let adv = attack.perturb(&model, &x, &y, None);
        let a = vec4(adv.clone());
        assert!(
            a.iter().all(|p| (0.0..=1.0).contains(p)),
            "{norm:?}: outside [0,1]"
        );
        let delta = vec4(adv - x.clone());
        for img in delta.chunks(784) {
            let size = match norm {
                Norm::Linf => img.iter().fold(0f32, |m, v| m.max(v.abs())),
                Norm::L2 => img.iter().map(|v| v * v).sum::<f32>().sqrt(),
            };
            assert!(
                size <= eps as f32 + 1e-5,
                "{norm:?}: perturbation {size} > {eps}"
            );
            assert!(size > 0.0, "{norm:?}: no perturbation at all");
        }
    }
}

#[test]
fn pgd_is_stronger_than_fgsm_and_robustness_falls_with_epsilon() {
    let _turn = serial();
    let model = reference_cnn();
    let (x, y) = fashion_test(120);
    let clean = accuracy(&model, x.clone(), &y);
    assert!(clean > 0.8, "clean {clean}");
    let mut last = clean;
    for eps in [0.02, 0.05, 0.1] {
        let fgsm = accuracy(&model, Pgd::fgsm(eps).perturb(&model, &x, &y, None), &y);
        let pgd = Pgd {
            norm: Norm::Linf,
            epsilon: eps,
            alpha: eps / 4.0,
            steps: 10,
            random_start: true,
            loss: AttackLoss::Ce,
        };
        let pgd = accuracy(&model, pgd.perturb(&model, &x, &y, None), &y);
        assert!(pgd <= fgsm + 1e-9, "eps {eps}: pgd {pgd} > fgsm {fgsm}");
        assert!(
            pgd <= last + 1e-9,
            "eps {eps}: robust accuracy rose from {last} to {pgd}"
        );
        last = pgd;
    }
    // A clean-trained model has almost no robustness at eps 0.1.
    assert!(last < 0.2, "robust accuracy {last} at eps 0.1");
}

#[test]
fn targeted_attack_reaches_the_target_and_worst_case_only_falls() {
    let _turn = serial();
    let model = reference_cnn();
    let (x, y) = fashion_test(24);
    let labels: Vec<i64> = y.clone().into_data().convert::<i64>().try_to_vec().unwrap();
    let target: Vec<i64> = labels.iter().map(|l| (l + 3) % 10).collect();
    let t = Tensor::<1, Int>::from_data(TensorData::new(target.clone(), [24]), &x.device());
    let attack = Pgd {
        norm: Norm::Linf,
        epsilon: 0.3,
        alpha: 0.02,
        steps: 40,
        random_start: false,
        loss: AttackLoss::Ce,
    };
    let adv = attack.perturb(&model, &x, &y, Some(&t));
    let hit: i64 = model
        .forward(adv)
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(t)
        .int()
        .sum()
        .into_scalar();
    assert!(hit >= 22, "only {hit} of 24 reached their target");

    let weak = Pgd {
        norm: Norm::Linf,
        epsilon: 0.02,
        alpha: 0.01,
        steps: 3,
        random_start: true,
        loss: AttackLoss::Margin,
    };
    // Same seed: the first run of `thrice` repeats `once` exactly, and later runs can only
    // break more examples.
    x.device().seed(5);
    let once = worst_case(&model, &x, &y, &[weak], 1, None);
    x.device().seed(5);
    let thrice = worst_case(&model, &x, &y, &[weak, Pgd::fgsm(0.02)], 3, None);
    let flags = |t: Tensor<1, burn::tensor::Bool>| -> Vec<bool> {
        t.into_data().convert::<bool>().try_to_vec().unwrap()
    };
    let (clean, r1, r3) = (
        flags(once.clean_correct),
        flags(once.robust),
        flags(thrice.robust.clone()),
    );
    for i in 0..24 {
        assert!(!r1[i] || clean[i], "robust but misclassified clean");
        assert!(
            !r3[i] || r1[i],
            "example {i} robust after more runs but not after one"
        );
    }
    let count = |v: &[bool]| v.iter().filter(|b| **b).count();
    assert!(
        count(&r3) <= count(&r1),
        "more runs found fewer adversarial examples"
    );
    // Every example reported as broken has an adversarial example the model gets wrong.
    let preds: Vec<i64> = model
        .forward(thrice.adversarial)
        .argmax(1)
        .squeeze_dim::<1>(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec()
        .unwrap();
    for i in 0..24 {
        if clean[i] && !r3[i] {
            assert_ne!(
                preds[i], labels[i],
                "example {i} reported broken but its example is classified right"
            );
        }
        if r3[i] {
            assert_eq!(preds[i], labels[i]);
        }
    }
}
