//! An isolation forest (Liu, Ting & Zhou, ICDM 2008) on the penultimate features, with
//! sklearn's defaults: 100 trees, each grown on 256 examples drawn without replacement, split
//! on a random feature at a uniform point between the node's minimum and maximum, to depth
//! ⌈log₂ 256⌉ = 8. An input's score is 2^(−E[h(x)]/c(256)), in (0, 1], where h is its path
//! length (a leaf holding n training examples adds c(n), the average path length of an
//! unsuccessful search in a binary search tree of n) — larger is more isolated, as sklearn's
//! `score_samples` negated. The trees are grown on the host; scoring walks all trees for the
//! whole batch on the device, one gather per level.

use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{RngExt, SeedableRng};

use super::{Detector, Kind};
use crate::classifier::{Classifier, Input};
use crate::detect::DetectError;

/// Trees (sklearn: 100).
pub const TREES: usize = 100;
/// Examples per tree (sklearn: 256, or all when fewer).
pub const SAMPLES: usize = 256;
/// Nodes of a complete tree of depth 8, in heap order (children of i: 2i + 1, 2i + 2).
pub const NODES: usize = (1 << 9) - 1;
const DEPTH: usize = 8;

/// The forest as tables `[TREES · NODES]` on the device: each node's split feature and
/// threshold, whether it is a leaf, and a leaf's path length.
#[derive(Debug, Clone)]
pub struct IsolationForest {
    pub feature: Tensor<1, Int>,
    pub threshold: Tensor<1>,
    pub leaf: Tensor<1>,
    pub value: Tensor<1>,
    /// c(ψ) of the per-tree sample size ψ.
    pub norm: f64,
    /// Feature width the trees split on.
    pub width: usize,
}

/// c(n) = 2H(n − 1) − 2(n − 1)/n, H(i) ≈ ln i + Euler's γ; c(1) = 0, c(2) = 1 (sklearn's
/// `_average_path_length`).
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Host tables of one tree.
struct Tables {
    feature: Vec<i64>,
    threshold: Vec<f32>,
    leaf: Vec<f32>,
    value: Vec<f32>,
}

fn grow(
    t: &mut Tables,
    node: usize,
    depth: usize,
    rows: &[usize],
    x: &[f32],
    width: usize,
    rng: &mut StdRng,
) {
    let make_leaf = |t: &mut Tables| {
        t.leaf[node] = 1.0;
        t.value[node] = (depth as f64 + average_path_length(rows.len())) as f32;
    };
    if depth == DEPTH || rows.len() <= 1 {
        make_leaf(t);
        return;
    }
    let f = rng.random_range(0..width);
    let (lo, hi) = rows
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| {
            let v = x[r * width + f];
            (lo.min(v), hi.max(v))
        });
    if lo >= hi {
        // The chosen feature is constant here: sklearn draws again among the others; a leaf
        // is the common outcome for constant (dead) units, and keeps the tree small.
        make_leaf(t);
        return;
    }
    let split = rng.random_range(lo..hi);
    let (left, right): (Vec<usize>, Vec<usize>) =
        rows.iter().partition(|r| x[**r * width + f] < split);
    t.feature[node] = f as i64;
    t.threshold[node] = split;
    grow(t, 2 * node + 1, depth + 1, &left, x, width, rng);
    grow(t, 2 * node + 2, depth + 1, &right, x, width, rng);
}

impl IsolationForest {
    /// Grows the forest on the features of clean `x` (one forward pass per batch, one read).
    pub fn fit<const D: usize, C: Classifier<D>>(
        model: &C,
        x: &C::Input,
        batch: usize,
        seed: u64,
    ) -> Result<Self, DetectError> {
        let mut parts = Vec::new();
        for start in (0..x.len()).step_by(batch) {
            parts.push(model.features(x.range(start, start + batch)).ok_or_else(|| {
                DetectError::Invalid("the isolation forest reads the penultimate layer, and this model has none (an ensemble or a fusion adapter): leave isolation out".into())
            })?);
        }
        let features = Tensor::cat(parts, 0);
        let [n, width] = features.dims();
        if n < 2 {
            return Err(DetectError::TooFew {
                what: "isolation forest fit examples",
                need: 2,
                got: n,
            });
        }
        let device = features.device();
        let values = crate::detect::host_floats(features, "features")?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(DetectError::NotFinite {
                what: "penultimate features of the fit examples",
            });
        }
        let psi = SAMPLES.min(n);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut all = Tables {
            feature: Vec::with_capacity(TREES * NODES),
            threshold: Vec::with_capacity(TREES * NODES),
            leaf: Vec::with_capacity(TREES * NODES),
            value: Vec::with_capacity(TREES * NODES),
        };
        for _ in 0..TREES {
            let mut t = Tables {
                feature: vec![0; NODES],
                threshold: vec![0.0; NODES],
                leaf: vec![0.0; NODES],
                value: vec![0.0; NODES],
            };
            let rows = sample(&mut rng, n, psi).into_vec();
            grow(&mut t, 0, 0, &rows, &values, width, &mut rng);
            all.feature.extend(t.feature);
            all.threshold.extend(t.threshold);
            all.leaf.extend(t.leaf);
            all.value.extend(t.value);
        }
        let total = TREES * NODES;
        Ok(Self {
            feature: Tensor::from_data(TensorData::new(all.feature, [total]), &device),
            threshold: Tensor::from_data(TensorData::new(all.threshold, [total]), &device),
            leaf: Tensor::from_data(TensorData::new(all.leaf, [total]), &device),
            value: Tensor::from_data(TensorData::new(all.value, [total]), &device),
            norm: average_path_length(psi),
            width,
        })
    }

    /// Scores of features `[N, F]`: every tree walked for every row at once.
    pub fn score_features(&self, f: Tensor<2>) -> Tensor<1> {
        let n = f.dims()[0];
        let device = f.device();
        let offsets = (Tensor::<1, Int>::arange(0..TREES as i64, &device) * NODES as i64)
            .unsqueeze_dim::<2>(0)
            .expand([n, TREES]);
        let mut node = Tensor::<2, Int>::zeros([n, TREES], &device);
        let at = |table: &Tensor<1>, flat: &Tensor<2, Int>| {
            table
                .clone()
                .select(0, flat.clone().reshape([n * TREES]))
                .reshape([n, TREES])
        };
        for _ in 0..DEPTH {
            let flat = node.clone() + offsets.clone();
            let feature = self
                .feature
                .clone()
                .select(0, flat.clone().reshape([n * TREES]))
                .reshape([n, TREES]);
            let v = f.clone().gather(1, feature);
            let go_left = v.lower(at(&self.threshold, &flat));
            let child = node.clone() * 2 + 1;
            let child = child.clone().mask_where(go_left.bool_not(), child + 1);
            let is_leaf = at(&self.leaf, &flat).greater_elem(0.5);
            node = child.mask_where(is_leaf, node);
        }
        let depth = at(&self.value, &(node + offsets))
            .mean_dim(1)
            .squeeze_dim::<1>(1);
        (depth / -self.norm * std::f64::consts::LN_2).exp()
    }
}

impl Detector for IsolationForest {
    fn kind(&self) -> Kind {
        Kind::Isolation
    }

    /// Scores `[N]` in (0, 1]; larger means easier to isolate.
    fn score<const D: usize, C: Classifier<D>>(&self, model: &C, x: &C::Input) -> Tensor<1> {
        let f = model
            .features(x.clone())
            .expect("checked when the detector was fitted or loaded for this model");
        self.score_features(f)
    }
}
