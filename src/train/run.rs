//! The epoch loop shared by every task: seeding, shuffling, the learning-rate schedule, the
//! optimiser step, the divergence check, evaluation, epoch policies, checkpoints, resume.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::metrics::{EpochMetrics, MetricsLog};
use super::objective::{self, Epoch, Objective};
use super::observe::{Event, Observer, Running};
use super::policy::{self, Action, EpochAttack, Review};
use super::step::Stepper;
use super::task::Task;
use super::{TrainError, TrainReport, build_optimizer, checkpoint};
use crate::artifact::files::{OutputKind, Outputs, RunLock};
use crate::artifact::metadata::{Metadata, TrainSummary};
use crate::attack::{Method, Pgd, Tally, worst_case};
use crate::classifier::{Classifier, Input};
use crate::device::Chosen;
use crate::eval::{self, Evaluation};
use crate::privacy::accountant::Guarantee;
use crate::privacy::dpsgd::DpSgd;
use crate::train::config::{Privacy, TrainConfig};
use crate::workload::Examples;

/// DP-SGD's sampling rate q: the expected batch size over the training examples.
fn sampling_rate(cfg: &TrainConfig, n: usize) -> f64 {
    (cfg.batch_size as f64 / n.max(1) as f64).min(1.0)
}

/// A run in progress.
struct Run<'a, T: Task<D>, const D: usize> {
    task: &'a T,
    objective: &'a dyn Objective<T, D>,
    cfg: &'a TrainConfig,
    device: Device,
    /// Data-parallel replicas' devices, the main device first (one entry: no replicas).
    replicas: Vec<Device>,
    description: String,
    optim: ModuleOptimizer,
    history: Vec<EpochMetrics>,
    /// The attack the next epoch trains against.
    attack: Option<EpochAttack>,
    /// A note for the next kept epoch (a rollback that led to it).
    pending_note: Option<String>,
    /// Rewrites `metrics.jsonl` after every kept epoch.
    log: MetricsLog,
}

/// Sends `event` to the metrics log and to every observer.
fn tell(
    log: &mut MetricsLog,
    observers: &mut [&mut dyn Observer],
    event: Event<'_>,
) -> Result<(), TrainError> {
    log.on(&event)?;
    observers.iter_mut().try_for_each(|o| o.on(&event))
}

/// Loss and accuracy of an epoch's training forward passes.
struct Stats {
    loss: f64,
    accuracy: f64,
    lr: f64,
    examples_per_sec: f64,
}

pub(super) fn run<T: Task<D>, const D: usize>(
    task: &T,
    objective: &dyn Objective<T, D>,
    cfg: &TrainConfig,
    inputs: &[PathBuf],
    resume: bool,
    chosen: &Chosen,
    observers: &mut [&mut dyn Observer],
) -> Result<TrainReport, TrainError> {
    if task.train_len() == 0 || task.eval_len() == 0 {
        return Err(TrainError::Invalid(format!(
            "{} training and {} evaluation examples: both sets need at least one",
            task.train_len(),
            task.eval_len()
        )));
    }
    if let Privacy::DpSgd(d) = cfg.privacy
        && d.delta >= 1.0 / task.train_len() as f64
    {
        return Err(TrainError::Invalid(format!(
            "delta {} is not below 1 / {} training examples: such a guarantee allows one example to leak whole; use a delta below {:.1e}",
            d.delta,
            task.train_len(),
            0.1 / task.train_len() as f64
        )));
    }
    let _lock = RunLock::take(&cfg.out)?;
    let mut guard = Outputs::new();
    guard.inputs(&task.files());
    guard.inputs(inputs);
    guard.output(
        &cfg.model_path(),
        "out (model.safetensors)",
        OutputKind::Safetensors,
    )?;
    guard.output(
        &cfg.metrics_path(),
        "out (metrics.jsonl)",
        OutputKind::Jsonl,
    )?;
    let (mut run, mut model) = Run::start(task, objective, cfg, resume, chosen)?;
    run.replicas = crate::device::replicas(chosen, cfg.replicas).map_err(TrainError::Device)?;
    tell(
        &mut run.log,
        observers,
        Event::Started {
            device: &chosen.description,
            dataset: &task.data_name(),
            train_examples: task.train_len(),
            eval_examples: task.eval_len(),
            resumed_after: resume.then_some(run.history.len()),
        },
    )?;
    if run.history.len() >= cfg.epochs {
        return run.recover(model, observers);
    }
    while run.history.len() < cfg.epochs {
        model = run.epoch(model, observers)?;
    }
    run.finish(model, observers)
}

