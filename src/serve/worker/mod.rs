//! The model thread: it owns the models and every monitor, takes requests from a bounded
//! queue, gathers them into batches (up to `batch.max_batch` inputs, waiting at most
//! `batch.max_wait_ms` after the first), runs each batch once on the device, and then, for
//! each request, applies the response policy, writes any incident to the log and only then
//! answers.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::Tensor;
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::ServeError;
use super::alerts::{Alert, Alerter, Severity};
use super::clients::Clients;
use super::config::{OutputPolicy, ServeConfig};
use super::engine::{CheckJob, Forward, ForwardJob, Inputs, Served, SmoothJob};
use super::metrics::{Metrics, labels};
use crate::certify::Certificate;
use crate::detect::concept::{Ddm, Level};
use crate::detect::drift::online::OnlineMmd;
use crate::detect::drift::reference::Reference;
use crate::detect::drift::{Summary, Tests, compare};
use crate::detect::evaluate::clopper_pearson;
use crate::detect::extraction::ledger_file::LedgerFile;
use crate::detect::extraction::{Ledger, Prada};
use crate::detect::score::{p_alarm, thresholds};
use crate::detect::store::{Fitted, check_opened};
use crate::detect::univariate::bonferroni;
use crate::device::Chosen;

mod drift;
mod health;
mod load;
mod respond;

pub use load::model_files;
use load::{check_detectors, load};

/// Flagged inputs listed in one incident's evidence.
const EVIDENCE: usize = 16;

/// Where the model thread answers a request.
pub type Reply<T> = oneshot::Sender<Result<T, ServeError>>;

/// What the model thread is asked to do.
pub enum Work {
    Predict {
        client: String,
        inputs: Inputs,
        smooth: bool,
        reply: oneshot::Sender<Result<Answer, ServeError>>,
    },
    Feedback {
        /// The client sending the labels (only the client that made a request may label it).
        by: String,
        request_id: String,
        labels: Vec<usize>,
        reply: oneshot::Sender<Result<usize, ServeError>>,
    },
    /// Re-read every model and detector file (signatures checked); all or nothing.
    Reload {
        by: String,
        reply: oneshot::Sender<Result<String, ServeError>>,
    },
}

/// One request's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub request_id: String,
    /// The client's output policy when the answer was made (after any escalation).
    pub output: OutputPolicy,
    pub model: String,
    pub outcomes: Vec<Outcome>,
}

/// One input's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The class, or none when the model abstains or the input was blocked.
    pub class: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probabilities: Vec<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorOutcome>,
    /// Withheld by the response policy (an input flagged high).
    pub blocked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
}

/// The detectors' view of one input.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorOutcome {
    pub fused_p_value: f32,
    /// (detector, score, alarm).
    pub scores: Vec<(String, f32, bool)>,
    pub alarm: bool,
    /// "none", "warning" (fused p-value at most the detectors' false-positive rate) or
    /// "high" (at most `policy.block_p`, or an invalid input).
    pub severity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// The figures the dashboard and `/v1/status` show.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub active: String,
    pub active_sha256: String,
    pub models: Vec<ModelStatus>,
    pub inputs: u64,
    pub batches: u64,
    pub drift_windows: u64,
    pub drift_alarms: u64,
    pub last_drift_p_value: Option<f64>,
    pub detector_alarms: u64,
    pub blocked_inputs: u64,
    pub failovers: u64,
    pub feedback: u64,
    pub ready: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelStatus {
    pub name: String,
    pub sha256: String,
    pub role: String,
    /// Accuracy on the last labelled window with its Clopper-Pearson bounds.
    pub accuracy: Option<(f64, f64, f64)>,
}

/// Everything loaded from the configured files, replaced as a whole at reload.
struct Loaded {
    models: Vec<Served>,
    fitted: Option<(Fitted, Vec<f32>)>,
    reference: Option<Reference>,
    /// The online MMD detector, calibrated on the reference's features.
    online: Option<OnlineMmd>,
    ledger: Ledger,
}

/// A request remembered for feedback: its inputs and the answers given.
struct Remembered {
    client: String,
    inputs: Inputs,
    decisions: Vec<i64>,
}

