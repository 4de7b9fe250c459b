//! AutoAttack-grade evaluation: the DLR loss on hand-made logits, APGD's checkpoint schedule,
//! APGD and Square inside the ball and the box and reaching the analytic worst case of a linear
//! model, the worst case attacking only still-robust points and equalling the pointwise worst
//! case, and `rampart evaluate` end to end: a resumed run equals an uninterrupted one, and
//! bad requests get one clear error.

mod common;

use std::cell::RefCell;

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use common::{bools, failed, floats, ints, json, rampart, reference_path, serial};
use rampart::attack::apgd::{Apgd, Schedule};
use rampart::attack::loss::{AttackLoss, per_example};
use rampart::attack::{Attack, Fgsm, Method, Norm, Pgd, Square, worst_case};
use rampart::classifier::{Classifier, Domain};

/// K classes, logits x·W + b on 1xSxS images in [0, 1] (S = 4 unless said); records the
/// batch size of every call.
struct Linear {
    w: Tensor<2>,
    b: Tensor<1>,
    side: usize,
    calls: RefCell<Vec<usize>>,
}

impl Linear {
    fn random(k: usize, device: &Device) -> Self {
        Self::sized(k, 4, device)
    }

    fn sized(k: usize, side: usize, device: &Device) -> Self {
        Self {
            w: Tensor::random([side * side, k], Distribution::Normal(0.0, 1.0), device),
            b: Tensor::random([k], Distribution::Normal(0.0, 0.1), device),
            side,
            calls: RefCell::new(Vec::new()),
        }
    }

    /// The margin z_y − max_{i≠y} z_i of each example (two classes: z_y − z_other).
    fn margins(&self, x: Tensor<4>, y: &Tensor<1, Int>) -> Vec<f32> {
        let logits = self.logits(x);
        let k = logits.dims()[1];
        let onehot = y.clone().one_hot::<2>(k).float();
        let own = (logits.clone() * onehot.clone()).sum_dim(1);
        let other = (logits - onehot * 1e9).max_dim(1);
        floats(own - other)
    }
}

impl Classifier<4> for Linear {
    type Input = Tensor<4>;

    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.calls.borrow_mut().push(x.dims()[0]);
        let n = x.dims()[0];
        x.reshape([n, self.side * self.side]).matmul(self.w.clone())
            + self.b.clone().unsqueeze_dim(0)
    }

    fn num_classes(&self) -> usize {
        self.w.dims()[1]
    }

    fn domain(&self) -> Domain {
        Domain {
            shape: vec![1, self.side, self.side],
            bounds: Some((0.0, 1.0)),
            units: "pixels in [0, 1]",
        }
    }
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn dlr_loss_matches_hand_computed_values() {
    let d = Device::flex();
    let logits = Tensor::<2>::from_data(
        TensorData::new(vec![3.0f32, 1.0, 2.0, 0.0, 0.0, 5.0, 1.0, 2.0], [2, 4]),
        &d,
    );
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 3], [2]), &d);
    let t = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 2], [2]), &d);
    // Row 0: sorted 3, 2, 1, 0; the true logit leads by 1: −(3 − 2)/(3 − 1).
    // Row 1: sorted 5, 2, 1, 0; the true logit (2) trails 5: −(2 − 5)/(5 − 1).
    let dlr = floats(per_example(AttackLoss::Dlr, logits.clone(), &y, None));
    assert!(
        close(dlr[0], -0.5, 1e-6) && close(dlr[1], 0.75, 1e-6),
        "{dlr:?}"
    );
    // Targeted: −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2): −(3 − 0)/(3 − 0.5), −(2 − 1)/(5 − 0.5).
    let targeted = floats(per_example(AttackLoss::Dlr, logits.clone(), &y, Some(&t)));
    assert!(
        close(targeted[0], -1.2, 1e-6) && close(targeted[1], -1.0 / 4.5, 1e-6),
        "{targeted:?}"
    );
    // Invariant to shifting and scaling the logits, unlike cross-entropy.
    let moved = floats(per_example(
        AttackLoss::Dlr,
        logits.clone() * 3.0 + 7.0,
        &y,
        None,
    ));
    assert!(close(moved[0], dlr[0], 1e-5) && close(moved[1], dlr[1], 1e-5));
    let ce = floats(per_example(AttackLoss::Ce, logits, &y, None));
    let expected = (3f32.exp() + 1f32.exp() + 2f32.exp() + 1.0).ln() - 3.0;
    assert!(close(ce[0], expected, 1e-5), "{ce:?}");
}

