use super::*;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Distribution, Tolerance};

/// Explicit padding `(top, left, bottom, right)`.
fn pad(top: usize, left: usize, bottom: usize, right: usize) -> PaddingConfig2d {
    PaddingConfig2d::Explicit(top, left, bottom, right)
}

fn layer(c: [usize; 2], k: [usize; 2], padding: PaddingConfig2d, bias: bool, d: &Device) -> Conv2d {
    Conv2dConfig::new(c, k)
        .with_padding(padding)
        .with_bias(bias)
        .init(d)
}

fn normal(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn close(a: Tensor<4>, b: Tensor<4>) {
    assert_eq!(a.dims(), b.dims());
    a.into_data()
        .assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-5, 1e-4));
}

/// Whether `conv2d` runs `layer` on `x` with this module's kernel, not Burn's (observed: the
/// kernel counts its runs on this thread).
fn ours(layer: &Conv2d, x: Tensor<4>) -> bool {
    let before = kernel::RUNS.with(|r| r.get());
    let _ = conv2d(layer, x);
    kernel::RUNS.with(|r| r.get()) > before
}

/// This module's forward against Burn's, without autodiff.
fn check_forward(layer: &Conv2d, x: Tensor<4>) {
    assert!(ours(layer, x.clone()), "the kernel should apply");
    close(conv2d(layer, x.clone()), layer.forward(x));
}

/// The cases both the forward and the gradients take through this module: the cnn's two layers,
/// valid padding (narrower output), asymmetric padding, padding as wide as the kernel,
/// non-square kernels, no bias, one image (the product parallelised instead of the images).
fn cases() -> Vec<(PaddingConfig2d, [usize; 2], bool, [usize; 4])> {
    vec![
        (pad(2, 2, 2, 2), [5, 5], true, [3, 1, 28, 28]),
        (pad(2, 2, 2, 2), [5, 5], true, [5, 32, 14, 14]),
        (PaddingConfig2d::Valid, [3, 3], true, [4, 3, 9, 7]),
        (pad(1, 0, 2, 1), [3, 2], false, [1, 2, 6, 5]),
        (pad(0, 2, 1, 0), [2, 3], true, [2, 3, 5, 6]),
        // As wide as the input but fewer rows: the shifted-plane copy over part of the rows.
        (pad(0, 1, 0, 1), [3, 3], true, [3, 2, 7, 5]),
        // Padding as wide as the kernel (whole rows and columns of zeros in the unfold) and a
        // kernel as large as the padded input (one output place).
        (pad(3, 3, 3, 3), [3, 3], true, [2, 2, 4, 4]),
        (pad(1, 1, 1, 1), [5, 5], true, [3, 2, 3, 3]),
        // Wider than the input with unequal left and right padding (7 columns from 4).
        (pad(0, 3, 1, 1), [2, 2], true, [2, 3, 5, 4]),
    ]
}

#[test]
fn the_forward_matches_burn() {
    let d = Device::flex();
    for (padding, k, bias, shape) in cases() {
        let c_out = if shape[1] == 1 { 32 } else { 4 };
        check_forward(
            &layer([shape[1], c_out], k, padding, bias, &d),
            normal(shape, &d),
        );
    }
}

#[test]
fn a_reused_buffer_gives_the_same_result() {
    // Many images on few threads: every task's buffer serves several images, so stale values
    // in the buffer would show as a difference from Burn.
    let d = Device::flex();
    check_forward(
        &layer([2, 3], [5, 5], pad(2, 2, 2, 2), true, &d),
        normal([64, 2, 6, 6], &d),
    );
}

/// The gradients of `sum(conv(x) * r)` with respect to the input (when `track_x`), the weight
/// and the bias (when the layer is on an autodiff device), through this module and through Burn.
fn check_gradients(layer: &Conv2d, x: Tensor<4>, track_x: bool) {
    let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
        let x = if track_x {
            x.clone().autodiff().require_grad()
        } else {
            x.clone()
        };
        let y = f(x.clone());
        let r = Tensor::<4>::ones(y.dims(), &y.device()) * 0.5 + y.clone().inner().sin();
        let grads = (y.clone() * r).sum().backward();
        let dx = x.grad(&grads);
        let dw = layer.weight.val().grad(&grads);
        let db = layer.bias.as_ref().and_then(|b| b.val().grad(&grads));
        (y.inner(), dx, dw, db)
    };
    let ours = run(&|x| conv2d(layer, x));
    let burn = run(&|x| layer.forward(x));
    close(ours.0, burn.0);
    assert_eq!(ours.1.is_some(), track_x);
    if let (Some(a), Some(b)) = (ours.1, burn.1) {
        close(a, b);
    }
    assert_eq!(ours.2.is_some(), burn.2.is_some());
    if let (Some(a), Some(b)) = (ours.2, burn.2) {
        close(a, b);
    }
    assert_eq!(ours.3.is_some(), burn.3.is_some());
    if let (Some(a), Some(b)) = (ours.3, burn.3) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-5, 1e-4));
    }
}

#[test]
fn gradients_match_burn_for_training_and_attacks() {
    let plain = Device::flex();
    let tracked = plain.clone().autodiff();
    for (padding, k, bias, shape) in cases() {
        let c = [shape[1], 4];
        let (trained, attacked) = (
            layer(c, k, padding.clone(), bias, &tracked),
            layer(c, k, padding, bias, &plain),
        );
        let x = normal(shape, &plain);
        assert!(ours(&trained, x.clone()) && ours(&attacked, x.clone().autodiff()));
        // Training: weights tracked, the input a constant (the first layer) or tracked.
        check_gradients(&trained, x.clone(), false);
        check_gradients(&trained, x.clone(), true);
        // An attack on a frozen model: only the input tracked.
        check_gradients(&attacked, x, true);
    }
}

#[test]
fn the_weight_gradient_sums_many_chunks() {
    // 40 images: three chunks of the weight gradient's partial sums.
    let d = Device::flex().autodiff();
    let layer = layer([2, 3], [5, 5], pad(2, 2, 2, 2), true, &d);
    check_gradients(&layer, normal([40, 2, 6, 6], &Device::flex()), true);
}

#[test]
fn what_the_kernel_cannot_run_goes_to_burn() {
    let d = Device::flex();
    let x = normal([2, 2, 8, 8], &d);
    let strided = Conv2dConfig::new([2, 4], [3, 3])
        .with_stride([2, 2])
        .init(&d);
    let grouped = Conv2dConfig::new([2, 4], [3, 3]).with_groups(2).init(&d);
    let same = Conv2dConfig::new([2, 4], [3, 3])
        .with_padding(PaddingConfig2d::Same)
        .init(&d);
    // An empty plane, even with padding that would give outputs, is left to Burn.
    let padded = layer([2, 4], [3, 3], pad(3, 3, 3, 3), true, &d);
    for empty in [[2, 2, 0, 4], [2, 2, 4, 0]] {
        assert!(geometry(&padded, &Tensor::zeros(empty, &d)).is_none());
    }
    for layer in [&strided, &grouped, &same] {
        assert!(!ours(layer, x.clone()));
        conv2d(layer, x.clone())
            .into_data()
            .assert_eq(&layer.forward(x.clone()).into_data(), true);
    }
}
