//! The HTTP side, on axum: authentication and rate limits, request parsing, the queue to the
//! model thread, output policies, metrics, probes, the dashboard and the latency and
//! error-rate checks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::ServeError;
use super::alerts::{Alert, Alerter, Severity};
use super::clients::{Clients, Refusal, shape_output};
use super::config::{OutputPolicy, ServeConfig};
use super::input::{self, Expect};
use super::metrics::{Metrics, labels};
use super::worker::{Answer, Status, Work};
use crate::data::records::Schema;

/// What every handler shares.
pub struct App {
    pub tx: SyncSender<Work>,
    pub clients: Arc<Clients>,
    pub metrics: Metrics,
    pub alerter: Arc<Alerter>,
    pub status: Arc<Mutex<Status>>,
    pub cfg: Arc<ServeConfig>,
    /// The fusion model's schema; none for image models.
    pub schema: Option<Schema>,
    pub class_names: Vec<String>,
    pub shutting_down: AtomicBool,
    /// Since the last check: latencies (seconds) of predictions, requests and 5xx answers.
    pub window: Mutex<Vec<f64>>,
    pub served: AtomicU64,
    pub failed: AtomicU64,
}

type Shared = Arc<App>;

/// The routes. Every `/v1/` route checks the API key and the client's rate before its body is
/// read; a request that takes longer than `batch.timeout_ms` is answered 408.
pub fn router(app: Shared) -> Router {
    let limit = app.cfg.batch.max_body_bytes;
    let timeout = std::time::Duration::from_millis(app.cfg.batch.timeout_ms);
    let api = Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/feedback", post(feedback))
        .route("/v1/admin/reload", post(reload))
        .route("/v1/status", get(status))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
    Router::new()
        .merge(api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(dashboard))
        .layer(DefaultBodyLimit::max(limit))
        // A declared length over the limit is answered 413 before any of the body is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(app)
}

/// The authenticated client of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
}

/// Most body bytes read (and dropped) from a known client that is turned away.
const DRAIN: usize = 1 << 20;

/// Checks the key and the rate before anything else is read.
async fn authenticate(State(app): State<Shared>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    match app.admit(req.headers()) {
        Ok(name) => {
            req.extensions_mut().insert(Caller { name });
            next.run(req).await
        }
        Err(r) => {
            // A known client turned away (429, 403) has its body read and dropped, so that a
            // client still sending sees the answer; an unknown one is not read at all.
            // At most DRAIN bytes, then the connection is closed.
            let mut r = r;
            if r.status() != StatusCode::UNAUTHORIZED {
                let _ = axum::body::to_bytes(req.into_body(), DRAIN).await;
            }
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            app.done(&endpoint, "-", r.status(), started);
            r
        }
    }
}

/// An error answer: `{"error": "..."}`.
fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": message.into() }))).into_response()
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let code = match &self {
            ServeError::BadInput(_) => StatusCode::BAD_REQUEST,
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::Refused(_) => StatusCode::CONFLICT,
            ServeError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(code, self.to_string())
    }
}

