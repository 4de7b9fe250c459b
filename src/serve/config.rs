//! `configs/serve.toml`: what the service serves, who may call it, how it watches and how it
//! responds. Every scalar key can also be set by a flag (see `rampart serve --help`); client
//! tables and webhooks are lists and live in the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ServeError;
use crate::artifact::files;
use crate::device::DeviceChoice;

/// The whole service configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on, e.g. "127.0.0.1:8080".
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Compute device: auto, flex or wgpu.
    #[serde(default)]
    pub device: DeviceChoice,
    /// Public key every model must be signed with (refused at start and at reload otherwise).
    #[serde(default)]
    pub verify_key: Option<PathBuf>,
    /// Private key (age identity file) for encrypted models and detectors, decrypted in
    /// memory only; `--decrypt-key` or $RAMPART_DECRYPT_KEY_FILE take precedence.
    #[serde(default)]
    pub decrypt_key: Option<PathBuf>,
    /// The append-only, hash-chained incident log (JSON lines).
    pub incident_log: PathBuf,
    pub model: Models,
    #[serde(default)]
    pub batch: Batching,
    #[serde(default)]
    pub smooth: Smoothing,
    #[serde(default)]
    pub monitor: Monitor,
    #[serde(default)]
    pub policy: Policy,
    /// API clients; at least one.
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("a valid address")
}

/// The primary model, its detectors and the backups it can fail over to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    /// Model file or ensemble manifest of any kind.
    pub primary: PathBuf,
    /// Fitted adversarial-input detectors for the primary (`rampart detect fit`).
    #[serde(default)]
    pub detectors: Option<PathBuf>,
    /// Drift reference for the primary (`rampart detect fit --kind drift`).
    #[serde(default)]
    pub drift_reference: Option<PathBuf>,
    /// Extraction ledger settings (`rampart detect fit --kind extraction`); none: PRADA with
    /// its defaults and no rate check.
    #[serde(default)]
    pub ledger: Option<PathBuf>,
    /// Signed backups of the same task, in order of preference.
    #[serde(default)]
    pub backups: Vec<PathBuf>,
}

/// How concurrent requests are batched on the device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// Most inputs in one forward pass.
    pub max_batch: usize,
    /// Longest wait for more inputs once one has arrived, in milliseconds.
    pub max_wait_ms: u64,
    /// Most requests waiting; more are answered 503.
    pub queue: usize,
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take, queue included, in milliseconds (then 408).
    pub timeout_ms: u64,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait_ms: 5,
            queue: 256,
            max_inputs: 64,
            max_body_bytes: 8 << 20,
            timeout_ms: 30_000,
        }
    }
}

/// Randomized smoothing for `?smooth=1` (Cohen et al.'s CERTIFY).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smoothing {
    /// Noise standard deviation, in input units.
    pub sigma: f64,
    pub n0: usize,
    pub n: usize,
    pub alpha: f64,
    /// Most inputs of one smoothed request (each costs n0 + n forward passes).
    pub max_inputs: usize,
}

impl Default for Smoothing {
    fn default() -> Self {
        Self {
            sigma: 0.25,
            n0: 100,
            n: 1000,
            alpha: 0.001,
            max_inputs: 8,
        }
    }
}

/// What the service watches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitor {
    /// Inputs per drift test (tumbling windows compared with the drift reference).
    pub drift_window: usize,
    /// Points in the sliding window of the online MMD detector (0: none). It is calibrated at
    /// start (and at reload) on the drift reference's features by 4·`online_ert` bootstrap
    /// streams: about 5 s for 20 and 1000 on 2 CPU cores.
    pub online_window: usize,
    /// Expected run time between false alarms of the online detector, in inputs.
    pub online_ert: f64,
    /// Level of each window's drift test (Bonferroni over its four families).
    pub drift_alpha: f64,
    /// Labelled outcomes per health window.
    pub feedback_window: usize,
    /// Accuracy the active model must keep on the labelled window.
    pub health_threshold: f64,
    /// Confidence of the accuracy bounds (Clopper-Pearson, two-sided).
    pub health_confidence: f64,
    /// Windows in a row whose accuracy upper bound is below the threshold before failing over.
    pub health_windows: usize,
    /// Fail back once the primary's lower bound is at least threshold + margin for
    /// `health_windows` windows in a row.
    pub failback_margin: f64,
    /// Seconds between latency and error-rate checks.
    pub check_seconds: u64,
    /// 99th-percentile latency above which an alert is raised, in milliseconds.
    pub latency_p99_ms: f64,
    /// Share of failed requests (5xx) above which an alert is raised.
    pub error_rate: f64,
    /// Seconds per interval of the extraction ledger's query-rate check.
    pub interval_seconds: f64,
    /// Inputs remembered for feedback (kept to evaluate the backups), oldest dropped first.
    pub remember: usize,
}