#[test]
fn dlr_needs_three_classes_and_targeted_four() {
    assert_eq!(AttackLoss::Dlr.min_classes(false), 3);
    assert_eq!(AttackLoss::Dlr.min_classes(true), 4);
    let apgd_t = Method::Apgd(Apgd::new(Norm::Linf, 0.1, 10).unwrap().targeted(9).unwrap());
    let err = apgd_t.check_classes(3, false).unwrap_err();
    assert!(err.message.contains("at least 4 classes"), "{err}");
    assert!(apgd_t.check_classes(4, false).is_ok());
}

#[test]
fn apgd_checkpoints_for_100_iterations() {
    assert_eq!(
        Schedule::checkpoints(100),
        vec![22, 41, 57, 70, 80, 87, 93, 99]
    );
    // Short runs still check at least once per iteration window of one.
    assert_eq!(Schedule::checkpoints(3), vec![1, 2, 3]);
}

/// Every adversarial example lies in the ball around its clean input and in [0, 1].
fn assert_inside(clean: &Tensor<4>, adv: Tensor<4>, norm: Norm, eps: f32) {
    let a = floats(adv.clone());
    assert!(a.iter().all(|v| (0.0..=1.0).contains(v)), "left the box");
    let [n, _, h, w] = clean.dims();
    let delta = (adv - clean.clone()).reshape([n, h * w]);
    let size = match norm {
        Norm::Linf => delta.abs().max_dim(1),
        Norm::L2 => delta.powf_scalar(2.0).sum_dim(1).sqrt(),
    };
    let largest = floats(size).into_iter().fold(0.0f32, f32::max);
    assert!(largest <= eps + 1e-5, "{norm:?} norm {largest} > {eps}");
}

#[test]
fn apgd_never_leaves_the_ball_or_the_box() {
    let _turn = serial();
    let d = Device::flex();
    d.seed(3);
    let model = Linear::random(10, &d);
    // Pixels near the box's edges, so that the box is active.
    let x =
        Tensor::<4>::random([32, 1, 4, 4], Distribution::Uniform(0.0, 1.0), &d).powf_scalar(3.0);
    let y = model.logits(x.clone()).argmax(1).squeeze_dim::<1>(1);
    for (norm, eps) in [(Norm::Linf, 0.3), (Norm::L2, 1.0)] {
        let base = Apgd::new(norm, eps, 20).unwrap();
        for attack in [
            base,
            base.with_loss(AttackLoss::Dlr).unwrap(),
            base.targeted(3).unwrap(),
        ] {
            for run in 0..attack.runs() {
                let traced = attack.run(&model, &x, &y, None, run);
                assert_inside(&x, traced.adversarial, norm, eps as f32);
            }
        }
    }
}

/// Two classes, pixels at 0.5 (the box is not active for small radii): the analytic minimum
/// margin over the L∞ ball is m − eps·‖d‖₁ and over the L2 ball m − eps·‖d‖₂, with d the
/// difference of the two weight columns.
fn linear_case(d: &Device) -> (Linear, Tensor<4>, Tensor<1, Int>, Vec<f32>, Vec<f32>) {
    let model = Linear::random(2, d);
    let x = Tensor::<4>::full([1, 1, 4, 4], 0.5, d);
    let y = model.logits(x.clone()).argmax(1).squeeze_dim::<1>(1);
    let w = floats(model.w.clone());
    let diff: Vec<f32> = (0..16).map(|i| w[2 * i] - w[2 * i + 1]).collect();
    let l1 = diff.iter().map(|v| v.abs()).sum::<f32>();
    let l2 = diff.iter().map(|v| v * v).sum::<f32>().sqrt();
    (model, x, y, vec![l1], vec![l2])
}

