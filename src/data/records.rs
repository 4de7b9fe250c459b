//! Multimodal security records: JSONL in and out, tokenising and tensors (the seeded
//! SYNTHETIC generator is [`super::synth_security`]).
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
use serde::{Deserialize, Serialize};

use crate::artifact::files::{self, FileError};

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
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}:{line}: {reason}")]
    Bad {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: no records")]
    Empty { path: PathBuf },
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
    words(text)
        .iter()
        .map(|w| {
            let mut h = fnv::FnvHasher::default();
            h.write(w.as_bytes());
            1 + (h.finish() % (VOCAB as u64 - 1)) as i64
        })
        .collect()
}

/// The lower-cased alphanumeric words the model reads (the first [`TEXT_LEN`]), in order.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(TEXT_LEN)
        .map(str::to_lowercase)
        .collect()
}

/// Reads and validates a JSONL file (at most [`files::RECORDS`] bytes): every problem names
/// its line.
pub fn read_jsonl(path: &Path, schema: &Schema) -> Result<Vec<Record>, RecordError> {
    let text = files::read_text(path, files::RECORDS)?;
    parse_jsonl(&text, path, schema)
}

/// Parses and validates JSONL `text` read from `path`.
pub fn parse_jsonl(text: &str, path: &Path, schema: &Schema) -> Result<Vec<Record>, RecordError> {
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

/// Checks one record against `schema`: its label, that it has a modality, its base64, and
/// each network feature's count, finiteness and box.
pub fn check(r: &Record, schema: &Schema) -> Result<(), String> {
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

/// Checks records (see [`check`]) and lays them out as tensors on `device`; the first bad
/// record is named by its index.
pub fn to_set(
    records: &[Record],
    schema: &Schema,
    name: &str,
    device: &Device,
) -> Result<SecuritySet, RecordError> {
    for (i, r) in records.iter().enumerate() {
        check(r, schema).map_err(|reason| RecordError::Bad {
            path: PathBuf::from(name),
            line: i + 1,
            reason,
        })?;
    }
    Ok(lay_out(records, schema, name, device))
}

/// Lays checked records out as tensors on `device`.
fn lay_out(records: &[Record], schema: &Schema, name: &str, device: &Device) -> SecuritySet {
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
            let raw = BASE64.decode(b).unwrap_or_default(); // checked before lay_out
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
    Ok(lay_out(
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
    /// The set on `device`.
    pub fn to_device(self, device: &Device) -> SecuritySet {
        SecuritySet {
            text: self.text.to_device(device),
            bytes: self.bytes.to_device(device),
            histogram: self.histogram.to_device(device),
            network: self.network.to_device(device),
            present: self.present.to_device(device),
            labels: self.labels.to_device(device),
            name: self.name,
        }
    }

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

/// Writes records as JSONL, atomically.
pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<(), FileError> {
    crate::artifact::write_jsonl(path, records)
}
