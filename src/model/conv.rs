//! The cnn's convolutions without autodiff on the CPU (certification, evaluation, prediction,
//! serving): one image's patches unfolded by whole shifted planes, then one matrix product per
//! image written straight into the output.
//!
//! burn-flex's kernel runs the same product (`gemm`) but first reorders the input to NHWC with a
//! single thread, unfolds each patch element by element with bounds checks and scatters the
//! product into the output afterwards; `perf` gave those steps 23% of conv2's cycles. Here the
//! weight `[C_out, C_in * K_h * K_w]` is used as stored, row `(c, i, j)` of the unfolded image
//! is the input plane `c` shifted by `(i - top, j - left)` (one copy per row when the output is
//! as wide as the input, as with the cnn's "same" padding), and the product lands in the
//! output's `[C_out, H' * W']` block for that image, bias first. Values equal Burn's up to the
//! order of the float additions (tested).
//!
//! Anything else (autodiff, a GPU, groups, stride or dilation other than 1, another dtype) goes
//! to Burn's kernel through [`Conv2d::forward`].

use burn::backend::flex::{Flex, FlexTensor, Layout};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{Bytes, DType, Shape, Tensor};
use rayon::prelude::*;

/// `layer` applied to `x` `[N, C_in, H, W]`: this module's kernel where it applies, else Burn's.
pub fn conv2d(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match flex_inputs(layer, &x) {
        Some((input, weight, bias, geometry)) => {
            let output = forward(
                input.storage(),
                weight.storage(),
                bias.as_ref().map(|b| b.storage()),
                &geometry,
            );
            let shape = Shape::from(vec![geometry.n, geometry.c_out, geometry.oh, geometry.ow]);
            let t = FlexTensor::new(
                Bytes::from_elems(output),
                Layout::contiguous(shape),
                DType::F32,
            );
            Tensor::from_primitive::<Flex>(t)
        }
        None => layer.forward(x),
    }
}

/// The sizes of one convolution, in elements.
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

/// The input, weight and bias as contiguous f32 flex tensors, and the geometry, when this
/// kernel applies; `None` sends the call to Burn.
fn flex_inputs(
    layer: &Conv2d,
    x: &Tensor<4>,
) -> Option<(FlexTensor, FlexTensor, Option<FlexTensor>, Geometry)> {
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
    let (padded_h, padded_w) = (h + top + bottom, w + left + right);
    if per_group != c_in || padded_h < kh || padded_w < kw || n == 0 || c_out == 0 {
        return None;
    }
    let geometry = Geometry {
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
    };
    let flex = |t: Tensor<4>| -> Option<FlexTensor> {
        let t = t.try_into_primitive::<Flex>().ok()?;
        (t.dtype() == DType::F32).then(|| t.to_contiguous())
    };
    let input = flex(x.clone())?;
    let weight = flex(layer.weight.val())?;
    let bias = match &layer.bias {
        Some(b) => {
            let b = b.val().try_into_primitive::<Flex>().ok()?;
            Some((b.dtype() == DType::F32).then(|| b.to_contiguous())?)
        }
        None => None,
    };
    Some((input, weight, bias, geometry))
}

