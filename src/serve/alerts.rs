//! Alerts: what the monitors raise, and their delivery to webhooks in Alertmanager's webhook
//! JSON (version 4) from a thread of their own, with retries, so that a receiver that is down
//! or slow never holds up a prediction.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::Webhook;
use super::metrics::Metrics;

/// How urgent an alert is, in Alertmanager's customary order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// One alert or action: its type (e.g. "drift", "extraction", "failover"), the statistic and
/// threshold that raised it, and the evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub severity: Severity,
    #[serde(rename = "type")]
    pub kind: String,
    pub summary: String,
    /// The client it concerns, if any.
    #[serde(default)]
    pub client: Option<String>,
    /// The statistic's name, its value and the threshold it crossed.
    #[serde(default)]
    pub statistic: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub threshold: Option<f64>,
    /// What the service did about it ("blocked", "degraded", "failed over", ...).
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub evidence: Value,
}

impl Alert {
    pub fn new(severity: Severity, kind: &str, summary: impl Into<String>) -> Self {
        Self {
            severity,
            kind: kind.into(),
            summary: summary.into(),
            client: None,
            statistic: None,
            value: None,
            threshold: None,
            action: None,
            evidence: Value::Null,
        }
    }

    pub fn client(mut self, name: &str) -> Self {
        self.client = Some(name.into());
        self
    }

    /// The statistic, its value and threshold. A value that is not finite is left out.
    pub fn statistic(mut self, name: &str, value: f64, threshold: f64) -> Self {
        self.statistic = Some(name.into());
        self.value = value.is_finite().then_some(value);
        self.threshold = threshold.is_finite().then_some(threshold);
        self
    }

    pub fn action(mut self, action: &str) -> Self {
        self.action = Some(action.into());
        self
    }

    pub fn evidence(mut self, evidence: Value) -> Self {
        self.evidence = evidence;
        self
    }
}

/// Alertmanager's webhook payload (version 4) for one firing alert.
pub fn alertmanager_payload(alert: &Alert, seq: u64, time: SystemTime, service: &str) -> Value {
    let mut labels = json!({
        "alertname": format!("rampart_{}", alert.kind),
        "severity": alert.severity.name(),
        "service": service,
    });
    if let Some(c) = &alert.client {
        labels["client"] = json!(c);
    }
    let mut annotations = json!({ "summary": alert.summary });
    if let (Some(s), Some(v)) = (&alert.statistic, alert.value) {
        annotations["statistic"] = json!(s);
        annotations["value"] = json!(v.to_string());
    }
    if let Some(t) = alert.threshold {
        annotations["threshold"] = json!(t.to_string());
    }
    if let Some(a) = &alert.action {
        annotations["action"] = json!(a);
    }
    annotations["incident"] = json!(seq.to_string());
    let starts = humantime::format_rfc3339_millis(time).to_string();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"rampart_{}\"}}", alert.kind),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rampart",
        "groupLabels": { "alertname": format!("rampart_{}", alert.kind) },
        "commonLabels": labels.clone(),
        "commonAnnotations": annotations.clone(),
        "externalURL": "",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": format!("{seq:016x}"),
        }],
    })
}

/// Sends alerts to the webhooks from a background thread. Alerts that do not fit its queue are
/// dropped and counted (the incident log, not the webhook, is the record).
pub struct Dispatcher {
    tx: Option<SyncSender<(Severity, Value)>>,
    metrics: Metrics,
}

/// Alerts waiting to be sent.
const QUEUE: usize = 1024;

impl Dispatcher {
    pub fn start(webhooks: Vec<Webhook>, metrics: Metrics) -> Self {
        if webhooks.is_empty() {
            return Self { tx: None, metrics };
        }
        let (tx, rx) = sync_channel(QUEUE);
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("rampart-webhooks".into())
            .spawn(move || deliver(rx, webhooks, m))
            .expect("a thread starts");
        Self {
            tx: Some(tx),
            metrics,
        }
    }

    /// Queues a payload; never blocks.
    pub fn send(&self, severity: Severity, payload: Value) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            tx.try_send((severity, payload))
        {
            self.metrics.webhook_dropped.inc();
        }
    }
}

fn deliver(rx: Receiver<(Severity, Value)>, webhooks: Vec<Webhook>, metrics: Metrics) {
    while let Ok((severity, payload)) = rx.recv() {
        for hook in webhooks.iter().filter(|h| severity >= h.min_severity) {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_millis(hook.timeout_ms)))
                .http_status_as_error(true)
                .build()
                .into();
            let mut delay = Duration::from_millis(100);
            let mut sent = false;
            for attempt in 0..hook.attempts {
                if attempt > 0 {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                if agent.post(&hook.url).send_json(&payload).is_ok() {
                    sent = true;
                    break;
                }
                metrics.webhook_retries.inc();
            }
            if sent {
                metrics.webhook_sent.inc();
            } else {
                metrics.webhook_failed.inc();
            }
        }
    }
}

/// Raises alerts: each is written to the incident log and flushed before `raise` returns,
/// counted, and queued for the webhooks.
pub struct Alerter {
    log: std::sync::Mutex<super::incidents::IncidentLog>,
    dispatcher: Dispatcher,
    metrics: Metrics,
    service: String,
}

impl Alerter {
    pub fn new(
        log: super::incidents::IncidentLog,
        dispatcher: Dispatcher,
        metrics: Metrics,
        service: String,
    ) -> Self {
        Self {
            log: std::sync::Mutex::new(log),
            dispatcher,
            metrics,
            service,
        }
    }

    /// Writes `alert` to the log (on disk when this returns) and sends it on.
    pub fn raise(
        &self,
        alert: Alert,
    ) -> Result<super::incidents::Entry, super::incidents::IncidentError> {
        let entry = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.append(alert)?
        };
        let a = &entry.alert;
        self.metrics
            .incidents
            .get_or_create(&super::metrics::labels(&[
                ("severity", a.severity.name()),
                ("type", &a.kind),
            ]))
            .inc();
        let time = entry.when().unwrap_or_else(SystemTime::now);
        self.dispatcher.send(
            a.severity,
            alertmanager_payload(a, entry.seq, time, &self.service),
        );
        Ok(entry)
    }

    /// The newest entries, oldest first.
    pub fn recent(&self) -> Vec<super::incidents::Entry> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.recent.iter().cloned().collect()
    }
}
