//! Feature squeezing (Xu, Evans & Qi, NDSS 2018): squeezing an input (fewer grey levels, a
//! median filter) changes a clean prediction little and an adversarial one much. The score is
//! the largest L1 distance, over the squeezers, between the softmax on the input and on its
//! squeezed copy, in [0, 2].

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use super::{Detector, Kind};
use crate::classifier::{Classifier, Domain, Input};
use crate::detect::DetectError;

/// The squeezers: bit-depth reduction to `bits` per coordinate and a `median`×`median` filter
/// (0: none). Xu et al. found 1 bit and a 2×2 median best on MNIST; grey Fashion-MNIST keeps
/// more of its accuracy at 4 bits and 2×2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Squeeze {
    /// Bits kept per coordinate, 1 to 8 (levels 2^bits over the input box).
    pub bits: u32,
    /// Side of the median filter: 0 (none), 2 or 3.
    pub median: usize,
}

impl Squeeze {
    pub fn new(bits: u32, median: usize) -> Result<Self, DetectError> {
        if !(1..=8).contains(&bits) {
            return Err(DetectError::Invalid(format!(
                "--squeeze-bits must be between 1 and 8, got {bits}"
            )));
        }
        if ![0, 2, 3].contains(&median) {
            return Err(DetectError::Invalid(format!(
                "--median must be 0 (none), 2 or 3, got {median}"
            )));
        }
        Ok(Self { bits, median })
    }

    /// Refuses inputs it cannot squeeze: unbounded ones, and a median filter on non-images.
    pub fn check(&self, domain: &Domain) -> Result<(), DetectError> {
        if domain.bounds.is_none() {
            return Err(DetectError::Invalid(
                "feature squeezing reduces the bit depth of bounded inputs; these inputs (embeddings) have no box: leave squeeze out".into(),
            ));
        }
        let image = domain.shape.len() == 3 && domain.shape[1].min(domain.shape[2]) >= 3;
        if self.median > 0 && !image {
            return Err(DetectError::Invalid(format!(
                "--median filters images; these inputs have shape {:?}: pass --median 0",
                domain.shape
            )));
        }
        Ok(())
    }
}

impl Detector for Squeeze {
    fn kind(&self) -> Kind {
        Kind::Squeeze
    }

    /// Scores `[N]` for a batch (one forward pass per squeezer, plus the input's own).
    fn score<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        self.squeezed_distance(model, x, false)
    }

    /// BPDA (Athalye, Carlini & Wagner, ICML 2018): rounding passes the gradient through
    /// as if it were the identity; the median's min/max network has gradients of its own.
    fn gradient(&self) -> Option<&'static str> {
        Some("BPDA through the rounding")
    }

    fn surrogate<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        self.squeezed_distance(model, x, true)
    }
}

impl Squeeze {
    /// The score; with `bpda`, the rounding's value with the identity's gradient.
    fn squeezed_distance<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        x: &C::Input,
        bpda: bool,
    ) -> Tensor<1> {
        let (lo, hi) = model.domain().bounds.unwrap_or((0.0, 1.0));
        let p = softmax(model.logits(x.clone()), 1);
        let distance = |squeezed: Tensor<D>| {
            let q = softmax(model.logits(x.with_x(squeezed)), 1);
            (p.clone() - q).abs().sum_dim(1).squeeze_dim::<1>(1)
        };
        let input = x.x().clone();
        let rounded = reduce_bits(input.clone(), self.bits, lo, hi);
        let rounded = if bpda {
            input.clone() + (rounded - input).detach()
        } else {
            rounded
        };
        let mut score = distance(rounded);
        if self.median > 0 && D == 4 {
            let dims = x.x().dims();
            let images: Tensor<4> = x.x().clone().reshape([dims[0], dims[1], dims[2], dims[3]]);
            let filtered = median_filter(images, self.median).reshape(dims);
            score = score.max_pair(distance(filtered));
        }
        score
    }
}

/// `x` in `[lo, hi]` rounded to 2^bits evenly spaced levels.
pub fn reduce_bits<const D: usize>(x: Tensor<D>, bits: u32, lo: f64, hi: f64) -> Tensor<D> {
    let levels = f64::from((1u32 << bits) - 1);
    let width = hi - lo;
    ((x - lo) / width * levels).round() / levels * width + lo
}

/// The median of every `k`×`k` window (k = 2 or 3) of images `[N, C, H, W]`, as
/// `scipy.ndimage.median_filter(size=k)` computes it: edges reflected (here: repeated), the
/// window of a 2×2 filter the pixel and its upper-left neighbours, and of an even window the
/// upper of the two middle values. Compare-exchange networks of `min`/`max`, no sort.
pub fn median_filter(x: Tensor<4>, k: usize) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let (before, after) = if k == 2 { (1, 0) } else { (1, 1) };
    let padded = pad_edges(x, before, after);
    let mut views: Vec<Tensor<4>> = Vec::with_capacity(k * k);
    for dy in 0..k {
        for dx in 0..k {
            views.push(padded.clone().narrow(2, dy, h).narrow(3, dx, w));
        }
    }
    if k == 2 {
        sort_network(&mut views, &SORT4);
        views.swap_remove(2)
    } else {
        sort_network(&mut views, &MEDIAN9);
        views.swap_remove(4)
    }
}

/// Sorts 4 values (Knuth's 5-comparator network); position 2 is the upper median.
const SORT4: [(usize, usize); 5] = [(0, 1), (2, 3), (0, 2), (1, 3), (1, 2)];
/// Devillard's 19-comparator median-of-9 network: position 4 ends as the median.
const MEDIAN9: [(usize, usize); 19] = [
    (1, 2),
    (4, 5),
    (7, 8),
    (0, 1),
    (3, 4),
    (6, 7),
    (1, 2),
    (4, 5),
    (7, 8),
    (0, 3),
    (5, 8),
    (4, 7),
    (3, 6),
    (1, 4),
    (2, 5),
    (4, 7),
    (4, 2),
    (6, 4),
    (4, 2),
];

/// Each pair (a, b) leaves the smaller value at a and the larger at b.
fn sort_network(v: &mut [Tensor<4>], pairs: &[(usize, usize)]) {
    for &(a, b) in pairs {
        let (lo, hi) = (
            v[a].clone().min_pair(v[b].clone()),
            v[a].clone().max_pair(v[b].clone()),
        );
        v[a] = lo;
        v[b] = hi;
    }
}

/// Repeats the first and last rows and columns `before` and `after` times.
fn pad_edges(x: Tensor<4>, before: usize, after: usize) -> Tensor<4> {
    let mut x = x;
    for dim in [2, 3] {
        let n = x.dims()[dim];
        let mut parts = Vec::with_capacity(before + after + 1);
        parts.extend((0..before).map(|_| x.clone().narrow(dim, 0, 1)));
        parts.push(x.clone());
        parts.extend((0..after).map(|_| x.clone().narrow(dim, n - 1, 1)));
        x = Tensor::cat(parts, dim);
    }
    x
}