/// The convolution of `x` `[N, C_in, H, W]` with `weight` `[C_out, C_in, K_h, K_w]`, plus
/// `bias` `[C_out]`, as `[N, C_out, H', W']`. Images run in parallel with one unfolded buffer
/// per task; a batch smaller than the thread pool parallelises each product instead.
fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    let plane = g.oh * g.ow;
    let k = g.c_in * g.kh * g.kw;
    let image = g.c_in * g.h * g.w;
    let mut out = vec![0f32; g.n * g.c_out * plane];
    let one = |col: &mut [f32], b: usize, dst: &mut [f32], parallelism| {
        unfold(&x[b * image..][..image], g, col);
        if let Some(bias) = bias {
            for (row, &v) in dst.chunks_mut(plane).zip(bias) {
                row.fill(v);
            }
        }
        // SAFETY: `dst` is `[C_out, plane]`, `weight` `[C_out, k]` and `col` `[k, plane]`,
        // all row-major and in bounds; no two calls share a `dst` or a `col`.
        unsafe {
            gemm::gemm(
                g.c_out,
                plane,
                k,
                dst.as_mut_ptr(),
                1,
                plane as isize,
                bias.is_some(),
                weight.as_ptr(),
                1,
                k as isize,
                col.as_ptr(),
                1,
                plane as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    };
    if g.n >= rayon::current_num_threads() {
        out.par_chunks_mut(g.c_out * plane)
            .enumerate()
            .for_each_init(
                || vec![0f32; k * plane],
                |col, (b, dst)| one(col, b, dst, gemm::Parallelism::None),
            );
    } else {
        let mut col = vec![0f32; k * plane];
        for (b, dst) in out.chunks_mut(g.c_out * plane).enumerate() {
            one(&mut col, b, dst, gemm::Parallelism::Rayon(0));
        }
    }
    out
}

/// Writes one image `[C_in, H, W]` unfolded into `col` `[C_in * K_h * K_w, H' * W']`: row
/// `(c, i, j)`, column `(y, x)` holds input `(c, y + i - top, x + j - left)`, or 0 outside
/// the input. `col` must hold zeros wherever this geometry reads outside the input (a fresh
/// buffer, or one this function filled for the same geometry): those places are never written.
fn unfold(x: &[f32], g: &Geometry, col: &mut [f32]) {
    let plane = g.oh * g.ow;
    for c in 0..g.c_in {
        let xc = &x[c * g.h * g.w..][..g.h * g.w];
        for i in 0..g.kh {
            // Output rows whose input row y + i - top lies inside the input.
            let y_lo = g.top.saturating_sub(i).min(g.oh);
            let y_hi = (g.h + g.top).saturating_sub(i).min(g.oh);
            for j in 0..g.kw {
                let row = &mut col[((c * g.kh + i) * g.kw + j) * plane..][..plane];
                // Output columns whose input column x + j - left lies inside the input.
                let x_lo = g.left.saturating_sub(j).min(g.ow);
                let x_hi = (g.w + g.left).saturating_sub(j).min(g.ow);
                if y_lo >= y_hi || x_lo >= x_hi {
                    continue;
                }
                if g.ow == g.w {
                    shifted_plane(xc, g, i, j, [y_lo, y_hi], [x_lo, x_hi], row);
                } else {
                    for y in y_lo..y_hi {
                        let src = (y + i - g.top) * g.w + x_lo + j - g.left;
                        row[y * g.ow + x_lo..y * g.ow + x_hi]
                            .copy_from_slice(&xc[src..src + x_hi - x_lo]);
                    }
                }
            }
        }
    }
}

/// Row `(i, j)` of the unfold when output and input rows are equally wide: output element `p`
/// reads input element `p + d` with one offset `d`, so rows `y_lo..y_hi` are one copy, after
/// which the columns that wrapped into a neighbouring input row are zeroed.
fn shifted_plane(
    xc: &[f32],
    g: &Geometry,
    i: usize,
    j: usize,
    [y_lo, y_hi]: [usize; 2],
    [x_lo, x_hi]: [usize; 2],
    row: &mut [f32],
) {
    let w = g.w as isize;
    let d = (i as isize - g.top as isize) * w + (j as isize - g.left as isize);
    let start = ((y_lo * g.w) as isize).max(-d);
    let end = ((y_hi * g.w) as isize).min(g.h as isize * w - d);
    if start < end {
        let (start, end) = (start as usize, end as usize);
        let from = (start as isize + d) as usize;
        row[start..end].copy_from_slice(&xc[from..from + end - start]);
    }
    for y in y_lo..y_hi {
        row[y * g.w..y * g.w + x_lo].fill(0.0);
        row[y * g.w + x_hi..(y + 1) * g.w].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution, Tolerance};

    fn layer(c: [usize; 2], k: [usize; 2], padding: PaddingConfig2d, bias: bool) -> Conv2d {
        Conv2dConfig::new(c, k)
            .with_padding(padding)
            .with_bias(bias)
            .init(&Device::flex())
    }

    fn input(shape: [usize; 4]) -> Tensor<4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Device::flex())
    }

    /// This kernel against Burn's on the same layer and input.
    fn check(layer: &Conv2d, x: Tensor<4>) {
        assert!(flex_inputs(layer, &x).is_some(), "the kernel should apply");
        let ours = conv2d(layer, x.clone());
        let burn = layer.forward(x);
        assert_eq!(ours.dims(), burn.dims());
        ours.into_data()
            .assert_approx_eq::<f32>(&burn.into_data(), Tolerance::absolute(1e-4));
    }

    #[test]
    fn the_cnn_layers_match_burn() {
        let same = PaddingConfig2d::Explicit(2, 2, 2, 2);
        check(
            &layer([1, 32], [5, 5], same.clone(), true),
            input([3, 1, 28, 28]),
        );
        check(&layer([32, 64], [5, 5], same, true), input([5, 32, 14, 14]));
    }

    #[test]
    fn other_paddings_kernels_and_small_batches_match_burn() {
        // Valid (narrower output), asymmetric padding (wider output, then as wide as the input),
        // non-square kernels, no bias, one image (the product parallelised instead of the
        // images), a kernel as large as the padded input, padding wider than the kernel reaches.
        let cases = [
            (PaddingConfig2d::Valid, [3, 3], true, [4, 3, 9, 7]),
            (
                PaddingConfig2d::Explicit(1, 0, 2, 3),
                [3, 2],
                false,
                [1, 2, 6, 5],
            ),
            (
                PaddingConfig2d::Explicit(0, 2, 1, 0),
                [2, 3],
                true,
                [2, 3, 5, 6],
            ),
            (
                PaddingConfig2d::Explicit(1, 1, 1, 1),
                [5, 5],
                true,
                [3, 2, 3, 3],
            ),
            (
                PaddingConfig2d::Explicit(3, 3, 3, 3),
                [3, 3],
                true,
                [2, 2, 4, 4],
            ),
        ];
        for (padding, k, bias, shape) in cases {
            check(&layer([shape[1], 4], k, padding, bias), input(shape));
        }
    }

    #[test]
    fn a_reused_buffer_gives_the_same_result() {
        // Many images on few threads: every task's buffer serves several images, so stale
        // values in the buffer would show as a difference from Burn.
        let same = PaddingConfig2d::Explicit(2, 2, 2, 2);
        check(&layer([2, 3], [5, 5], same, true), input([64, 2, 6, 6]));
    }

    #[test]
    fn autodiff_strides_and_groups_go_to_burn() {
        let x = input([2, 2, 8, 8]);
        let plain = layer([2, 4], [3, 3], PaddingConfig2d::Valid, true);
        assert!(flex_inputs(&plain, &x.clone().autodiff()).is_none());
        let strided = Conv2dConfig::new([2, 4], [3, 3])
            .with_stride([2, 2])
            .init(&Device::flex());
        assert!(flex_inputs(&strided, &x).is_none());
        let grouped = Conv2dConfig::new([2, 4], [3, 3])
            .with_groups(2)
            .init(&Device::flex());
        assert!(flex_inputs(&grouped, &x).is_none());
        let same = Conv2dConfig::new([2, 4], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .init(&Device::flex());
        assert!(flex_inputs(&same, &x).is_none());
        // And the result through `conv2d` still equals Burn's there.
        conv2d(&strided, x.clone())
            .into_data()
            .assert_eq(&strided.forward(x).into_data(), true);
    }
}
