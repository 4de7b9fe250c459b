//! `GET /metrics`: the service's figures in Prometheus' text exposition format, through the
//! `prometheus-client` crate. Every metric is named `rampart_*`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A metric's labels: (name, value) pairs.
pub type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Builds a label set.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every metric, cheap to clone (the values are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Requests by endpoint, status code and client.
    pub requests: Family<Labels, Counter>,
    /// Request latency, seconds, by endpoint.
    pub latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// Inputs per forward pass.
    pub batch_size: Histogram,
    /// Requests waiting for the model.
    pub queue_depth: Gauge,
    /// Inputs predicted, by model.
    pub inputs: Family<Labels, Counter>,
    /// The fused detector p-value of each input.
    pub fused_p_value: Histogram,
    /// Detector alarms, by detector ("fused" for the fused p-value, "invalid" for inputs that
    /// failed validation).
    pub detector_alarms: Family<Labels, Counter>,
    /// Inputs or requests refused by the response policy, by reason.
    pub blocked: Family<Labels, Counter>,
    /// The last drift window's p-value, and drift tests run and alarmed.
    pub drift_p_value: FloatGauge,
    pub drift_windows: Counter,
    pub drift_alarms: Counter,
    /// Accuracy on the last labelled window, and its Clopper-Pearson bounds, by model.
    pub accuracy: Family<Labels, FloatGauge>,
    pub accuracy_upper: Family<Labels, FloatGauge>,
    /// 1 for the model answering requests, 0 for the others; by model and SHA-256.
    pub active_model: Family<Labels, Gauge>,
    pub failovers: Counter,
    pub failbacks: Counter,
    /// Labels received through /v1/feedback.
    pub feedback: Counter,
    /// Extraction alarms, by check (prada, rate, volume).
    pub extraction_alarms: Family<Labels, Counter>,
    /// Incidents written, by severity and type.
    pub incidents: Family<Labels, Counter>,
    /// Model reloads, by outcome.
    pub reloads: Family<Labels, Counter>,
    pub webhook_sent: Counter,
    pub webhook_failed: Counter,
    pub webhook_retries: Counter,
    pub webhook_dropped: Counter,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("rampart");
        macro_rules! reg {
            ($name:literal, $help:literal, $metric:expr) => {{
                let m = $metric;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let requests = reg!(
            "requests",
            "HTTP requests by endpoint, code and client",
            Family::default()
        );
        let latency = reg!(
            "request_duration_seconds",
            "Request latency by endpoint",
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram)
        );
        let batch_size = reg!(
            "batch_size",
            "Inputs per forward pass",
            Histogram::new(exponential_buckets(1.0, 2.0, 12))
        );
        let queue_depth = reg!(
            "queue_depth",
            "Requests waiting for the model",
            Gauge::default()
        );
        let inputs = reg!("inputs", "Inputs predicted, by model", Family::default());
        let fused_p_value = reg!(
            "detector_fused_p_value",
            "Fused detector p-value of each input",
            Histogram::new([0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
        );
        let detector_alarms = reg!(
            "detector_alarms",
            "Detector alarms by detector",
            Family::default()
        );
        let blocked = reg!(
            "blocked",
            "Inputs or requests refused by the response policy, by reason",
            Family::default()
        );
        let drift_p_value = reg!(
            "drift_p_value",
            "p-value of the last drift window (Bonferroni over four tests)",
            FloatGauge::default()
        );
        let drift_windows = reg!("drift_windows", "Drift windows tested", Counter::default());
        let drift_alarms = reg!(
            "drift_alarms",
            "Drift windows that alarmed",
            Counter::default()
        );
        let accuracy = reg!(
            "model_accuracy",
            "Accuracy on the last labelled window, by model",
            Family::default()
        );
        let accuracy_upper = reg!(
            "model_accuracy_upper_bound",
            "Clopper-Pearson upper bound of the accuracy on the last labelled window, by model",
            Family::default()
        );
        let active_model = reg!(
            "active_model",
            "1 for the model answering requests",
            Family::default()
        );
        let failovers = reg!("failovers", "Fail-overs to a backup", Counter::default());
        let failbacks = reg!("failbacks", "Fail-backs to the primary", Counter::default());
        let feedback = reg!(
            "feedback_labels",
            "Labels received through /v1/feedback",
            Counter::default()
        );
        let extraction_alarms = reg!(
            "extraction_alarms",
            "Extraction alarms by check",
            Family::default()
        );
        let incidents = reg!(
            "incidents",
            "Incidents written, by severity and type",
            Family::default()
        );
        let reloads = reg!("reloads", "Model reloads by outcome", Family::default());
        let webhook_sent = reg!(
            "webhook_sent",
            "Alerts delivered to a webhook",
            Counter::default()
        );
        let webhook_failed = reg!(
            "webhook_failed",
            "Alerts a webhook did not take after every attempt",
            Counter::default()
        );
        let webhook_retries = reg!(
            "webhook_retries",
            "Failed webhook attempts",
            Counter::default()
        );
        let webhook_dropped = reg!(
            "webhook_dropped",
            "Alerts dropped because the webhook queue was full",
            Counter::default()
        );
        Self {
            registry: Arc::new(r),
            requests,
            latency,
            batch_size,
            queue_depth,
            inputs,
            fused_p_value,
            detector_alarms,
            blocked,
            drift_p_value,
            drift_windows,
            drift_alarms,
            accuracy,
            accuracy_upper,
            active_model,
            failovers,
            failbacks,
            feedback,
            extraction_alarms,
            incidents,
            reloads,
            webhook_sent,
            webhook_failed,
            webhook_retries,
            webhook_dropped,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