impl Default for Monitor {
    fn default() -> Self {
        Self {
            drift_window: 200,
            online_window: 20,
            online_ert: 1000.0,
            drift_alpha: 0.01,
            feedback_window: 100,
            health_threshold: 0.7,
            health_confidence: 0.95,
            health_windows: 2,
            failback_margin: 0.05,
            check_seconds: 10,
            latency_p99_ms: 1000.0,
            error_rate: 0.05,
            interval_seconds: 1.0,
            remember: 16_384,
        }
    }
}

/// How the service responds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Withhold the answer (`blocked: true`) for inputs whose fused detector p-value is at most
    /// `block_p` or that fail validation (severity high).
    pub block_adversarial: bool,
    pub block_p: f64,
    /// The output policy a client suspected of extraction is degraded to.
    pub degrade_to: OutputPolicy,
    /// Requests per second a client is limited to at its second extraction alarm.
    pub limited_rate: f64,
    /// Extraction alarms before a client is blocked: PRADA, rate and volume each count once,
    /// and so does every `escalate_queries` further queries after the last alarm.
    pub block_after: usize,
    /// Queries after an extraction alarm that count as one more (a client that keeps going).
    pub escalate_queries: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            block_adversarial: true,
            block_p: 0.005,
            degrade_to: OutputPolicy::Label,
            limited_rate: 1.0,
            block_after: 3,
            escalate_queries: 500,
        }
    }
}

/// What a client sees of the model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputPolicy {
    /// Every class's probability.
    Full,
    /// The three most probable classes.
    Top3,
    /// Every probability rounded to 0.1.
    Rounded,
    /// The class alone.
    Label,
}

/// One API client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    /// SHA-256 (hex) of the client's API key, sent as `Authorization: Bearer KEY`
    /// (`printf %s KEY | sha256sum`); the key itself is never stored.
    pub key_sha256: String,
    #[serde(default = "full")]
    pub output: OutputPolicy,
    /// Requests per second (token bucket), and the bucket's size.
    #[serde(default = "default_rate")]
    pub rate: f64,
    #[serde(default = "default_burst")]
    pub burst: f64,
    /// May call the admin endpoints (reload).
    #[serde(default)]
    pub admin: bool,
}

fn full() -> OutputPolicy {
    OutputPolicy::Full
}
fn default_rate() -> f64 {
    50.0
}
fn default_burst() -> f64 {
    100.0
}

/// Where alerts are sent (Alertmanager's webhook JSON, version 4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    /// Lowest severity sent.
    #[serde(default = "warning")]
    pub min_severity: super::alerts::Severity,
    /// Attempts per alert (exponential backoff between them).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Per attempt, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn warning() -> super::alerts::Severity {
    super::alerts::Severity::Warning
}
fn default_attempts() -> u32 {
    5
}
fn default_timeout() -> u64 {
    2000
}

