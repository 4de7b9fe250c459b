//! Observers of training for the terminal: a progress bar per epoch (standard error) and a
//! line per epoch (standard output).

use indicatif::{ProgressBar, ProgressStyle};

use super::{note, print};
use crate::train::TrainError;
use crate::train::observe::{Event, Observer};

/// A progress bar over an epoch's batches with the running loss, accuracy and speed.
#[derive(Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Observer for Progress {
    fn on(&mut self, event: &Event<'_>) -> Result<(), TrainError> {
        match event {
            Event::EpochStarted {
                epoch,
                epochs,
                batches,
            } => {
                let bar = ProgressBar::new(*batches as u64);
                if let Ok(style) = ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} batches {msg} ({elapsed} < {eta})",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(format!("epoch {epoch}/{epochs}"));
                self.bar = Some(bar);
            }
            Event::Batch { done, running } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(*done as u64);
                    if let Some(r) = running {
                        bar.set_message(format!(
                            "loss {:.4} acc {:.2}% {:.0} ex/s",
                            r.loss,
                            100.0 * r.accuracy,
                            r.examples_per_sec
                        ));
                    }
                }
            }
            Event::EpochDone { .. } | Event::Note(_) | Event::Saved { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
            Event::Started { .. } => {}
        }
        Ok(())
    }
}

/// The run's setting and notes on standard error, one line per kept epoch on standard output.
pub struct Console;

impl Observer for Console {
    fn on(&mut self, event: &Event<'_>) -> Result<(), TrainError> {
        match event {
            Event::Started {
                device,
                dataset,
                train_examples,
                eval_examples,
                resumed_after,
            } => {
                note(&format!("device: {device}"));
                note(&format!(
                    "data: {train_examples} training examples from {dataset}, {eval_examples} evaluation examples"
                ));
                if let Some(done) = resumed_after {
                    note(&format!("resuming after epoch {done}"));
                }
            }
            Event::EpochDone {
                metrics: m, epochs, ..
            } => {
                let mut line = format!(
                    "epoch {}/{}: loss {:.4}  train acc {:.2}%  eval acc {:.2}% ({} examples)  {:.0} ex/s  {:.1}s\n",
                    m.epoch,
                    epochs,
                    m.train_loss,
                    100.0 * m.train_accuracy,
                    100.0 * m.eval_accuracy,
                    m.eval_examples,
                    m.images_per_sec,
                    m.seconds
                );
                if let (Some(r), Some(e)) = (m.robust_accuracy, m.epsilon) {
                    line.push_str(&format!(
                        "          {}: epsilon {e:.4}, PGD-10 robust accuracy {:.2}%{}\n",
                        m.attack.as_deref().unwrap_or(""),
                        100.0 * r,
                        m.candidates
                            .as_ref()
                            .map(|c| format!(
                                "; next epoch: {} ({c:?})",
                                m.next_attack.as_deref().unwrap_or("")
                            ))
                            .unwrap_or_default()
                    ));
                }
                // A closed standard output does not stop training.
                let _ = print(&line);
            }
            Event::Note(text) => note(text),
            Event::Saved { .. } | Event::EpochStarted { .. } | Event::Batch { .. } => {}
        }
        Ok(())
    }
}
