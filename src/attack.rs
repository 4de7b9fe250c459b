//! Evasion attacks that measure empirical robustness: FGSM and PGD (Madry et al. 2018) under
//! the L∞ and L2 norms, with random starts, restarts, targeted or untargeted, with the
//! cross-entropy or the margin (Carlini-Wagner) loss.
//!
//! Inputs are pixels in [0, 1]; epsilon and the step size are in the same units (L∞: per
//! pixel; L2: Euclidean norm of the whole perturbation). Every adversarial example stays in
//! the epsilon ball around its clean image and in [0, 1]. The input gradient of a whole batch
//! comes from one backward pass per step; the model is evaluated as given (pass a `valid()`
//! copy: no dropout, frozen batch-norm statistics) and is not modified.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Distribution, IndexingUpdateOp, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::Classifier;

/// A model attacks can differentiate, on inputs of rank `D` (`[N, 1, 28, 28]` pixels for the
/// image classifiers, `[N, F]` network features for the fusion model's network view).
pub trait Logits<const D: usize> {
    /// Differentiable scores `[N, classes]` the attacker ascends; for an ensemble, its
    /// surrogate (mean logits or log of the mean probabilities).
    fn logits(&self, x: Tensor<D>) -> Tensor<2>;

    /// The decision that robustness is judged on, `[N]`: a class below `classes`, or, for a
    /// model that can refuse (a unanimous ensemble), `classes` meaning "no decision", which is
    /// never correct. Default: argmax of the logits.
    fn decide(&self, x: Tensor<D>) -> Tensor<1, Int> {
        self.logits(x).argmax(1).squeeze_dim::<1>(1)
    }

    /// The box every input lives in, `(low, high)` per coordinate; `None` for unbounded inputs
    /// (embeddings). Default: pixels in [0, 1].
    fn input_box(&self) -> Option<(f64, f64)> {
        Some((0.0, 1.0))
    }

    /// The model restricted to the examples at `rows` of the batch, for models whose other
    /// inputs are fixed per example (the fusion model's views over one modality); `None`
    /// (the default) for models that see only `x`.
    fn restrict(&self, _rows: &Tensor<1, Int>) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

impl Logits<4> for Classifier {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    Linf,
    L2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttackLoss {
    /// Cross-entropy of the true (untargeted) or target (targeted) class.
    Ce,
    /// Margin loss of Carlini & Wagner: the best other logit minus the true one (untargeted),
    /// or the target logit minus the best other one (targeted).
    Margin,
}

/// Projected gradient descent; FGSM is one step of size epsilon without random start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pgd {
    pub norm: Norm,
    /// Radius of the threat model, pixel units.
    pub epsilon: f64,
    /// Step size, pixel units.
    pub alpha: f64,
    pub steps: usize,
    /// Start from a random point of the ball (L∞: uniform; L2: random direction and radius).
    pub random_start: bool,
    pub loss: AttackLoss,
}

impl Pgd {
    /// The fast gradient sign method (Goodfellow et al. 2015): x + epsilon · sign(∇x loss).
    pub fn fgsm(epsilon: f64) -> Self {
        Self {
            norm: Norm::Linf,
            epsilon,
            alpha: epsilon,
            steps: 1,
            random_start: false,
            loss: AttackLoss::Ce,
        }
    }

    /// Adversarial examples for `x` with labels `y`. Untargeted when `target` is `None`
    /// (move away from `y`), else move towards `target`.
    pub fn perturb<const D: usize, M: Logits<D>>(
        &self,
        model: &M,
        x: &Tensor<D>,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
    ) -> Tensor<D> {
        let bounds = model.input_box();
        let mut x_adv = if self.random_start {
            self.project_within(x, x.clone() + self.random_delta(x), bounds)
        } else {
            x.clone()
        };
        for _ in 0..self.steps {
            let xa = x_adv.clone().autodiff().require_grad();
            let logits = model.logits(xa.clone());
            let loss = match target {
                None => objective(self.loss, logits, y, false),
                Some(t) => objective(self.loss, logits, &t.clone().autodiff(), true),
            };
            let grad = xa.grad(&loss.backward()).expect("input gradient").inner();
            let step = match self.norm {
                Norm::Linf => grad.sign() * self.alpha,
                Norm::L2 => grad.clone() / (l2_norms(&grad) + 1e-12) * self.alpha,
            };
            x_adv = self.project_within(x, x_adv + step, bounds);
        }
        x_adv
    }

