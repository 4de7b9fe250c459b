//! Rampart: an adversarial-robustness and model-security engine on Burn.
//!
//! Inputs are pixels in [0, 1] (or, for fusion models, features rescaled to [0, 1] by their
//! box); normalisation lives inside the models, so attacks and noise work in input space.
//! Models are safetensors in PyTorch layout. See `docs/ARCHITECTURE.md` for the module tree.
//!
//! - [`artifact`]: every file read and written (bounded, atomic), model files of every kind,
//!   metadata, manifests, digests.
//! - [`data`]: Fashion-MNIST (IDX), the synthetic sets, multimodal JSONL records.
//! - [`model`]: the networks (image, fusion) and voting ensembles.
//! - [`classifier`]: the one interface attacks, smoothing and evaluation use.
//! - [`workload`]: a model with the examples it runs on; operations as [`workload::Job`]s.
//! - [`eval`], [`attack`], [`certify`]: evaluation, evasion attacks, randomized smoothing.
//! - [`train`]: configs and the one training loop.
//! - [`ensemble`]: fitted weights and `ensemble train`.
//! - [`shard`]: runs split across machines, and merging their tables.
//! - [`privacy`]: DP-SGD, its accounting, membership inference.
//! - [`watermark`]: trigger-set ownership watermarks.
//! - [`device`]: run-time device choice.
//! - [`cli`]: the command line.

pub mod artifact;
pub mod attack;
pub mod card;
pub mod certify;
pub mod classifier;
pub mod cli;
pub mod data;
pub mod detect;
pub mod device;
pub mod ensemble;
pub mod eval;
pub mod evaluate;
pub mod explain;
pub mod model;
pub mod privacy;
pub mod serve;
pub mod shard;
pub mod signing;
pub mod train;
pub mod watermark;
pub mod workload;