#[test]
fn apgd_reaches_the_analytic_worst_case_of_a_linear_model() {
    let _turn = serial();
    let d = Device::flex();
    d.seed(5);
    let (model, x, y, l1, l2) = linear_case(&d);
    let margin = model.margins(x.clone(), &y)[0];
    for (norm, dual) in [(Norm::Linf, l1[0]), (Norm::L2, l2[0])] {
        // A radius the example survives (40% of the way to the boundary).
        let eps = 0.4 * margin / dual;
        assert!(eps < 0.5, "radius {eps} would reach the box");
        let apgd = Apgd::new(norm, f64::from(eps), 100).unwrap();
        let adv = apgd.perturb(&model, &x, &y, None);
        let reached = model.margins(adv, &y)[0];
        let analytic = margin - eps * dual;
        assert!(
            close(reached, analytic, 1e-3 * margin),
            "{norm:?}: APGD margin {reached}, analytic minimum {analytic}"
        );
    }
}

/// Two classes on 1x4x4 images: logits [0, −s·‖x − c‖²], so that the cross-entropy of
/// class 0 peaks at the interior point `c` and no input is ever misclassified.
struct Bowl {
    c: Tensor<4>,
}

impl Classifier<4> for Bowl {
    type Input = Tensor<4>;

    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let n = x.dims()[0];
        let d2 = (x - self.c.clone())
            .powf_scalar(2.0)
            .reshape([n, 16])
            .sum_dim(1);
        Tensor::cat(vec![d2.zeros_like(), d2 * -10.0], 1)
    }

    fn num_classes(&self) -> usize {
        2
    }

    fn domain(&self) -> Domain {
        Domain {
            shape: vec![1, 4, 4],
            bounds: Some((0.0, 1.0)),
            units: "pixels in [0, 1]",
        }
    }
}

#[test]
fn apgd_halves_its_step_to_settle_on_an_interior_maximum() {
    let _turn = serial();
    let d = Device::flex();
    d.seed(11);
    let eps = 0.2f32;
    let x = Tensor::<4>::full([1, 1, 4, 4], 0.5, &d);
    let offsets = Tensor::<4>::random([1, 1, 4, 4], Distribution::Uniform(-0.6, 0.6), &d);
    let model = Bowl {
        c: x.clone() + offsets * eps,
    };
    let y = Tensor::<1, Int>::zeros([1], &d);
    let worst = |adv: Tensor<4>| {
        floats((adv - model.c.clone()).abs().max())
            .into_iter()
            .fold(0.0f32, f32::max)
    };
    // A fixed step of eps/4 cannot land closer than its own lattice allows; APGD, which
    // starts at 2·eps and halves whenever the loss oscillates, must get 20 times closer.
    let pgd = Pgd::new(Norm::Linf, f64::from(eps), 100)
        .unwrap()
        .with_alpha(f64::from(eps) / 4.0)
        .unwrap();
    let pgd_error = worst(pgd.perturb(&model, &x, &y, None));
    let apgd_error = worst(
        Apgd::new(Norm::Linf, f64::from(eps), 100)
            .unwrap()
            .perturb(&model, &x, &y, None),
    );
    assert!(
        apgd_error < eps / 20.0,
        "APGD ended {apgd_error} from the maximum (radius {eps})"
    );
    assert!(
        pgd_error > apgd_error * 4.0,
        "fixed-step PGD ended {pgd_error} from it, APGD {apgd_error}: the test no longer tells step-size control from none"
    );
}

