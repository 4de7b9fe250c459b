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

fn load(cfg: &ServeConfig, device: &Chosen) -> Result<Loaded, ServeError> {
    let key = cfg.verify_key.as_deref();
    let mut models = vec![Served::open(&cfg.model.primary, key, device)?];
    for b in &cfg.model.backups {
        models.push(Served::open(b, key, device)?);
    }
    let primary = &models[0];
    for m in &models[1..] {
        if m.num_classes() != primary.num_classes() || m.reads_images() != primary.reads_images() {
            return Err(ServeError::Config(format!(
                "backup {} does not do the primary's task ({} classes, {} inputs)",
                m.path.display(),
                primary.num_classes(),
                if primary.reads_images() {
                    "image"
                } else {
                    "record"
                }
            )));
        }
    }
    let fitted = match &cfg.model.detectors {
        Some(p) => {
            let f = Fitted::load(p, &device.device)?;
            check_opened(p, &f.header.model_sha256, &primary.opened)?;
            check_block_p(&f, cfg.policy.block_p, p, device)?;
            let t = thresholds(&f)?;
            Some((f, t))
        }
        None => None,
    };
    let reference = match &cfg.model.drift_reference {
        Some(p) => {
            let r = Reference::load(p, &device.device)?;
            check_opened(p, &r.header.model_sha256, &primary.opened)?;
            Some(r)
        }
        None => None,
    };
    let m = &cfg.monitor;
    let online = match (&reference, m.online_window) {
        (Some(r), w) if w > 0 => {
            let bootstraps = (4.0 * m.online_ert).ceil() as usize;
            Some(
                OnlineMmd::fit(
                    r.summary.features.clone(),
                    w,
                    m.online_ert,
                    bootstraps,
                    0x0d1f7,
                )
                .map_err(|e| ServeError::Config(format!("monitor.online_window: {e}")))?,
            )
        }
        _ => None,
    };
    let ledger = match &cfg.model.ledger {
        Some(p) => {
            let l = LedgerFile::load(p)?;
            check_opened(p, &l.model_sha256, &primary.opened)?;
            l.ledger()
        }
        None => Ledger::new(Prada::default()),
    };
    Ok(Loaded {
        models,
        fitted,
        reference,
        online,
        ledger,
    })
}