impl<'a, T: Task<D>, const D: usize> Run<'a, T, D> {
    /// A fresh model (refusing to clobber an earlier run's files) or the checkpoint's.
    fn start(
        task: &'a T,
        objective: &'a dyn Objective<T, D>,
        cfg: &'a TrainConfig,
        resume: bool,
        chosen: &Chosen,
    ) -> Result<(Self, T::Model), TrainError> {
        let device = chosen.device.clone();
        device.seed(cfg.seed);
        let mut model = task.init(&device.clone().autodiff());
        let mut optim = build_optimizer(&cfg.optimizer);
        let dir = cfg.checkpoint_dir();
        let mut history = Vec::new();
        let mut chose = None;
        if resume {
            let state = checkpoint::read(&dir, cfg)?;
            model = checkpoint::load_model(model, &dir)?;
            optim = checkpoint::load_optim(optim, &dir)?;
            chose = state.next_attack.or_else(|| {
                let logged = state.history.last()?.next_attack.as_deref()?;
                EpochAttack::parse_logged(logged)
            });
            history = state.history;
        } else {
            refuse_earlier_run(cfg)?;
            if let Some(path) = &cfg.init {
                model = task.load(path, &device.clone().autodiff())?;
            }
        }
        let run = Self {
            task,
            objective,
            cfg,
            replicas: vec![device.clone()],
            device,
            description: chosen.description.clone(),
            optim,
            history,
            attack: objective::first_attack(&cfg.mode, chose),
            pending_note: None,
            log: MetricsLog {
                path: cfg.metrics_path(),
            },
        };
        Ok((run, model))
    }

    /// Trains one epoch, reviews it, and keeps it (checkpoint, metrics) or rolls it back;
    /// returns the model to go on with.
    fn epoch(
        &mut self,
        model: T::Model,
        observers: &mut [&mut dyn Observer],
    ) -> Result<T::Model, TrainError> {
        let index = self.history.len();
        let epsilon = self.cfg.mode.epsilon_at(index);
        let plan = Epoch {
            epsilon,
            attack: match (self.attack, epsilon) {
                (Some(a), Some(e)) => Some(a.at(&self.cfg.mode, e).map_err(invalid)?),
                _ => None,
            },
        };
        let started = Instant::now();
        let (model, stats) = self.train_epoch(model, index, &plan, observers)?;
        let seconds_training = started.elapsed().as_secs_f64();
        if !stats.loss.is_finite() {
            return Err(self.diverged(index, stats.loss));
        }
        let valid = model.valid();
        let (view, examples) = self.task.evaluation(&valid);
        let evaluation = eval::evaluate(&view, &examples, 512);
        let held_out = self.cfg.mode.robust_eval_size().min(examples.inputs.len());
        let measure =
            |attack: Pgd| robust_accuracy(&view, &examples, held_out, Method::Pgd(attack));
        let mut metrics = self.metrics(index, &stats, &evaluation, seconds_training, &plan);
        if let (Some(e), true) = (epsilon, held_out > 0) {
            let robust = measure(pgd10(e)?);
            metrics.robust_accuracy = Some(robust);
            let review = Review {
                mode: &self.cfg.mode,
                epoch: index,
                attack: self.attack,
                epsilon: e,
                next_epsilon: self.cfg.mode.epsilon_at(index + 1).unwrap_or(e),
                robust,
                history: &self.history,
                measure: &measure,
            };
            for policy in policy::for_mode(&self.cfg.mode) {
                let verdict = policy.review(&review);
                metrics.candidates = metrics.candidates.or(verdict.candidates);
                metrics.fgsm_accuracy = metrics.fgsm_accuracy.or(verdict.fgsm_accuracy);
                match verdict.action {
                    Action::Continue => {}
                    Action::Switch(a) => self.attack = Some(a),
                    Action::RollBack { to, note } => return self.roll_back(to, &note, observers),
                }
            }
        }
        metrics.next_attack = self.attack.map(|a| a.name(&self.cfg.mode));
        metrics.seconds = started.elapsed().as_secs_f64();
        if let Some(note) = self.pending_note.take() {
            metrics.event = Some(note);
        }
        self.keep(&model, metrics, observers)?;
        Ok(model)
    }