#[test]
fn square_schedule_reads_the_query_index_as_autoattack_does() {
    let square = Square::new(Norm::Linf, 0.1, 5000).unwrap();
    let p = |it| square.p_at(it) / 0.8;
    assert_eq!(
        [p(0), p(10), p(11), p(50), p(51), p(4000), p(4001), p(4999)],
        [
            1.0,
            1.0,
            0.5,
            0.5,
            0.25,
            1.0 / 64.0,
            1.0 / 128.0,
            1.0 / 128.0
        ]
    );
    // Stretched over the budget, 5,000 queries walk the whole 10,000-query schedule.
    let stretched = square.with_rescaled_schedule(true);
    assert_eq!(stretched.p_at(5), 0.8);
    assert_eq!(stretched.p_at(6), 0.4);
    assert_eq!(stretched.p_at(4999), 0.8 / 512.0);
}

#[test]
fn dlr_counts_equal_logits_apart_and_targets_rank_by_logit() {
    let d = Device::flex();
    // Sorted: 3, 3, 1, 0; DLR = −(z_y − max other)/(z_π1 − z_π3) = −(3 − 3)/(3 − 1) for y = 0,
    // and −(1 − 3)/2 = 1 for y = 2.
    let logits = Tensor::<2>::from_data(
        TensorData::new(vec![3f32, 3.0, 1.0, 0.0, 3.0, 3.0, 1.0, 0.0], [2, 4]),
        &d,
    );
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &d);
    let dlr = floats(per_example(AttackLoss::Dlr, logits.clone(), &y, None));
    assert!(
        close(dlr[0], 0.0, 1e-6) && close(dlr[1], 1.0, 1e-6),
        "{dlr:?}"
    );
    let ranked = Tensor::<2>::from_data(TensorData::new(vec![0.1f32, 0.5, 0.3], [1, 3]), &d);
    let at = |rank| ints(rampart::attack::loss::class_at_rank(&ranked, rank))[0];
    assert_eq!([at(0), at(1), at(2), at(9)], [1, 2, 0, 0]);
}

#[test]
fn put_replaces_rows_exactly() {
    let d = Device::flex();
    let full = Tensor::<2>::from_data(
        TensorData::new(vec![0.1f32, 0.7, 0.3, 1e8, 0.9, 0.2], [3, 2]),
        &d,
    );
    let rows = Tensor::<2>::from_data(TensorData::new(vec![0.3f32, 1e-8, 0.6, 0.1], [2, 2]), &d);
    let idx = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 1], [2]), &d);
    let out = floats(rampart::attack::ball::put(full, &idx, rows));
    // Adding the difference (1e-8 − 1e8) to 1e8 would give 0, not 1e-8.
    assert_eq!(out, vec![0.1, 0.7, 0.6, 0.1, 0.3, 1e-8]);
}

#[test]
fn square_finds_the_minimum_margin_corner_of_a_linear_model() {
    let _turn = serial();
    let d = Device::flex();
    d.seed(7);
    let (model, x, y, l1, _) = linear_case(&d);
    let margin = model.margins(x.clone(), &y)[0];
    // Robust at 60% of the distance: Square must end at the corner m − eps·‖d‖₁ exactly.
    let eps = 0.6 * margin / l1[0];
    let square = Square::new(Norm::Linf, f64::from(eps), 1000).unwrap();
    let adv = square.perturb(&model, &x, &y, None);
    let reached = model.margins(adv.clone(), &y)[0];
    let analytic = margin - eps * l1[0];
    assert!(
        close(reached, analytic, 1e-4 * margin),
        "Square margin {reached}, analytic minimum {analytic}"
    );
    assert_inside(&x, adv, Norm::Linf, eps);
    // Foolable only near the corner (at 105% of the distance): Square fools it.
    let eps = 1.05 * margin / l1[0];
    let square = Square::new(Norm::Linf, f64::from(eps), 1000).unwrap();
    let traced = square.run(&model, &x, &y, None, 0);
    assert!(model.margins(traced.adversarial, &y)[0] <= 0.0);
    // Fooled by a proposal (query ≥ 1) and not by the stripes it starts from: those move
    // each column by ±eps together, far from the corner that fools it.
    let at = ints(traced.iteration.unwrap())[0];
    assert!((1..=1000).contains(&at), "query {at}");
}