/// Refuses a `policy.block_p` below the smallest fused p-value the detectors can give (every
/// detector's conformal p-value at its floor 1/(n + 1)): no input could ever be blocked.
fn check_block_p(
    f: &Fitted,
    block_p: f64,
    path: &std::path::Path,
    device: &Chosen,
) -> Result<(), ServeError> {
    let floors: Vec<Tensor<1>> = f
        .calibrations
        .iter()
        .map(|c| Tensor::<1>::from_floats([1.0 / (c.scores.len() as f32 + 1.0)], &device.device))
        .collect();
    let fused = crate::detect::calibrate::fuse(f.header.fusion, &floors);
    let floor = f64::from(crate::detect::host_floats(fused, "fused p-value floor")?[0]);
    if block_p * (1.0 + 1e-6) < floor {
        return Err(ServeError::Config(format!(
            "policy.block_p {block_p}: the detectors in {} cannot give a fused p-value below {floor:.6} ({} detectors, {} calibration examples), so no input would ever be blocked; set block_p to at least {floor:.6}, or calibrate on more examples",
            path.display(),
            f.calibrations.len(),
            f.calibrations.first().map_or(0, |c| c.scores.len())
        )));
    }
    Ok(())
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

    /// One forward pass over every plain request of the batch.
    fn predict(&mut self, requests: Vec<(String, Inputs, Reply<Answer>)>) {
        let all = Inputs::concat(requests.iter().map(|r| &r.1));
        let n = all.len();
        self.metrics.batch_size.observe(n as f64);
        let result = self.forward(&all);
        let (primary, answers) = match result {
            Ok(v) => v,
            Err(e) => {
                for (_, _, reply) in requests {
                    let _ = reply.send(Err(ServeError::Model(e.to_string())));
                }
                return;
            }
        };
        let name = self.loaded.models[self.active].name();
        self.metrics
            .inputs
            .get_or_create(&labels(&[("model", &name)]))
            .inc_by(n as u64);
        let mut start = 0;
        let mut answers_out = Vec::with_capacity(requests.len());
        for (client, inputs, reply) in requests {
            let k = inputs.len();
            let answer = self.respond(&client, &inputs, start, &primary, &answers);
            start += k;
            answers_out.push((reply, answer));
        }
        // A drift window closed by this batch is on disk before its answers go out.
        let drift = match primary.summary {
            Some(s) => self.add_drift(s, n),
            None => Ok(()),
        };
        let interval = self.interval();
        self.loaded.ledger.close_until(interval);
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            st.inputs += n as u64;
            st.batches += 1;
        }
        for (reply, answer) in answers_out {
            let answer = match (&drift, answer) {
                (Err(e), _) => Err(ServeError::Model(format!("the incident log failed: {e}"))),
                (Ok(()), a) => a,
            };
            let _ = reply.send(answer);
        }
    }

    /// The primary's forward pass (with detectors and drift features) and, when a backup is
    /// active, the backup's answers.
    fn forward(&self, all: &Inputs) -> Result<(Forward, Forward), ServeError> {
        let l = &self.loaded;
        let job = ForwardJob {
            fitted: l.fitted.as_ref().map(|f| &f.0),
            drift: l.reference.is_some(),
        };
        let primary = l.models[0].run(all, job, &self.device)??;
        let answers = if self.active == 0 {
            primary.clone()
        } else {
            let job = ForwardJob {
                fitted: None,
                drift: false,
            };
            l.models[self.active].run(all, job, &self.device)??
        };
        Ok((primary, answers))
    }

    fn interval(&self) -> u64 {
        (self.started.elapsed().as_secs_f64() / self.cfg.monitor.interval_seconds) as u64
    }

    /// One request's answer from the batch's rows `start..`: detectors and the response policy,
    /// the extraction ledger, incidents, then the answer.
    fn respond(
        &mut self,
        client: &str,
        inputs: &Inputs,
        start: usize,
        primary: &Forward,
        answers: &Forward,
    ) -> Result<Answer, ServeError> {
        let id = self.request_id();
        let policy = self.cfg.policy.clone();
        let mut outcomes = Vec::with_capacity(inputs.len());
        let mut flagged = Vec::new();
        let mut worst = Severity::Info;
        for i in 0..inputs.len() {
            let row = start + i;
            let detector = self.detector_outcome(primary, row);
            let severity = detector.as_ref().map_or("none", |d| d.severity.as_str());
            let blocked = severity == "high" && policy.block_adversarial;
            if severity != "none" {
                let s = if severity == "high" {
                    Severity::High
                } else {
                    Severity::Warning
                };
                worst = worst.max(s);
                let d = detector.as_ref().expect("a severity comes from a detector");
                flagged.push(json!({
                    "input": i,
                    "fused_p_value": d.fused_p_value,
                    "alarms": d.scores.iter().filter(|s| s.2).map(|s| s.0.clone()).collect::<Vec<_>>(),
                    "invalid": d.invalid,
                    "blocked": blocked,
                }));
            }
            let decision = answers.decision[row];
            let classes = self.loaded.models[self.active].num_classes();
            outcomes.push(Outcome {
                class: (!blocked && (decision as usize) < classes).then_some(decision as usize),
                probabilities: if blocked {
                    Vec::new()
                } else {
                    answers.probabilities[row].clone()
                },
                detector,
                blocked,
                certificate: None,
            });
        }
        let blocked = outcomes.iter().filter(|o| o.blocked).count();
        if !flagged.is_empty() {
            let fpr = self.loaded.fitted.as_ref().map_or(0.0, |f| f.0.header.fpr);
            let min_p = flagged
                .iter()
                .filter_map(|f| f["fused_p_value"].as_f64())
                .fold(1.0, f64::min);
            let action = if blocked > 0 {
                format!("blocked {blocked} of {} inputs", inputs.len())
            } else {
                "flagged".into()
            };
            self.raise(
                Alert::new(
                    worst,
                    "adversarial_input",
                    format!(
                        "{} of {} inputs of request {id} flagged by the detectors",
                        flagged.len(),
                        inputs.len()
                    ),
                )
                .client(client)
                .statistic(
                    "fused_p_value",
                    min_p,
                    if worst == Severity::High {
                        policy.block_p
                    } else {
                        fpr
                    },
                )
                .action(&action)
                .evidence(json!({
                    "request_id": id,
                    "flagged": flagged.len(),
                    "blocked": blocked,
                    // At most EVIDENCE inputs per entry, so a flood cannot bloat the log.
                    "inputs": &flagged[..flagged.len().min(EVIDENCE)],
                })),
            )?;
            self.metrics
                .blocked
                .get_or_create(&labels(&[("reason", "adversarial_input")]))
                .inc_by(blocked as u64);
        }
        self.watch_extraction(client, inputs, start, answers, &id)?;
        self.remember(client, &id, inputs, start, answers);
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            st.blocked_inputs += blocked as u64;
            st.detector_alarms += flagged.len() as u64;
        }
        Ok(Answer {
            output: self.clients.output(client),
            request_id: id,
            model: self.loaded.models[self.active].name(),
            outcomes,
        })
    }

    fn detector_outcome(&self, primary: &Forward, row: usize) -> Option<DetectorOutcome> {
        let (fitted, thresholds) = self.loaded.fitted.as_ref()?;
        let s = primary.scores.as_ref()?;
        let fused = s.fused[row];
        let invalid = s.invalid[row];
        let alarm = p_alarm(fused, fitted.header.fpr) || invalid.is_some();
        let high = invalid.is_some() || f64::from(fused) <= self.cfg.policy.block_p;
        self.metrics.fused_p_value.observe(f64::from(fused));
        let scores: Vec<(String, f32, bool)> = fitted
            .header
            .detectors
            .iter()
            .enumerate()
            .map(|(d, kind)| {
                let v = s.scores[d][row];
                (
                    kind.name().to_string(),
                    v,
                    crate::detect::score::alarm(v, thresholds[d]),
                )
            })
            .collect();
        for (name, _, a) in &scores {
            if *a {
                self.metrics
                    .detector_alarms
                    .get_or_create(&labels(&[("detector", name)]))
                    .inc();
            }
        }
        if alarm {
            let which = if invalid.is_some() {
                "invalid"
            } else {
                "fused"
            };
            self.metrics
                .detector_alarms
                .get_or_create(&labels(&[("detector", which)]))
                .inc();
        }
        Some(DetectorOutcome {
            fused_p_value: fused,
            scores,
            alarm,
            severity: if high {
                "high"
            } else if alarm {
                "warning"
            } else {
                "none"
            }
            .into(),
            invalid: invalid.map(|v| v.name().to_string()),
        })
    }

    /// Feeds the client's queries to the extraction ledger; a new alarm escalates the client.
    fn watch_extraction(
        &mut self,
        client: &str,
        inputs: &Inputs,
        start: usize,
        answers: &Forward,
        id: &str,
    ) -> Result<(), ServeError> {
        let interval = self.interval();
        let model = &self.loaded.models[0];
        let mut alarms = Default::default();
        for i in 0..inputs.len() {
            let row = model.ledger_row(inputs, i);
            let class = answers.decision[start + i].max(0) as usize;
            // A record without network features has no vector for PRADA: it still counts.
            alarms = if row.is_empty() {
                self.loaded.ledger.count(client, interval)
            } else {
                self.loaded
                    .ledger
                    .observe(client, &row, class, (0.0, 1.0), interval)
            }
            .map_err(|e| ServeError::BadInput(e.to_string()))?;
        }
        let crate::detect::extraction::Alarms {
            prada,
            rate,
            volume,
        } = alarms;
        let queries = self
            .loaded
            .ledger
            .clients
            .get(client)
            .map_or(0, |c| c.queries);
        let checks = [
            (
                "prada",
                prada.map(|(q, w)| (w, self.loaded.ledger.prada.delta, q)),
            ),
            (
                "rate",
                rate.map(|iv| {
                    (
                        iv as f64,
                        self.loaded.ledger.cusum.as_ref().map_or(f64::NAN, |c| c.h),
                        queries,
                    )
                }),
            ),
            (
                "volume",
                volume.map(|q| {
                    (
                        q as f64,
                        self.loaded.ledger.max_queries.unwrap_or(0) as f64,
                        q,
                    )
                }),
            ),
            ("persisted", Some((queries as f64, f64::NAN, queries))),
        ];
        for (check, fired) in checks {
            let Some((value, threshold, at)) = fired else {
                continue;
            };
            let Some(action) = self
                .clients
                .escalate(client, check, queries, &self.cfg.policy)
            else {
                continue;
            };
            self.metrics
                .extraction_alarms
                .get_or_create(&labels(&[("check", check)]))
                .inc();
            let statistic = match check {
                "prada" => "shapiro_wilk_w",
                "rate" => "cusum_alarm_interval",
                _ => "queries",
            };
            let severity = if action == "blocked" {
                Severity::Critical
            } else {
                Severity::High
            };
            self.raise(
                Alert::new(
                    severity,
                    "extraction",
                    format!("client {client} looks like a model-extraction attack ({check} check, query {at}); {action}"),
                )
                .client(client)
                .statistic(statistic, value, threshold)
                .action(&action)
                .evidence(json!({ "request_id": id, "check": check, "queries": queries, "alarm_at_query": at })),
            )?;
        }
        Ok(())
    }

    /// Keeps a request's inputs and answers for its feedback; at most `monitor.remember`
    /// inputs in all, the oldest dropped first.
    fn remember(
        &mut self,
        client: &str,
        id: &str,
        inputs: &Inputs,
        start: usize,
        answers: &Forward,
    ) {
        let decisions = answers.decision[start..start + inputs.len()].to_vec();
        self.remembered_inputs += inputs.len();
        self.remembered.insert(
            id.to_string(),
            Remembered {
                client: client.to_string(),
                inputs: inputs.clone(),
                decisions,
            },
        );
        self.order.push_back(id.to_string());
        while self.remembered_inputs > self.cfg.monitor.remember
            || self.order.len() > self.cfg.monitor.remember
        {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.remembered.remove(&old) {
                self.remembered_inputs -= r.inputs.len();
            }
        }
    }

    /// Adds a batch's drift features to the window; tests a full window.
    /// Adds a batch's drift features to the window; tests a full window (its incident is
    /// written before this returns).
    fn add_drift(&mut self, s: Summary, n: usize) -> Result<(), ServeError> {
        self.online_drift(&s.features)?;
        self.drift.push(s);
        self.drift_n += n;
        if self.drift_n < self.cfg.monitor.drift_window {
            return Ok(());
        }
        let parts = std::mem::take(&mut self.drift);
        let size = std::mem::take(&mut self.drift_n);
        let Some(reference) = &self.loaded.reference else {
            return Ok(());
        };
        let mut counts = vec![0u64; reference.summary.counts.len()];
        for p in &parts {
            for (c, v) in counts.iter_mut().zip(&p.counts) {
                *c += v;
            }
        }
        let window = Summary {
            penultimate: parts[0].penultimate,
            features: Tensor::cat(parts.iter().map(|p| p.features.clone()).collect(), 0),
            entropy: Tensor::cat(parts.iter().map(|p| p.entropy.clone()).collect(), 0),
            counts,
        };
        let tests = Tests {
            feature_test: reference.header.feature_test,
            permutations: reference.header.permutations,
            alpha: self.cfg.monitor.drift_alpha,
            seed: self.metrics.drift_windows.get(),
        };
        let c = match compare(&reference.summary, &window, &tests) {
            Ok(c) => c,
            Err(e) => {
                return self.raise(Alert::new(
                    Severity::Warning,
                    "drift_error",
                    format!("the drift test failed: {e}"),
                ));
            }
        };
        let p = bonferroni(&[
            c.mmd.p_value,
            c.features.p_value,
            c.entropy_ks.p_value,
            c.chi.p_value,
        ]);
        self.metrics.drift_windows.inc();
        self.metrics.drift_p_value.set(p);
        if p <= tests.alpha {
            self.metrics.drift_alarms.inc();
            self.raise(
                Alert::new(
                    Severity::Warning,
                    "drift",
                    format!("the last {size} inputs differ from the reference (p = {p:.2e})"),
                )
                .statistic("bonferroni_p_value", p, tests.alpha)
                .evidence(json!({
                    "window": size,
                    "mmd": { "statistic": c.mmd.statistic, "p_value": c.mmd.p_value },
                    "features": { "test": format!("{:?}", c.features.test), "drifted": c.features.drifted, "of": c.features.features, "p_value": c.features.p_value },
                    "entropy_ks": { "statistic": c.entropy_ks.statistic, "p_value": c.entropy_ks.p_value },
                    "classes_chi_square": { "statistic": c.chi.statistic, "p_value": c.chi.p_value },
                    "space": c.space,
                })),
            )?;
        }
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.last_drift_p_value = Some(p);
        Ok(())
    }

    /// The online MMD detector over the sliding window of the last W inputs: the statistic at
    /// every input of the batch against the step's bootstrap threshold (Alibi Detect's
    /// `MMDDriftOnline`); an alarm is an incident and restarts the detector.
    fn online_drift(&mut self, features: &Tensor<2>) -> Result<(), ServeError> {
        let Some(online) = &self.loaded.online else {
            return Ok(());
        };
        let w = online.window;
        let b = features.dims()[0];
        let (stream, kept) = match self.online_tail.take() {
            Some(t) => {
                let k = t.dims()[0];
                (Tensor::cat(vec![t, features.clone()], 0), k)
            }
            None => (features.clone(), 0),
        };
        let t = stream.dims()[0];
        let seen_before = self.online_seen;
        self.online_seen += b;
        self.online_tail = Some(
            stream
                .clone()
                .narrow(0, t.saturating_sub(w - 1), t.min(w - 1)),
        );
        if t < w {
            return Ok(());
        }
        let stats = match online.statistics(stream.clone()) {
            Ok(s) => s,
            Err(e) => {
                return self.raise(Alert::new(
                    Severity::Warning,
                    "drift_error",
                    format!("the online drift test failed: {e}"),
                ));
            }
        };
        let last = online.thresholds.last().copied().unwrap_or(f64::INFINITY);
        // stats[i] ends at stream row w + i, the input numbered (from the last reset)
        // seen_before − kept + w + i; its threshold is the one for that step.
        let alarm = stats.iter().enumerate().find_map(|(i, s)| {
            let step = seen_before + w + i - kept;
            let threshold = online.thresholds.get(step - w).copied().unwrap_or(last);
            (*s > threshold).then_some((step, *s, threshold))
        });
        if let Some((step, stat, threshold)) = alarm {
            let (window, ert) = (online.window, online.ert);
            // The detector restarts after the alarm: the inputs after the alarm's window
            // (at most W − 1 of them) start its next window.
            let end = step + kept - seen_before;
            let after = t - end;
            let keep = after.min(w - 1);
            self.online_tail = (keep > 0).then(|| stream.narrow(0, t - keep, keep));
            self.online_seen = keep;
            self.metrics.drift_alarms.inc();
            self.raise(
                Alert::new(
                    Severity::Warning,
                    "drift",
                    format!("online MMD over the last {window} inputs crossed its threshold at input {step} since the detector started"),
                )
                .statistic("online_mmd", stat, threshold)
                .evidence(json!({ "detector": "online_mmd", "window": window, "ert": ert, "step": step })),
            )?;
        }
        Ok(())
    }

    /// CERTIFY on each input through the active model.
    fn smooth(&mut self, client: &str, inputs: Inputs) -> Result<Answer, ServeError> {
        let s = self.cfg.smooth.clone();
        if inputs.len() > s.max_inputs {
            return Err(ServeError::BadInput(format!(
                "a smoothed request holds at most {} inputs (smooth.max_inputs); this one holds {}",
                s.max_inputs,
                inputs.len()
            )));
        }
        // The same checks as any request (detectors, blocking, the extraction ledger), then
        // CERTIFY on the inputs that were not blocked.
        let (primary, answers) = self.forward(&inputs)?;
        let mut answer = self.respond(client, &inputs, 0, &primary, &answers)?;
        if let Some(summary) = primary.summary {
            self.add_drift(summary, inputs.len())?;
        }
        let keep: Vec<usize> = (0..inputs.len())
            .filter(|i| !answer.outcomes[*i].blocked)
            .collect();
        if keep.is_empty() {
            return Ok(answer);
        }
        let base = self.next * 1024;
        let job = SmoothJob {
            sigma: s.sigma,
            n0: s.n0,
            n: s.n,
            alpha: s.alpha,
            seed: 0x5e7e,
            ids: keep.iter().map(|i| base + *i as u64).collect(),
            batch: self.cfg.batch.max_batch.max(100),
        };
        let certs =
            self.loaded.models[self.active].run(&inputs.select(&keep), job, &self.device)?;
        for (i, c) in keep.into_iter().zip(certs) {
            let o = &mut answer.outcomes[i];
            o.class = c.class;
            o.probabilities.clear();
            o.certificate = Some(c);
        }
        Ok(answer)
    }

    /// True labels for a remembered request: the labelled window, DDM, and health.
    fn feedback(
        &mut self,
        by: &str,
        request_id: &str,
        labels_: &[usize],
    ) -> Result<usize, ServeError> {
        let unknown = self
            .remembered
            .get(request_id)
            .is_none_or(|r| r.client != by);
        if unknown {
            return Err(ServeError::NotFound(format!(
                "request {request_id} is not one of this client's recent requests (the service remembers the last {} inputs, and takes one feedback per request)",
                self.cfg.monitor.remember
            )));
        }
        let r = &self.remembered[request_id];
        let n = r.inputs.len();
        if labels_.len() != n {
            return Err(ServeError::BadInput(format!(
                "request {request_id} had {n} inputs; give {n} labels"
            )));
        }
        let classes = self.loaded.models[0].num_classes();
        if let Some(bad) = labels_.iter().find(|l| **l >= classes) {
            return Err(ServeError::BadInput(format!(
                "label {bad}: the model has {classes} classes"
            )));
        }
        let r = self.remembered.remove(request_id).expect("checked above");
        self.remembered_inputs -= n;
        self.metrics.feedback.inc_by(labels_.len() as u64);
        for (i, label) in labels_.iter().enumerate() {
            let error = r.decisions[i] != *label as i64;
            let before = self.ddm.drifts.len();
            let level = self.ddm.observe(error);
            if level == Level::Drift && self.ddm.drifts.len() > before {
                self.raise(
                    Alert::new(Severity::Warning, "concept_drift", "the error rate on labelled feedback rose (DDM: p + s above p_min + 3 s_min)")
                        .evidence(json!({ "examples": self.ddm.drifts.last() })),
                )?;
            }
            self.labelled.push((r.inputs.select(&[i]), *label));
        }
        if self.labelled.len() >= self.cfg.monitor.feedback_window {
            self.close_window()?;
        }
        Ok(labels_.len())
    }

    /// Every model's accuracy on the labelled window; fail over or back.
    fn close_window(&mut self) -> Result<(), ServeError> {
        let window = std::mem::take(&mut self.labelled);
        let inputs = Inputs::concat(window.iter().map(|w| &w.0));
        let truth: Vec<i64> = window.iter().map(|w| w.1 as i64).collect();
        let n = truth.len();
        let conf = 1.0 - self.cfg.monitor.health_confidence;
        let mut acc = Vec::new();
        for m in &self.loaded.models {
            let f = m.run(
                &inputs,
                ForwardJob {
                    fitted: None,
                    drift: false,
                },
                &self.device,
            )??;
            let k = f
                .decision
                .iter()
                .zip(&truth)
                .filter(|(a, b)| a == b)
                .count();
            let (lo, hi) = clopper_pearson(k, n, conf);
            let l = labels(&[("model", &m.name())]);
            self.metrics
                .accuracy
                .get_or_create(&l)
                .set(k as f64 / n as f64);
            self.metrics.accuracy_upper.get_or_create(&l).set(hi);
            acc.push((k as f64 / n as f64, lo, hi));
        }
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            for (s, a) in st.models.iter_mut().zip(&acc) {
                s.accuracy = Some(*a);
            }
        }
        let m = &self.cfg.monitor;
        let threshold = m.health_threshold;
        let evidence = |acc: &[(f64, f64, f64)], models: &[Served]| {
            json!(models.iter().zip(acc).map(|(s, a)| json!({
                "model": s.name(), "accuracy": a.0, "lower": a.1, "upper": a.2, "labelled": n,
            })).collect::<Vec<_>>())
        };
        let active = self.active;
        if active == 0 {
            if acc[0].2 < threshold {
                self.bad_windows += 1;
                let (a, _, hi) = acc[0];
                if self.bad_windows < m.health_windows {
                    self.raise(
                        Alert::new(Severity::High, "health", format!("the primary's accuracy on {n} labelled inputs is {a:.3} (upper bound {hi:.3} < {threshold}); window {} of {}", self.bad_windows, m.health_windows))
                            .statistic("accuracy_upper_bound", hi, threshold)
                            .evidence(evidence(&acc, &self.loaded.models)),
                    )?;
                    return Ok(());
                }
                let best = (1..acc.len())
                    .filter(|i| acc[*i].1 >= threshold)
                    .max_by(|a, b| acc[*a].1.total_cmp(&acc[*b].1));
                match best {
                    Some(b) => {
                        self.active = b;
                        self.bad_windows = 0;
                        self.good_windows = 0;
                        self.metrics.failovers.inc();
                        self.raise(
                            Alert::new(
                                Severity::Critical,
                                "failover",
                                format!(
                                    "failed over from {} to {} after {} windows below {threshold}",
                                    self.loaded.models[0].name(),
                                    self.loaded.models[b].name(),
                                    m.health_windows
                                ),
                            )
                            .statistic("accuracy_upper_bound", hi, threshold)
                            .action(&format!("serving {}", self.loaded.models[b].name()))
                            .evidence(evidence(&acc, &self.loaded.models)),
                        )?;
                    }
                    None => {
                        self.raise(
                            Alert::new(Severity::Critical, "health", format!("the primary stays below {threshold} and no backup's lower bound reaches it; still serving the primary"))
                                .statistic("accuracy_upper_bound", hi, threshold)
                                .evidence(evidence(&acc, &self.loaded.models)),
                        )?;
                    }
                }
            } else {
                self.bad_windows = 0;
            }
        } else {
            let back = threshold + m.failback_margin;
            if acc[0].1 >= back {
                self.good_windows += 1;
            } else {
                self.good_windows = 0;
            }
            if self.good_windows >= m.health_windows {
                let from = self.loaded.models[active].name();
                self.active = 0;
                self.good_windows = 0;
                self.metrics.failbacks.inc();
                self.raise(
                    Alert::new(Severity::Warning, "failback", format!("failed back from {from} to the primary: its lower bound reached {back:.3} for {} windows", m.health_windows))
                        .statistic("accuracy_lower_bound", acc[0].1, back)
                        .action(&format!("serving {}", self.loaded.models[0].name()))
                        .evidence(evidence(&acc, &self.loaded.models)),
                )?;
            } else if acc[active].2 < threshold {
                // The backup in service is failing too: another backup that clears the
                // threshold takes over, or the operators are told.
                let (a, _, hi) = acc[active];
                // The primary is a candidate too (it clears the threshold, if not the margin).
                let other = (0..acc.len())
                    .filter(|i| *i != active && acc[*i].1 >= threshold)
                    .max_by(|x, y| acc[*x].1.total_cmp(&acc[*y].1));
                let from = self.loaded.models[active].name();
                let alert = match other {
                    Some(b) => {
                        self.active = b;
                        self.good_windows = 0;
                        if b == 0 {
                            self.metrics.failbacks.inc();
                        } else {
                            self.metrics.failovers.inc();
                        }
                        Alert::new(Severity::Critical, "failover", format!("the backup in service, {from}, fell to {a:.3} (upper bound {hi:.3} < {threshold}); failed over to {}", self.loaded.models[b].name()))
                            .action(&format!("serving {}", self.loaded.models[b].name()))
                    }
                    None => Alert::new(
                        Severity::Critical,
                        "health",
                        format!(
                            "the backup in service, {from}, fell to {a:.3} (upper bound {hi:.3} < {threshold}) and no other model clears the threshold"
                        ),
                    ),
                };
                self.raise(
                    alert
                        .statistic("accuracy_upper_bound", hi, threshold)
                        .evidence(evidence(&acc, &self.loaded.models)),
                )?;
            }
        }
        Ok(())
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

/// Checks that the detectors can score with the primary (one forward pass on one probe input).
fn check_detectors(l: &Loaded, device: &Chosen) -> Result<(), ServeError> {
    let Some((fitted, _)) = &l.fitted else {
        return Ok(());
    };
    let primary = &l.models[0];
    if !primary.reads_images() {
        return Ok(());
    }
    let d: usize = crate::model::image::IMAGE_SHAPE.iter().product();
    let probe = Inputs::Images {
        values: vec![0.5; d],
        n: 1,
    };
    primary.run(&probe, CheckJob { fitted }, device)??;
    Ok(())
}

/// Where the service's own files are, for `Outputs` checks.
pub fn model_files(cfg: &ServeConfig) -> Vec<PathBuf> {
    let m = &cfg.model;
    let mut v = vec![m.primary.clone()];
    v.extend(m.backups.iter().cloned());
    v.extend(m.detectors.iter().cloned());
    v.extend(m.drift_reference.iter().cloned());
    v.extend(m.ledger.iter().cloned());
    v
}
