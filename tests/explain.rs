//! Gradient attributions: analytic on a linear model, complete on the reference cnn, the
//! same batched as one at a time.

mod common;

use common::Linear;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rampart::explain::{
    Baseline, Explainer, GradientTimesInput, IntegratedGradients, Rule, Saliency, SmoothGrad,
    completeness_delta,
};

fn linear(d: &Device) -> (Linear, Vec<f32>) {
    let w: Vec<f32> = vec![
        0.5, -1.0, 2.0, 1.5, 0.25, -0.5, -2.0, 3.0, 1.0, 0.0, -0.75, 0.1,
    ];
    let model = Linear::new(w.clone(), vec![0.3, -0.2, 0.1], d);
    (model, w)
}

#[test]
fn on_a_linear_model_attributions_are_the_contributions() {
    let d = Device::flex();
    let (model, w) = linear(&d);
    let xs = vec![0.2f32, 0.9, 0.4, 0.7, 1.0, 0.1, 0.6, 0.3];
    let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [2, 4]), &d);
    let target = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &d);
    let contribution = |i: usize, f: usize, c: usize| xs[i * 4 + f] * w[f * 3 + c];
    let gxi = common::floats(GradientTimesInput.attribute(&model, &x, &target));
    let sal = common::floats(Saliency.attribute(&model, &x, &target));
    for rule in [
        Rule::GaussLegendre,
        Rule::RiemannMiddle,
        Rule::RiemannTrapezoid,
    ] {
        let ig = IntegratedGradients {
            steps: 7,
            rule,
            baseline: Baseline::Zero,
            batch: 5,
        };
        let a = ig.attribute(&model, &x, &target);
        let delta = common::floats(completeness_delta(
            &model,
            &x,
            &x.zeros_like(),
            &target,
            a.clone(),
        ));
        assert!(delta.iter().all(|v| v.abs() < 1e-4), "{rule:?}: {delta:?}");
        let a = common::floats(a);
        for (i, c) in [(0, 2), (1, 0)] {
            for f in 0..4 {
                let want = contribution(i, f, c);
                assert!((a[i * 4 + f] - want).abs() < 1e-5, "ig {rule:?} {i} {f}");
                assert!((gxi[i * 4 + f] - want).abs() < 1e-6, "gxi {i} {f}");
                assert!(
                    (sal[i * 4 + f] - w[f * 3 + c].abs()).abs() < 1e-6,
                    "saliency {i} {f}"
                );
            }
        }
    }
    // SmoothGrad of a linear model's saliency is its saliency, whatever the noise.
    let sg = SmoothGrad {
        inner: Saliency,
        samples: 8,
        sigma: 0.3,
        batch: 5,
    };
    let s = common::floats(sg.attribute(&model, &x, &target));
    assert!(s.iter().zip(&sal).all(|(a, b)| (a - b).abs() < 1e-5));
}

