//! `rampart membership`: the loss-threshold membership-inference attack against an image
//! model, its training images (Fashion-MNIST's training split) against images it never saw
//! (the test split), as ROC area and true-positive rates at low false-positive rates.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::args::ModelArgs;
use super::{CliError, CliResult, emit, note};
use crate::artifact::ModelInfo;
use crate::data::Split;
use crate::device::DeviceChoice;
use crate::privacy::membership::{LossJob, Losses, Separation, separation};
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
    #[arg(long)]
    pub json: bool,
}

/// What `rampart membership` reports.
#[derive(Debug, Serialize)]
pub struct MembershipReport {
    pub model: ModelInfo,
    pub attack: &'static str,
    pub members: usize,
    pub nonmembers: usize,
    #[serde(flatten)]
    pub separation: Separation,
    pub member_accuracy: f64,
    pub nonmember_accuracy: f64,
    pub member_mean_loss: f64,
    pub nonmember_mean_loss: f64,
}

impl std::fmt::Display for MembershipReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} on {} members (training images) and {} non-members (test images)",
            self.model.path.display(),
            self.attack,
            self.members,
            self.nonmembers
        )?;
        writeln!(
            f,
            "ROC area:           {:.4} (0.5: no leak)",
            self.separation.auc
        )?;
        writeln!(
            f,
            "TPR at 0.1% FPR:    {:.4}   at 1% FPR: {:.4}",
            self.separation.tpr_at_0_1_fpr, self.separation.tpr_at_1_fpr
        )?;
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

fn losses(
    args: &MembershipArgs,
    split: Split,
    offset: u64,
) -> Result<(Workload, Losses), CliError> {
    let spec = WorkloadSpec {
        model: args.model.model.clone(),
        open: args.model.open_options(),
        source: Source::FashionMnist {
            dir: args.data_dir.clone(),
            split,
        },
        device: args.device,
        offset: offset as usize,
        skip: 1,
        limit: Some(args.limit as usize),
        verify_key: args.model.verify_key.clone(),
        shard: Shard::default(),
    };
    let work = Workload::open(&spec)?;
    if !matches!(work.opened.model, crate::artifact::AnyModel::Image { .. }) {
        return Err(CliError::Usage(format!(
            "{}: membership inference runs on image models (mlp, cnn) for now",
            args.model.model.display()
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

pub fn run(args: MembershipArgs) -> CliResult {
    let (work, members) = losses(&args, Split::Train, args.member_offset)?;
    note(&format!("device: {}", work.device.description));
    let (_, nonmembers) = losses(&args, Split::Test, 0)?;
    // The attacker's score: the logit-scaled confidence (a member's loss is lower).
    let score = |l: &Losses| -> Vec<f64> { l.phi.iter().map(|&x| f64::from(x)).collect() };
    let report = MembershipReport {
        model: work.model_info(),
        attack: "loss threshold (Yeom et al. 2018)",
        members: members.loss.len(),
        nonmembers: nonmembers.loss.len(),
        separation: separation(&score(&members), &score(&nonmembers)),
        member_accuracy: accuracy(&members.correct),
        nonmember_accuracy: accuracy(&nonmembers.correct),
        member_mean_loss: mean(&members.loss),
        nonmember_mean_loss: mean(&nonmembers.loss),
    };
    emit(&report, args.json)
}
