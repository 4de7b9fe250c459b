//! The convolution's host kernels on contiguous f32 slices: the forward product and the
//! gradients of the input, weights and bias. Every image is unfolded into
//! `[C_in * K_h * K_w, H' * W']` (or, for the input's gradient, such a matrix is folded back)
//! around one `gemm`, the matrix product burn-flex itself uses.

use rayon::prelude::*;

use super::Geometry;

#[cfg(test)]
thread_local! {
    /// How many times this thread ran [`forward`] (tests check that the kernel, not Burn's,
    /// ran).
    pub static RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Images per partial sum of the weight gradient: the partials are added in a fixed order, so
/// the gradient does not depend on the number of threads.
const CHUNK: usize = 16;

/// The convolution of `x` `[N, C_in, H, W]` with `weight` `[C_out, C_in, K_h, K_w]`, plus
/// `bias` `[C_out]`, as `[N, C_out, H', W']`. Images run in parallel with one unfolded buffer
/// per task; a batch smaller than the thread pool parallelises each product instead.
pub fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    #[cfg(test)]
    RUNS.with(|r| r.set(r.get() + 1));
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
        // `weight` `[C_out, k]` times `col` `[k, plane]` into `dst` `[C_out, plane]`.
        product(
            dst,
            weight,
            col,
            [g.c_out, plane, k],
            [plane, 1],
            bias.is_some(),
            parallelism,
        );
    };
    per_image(&mut out, g.c_out * plane, k * plane, one);
    out
}

/// Runs `one(scratch, b, block, parallelism)` for every image `b` and its `block` of `out`
/// (`block` elements each), with a zeroed scratch buffer of `scratch` elements per task:
/// images in parallel, or, for a batch smaller than the thread pool, one after another with
/// each product parallelised.
fn per_image(
    out: &mut [f32],
    block: usize,
    scratch: usize,
    one: impl Fn(&mut [f32], usize, &mut [f32], gemm::Parallelism) + Sync,
) {
    let images = out.len() / block.max(1);
    if images >= rayon::current_num_threads() {
        out.par_chunks_mut(block).enumerate().for_each_init(
            || vec![0f32; scratch],
            |buffer, (b, dst)| one(buffer, b, dst, gemm::Parallelism::None),
        );
    } else {
        let mut buffer = vec![0f32; scratch];
        for (b, dst) in out.chunks_mut(block).enumerate() {
            one(&mut buffer, b, dst, gemm::Parallelism::Rayon(0));
        }
    }
}

/// Writes one image `[C_in, H, W]` unfolded into `col` `[C_in * K_h * K_w, H' * W']`: row
/// `(c, i, j)`, column `(y, x)` holds input `(c, y + i - top, x + j - left)`, or 0 outside
/// the input. `col` must hold zeros wherever this geometry reads outside the input (a fresh
/// buffer, or one this function filled for the same geometry): those places are never written.
pub fn unfold(x: &[f32], g: &Geometry, col: &mut [f32]) {
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
    // At most K_w - 1 places per row: stored one by one, as a `fill` of a few places is a call to
    // `memset` each (22,400 calls per image in the cnn's second layer: 32 channels, 25 kernel
    // places, 14 rows, 2 ends).
    let zero = std::hint::black_box(0.0f32);
    for y in y_lo..y_hi {
        let out = &mut row[y * g.w..(y + 1) * g.w];
        out[..x_lo].iter_mut().for_each(|v| *v = zero);
        out[x_hi..].iter_mut().for_each(|v| *v = zero);
    }
}

/// The gradient `[N, C_in, H, W]` of the input from the output's gradient `dy`
/// `[N, C_out, H', W']`: per image, `cols = W^T dy_b` `[C_in * K_h * K_w, H' * W']`, folded back
/// onto the input (the adjoint of [`unfold`]). The intermediate has `C_in` rows per kernel
/// place where unfolding `dy` would have `C_out`: 32 times smaller for the cnn's first layer.
pub fn input_grad(dy: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
    let plane = g.oh * g.ow;
    let k = g.c_in * g.kh * g.kw;
    let image = g.c_in * g.h * g.w;
    let out_image = g.c_out * plane;
    let wt = transpose(weight, g.c_out, k);
    let mut dx = vec![0f32; g.n * image];
    let one = |cols: &mut [f32], b: usize, dst: &mut [f32], parallelism| {
        // `wt` `[k, C_out]` times `dy_b` `[C_out, plane]` into `cols` `[k, plane]`.
        let dy_b = &dy[b * out_image..][..out_image];
        product(
            cols,
            &wt,
            dy_b,
            [k, plane, g.c_out],
            [plane, 1],
            false,
            parallelism,
        );
        fold(cols, g, dst);
    };
    per_image(&mut dx, image, k * plane, one);
    dx
}

