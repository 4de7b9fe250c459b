//! The per-example worst case over several attacks and restarts, as AutoAttack reports it: an
//! example is robust only if it is classified right clean and after every run. Each attack
//! runs only on the examples still robust, starting from the clean input; the robust
//! accuracy after each attack is kept.

use burn::tensor::{Bool, Device, IndexingUpdateOp, Int, Tensor};

use super::ball::{per_example, put};
use super::{Attack, Method};
use crate::classifier::{Classifier, Input};

/// What attacking a batch found, per example.
pub struct Outcome<const D: usize> {
    /// Correct (by the decision rule) on the clean input.
    pub clean_correct: Tensor<1, Bool>,
    /// Correct on the clean input and after every attack and restart.
    pub robust: Tensor<1, Bool>,
    /// Robust after each attack in turn (with all its restarts), in the order run.
    pub robust_after: Vec<Tensor<1, Bool>>,
    /// The adversarial example that fooled the model, else the clean input.
    pub adversarial: Tensor<D>,
    /// 1 + the index of the attack that fooled each example first; 0 where none did.
    pub broken_by: Tensor<1, Int>,
    /// The iteration or query of that attack's run at which it fooled the example (see
    /// [`Traced::iteration`](super::Traced::iteration)); −1 where unknown or not fooled.
    pub iteration: Tensor<1, Int>,
}

/// Runs each attack `restarts` times (randomized attacks only; each time all of its
/// [`Attack::runs`]) on a batch and keeps the per-example worst case. Examples already fooled
/// are not attacked again (they are carried, not recomputed). Gradients come from
/// `model.logits`; success is judged on `model.decide`.
pub fn worst_case<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    y: &Tensor<1, Int>,
    attacks: &[Method],
    restarts: usize,
    target: Option<&Tensor<1, Int>>,
) -> Outcome<D> {
    let clean_correct = model.decide(x.clone()).equal(y.clone());
    let mut robust = clean_correct.clone();
    let mut adversarial = x.x().clone();
    let mut robust_after = Vec::with_capacity(attacks.len());
    let n = y.dims()[0];
    let device = y.device();
    let mut broken_by = Tensor::<1, Int>::zeros([n], &device);
    let mut iteration = Tensor::<1, Int>::full([n], -1, &device);
    for (a, attack) in attacks.iter().enumerate() {
        let restarts = if attack.randomized() {
            restarts.max(1)
        } else {
            1
        };
        for run in 0..restarts * attack.runs() {
            // Positions still robust (the one read-back per run: their count sizes the batch).
            let Some(idx) = robust.clone().nonzero().into_iter().next() else {
                break;
            };
            let xs = x.select(idx.clone());
            let ys = y.clone().select(0, idx.clone());
            let ts = target.map(|t| t.clone().select(0, idx.clone()));
            let traced = attack.run(model, &xs, &ys, ts.as_ref(), run % attack.runs());
            let adv = traced.adversarial;
            let decision = model.decide(xs.with_x(adv.clone()));
            let fooled = match &ts {
                None => decision.not_equal(ys),
                Some(t) => decision.equal(t.clone()),
            };
            robust = robust.bool_and(scatter(&fooled, &idx, n, &device).lower_elem(0.5));
            // Rows selected here were unbroken (code 0, iteration −1): add, don't overwrite.
            let hit = fooled.clone().int();
            broken_by = broken_by.select_assign(
                0,
                idx.clone(),
                hit.clone() * (a as i64 + 1),
                IndexingUpdateOp::Add,
            );
            if let Some(it) = traced.iteration {
                iteration =
                    iteration.select_assign(0, idx.clone(), hit * (it + 1), IndexingUpdateOp::Add);
            }
            // Fooled examples keep this adversarial example; the others stay clean.
            let m = fooled.reshape(per_example(xs.x())).expand(adv.dims());
            let chosen = xs.x().clone().mask_where(m, adv);
            adversarial = put(adversarial, &idx, chosen);
        }
        robust_after.push(robust.clone());
    }
    Outcome {
        clean_correct,
        robust,
        robust_after,
        adversarial,
        broken_by,
        iteration,
    }
}

/// A flag per row of a subset `idx`, back at full-batch positions `[n]` (1.0 where set).
fn scatter(flags: &Tensor<1, Bool>, idx: &Tensor<1, Int>, n: usize, device: &Device) -> Tensor<1> {
    Tensor::<1>::zeros([n], device).select_assign(
        0,
        idx.clone(),
        flags.clone().float(),
        IndexingUpdateOp::Add,
    )
}

/// Clean-correct, robust and per-attack robust counts summed on the device over batches and
/// read back once.
pub struct Tally {
    clean: Tensor<1, Int>,
    robust: Tensor<1, Int>,
    after: Vec<Tensor<1, Int>>,
}

/// The counts a [`Tally`] read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub clean: u64,
    pub robust: u64,
    /// Robust after each attack in turn.
    pub after: Vec<u64>,
}

impl Tally {
    pub fn new(attacks: usize, device: &Device) -> Self {
        Self {
            clean: Tensor::zeros([1], device),
            robust: Tensor::zeros([1], device),
            after: (0..attacks).map(|_| Tensor::zeros([1], device)).collect(),
        }
    }

    /// Adds a batch's outcome.
    pub fn add<const D: usize>(&mut self, out: &Outcome<D>) {
        let count = |t: &Tensor<1, Bool>| t.clone().int().sum();
        self.clean = self.clean.clone() + count(&out.clean_correct);
        self.robust = self.robust.clone() + count(&out.robust);
        // An attack skipped because nothing was left to attack leaves the last mask.
        for (i, total) in self.after.iter_mut().enumerate() {
            let mask = out.robust_after.get(i).unwrap_or(&out.robust);
            *total = total.clone() + count(mask);
        }
    }

    /// Reads the counts back (one synchronisation).
    pub fn read(self) -> Counts {
        let mut all = vec![self.clean, self.robust];
        all.extend(self.after);
        let values: Vec<i64> = Tensor::cat(all, 0)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .expect("attack counts read back from the device as integers");
        let get = |i: usize| values.get(i).copied().unwrap_or(0).max(0) as u64;
        Counts {
            clean: get(0),
            robust: get(1),
            after: (2..values.len()).map(get).collect(),
        }
    }
}
