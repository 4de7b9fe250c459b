//! Attacks: the analytic worst case on a linear model, the ball and the box, PGD at least as
//! strong as FGSM, robust accuracy falling with epsilon, targeted success, worst case over
//! restarts, robust accuracy after each attack, and parameters validated where attacks are
//! built. Real-model checks use the reference cnn in models/.

mod common;

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use common::{bools, floats, ints, serial};
use rampart::attack::{Attack, AttackLoss, Fgsm, Method, Norm, Pgd, worst_case};
use rampart::classifier::{Classifier, Domain};
use rampart::model::ImageNet;

/// Two classes, logits [0, w·x].
struct Linear {
    w: Tensor<2>,
}

impl Classifier<4> for Linear {
    type Input = Tensor<4>;

    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let z = x.flatten::<2>(1, 3).matmul(self.w.clone());
        Tensor::cat(vec![z.zeros_like(), z], 1)
    }

    fn num_classes(&self) -> usize {
        2
    }

    fn domain(&self) -> Domain {
        Domain::pixels()
    }
}

fn pgd(norm: Norm, eps: f64, alpha: f64, steps: usize, random_start: bool) -> Pgd {
    Pgd::new(norm, eps, steps)
        .unwrap()
        .with_alpha(alpha)
        .unwrap()
        .with_random_start(random_start)
}