#[test]
fn worst_case_attacks_only_robust_points_and_equals_the_pointwise_worst_case() {
    let _turn = serial();
    let d = Device::flex();
    d.seed(11);
    let model = Linear::random(3, &d);
    let x = Tensor::<4>::random([64, 1, 4, 4], Distribution::Uniform(0.2, 0.8), &d);
    // Labels: the model's own predictions, with every fourth one wrong.
    let pred = ints(model.logits(x.clone()).argmax(1).squeeze_dim::<1>(1));
    let labels: Vec<i64> = pred
        .iter()
        .enumerate()
        .map(|(i, p)| if i % 4 == 0 { (p + 1) % 3 } else { *p })
        .collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [64]), &d);
    // Deterministic attacks: an example's outcome does not depend on the others.
    let fgsm = Method::Fgsm(Fgsm::new(0.1).unwrap());
    let pgd = Method::Pgd(
        Pgd::new(Norm::Linf, 0.2, 10)
            .unwrap()
            .with_random_start(false),
    );
    let fooled = |m: &Method| -> Vec<bool> {
        let adv = m.perturb(&model, &x, &y, None);
        bools(model.decide(adv).not_equal(y.clone()))
    };
    let (by_fgsm, by_pgd) = (fooled(&fgsm), fooled(&pgd));
    let clean = bools(model.decide(x.clone()).equal(y.clone()));
    model.calls.borrow_mut().clear();
    let out = worst_case(&model, &x, &y, &[fgsm, pgd], 3, None);
    let calls = model.calls.borrow().clone();

    let robust = bools(out.robust.clone());
    let codes = ints(out.broken_by.clone());
    let after_fgsm = (0..64).filter(|&i| clean[i] && !by_fgsm[i]).count();
    let clean_count = clean.iter().filter(|c| **c).count();
    assert!(
        after_fgsm > 0 && after_fgsm < clean_count,
        "FGSM left {after_fgsm} of {clean_count}: choose radii that split them"
    );
    for i in 0..64 {
        assert_eq!(
            robust[i],
            clean[i] && !by_fgsm[i] && !by_pgd[i],
            "example {i}"
        );
        let expected = match (clean[i], by_fgsm[i], by_pgd[i]) {
            (false, _, _) => 0,
            (true, true, _) => 1,
            (true, false, true) => 2,
            (true, false, false) => 0,
        };
        assert_eq!(codes[i], expected, "example {i}");
    }
    // Deterministic attacks run once despite 3 restarts; PGD's 10 gradient passes and its
    // verdict see only the examples FGSM left robust.
    let pgd_calls = calls.iter().filter(|&&c| c == after_fgsm).count();
    assert_eq!(pgd_calls, 10 + 1, "{calls:?}");
    assert!(calls.iter().all(|&c| c <= 64));
}

