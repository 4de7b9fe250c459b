//! Image networks: `mlp` and `cnn`.
//!
//! Both take pixels in [0, 1], shape `[N, 1, 28, 28]`, and return logits `[N, classes]`. The
//! optional normalisation `(x - mean) / std` is applied inside `forward`, so attacks and
//! smoothing noise work in pixel space. Parameter names match a PyTorch module with the same
//! attribute names (`conv1`, `fc1`, ...); see `scripts/torch_models.py`.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::MAX_CLASSES;
use super::conv::conv2d;
use super::pool::max_pool2d;

/// Architectures of image networks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// fc1 784→256, fc2 256→256, fc3 256→classes, ReLU.
    Mlp,
    /// Madry et al. MNIST network: conv 5x5 32, pool, conv 5x5 64, pool, fc 1024, fc classes.
    Cnn,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::Mlp => "mlp",
            Arch::Cnn => "cnn",
        })
    }
}

/// The shape of one image: channels, height, width.
pub const IMAGE_SHAPE: [usize; 3] = [1, 28, 28];

/// Everything needed to rebuild an image network; saved as `rampart.spec` metadata.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub arch: Arch,
    pub num_classes: usize,
    /// Normalisation inside the model: `(x - mean) / std`, x in [0, 1]. Identity is (0, 1).
    pub mean: f32,
    pub std: f32,
}

impl ImageSpec {
    pub fn new(arch: Arch) -> Self {
        Self {
            arch,
            num_classes: 10,
            mean: 0.0,
            std: 1.0,
        }
    }

    /// Fashion-MNIST training-set pixel mean and standard deviation.
    pub fn fashion_normalised(arch: Arch) -> Self {
        Self {
            mean: 0.2860,
            std: 0.3530,
            ..Self::new(arch)
        }
    }

    /// Checks the values a file could make absurd: 2 to [`MAX_CLASSES`] classes, a finite mean
    /// and a finite, positive standard deviation.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=MAX_CLASSES).contains(&self.num_classes) {
            return Err(format!(
                "num_classes is {}; it must be between 2 and {MAX_CLASSES}",
                self.num_classes
            ));
        }
        if !(self.mean.is_finite() && self.std.is_finite() && self.std > 0.0) {
            return Err(format!(
                "normalisation (x - {}) / {} is not usable: the mean must be finite and the std finite and positive",
                self.mean, self.std
            ));
        }
        Ok(())
    }

    /// The tensors of this network in PyTorch layout, computed without building it.
    pub fn tensor_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        let k = self.num_classes;
        let layers: Vec<(&str, Vec<usize>)> = match self.arch {
            Arch::Mlp => vec![
                ("fc1", vec![256, 784]),
                ("fc2", vec![256, 256]),
                ("fc3", vec![k, 256]),
            ],
            Arch::Cnn => vec![
                ("conv1", vec![32, 1, 5, 5]),
                ("conv2", vec![64, 32, 5, 5]),
                ("fc1", vec![1024, 64 * 7 * 7]),
                ("fc2", vec![k, 1024]),
            ],
        };
        layers
            .into_iter()
            .flat_map(|(name, w)| {
                let out = w[0];
                [
                    (format!("{name}.weight"), w),
                    (format!("{name}.bias"), vec![out]),
                ]
            })
            .collect()
    }

    /// The name of the classifier head's weight (its rows are the classes).
    pub fn head(arch: Arch) -> &'static str {
        match arch {
            Arch::Mlp => "fc3.weight",
            Arch::Cnn => "fc2.weight",
        }
    }

    pub fn init(&self, device: &Device) -> ImageNet {
        match self.arch {
            Arch::Mlp => ImageNet::Mlp(Mlp::new(self, device)),
            Arch::Cnn => ImageNet::Cnn(Cnn::new(self, device)),
        }
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    mean: f32,
    std: f32,
}

impl Mlp {
    fn new(spec: &ImageSpec, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(784, 256).init(device),
            fc2: LinearConfig::new(256, 256).init(device),
            fc3: LinearConfig::new(256, spec.num_classes).init(device),
            mean: spec.mean,
            std: spec.std,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc3.forward(self.features(x))
    }