    /// The batch loop of epoch `index` (0-based).
    fn train_epoch(
        &mut self,
        mut model: T::Model,
        index: usize,
        plan: &Epoch,
        observers: &mut [&mut dyn Observer],
    ) -> Result<(T::Model, Stats), TrainError> {
        let (cfg, task) = (self.cfg, self.task);
        let n = task.train_len();
        let batches = n.div_ceil(cfg.batch_size);
        let total_steps = (cfg.epochs * batches) as f64;
        // Every epoch draws from its own seed: a resumed run replays exactly.
        self.device.seed(cfg.seed.wrapping_add(1 + index as u64));
        for (r, d) in self.replicas.iter().enumerate().skip(1) {
            if *d != self.device {
                d.seed(cfg.seed.wrapping_add(1 + index as u64) ^ ((r as u64) << 48));
            }
        }
        let plans = self.batches(index, n, batches);
        let epoch = index + 1;
        tell(
            &mut self.log,
            observers,
            Event::EpochStarted {
                epoch,
                epochs: cfg.epochs,
                batches,
            },
        )?;
        let started = Instant::now();
        let mut loss_sum = Tensor::<1>::zeros([1], &self.device);
        let mut correct = Tensor::<1>::zeros([1], &self.device);
        // The loss and hit sums as last read back (none without batches).
        let mut sums = [0.0f64; 2];
        let mut lr = cfg.lr_at(index, 0.0);
        let mut seen = 0usize;
        let stepper = Stepper {
            task,
            objective: self.objective,
            device: &self.device,
            replicas: &self.replicas,
            private: self.private(),
        };
        for (b, rows) in plans.iter().enumerate() {
            lr = cfg.lr_at(index, (index * batches + b) as f64 / total_steps);
            // A Poisson batch can be empty: the step is skipped (and still counted as spent).
            if !rows.is_empty() {
                let (stepped, loss, hits) = stepper.step(&mut self.optim, model, rows, plan, lr);
                model = stepped;
                loss_sum = loss_sum + loss;
                correct = correct + hits;
                seen += rows.len();
            }
            // One read-back every 20 batches for the running figures (the last one also
            // gives the epoch's).
            let running = (b % 20 == 19 || b + 1 == batches).then(|| {
                let seen = seen.max(1) as f64;
                sums = read_sums(&loss_sum, &correct);
                let [loss, hits] = sums;
                Running {
                    loss: loss / seen,
                    accuracy: hits / seen,
                    examples_per_sec: seen / started.elapsed().as_secs_f64(),
                }
            });
            tell(
                &mut self.log,
                observers,
                Event::Batch {
                    done: b + 1,
                    running,
                },
            )?;
        }
        let n = seen.max(1);
        let [loss, hits] = sums;
        let stats = Stats {
            loss: loss / n as f64,
            accuracy: hits / n as f64,
            lr,
            examples_per_sec: n as f64 / started.elapsed().as_secs_f64(),
        };
        Ok((model, stats))
    }

