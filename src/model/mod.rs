//! The networks Rampart builds, trains and saves.
//!
//! - [`image`]: `mlp` and `cnn` on 28x28 pixels in [0, 1].
//! - [`fusion`]: the multimodal fusion network (text, bytes, network flows).
//! - [`ensemble`]: voting ensembles of image networks.
//!
//! What attacks, smoothing and evaluation see is the one interface of [`crate::classifier`].

pub mod conv;
pub mod ensemble;
mod flex;
pub mod fusion;
pub mod image;
pub mod pool;
pub mod prune;

pub use ensemble::{Ensemble, Strategy};
pub use fusion::{FusionModel, FusionSpec, Modality};
pub use image::{Arch, ImageNet, ImageSpec};

/// Most classes a model file may declare: a spec asking for more is refused before anything
/// is allocated.
pub const MAX_CLASSES: usize = 100_000;
