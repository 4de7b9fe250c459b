//! Noisy forward passes per second during certification (Monte Carlo sampling: device noise,
//! forward, on-device vote counting), for `mlp` and `cnn` at several batch sizes.
//!
//!   cargo bench --bench certify
//!   RAMPART_BENCH_DEVICE=wgpu cargo bench --bench certify

use burn::tensor::{Distribution, Tensor};
use divan::{Bencher, counter::ItemsCount};
use rampart::certify::{Smooth, Stage};
use rampart::device;
use rampart::model::{Arch, ImageSpec};

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

/// One image, `BATCH` noisy copies: exactly one forward pass of `BATCH` inputs.
#[divan::bench(args = [Arch::Mlp, Arch::Cnn], consts = [256, 1024, 4096], sample_count = 5, sample_size = 1)]
fn noisy_forwards<const BATCH: usize>(bencher: Bencher, arch: Arch) {
    let device = chosen();
    let model = ImageSpec::fashion_normalised(arch).init(&device);
    let x = Tensor::<4>::random([1, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &device);
    let smooth = Smooth {
        base: &model,
        sigma: 0.25,
        batch: BATCH,
        seed: 0,
        lattice: None,
    };
    smooth.sample_noise(&x, &[0], BATCH, Stage::Estimation); // warm-up
    bencher
        .counter(ItemsCount::new(BATCH))
        .bench_local(|| smooth.sample_noise(&x, &[0], BATCH, Stage::Estimation));
}
