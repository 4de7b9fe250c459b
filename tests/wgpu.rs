//! The wgpu path against the flex CPU backend: same logits, input gradients and parameter
//! gradients for the same weights and inputs, within float tolerance.
//!
//! On a machine without a GPU these run on Mesa's software Vulkan (lavapipe), the same kernels a
//! GPU runs; scripts/test.sh installs it. They fail, saying so, when no adapter exists.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rampart::device::{self, DeviceChoice};
use rampart::model::{Arch, ModelSpec};

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
fn forward_backward(
    arch: Arch,
    device: &Device,
    weights: &rampart::model::Classifier,
) -> [Vec<f32>; 3] {
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
        let weights = ModelSpec::fashion_normalised(arch).init(&flex);
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