    /// The epoch's batches: the shuffled rows in chunks of the batch size, or for DP-SGD
    /// `batches` Poisson samples at rate batch_size / n (what the accountant assumes).
    fn batches(&self, index: usize, n: usize, batches: usize) -> Vec<Vec<usize>> {
        let cfg = self.cfg;
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ (index as u64) << 32);
        if self.private().is_some() {
            let q = sampling_rate(cfg, n);
            return crate::privacy::dpsgd::poisson_batches(n, q, batches, &mut rng);
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        order
            .chunks(cfg.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// DP-SGD's parameters, when the run is private.
    fn private(&self) -> Option<DpSgd> {
        match self.cfg.privacy {
            Privacy::DpSgd(d) => Some(DpSgd {
                clip_norm: d.clip_norm,
                noise_multiplier: d.noise_multiplier,
                expected_batch: self.cfg.batch_size as f64,
            }),
            Privacy::None => None,
        }
    }

    /// What a private run guarantees after `epochs` epochs.
    fn guarantee(&self, epochs: usize) -> Option<Guarantee> {
        let Privacy::DpSgd(d) = self.cfg.privacy else {
            return None;
        };
        let n = self.task.train_len();
        let steps = (epochs * n.div_ceil(self.cfg.batch_size)) as u64;
        Some(Guarantee::after(
            sampling_rate(self.cfg, n),
            d.noise_multiplier,
            d.clip_norm,
            steps,
            d.delta,
        ))
    }

    fn diverged(&self, index: usize, loss: f64) -> TrainError {
        let dir = self.cfg.checkpoint_dir();
        let kept = if self.history.is_empty() {
            "No epoch finished, so there is no checkpoint to keep.".to_string()
        } else {
            format!(
                "The last good checkpoint (epoch {}) is kept in {}.",
                self.history.len(),
                dir.display()
            )
        };
        TrainError::Diverged {
            epoch: index + 1,
            loss,
            kept,
        }
    }

    /// The metrics of a trained epoch, before review.
    fn metrics(
        &self,
        index: usize,
        stats: &Stats,
        evaluation: &Evaluation,
        seconds: f64,
        plan: &Epoch,
    ) -> EpochMetrics {
        let mode = &self.cfg.mode;
        let attack = match mode {
            crate::train::config::Mode::Trades(t) => Some(format!("trades-kl-pgd{}", t.steps)),
            _ => self.attack.map(|a| a.name(mode)),
        };
        EpochMetrics {
            epoch: index + 1,
            lr: stats.lr,
            train_loss: stats.loss,
            train_accuracy: stats.accuracy,
            eval_accuracy: evaluation.accuracy,
            eval_examples: evaluation.examples,
            images_per_sec: stats.examples_per_sec,
            seconds,
            epsilon: plan.epsilon,
            attack,
            robust_accuracy: None,
            fgsm_accuracy: None,
            candidates: None,
            next_attack: None,
            event: None,
            privacy: self.guarantee(index + 1),
        }
    }

    /// Discards the epoch: restores the last checkpoint's model and optimiser and trains the
    /// epoch again against `to`.
    fn roll_back(
        &mut self,
        to: EpochAttack,
        note: &str,
        observers: &mut [&mut dyn Observer],
    ) -> Result<T::Model, TrainError> {
        let dir = self.cfg.checkpoint_dir();
        let fresh = self.task.init(&self.device.clone().autodiff());
        let model = checkpoint::load_model(fresh, &dir)?;
        self.optim = checkpoint::load_optim(build_optimizer(&self.cfg.optimizer), &dir)?;
        self.attack = Some(to);
        self.pending_note = Some(note.to_string());
        tell(&mut self.log, observers, Event::Note(note))?;
        Ok(model)
    }

    /// Keeps an epoch: history, checkpoint, observers.
    fn keep(
        &mut self,
        model: &T::Model,
        metrics: EpochMetrics,
        observers: &mut [&mut dyn Observer],
    ) -> Result<(), TrainError> {
        self.history.push(metrics);
        let dir = self.cfg.checkpoint_dir();
        checkpoint::write(
            &dir,
            model,
            &self.optim,
            self.cfg,
            &self.history,
            self.attack,
        )?;
        let last = self.history.len() - 1;
        tell(
            &mut self.log,
            observers,
            Event::EpochDone {
                metrics: &self.history[last],
                epochs: self.cfg.epochs,
                history: &self.history,
            },
        )
    }

    fn summary(&self) -> TrainSummary {
        let last = self.history.last();
        TrainSummary {
            dataset: Some(self.task.data_name()),
            train_examples: Some(self.task.train_len()),
            device: Some(self.description.clone()),
            epochs: Some(self.history.len()),
            final_eval_accuracy: last.map(|m| m.eval_accuracy),
            eval_examples: last.map(|m| m.eval_examples),
            final_robust_accuracy: last.and_then(|m| m.robust_accuracy),
            privacy: last.and_then(|m| m.privacy),
            train_seconds: Some(self.history.iter().map(|m| m.seconds).sum()),
        }
    }

    /// Writes the final model.
    fn finish(
        mut self,
        model: T::Model,
        observers: &mut [&mut dyn Observer],
    ) -> Result<TrainReport, TrainError> {
        let path = self.cfg.model_path();
        let metadata = Metadata::trained(self.cfg, &self.summary());
        self.task.save(&model.valid(), &metadata, &path)?;
        tell(&mut self.log, observers, Event::Saved { path: &path })?;
        Ok(TrainReport {
            model_path: path,
            history: self.history,
            device: self.description,
            train_examples: self.task.train_len(),
            dataset: self.task.data_name(),
        })
    }

    /// A resumed run that had already finished: its model is written from the checkpoint if
    /// it is missing (a failed final write); otherwise there is nothing to do.
    fn recover(
        mut self,
        model: T::Model,
        observers: &mut [&mut dyn Observer],
    ) -> Result<TrainReport, TrainError> {
        let path = self.cfg.model_path();
        if path.exists() {
            return Err(TrainError::Checkpoint {
                path: self.cfg.checkpoint_dir().join("state.json"),
                reason: format!(
                    "the run already finished {} of {} epochs; raise --epochs to train further",
                    self.history.len(),
                    self.cfg.epochs
                ),
            });
        }
        let note = format!(
            "the run had finished {} epochs but {} was missing; writing it from the checkpoint",
            self.history.len(),
            path.display()
        );
        tell(&mut self.log, observers, Event::Note(&note))?;
        self.finish(model, observers)
    }
}

/// L∞ PGD-10 with random start and step epsilon/4: the per-epoch robustness check.
fn pgd10(epsilon: f64) -> Result<Pgd, TrainError> {
    Pgd::new(crate::attack::Norm::Linf, epsilon, 10)
        .and_then(|p| p.with_alpha(epsilon / 4.0))
        .map_err(invalid)
}

fn invalid(e: crate::attack::AttackError) -> TrainError {
    TrainError::Invalid(e.to_string())
}

/// Robust accuracy under `attack` on the first `size` examples, in batches of 256.
fn robust_accuracy<const D: usize, C: Classifier<D>>(
    model: &C,
    examples: &Examples<C::Input>,
    size: usize,
    attack: Method,
) -> f64 {
    let n = size.min(examples.inputs.len());
    let mut tally = Tally::new(1, &examples.labels.device());
    for start in (0..n).step_by(256) {
        let end = (start + 256).min(n);
        let x = examples.inputs.range(start, end);
        let y = examples.labels.clone().narrow(0, start, end - start);
        tally.add(&worst_case(model, &x, &y, &[attack], 1, None));
    }
    tally.read().robust as f64 / n.max(1) as f64
}

/// Refuses a fresh run where an earlier run left its files.
fn refuse_earlier_run(cfg: &TrainConfig) -> Result<(), TrainError> {
    let dir = cfg.checkpoint_dir();
    if dir.exists() || dir.with_extension("old").exists() {
        return Err(TrainError::Checkpoint {
            path: dir,
            reason: "a checkpoint from an earlier run is here: pass --resume to continue it, or choose another --out".into(),
        });
    }
    for path in [cfg.metrics_path(), cfg.model_path()] {
        if path.exists() {
            return Err(TrainError::Checkpoint {
                path,
                reason: "an earlier run's file is here: pass --resume to continue that run, or choose another --out".into(),
            });
        }
    }
    Ok(())
}

/// The epoch's loss and hit sums (`[1]` each, on the device) in one read-back.
fn read_sums(loss: &Tensor<1>, hits: &Tensor<1>) -> [f64; 2] {
    let both = Tensor::cat(vec![loss.clone(), hits.clone()], 0).into_data();
    match both.convert::<f32>().try_to_vec::<f32>().as_deref() {
        Ok([loss, hits]) => [*loss as f64, *hits as f64],
        _ => [f64::NAN; 2],
    }
}
