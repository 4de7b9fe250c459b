//! PGD step, APGD iteration and Square query throughput (images·steps/s, one forward and one
//! backward per PGD/APGD step, one forward per Square query) and adversarial-training step
//! throughput (images/s) for the `cnn` at batch 256. APGD and Square run at a radius too small
//! to fool anything, so the whole batch is attacked at every step.
//!
//!   cargo bench --bench attack
//!   RAMPART_BENCH_DEVICE=wgpu cargo bench --bench attack

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor};
use divan::{Bencher, counter::ItemsCount};
use rampart::attack::{Apgd, Attack, Norm, Pgd, Square};
use rampart::device;
use rampart::model::{Arch, ImageSpec};

const BATCH: usize = 256;
const STEPS: usize = 20;

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

fn batch(device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    device.seed(0);
    let x = Tensor::<4>::random([BATCH, 1, 28, 28], Distribution::Uniform(0.0, 1.0), device);
    let y = Tensor::<1>::random([BATCH], Distribution::Uniform(0.0, 10.0), device).int();
    (x, y)
}

fn pgd(steps: usize) -> Pgd {
    Pgd::new(Norm::Linf, 0.1, steps)
        .and_then(|p| p.with_alpha(0.025))
        .expect("valid attack")
}

/// One PGD run of STEPS steps on a batch: counter is images × steps.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn pgd_steps(bencher: Bencher) {
    let device = chosen();
    let model = ImageSpec::fashion_normalised(Arch::Cnn).init(&device);
    let (x, y) = batch(&device);
    let attack = pgd(STEPS);
    let _ = attack.perturb(&model, &x, &y, None).into_data();
    bencher
        .counter(ItemsCount::new(BATCH * STEPS))
        .bench_local(|| attack.perturb(&model, &x, &y, None).into_data());
}

/// One APGD-CE run of STEPS iterations on a batch: counter is images × steps.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn apgd_steps(bencher: Bencher) {
    let device = chosen();
    let model = ImageSpec::fashion_normalised(Arch::Cnn).init(&device);
    let (x, y) = batch(&device);
    let attack = Apgd::new(Norm::Linf, 1e-6, STEPS).expect("valid attack");
    let _ = attack.perturb(&model, &x, &y, None).into_data();
    bencher
        .counter(ItemsCount::new(BATCH * STEPS))
        .bench_local(|| attack.perturb(&model, &x, &y, None).into_data());
}

/// Queries of one Square run on a batch: counter is images × queries.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn square_queries(bencher: Bencher) {
    const QUERIES: usize = 20;
    let device = chosen();
    let model = ImageSpec::fashion_normalised(Arch::Cnn).init(&device);
    let (x, _) = batch(&device);
    // Labels the model gets right, so that no example drops out of the batch.
    let y = model.forward(x.clone()).argmax(1).squeeze_dim::<1>(1);
    let attack = Square::new(Norm::Linf, 1e-6, QUERIES).expect("valid attack");
    let _ = attack.perturb(&model, &x, &y, None).into_data();
    bencher
        .counter(ItemsCount::new(BATCH * QUERIES))
        .bench_local(|| attack.perturb(&model, &x, &y, None).into_data());
}

/// One training step on PGD-`K` examples (K = 1: FGSM-RS cost, K = 7: Madry et al.).
#[divan::bench(consts = [1, 7], sample_count = 3, sample_size = 1)]
fn adversarial_train_step<const K: usize>(bencher: Bencher) {
    let device = chosen();
    let ad = device.clone().autodiff();
    let mut model = Some(ImageSpec::fashion_normalised(Arch::Cnn).init(&ad));
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let (x, y) = batch(&device);
    let attack = pgd(K);
    let mut step = || {
        let m = model.take().expect("model");
        let x_adv = attack.perturb(&burn::module::Module::valid(&m), &x, &y, None);
        let loss = loss_fn.forward(m.forward(x_adv.autodiff()), y.clone().autodiff());
        let value = loss.clone().inner().into_data();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(optim.step(1e-3, m, grads));
        value
    };
    step();
    bencher.counter(ItemsCount::new(BATCH)).bench_local(step);
}