    /// What `fc3` reads, `[N, 256]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = (x - self.mean) / self.std;
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(self.fc1.forward(x));
        relu(self.fc2.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    mean: f32,
    std: f32,
}

impl Cnn {
    fn new(spec: &ImageSpec, device: &Device) -> Self {
        let conv = |c_in, c_out| {
            Conv2dConfig::new([c_in, c_out], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .init(device)
        };
        Self {
            conv1: conv(1, 32),
            conv2: conv(32, 64),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(64 * 7 * 7, 1024).init(device),
            fc2: LinearConfig::new(1024, spec.num_classes).init(device),
            mean: spec.mean,
            std: spec.std,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc2.forward(self.features(x))
    }

    /// What `fc2` reads, `[N, 1024]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = (x - self.mean) / self.std;
        let x = max_pool2d(&self.pool, relu(conv2d(&self.conv1, x)));
        let x = max_pool2d(&self.pool, relu(conv2d(&self.conv2, x)));
        // [N, 64, 7, 7] flattened in C, H, W order, as torch.flatten(x, 1).
        let x: Tensor<2> = x.flatten(1, 3);
        relu(self.fc1.forward(x))
    }
}

/// One layer of a probed forward pass (for per-example gradient norms): what the layer read,
/// and the probe added to its output, a zero leaf whose gradient is the loss's gradient with
/// respect to that output (Burn keeps no gradients of intermediate tensors).
pub enum Probed {
    Linear {
        /// `[N, in]`.
        input: Tensor<2>,
        /// `[N, out]`.
        probe: Tensor<2>,
    },
    Conv {
        /// `[N, C_in, H, W]`.
        input: Tensor<4>,
        /// `[N, C_out, H', W']`.
        probe: Tensor<4>,
        kernel: [usize; 2],
        padding: [usize; 2],
    },
}

/// A zero leaf shaped like `z`, added to it; the probe is returned beside the sum.
fn probe<const D: usize>(z: Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    let p = Tensor::<D>::zeros(z.dims(), &z.device()).require_grad();
    (z + p.clone(), p)
}

fn linear(layer: &Linear, x: Tensor<2>, trace: &mut Vec<Probed>) -> Tensor<2> {
    let (z, probe) = probe(layer.forward(x.clone()));
    trace.push(Probed::Linear { input: x, probe });
    z
}

/// The cnn's convolutions: 5x5, stride 1, padding 2.
fn conv(layer: &Conv2d, x: Tensor<4>, trace: &mut Vec<Probed>) -> Tensor<4> {
    let (z, probe) = probe(conv2d(layer, x.clone()));
    trace.push(Probed::Conv {
        input: x,
        probe,
        kernel: [5, 5],
        padding: [2, 2],
    });
    z
}

impl Mlp {
    fn forward_probed(&self, x: Tensor<4>, t: &mut Vec<Probed>) -> Tensor<2> {
        let x = (x - self.mean) / self.std;
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(linear(&self.fc1, x, t));
        let x = relu(linear(&self.fc2, x, t));
        linear(&self.fc3, x, t)
    }
}

impl Cnn {
    fn forward_probed(&self, x: Tensor<4>, t: &mut Vec<Probed>) -> Tensor<2> {
        let x = (x - self.mean) / self.std;
        let x = max_pool2d(&self.pool, relu(conv(&self.conv1, x, t)));
        let x = max_pool2d(&self.pool, relu(conv(&self.conv2, x, t)));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(linear(&self.fc1, x, t));
        linear(&self.fc2, x, t)
    }
}

/// A single image network of any architecture Rampart builds. (Burn modules cannot box a
/// variant; the size difference is a few hundred bytes of layer configuration.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ImageNet {
    Mlp(Mlp),
    Cnn(Cnn),
}

impl ImageNet {
    /// Logits `[N, classes]` for pixels `[N, 1, 28, 28]` in [0, 1].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            ImageNet::Mlp(m) => m.forward(x),
            ImageNet::Cnn(m) => m.forward(x),
        }
    }

    /// [`ImageNet::forward`] on an autodiff device with a probe on every layer's output, in
    /// order: the logits and each layer's input and probe.
    pub fn forward_probed(&self, x: Tensor<4>) -> (Tensor<2>, Vec<Probed>) {
        let mut trace = Vec::new();
        let logits = match self {
            ImageNet::Mlp(m) => m.forward_probed(x, &mut trace),
            ImageNet::Cnn(m) => m.forward_probed(x, &mut trace),
        };
        (logits, trace)
    }

    /// The penultimate layer's activations `[N, F]`: what the last layer reads.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            ImageNet::Mlp(m) => m.features(x),
            ImageNet::Cnn(m) => m.features(x),
        }
    }

    /// The id of the first layer's weight (`fc1` or `conv1`), to read its gradient.
    pub fn first_weight_id(&self) -> burn::module::ParamId {
        match self {
            ImageNet::Mlp(m) => m.fc1.weight.id,
            ImageNet::Cnn(m) => m.conv1.weight.id,
        }
    }

    /// Number of classes (outputs of the last layer).
    pub fn num_classes(&self) -> usize {
        // Burn stores Linear weights as [in, out].
        match self {
            ImageNet::Mlp(m) => m.fc3.weight.dims()[1],
            ImageNet::Cnn(m) => m.fc2.weight.dims()[1],
        }
    }

    pub fn arch(&self) -> Arch {
        match self {
            ImageNet::Mlp(_) => Arch::Mlp,
            ImageNet::Cnn(_) => Arch::Cnn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn tensor_shapes_match_the_built_network() {
        let device = Device::flex();
        for arch in [Arch::Mlp, Arch::Cnn] {
            let spec = ImageSpec {
                num_classes: 7,
                ..ImageSpec::new(arch)
            };
            let built = crate::artifact::layout::tensor_shapes(&spec.init(&device));
            assert_eq!(spec.tensor_shapes(), built, "{arch}");
        }
    }

    #[test]
    fn the_cnn_gives_the_same_logits_with_and_without_autodiff() {
        // Without autodiff the convolutions and pooling run their kernels directly, with it
        // inside autodiff nodes: the same arithmetic, so the same logits bit for bit.
        let device = Device::flex();
        let net = ImageSpec::new(Arch::Cnn).init(&device);
        let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Default, &device);
        let plain = net.forward(x.clone());
        let tracked = net.forward(x.autodiff()).inner();
        let tolerance = burn::tensor::Tolerance::absolute(1e-5);
        plain
            .into_data()
            .assert_approx_eq::<f32>(&tracked.into_data(), tolerance);
    }

    #[test]
    fn specs_that_cannot_work_are_refused() {
        let ok = ImageSpec::new(Arch::Mlp);
        assert!(ok.validate().is_ok());
        for bad in [
            ImageSpec {
                num_classes: 1,
                ..ok
            },
            ImageSpec {
                num_classes: MAX_CLASSES + 1,
                ..ok
            },
            ImageSpec { std: 0.0, ..ok },
            ImageSpec {
                std: f32::NAN,
                ..ok
            },
            ImageSpec {
                mean: f32::INFINITY,
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