    /// Projects `x_adv` onto the epsilon ball around `x`, then onto [0, 1].
    pub fn project<const D: usize>(&self, x: &Tensor<D>, x_adv: Tensor<D>) -> Tensor<D> {
        self.project_within(x, x_adv, Some((0.0, 1.0)))
    }

    /// Projects `x_adv` onto the epsilon ball around `x`, then onto the box `bounds`
    /// (`None`: no box).
    pub fn project_within<const D: usize>(
        &self,
        x: &Tensor<D>,
        x_adv: Tensor<D>,
        bounds: Option<(f64, f64)>,
    ) -> Tensor<D> {
        let delta = x_adv - x.clone();
        let delta = match self.norm {
            Norm::Linf => delta.clamp(-self.epsilon, self.epsilon),
            Norm::L2 => {
                let scale = (l2_norms(&delta).recip() * self.epsilon).clamp_max(1.0);
                delta * scale
            }
        };
        match bounds {
            Some((low, high)) => (x.clone() + delta).clamp(low, high),
            None => x.clone() + delta,
        }
    }

    fn random_delta<const D: usize>(&self, x: &Tensor<D>) -> Tensor<D> {
        let e = self.epsilon;
        match self.norm {
            Norm::Linf => x.random_like(Distribution::Uniform(-e, e)),
            Norm::L2 => {
                let direction = x.random_like(Distribution::Normal(0.0, 1.0));
                let radius =
                    Tensor::<D>::random(per_example(x), Distribution::Uniform(0.0, e), &x.device());
                direction.clone() / (l2_norms(&direction) + 1e-12) * radius
            }
        }
    }
}

/// Kullback-Leibler divergence KL(softmax(clean) ‖ softmax(adv)) per example, `[N, 1]`;
/// `clean` logits are treated as constants by the caller (detach them).
pub fn kl_divergence(clean: Tensor<2>, adv: Tensor<2>) -> Tensor<2> {
    let log_p = log_softmax(clean, 1);
    let log_q = log_softmax(adv, 1);
    (log_p.clone().exp() * (log_p - log_q)).sum_dim(1)
}

/// TRADES' inner maximisation (Zhang et al. 2019): L∞ PGD from a small random start that
/// ascends KL(f(x) ‖ f(x')) instead of a loss against the label.
pub fn trades_perturb<const D: usize, M: Logits<D>>(
    model: &M,
    x: &Tensor<D>,
    epsilon: f64,
    alpha: f64,
    steps: usize,
) -> Tensor<D> {
    let ball = Pgd {
        norm: Norm::Linf,
        epsilon,
        alpha,
        steps,
        random_start: false,
        loss: AttackLoss::Ce,
    };
    let bounds = model.input_box();
    let clean = model.logits(x.clone());
    let mut x_adv = ball.project_within(
        x,
        x.clone() + x.random_like(Distribution::Normal(0.0, 0.001)),
        bounds,
    );
    for _ in 0..steps {
        let xa = x_adv.clone().autodiff().require_grad();
        let kl = kl_divergence(clean.clone().autodiff(), model.logits(xa.clone())).sum();
        let grad = xa.grad(&kl.backward()).expect("input gradient").inner();
        x_adv = ball.project_within(x, x_adv + grad.sign() * alpha, bounds);
    }
    x_adv
}

/// Per-example L2 norms of `t` (`D` ≥ 2), shape `[N, 1, ..., 1]`.
fn l2_norms<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    t.clone()
        .flatten::<2>(1, D - 1)
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .reshape(per_example(t))
}

/// The shape `[N, 1, ..., 1]` of a per-example scalar broadcast against `t`.
fn per_example<const D: usize>(t: &Tensor<D>) -> [usize; D] {
    let mut shape = [1; D];
    shape[0] = t.dims()[0];
    shape
}

