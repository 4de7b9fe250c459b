//! The recorded runs a model card cites: the JSON reports of `rampart eval`, `evaluate`,
//! `certify` and `detect evaluate` (`--json`), recognised by their keys, checked to be about
//! the carded model (its SHA-256), and read into the figures the card shows.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::CardError;
use crate::artifact::files::{self, Limit};
use crate::detect::evaluate::Rate;

/// Reports are JSON objects of at most this size.
const REPORT_LIMIT: Limit = Limit {
    bytes: 64 << 20,
    what: "evaluation report",
};

/// One recorded run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub file: PathBuf,
    /// The command that produced it, when the report recorded it.
    pub command: Option<String>,
    pub data: String,
    pub figures: Figures,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Figures {
    Clean {
        accuracy: Rate,
        per_class: Vec<(String, f64)>,
    },
    Robust {
        norm: String,
        epsilon: f64,
        version: String,
        attacks: Vec<String>,
        clean: Rate,
        robust: Rate,
        /// "images", or a fusion model's attacked modality.
        input: String,
        /// The randomized classifier's noise, when one was evaluated.
        sigma: Option<f64>,
        notes: Vec<String>,
        warnings: Vec<String>,
    },
    Certified {
        sigma: f64,
        n0: u64,
        n: u64,
        alpha: f64,
        images: u64,
        /// (radius, certified accuracy with its interval over the images).
        accuracy: Vec<(f64, Rate)>,
        abstain: f64,
    },
    Detection {
        target_fpr: f64,
        /// (detector, false-positive rate) on clean examples.
        false_positives: Vec<(String, Rate)>,
        /// (attack, detector, detection rate among the examples that fool the model).
        detections: Vec<(String, String, Rate)>,
        /// (detector attacked, gradient, rate of examples that fool the model unflagged).
        adaptive: Vec<(String, String, Rate)>,
    },
}

fn bad(file: &Path, reason: impl Into<String>) -> CardError {
    CardError::Report {
        path: file.to_path_buf(),
        reason: reason.into(),
    }
}

fn num(v: &Value, key: &str, file: &Path) -> Result<f64, CardError> {
    v.get(key)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
        .ok_or_else(|| bad(file, format!("`{key}` is missing or not a finite number")))
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => String::new(),
    }
}

fn text_at(v: &Value, i: usize) -> String {
    v.get(i)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A rate from a fraction of `of` examples, refusing what no run can report.
fn rate(fraction: f64, of: usize, file: &Path, what: &str) -> Result<Rate, CardError> {
    if !(0.0..=1.0).contains(&fraction) || of == 0 {
        return Err(bad(
            file,
            format!("{what} {fraction} of {of} examples is not a rate a run reports"),
        ));
    }
    Ok(Rate::new((fraction * of as f64).round() as usize, of))
}

/// Reads the report at `file`, refusing one about another model than `sha256`.
pub fn read(file: &Path, sha256: &str) -> Result<Run, CardError> {
    let v: Value = serde_json::from_str(&files::read_text(file, REPORT_LIMIT)?)
        .map_err(|e| bad(file, format!("not JSON: {e}")))?;
    let digest = v
        .get("model")
        .and_then(|m| m.get("sha256"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                file,
                "no model.sha256: not a Rampart report (write one with --json)",
            )
        })?;
    if digest != sha256 {
        return Err(bad(
            file,
            format!(
                "is about another model (SHA-256 {}…), not this one ({}…)",
                digest.chars().take(12).collect::<String>(),
                sha256.chars().take(12).collect::<String>()
            ),
        ));
    }
    let data = v.get("data").map(|d| text(d, "name")).unwrap_or_default();
    let examples = v.get("examples").and_then(Value::as_u64).unwrap_or(0) as usize;
    let figures = if v.get("per_class_accuracy").is_some() {
        let names = strings(&v, "class_names");
        let per_class = v
            .get("per_class_accuracy")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, x)| {
                        (
                            names.get(i).cloned().unwrap_or_else(|| i.to_string()),
                            x.as_f64().unwrap_or(f64::NAN),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Figures::Clean {
            accuracy: rate(num(&v, "accuracy", file)?, examples, file, "accuracy")?,
            per_class,
        }
    } else if v.get("robust_accuracy").is_some() && v.get("version").is_some() {
        Figures::Robust {
            norm: text(&v, "norm"),
            epsilon: num(&v, "epsilon", file)?,
            version: text(&v, "version"),
            attacks: v
                .get("after_each")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|x| text(x, "attack")).collect())
                .unwrap_or_default(),
            clean: rate(
                num(&v, "clean_accuracy", file)?,
                examples,
                file,
                "clean accuracy",
            )?,
            robust: rate(
                num(&v, "robust_accuracy", file)?,
                examples,
                file,
                "robust accuracy",
            )?,
            input: text(&v, "input"),
            sigma: v.get("sigma").and_then(Value::as_f64),
            notes: strings(&v, "notes"),
            warnings: strings(&v, "warnings"),
        }
    } else if let Some(s) = v
        .get("summary")
        .filter(|s| s.get("certified_accuracy").is_some())
    {
        let int = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
        let images = int("images") as usize;
        let mut accuracy = Vec::new();
        for p in s
            .get("certified_accuracy")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(radius), Some(a)) = (
                p.get(0).and_then(Value::as_f64),
                p.get(1).and_then(Value::as_f64),
            ) else {
                return Err(bad(
                    file,
                    "certified_accuracy holds a pair that is not two numbers",
                ));
            };
            accuracy.push((radius, rate(a, images, file, "certified accuracy")?));
        }
        Figures::Certified {
            sigma: num(s, "sigma", file)?,
            n0: int("n0"),
            n: int("n"),
            alpha: num(s, "alpha", file)?,
            images: images as u64,
            accuracy,
            abstain: num(s, "abstain_rate", file)?,
        }
    } else if v.get("false_positives").is_some() && v.get("adaptive").is_some() {
        // A Rate as the report wrote it: count of `of`, recomputed (interval included).
        let rate_of = |x: Option<&Value>| -> Result<Rate, CardError> {
            let x = x.ok_or_else(|| bad(file, "a detection rate is missing"))?;
            let count = x.get("count").and_then(Value::as_u64);
            let of = x.get("of").and_then(Value::as_u64);
            match (count, of) {
                (Some(c), Some(o)) if c <= o => Ok(Rate::new(c as usize, o as usize)),
                _ => Err(bad(file, format!("{x} is not a count of a total"))),
            }
        };
        let mut detections = Vec::new();
        for a in v
            .get("attacks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for d in a
                .get("detectors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                detections.push((
                    text(a, "attack"),
                    text(d, "detector"),
                    rate_of(d.get("detection"))?,
                ));
            }
        }
        let mut false_positives = Vec::new();
        for p in v
            .get("false_positives")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            false_positives.push((text_at(p, 0), rate_of(p.get(1))?));
        }
        let mut adaptive = Vec::new();
        for x in v
            .get("adaptive")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            adaptive.push((
                text(x, "detector"),
                text(x, "gradient"),
                rate_of(x.get("evaded"))?,
            ));
        }
        Figures::Detection {
            target_fpr: num(&v, "target_fpr", file)?,
            false_positives,
            detections,
            adaptive,
        }
    } else {
        return Err(bad(
            file,
            "not a report a card reads: give the --json output of `rampart eval`, `evaluate`, `certify` or `detect evaluate`",
        ));
    };
    Ok(Run {
        file: file.to_path_buf(),
        command: v.get("command").and_then(Value::as_str).map(String::from),
        data,
        figures,
    })
}
