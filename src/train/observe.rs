//! Training events and the observers that receive them. The loop never prints: the command
//! line attaches a progress bar and a console printer, the library a metrics log, and a
//! service can attach its own.

use super::TrainError;
use super::metrics::EpochMetrics;

/// A running figure of the epoch in progress (read from the device every few batches).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Running {
    pub loss: f64,
    pub accuracy: f64,
    pub examples_per_sec: f64,
}

/// Something the trainer did.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The run starts (or resumes after `resumed_after` epochs).
    Started {
        device: &'a str,
        dataset: &'a str,
        train_examples: usize,
        eval_examples: usize,
        resumed_after: Option<usize>,
    },
    /// An epoch of `batches` batches starts (1-based `epoch` of `epochs`).
    EpochStarted {
        epoch: usize,
        epochs: usize,
        batches: usize,
    },
    /// `done` batches of the epoch are finished; `running` every few batches.
    Batch {
        done: usize,
        running: Option<Running>,
    },
    /// An epoch was kept; `history` holds every kept epoch, this one last.
    EpochDone {
        metrics: &'a EpochMetrics,
        epochs: usize,
        history: &'a [EpochMetrics],
    },
    /// Something the run decided on its own (a rollback, a recovery).
    Note(&'a str),
    /// The model was written.
    Saved { path: &'a std::path::Path },
}

/// Receives training events; an error stops the run.
pub trait Observer {
    fn on(&mut self, event: &Event<'_>) -> Result<(), TrainError>;
}