impl App {
    /// Counts a finished request.
    fn done(&self, endpoint: &str, client: &str, code: StatusCode, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        self.metrics
            .requests
            .get_or_create(&labels(&[
                ("endpoint", endpoint),
                ("code", code.as_str()),
                ("client", client),
            ]))
            .inc();
        self.metrics
            .latency
            .get_or_create(&labels(&[("endpoint", endpoint)]))
            .observe(secs);
        if endpoint == "predict" {
            self.served.fetch_add(1, Ordering::Relaxed);
            if code.is_server_error() {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            self.window
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(secs);
        }
    }

    /// The client behind the request, admitted under its rate limit.
    #[allow(clippy::result_large_err)] // the refusal is the response itself
    fn admit(&self, headers: &HeaderMap) -> Result<String, Response> {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let name = self.clients.authenticate(auth).map_err(refusal)?;
        self.clients.admit(&name, Instant::now()).map_err(|r| {
            let reason = match r {
                Refusal::Blocked => "client_blocked",
                _ => "rate_limited",
            };
            self.metrics
                .blocked
                .get_or_create(&labels(&[("reason", reason)]))
                .inc();
            refusal(r)
        })?;
        Ok(name)
    }

    /// Sends work to the model thread, or answers 503 when its queue is full.
    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ServeError>>) -> Work,
    ) -> Result<T, ServeError> {
        let (reply, rx) = oneshot::channel();
        // Counted before it is sent, so the model thread's decrement never comes first.
        self.metrics.queue_depth.inc();
        match self.tx.try_send(make(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.queue_depth.dec();
                return Err(ServeError::Overloaded(format!(
                    "{} requests are waiting (batch.queue); retry shortly",
                    self.cfg.batch.queue
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.queue_depth.dec();
                return Err(ServeError::Overloaded(
                    "the model thread has stopped".into(),
                ));
            }
        };
        rx.await
            .map_err(|_| ServeError::Model("the model thread dropped the request".into()))?
    }
}

fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Missing => error(
            StatusCode::UNAUTHORIZED,
            "no API key: send `Authorization: Bearer KEY`",
        ),
        Refusal::Unknown => error(StatusCode::UNAUTHORIZED, "unknown API key"),
        Refusal::Blocked => error(
            StatusCode::FORBIDDEN,
            "this client is blocked by the response policy (see the incident log)",
        ),
        Refusal::RateLimited(wait) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("over this client's rate limit; retry in {wait:.2} s"),
            );
            let secs = wait.ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

#[derive(Debug, Deserialize)]
struct PredictQuery {
    #[serde(default)]
    smooth: Option<u8>,
}

async fn predict(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<PredictQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let response = match answer(&app, &caller.name, query, body).await {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    };
    app.done("predict", &caller.name, response.status(), started);
    response
}

async fn answer(
    app: &App,
    client: &str,
    query: Result<Query<PredictQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Value, ServeError> {
    let smooth = match query {
        Ok(Query(q)) => match q.smooth {
            None | Some(0) => false,
            Some(1) => true,
            Some(v) => {
                return Err(ServeError::BadInput(format!(
                    "smooth={v}: use smooth=1 or leave it out"
                )));
            }
        },
        Err(e) => return Err(ServeError::BadInput(format!("bad query string: {e}"))),
    };
    // Parsing and decoding happen off the async threads, so large bodies cannot stall them.
    let schema = app.schema.clone();
    let max = if smooth {
        app.cfg.smooth.max_inputs
    } else {
        app.cfg.batch.max_inputs
    };
    let inputs = tokio::task::spawn_blocking(move || {
        let expect = match &schema {
            Some(s) => Expect::Records(s),
            None => Expect::Images,
        };
        input::parse(&body, expect, max)
    })
    .await
    .map_err(|e| ServeError::Model(format!("parsing the request failed: {e}")))?
    .map_err(ServeError::BadInput)?;
    let client_name = client.to_string();
    let answer = app
        .submit(|reply| Work::Predict {
            client: client_name,
            inputs,
            smooth,
            reply,
        })
        .await?;
    Ok(render(&answer, &app.class_names))
}

/// The answer as the client's output policy (in effect when it was answered) allows.
fn render(a: &Answer, names: &[String]) -> Value {
    let policy = a.output;
    let predictions: Vec<Value> = a
        .outcomes
        .iter()
        .map(|o| {
            let mut p = json!({
                "class": o.class,
                "label": o.class.and_then(|c| names.get(c)),
                "blocked": o.blocked,
            });
            if let Some(shaped) =
                shape_output(&o.probabilities, policy).filter(|_| !o.probabilities.is_empty())
            {
                let m: BTreeMap<String, f32> = shaped
                    .into_iter()
                    .map(|(c, v)| (c.to_string(), v))
                    .collect();
                p["probabilities"] = json!(m);
            }
            if let Some(d) = &o.detector {
                p["detector"] = if policy == OutputPolicy::Full {
                    json!(d)
                } else {
                    json!({ "alarm": d.alarm, "severity": d.severity })
                };
            }
            if let Some(c) = &o.certificate {
                // The radius and the bound are soft outputs: only the full policy shows them.
                p["certificate"] = if policy == OutputPolicy::Full {
                    json!({ "class": c.class, "radius": c.radius, "p_a_lower": c.p_a_lower })
                } else {
                    json!({ "class": c.class, "certified": c.class.is_some() })
                };
            }
            p
        })
        .collect();
    json!({
        "request_id": a.request_id,
        "model": a.model,
        "output": policy,
        "predictions": predictions,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    request_id: String,
    #[serde(default)]
    label: Option<usize>,
    #[serde(default)]
    labels: Option<Vec<usize>>,
}

async fn feedback(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let client = caller.name;
    let result = async {
        let f: FeedbackBody = serde_json::from_slice(&body).map_err(|e| {
            ServeError::BadInput(format!(
                "the body is not feedback ({{\"request_id\", \"label\" or \"labels\"}}): {e}"
            ))
        })?;
        let labels = match (f.label, f.labels) {
            (Some(l), None) => vec![l],
            (None, Some(v)) if !v.is_empty() => v,
            _ => {
                return Err(ServeError::BadInput(
                    "give one of `label` and `labels`".into(),
                ));
            }
        };
        let request_id = f.request_id;
        let by = client.clone();
        app.submit(|reply| Work::Feedback {
            by,
            request_id,
            labels,
            reply,
        })
        .await
    }
    .await;
    let response = match result {
        Ok(n) => (StatusCode::OK, axum::Json(json!({ "accepted": n }))).into_response(),
        Err(e) => e.into_response(),
    };
    app.done("feedback", &client, response.status(), started);
    response
}

async fn reload(State(app): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    let started = Instant::now();
    let client = caller.name;
    let response = if !app.clients.is_admin(&client) {
        error(
            StatusCode::FORBIDDEN,
            "reload needs an admin client (admin = true)",
        )
    } else {
        let by = client.clone();
        match app.submit(|reply| Work::Reload { by, reply }).await {
            Ok(m) => (StatusCode::OK, axum::Json(json!({ "reloaded": m }))).into_response(),
            Err(e) => e.into_response(),
        }
    };
    app.done("reload", &client, response.status(), started);
    response
}

/// The dashboard's figures: admin clients only (incident evidence holds detector scores and
/// other clients' standing).
async fn status(State(app): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    if !app.clients.is_admin(&caller.name) {
        let r = error(
            StatusCode::FORBIDDEN,
            "the status needs an admin client (admin = true)",
        );
        app.done("status", &caller.name, r.status(), Instant::now());
        return r;
    }
    app.done("status", &caller.name, StatusCode::OK, Instant::now());
    let st = app.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let recent = app.alerter.recent();
    let clients = app.clients.standings();
    axum::Json(json!({
        "status": st,
        "recent": recent.iter().rev().collect::<Vec<_>>(),
        "clients": clients,
    }))
    .into_response()
}

async fn metrics(State(app): State<Shared>) -> Response {
    let mut r = app.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn readyz(State(app): State<Shared>) -> Response {
    let ready = app.status.lock().unwrap_or_else(|p| p.into_inner()).ready;
    if ready && !app.shutting_down.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

/// Every `check_seconds`: the 99th-percentile latency and the share of 5xx answers since the
/// last check, alerting above the configured limits.
pub async fn checks(app: Shared) {
    let every = std::time::Duration::from_secs(app.cfg.monitor.check_seconds);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut lat = std::mem::take(&mut *app.window.lock().unwrap_or_else(|p| p.into_inner()));
        let served = app.served.swap(0, Ordering::Relaxed);
        let failed = app.failed.swap(0, Ordering::Relaxed);
        let m = &app.cfg.monitor;
        let mut alerts = Vec::new();
        if !lat.is_empty() {
            lat.sort_by(f64::total_cmp);
            let p99 =
                lat[((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1] * 1000.0;
            if p99 > m.latency_p99_ms {
                alerts.push(
                    Alert::new(
                        Severity::Warning,
                        "latency",
                        format!(
                            "p99 latency {p99:.1} ms over the last {} predictions",
                            lat.len()
                        ),
                    )
                    .statistic("p99_ms", p99, m.latency_p99_ms),
                );
            }
        }
        if served > 0 {
            let rate = failed as f64 / served as f64;
            if rate > m.error_rate {
                alerts.push(
                    Alert::new(
                        Severity::High,
                        "error_rate",
                        format!("{failed} of {served} predictions failed"),
                    )
                    .statistic("error_rate", rate, m.error_rate),
                );
            }
        }
        for a in alerts {
            let alerter = app.alerter.clone();
            let _ = tokio::task::spawn_blocking(move || alerter.raise(a)).await;
        }
    }
}
