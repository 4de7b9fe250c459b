//! Rampart: an adversarial-robustness engine on Burn.
//!
//! Inputs are pixels in [0, 1]; normalisation lives inside the models, so attacks and noise
//! work in pixel space. Models are saved as safetensors in PyTorch layout.
//!
//! - [`data`]: IDX files (Fashion-MNIST), data lookup, a synthetic set.
//! - [`model`]: the `mlp` and `cnn` classifiers.
//! - [`store`]: safetensors in PyTorch layout, atomic writes.
//! - [`train`]: configs and the training loop with checkpoints.
//! - [`eval`]: accuracy, per-class accuracy, confusion matrix.
//! - [`attack`]: FGSM and PGD (L∞, L2), restarts, per-example worst case.
//! - [`certify`]: randomized smoothing, PREDICT and CERTIFY.
//! - [`device`]: run-time device choice.

pub mod attack;
pub mod certify;
pub mod cli;
pub mod data;
pub mod device;
pub mod ensemble;
pub mod eval;
pub mod model;
pub mod multimodal;
pub mod store;
pub mod train;
