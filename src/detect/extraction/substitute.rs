//! The attacker's stolen copy (Papernot et al., AsiaCCS 2017): a substitute network trained on
//! the target's answers (labels only) to the attacker's queries, whose Jacobian picks the next
//! queries, and whose accuracy says how much of the model was taken.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::attack::pgd::input_gradient;
use crate::model::{Arch, ImageNet, ImageSpec};
use crate::train::build_optimizer;
use crate::train::objective::cross_entropy;
use crate::train::sections::{Adam, Optimizer};

/// How the attacker trains its copy: Adam at 10⁻³, from scratch after every round, as
/// Papernot et al. retrain theirs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Substitute {
    pub arch: Arch,
    /// Epochs over all queries so far, per round (Papernot et al.: 10).
    pub epochs: usize,
    pub batch: usize,
}

impl Substitute {
    /// A fresh network trained on queries `x` `[N, 1, 28, 28]` with the target's labels `y`,
    /// on the autodiff device (its Jacobian is taken for the next queries).
    pub fn train(&self, classes: usize, x: &Tensor<4>, y: &Tensor<1, Int>, seed: u64) -> ImageNet {
        let device = x.device();
        device.seed(seed);
        let spec = self.spec(classes);
        let mut model = spec.init(&device.clone().autodiff());
        let adam = Adam::default();
        let mut optim = build_optimizer(&Optimizer::Adam(adam));
        let mut rng = StdRng::seed_from_u64(seed);
        let n = x.dims()[0];
        let mut order: Vec<i64> = (0..n as i64).collect();
        for _ in 0..self.epochs {
            order.shuffle(&mut rng);
            for rows in order.chunks(self.batch) {
                let idx = Tensor::<1, Int>::from_data(
                    TensorData::new(rows.to_vec(), [rows.len()]),
                    &device,
                );
                let logits = model.forward(x.clone().select(0, idx.clone()).autodiff());
                let loss = cross_entropy(logits, &y.clone().select(0, idx));
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(adam.lr, model, grads);
            }
        }
        model
    }

    /// The substitute's network spec for `classes` classes.
    pub fn spec(&self, classes: usize) -> ImageSpec {
        ImageSpec {
            num_classes: classes,
            ..ImageSpec::fashion_normalised(self.arch)
        }
    }

    /// Papernot et al.'s augmentation: x + λ·sign(∇ₓ z_y(x)) on the substitute, for the
    /// target's labels `y`, kept in [lo, hi].
    pub fn augment(
        model: &ImageNet,
        x: &Tensor<4>,
        y: &Tensor<1, Int>,
        lambda: f64,
        (lo, hi): (f64, f64),
    ) -> Tensor<4> {
        let xa = x.clone().autodiff().require_grad();
        let logits = model.forward(xa.clone());
        let k = logits.dims()[1];
        let own = (logits * y.clone().autodiff().one_hot::<2>(k).float()).sum();
        (x.clone() + input_gradient(&xa, own).sign() * lambda).clamp(lo, hi)
    }

    /// Fraction of `x` the network labels `y`, in batches, read once.
    pub fn accuracy(model: &ImageNet, x: &Tensor<4>, y: &Tensor<1, Int>, batch: usize) -> f64 {
        let valid = model.valid();
        let n = x.dims()[0];
        let mut hits = Tensor::<1, Int>::zeros([1], &x.device());
        for start in (0..n).step_by(batch) {
            let end = (start + batch).min(n);
            let decided = valid
                .forward(x.clone().narrow(0, start, end - start))
                .argmax(1)
                .squeeze_dim::<1>(1);
            hits = hits
                + decided
                    .equal(y.clone().narrow(0, start, end - start))
                    .int()
                    .sum();
        }
        hits.into_scalar::<i64>() as f64 / n.max(1) as f64
    }
}
