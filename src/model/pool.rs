//! The cnn's 2x2 max pooling (stride 2, no padding) on flex, with and without autodiff.
//!
//! burn-flex's kernel computes each window's bounds with divisions and, under autodiff, writes
//! an i64 index per output and scatters the gradient through them: 17 ms forward and backward
//! on `[128, 32, 28, 28]` against PyTorch's 12 (`cargo bench --bench layers -- pool`). Here each
//! plane is pooled in one pass over pairs of rows, keeping the winner's place in its window (one
//! byte), and the backward writes each output's gradient to that place. The winner is the
//! first largest value in row-major window order, or a NaN, as in Burn's kernel, so values and
//! gradients are identical to Burn's, ties included (tested).
//!
//! Any other window, stride, padding or dilation, an odd side, a GPU, another dtype or gradient
//! checkpointing goes to Burn's kernel through [`MaxPool2d::forward`].

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::flex::{Tracked, flex_f32, plain_f32, tracked_f32};

/// `layer` applied to `x` `[N, C, H, W]`: this module's kernel where it applies, else Burn's.
pub fn max_pool2d(layer: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let two_by_two = layer.kernel_size == [2, 2]
        && layer.stride == [2, 2]
        && layer.dilation == [1, 1]
        && matches!(layer.padding, PaddingConfig2d::Valid);
    if !two_by_two || h % 2 != 0 || w % 2 != 0 || n * c * h * w == 0 {
        return layer.forward(x);
    }
    let shape = [n, c, h, w];
    let y = if x.is_autodiff() {
        tracked_f32(x.clone()).map(|t| Tensor::from_primitive::<Autodiff<Flex>>(tracked(t, shape)))
    } else {
        plain_f32(x.clone()).map(|t| {
            let (y, _) = forward(t.storage(), shape, false);
            Tensor::from_primitive::<Flex>(flex_f32(y, [n, c, h / 2, w / 2]))
        })
    };
    y.unwrap_or_else(|| layer.forward(x))
}

#[cfg(test)]
thread_local! {
    /// How many times this thread ran [`forward`].
    static RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The pooled `[N, C, H/2, W/2]` and, when `keep`, each output's winner in its window
/// (0 top left, 1 top right, 2 bottom left, 3 bottom right).
fn forward(x: &[f32], [n, c, h, w]: [usize; 4], keep: bool) -> (Vec<f32>, Vec<u8>) {
    #[cfg(test)]
    RUNS.with(|r| r.set(r.get() + 1));
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0f32; n * c * oh * ow];
    let mut arg = vec![0u8; if keep { y.len() } else { 0 }];
    let planes = x.par_chunks(h * w).zip(y.par_chunks_mut(oh * ow));
    if keep {
        planes
            .zip(arg.par_chunks_mut(oh * ow))
            .for_each(|((x, y), arg)| plane(x, w, y, Some(arg)));
    } else {
        planes.for_each(|(x, y)| plane(x, w, y, None));
    }
    (y, arg)
}

/// One plane `[H, W]` pooled into `y` `[H/2, W/2]`.
fn plane(x: &[f32], w: usize, y: &mut [f32], mut arg: Option<&mut [u8]>) {
    let ow = w / 2;
    for (r, (rows, out)) in x
        .chunks_exact(2 * w)
        .zip(y.chunks_exact_mut(ow))
        .enumerate()
    {
        let (top, bottom) = rows.split_at(w);
        let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
        match arg.as_deref_mut() {
            Some(arg) => {
                let arg = &mut arg[r * ow..][..ow];
                for ((o, a), (t, b)) in out.iter_mut().zip(arg).zip(windows) {
                    (*o, *a) = winner([t[0], t[1], b[0], b[1]]);
                }
            }
            None => {
                for (o, (t, b)) in out.iter_mut().zip(windows) {
                    *o = winner([t[0], t[1], b[0], b[1]]).0;
                }
            }
        }
    }
}

/// The largest of a window and its place, without branches (random data would mispredict
/// them): the first largest in row-major order, or the last NaN.
#[inline(always)]
fn winner(window: [f32; 4]) -> (f32, u8) {
    let (mut best, mut at) = (window[0], 0u8);
    for (k, &v) in window.iter().enumerate().skip(1) {
        let take = (v > best) | v.is_nan();
        best = if take { v } else { best };
        at = if take { k as u8 } else { at };
    }
    (best, at)
}

/// The gradient `[N, C, H, W]` of the input: each output's gradient at its winner, 0 elsewhere.
fn backward(dy: &[f32], arg: &[u8], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut dx = vec![0f32; n * c * h * w];
    dx.par_chunks_mut(h * w)
        .zip(dy.par_chunks(oh * ow).zip(arg.par_chunks(oh * ow)))
        .for_each(|(dx, (dy, arg))| {
            for (o, (&g, &a)) in dy.iter().zip(arg).enumerate() {
                let (r, j) = (o / ow, o % ow);
                let (dr, dj) = (a as usize / 2, a as usize % 2);
                dx[(2 * r + dr) * w + 2 * j + dj] = g;
            }
        });
    dx
}

