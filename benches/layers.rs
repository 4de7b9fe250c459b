//! Where the cnn's time goes on the chosen device, layer by layer, at batch 128 (the CPU
//! default of `rampart certify` and `attack`): the certification noise of a batch, each layer
//! alone, the whole forward pass, and the backward passes that training and attacks add.
//! `scripts/bench_layers_torch.py` times the same operations in PyTorch.
//!
//!   cargo bench --bench layers
//!   RAMPART_BENCH_DEVICE=wgpu cargo bench --bench layers

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};
use divan::{Bencher, counter::ItemsCount};
use rampart::certify::noise;
use rampart::device;
use rampart::model::conv::conv2d;
use rampart::model::pool::max_pool2d;
use rampart::model::{Arch, ImageSpec};

const BATCH: usize = 128;

fn main() {
    // As the rampart binary: freed activations are reused, not unmapped (no page faults per
    // batch, which would otherwise add 20-35 ms to `pool1_backward`).
    device::keep_freed_tensors();
    // SAFETY: before any thread starts.
    unsafe { device::quiet_headless_vulkan() };
    divan::main();
}

fn chosen() -> Device {
    let chosen = device::from_env("RAMPART_BENCH_DEVICE").unwrap_or_else(|e| panic!("{e}"));
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| eprintln!("device: {}", chosen.description));
    chosen.device
}

fn uniform<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::<D>::random(shape, Distribution::Uniform(0.0, 1.0), device)
}

/// 5x5, padding 2, as the cnn's convolutions.
fn conv(c_in: usize, c_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [5, 5])
        .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
        .init(device)
}

/// Keyed Gaussian noise for 128 samples of 28x28 (one certification batch), as certification
/// draws it (one kernel pass on the CPU).
#[divan::bench(sample_count = 20)]
fn noise_batch(bencher: Bencher) {
    noise_with(bencher, noise::gaussian);
}

/// The same noise as element-wise tensor operations (the path of devices other than the CPU).
#[divan::bench(sample_count = 20)]
fn noise_batch_tensor(bencher: Bencher) {
    noise_with(bencher, noise::gaussian_tensor);
}

fn noise_with(bencher: Bencher, draw: fn(&[u64], [usize; 4], f64, &Device) -> Tensor<4>) {
    let device = chosen();
    let keys: Vec<u64> = (0..BATCH as u64).map(|j| noise::key(7, j)).collect();
    bencher
        .counter(ItemsCount::new(BATCH))
        .bench_local(|| draw(&keys, [BATCH, 1, 28, 28], 0.25, &device).into_data());
}

/// Times `f` on `x` (no autodiff), reading the result back as a caller would.
fn forward<const D: usize, const E: usize>(
    bencher: Bencher,
    x: Tensor<D>,
    f: impl Fn(Tensor<D>) -> Tensor<E>,
) {
    bencher
        .counter(ItemsCount::new(BATCH))
        .bench_local(|| f(x.clone()).into_data());
}

/// Times `f` on `x` with the backward pass of its sum, reading back the input's gradient.
fn backward(bencher: Bencher, x: Tensor<4>, f: impl Fn(Tensor<4>) -> Tensor<4>) {
    let x = x.require_grad();
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        let grads = f(x.clone()).sum().backward();
        x.grad(&grads).map(|g| g.into_data())
    });
}

/// The first convolution, 1 -> 32 channels on 28x28, as the cnn runs it without autodiff
/// ([`conv2d`]: Rampart's kernel on the CPU, Burn's elsewhere).
#[divan::bench(sample_count = 20)]
fn conv1(bencher: Bencher) {
    conv_forward(bencher, [1, 32], 28, conv2d);
}

/// The second convolution, 32 -> 64 channels on 14x14, as the cnn runs it.
#[divan::bench(sample_count = 20)]
fn conv2(bencher: Bencher) {
    conv_forward(bencher, [32, 64], 14, conv2d);
}

/// The first convolution through Burn's kernel.
#[divan::bench(sample_count = 20)]
fn conv1_kernel(bencher: Bencher) {
    conv_forward(bencher, [1, 32], 28, |l, x| l.forward(x));
}

/// The second convolution through Burn's kernel.
#[divan::bench(sample_count = 20)]
fn conv2_kernel(bencher: Bencher) {
    conv_forward(bencher, [32, 64], 14, |l, x| l.forward(x));
}

