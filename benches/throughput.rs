//! Forward, training-step and DP-SGD-step throughput (images/s) of `mlp` and `cnn`.
//!
//!   cargo bench --bench throughput                      # flex (CPU)
//!   RAMPART_BENCH_DEVICE=wgpu cargo bench --bench throughput
//!
//! Divan reports time per iteration and, through the item counter, images per second.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Distribution, Int, Tensor};
use divan::{Bencher, counter::ItemsCount};
use rampart::device;
use rampart::model::{Arch, ImageSpec};
use rampart::privacy::dpsgd::{DpSgd, private_step};

const BATCH: usize = 128;

fn main() {
    // SAFETY: before any thread starts.
    unsafe { rampart::device::quiet_headless_vulkan() };
    divan::main();
}

fn chosen() -> burn::tensor::Device {
    let chosen = device::from_env("RAMPART_BENCH_DEVICE").unwrap_or_else(|e| panic!("{e}"));
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| eprintln!("device: {}", chosen.description));
    chosen.device
}

fn batch(device: &burn::tensor::Device) -> (Tensor<4>, Tensor<1, Int>) {
    device.seed(0);
    let x = Tensor::<4>::random([BATCH, 1, 28, 28], Distribution::Uniform(0.0, 1.0), device);
    let y = Tensor::<1>::random([BATCH], Distribution::Uniform(0.0, 10.0), device).int();
    (x, y)
}

#[divan::bench(args = [Arch::Mlp, Arch::Cnn], sample_count = 10, sample_size = 1)]
fn forward(bencher: Bencher, arch: Arch) {
    let device = chosen();
    let model = ImageSpec::fashion_normalised(arch).init(&device);
    let (x, _) = batch(&device);
    let _ = model.forward(x.clone()).into_data(); // warm-up (kernel compilation, autotune)
    bencher
        .counter(ItemsCount::new(BATCH))
        .bench_local(|| model.forward(x.clone()).into_data());
}

#[divan::bench(args = [Arch::Mlp, Arch::Cnn], sample_count = 10, sample_size = 1)]
fn train_step(bencher: Bencher, arch: Arch) {
    let device = chosen();
    let ad = device.clone().autodiff();
    let mut model = Some(ImageSpec::fashion_normalised(arch).init(&ad));
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let (x, y) = batch(&device);
    let (x, y) = (x.autodiff(), y.autodiff());
    let mut step = || {
        let m = model.take().expect("model");
        let loss = loss_fn.forward(m.forward(x.clone()), y.clone());
        let value = loss.clone().inner().into_data();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(optim.step(1e-3, m, grads));
        value
    };
    step(); // warm-up
    bencher.counter(ItemsCount::new(BATCH)).bench_local(step);
}

/// DP-SGD's step on the same batch (per-example norms, clipped sum, noise): its cost against
/// `train_step`.
#[divan::bench(args = [Arch::Mlp, Arch::Cnn], sample_count = 10, sample_size = 1)]
fn dp_sgd_step(bencher: Bencher, arch: Arch) {
    let device = chosen();
    let ad = device.clone().autodiff();
    let mut model = Some(ImageSpec::fashion_normalised(arch).init(&ad));
    let mut optim = AdamConfig::new().init();
    let (x, y) = batch(&device);
    let dp = DpSgd {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        expected_batch: BATCH as f64,
    };
    let mut step = || {
        let m = model.take().expect("model");
        let s = private_step(&m, x.clone(), &y, &dp);
        let value = s.loss_sum.into_data();
        model = Some(optim.step(1e-3, m, s.grads));
        value
    };
    step(); // warm-up
    bencher.counter(ItemsCount::new(BATCH)).bench_local(step);
}