#[test]
fn integrated_gradients_on_the_cnn_complete_and_batch() {
    let _g = common::serial();
    let model = rampart::classifier::ImageModel::Single(common::reference_cnn());
    let set = common::fashion_test(1, 4);
    let (x, y) = set.range(0, 4);
    let delta_at = |steps: usize| {
        let ig = IntegratedGradients {
            steps,
            rule: Rule::GaussLegendre,
            baseline: Baseline::Zero,
            batch: 256,
        };
        let a = ig.attribute(&model, &x, &y);
        let gap = common::floats(completeness_delta(
            &model,
            &x,
            &x.zeros_like(),
            &y,
            a.zeros_like(),
        ));
        let delta = common::floats(completeness_delta(&model, &x, &x.zeros_like(), &y, a));
        (delta, gap)
    };
    let (d20, gap) = delta_at(20);
    let (d200, _) = delta_at(200);
    eprintln!("f(x) - f(0): {gap:?}; IG completeness delta at 20 steps {d20:?}, at 200 {d200:?}");
    for i in 0..4 {
        // Relative to f(x) − f(0), which the attributions must sum to.
        let scale = gap[i].abs().max(1.0);
        assert!(
            d200[i].abs() / scale < 0.02,
            "example {i}: delta {} of {}",
            d200[i],
            gap[i]
        );
        assert!(
            d20[i].abs() / scale < 0.2,
            "example {i}: delta {} of {}",
            d20[i],
            gap[i]
        );
    }
    // Batched and one at a time agree.
    let ig = IntegratedGradients {
        steps: 20,
        rule: Rule::GaussLegendre,
        baseline: Baseline::Blur(2),
        batch: 64,
    };
    let all = common::floats(ig.attribute(&model, &x, &y));
    for i in 0..4 {
        let one = common::floats(ig.attribute(
            &model,
            &x.clone().narrow(0, i, 1),
            &y.clone().narrow(0, i, 1),
        ));
        let part = &all[i * 784..(i + 1) * 784];
        let worst = one
            .iter()
            .zip(part)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "example {i}: {worst}");
    }
    // SmoothGrad on an mlp (no max-pool ties, where a vanishing noise could route the gradient
    // elsewhere): with vanishing noise it is saliency; with σ = 0.3 (in blocks of 4 noisy
    // inputs) it averages over other gradients.
    let d = Device::flex();
    d.seed(5);
    let mlp = rampart::classifier::ImageModel::Single(
        rampart::model::ImageSpec::fashion_normalised(rampart::model::Arch::Mlp).init(&d),
    );
    let sal = common::floats(Saliency.attribute(&mlp, &x, &y));
    let smooth = |sigma: f64| {
        let sg = SmoothGrad {
            inner: Saliency,
            samples: 6,
            sigma,
            batch: 4,
        };
        common::floats(sg.attribute(&mlp, &x, &y))
    };
    let gap = |a: &[f32]| {
        a.iter()
            .zip(&sal)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    let scale = sal.iter().fold(0f32, |m, v| m.max(v.abs()));
    let g0 = gap(&smooth(1e-6));
    assert!(g0 < 1e-3 * scale, "{g0} of {scale}");
    let g1 = gap(&smooth(0.3));
    assert!(g1 > 0.1 * scale, "{g1} of {scale}");
}

/// Integrated gradients on the PyTorch-written cnn fixture match Captum's
/// `IntegratedGradients` (zero baseline, 50 steps, Gauss-Legendre and trapezoid rules) on four
/// Fashion-MNIST test images, as scripts/make-captum-fixture.py recorded them: within 0.1% of
/// the largest attribution.
#[test]
fn integrated_gradients_match_captum_on_a_pytorch_cnn() {
    use rampart::artifact::{self, AnyModel, OpenOptions};
    let d = Device::flex();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let opened = artifact::open(
        &root.join("torch-cnn.safetensors"),
        OpenOptions::default(),
        &d,
    )
    .unwrap();
    let AnyModel::Image { net, .. } = opened.model else {
        panic!("not an image model");
    };
    let model = burn::module::Module::valid(&net);
    let captum: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("torch-cnn-captum-ig.json")).unwrap(),
    )
    .unwrap();
    let flat = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_f64().unwrap() as f32)
            })
            .collect()
    };
    let x = Tensor::<4>::from_data(TensorData::new(flat(&captum["inputs"]), [4, 1, 28, 28]), &d);
    let targets: Vec<i64> = captum["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    let target = Tensor::<1, Int>::from_data(TensorData::new(targets, [4]), &d);
    // Captum's trapezoid puts its 50 nodes at linspace(0, 1, 50) but weighs them 1/50 (ends
    // halved), so its weights sum to 49/50: its attributions are ours (step 1/49) times 49/50.
    for (name, rule, captum_scale) in [
        ("gauss-legendre", Rule::GaussLegendre, 1.0),
        ("riemann-trapezoid", Rule::RiemannTrapezoid, 49.0 / 50.0),
    ] {
        let ig = IntegratedGradients {
            steps: 50,
            rule,
            baseline: Baseline::Zero,
            batch: 64,
        };
        let ours = common::floats(ig.attribute(&model, &x, &target));
        let theirs = flat(&captum["attributions"][name]);
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = ours
            .iter()
            .zip(&theirs)
            .fold(0f32, |m, (a, b)| m.max((a * captum_scale - b).abs()));
        assert!(
            worst < 1e-3 * scale,
            "{name}: worst {worst} of scale {scale}"
        );
    }
}