#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    /// Each output's winner and the input's shape.
    type State = (Arc<[u8]>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (arg, shape) = ops.state;
        if let Some(node) = node {
            let dx = backward(dy.storage(), &arg, shape);
            grads.register::<Flex>(node.id, flex_f32(dx, shape));
        }
    }
}

/// The pooling as one node of the autodiff graph.
fn tracked(x: Tracked, shape: [usize; 4]) -> Tracked {
    let [n, c, h, w] = shape;
    let prep = PoolBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful();
    let xp = x.primitive().to_contiguous();
    let keep = matches!(prep, OpsKind::Tracked(_));
    let (y, arg) = forward(xp.storage(), shape, keep);
    let y = flex_f32(y, [n, c, h / 2, w / 2]);
    match prep {
        OpsKind::Tracked(prep) => prep.finish((arg.into(), shape), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Device, Distribution};

    /// Whole numbers 0..4 so that many windows hold ties, and a NaN in one window.
    fn ties(shape: [usize; 4], device: &Device) -> Tensor<4> {
        let x = Tensor::<4>::random(shape, Distribution::Uniform(0.0, 4.0), device).floor();
        // One NaN in the first window; two in the next, where the last one wins (its gradient
        // place shows which).
        let nan = Tensor::<4>::full([1, 1, 1, 1], f32::NAN, device);
        let two = Tensor::<4>::full([1, 1, 2, 1], f32::NAN, device);
        let x = x.slice_assign([0..1, 0..1, 1..2, 0..1], nan);
        if shape[3] >= 4 {
            x.slice_assign([0..1, 0..1, 0..2, 3..4], two)
        } else {
            x
        }
    }

    /// Equal element for element, a NaN equal to a NaN.
    fn same(a: Tensor<4>, b: Tensor<4>) {
        assert_eq!(a.dims(), b.dims());
        let (a, b) = (
            a.into_data().try_to_vec::<f32>().unwrap(),
            b.into_data().try_to_vec::<f32>().unwrap(),
        );
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                x == y || (x.is_nan() && y.is_nan()),
                "element {i}: {x} against {y}"
            );
        }
    }

    #[test]
    fn values_and_gradients_equal_burns_kernel_with_ties() {
        let layer = MaxPool2dConfig::new([2, 2]).init();
        let d = Device::flex();
        for shape in [[3, 5, 8, 6], [2, 32, 28, 28], [1, 1, 2, 2]] {
            let x = ties(shape, &d);
            let ours = max_pool2d(&layer, x.clone());
            let burn = layer.forward(x.clone());
            same(ours, burn);

            // A weight per output, so each gradient says which output it came from.
            let [n, c, h, w] = shape;
            let r = Tensor::<4>::random([n, c, h / 2, w / 2], Distribution::Default, &d);
            let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let x = x.clone().autodiff().require_grad();
                let y = f(x.clone());
                let grads = (y.clone() * r.clone().autodiff()).sum().backward();
                (y.inner(), x.grad(&grads).expect("the input is tracked"))
            };
            let (y_ours, g_ours) = run(&|x| max_pool2d(&layer, x));
            let (y_burn, g_burn) = run(&|x| layer.forward(x));
            same(y_ours, y_burn);
            same(g_ours, g_burn);
        }
    }

    /// Whether `max_pool2d` ran this module's kernel on `x` (counted on this thread).
    fn ours(layer: &MaxPool2d, x: Tensor<4>) -> bool {
        let before = RUNS.with(|r| r.get());
        let _ = max_pool2d(layer, x);
        RUNS.with(|r| r.get()) > before
    }

    #[test]
    fn the_kernel_takes_tracked_and_plain_flex_inputs() {
        let d = Device::flex();
        let layer = MaxPool2dConfig::new([2, 2]).init();
        let x = Tensor::<4>::random([2, 3, 4, 6], Distribution::Default, &d);
        assert!(ours(&layer, x.clone()));
        assert!(ours(&layer, x.clone().autodiff().require_grad()));
        // Autodiff without a tracked input (no gradient wanted) pools here too.
        assert!(ours(&layer, x.clone().autodiff()));
        let odd = Tensor::<4>::random([2, 3, 7, 6], Distribution::Default, &d);
        assert!(!ours(&layer, odd));
    }

    #[test]
    fn other_windows_and_odd_sides_go_to_burn() {
        let d = Device::flex();
        let layer = MaxPool2dConfig::new([2, 2]).init();
        let odd = Tensor::<4>::random([2, 3, 7, 9], Distribution::Default, &d);
        assert_eq!(max_pool2d(&layer, odd).dims(), [2, 3, 3, 4]);
        let three = MaxPool2dConfig::new([3, 3]).with_strides([1, 1]).init();
        let x = Tensor::<4>::random([3, 5, 14, 14], Distribution::Default, &d);
        assert!(!ours(&three, x.clone()));
        let ours = max_pool2d(&three, x.clone());
        assert_eq!(ours.dims(), [3, 5, 12, 12]);
        ours.into_data()
            .assert_eq(&three.forward(x).into_data(), true);
    }
}