fn conv_forward(
    bencher: Bencher,
    [c_in, c_out]: [usize; 2],
    side: usize,
    f: fn(&Conv2d, Tensor<4>) -> Tensor<4>,
) {
    let device = chosen();
    let layer = conv(c_in, c_out, &device);
    let x = uniform([BATCH, c_in, side, side], &device);
    forward(bencher, x, |x| f(&layer, x));
}

/// The second convolution forward and backward (gradients of the input, weights and bias), as
/// the cnn runs it under autodiff ([`conv2d`]).
#[divan::bench(sample_count = 10)]
fn conv2_backward(bencher: Bencher) {
    conv_backward(bencher, [32, 64], 14, false, conv2d);
}

/// The same through Burn's kernels.
#[divan::bench(sample_count = 10)]
fn conv2_backward_kernel(bencher: Bencher) {
    conv_backward(bencher, [32, 64], 14, false, |l, x| l.forward(x));
}

/// `f` forward and backward on a `[c_in, c_out]` layer over `side`-square inputs under
/// autodiff; the weights tracked (training) or constants (`frozen`: attacks).
fn conv_backward(
    bencher: Bencher,
    [c_in, c_out]: [usize; 2],
    side: usize,
    frozen: bool,
    f: fn(&Conv2d, Tensor<4>) -> Tensor<4>,
) {
    let device = chosen().autodiff();
    let layer = conv(c_in, c_out, &device);
    let layer = if frozen { layer.no_grad() } else { layer };
    backward(bencher, uniform([BATCH, c_in, side, side], &device), |x| {
        f(&layer, x)
    });
}

/// The first convolution forward and the input's gradient alone, as attacks run it (the
/// weights are constants there).
#[divan::bench(sample_count = 10)]
fn conv1_input_backward(bencher: Bencher) {
    conv_backward(bencher, [1, 32], 28, true, conv2d);
}

/// The same through Burn's kernels.
#[divan::bench(sample_count = 10)]
fn conv1_input_backward_kernel(bencher: Bencher) {
    conv_backward(bencher, [1, 32], 28, true, |l, x| l.forward(x));
}

/// Burn's 2x2 max-pooling kernel on the first convolution's output.
#[divan::bench(sample_count = 20)]
fn pool1_kernel(bencher: Bencher) {
    let layer = MaxPool2dConfig::new([2, 2]).init();
    forward(bencher, uniform([BATCH, 32, 28, 28], &chosen()), |x| {
        layer.forward(x)
    });
}

/// The pooling as the cnn runs it without autodiff ([`max_pool2d`]: Rampart's kernel on the
/// CPU, Burn's elsewhere).
#[divan::bench(sample_count = 20)]
fn pool1(bencher: Bencher) {
    let layer = MaxPool2dConfig::new([2, 2]).init();
    forward(bencher, uniform([BATCH, 32, 28, 28], &chosen()), |x| {
        max_pool2d(&layer, x)
    });
}

/// The first pooling forward and backward, as training runs it ([`max_pool2d`]).
#[divan::bench(sample_count = 10)]
fn pool1_backward(bencher: Bencher) {
    let layer = MaxPool2dConfig::new([2, 2]).init();
    let x = uniform([BATCH, 32, 28, 28], &chosen().autodiff());
    backward(bencher, x, |x| max_pool2d(&layer, x));
}

/// The same through Burn's kernel.
#[divan::bench(sample_count = 10)]
fn pool1_backward_kernel(bencher: Bencher) {
    let layer = MaxPool2dConfig::new([2, 2]).init();
    let x = uniform([BATCH, 32, 28, 28], &chosen().autodiff());
    backward(bencher, x, |x| layer.forward(x));
}

/// The first dense layer: 3136 -> 1024.
#[divan::bench(sample_count = 20)]
fn fc1(bencher: Bencher) {
    let device = chosen();
    let layer = LinearConfig::new(64 * 7 * 7, 1024).init(&device);
    forward(bencher, uniform([BATCH, 64 * 7 * 7], &device), |x| {
        layer.forward(x)
    });
}

/// The whole cnn forward pass.
#[divan::bench(sample_count = 20)]
fn cnn_forward(bencher: Bencher) {
    let device = chosen();
    let model = ImageSpec::fashion_normalised(Arch::Cnn).init(&device);
    forward(bencher, uniform([BATCH, 1, 28, 28], &device), |x| {
        model.forward(x)
    });
}
