//! `rampart membership`: membership-inference attacks against an image model, its training
//! images (Fashion-MNIST's training split) against images it never saw (the test split), as
//! ROC area and true-positive rates at low false-positive rates: the loss threshold, and with
//! `--attack lira` the likelihood-ratio attack over shadow models trained with the target's
//! recipe.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::args::ModelArgs;
use super::observe::Progress;
use super::{CliError, CliResult, emit, note};
use crate::artifact::{AnyModel, ModelInfo};
use crate::data::Split;
use crate::device::DeviceChoice;
use crate::privacy::lira::{LiraError, Plan, scores};
use crate::privacy::membership::{LossJob, Losses, Separation, separation};
use crate::privacy::shadows::{ensure, shadow_config};
use crate::train::TrainError;
use crate::train::config::{DataConfig, TrainConfig};
use crate::train::observe::{Event, Observer};
use crate::workload::{Shard, Source, Workload, WorkloadSpec};

#[derive(Args, Debug)]
pub struct MembershipArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Fashion-MNIST directory (default: as for every command).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The first training image the model was trained on (its members start here).
    #[arg(long, default_value_t = 0)]
    pub member_offset: u64,
    /// Members and non-members each (the first ones of each split, from the offset).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// loss: the loss threshold; lira: also the likelihood-ratio attack (online and offline)
    /// over --shadows models trained with the target's recipe.
    #[arg(long, value_enum, default_value_t = AttackChoice::Loss)]
    pub attack: AttackChoice,
    /// LiRA: shadow models to train, even, 4 to 256 (in pairs: each candidate is IN for one
    /// of a pair).
    #[arg(long, default_value_t = 16)]
    pub shadows: usize,
    /// LiRA: where the shadow models are trained (shadow-K/); finished ones are reused and
    /// unfinished ones resumed.
    #[arg(long, required_if_eq("attack", "lira"))]
    pub shadow_dir: Option<PathBuf>,
    /// LiRA: the recipe the shadows train with (default: the training config recorded in the
    /// target model).
    #[arg(long)]
    pub shadow_config: Option<PathBuf>,
    /// LiRA: key of which shadows train on which candidate.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum AttackChoice {
    Loss,
    Lira,
}

/// One attack's result.
#[derive(Debug, Serialize)]
pub struct AttackResult {
    pub attack: &'static str,
    #[serde(flatten)]
    pub separation: Separation,
}

/// What `rampart membership` reports.
#[derive(Debug, Serialize)]
pub struct MembershipReport {
    pub model: ModelInfo,
    /// The strongest attack run (LiRA online when it ran), whose figures follow.
    pub attack: &'static str,
    pub members: usize,
    pub nonmembers: usize,
    #[serde(flatten)]
    pub separation: Separation,
    /// Every attack run: the loss threshold, then LiRA online and offline.
    pub attacks: Vec<AttackResult>,
    /// LiRA's shadow models.
    pub shadows: Option<usize>,
    /// Whether the members lie inside the training images the model's recorded config names
    /// (unknown without one); outside, the attack measures a model that never saw them.
    pub members_in_training_set: Option<bool>,
    pub member_accuracy: f64,
    pub nonmember_accuracy: f64,
    pub member_mean_loss: f64,
    pub nonmember_mean_loss: f64,
}

impl std::fmt::Display for MembershipReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: membership inference on {} members (training images) and {} non-members (test images)",
            self.model.path.display(),
            self.members,
            self.nonmembers
        )?;
        if self.members_in_training_set == Some(false) {
            writeln!(
                f,
                "note: these members lie outside the training images the model's config names"
            )?;
        }
        if let Some(k) = self.shadows {
            writeln!(f, "shadow models:      {k}")?;
        }
        for a in &self.attacks {
            writeln!(
                f,
                "{:<18}  ROC area {:.4} (0.5: no leak)   TPR at 0.1% FPR {:.4}   at 1% FPR {:.4}",
                a.attack, a.separation.auc, a.separation.tpr_at_0_1_fpr, a.separation.tpr_at_1_fpr
            )?;
        }
        writeln!(
            f,
            "accuracy:           members {:.2}%, non-members {:.2}%",
            100.0 * self.member_accuracy,
            100.0 * self.nonmember_accuracy
        )?;
        writeln!(
            f,
            "mean loss:          members {:.4}, non-members {:.4}",
            self.member_mean_loss, self.nonmember_mean_loss
        )
    }
}

/// Losses of `model` on the split; `verify` checks its signature with `--verify-key` (the
/// target's; shadows are the attacker's own, unsigned).
fn losses(
    args: &MembershipArgs,
    model: &Path,
    verify: bool,
    split: Split,
    offset: u64,
) -> Result<(Workload, Losses), CliError> {
    let spec = WorkloadSpec {
        model: model.to_path_buf(),
        open: args.model.open_options(),
        source: Source::FashionMnist {
            dir: args.data_dir.clone(),
            split,
        },
        device: args.device,
        offset: offset as usize,
        skip: 1,
        limit: Some(args.limit as usize),
        verify_key: args.model.verify_key.clone().filter(|_| verify),
        shard: Shard::default(),
    };
    let work = Workload::open(&spec)?;
    if !matches!(work.opened.model, AnyModel::Image { .. }) {
        return Err(CliError::Usage(format!(
            "{}: membership inference runs on image models (mlp, cnn) for now",
            model.display()
        )));
    }
    let found = work
        .run(
            LossJob {
                batch: args.batch as usize,
            },
            None,
        )?
        .map_err(CliError::Usage)?;
    Ok((work, found))
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64
}

