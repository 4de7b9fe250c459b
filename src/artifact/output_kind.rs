//! What kind of file an output path may already hold: an existing file is replaced only when
//! it looks like an output of the same kind (see [`super::files::check_kind`]).

/// The kind of file an output is. An existing file is replaced only if it looks like an
/// earlier output of the same kind, so a mistyped `--out` cannot destroy a model, a data file
/// or anything else Rampart did not write for that flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A model or tensors file (safetensors).
    Safetensors,
    /// Certification rows (`idx\tlabel\t...`).
    Tsv,
    Png,
    /// JSON lines (records, metrics).
    Jsonl,
    /// An ensemble manifest (TOML or JSON).
    Manifest,
    /// Per-example evaluation rows (`id\tlabel\tclean_prediction\t...`).
    EvaluationTsv,
    /// An evaluation's state file (a JSON object with `format`, `fingerprint` and `rows`).
    EvaluationState,
    /// A fitted detector (safetensors with `rampart.detector` metadata).
    Detector,
    /// A detector's per-example scores (`id\tlabel\tprediction\t...`).
    DetectionTsv,
    /// A model card (Markdown with front matter, or its JSON).
    Card,
    /// A model signature (a Sigstore bundle).
    Signature,
    /// `rampart serve`'s incident log (hash-chained JSON lines), appended to, never replaced.
    IncidentLog,
    /// A self-contained HTML page (a report).
    Html,
    /// An SVG picture (a chart).
    Svg,
    /// `rampart explain`'s attributions (a JSON object with `sides`).
    Explanation,
    /// A certification shard's identity beside its TSV (`OUT.shard.json`).
    ShardMeta,
    /// An encrypted file (age format).
    Sealed,
}

impl OutputKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            OutputKind::Safetensors => "safetensors file",
            OutputKind::Tsv => "certification TSV",
            OutputKind::Png => "PNG image",
            OutputKind::Jsonl => "JSON-lines file",
            OutputKind::Manifest => "ensemble manifest",
            OutputKind::EvaluationTsv => "per-example evaluation TSV",
            OutputKind::EvaluationState => "evaluation state file",
            OutputKind::Detector => "fitted detector",
            OutputKind::DetectionTsv => "per-example detection TSV",
            OutputKind::Card => "model card",
            OutputKind::Signature => "model signature",
            OutputKind::IncidentLog => "incident log",
            OutputKind::Html => "HTML page",
            OutputKind::Svg => "SVG picture",
            OutputKind::Explanation => "explanation JSON",
            OutputKind::ShardMeta => "shard description",
            OutputKind::Sealed => "encrypted (age) file",
        }
    }

    /// Whether `head`, the first bytes of an existing file, look like this kind.
    pub(crate) fn matches(self, head: &[u8]) -> bool {
        let text = std::str::from_utf8(head).unwrap_or("");
        match self {
            OutputKind::Safetensors => {
                head.len() >= 9
                    && u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8])) > 0
                    && head[8] == b'{'
            }
            OutputKind::Tsv => head.starts_with(b"idx\tlabel\tpredict"),
            OutputKind::Png => head.starts_with(b"\x89PNG\r\n\x1a\n"),
            OutputKind::Jsonl => {
                // JSON lines: text, and a first line that is a whole JSON object.
                let first = text.split('\n').next().unwrap_or("");
                head.is_empty()
                    || (!head.contains(&0)
                        && first.trim_start().starts_with('{')
                        && (!text.contains('\n')
                            || serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
                                first,
                            )
                            .is_ok()))
            }
            OutputKind::Manifest => {
                text.starts_with("# Rampart ensemble manifest")
                    || text.trim_start().starts_with('{') && text.contains("\"strategy\"")
            }
            OutputKind::EvaluationTsv => head.starts_with(b"id\tlabel\tclean_prediction\t"),
            OutputKind::EvaluationState => {
                text.starts_with('{')
                    && text.contains("\"fingerprint\":")
                    && text.contains("\"format\":")
            }
            OutputKind::Detector => {
                OutputKind::Safetensors.matches(head)
                    && String::from_utf8_lossy(head).contains("rampart.detector")
            }
            OutputKind::DetectionTsv => head.starts_with(b"id\tlabel\tprediction\t"),
            OutputKind::Signature => {
                text.starts_with("{\"mediaType\":\"application/vnd.dev.sigstore.bundle")
            }
            OutputKind::IncidentLog => head.is_empty() || text.starts_with("{\"seq\":"),
            OutputKind::Html => text.starts_with("<!doctype html>"),
            OutputKind::Svg => text.starts_with("<svg xmlns="),
            OutputKind::Explanation => text.starts_with("{\n  \"model\": {"),
            OutputKind::ShardMeta => {
                text.starts_with("{\n  \"format\": \"rampart-certify-shard")
                    || text.starts_with("{\n  \"format\": \"rampart-shard")
            }
            OutputKind::Sealed => head.starts_with(super::sealed::MAGIC),
            OutputKind::Card => {
                text.starts_with("---\n{") && text.contains("model-index")
                    || text.starts_with("{\n  \"name\":") && text.contains("\"model\": {")
                    || text.starts_with("# Model card")
                    || text.starts_with("# Security model card")
            }
        }
    }
}
