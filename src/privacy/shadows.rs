//! Training LiRA's shadow models ([`super::lira`]): the target's recipe (its training config)
//! with another seed and output directory, on the training images the [`Plan`] gives shadow
//! `k`. A shadow already trained for the same plan and recipe is reused, a half-trained one is
//! resumed from its checkpoint, so an interrupted attack goes on where it stopped.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::lira::Plan;
use crate::artifact;
use crate::data::{self, ImageSet, Split};
use crate::device::DeviceChoice;
use crate::train::config::{DataConfig, TrainConfig};
use crate::train::observe::Observer;
use crate::train::{self, TrainError};

#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error(
        "the shadow recipe trains on {0}: LiRA's shadows here train on Fashion-MNIST; give --shadow-config a Fashion-MNIST config"
    )]
    NotFashionMnist(&'static str),
    #[error(
        "{path} was trained for another attack or recipe ({what}); remove it or choose another --shadow-dir"
    )]
    Mismatch { path: PathBuf, what: String },
    #[error("shadow model {k}: {source}")]
    Train {
        k: usize,
        #[source]
        source: TrainError,
    },
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
}

/// Shadow `k`'s config: the recipe in `dir/shadow-k`, with seed `recipe.seed + 1 + k`, no
/// watermark, on `device`.
pub fn shadow_config(
    recipe: &TrainConfig,
    k: usize,
    dir: &Path,
    device: DeviceChoice,
) -> TrainConfig {
    TrainConfig {
        out: dir.join(format!("shadow-{k}")),
        seed: recipe.seed.wrapping_add(1 + k as u64),
        watermark: 0,
        device,
        ..recipe.clone()
    }
}

/// The model file of shadow `k` of `plan`, trained now unless a finished one for this plan
/// and config is there; `observers` hear its training.
pub fn ensure(
    plan: &Plan,
    k: usize,
    cfg: &TrainConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<PathBuf, ShadowError> {
    let DataConfig::FashionMnist(d) = &cfg.data else {
        return Err(ShadowError::NotFashionMnist(match cfg.data {
            DataConfig::Synthetic(_) => "the synthetic set",
            _ => "records",
        }));
    };
    let path = cfg.model_path();
    if path.exists() {
        check_finished(plan, k, cfg, &path)?;
        return Ok(path);
    }
    let data_dir = d.data_dir.clone();
    let reshape = move |train: ImageSet, device: &Device| -> Result<ImageSet, TrainError> {
        let dir = data::resolve_data_dir(data_dir.as_deref())?;
        let whole = data::load_split(&dir, Split::Train, device)?;
        let test = data::load_split(&dir, Split::Test, device)?;
        let whole = ImageSet {
            name: train.name.clone(),
            ..whole
        };
        plan.shadow_set(k, train.len(), &whole, &test)
            .map_err(|e| TrainError::Invalid(e.to_string()))
    };
    let resume = cfg.out.join("checkpoint").exists();
    train::train_reshaped(cfg, &[], resume, observers, Some(&reshape))
        .map_err(|source| ShadowError::Train { k, source })?;
    Ok(path)
}

/// A finished shadow is reused only if it was trained with this config on this plan's images.
fn check_finished(
    plan: &Plan,
    k: usize,
    cfg: &TrainConfig,
    path: &Path,
) -> Result<(), ShadowError> {
    let device = crate::device::choose(DeviceChoice::Flex)
        .map_err(|e| ShadowError::Train {
            k,
            source: TrainError::Device(e),
        })?
        .device;
    let (_, _, metadata) = artifact::open_image(path, None, &device)?;
    let mismatch = |what: &str| ShadowError::Mismatch {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    // The device a shadow ran on does not change what it is.
    let found = metadata.config().map(|c| TrainConfig {
        device: cfg.device,
        ..c
    });
    if found.as_ref() != Some(cfg) {
        return Err(mismatch("its training config differs"));
    }
    let dataset = metadata
        .summary()
        .and_then(|s| s.dataset)
        .unwrap_or_default();
    if !dataset.contains(&plan.describe(k, "")) {
        return Err(mismatch("it trained on another IN/OUT assignment"));
    }
    Ok(())
}
