//! Training LiRA's shadow models ([`super::lira`]): the target's recipe (its training config)
//! with another seed and output directory, on the training images the [`Plan`] gives shadow
//! `k`. Each shadow's folder records the IN/OUT assignment it trains for
//! ([`ASSIGNMENT`]); a shadow already trained for the same assignment and recipe is reused, a
//! half-trained one resumed from its checkpoint, so an interrupted attack goes on where it
//! stopped, and a folder of another attack is refused.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::lira::Plan;
use crate::artifact::{self, files};
use crate::data::{self, ImageSet, Split};
use crate::device::DeviceChoice;
use crate::train::config::{DataConfig, TrainConfig};
use crate::train::observe::Observer;
use crate::train::{self, TrainError};

/// The file in a shadow's folder that names its IN/OUT assignment.
pub const ASSIGNMENT: &str = "lira-assignment.txt";

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
    #[error(transparent)]
    File(#[from] crate::artifact::files::FileError),
}

/// What a shadow's [`ASSIGNMENT`] file starts with; a new layout of shadow training changes
/// it, so shadows of an older Rampart are not taken for this one's.
const MARKER_VERSION: &str = "rampart-lira-shadow/2";

/// Shadow `k`'s config: the recipe in `dir/shadow-k`, with seed `recipe.seed + 1 + k`, no
/// watermark, on `device`, reading Fashion-MNIST from `data_dir` (the directory the attack
/// measures on; `None` for the default one), whatever folder the recipe names.
pub fn shadow_config(
    recipe: &TrainConfig,
    k: usize,
    dir: &Path,
    device: DeviceChoice,
    data_dir: Option<&Path>,
) -> TrainConfig {
    let mut data = recipe.data.clone();
    if let DataConfig::FashionMnist(d) = &mut data {
        d.data_dir = data_dir.map(Path::to_path_buf);
    }
    TrainConfig {
        out: dir.join(format!("shadow-{k}")),
        seed: recipe.seed.wrapping_add(1 + k as u64),
        watermark: 0,
        device,
        data,
        ..recipe.clone()
    }
}

/// The model file of shadow `k` of `plan`, trained now unless a finished one for this plan
/// and config is there; `inputs` (the target, the recipe's file) may not be outputs;
/// `observers` hear its training.
pub fn ensure(
    plan: &Plan,
    k: usize,
    cfg: &TrainConfig,
    inputs: &[PathBuf],
    observers: &mut [&mut dyn Observer],
) -> Result<PathBuf, ShadowError> {
    let DataConfig::FashionMnist(d) = &cfg.data else {
        return Err(ShadowError::NotFashionMnist(match cfg.data {
            DataConfig::Synthetic(_) => "the synthetic set",
            _ => "records",
        }));
    };
    let path = cfg.model_path();
    let marker = cfg.out.join(ASSIGNMENT);
    // The epochs too: a checkpoint resumes under another epoch count (and learning-rate
    // schedule) without complaint.
    let assignment = format!(
        "{MARKER_VERSION}\n{}\nepochs {}\n",
        plan.describe(k, "training images"),
        cfg.epochs
    );
    let checkpoint = cfg.checkpoint_dir();
    let started = checkpoint.exists() || checkpoint.with_extension("old").exists();
    let mismatch = |what: &str| ShadowError::Mismatch {
        path: cfg.out.clone(),
        what: what.to_string(),
    };
    if marker.exists() {
        let found = files::read_text(&marker, files::CONFIG)?;
        if found != assignment {
            return Err(mismatch(
                "it trains for another IN/OUT assignment, epoch count or Rampart version",
            ));
        }
    } else if path.exists() || started {
        return Err(mismatch(&format!("it has no {ASSIGNMENT}")));
    }
    if path.exists() {
        check_finished(cfg, &path).map_err(|what| mismatch(&what))?;
        return Ok(path);
    }
    if !started {
        std::fs::create_dir_all(&cfg.out)
            .map_err(|e| mismatch(&format!("cannot create it: {e}")))?;
        files::write_atomic(&marker, assignment.as_bytes())?;
    }
    let data_dir = d.data_dir.clone();
    let reshape = move |train: ImageSet,
                        device: &Device|
          -> Result<(ImageSet, Option<ImageSet>), TrainError> {
        let dir = data::resolve_data_dir(data_dir.as_deref())?;
        let whole = data::load_split(&dir, Split::Train, device)?;
        let test = data::load_split(&dir, Split::Test, device)?;
        let whole = ImageSet {
            name: train.name.clone(),
            ..whole
        };
        let (fit, held_out) = plan
            .shadow_set(k, train.len(), &whole, &test)
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        Ok((fit, Some(held_out)))
    };
    train::train_reshaped(cfg, inputs, started, observers, Some(&reshape))
        .map_err(|source| ShadowError::Train { k, source })?;
    Ok(path)
}

/// A finished shadow is reused only if it was trained with this recipe (the same config but
/// for its device, and as many epochs); else what differs.
fn check_finished(cfg: &TrainConfig, path: &Path) -> Result<(), String> {
    let device = Device::flex();
    let (_, _, metadata) = artifact::open_image(path, None, &device).map_err(|e| e.to_string())?;
    let Some(found) = metadata.config() else {
        return Err("it records no training config".into());
    };
    let mut differ = found.differences(cfg);
    if found.epochs != cfg.epochs {
        differ.push("epochs".into());
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "its training config differs in {}",
            differ.join(", ")
        ))
    }
}
