//! Security model cards (`rampart card`): every figure comes from a recorded run (the `--json`
//! reports of [`evidence`]) about this very model file, with the command that reproduces it.
//! The card is Markdown with Hugging Face front matter (`model-index` results, metrics typed,
//! with `args` for the threat model) so the Hub renders it, and the same content as JSON.

pub mod evidence;
pub mod render;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::artifact::files::FileError;
use crate::artifact::inspect::Inspection;
use crate::artifact::{AnyModel, Opened};
use evidence::{Figures, Run};

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {reason}")]
    Report { path: PathBuf, reason: String },
}

/// A model card's content.
#[derive(Debug, Clone, Serialize)]
pub struct Card {
    pub name: String,
    pub model: Inspection,
    /// "verified with KEY", "signed (MODEL.sig), not verified here", or "unsigned".
    pub signature: String,
    pub intended_use: String,
    pub runs: Vec<Run>,
    pub limitations: Vec<String>,
    pub not_protected: Vec<String>,
}

impl Card {
    /// The card of `opened` from `runs` (each already checked to be about it).
    pub fn build(
        opened: &Opened,
        signature: String,
        intended_use: Option<String>,
        runs: Vec<Run>,
    ) -> Self {
        let name = opened
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let has = |f: fn(&Figures) -> bool| runs.iter().any(|r| f(&r.figures));
        let mut limitations = Vec::new();
        if matches!(opened.model, AnyModel::Ensemble { .. }) {
            limitations.push("An ensemble's vote has no gradient: attacks run on a surrogate (the members' mean logits), so its robust accuracy is an upper bound.".into());
        }
        for r in &runs {
            match &r.figures {
                Figures::Robust {
                    notes,
                    warnings,
                    robust,
                    ..
                } => {
                    limitations.extend(
                        notes
                            .iter()
                            .map(|n| format!("Robust accuracy ({}): {n}", r.file.display())),
                    );
                    limitations.extend(
                        warnings
                            .iter()
                            .map(|w| format!("Masking check ({}): {w}", r.file.display())),
                    );
                    if robust.of < 1000 {
                        limitations.push(format!("Robust accuracy from {} examples only ({}): the interval shows the sampling error.", robust.of, r.file.display()));
                    }
                }
                Figures::Certified { n, images, .. } if *n < 100_000 || *images < 500 => {
                    limitations.push(format!("Certification with n = {n} on {images} images ({}): a reduced protocol (Cohen et al.: n = 100,000 on 500 images); the largest radius n allows is smaller.", r.file.display()));
                }
                Figures::Detection { adaptive, .. } if adaptive.is_empty() => {
                    limitations.push(format!(
                        "Detector figures ({}) are against non-adaptive attacks only.",
                        r.file.display()
                    ));
                }
                _ => {}
            }
        }
        if runs.iter().any(|r| r.data.contains("SYNTHETIC")) {
            limitations.push("Some figures come from SYNTHETIC data, not real traffic.".into());
        }
        let mut not_protected = Vec::new();
        if !has(|f| matches!(f, Figures::Robust { .. })) {
            not_protected.push("Evasion: no robustness evaluation is recorded; assume any small perturbation can change its output.".into());
        } else {
            not_protected.push("Perturbations larger than the evaluated ε, or in other norms, and attacks stronger than those listed.".into());
        }
        if !has(|f| matches!(f, Figures::Certified { .. })) {
            not_protected.push(
                "No certificate: no radius within which its (smoothed) prediction provably holds."
                    .into(),
            );
        }
        if !has(|f| matches!(f, Figures::Detection { .. })) {
            not_protected.push("No adversarial-input detector was evaluated with it.".into());
        }
        not_protected.push("Model extraction through its outputs, membership inference on its training data, and poisoning of that data: not measured here.".into());
        not_protected.push(
            "Distribution shift: figures hold for data like the test set named in each run.".into(),
        );
        Self {
            name,
            model: Inspection::of(opened),
            signature,
            intended_use: intended_use.unwrap_or_else(|| {
                "Not stated by the owner (pass --intended-use). Its figures are for research and evaluation on the data named below.".into()
            }),
            runs,
            limitations,
            not_protected,
        }
    }
}

/// The signature status of `model` for the card.
pub fn signature_status(model: &Path, verified_with: Option<&Path>) -> String {
    if let Some(key) = verified_with {
        return format!("verified with {} before this card was made", key.display());
    }
    let beside = crate::signing::beside(model);
    let in_dir = crate::artifact::files::parent_of(model).join("model.sig");
    match [beside, in_dir].into_iter().find(|p| p.is_file()) {
        Some(sig) => format!(
            "signed ({}), not verified by this command (pass --verify-key)",
            sig.display()
        ),
        None => "unsigned".into(),
    }
}