/// The model thread's state.
pub struct Worker {
    cfg: Arc<ServeConfig>,
    device: Chosen,
    loaded: Loaded,
    active: usize,
    alerter: Arc<Alerter>,
    metrics: Metrics,
    clients: Arc<Clients>,
    status: Arc<Mutex<Status>>,
    started: Instant,
    epoch: String,
    next: u64,
    remembered: HashMap<String, Remembered>,
    remembered_inputs: usize,
    order: VecDeque<String>,
    drift: Vec<Summary>,
    drift_n: usize,
    /// The online detector's last W − 1 points and the points seen since its last reset.
    online_tail: Option<Tensor<2>>,
    online_seen: usize,
    /// The labelled window: (inputs of one example, true label).
    labelled: Vec<(Inputs, usize)>,
    ddm: Ddm,
    bad_windows: usize,
    good_windows: usize,
}

impl Worker {
    /// Loads everything (refusing a model that fails verification) and checks the detectors
    /// against the primary with one forward pass.
    pub fn start(
        cfg: Arc<ServeConfig>,
        device: Chosen,
        alerter: Arc<Alerter>,
        metrics: Metrics,
        clients: Arc<Clients>,
        status: Arc<Mutex<Status>>,
    ) -> Result<Self, ServeError> {
        let loaded = load(&cfg, &device)?;
        check_detectors(&loaded, &device)?;
        let epoch = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        );
        let w = Self {
            cfg,
            device,
            loaded,
            active: 0,
            alerter,
            metrics,
            clients,
            status,
            started: Instant::now(),
            epoch,
            next: 0,
            remembered: HashMap::new(),
            remembered_inputs: 0,
            order: VecDeque::new(),
            drift: Vec::new(),
            drift_n: 0,
            online_tail: None,
            online_seen: 0,
            labelled: Vec::new(),
            ddm: Ddm::new(30).expect("30 is a valid minimum"),
            bad_windows: 0,
            good_windows: 0,
        };
        w.publish();
        Ok(w)
    }

    /// The record schema of a fusion primary (none for image models).
    pub fn schema(&self) -> Option<crate::data::records::Schema> {
        self.loaded.models[0].fusion_spec().map(|s| s.schema())
    }

    /// The class names, in label order.
    pub fn class_names(&self) -> Vec<String> {
        match self.loaded.models[0].fusion_spec() {
            Some(s) => s.class_names.clone(),
            None => crate::data::FASHION_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// Serves the queue until every sender is gone. A batch takes requests until the next would
    /// take it past `batch.max_batch` inputs (that one starts the next batch). If handling a
    /// batch panics, the thread records a critical incident, marks the service not ready and
    /// stops, so that the orchestrator restarts it.
    pub fn run(mut self, rx: Receiver<Work>) {
        let max_wait = Duration::from_millis(self.cfg.batch.max_wait_ms);
        let mut pending: Option<Work> = None;
        loop {
            let first = match pending.take() {
                Some(w) => w,
                None => match rx.recv() {
                    Ok(w) => {
                        self.metrics.queue_depth.dec();
                        w
                    }
                    Err(_) => return,
                },
            };
            let deadline = Instant::now() + max_wait;
            let mut size = work_size(&first);
            let mut batch = vec![first];
            while size < self.cfg.batch.max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(w) => {
                        self.metrics.queue_depth.dec();
                        if size + work_size(&w) > self.cfg.batch.max_batch {
                            pending = Some(w);
                            break;
                        }
                        size += work_size(&w);
                        batch.push(w);
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            let handled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(batch)));
            if let Err(panic) = handled {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.status.lock().unwrap_or_else(|e| e.into_inner()).ready = false;
                let _ = self.raise(
                    Alert::new(
                        Severity::Critical,
                        "model_thread_failed",
                        format!("the model thread stopped: {what}"),
                    )
                    .action("not ready; restart the service"),
                );
                return;
            }
        }
    }

    fn handle(&mut self, batch: Vec<Work>) {
        let mut plain = Vec::new();
        let mut rest = Vec::new();
        for w in batch {
            match w {
                Work::Predict {
                    client,
                    inputs,
                    smooth: false,
                    reply,
                } => plain.push((client, inputs, reply)),
                other => rest.push(other),
            }
        }
        if !plain.is_empty() {
            self.predict(plain);
        }
        for w in rest {
            match w {
                Work::Predict {
                    client,
                    inputs,
                    reply,
                    ..
                } => {
                    let _ = reply.send(self.smooth(&client, inputs));
                }
                Work::Feedback {
                    by,
                    request_id,
                    labels,
                    reply,
                } => {
                    let _ = reply.send(self.feedback(&by, &request_id, &labels));
                }
                Work::Reload { by, reply } => {
                    let _ = reply.send(self.reload(&by));
                }
            }
        }
        self.publish();
    }

    /// A request id: a counter and 64 random bits, so that ids cannot be guessed.
    fn request_id(&mut self) -> String {
        self.next += 1;
        format!(
            "{}-{}-{:016x}",
            self.epoch,
            self.next,
            rand::random::<u64>()
        )
    }

    fn raise(&self, alert: Alert) -> Result<(), ServeError> {
        self.alerter
            .raise(alert)
            .map(|_| ())
            .map_err(ServeError::from)
    }

    /// Re-reads every configured file; keeps the old set if any is refused.
    fn reload(&mut self, by: &str) -> Result<String, ServeError> {
        let outcome = load(&self.cfg, &self.device).and_then(|l| {
            check_detectors(&l, &self.device)?;
            let (old, new) = (&self.loaded.models[0], &l.models[0]);
            if old.num_classes() != new.num_classes()
                || old.reads_images() != new.reads_images()
                || old.fusion_spec().map(|s| s.schema()) != new.fusion_spec().map(|s| s.schema())
            {
                return Err(ServeError::Refused(format!(
                    "{} no longer does the running model's task (classes or inputs differ); restart the service to change it",
                    new.path.display()
                )));
            }
            Ok(l)
        });
        match outcome {
            Ok(mut l) => {
                // New ledger settings, the clients' history kept; windows start afresh.
                l.ledger.clients = std::mem::take(&mut self.loaded.ledger.clients);
                self.drift.clear();
                self.drift_n = 0;
                self.online_tail = None;
                self.online_seen = 0;
                self.labelled.clear();
                self.bad_windows = 0;
                self.good_windows = 0;
                let same = l.models.len() == self.loaded.models.len();
                self.loaded = l;
                if !same || self.active >= self.loaded.models.len() {
                    self.active = 0;
                }
                self.metrics
                    .reloads
                    .get_or_create(&labels(&[("outcome", "ok")]))
                    .inc();
                let digests: Vec<String> = self
                    .loaded
                    .models
                    .iter()
                    .map(|m| format!("{} {}", m.name(), m.sha256))
                    .collect();
                self.raise(
                    Alert::new(
                        Severity::Info,
                        "reload",
                        format!("models reloaded at the request of {by}"),
                    )
                    .client(by)
                    .action("reloaded")
                    .evidence(json!({ "models": digests })),
                )?;
                Ok(format!("reloaded {} models", self.loaded.models.len()))
            }
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&labels(&[("outcome", "refused")]))
                    .inc();
                self.raise(
                    Alert::new(
                        Severity::High,
                        "reload_refused",
                        format!("reload refused, still serving the last good models: {e}"),
                    )
                    .client(by)
                    .action("kept the last good models"),
                )?;
                Err(ServeError::Refused(format!(
                    "reload refused, still serving the last good models: {e}"
                )))
            }
        }
    }

    /// Copies the figures the HTTP side shows.
    fn publish(&self) {
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let active = &self.loaded.models[self.active];
        st.active = active.name();
        st.active_sha256 = active.sha256.clone();
        let old: HashMap<String, Option<(f64, f64, f64)>> = st
            .models
            .iter()
            .map(|m| (m.sha256.clone(), m.accuracy))
            .collect();
        st.models = self
            .loaded
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| ModelStatus {
                name: m.name(),
                sha256: m.sha256.clone(),
                role: if i == 0 {
                    "primary".into()
                } else {
                    format!("backup {i}")
                },
                accuracy: old.get(&m.sha256).copied().flatten(),
            })
            .collect();
        for (i, m) in self.loaded.models.iter().enumerate() {
            self.metrics
                .active_model
                .get_or_create(&labels(&[("model", &m.name()), ("sha256", &m.sha256)]))
                .set(i64::from(i == self.active));
        }
        st.drift_windows = self.metrics.drift_windows.get();
        st.drift_alarms = self.metrics.drift_alarms.get();
        st.failovers = self.metrics.failovers.get();
        st.feedback = self.metrics.feedback.get();
        st.ready = true;
    }
}

fn work_size(w: &Work) -> usize {
    match w {
        Work::Predict { inputs, .. } => inputs.len(),
        _ => 1,
    }
}
