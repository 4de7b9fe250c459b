//! One optimiser step on a batch of training rows, the way the run is configured: on one
//! device, over data-parallel replicas (one `step_multi` over all their gradients), or DP-SGD's
//! private step (clipped per-example gradients and noise, [`crate::privacy::dpsgd`]).

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::tensor::{Device, Tensor};

use super::objective::{Epoch, Objective};
use super::task::Task;
use crate::privacy::dpsgd::DpSgd;

/// What a step needs besides the model and its optimiser.
pub(super) struct Stepper<'a, T: Task<D>, const D: usize> {
    pub task: &'a T,
    pub objective: &'a dyn Objective<T, D>,
    /// The main device (where the model and the data live).
    pub device: &'a Device,
    /// Data-parallel replicas' devices, the main device first (one entry: no replicas).
    pub replicas: &'a [Device],
    /// DP-SGD, when the run is private.
    pub private: Option<DpSgd>,
}

/// A step's result: the model, the batch's summed loss and its correct count (on the main
/// device, not read back).
pub(super) type Stepped<M> = (M, Tensor<1>, Tensor<1>);

impl<T: Task<D>, const D: usize> Stepper<'_, T, D> {
    /// One optimiser step of `optim` on the batch `rows` at learning rate `lr`.
    pub fn step(
        &self,
        optim: &mut ModuleOptimizer,
        model: T::Model,
        rows: &[usize],
        plan: &Epoch,
        lr: f64,
    ) -> Stepped<T::Model> {
        if let Some(dp) = &self.private {
            return self.private_step(optim, model, rows, dp, lr);
        }
        if self.replicas.len() > 1 {
            return self.parallel_step(optim, model, rows, plan, lr);
        }
        let task = self.task;
        let batch = task.batch(rows);
        let step = self.objective.step(task, &model, &batch, plan);
        let loss = step.loss.clone().inner() * rows.len() as f32;
        let hits = step.logits.inner().argmax(1).squeeze_dim::<1>(1);
        let correct = hits.equal(task.labels(&batch)).float().sum();
        let grads = GradientsParams::from_grads(step.loss.backward(), &model);
        (optim.step(lr, model, grads), loss, correct)
    }

    /// DP-SGD: the private gradient of the task's model on the batch.
    fn private_step(
        &self,
        optim: &mut ModuleOptimizer,
        model: T::Model,
        rows: &[usize],
        dp: &DpSgd,
        lr: f64,
    ) -> Stepped<T::Model> {
        let batch = self.task.batch(rows);
        let step = self
            .task
            .private_step(&model, &batch, dp)
            .expect("the config allows DP-SGD only for tasks that implement it");
        (
            optim.step(lr, model, step.grads),
            step.loss_sum,
            step.correct,
        )
    }

    /// Data parallelism: the batch split into one part per replica, each part's loss on a
    /// fork of the model on its replica's device, weighted by the part's share of the batch
    /// so that the summed gradients are the whole batch's mean; one optimiser step over all
    /// of them (Burn's `step_multi`, which accumulates each parameter on one device), and
    /// the model forked back to the main device.
    fn parallel_step(
        &self,
        optim: &mut ModuleOptimizer,
        model: T::Model,
        rows: &[usize],
        plan: &Epoch,
        lr: f64,
    ) -> Stepped<T::Model> {
        let task = self.task;
        let k = self.replicas.len();
        let mut grads = MultiGradientsParams::default();
        let mut loss = Tensor::<1>::zeros([1], self.device);
        let mut correct = Tensor::<1>::zeros([1], self.device);
        for (r, device) in self.replicas.iter().enumerate() {
            let part = &rows[r * rows.len() / k..(r + 1) * rows.len() / k];
            if part.is_empty() {
                continue;
            }
            let replica = model.clone().fork(&device.clone().autodiff());
            let batch = task.batch_to(task.batch(part), device);
            let step = self.objective.step(task, &replica, &batch, plan);
            let share = part.len() as f32 / rows.len() as f32;
            let part_loss = step.loss.clone().inner() * part.len() as f32;
            loss = loss + part_loss.to_device(self.device);
            let hits = step.logits.inner().argmax(1).squeeze_dim::<1>(1);
            let hits = hits.equal(task.labels(&batch)).float().sum();
            correct = correct + hits.to_device(self.device);
            let g = GradientsParams::from_grads((step.loss * share).backward(), &replica);
            grads.grads.push((g, device.clone()));
        }
        let model = optim.step_multi(lr, model, grads);
        (model.fork(&self.device.clone().autodiff()), loss, correct)
    }
}
