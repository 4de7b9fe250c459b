//! The wgpu path against the flex CPU backend: same logits, input gradients and parameter
//! gradients for the same weights and inputs, within float tolerance.
//!
//! On a machine without a GPU these run on Mesa's software Vulkan (lavapipe), the same kernels a
//! GPU runs; scripts/test.sh installs it. They fail, saying so, when no adapter exists.

mod common;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rampart::attack::{Attack, Norm, Pgd};
use rampart::certify::{self, Smooth, Stage};
use rampart::device::{self, DeviceChoice};
use rampart::model::{Arch, ImageNet, ImageSpec};

fn wgpu() -> Device {
    device::choose(DeviceChoice::Wgpu)
        .unwrap_or_else(|e| panic!("{e}: install mesa-vulkan-drivers or run scripts/test.sh"))
        .device
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-3 * scale + 1e-5,
        "{what}: max difference {worst} (scale {scale})"
    );
}

fn vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec().unwrap()
}

/// Logits, input gradient of the cross-entropy, and the gradient of the first layer's weight.
fn forward_backward(arch: Arch, device: &Device, weights: &ImageNet) -> [Vec<f32>; 3] {
    let ad = device.clone().autodiff();
    let model = weights.clone().to_device(device).train();
    let flex = Device::flex();
    flex.seed(11);
    let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &flex);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 1, 4, 1], [4]), &flex);
    let x = x.to_device(device).autodiff().require_grad();
    let y = y.to_device(device).autodiff();
    let logits = model.forward(x.clone());
    let loss = CrossEntropyLossConfig::new()
        .init(&ad)
        .forward(logits.clone(), y);
    let mut grads = loss.backward();
    let gx: Tensor<4> = x.grad_remove(&mut grads).unwrap();
    let params = GradientsParams::from_grads(grads, &model);
    let first = model.first_weight_id();
    let gw = match arch {
        Arch::Mlp => params
            .get::<2>(first)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap(),
        Arch::Cnn => params
            .get::<4>(first)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap(),
    };
    [
        vec(logits.inner()),
        gx.inner()
            .flatten::<2>(1, 3)
            .into_data()
            .try_to_vec()
            .unwrap(),
        gw,
    ]
}

#[test]
fn wgpu_matches_flex_on_mlp_and_cnn() {
    let gpu = wgpu();
    for arch in [Arch::Mlp, Arch::Cnn] {
        let flex = Device::flex();
        flex.seed(5);
        let weights = ImageSpec::fashion_normalised(arch).init(&flex);
        let [l_cpu, gx_cpu, gw_cpu] = forward_backward(arch, &flex, &weights);
        let [l_gpu, gx_gpu, gw_gpu] = forward_backward(arch, &gpu, &weights);
        close(&l_cpu, &l_gpu, &format!("{arch} logits"));
        close(&gx_cpu, &gx_gpu, &format!("{arch} input gradient"));
        close(
            &gw_cpu,
            &gw_gpu,
            &format!("{arch} first-layer weight gradient"),
        );
        assert!(
            gx_cpu.iter().any(|v| *v != 0.0),
            "{arch}: gradient is all zero"
        );
    }
}

/// One PGD step (no random start, so no backend noise) moves the same pixels the same way on
/// wgpu as on flex: the step is alpha · sign(gradient), so pixels can differ only where the
/// gradient is within float error of 0.
#[test]
fn a_pgd_step_on_wgpu_matches_flex() {
    let gpu = wgpu();
    let flex = Device::flex();
    flex.seed(21);
    let weights = ImageSpec::fashion_normalised(Arch::Mlp).init(&flex);
    let x = Tensor::<4>::random([8, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &flex);
    let y =
        Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3, 4, 5, 6, 7], [8]), &flex);
    let attack = Pgd::new(Norm::Linf, 0.1, 1)
        .unwrap()
        .with_alpha(0.05)
        .unwrap()
        .with_random_start(false);
    let on = |device: &Device| {
        let model = weights.clone().to_device(device).valid();
        let adv = attack.perturb(
            &model,
            &x.clone().to_device(device),
            &y.clone().to_device(device),
            None,
        );
        common::floats(adv.to_device(&flex))
    };
    let (a, b) = (on(&flex), on(&gpu));
    let same = a
        .iter()
        .zip(&b)
        .filter(|(p, q)| (*p - *q).abs() < 1e-5)
        .count();
    assert!(
        same as f64 >= 0.99 * a.len() as f64,
        "{same} of {} pixels agree",
        a.len()
    );
    let moved = a
        .iter()
        .zip(common::floats(x))
        .filter(|(p, q)| (*p - q).abs() > 1e-3)
        .count();
    assert!(
        moved as f64 > 0.5 * a.len() as f64,
        "the step moved only {moved} pixels"
    );
}

