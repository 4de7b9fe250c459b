//! Checkpoints: after every epoch, the model and optimiser state (Burnpack) and the run's state
//! (`state.json`: epochs done, config, kept history) are written to `checkpoint.tmp/` and
//! swapped in, so the last good checkpoint survives a crash at any point.

use std::path::Path;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::config::TrainConfig;
use super::metrics::EpochMetrics;
use super::policy::EpochAttack;
use crate::artifact::files;

/// What `checkpoint/state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub epochs_done: usize,
    /// The run's config (older checkpoints hold the flat layout; read through
    /// [`TrainConfig::from_json`]).
    pub config: serde_json::Value,
    pub history: Vec<EpochMetrics>,
    /// The attack the next epoch trains against (absent in checkpoints of earlier versions).
    #[serde(default)]
    pub next_attack: Option<EpochAttack>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes the checkpoint into `dir.tmp`, then swaps it in: the previous checkpoint survives
/// any failure before the swap, and is moved aside (`dir.old`) only for the instant of it.
pub fn write<M: Module + ModuleSnapshot>(
    dir: &Path,
    model: &M,
    optim: &ModuleOptimizer,
    cfg: &TrainConfig,
    history: &[EpochMetrics],
    next_attack: Option<EpochAttack>,
) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    let old = dir.with_extension("old");
    for d in [dir, &tmp, &old] {
        if std::fs::symlink_metadata(d).is_ok_and(|m| !m.is_dir()) {
            return Err(err(
                d,
                "is not a directory; Rampart keeps checkpoints in directories it made",
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| err(&tmp, e))?;
    let mut store = BurnpackStore::from_file(tmp.join("model.bpk")).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| err(&tmp.join("model.bpk"), e))?;
    optim
        .save(tmp.join("optim.bpk"))
        .map_err(|e| err(&tmp.join("optim.bpk"), e))?;
    let state = State {
        epochs_done: history.len(),
        config: serde_json::to_value(cfg).map_err(|e| err(dir, e))?,
        history: history.to_vec(),
        next_attack,
    };
    let text = serde_json::to_string_pretty(&state).map_err(|e| err(dir, e))?;
    files::write_atomic(&tmp.join("state.json"), text.as_bytes())?;
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| err(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| err(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Reads `state.json` (recovering `checkpoint.old` if a swap was interrupted) and checks that
/// the checkpoint belongs to `cfg`: only `epochs` and `device` may change, and a differing key
/// is named.
pub fn read(dir: &Path, cfg: &TrainConfig) -> Result<State, TrainError> {
    let old = dir.with_extension("old");
    if !dir.exists() && old.exists() {
        std::fs::rename(&old, dir).map_err(|e| err(dir, e))?;
    }
    let path = dir.join("state.json");
    let text = files::read_text(&path, files::STATE).map_err(|e| {
        err(
            &path,
            format!("{e}; nothing to resume (train without --resume to start fresh)"),
        )
    })?;
    let state: State = serde_json::from_str(&text).map_err(|e| err(&path, e))?;
    let saved = TrainConfig::from_json(&state.config.to_string()).map_err(|e| err(&path, e))?;
    let differ = saved.differences(cfg);
    if !differ.is_empty() {
        return Err(err(
            &path,
            format!(
                "the checkpoint was made with a different config: {} differ (only epochs and device may change on --resume)",
                differ.join(", ")
            ),
        ));
    }
    if state.history.len() != state.epochs_done {
        return Err(err(&path, "history and epoch count disagree"));
    }
    Ok(state)
}

/// Loads the checkpoint's model weights into `model`.
pub fn load_model<M: ModuleSnapshot>(mut model: M, dir: &Path) -> Result<M, TrainError> {
    let path = dir.join("model.bpk");
    let mut store = BurnpackStore::from_file(&path);
    let result = model.load_from(&mut store).map_err(|e| err(&path, e))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(err(
            &path,
            format!(
                "does not fit the model: {:?} {:?}",
                result.errors, result.missing
            ),
        ));
    }
    Ok(model)
}

/// Loads the checkpoint's optimiser state into `optim`.
pub fn load_optim(optim: ModuleOptimizer, dir: &Path) -> Result<ModuleOptimizer, TrainError> {
    let path = dir.join("optim.bpk");
    optim.load(&path).map_err(|e| err(&path, e))
}