#[test]
fn worst_case_keeps_the_iteration_of_the_run_that_fooled_each_example() {
    let _turn = serial();
    let d = Device::flex();
    d.seed(13);
    let model = Linear::random(3, &d);
    let x = Tensor::<4>::random([48, 1, 4, 4], Distribution::Uniform(0.2, 0.8), &d);
    let y = model.logits(x.clone()).argmax(1).squeeze_dim::<1>(1);
    let apgd = Apgd::new(Norm::Linf, 0.04, 20).unwrap();
    let square = Square::new(Norm::Linf, 0.06, 200).unwrap();
    // Every example is clean-correct, so APGD runs on the whole batch: seeded alike, its own
    // trace is what worst_case must keep for the examples it fooled.
    d.seed(21);
    let alone = apgd.run(&model, &x, &y, None, 0);
    let alone_fooled = bools(model.decide(alone.adversarial).not_equal(y.clone()));
    let alone_at = ints(alone.iteration.unwrap());
    d.seed(21);
    let out = worst_case(
        &model,
        &x,
        &y,
        &[Method::Apgd(apgd), Method::Square(square)],
        1,
        None,
    );
    let (codes, at) = (ints(out.broken_by), ints(out.iteration));
    let still = bools(model.decide(out.adversarial).equal(y.clone()));
    let robust = bools(out.robust);
    let by_square = codes.iter().filter(|&&c| c == 2).count();
    assert!(
        alone_fooled.iter().any(|f| *f) && by_square > 0 && robust.iter().any(|r| *r),
        "radii must leave examples to each attack and some robust: {codes:?}"
    );
    for i in 0..48 {
        match codes[i] {
            1 => {
                assert!(alone_fooled[i], "example {i}");
                assert_eq!(at[i], alone_at[i], "example {i}");
                assert!((0..=20).contains(&at[i]), "example {i}: {}", at[i]);
            }
            2 => {
                assert!(!alone_fooled[i], "example {i}");
                assert!((0..=200).contains(&at[i]), "example {i}: {}", at[i]);
            }
            _ => {
                assert!(robust[i] && !alone_fooled[i], "example {i}");
                assert_eq!(at[i], -1, "example {i}");
            }
        }
        // The kept adversarial example fools the model exactly where one was found.
        assert_eq!(still[i], codes[i] == 0, "example {i}");
    }
}

fn evaluate(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let model = reference_path();
    let mut args = vec![
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--eps",
        "0.05",
        "--version",
        "custom",
        "--attacks",
        "apgd-ce,apgd-t,square",
        "--steps",
        "5",
        "--targets",
        "2",
        "--queries",
        "30",
        "--limit",
        "24",
        "--batch",
        "8",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&rampart(&args, dir))
}

#[test]
fn resumed_evaluation_equals_an_uninterrupted_one() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let full = evaluate(p, &["--state", "a.json", "--per-example", "a.tsv"]);
    // An interruption after the first batch: the state file as it was then.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("a.json")).unwrap()).unwrap();
    let mut cut = state.clone();
    let rows = cut["rows"].as_array_mut().unwrap();
    assert_eq!(rows.len(), 24);
    rows.truncate(8);
    std::fs::write(p.join("b.json"), serde_json::to_vec(&cut).unwrap()).unwrap();
    let resumed = evaluate(p, &["--state", "b.json", "--per-example", "b.tsv"]);
    assert_eq!(resumed["resumed"], 8);
    assert_eq!(full["resumed"], 0);
    for key in [
        "clean_accuracy",
        "robust_accuracy",
        "after_each",
        "max_perturbation",
    ] {
        assert_eq!(full[key], resumed[key], "{key}");
    }
    let (a, b) = (
        std::fs::read_to_string(p.join("a.tsv")).unwrap(),
        std::fs::read_to_string(p.join("b.tsv")).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a.lines().count(), 25);
    // Robust accuracy never rises from one attack to the next, and ends at the worst case.
    let after: Vec<f64> = full["after_each"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["robust_accuracy"].as_f64().unwrap())
        .collect();
    assert!(after.windows(2).all(|w| w[1] <= w[0]));
    assert_eq!(after.last().copied(), full["robust_accuracy"].as_f64());
    assert!(full["max_perturbation"].as_f64().unwrap() <= 0.05 + 1e-6);
}