/// A small certification on wgpu agrees with flex within the binomial noise: the backends
/// draw different noise for the same seed, so counts are compared statistically.
/// The counter-based noise is the same function on both backends: the same keys give the same
/// noise (to float rounding) and so nearly the same votes.
#[test]
fn a_small_certification_on_wgpu_agrees_with_flex() {
    let gpu = wgpu();
    let flex = Device::flex();
    let base = certify::noise::base(3, 1, 0);
    let keys: Vec<u64> = (0..64).map(|j| certify::noise::key(base, j)).collect();
    let on = |d: &Device| vec(certify::noise::gaussian(&keys, [64, 784], 0.25, d));
    close(&on(&flex), &on(&gpu), "noise");
    // Rows without coordinates: zeros of that shape on both (no zero-length narrow).
    let empty = |d: &Device| certify::noise::gaussian(&keys[..2], [2, 0], 0.25, d).dims();
    assert_eq!((empty(&flex), empty(&gpu)), ([2, 0], [2, 0]));
    // Sound smoothing's lattice noise is integer arithmetic: the same bits on both.
    let lattice = certify::noise::Lattice::new(0.25, 255);
    let grid = |d: &Device| vec(lattice.sample(&keys, [64, 784], d));
    assert_eq!(grid(&flex), grid(&gpu), "lattice noise");
    flex.seed(22);
    let weights = ImageSpec::fashion_normalised(Arch::Mlp).init(&flex);
    let x = rampart::data::synthetic(2, 5, &flex).images;
    let n = 2000;
    let counts = |device: &Device| {
        let model = weights.clone().to_device(device).valid();
        let smooth = Smooth {
            base: &model,
            sigma: 0.25,
            batch: 1024,
            seed: 3,
            lattice: None,
        };
        smooth.sample_noise(&x.clone().to_device(device), &[0, 1], n, Stage::Estimation)
    };
    let (a, b) = (counts(&flex), counts(&gpu));
    for (ra, rb) in a.iter().zip(&b) {
        assert_eq!(rb.iter().sum::<u64>(), n as u64);
        // Only a vote whose logits tie to float rounding can differ.
        let moved: u64 = ra.iter().zip(rb).map(|(p, q)| p.abs_diff(*q)).sum();
        assert!(moved <= 4, "flex {ra:?} vs wgpu {rb:?}");
    }
}

#[test]
fn auto_falls_back_from_a_software_adapter_to_flex() {
    let wgpu = device::choose(DeviceChoice::Wgpu).expect("a wgpu adapter (lavapipe in CI)");
    let auto = device::choose(DeviceChoice::Auto).unwrap();
    if wgpu.description.contains("software adapter") {
        assert!(auto.description.starts_with("flex"), "{}", auto.description);
        assert!(
            auto.description.contains("only a software adapter"),
            "{}",
            auto.description
        );
    } else {
        assert!(
            auto.description.contains("GPU found"),
            "{}",
            auto.description
        );
    }
}