/// The scalar the attacker ascends (summed over the batch, so each example's gradient is its
/// own).
fn objective(
    loss: AttackLoss,
    logits: Tensor<2>,
    labels: &Tensor<1, Int>,
    targeted: bool,
) -> Tensor<1> {
    let [_, k] = logits.dims();
    let onehot = labels.clone().one_hot::<2>(k).float();
    let sign = if targeted { -1.0 } else { 1.0 };
    match loss {
        AttackLoss::Ce => {
            let nll = -(log_softmax(logits, 1) * onehot).sum_dim(1);
            nll.sum() * sign
        }
        AttackLoss::Margin => {
            let own = (logits.clone() * onehot.clone()).sum_dim(1);
            let others = logits - onehot * 1e9;
            let best_other = others.max_dim(1);
            ((best_other - own) * sign).sum()
        }
    }
}

/// Result of attacking a set: per example, whether it survived every attack, and the
/// adversarial example that fooled the model (the clean image where none did).
pub struct AttackOutcome<const D: usize> {
    /// Correct on the clean image.
    pub clean_correct: Tensor<1, Bool>,
    /// Correct on the clean image and on every attack and restart run.
    pub robust: Tensor<1, Bool>,
    /// The first successful adversarial example per image, else the clean image.
    pub adversarial: Tensor<D>,
}

/// Clean-correct and robust counts summed on the device over batches and read back once.
pub struct Tally {
    clean: Tensor<1, Int>,
    robust: Tensor<1, Int>,
}

impl Tally {
    pub fn new(device: &burn::tensor::Device) -> Self {
        Self {
            clean: Tensor::zeros([1], device),
            robust: Tensor::zeros([1], device),
        }
    }

    /// Adds a batch's outcome.
    pub fn add<const D: usize>(&mut self, out: &AttackOutcome<D>) {
        self.clean = self.clean.clone() + out.clean_correct.clone().int().sum();
        self.robust = self.robust.clone() + out.robust.clone().int().sum();
    }

    /// (clean-correct, robust) counts.
    pub fn read(self) -> (u64, u64) {
        let read = |t: Tensor<1, Int>| t.into_scalar::<i64>() as u64;
        (read(self.clean), read(self.robust))
    }
}

/// Runs each attack `restarts` times on a batch and keeps the per-example worst case: an
/// example counts as robust only if it survived every run. Examples already fooled are not
/// attacked again (they are carried, not recomputed). Gradients come from `model.logits`;
/// success is judged on `model.decide`, the model's real decision rule.
pub fn worst_case<const D: usize, M: Logits<D>>(
    model: &M,
    x: &Tensor<D>,
    y: &Tensor<1, Int>,
    attacks: &[Pgd],
    restarts: usize,
    target: Option<&Tensor<1, Int>>,
) -> AttackOutcome<D> {
    let predict = |x: Tensor<D>| model.decide(x);
    let clean_correct = predict(x.clone()).equal(y.clone());
    let mut robust = clean_correct.clone();
    let mut adversarial = x.clone();
    for attack in attacks {
        for _ in 0..restarts.max(1) {
            // Positions still robust (the one read-back per run: their count sizes the batch).
            let Some(idx) = robust.clone().nonzero().into_iter().next() else {
                break;
            };
            let (xs, ys) = (
                x.clone().select(0, idx.clone()),
                y.clone().select(0, idx.clone()),
            );
            let ts = target.map(|t| t.clone().select(0, idx.clone()));
            let restricted = model.restrict(&idx);
            let sub = restricted.as_ref().unwrap_or(model);
            let adv = attack.perturb(sub, &xs, &ys, ts.as_ref());
            let decision = sub.decide(adv.clone());
            let fooled = match &ts {
                None => decision.not_equal(ys),
                Some(t) => decision.equal(t.clone()),
            };
            // Back to full-batch positions (index-add of differences): fooled examples lose
            // their robust flag and keep this adversarial example.
            let n = x.dims()[0];
            let device = x.device();
            let fooled = fooled.float();
            let hit = Tensor::<1>::zeros([n], &device).select_assign(
                0,
                idx.clone(),
                fooled.clone(),
                IndexingUpdateOp::Add,
            );
            robust = robust.bool_and(hit.clone().lower_elem(0.5));
            let m = fooled.reshape(per_example(&xs));
            let chosen = adv * m.clone() + xs * (m.neg() + 1.0);
            let current = adversarial.clone().select(0, idx.clone());
            adversarial =
                adversarial.select_assign(0, idx, chosen - current, IndexingUpdateOp::Add);
        }
    }
    AttackOutcome {
        clean_correct,
        robust,
        adversarial,
    }
}

