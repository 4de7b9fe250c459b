//! The cnn's convolutions on the CPU: one kernel for the forward pass and, under autodiff, for
//! the gradients, where burn-flex's convolution is the limit (`cargo bench --bench layers`).
//!
//! burn-flex's kernel runs the same matrix product (`gemm`) but first reorders the input to NHWC
//! with a single thread, unfolds each patch element by element with bounds checks and scatters
//! the product into the output afterwards (`perf` gave those steps 23% of conv2's cycles), and
//! its input gradient is a transposed convolution that adds the columns back element by
//! element. Here ([`kernel`]):
//! - the weight `[C_out, C_in * K_h * K_w]` is used as stored;
//! - row `(c, i, j)` of an unfolded image is the input plane `c` shifted by `(i - top, j - left)`,
//!   one copy per row when the output is as wide as the input (the cnn's "same" padding);
//! - each image's product lands in its `[C_out, H' * W']` block of the output, bias first;
//! - the input's gradient is one product per image, the weight's transpose times the output's
//!   gradient, folded back onto the input (its intermediate has `C_in` rows per kernel place,
//!   where unfolding the output's gradient would have `C_out`); the weight's is one product per
//!   image summed in fixed chunks of images (the same result on any number of threads).
//!
//! Values equal Burn's up to the order of the float additions (tested, forward and gradients).
//! Anything else (a GPU, groups, stride or dilation other than 1, "same" padding computed by
//! Burn, gradient checkpointing, another dtype) goes to Burn's kernel through
//! [`Conv2d::forward`].

mod autodiff;
mod kernel;

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use super::flex::{flex_f32, plain_f32, tracked_f32};

/// `layer` applied to `x` `[N, C_in, H, W]`: this module's kernel where it applies, else Burn's.
pub fn conv2d(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let Some(g) = geometry(layer, &x) else {
        return layer.forward(x);
    };
    let weight = layer.weight.val();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let tracked =
        x.is_autodiff() || weight.is_autodiff() || bias.as_ref().is_some_and(|b| b.is_autodiff());
    let y = if tracked {
        tracked_conv(x.clone(), weight, bias, g)
    } else {
        plain_conv(x.clone(), weight, bias, g)
    };
    y.unwrap_or_else(|| layer.forward(x))
}

/// The sizes of one convolution, in elements (stride and dilation 1, one group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    /// Zero rows above the input.
    top: usize,
    /// Zero columns left of the input.
    left: usize,
    oh: usize,
    ow: usize,
}

/// The geometry of `layer` on `x` when this module's kernel can run it; `None` sends the call
/// to Burn.
fn geometry(layer: &Conv2d, x: &Tensor<4>) -> Option<Geometry> {
    if layer.stride != [1, 1] || layer.dilation != [1, 1] || layer.groups != 1 {
        return None;
    }
    let (top, left, bottom, right) = match layer.padding {
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        PaddingConfig2d::Same => return None,
    };
    let [n, c_in, h, w] = x.dims();
    let [c_out, per_group, kh, kw] = layer.weight.dims();
    let padded_h = h.checked_add(top)?.checked_add(bottom)?;
    let padded_w = w.checked_add(left)?.checked_add(right)?;
    let bias_fits = layer.bias.as_ref().is_none_or(|b| b.dims() == [c_out]);
    if per_group != c_in || padded_h < kh || padded_w < kw || !bias_fits {
        return None;
    }
    if [n, c_in, h, w, c_out, kh, kw].contains(&0) {
        return None;
    }
    Some(Geometry {
        n,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        top,
        left,
        oh: padded_h - kh + 1,
        ow: padded_w - kw + 1,
    })
}

/// Without autodiff: all three as f32 flex tensors, or `None`.
fn plain_conv(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    g: Geometry,
) -> Option<Tensor<4>> {
    let x = plain_f32(x)?;
    let weight = plain_f32(weight)?;
    let bias = match bias {
        Some(b) => Some(plain_f32(b)?),
        None => None,
    };
    let y = kernel::forward(
        x.storage(),
        weight.storage(),
        bias.as_ref().map(|b| b.storage()),
        &g,
    );
    Some(Tensor::from_primitive::<Flex>(flex_f32(
        y,
        [g.n, g.c_out, g.oh, g.ow],
    )))
}

/// Under autodiff: all three lifted to `Autodiff<Flex>` (an untracked zero bias when the layer
/// has none), or `None`.
fn tracked_conv(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    g: Geometry,
) -> Option<Tensor<4>> {
    let bias = bias.unwrap_or_else(|| Tensor::zeros([g.c_out], &x.device()));
    let y = autodiff::conv2d(tracked_f32(x)?, tracked_f32(weight)?, tracked_f32(bias)?, g);
    Some(Tensor::from_primitive::<Autodiff<Flex>>(y))
}

#[cfg(test)]
mod tests;
