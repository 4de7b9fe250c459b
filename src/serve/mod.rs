//! `rampart serve`: a monitored inference service. One model thread ([`worker`]) owns the
//! models on the device and every monitor; the HTTP side ([`http`], axum on tokio) checks
//! keys, rate limits and inputs, queues requests to it and shapes the answers. Alerts go to
//! the hash-chained incident log ([`incidents`]) before the response that caused them, and
//! then to webhooks ([`alerts`]).

pub mod alerts;
pub mod clients;
pub mod config;
pub mod engine;
pub mod http;
pub mod incidents;
pub mod input;
pub mod metrics;
pub mod report;
pub mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::artifact::ArtifactError;
use crate::artifact::files::{FileError, OutputKind, Outputs};
use crate::detect::store::StoreError;
use crate::detect::{DetectError, RunError};
use alerts::{Alert, Alerter, Dispatcher, Severity};
use config::ServeConfig;
use metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Incident(#[from] incidents::IncidentError),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Overloaded(String),
    #[error("model: {0}")]
    Model(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl From<RunError> for ServeError {
    fn from(e: RunError) -> Self {
        ServeError::Model(e.to_string())
    }
}

/// Starts the service and serves until SIGINT or SIGTERM; `listening` is told the address once
/// the socket is bound (port 0 picks a free one).
pub fn run(
    cfg: ServeConfig,
    listening: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    cfg.check()?;
    if let Some(key) = &cfg.decrypt_key
        && std::env::var_os(crate::artifact::sealed::KEY_FILE_ENV).is_none()
    {
        crate::artifact::sealed::use_key_file(key);
    }
    let mut outputs = Outputs::new();
    outputs.inputs(&worker::model_files(&cfg));
    outputs.output(&cfg.incident_log, "incident_log", OutputKind::IncidentLog)?;
    let cfg = Arc::new(cfg);
    let metrics = Metrics::new();
    let log = incidents::IncidentLog::open(&cfg.incident_log)?;
    let dispatcher = Dispatcher::start(cfg.webhooks.clone(), metrics.clone());
    let alerter = Arc::new(Alerter::new(
        log,
        dispatcher,
        metrics.clone(),
        "rampart".into(),
    ));
    let device = crate::device::choose(cfg.device).map_err(ServeError::Config)?;
    let clients = Arc::new(clients::Clients::new(&cfg.clients));
    let status = Arc::new(Mutex::new(worker::Status::default()));
    let worker = match worker::Worker::start(
        cfg.clone(),
        device.clone(),
        alerter.clone(),
        metrics.clone(),
        clients.clone(),
        status.clone(),
    ) {
        Ok(w) => w,
        Err(e) => {
            alerter.raise(
                Alert::new(
                    Severity::Critical,
                    "start_refused",
                    format!("the service did not start: {e}"),
                )
                .action("refused to start"),
            )?;
            return Err(e);
        }
    };
    let schema = worker.schema();
    let class_names = worker.class_names();
    let st = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    alerter.raise(
        Alert::new(Severity::Info, "start", format!("serving {} on {}", st.active, cfg.listen))
            .action("started")
            .evidence(json!({
                "models": st.models.iter().map(|m| json!({ "name": m.name, "sha256": m.sha256, "role": m.role })).collect::<Vec<_>>(),
                "device": device.description,
                "verify_key": cfg.verify_key,
            })),
    )?;
    let (tx, rx) = std::sync::mpsc::sync_channel(cfg.batch.queue);
    std::thread::Builder::new()
        .name("rampart-model".into())
        .spawn(move || worker.run(rx))
        .map_err(|e| ServeError::Model(format!("cannot start the model thread: {e}")))?;
    let app = Arc::new(http::App {
        tx,
        clients,
        metrics,
        alerter: alerter.clone(),
        status,
        cfg: cfg.clone(),
        schema,
        class_names,
        shutting_down: AtomicBool::new(false),
        window: Mutex::new(Vec::new()),
        served: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ServeError::Model(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: cfg.listen,
                source,
            })?;
        listening(listener.local_addr().unwrap_or(cfg.listen));
        tokio::spawn(http::checks(app.clone()));
        let router = http::router(app.clone());
        let stop = app.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                stop.shutting_down
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            })
            .await
            .map_err(|source| ServeError::Listen {
                addr: cfg.listen,
                source,
            })
    })?;
    alerter.raise(Alert::new(Severity::Info, "stop", "stopped on a signal").action("stopped"))?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