/// Adds `cols` `[C_in * K_h * K_w, H' * W']` onto one image `dx` `[C_in, H, W]`: column
/// `(y, x)` of row `(c, i, j)` goes to input `(c, y + i - top, x + j - left)` when that lies
/// inside the input (the places [`unfold`] reads).
fn fold(cols: &[f32], g: &Geometry, dx: &mut [f32]) {
    let plane = g.oh * g.ow;
    for c in 0..g.c_in {
        let dxc = &mut dx[c * g.h * g.w..][..g.h * g.w];
        for i in 0..g.kh {
            let y_lo = g.top.saturating_sub(i).min(g.oh);
            let y_hi = (g.h + g.top).saturating_sub(i).min(g.oh);
            for j in 0..g.kw {
                let row = &cols[((c * g.kh + i) * g.kw + j) * plane..][..plane];
                let x_lo = g.left.saturating_sub(j).min(g.ow);
                let x_hi = (g.w + g.left).saturating_sub(j).min(g.ow);
                if x_lo >= x_hi {
                    continue;
                }
                for y in y_lo..y_hi {
                    let src = &row[y * g.ow + x_lo..y * g.ow + x_hi];
                    let at = (y + i - g.top) * g.w + x_lo + j - g.left;
                    for (d, s) in dxc[at..at + src.len()].iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// A row-major `[rows, cols]` matrix transposed to `[cols, rows]`.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for (r, row) in m.chunks_exact(cols).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// The gradients of the weight `[C_out, C_in * K_h * K_w]` and, when `bias` is set, of the bias
/// `[C_out]`, from the input `x` `[N, C_in, H, W]` and the output's gradient `dy`
/// `[N, C_out, H', W']`: `dW = sum_b dy_b unfold(x_b)^T`, `db = sum_b sum_p dy_b`.
pub fn weight_grad(x: &[f32], dy: &[f32], g: &Geometry, bias: bool) -> (Vec<f32>, Vec<f32>) {
    let plane = g.oh * g.ow;
    let k = g.c_in * g.kh * g.kw;
    let image = g.c_in * g.h * g.w;
    let out_image = g.c_out * plane;
    let partial = |chunk: usize| {
        let mut dw = vec![0f32; g.c_out * k];
        let mut db = vec![0f32; if bias { g.c_out } else { 0 }];
        let mut col = vec![0f32; k * plane];
        for b in chunk * CHUNK..((chunk + 1) * CHUNK).min(g.n) {
            let dy_b = &dy[b * out_image..][..out_image];
            unfold(&x[b * image..][..image], g, &mut col);
            // `dy_b` `[C_out, plane]` times `col` `[k, plane]` read as its transpose, added to
            // `dw` `[C_out, k]`.
            let serial = gemm::Parallelism::None;
            product(
                &mut dw,
                dy_b,
                &col,
                [g.c_out, k, plane],
                [1, plane],
                true,
                serial,
            );
            for (d, row) in db.iter_mut().zip(dy_b.chunks(plane)) {
                *d += row.iter().sum::<f32>();
            }
        }
        (dw, db)
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..g.n.div_ceil(CHUNK))
        .into_par_iter()
        .map(partial)
        .collect();
    let mut partials = partials.into_iter();
    let (mut dw, mut db) = partials.next().unwrap_or_default();
    for (pw, pb) in partials {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dw, db)
}

/// `dst = lhs rhs`, or `dst += lhs rhs` when `accumulate`, with `gemm`: `dst` `[m, n]` and `lhs`
/// `[m, k]` row-major, `rhs` `[k, n]` with strides `[row, column]` (`[n, 1]` row-major, `[1, k]`
/// a row-major `[n, k]` read as its transpose).
fn product(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    [m, n, k]: [usize; 3],
    [row, column]: [usize; 2],
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let last = |rows: usize, rs: usize, cols: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs + 1
    };
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= last(k, row, n, column));
    // SAFETY: the assert keeps every element gemm reads or writes inside the three slices, and
    // `dst` is borrowed mutably, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            column as isize,
            row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