impl ServeConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ServeError> {
        let text = files::read_text(path, files::CONFIG)?;
        let de = toml::Deserializer::new(&text);
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            ServeError::Config(format!(
                "{}: key `{}`: {}",
                path.display(),
                e.path(),
                e.inner().message()
            ))
        })?;
        Ok(config)
    }

    /// Checks every value; names the key that is wrong.
    pub fn check(&self) -> Result<(), ServeError> {
        let bad = |key: &str, why: String| Err(ServeError::Config(format!("{key}: {why}")));
        let b = &self.batch;
        if !(1..=4096).contains(&b.max_batch) {
            return bad(
                "batch.max_batch",
                format!("must be 1 to 4096, got {}", b.max_batch),
            );
        }
        if b.max_wait_ms > 10_000 {
            return bad(
                "batch.max_wait_ms",
                format!("at most 10000, got {}", b.max_wait_ms),
            );
        }
        if !(1..=65_536).contains(&b.queue)
            || !(1..=b.max_batch).contains(&b.max_inputs)
            || !(1024..=(256 << 20)).contains(&b.max_body_bytes)
            || !(100..=600_000).contains(&b.timeout_ms)
        {
            return bad(
                "batch",
                "queue must be 1 to 65536, max_inputs 1 to max_batch (a request is never split), max_body_bytes 1 KiB to 256 MiB, timeout_ms 100 to 600000".into(),
            );
        }
        let s = &self.smooth;
        let smooth_ok = s.sigma.is_finite()
            && s.sigma > 0.0
            && (1..=1_000_000).contains(&s.n0)
            && (1..=1_000_000).contains(&s.n)
            && (1..=1024).contains(&s.max_inputs);
        if !smooth_ok {
            return bad(
                "smooth",
                "sigma must be positive, n0 and n 1 to 1000000, max_inputs 1 to 1024".into(),
            );
        }
        if !(s.alpha > 0.0 && s.alpha < 1.0) {
            return bad(
                "smooth.alpha",
                format!("must be in (0, 1), got {}", s.alpha),
            );
        }
        let m = &self.monitor;
        let max_window = crate::detect::drift::reference::MAX_REFERENCE;
        if !(10..=max_window).contains(&m.drift_window)
            || !(10..=100_000).contains(&m.feedback_window)
        {
            return bad(
                "monitor",
                format!("drift_window must be 10 to {max_window}, feedback_window 10 to 100000"),
            );
        }
        for (key, v) in [
            ("monitor.drift_alpha", m.drift_alpha),
            ("monitor.health_confidence", m.health_confidence),
            ("monitor.error_rate", m.error_rate),
            ("policy.block_p", self.policy.block_p),
        ] {
            if !(v > 0.0 && v < 1.0) {
                return bad(key, format!("must be in (0, 1), got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&m.health_threshold) || !(0.0..1.0).contains(&m.failback_margin) {
            return bad(
                "monitor.health_threshold",
                "threshold and failback_margin must be in [0, 1]".into(),
            );
        }
        if m.online_window != 0
            && !(2..=crate::detect::drift::online::MAX_WINDOW).contains(&m.online_window)
        {
            return bad(
                "monitor.online_window",
                format!(
                    "0 (off) or 2 to {}, got {}",
                    crate::detect::drift::online::MAX_WINDOW,
                    m.online_window
                ),
            );
        }
        if !(m.online_ert.is_finite() && m.online_ert > 1.0 && m.online_ert <= 20_000.0) {
            return bad(
                "monitor.online_ert",
                format!("more than 1 and at most 20000 inputs, got {}", m.online_ert),
            );
        }
        // Calibration simulates 4·ERT streams of 3·W points (about 24 s at 1.2 million on 2
        // cores); each check reads back a stream of the window's tail and a batch.
        if m.online_window > 0 {
            let points = 12.0 * m.online_ert * m.online_window as f64;
            if points > 1.2e6 {
                return bad(
                    "monitor.online_ert",
                    format!(
                        "online_ert {} with online_window {} needs {points:.0} bootstrap points; at most 1200000 (lower either)",
                        m.online_ert, m.online_window
                    ),
                );
            }
            if b.max_batch + m.online_window - 1 > crate::detect::drift::online::MAX_STREAM {
                return bad(
                    "monitor.online_window",
                    format!(
                        "batch.max_batch + online_window − 1 must be at most {}",
                        crate::detect::drift::online::MAX_STREAM
                    ),
                );
            }
        }
        if m.health_windows == 0 || m.check_seconds == 0 || !(1..=1_000_000).contains(&m.remember) {
            return bad(
                "monitor",
                "health_windows, check_seconds and remember must be at least 1".into(),
            );
        }
        if !(m.interval_seconds.is_finite() && m.interval_seconds > 0.0) {
            return bad("monitor.interval_seconds", "must be positive".into());
        }
        if self.policy.block_after == 0 || self.policy.escalate_queries == 0 {
            return bad(
                "policy",
                "block_after and escalate_queries must be at least 1".into(),
            );
        }
        if !(self.policy.limited_rate.is_finite() && self.policy.limited_rate > 0.0) {
            return bad("policy.limited_rate", "must be positive".into());
        }
        if self.clients.is_empty() {
            return bad(
                "clients",
                "at least one [[clients]] table is needed (name, key_sha256)".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for c in &self.clients {
            if c.name.is_empty() || !names.insert(&c.name) {
                return bad("clients.name", format!("`{}` is empty or repeated", c.name));
            }
            let hex_ok =
                c.key_sha256.len() == 64 && c.key_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok || !keys.insert(c.key_sha256.to_ascii_lowercase()) {
                return bad(
                    "clients.key_sha256",
                    format!(
                        "client `{}`: 64 hex digits of a key used by no other client (printf %s KEY | sha256sum)",
                        c.name
                    ),
                );
            }
            if !(c.rate.is_finite() && c.rate > 0.0 && c.burst >= 1.0) {
                return bad(
                    "clients.rate",
                    format!(
                        "client `{}`: rate must be positive and burst at least 1",
                        c.name
                    ),
                );
            }
        }
        for w in &self.webhooks {
            if !w.url.starts_with("http://") {
                return bad(
                    "webhooks.url",
                    format!(
                        "`{}`: this build sends webhooks over plain http only (no TLS); use an http URL on a trusted network or a local relay",
                        w.url
                    ),
                );
            }
            if w.attempts == 0 || w.timeout_ms == 0 {
                return bad(
                    "webhooks",
                    "attempts and timeout_ms must be at least 1".into(),
                );
            }
        }
        Ok(())
    }
}
