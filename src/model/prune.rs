//! Magnitude pruning, as PyTorch's `torch.nn.utils.prune.l1_unstructured` applied to every
//! layer: in each weight tensor (matrices and kernels; biases are kept) the `fraction` of
//! entries smallest in absolute value are set to zero. A copy-and-compress step a model thief
//! may take, and what an ownership watermark must survive.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{IndexingUpdateOp, Tensor};

use super::ImageNet;

/// One weight tensor's pruning.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Pruned {
    /// Entries in the tensor.
    pub entries: usize,
    /// Entries now zero.
    pub zeros: usize,
}

struct Pruner {
    fraction: f64,
    layers: Vec<Pruned>,
}

impl ModuleMapper for Pruner {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D < 2 {
            return param;
        }
        let fraction = self.fraction;
        let mut done = None;
        let param = param.map(|w| {
            let n = w.shape().num_elements();
            let k = (fraction * n as f64).round() as usize;
            let (w, zeros) = if k == 0 {
                (w, 0)
            } else {
                // Exactly the k smallest magnitudes go, as torch's topk picks them: a
                // threshold would take every entry tied with the k-th as well.
                let (device, shape) = (w.device(), w.shape());
                let smallest = w.clone().abs().reshape([n]).argsort(0).slice(0..k);
                let pruned = Tensor::<1>::zeros([n], &device).select_assign(
                    0,
                    smallest,
                    Tensor::ones([k], &device),
                    IndexingUpdateOp::Add,
                );
                let w = w * pruned.neg().add_scalar(1.0).reshape(shape);
                let zeros = w.clone().equal_elem(0.0).int().sum().into_scalar::<i64>() as usize;
                (w, zeros)
            };
            done = Some(Pruned { entries: n, zeros });
            w
        });
        self.layers.extend(done);
        param
    }
}

/// `net` with the `fraction` (0 to 1) smallest-magnitude entries of every weight tensor set
/// to zero, and what was pruned per tensor (one read-back per tensor).
pub fn prune(net: ImageNet, fraction: f64) -> (ImageNet, Vec<Pruned>) {
    let mut pruner = Pruner {
        fraction: fraction.clamp(0.0, 1.0),
        layers: Vec::new(),
    };
    let net = net.map(&mut pruner);
    (net, pruner.layers)
}

#[cfg(test)]
mod tests {
    use burn::module::ModuleVisitor;
    use burn::tensor::Device;

    use super::*;
    use crate::model::{Arch, ImageSpec};

    /// Every float tensor's values and rank, in the module's order.
    #[derive(Default)]
    struct Values(Vec<(usize, Vec<f32>)>);

    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = param
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            self.0.push((D, v));
        }
    }

    fn values(net: &ImageNet) -> Vec<(usize, Vec<f32>)> {
        let mut v = Values::default();
        net.visit(&mut v);
        v.0
    }

    #[test]
    fn the_smallest_weights_go_and_biases_stay() {
        let device = Device::flex();
        device.seed(5);
        for arch in [Arch::Mlp, Arch::Cnn] {
            let net = ImageSpec::new(arch).init(&device);
            let before = values(&net);
            let (pruned, layers) = prune(net, 0.3);
            let after = values(&pruned);
            let weights = before.iter().filter(|(d, _)| *d >= 2).count();
            assert_eq!(layers.len(), weights, "{arch}");
            for ((d, b), (_, a)) in before.iter().zip(&after) {
                if *d < 2 {
                    assert_eq!(a, b, "{arch}: a bias changed");
                    continue;
                }
                let zeros = a.iter().filter(|&&x| x == 0.0).count();
                let expect = (0.3 * b.len() as f64).round() as usize;
                assert_eq!(zeros, expect, "{arch}: {} entries", b.len());
                // Every kept entry is unchanged and at least as large as every pruned one.
                let kept_min = a
                    .iter()
                    .zip(b)
                    .filter(|(x, _)| **x != 0.0)
                    .map(|(x, y)| {
                        assert_eq!(x, y);
                        y.abs()
                    })
                    .fold(f32::INFINITY, f32::min);
                let pruned_max = a
                    .iter()
                    .zip(b)
                    .filter(|(x, _)| **x == 0.0)
                    .map(|(_, y)| y.abs())
                    .fold(0.0, f32::max);
                assert!(pruned_max <= kept_min, "{arch}");
            }
        }
        let net = ImageSpec::new(Arch::Mlp).init(&device);
        let (same, layers) = prune(net.clone(), 0.0);
        assert!(layers.iter().all(|l| l.zeros == 0));
        assert_eq!(values(&same), values(&net));
        // Every magnitude tied: still exactly the fraction goes, as with torch's topk.
        let tied = net.map(&mut Halves);
        let (pruned, layers) = prune(tied, 0.3);
        for (l, (d, v)) in layers
            .iter()
            .zip(values(&pruned).iter().filter(|(d, _)| *d >= 2))
        {
            let expect = (0.3 * v.len() as f64).round() as usize;
            assert_eq!(l.zeros, expect, "rank {d}");
            assert_eq!(v.iter().filter(|&&x| x == 0.0).count(), expect);
        }
    }

    /// Sets every parameter to ±0.5 by the sign of its value.
    struct Halves;

    impl ModuleMapper for Halves {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|w| w.sign().mul_scalar(0.5))
        }
    }
}
