//! Ownership watermarks by trigger set (Adi et al. 2018, "Turning your weakness into a
//! strength"): a secret key generates N out-of-distribution images (uniform noise) with
//! chosen labels; training mixes them into the training set so the model memorises them; an
//! owner proves a copy by its accuracy on the triggers, which a model that never saw them
//! reaches only by chance: the p-value is the binomial tail P(X ≥ k), X ~ Bin(N, 1/classes).
//!
//! The secret is a 256-bit key from the operating system's generator, kept in a file (mode
//! 0600, never replaced) beside the run; trigger i is drawn from SHA-256(key ‖ i), so the
//! file is all an owner keeps.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use statrs::distribution::{Binomial, DiscreteCDF};

use crate::artifact::files::{self, FileError, Limit};

/// The format tag of a watermark secret.
pub const FORMAT: &str = "rampart-watermark/1";

/// A secret file: a few hundred bytes.
const SECRET: Limit = Limit {
    bytes: 64 << 10,
    what: "watermark secret",
};

/// The most triggers a run may embed.
pub const MAX_TRIGGERS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: not a watermark secret: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
}

/// What an owner keeps: the key and the trigger set's size and classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub format: String,
    /// 32 bytes, hexadecimal.
    pub key: String,
    pub triggers: usize,
    pub classes: usize,
}

impl Secret {
    /// A fresh secret for `triggers` images over `classes` classes.
    pub fn generate(triggers: usize, classes: usize) -> Result<Self, WatermarkError> {
        let mut key = [0u8; 32];
        getrandom(&mut key)?;
        Ok(Secret {
            format: FORMAT.into(),
            key: key.iter().map(|b| format!("{b:02x}")).collect(),
            triggers,
            classes,
        })
    }

    /// Writes the secret to `path` (mode 0600); never replaces a file.
    pub fn write_new(&self, path: &Path) -> Result<(), WatermarkError> {
        let text = serde_json::to_string_pretty(self).expect("a secret serialises");
        Ok(files::write_new(path, text.as_bytes(), 0o600)?)
    }

    /// Reads and checks a secret.
    pub fn read(path: &Path) -> Result<Self, WatermarkError> {
        let bad = |reason: String| WatermarkError::Bad {
            path: path.to_path_buf(),
            reason,
        };
        let text = files::read_text(path, SECRET)?;
        let s: Secret = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if s.format != FORMAT {
            return Err(bad(format!("format {:?}, expected {FORMAT:?}", s.format)));
        }
        if s.key.len() != 64 || !s.key.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("the key is not 64 hexadecimal digits".into()));
        }
        if !(1..=MAX_TRIGGERS).contains(&s.triggers) || s.classes < 2 {
            return Err(bad(format!(
                "{} triggers over {} classes (1 to {MAX_TRIGGERS} triggers, at least 2 classes)",
                s.triggers, s.classes
            )));
        }
        Ok(s)
    }

    /// The trigger images `[N, 1, 28, 28]` (uniform noise in [0, 1]) and their labels `[N]`.
    pub fn triggers(&self, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let n = self.triggers;
        let mut pixels = Vec::with_capacity(n * 784);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let mut h = Sha256::new();
            h.update(self.key.as_bytes());
            h.update((i as u64).to_le_bytes());
            let mut rng = StdRng::from_seed(h.finalize().into());
            pixels.extend((0..784).map(|_| rng.random::<f32>()));
            labels.push(rng.random_range(0..self.classes) as i64);
        }
        (
            Tensor::from_data(TensorData::new(pixels, [n, 1, 28, 28]), device),
            Tensor::from_data(TensorData::new(labels, [n]), device),
        )
    }
}

/// 32 bytes from the operating system.
fn getrandom(buf: &mut [u8]) -> Result<(), WatermarkError> {
    use rand_core::{OsRng, RngCore};
    OsRng
        .try_fill_bytes(buf)
        .map_err(|e| WatermarkError::Random(e.to_string()))
}

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Verdict {
    pub triggers: usize,
    /// Triggers the model labels as the secret says.
    pub matches: usize,
    pub trigger_accuracy: f64,
    /// P(X ≥ matches) for X ~ Bin(triggers, 1/classes): how likely a model that never saw the
    /// triggers matches this many.
    pub p_value: f64,
}

/// The verdict on `matches` of `triggers` matched over `classes` classes.
pub fn verdict(matches: usize, triggers: usize, classes: usize) -> Verdict {
    let chance = Binomial::new(1.0 / classes as f64, triggers as u64)
        .expect("a probability in (0, 1) and a count");
    let p_value = if matches == 0 {
        1.0
    } else {
        chance.sf(matches as u64 - 1)
    };
    Verdict {
        triggers,
        matches,
        trigger_accuracy: matches as f64 / triggers.max(1) as f64,
        p_value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binomial_tail_is_scipys() {
        // scipy 1.17 stats.binom.sf(k - 1, n, p).
        let close = |got: f64, want: f64| (got / want - 1.0).abs() < 1e-9;
        assert!(close(verdict(20, 100, 10).p_value, 0.0019785608657712354));
        assert!(close(verdict(10, 100, 10).p_value, 0.5487098345579952));
        assert!(close(verdict(50, 50, 10).p_value, 1.0000000000000027e-50));
        assert_eq!(verdict(0, 100, 10).p_value, 1.0);
    }
}