fn accuracy(model: &ImageNet, x: Tensor<4>, y: &Tensor<1, Int>) -> f64 {
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
    let sign_w = floats(w.clone().sign().reshape([1, 1, 28, 28]));
    let model = Linear { w };
    let x = Tensor::<4>::full([1, 1, 28, 28], 0.5, &d);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64], [1]), &d);
    let eps = 0.1;
    let p = pgd(Norm::Linf, eps, 0.025, 10, false);
    for attack in [
        Method::Fgsm(Fgsm::new(eps).unwrap()),
        Method::Pgd(p),
        Method::Pgd(p.with_loss(AttackLoss::Margin)),
    ] {
        let delta = floats(attack.perturb(&model, &x, &y, None) - x.clone());
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
    let model = rampart::model::ImageSpec::fashion_normalised(rampart::model::Arch::Cnn).init(&d);
    // Pixels at 0, 1 and in between, so the box binds.
    let x =
        Tensor::<4>::random([8, 1, 28, 28], Distribution::Uniform(-0.5, 1.5), &d).clamp(0.0, 1.0);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3, 4, 5, 6, 7], [8]), &d);
    for (norm, eps, alpha) in [(Norm::Linf, 0.1, 0.03), (Norm::L2, 1.5, 0.5)] {
        let attack = pgd(norm, eps, alpha, 5, true);
        let adv = attack.perturb(&model, &x, &y, None);
        let a = floats(adv.clone());
        assert!(
            a.iter().all(|p| (0.0..=1.0).contains(p)),
            "{norm:?}: outside [0,1]"
        );
        let delta = floats(adv - x.clone());
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
    let model = common::reference_cnn();
    let set = common::fashion_test(7, 120);
    let (x, y) = (set.images, set.labels);
    x.device().seed(3);
    let clean = accuracy(&model, x.clone(), &y);
    assert!(clean > 0.8, "clean {clean}");
    let mut last = clean;
    for eps in [0.02, 0.05, 0.1] {
        let fgsm = Fgsm::new(eps).unwrap().perturb(&model, &x, &y, None);
        let fgsm = accuracy(&model, fgsm, &y);
        let attack = pgd(Norm::Linf, eps, eps / 4.0, 10, true);
        let pgd = accuracy(&model, attack.perturb(&model, &x, &y, None), &y);
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
    let model = common::reference_cnn();
    let set = common::fashion_test(7, 24);
    let (x, y) = (set.images, set.labels);
    let labels = ints(y.clone());
    let target: Vec<i64> = labels.iter().map(|l| (l + 3) % 10).collect();
    let t = Tensor::<1, Int>::from_data(TensorData::new(target.clone(), [24]), &x.device());
    let attack = pgd(Norm::Linf, 0.3, 0.02, 40, false);
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

    let weak = Method::Pgd(pgd(Norm::Linf, 0.02, 0.01, 3, true).with_loss(AttackLoss::Margin));
    let fgsm = Method::Fgsm(Fgsm::new(0.02).unwrap());
    // Same seed: the first run of `thrice` repeats `once` exactly, and later runs can only
    // break more examples.
    x.device().seed(5);
    let once = worst_case(&model, &x, &y, &[weak], 1, None);
    x.device().seed(5);
    let thrice = worst_case(&model, &x, &y, &[weak, fgsm], 3, None);
    let (clean, r1, r3) = (
        bools(once.clean_correct),
        bools(once.robust),
        bools(thrice.robust.clone()),
    );
    let count = |v: &[bool]| v.iter().filter(|b| **b).count();
    // The weak attack breaks something, or the comparison below would be vacuous.
    assert!(
        count(&r1) < count(&clean),
        "the weak attack broke nothing: {} robust of {} correct",
        count(&r1),
        count(&clean)
    );
    for i in 0..24 {
        assert!(!r1[i] || clean[i], "robust but misclassified clean");
        assert!(
            !r3[i] || r1[i],
            "example {i} robust after more runs but not after one"
        );
    }
    assert!(
        count(&r3) <= count(&r1),
        "more runs found fewer adversarial examples"
    );
    // Robust accuracy after each attack: after the weak attack's three restarts, a subset of
    // what survived its first; after both, the final worst case.
    let after: Vec<Vec<bool>> = thrice.robust_after.into_iter().map(bools).collect();
    assert_eq!(after.len(), 2);
    assert!((0..24).all(|i| !after[0][i] || r1[i]));
    assert!((0..24).all(|i| !after[1][i] || after[0][i]));
    assert_eq!(after[1], r3);
    x.device().seed(5);
    let weak_thrice = worst_case(&model, &x, &y, &[weak], 3, None);
    assert_eq!(after[0], bools(weak_thrice.robust));
    // Every example reported as broken has an adversarial example the model gets wrong.
    let preds = ints(
        model
            .forward(thrice.adversarial)
            .argmax(1)
            .squeeze_dim::<1>(1),
    );
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

/// A library caller cannot build an attack that cannot run, and a radius larger than the
/// input domain is refused.
#[test]
fn attack_parameters_are_validated_where_attacks_are_built() {
    for (eps, steps) in [
        (0.0, 10),
        (-0.1, 10),
        (f64::NAN, 10),
        (f64::INFINITY, 10),
        (0.1, 0),
    ] {
        let e = Pgd::new(Norm::Linf, eps, steps).unwrap_err();
        assert!(e.param == "epsilon" || e.param == "steps", "{e}");
    }
    let p = Pgd::new(Norm::L2, 0.5, 10).unwrap();
    assert!(
        (p.alpha() - 0.125).abs() < 1e-12,
        "default step 2.5·eps/steps"
    );
    assert!(p.with_alpha(0.0).is_err() && p.with_alpha(f64::NAN).is_err());
    assert!(Fgsm::new(-1.0).is_err());
    // Deserialised attacks are validated too.
    let bad = r#"{"attack":"pgd","norm":"linf","epsilon":0.1,"alpha":0.01,"steps":0,"random_start":true,"loss":"ce"}"#;
    assert!(serde_json::from_str::<Method>(bad).is_err());
    let good = bad.replace("\"steps\":0", "\"steps\":3");
    assert!(serde_json::from_str::<Method>(&good).is_ok());
    // epsilon 5 on pixels in [0, 1] is no threat model.
    let domain = Domain::pixels();
    assert!(
        Method::Fgsm(Fgsm::new(5.0).unwrap())
            .check_domain(&domain)
            .is_err()
    );
    assert!(
        Method::Fgsm(Fgsm::new(0.3).unwrap())
            .check_domain(&domain)
            .is_ok()
    );
    // An L2 ball may be larger than 1 (the L2 diameter of 784 pixels is 28).
    let l2 = Method::Pgd(Pgd::new(Norm::L2, 3.0, 5).unwrap());
    assert!(l2.check_domain(&domain).is_ok());
    let l2 = Method::Pgd(Pgd::new(Norm::L2, 29.0, 5).unwrap());
    assert!(l2.check_domain(&domain).is_err());
}