fn accuracy(v: &[bool]) -> f64 {
    v.iter().filter(|&&c| c).count() as f64 / v.len().max(1) as f64
}

const LOSS: &str = "loss threshold (Yeom et al. 2018)";

/// The attacker's score of the loss attack: the logit-scaled confidence (a member's loss is
/// lower).
fn score(l: &Losses) -> Vec<f64> {
    l.phi.iter().map(|&x| f64::from(x)).collect()
}

/// φ of members then non-members.
fn candidates(args: &MembershipArgs, model: &Path) -> Result<Vec<f32>, CliError> {
    let (_, members) = losses(args, model, false, Split::Train, args.member_offset)?;
    let (_, nonmembers) = losses(args, model, false, Split::Test, 0)?;
    Ok([members.phi, nonmembers.phi].concat())
}

pub fn run(args: MembershipArgs) -> CliResult {
    let target = &args.model.model;
    let (work, members) = losses(&args, target, true, Split::Train, args.member_offset)?;
    note(&format!("device: {}", work.device.description));
    let (_, nonmembers) = losses(&args, target, true, Split::Test, 0)?;
    let metadata = match &work.opened.model {
        AnyModel::Image { metadata, .. } => Some(metadata.clone()),
        _ => None,
    };
    let recorded = metadata.and_then(|m| m.config());
    let members_in_training_set = recorded.as_ref().map(|c| match &c.data {
        DataConfig::FashionMnist(d) => {
            args.member_offset as usize + members.phi.len() <= d.train_limit.unwrap_or(usize::MAX)
        }
        _ => false,
    });
    let mut attacks = vec![AttackResult {
        attack: LOSS,
        separation: separation(&score(&members), &score(&nonmembers)),
    }];
    if args.attack == AttackChoice::Lira {
        let (m, n) = (members.phi.len(), nonmembers.phi.len());
        if m != n {
            let e = LiraError::Unbalanced {
                members: m,
                nonmembers: n,
            };
            return Err(CliError::Usage(e.to_string()));
        }
        let phi = [members.phi.clone(), nonmembers.phi.clone()].concat();
        attacks.extend(lira(&args, recorded, &phi, m)?);
    }
    let best = attacks.len() - if attacks.len() > 1 { 2 } else { 1 };
    let report = MembershipReport {
        model: work.model_info(),
        attack: attacks[best].attack,
        members: members.loss.len(),
        nonmembers: nonmembers.loss.len(),
        separation: attacks[best].separation,
        attacks,
        shadows: (args.attack == AttackChoice::Lira).then_some(args.shadows),
        members_in_training_set,
        member_accuracy: accuracy(&members.correct),
        nonmember_accuracy: accuracy(&nonmembers.correct),
        member_mean_loss: mean(&members.loss),
        nonmember_mean_loss: mean(&nonmembers.loss),
    };
    emit(&report, args.json)
}

/// Trains (or finds) the shadows, measures φ of each on the candidates, and scores the
/// target's `phi` (`count` members, then as many non-members).
fn lira(
    args: &MembershipArgs,
    recorded: Option<TrainConfig>,
    phi: &[f32],
    count: usize,
) -> Result<Vec<AttackResult>, CliError> {
    let recipe = match &args.shadow_config {
        Some(path) => TrainConfig::from_toml_file(path).map_err(TrainError::from)?,
        None => recorded.ok_or_else(|| {
            CliError::Usage(format!(
                "{} records no training config; give the shadows' recipe with --shadow-config",
                args.model.model.display()
            ))
        })?,
    };
    let dir = args.shadow_dir.clone().unwrap_or_default();
    let plan = Plan::new(args.shadows, args.seed, args.member_offset as usize, count)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    // The target and the recipe's file are read: no shadow may be written over them.
    let inputs: Vec<PathBuf> = std::iter::once(args.model.model.clone())
        .chain(args.shadow_config.clone())
        .collect();
    let mut shadows = Vec::with_capacity(plan.shadows);
    for k in 0..plan.shadows {
        let cfg = shadow_config(&recipe, k, &dir, args.device, args.data_dir.as_deref());
        let mut progress = Progress::default();
        let mut lines = ShadowLines {
            k,
            of: plan.shadows,
        };
        let path = ensure(&plan, k, &cfg, &inputs, &mut [&mut progress, &mut lines])
            .map_err(|e| CliError::Usage(e.to_string()))?;
        shadows.push(candidates(args, &path)?);
        note(&format!(
            "shadow {}/{}: {}",
            k + 1,
            plan.shadows,
            path.display()
        ));
    }
    let s = scores(phi, &shadows, &plan.table()).map_err(|e| CliError::Usage(e.to_string()))?;
    let split = |v: &[f64]| separation(&v[..count], &v[count..]);
    Ok(vec![
        AttackResult {
            attack: "LiRA online (Carlini et al. 2022)",
            separation: split(&s.online),
        },
        AttackResult {
            attack: "LiRA offline",
            separation: split(&s.offline),
        },
    ])
}

/// A line on standard error per shadow epoch.
struct ShadowLines {
    k: usize,
    of: usize,
}

impl Observer for ShadowLines {
    fn on(&mut self, event: &Event<'_>) -> Result<(), TrainError> {
        if let Event::EpochDone {
            metrics, epochs, ..
        } = event
        {
            note(&format!(
                "shadow {}/{}: epoch {}/{epochs}, eval accuracy {:.2}%",
                self.k + 1,
                self.of,
                metrics.epoch,
                100.0 * metrics.eval_accuracy
            ));
        }
        Ok(())
    }
}