#[test]
fn a_state_file_of_another_run_or_a_damaged_one_is_refused() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    evaluate(p, &["--state", "s.json"]);
    // Each case changes one setting of the run that wrote s.json.
    let refused = |change: &[&str], expected: &str| {
        let model = reference_path();
        let mut settings = vec![
            ("--model", model.to_str().unwrap()),
            ("--eps", "0.05"),
            ("--version", "custom"),
            ("--attacks", "apgd-ce,apgd-t,square"),
            ("--steps", "5"),
            ("--targets", "2"),
            ("--queries", "30"),
            ("--limit", "24"),
            ("--batch", "8"),
            ("--seed", "0"),
            ("--state", "s.json"),
        ];
        for pair in change.chunks(2) {
            let slot = settings.iter_mut().find(|(f, _)| *f == pair[0]).unwrap();
            slot.1 = pair[1];
        }
        let mut args = vec!["evaluate"];
        args.extend(settings.iter().flat_map(|(f, v)| [*f, *v]));
        let err = failed(&rampart(&args, p));
        assert!(err.contains(expected), "{change:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    for change in [
        &["--eps", "0.06"][..],
        &["--seed", "1"],
        &["--batch", "4"],
        &["--steps", "6"],
        &["--queries", "31"],
        &["--targets", "1"],
        &["--attacks", "apgd-ce,square"],
        &["--limit", "23"],
    ] {
        refused(change, "another");
    }
    // The same run, but the file damaged: not JSON, rows cut mid-batch, a label changed.
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("s.json")).unwrap()).unwrap();
    std::fs::write(p.join("s.json"), b"{\"format\": 1, \"fingerp").unwrap();
    refused(&[], "not an evaluation state file");
    // Its own file damaged in place can be read and refused too (past the output guard,
    // which only looks at the first bytes).
    std::fs::write(
        p.join("s.json"),
        b"{\"format\": 1, \"fingerprint\": 3, \"rows\": 7}",
    )
    .unwrap();
    refused(&[], "not an evaluation state file (");
    let mut cut = good.clone();
    cut["rows"].as_array_mut().unwrap().truncate(5);
    std::fs::write(p.join("s.json"), serde_json::to_vec(&cut).unwrap()).unwrap();
    refused(&[], "whole batches");
    let mut relabelled = good.clone();
    let label = relabelled["rows"][3]["label"].as_i64().unwrap();
    relabelled["rows"][3]["label"] = ((label + 1) % 10).into();
    std::fs::write(p.join("s.json"), serde_json::to_vec(&relabelled).unwrap()).unwrap();
    refused(&[], "labels");
    // The model file itself given as the state file is read, refused, and left as it was.
    let model = p.join("m.safetensors");
    std::fs::copy(reference_path(), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    refused(&["--state", "m.safetensors"], "m.safetensors");
    assert_eq!(std::fs::read(&model).unwrap(), before);
}

#[test]
fn bad_evaluation_requests_get_one_clear_error() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--eps", "0.1", "--version", "custom"], "--attacks"),
        (&["--eps", "0.1", "--attacks", "square"], "--version custom"),
        (&["--eps", "0", "--version", "standard"], "--eps"),
        (&["--eps", "0.1", "--steps", "0"], "--steps"),
        (&["--eps", "0.1", "--queries", "0"], "--queries"),
        (&["--eps", "0.1", "--targets", "0"], "--targets"),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["evaluate", "--model", m, "--limit", "4"];
        args.extend_from_slice(flags);
        let err = failed(&rampart(&args, dir.path()));
        assert!(err.contains(expected), "{flags:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // The L2 standard version runs APGD-CE, APGD-T and Square, and stays inside the ball.
    let report = json(&rampart(
        &[
            "evaluate",
            "--model",
            m,
            "--limit",
            "8",
            "--eps",
            "0.5",
            "--norm",
            "l2",
            "--steps",
            "3",
            "--targets",
            "1",
            "--queries",
            "20",
            "--no-checks",
            "--json",
        ],
        dir.path(),
    ));
    let names: Vec<&str> = report["after_each"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attack"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apgd-ce", "apgd-t", "square"]);
    assert!(report["max_perturbation"].as_f64().unwrap() <= 0.5 + 1e-5);
}