/// APGD-T (sorted logits in the DLR loss, per-example steps) and Square L∞ and L2 (row
/// selection, window slices) on wgpu: inside the ball and the box, and they fool the mlp at a
/// large radius. The random streams differ between backends, so this checks behaviour, not
/// equality with flex.
#[test]
fn apgd_t_and_square_run_on_wgpu() {
    use rampart::attack::{Apgd, Square};
    use rampart::classifier::Classifier;
    let _turn = common::serial();
    let gpu = wgpu();
    gpu.seed(5);
    let model = ImageSpec::fashion_normalised(Arch::Mlp)
        .init(&Device::flex())
        .to_device(&gpu)
        .valid();
    let x = Tensor::<4>::random([16, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &gpu);
    let y = model.decide(x.clone());
    let apgd_t = Apgd::new(Norm::Linf, 0.3, 10).unwrap().targeted(2).unwrap();
    let mut adv_t = x.clone();
    for run in 0..apgd_t.runs() {
        adv_t = apgd_t.run(&model, &x, &y, None, run).adversarial;
    }
    let square_linf = Square::new(Norm::Linf, 0.3, 50).unwrap();
    let square_l2 = Square::new(Norm::L2, 5.0, 50).unwrap();
    let found = [
        ("apgd-t", adv_t, Norm::Linf, 0.3),
        (
            "square linf",
            square_linf.perturb(&model, &x, &y, None),
            Norm::Linf,
            0.3,
        ),
        (
            "square l2",
            square_l2.perturb(&model, &x, &y, None),
            Norm::L2,
            5.0,
        ),
    ];
    for (name, adv, norm, eps) in found {
        let delta = (adv.clone() - x.clone()).reshape([16, 784]);
        let size = match norm {
            Norm::Linf => delta.abs().max_dim(1),
            Norm::L2 => delta.powf_scalar(2.0).sum_dim(1).sqrt(),
        };
        let largest = vec(size).into_iter().fold(0f32, f32::max);
        assert!(
            largest <= eps + 1e-4,
            "{name}: {norm:?} norm {largest} > {eps}"
        );
        let pixels = vec(adv.clone().reshape([16, 784]));
        assert!(
            pixels.iter().all(|p| (0.0..=1.0).contains(p)),
            "{name}: left the box"
        );
        let fooled: i64 = model
            .decide(adv)
            .not_equal(y.clone())
            .int()
            .sum()
            .into_scalar();
        assert!(fooled > 0, "{name} fooled nothing at a large radius");
    }
}

#[test]
fn detector_scores_and_the_mmd_test_on_wgpu_match_flex() {
    use rampart::detect::adversarial::{Detector, Mahalanobis, Squeeze};
    use rampart::detect::drift::mmd::mmd_test;
    let _turn = common::serial();
    let gpu = wgpu();
    let flex = Device::flex();
    flex.seed(4);
    let cpu_model = ImageSpec::fashion_normalised(Arch::Mlp).init(&flex).valid();
    let gpu_model = cpu_model.clone().to_device(&gpu);
    let x = Tensor::<4>::random([24, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &flex);
    let y = Tensor::<1, Int>::from_data(
        TensorData::new((0..24).map(|i| i % 10).collect::<Vec<i64>>(), [24]),
        &flex,
    );
    let xg = x.clone().to_device(&gpu);
    let squeeze = Squeeze::new(4, 3).unwrap();
    let one = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
    close(
        &one(squeeze.score(&cpu_model, &x)),
        &one(squeeze.score(&gpu_model, &xg)),
        "squeeze",
    );
    // Fitted once (the eigendecomposition is on the host), scored on each device.
    let mc = Mahalanobis::fit(&cpu_model, &x, &y, 8).unwrap();
    let mg = Mahalanobis {
        means: mc.means.clone().to_device(&gpu),
        precision: mc.precision.clone().to_device(&gpu),
    };
    close(
        &one(mc.score(&cpu_model, &x)),
        &one(mg.score(&gpu_model, &xg)),
        "mahalanobis",
    );
    let a = Tensor::<2>::random([30, 5], Distribution::Normal(0.0, 1.0), &flex);
    let b = Tensor::<2>::random([20, 5], Distribution::Normal(0.5, 1.0), &flex);
    let (tc, tg) = (
        mmd_test(a.clone(), b.clone(), 50, 3).unwrap(),
        mmd_test(a.to_device(&gpu), b.to_device(&gpu), 50, 3).unwrap(),
    );
    assert!((tc.statistic - tg.statistic).abs() < 1e-4, "{tc:?} {tg:?}");
    assert!(
        (tc.p_value - tg.p_value).abs() <= 2.0 / 51.0,
        "{tc:?} {tg:?}"
    );
}

/// Integrated gradients and the deletion curves on wgpu match flex (the same kernels a GPU
/// runs; every path point and curve point batched).
#[test]
fn integrated_gradients_and_deletion_curves_on_wgpu_match_flex() {
    use rampart::explain::faithfulness::curves;
    use rampart::explain::{Baseline, Explainer, IntegratedGradients, Rule};
    let gpu = wgpu();
    let flex = Device::flex();
    flex.seed(22);
    let weights = ImageSpec::fashion_normalised(Arch::Mlp).init(&flex);
    let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &flex);
    let t = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 3, 5, 9], [4]), &flex);
    let ig = IntegratedGradients {
        steps: 8,
        rule: Rule::GaussLegendre,
        baseline: Baseline::Blur(2),
        batch: 32,
    };
    let on = |device: &Device| {
        let model = weights.clone().to_device(device).valid();
        let (x, t) = (x.clone().to_device(device), t.clone().to_device(device));
        let a = ig.attribute(&model, &x, &t);
        let c = curves(&model, &x, &t, a.clone(), x.zeros_like(), 10, 16).unwrap();
        let a = common::floats(a.to_device(&flex));
        (a, c.deletion.concat(), c.insertion.concat())
    };
    let (a, b) = (on(&flex), on(&gpu));
    close(&a.0, &b.0, "integrated gradients");
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    close(&f(&a.1), &f(&b.1), "deletion curves");
    close(&f(&a.2), &f(&b.2), "insertion curves");
}

/// On a machine with no desktop session (servers, CI), opening wgpu prints nothing but
/// Rampart's own lines: Mesa's device-selection layer would otherwise print "error:
/// XDG_RUNTIME_DIR is invalid or not set" four times per command (`device::quiet_headless_vulkan`).
#[test]
fn a_headless_machine_sees_no_spurious_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "eval",
            "--model",
            common::reference_path().to_str().unwrap(),
        ])
        .args(["--device", "wgpu", "--limit", "2"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE")
        .env_remove("DRI_PRIME")
        .output()
        .expect("run rampart");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("device: wgpu"), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
}