/// Writes `examples.safetensors` (tensors `clean`, `adversarial` `[N, 1, 28, 28]` f32,
/// `labels` i64, `robust` u8) and `grid.png` (rows: the first 8 images; columns: clean,
/// adversarial, perturbation with grey = 0) into `dir`, each atomically.
pub fn save_examples(
    dir: &std::path::Path,
    batches: Vec<(Tensor<4>, Tensor<4>, Tensor<1, Int>, Tensor<1, Bool>)>,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", dir.display());
    let (mut clean, mut adv, mut labels, mut robust) = (vec![], vec![], vec![], vec![]);
    for (x, a, y, r) in batches {
        clean.extend(
            x.into_data()
                .try_to_vec::<f32>()
                .map_err(|e| err(&format!("{e:?}")))?,
        );
        adv.extend(
            a.into_data()
                .try_to_vec::<f32>()
                .map_err(|e| err(&format!("{e:?}")))?,
        );
        labels.extend(
            y.into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .map_err(|e| err(&format!("{e:?}")))?,
        );
        robust.extend(
            r.into_data()
                .convert::<bool>()
                .try_to_vec::<bool>()
                .map_err(|e| err(&format!("{e:?}")))?
                .into_iter()
                .map(u8::from),
        );
    }
    let n = labels.len();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let (cb, ab) = (f32_bytes(&clean), f32_bytes(&adv));
    let lb: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    use safetensors::{Dtype, tensor::TensorView};
    fn view(dtype: Dtype, shape: Vec<usize>, bytes: &[u8]) -> Result<TensorView<'_>, String> {
        TensorView::new(dtype, shape, bytes).map_err(|e| e.to_string())
    }
    let tensors = vec![
        ("clean", view(Dtype::F32, vec![n, 1, 28, 28], &cb)?),
        ("adversarial", view(Dtype::F32, vec![n, 1, 28, 28], &ab)?),
        ("labels", view(Dtype::I64, vec![n], &lb)?),
        ("robust", view(Dtype::U8, vec![n], &robust)?),
    ];
    let bytes = safetensors::serialize(tensors, None).map_err(|e| err(&e))?;
    crate::store::write_atomic(&dir.join("examples.safetensors"), &bytes).map_err(|e| err(&e))?;

    const SCALE: u32 = 4;
    let rows = n.min(8) as u32;
    let side = 28 * SCALE;
    let mut grid =
        image::GrayImage::from_pixel(3 * side + 8, rows * (side + 4), image::Luma([255]));
    for r in 0..rows as usize {
        let img = &clean[r * 784..(r + 1) * 784];
        let a = &adv[r * 784..(r + 1) * 784];
        let delta: Vec<f32> = a.iter().zip(img).map(|(p, q)| p - q).collect();
        let scale = delta.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let columns: [Vec<f32>; 3] = [
            img.to_vec(),
            a.to_vec(),
            delta.iter().map(|d| 0.5 + 0.5 * d / scale).collect(),
        ];
        for (c, col) in columns.iter().enumerate() {
            for (i, v) in col.iter().enumerate() {
                let (px, py) = ((i % 28) as u32, (i / 28) as u32);
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        grid.put_pixel(
                            c as u32 * (side + 4) + px * SCALE + dx,
                            r as u32 * (side + 4) + py * SCALE + dy,
                            image::Luma([(v.clamp(0.0, 1.0) * 255.0) as u8]),
                        );
                    }
                }
            }
        }
    }
    let mut png = std::io::Cursor::new(Vec::new());
    grid.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| err(&e))?;
    crate::store::write_atomic(&dir.join("grid.png"), png.get_ref()).map_err(|e| err(&e))
}
