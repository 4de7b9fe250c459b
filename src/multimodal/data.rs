//! Multimodal security records: JSONL in and out, tokenising, tensors, and a seeded
//! SYNTHETIC generator.
//!
//! One record per line: `{"text": "...", "bytes_b64": "...", "network": [..], "label": k}`.
//! Every modality is optional (null or absent), but at least one must be there. `network` is a
//! vector of flow features inside the configured box (default [0, 1] per feature); the loader
//! rescales it to [0, 1], where attacks and smoothing noise work (epsilon and sigma are
//! fractions of each feature's range). Records the generator wrote carry `"synthetic": true`,
//! and a set made only of them is named SYNTHETIC wherever it is shown.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// Tokens kept per text (longer texts are cut).
pub const TEXT_LEN: usize = 64;
/// Bytes kept per binary (longer payloads are cut).
pub const BYTES_LEN: usize = 256;
/// Hashed word buckets; id 0 is padding.
pub const VOCAB: usize = 4096;

/// The synthetic task's classes.
pub const SECURITY_CLASSES: [&str; 4] = ["benign", "phishing", "malware", "exfiltration"];
/// The synthetic task's network flow features, each scaled to [0, 1].
pub const FLOW_FEATURES: [&str; 8] = [
    "duration",
    "bytes_out",
    "bytes_in",
    "packets",
    "mean_interarrival",
    "interarrival_regularity",
    "distinct_ports",
    "dns_queries",
];

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Bad {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: no records")]
    Empty { path: PathBuf },
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// One line of the JSONL format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Vec<f64>>,
    pub label: usize,
    /// Written by `rampart data synth-security`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synthetic: bool,
}

/// What the loader checks records against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub num_classes: usize,
    /// `(low, high)` per network feature; its length is the feature count.
    pub network_box: Vec<(f64, f64)>,
}

/// Records validated and laid out as tensors on one device.
#[derive(Debug, Clone)]
pub struct SecuritySet {
    /// Hashed word ids `[N, TEXT_LEN]`, 0 = padding.
    pub text: Tensor<2, Int>,
    /// Byte values + 1 `[N, BYTES_LEN]`, 0 = padding.
    pub bytes: Tensor<2, Int>,
    /// Byte histogram, fractions summing to 1 (0 when absent), `[N, 256]`.
    pub histogram: Tensor<2>,
    /// Network features rescaled to [0, 1] by the box, `[N, F]` (0 when absent).
    pub network: Tensor<2>,
    /// Which modalities each record has: columns text, bytes, network, 1 or 0, `[N, 3]`.
    pub present: Tensor<2>,
    pub labels: Tensor<1, Int>,
    /// Where the records came from; SYNTHETIC sets say so.
    pub name: String,
}

/// Modality columns of [`SecuritySet::present`].
pub const TEXT: usize = 0;
pub const BYTES: usize = 1;
pub const NETWORK: usize = 2;

/// Lower-cased alphanumeric words, each hashed (FNV-1a) into `1..VOCAB`.
pub fn tokenize(text: &str) -> Vec<i64> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(TEXT_LEN)
        .map(|w| {
            let mut h = fnv::FnvHasher::default();
            h.write(w.to_lowercase().as_bytes());
            1 + (h.finish() % (VOCAB as u64 - 1)) as i64
        })
        .collect()
}