#[test]
fn l2_square_stays_on_the_ball_and_fools_what_only_its_edge_fools() {
    let _turn = serial();
    let d = Device::flex();
    d.seed(13);
    let model = Linear::sized(2, 10, &d);
    let x = Tensor::<4>::full([1, 1, 10, 10], 0.5, &d);
    let y = model.logits(x.clone()).argmax(1).squeeze_dim::<1>(1);
    let margin = model.margins(x.clone(), &y)[0];
    let w = floats(model.w.clone());
    let l2 = (0..100)
        .map(|i| (w[2 * i] - w[2 * i + 1]).powi(2))
        .sum::<f32>()
        .sqrt();
    // Twice the L2 distance to the boundary: fooled, but not by a random direction.
    let eps = 2.0 * margin / l2;
    assert!(eps < 0.5 * 10.0, "radius {eps}");
    let square = Square::new(Norm::L2, f64::from(eps), 2000).unwrap();
    let traced = square.run(&model, &x, &y, None, 0);
    assert_inside(&x, traced.adversarial.clone(), Norm::L2, eps);
    assert!(
        model.margins(traced.adversarial, &y)[0] <= 0.0,
        "not fooled"
    );
    // Inputs that are not images of at least 5x5 are refused where the plan is checked.
    let small = Method::Square(Square::new(Norm::L2, 0.5, 10).unwrap());
    let err = small
        .check_domain(&Linear::random(2, &d).domain())
        .unwrap_err();
    assert!(err.message.contains("at least 5x5"), "{err}");
}

#[test]
fn a_randomized_model_is_flagged_unless_evaluated_with_rand() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let run = |version: &str| {
        json(&rampart(
            &[
                "evaluate",
                "--model",
                model.to_str().unwrap(),
                "--eps",
                "0.05",
                "--sigma",
                "0.25",
                "--version",
                version,
                "--steps",
                "3",
                "--targets",
                "1",
                "--queries",
                "10",
                "--limit",
                "8",
                "--json",
            ],
            dir.path(),
        ))
    };
    let randomized = |report: &serde_json::Value| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "randomized_forward")
            .cloned()
            .unwrap()
    };
    let standard = run("standard");
    let check = randomized(&standard);
    assert!(check["value"].as_f64().unwrap() > 0.0, "{check}");
    assert!(
        check["warning"]
            .as_str()
            .unwrap()
            .contains("--version rand"),
        "{check}"
    );
    let rand = run("rand");
    assert!(randomized(&rand)["warning"].is_null());
    let names: Vec<&str> = rand["after_each"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attack"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apgd-ce", "apgd-dlr"]);
    assert_eq!(rand["attacks"][0]["eot"], 20);
    assert_eq!(rand["sigma"], 0.25);
}

#[test]
fn every_model_kind_is_evaluated() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let small = [
        "--steps",
        "3",
        "--targets",
        "1",
        "--queries",
        "10",
        "--no-checks",
        "--json",
    ];
    // A voting ensemble: surrogate gradients, judged on the vote.
    for (i, src) in [reference_path(), fixtures.join("torch-cnn.safetensors")]
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
            "weighted_majority",
            "--out",
            "ens.toml",
            "m0.safetensors",
            "m1.safetensors",
        ],
        p,
    ));
    let mut args = vec![
        "evaluate", "--model", "ens.toml", "--eps", "0.05", "--limit", "8",
    ];
    args.extend_from_slice(&small);
    let ens = json(&rampart(&args, p));
    assert_eq!(ens["model"]["kind"], "ensemble");
    assert_eq!(ens["after_each"].as_array().unwrap().len(), 3);
    // A fusion model over its network features and its text embeddings.
    let model = fixtures.join("torch-fusion.safetensors");
    let records = fixtures.join("torch-fusion-records.jsonl");
    for modality in ["network", "text"] {
        let mut args = vec![
            "evaluate",
            "--model",
            model.to_str().unwrap(),
            "--records",
            records.to_str().unwrap(),
            "--modality",
            modality,
            "--eps",
            "0.1",
        ];
        args.extend_from_slice(&small);
        let report = json(&rampart(&args, p));
        assert_eq!(report["input"], modality);
        assert_eq!(report["model"]["kind"], "fusion");
        assert!(report["max_perturbation"].as_f64().unwrap() <= 0.1 + 1e-6);
    }
}