/// Reads and validates a JSONL file: every problem names its line.
pub fn read_jsonl(path: &Path, schema: &Schema) -> Result<Vec<Record>, RecordError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| RecordError::Bad {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let r: Record = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        check(&r, schema).map_err(bad)?;
        records.push(r);
    }
    if records.is_empty() {
        return Err(RecordError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(records)
}

fn check(r: &Record, schema: &Schema) -> Result<(), String> {
    if r.label >= schema.num_classes {
        return Err(format!(
            "label {} is out of range: there are {} classes",
            r.label, schema.num_classes
        ));
    }
    if r.text.is_none() && r.bytes_b64.is_none() && r.network.is_none() {
        return Err("no modality: text, bytes_b64 and network are all missing".into());
    }
    if let Some(b) = &r.bytes_b64 {
        BASE64
            .decode(b)
            .map_err(|e| format!("bytes_b64 is not valid base64: {e}"))?;
    }
    if let Some(net) = &r.network {
        let f = schema.network_box.len();
        if net.len() != f {
            return Err(format!("network has {} features, expected {f}", net.len()));
        }
        for (j, (v, (lo, hi))) in net.iter().zip(&schema.network_box).enumerate() {
            if !v.is_finite() {
                return Err(format!("network[{j}] is not a finite number"));
            }
            if v < lo || v > hi {
                return Err(format!(
                    "network[{j}] = {v} is outside its box [{lo}, {hi}]"
                ));
            }
        }
    }
    Ok(())
}

/// Lays validated records out as tensors on `device`.
pub fn to_set(records: &[Record], schema: &Schema, name: &str, device: &Device) -> SecuritySet {
    let n = records.len();
    let f = schema.network_box.len();
    let mut text = vec![0i64; n * TEXT_LEN];
    let mut bytes = vec![0i64; n * BYTES_LEN];
    let mut histogram = vec![0f32; n * 256];
    let mut network = vec![0f32; n * f];
    let mut present = vec![0f32; n * 3];
    let mut labels = Vec::with_capacity(n);
    for (i, r) in records.iter().enumerate() {
        if let Some(t) = &r.text {
            for (j, id) in tokenize(t).into_iter().enumerate() {
                text[i * TEXT_LEN + j] = id;
            }
            present[i * 3 + TEXT] = 1.0;
        }
        if let Some(b) = &r.bytes_b64 {
            let raw = BASE64.decode(b).expect("checked when read");
            for (j, &v) in raw.iter().take(BYTES_LEN).enumerate() {
                bytes[i * BYTES_LEN + j] = v as i64 + 1;
            }
            for &v in &raw {
                histogram[i * 256 + v as usize] += 1.0 / raw.len().max(1) as f32;
            }
            present[i * 3 + BYTES] = 1.0;
        }
        if let Some(net) = &r.network {
            for (j, (v, (lo, hi))) in net.iter().zip(&schema.network_box).enumerate() {
                network[i * f + j] = ((v - lo) / (hi - lo).max(1e-12)) as f32;
            }
            present[i * 3 + NETWORK] = 1.0;
        }
        labels.push(r.label as i64);
    }
    let synthetic = records.iter().all(|r| r.synthetic);
    SecuritySet {
        text: Tensor::from_data(TensorData::new(text, [n, TEXT_LEN]), device),
        bytes: Tensor::from_data(TensorData::new(bytes, [n, BYTES_LEN]), device),
        histogram: Tensor::from_data(TensorData::new(histogram, [n, 256]), device),
        network: Tensor::from_data(TensorData::new(network, [n, f]), device),
        present: Tensor::from_data(TensorData::new(present, [n, 3]), device),
        labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        name: if synthetic {
            format!("SYNTHETIC security records ({name})")
        } else {
            name.to_string()
        },
    }
}

/// Reads, validates and lays out a JSONL file.
pub fn load(path: &Path, schema: &Schema, device: &Device) -> Result<SecuritySet, RecordError> {
    let records = read_jsonl(path, schema)?;
    Ok(to_set(
        &records,
        schema,
        &path.display().to_string(),
        device,
    ))
}

impl SecuritySet {
    pub fn len(&self) -> usize {
        self.labels.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records at `rows` (an Int tensor of indices), gathered on the device.
    pub fn select(&self, rows: Tensor<1, Int>) -> SecuritySet {
        SecuritySet {
            text: self.text.clone().select(0, rows.clone()),
            bytes: self.bytes.clone().select(0, rows.clone()),
            histogram: self.histogram.clone().select(0, rows.clone()),
            network: self.network.clone().select(0, rows.clone()),
            present: self.present.clone().select(0, rows.clone()),
            labels: self.labels.clone().select(0, rows),
            name: self.name.clone(),
        }
    }

    /// Records `start..end` (clamped), as views of the same tensors (no gather).
    pub fn range(&self, start: usize, end: usize) -> SecuritySet {
        let end = end.min(self.len());
        let start = start.min(end);
        let len = end - start;
        SecuritySet {
            text: self.text.clone().narrow(0, start, len),
            bytes: self.bytes.clone().narrow(0, start, len),
            histogram: self.histogram.clone().narrow(0, start, len),
            network: self.network.clone().narrow(0, start, len),
            present: self.present.clone().narrow(0, start, len),
            labels: self.labels.clone().narrow(0, start, len),
            name: self.name.clone(),
        }
    }

    /// The same records with only the modalities in `keep` (text, bytes, network flags).
    pub fn only(&self, keep: [bool; 3]) -> SecuritySet {
        let mask: Vec<f32> = keep.iter().map(|&k| f32::from(u8::from(k))).collect();
        let mask = Tensor::<1>::from_data(TensorData::new(mask, [3]), &self.labels.device());
        SecuritySet {
            present: self.present.clone() * mask.unsqueeze_dim::<2>(0),
            ..self.clone()
        }
    }

    /// The labels, read back to the host once.
    pub fn host_labels(&self) -> Vec<usize> {
        crate::data::host_labels(&self.labels)
    }
}

/// The box of the synthetic task: every feature already in [0, 1].
pub fn unit_box(features: usize) -> Vec<(f64, f64)> {
    vec![(0.0, 1.0); features]
}

const LURE: [&str; 12] = [
    "urgent",
    "verify",
    "account",
    "password",
    "suspended",
    "click",
    "login",
    "confirm",
    "wire",
    "invoice",
    "immediately",
    "credentials",
];
const BUSINESS: [&str; 12] = [
    "meeting",
    "agenda",
    "report",
    "lunch",
    "schedule",
    "team",
    "project",
    "quarterly",
    "notes",
    "draft",
    "review",
    "budget",
];
const NEUTRAL: [&str; 16] = [
    "the", "please", "attached", "see", "for", "your", "today", "thanks", "regards", "with",
    "update", "about", "this", "from", "we", "our",
];

/// A seeded SYNTHETIC security task (benign / phishing / malware / exfiltration) in which each
/// modality alone is only partly informative:
/// - text tells lure from business wording, i.e. whether the class is phishing or
///   exfiltration, and is misleading for `flip` of the records;
/// - bytes tell an executable payload (MZ header, high entropy) from a document, i.e. whether
///   the class is malware or exfiltration, misleading for `flip` of the records;
/// - network flow features shift weakly per class (Gaussian noise of sd 0.2 around
///   class means that differ by 0.15-0.25).
///
/// Text alone can at best tell two pairs of classes apart, and so can bytes; the class needs
/// both, and the network features help break the remaining errors. Each modality is missing
/// with probability `missing` (never all three).
pub fn synth_security(n: usize, seed: u64, flip: f64, missing: f64) -> Vec<Record> {
    let mut rng = StdRng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.2).expect("normal");
    (0..n)
        .map(|_| {
            let label = rng.random_range(0..4usize);
            let lure = matches!(label, 1 | 3) ^ (rng.random::<f64>() < flip);
            let payload = matches!(label, 2 | 3) ^ (rng.random::<f64>() < flip);
            let words: Vec<&str> = (0..12)
                .map(|j| {
                    if j % 4 == 0 {
                        let pool = if lure { &LURE } else { &BUSINESS };
                        pool[rng.random_range(0..pool.len())]
                    } else {
                        NEUTRAL[rng.random_range(0..NEUTRAL.len())]
                    }
                })
                .collect();
            let len = rng.random_range(64..=BYTES_LEN);
            let bytes: Vec<u8> = if payload {
                let mut b = vec![b'M', b'Z'];
                b.extend((2..len).map(|_| rng.random::<u8>()));
                b
            } else {
                let alphabet = b"abcdefghijklmnopqrstuvwxyz ,.\n";
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            };
            let mut mean = [0.35f64; 8];
            match label {
                1 => {
                    mean[7] += 0.25; // dns_queries
                    mean[0] -= 0.1;
                }
                2 => {
                    mean[5] += 0.25; // interarrival_regularity (beaconing)
                    mean[6] += 0.15;
                }
                3 => {
                    mean[1] += 0.25; // bytes_out
                    mean[0] += 0.15;
                }
                _ => {}
            }
            let network: Vec<f64> = mean
                .iter()
                .map(|m| (m + noise.sample(&mut rng)).clamp(0.0, 1.0))
                .collect();
            let mut keep = [true; 3];
            for k in keep.iter_mut() {
                *k = rng.random::<f64>() >= missing;
            }
            if !keep.iter().any(|k| *k) {
                keep[rng.random_range(0..3)] = true;
            }
            Record {
                text: keep[TEXT].then(|| words.join(" ")),
                bytes_b64: keep[BYTES].then(|| BASE64.encode(&bytes)),
                network: keep[NETWORK].then_some(network),
                label,
                synthetic: true,
            }
        })
        .collect()
}

/// Writes records as JSONL, atomically.
pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<(), RecordError> {
    crate::store::write_jsonl(path, records).map_err(|e| RecordError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
