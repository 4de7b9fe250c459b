//! `rampart certify`: randomized-smoothing CERTIFY for any model, with the reference TSV and a
//! PNG plot of certified accuracy against radius.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::args::{ShardArgs, WorkloadArgs, guard};
use super::{CliError, CliResult, emit, merge, note};
use crate::artifact::files::OutputKind;
use crate::certify::report::{self, Protocol};
use crate::certify::run::Row;
use crate::certify::sequential::{Goal, Target};
use crate::certify::shard::{self as certify_shard, CertifyProtocol};
use crate::shard::{self, Command, Description};
use crate::workload::Workload;

/// The smoothing protocol, shared by `certify` and `predict`.
#[derive(Args, Debug)]
pub struct SmoothArgs {
    /// Noise standard deviation, input units (pixels in [0, 1]). Default: the sigma the model
    /// was trained with (`--mode gaussian`), read from its metadata.
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Monte Carlo samples per example (estimation).
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Failure probability of each certificate / prediction.
    #[arg(long, default_value_t = 0.001)]
    pub alpha: f64,
    /// Noisy inputs per forward pass (default: 128 on the CPU, 1024 on a GPU); the counts do
    /// not depend on it.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Take every k-th example (Cohen et al.: 20 on CIFAR-10).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub skip: u64,
    /// Seed of the noise: same seed, same device, same counts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl SmoothArgs {
    /// `--batch`, or the default for the device the workload runs on (1024 on a GPU).
    pub fn batch_on(&self, work: &Workload) -> usize {
        self.batch
            .unwrap_or_else(|| crate::device::default_batch(&work.device.device, 1024))
    }

    /// The protocol; without `--batch`, [`SmoothArgs::batch_on`] sets the batch once the
    /// device is known.
    pub fn protocol(&self, n0: usize) -> Protocol {
        Protocol {
            sigma: self.sigma,
            n0,
            n: self.n,
            alpha: self.alpha,
            batch: self.batch.unwrap_or(report::MAX_BATCH),
            seed: self.seed,
            target: None,
            sound: false,
        }
    }
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct CertifyArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    #[command(flatten)]
    pub smooth: SmoothArgs,
    /// Samples that select the top class.
    #[arg(long, default_value_t = 100)]
    pub n0: usize,
    /// TSV in the reference layout: idx label predict radius correct time.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// PNG plot of certified accuracy against radius (default: the --out path with .png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// Stop sampling an image as soon as it is certified at this L2 radius, or provably
    /// cannot be within --n samples (same α: Bonferroni over --stages stages).
    #[arg(long, group = "early")]
    pub target_radius: Option<f64>,
    /// Cohen's radius-agnostic protocol, stopping early: sample an image until it is decided
    /// at radius 0 and at every report radius (0.25, 0.5, 0.75, 1.0) that --n samples can
    /// certify (certified there, or its upper bound below); same α by Bonferroni over
    /// --stages stages. Radii stop at what the report radii need.
    #[arg(long, group = "early")]
    pub early_stop: bool,
    /// Stages of the early-stopping schedule (sample counts halving back from --n).
    #[arg(long, default_value_t = 4, requires = "early")]
    pub stages: usize,
    /// Sound smoothing (Voráček & Hein 2023) for 8-bit images: inputs must lie on the 1/255
    /// grid; the noise is whole grid steps drawn exactly from round(N(0, (255 sigma)^2)) and
    /// added in integer arithmetic, so floating-point rounding cannot make a false
    /// certificate. pA's lower bound is lowered by the sampler's total-variation bound.
    #[arg(long)]
    pub sound: bool,
}

pub fn run(args: CertifyArgs) -> CliResult {
    let mut protocol = args.smooth.protocol(args.n0);
    let goal = match (args.target_radius, args.early_stop) {
        (Some(r), _) => Some(Goal::Radius(r)),
        (None, true) => Some(Goal::ReportRadii),
        (None, false) => None,
    };
    protocol.target = goal.map(|goal| Target {
        goal,
        stages: args.stages,
    });
    protocol.sound = args.sound;
    protocol.validate().map_err(CliError::Usage)?;
    let mut spec = args.on.spec(args.smooth.skip as usize);
    spec.shard = args.shard.shard().map_err(CliError::Usage)?;
    merge::require_table(&spec.shard, args.out.as_deref(), "--out")?;
    let work = Workload::open(&spec)?;
    protocol.batch = args.smooth.batch_on(&work);
    let plot = args
        .plot
        .clone()
        .or_else(|| args.out.as_ref().map(|o| o.with_extension("png")));
    let mut outputs = guard(&work.files);
    if let Some(out) = &args.out {
        merge::guard_table(&mut outputs, out, "--out", OutputKind::Tsv)?;
    }
    if let Some(p) = &plot {
        outputs.output(p, "--plot", OutputKind::Png)?;
    }
    let sigma = protocol.sigma_for(&work)?;
    note(&format!("device: {}", work.device.description));
    note(&format!(
        "certifying {} examples of {} (sigma {sigma}, n0 {}, n {}, alpha {}, batch {})",
        work.ids.len(),
        work.data_info().name,
        protocol.n0,
        protocol.n,
        protocol.alpha,
        protocol.batch
    ));
    let bar = progress_bar(work.ids.len());
    let mut progress = |rows: &[Row]| {
        let correct = rows.iter().filter(|r| r.correct).count();
        bar.set_position(rows.len() as u64);
        bar.set_message(format!(
            "certified acc@0 {:.1}%",
            100.0 * correct as f64 / rows.len().max(1) as f64
        ));
    };
    let planned = Description::new(
        &work,
        &spec,
        Command::Certify,
        &CertifyProtocol {
            sigma,
            n0: protocol.n0,
            n: protocol.n,
            alpha: protocol.alpha,
            seed: protocol.seed,
            target: protocol.target,
            sound: protocol.sound,
        },
    );
    // A re-run with the same description resumes: the examples already certified are kept.
    let mut done = Vec::new();
    if let Some(out) = &args.out {
        done = certify_shard::resume(out, &planned).map_err(|e| CliError::Usage(e.to_string()))?;
        if !done.is_empty() {
            note(&format!(
                "resuming: {} of {} examples already certified in {}",
                done.len(),
                planned.ids.len(),
                out.display()
            ));
        }
        shard::write_meta(&shard::partial_path(out), &planned)?;
    }
    let (mut report, rows) =
        report::certify(&work, protocol, args.out.as_deref(), &done, &mut progress)?;
    bar.finish_and_clear();
    if let Some(out) = &args.out {
        shard::write_meta(out, &planned)?;
        let _ = std::fs::remove_file(shard::meta_path(&shard::partial_path(out)));
    }
    if let Some(p) = &plot {
        let title = format!(
            "{} (sigma {}, n {}, {} examples)",
            report.data.name,
            report.summary.sigma,
            protocol.n,
            rows.len()
        );
        let with_text = crate::certify::plot::certified_accuracy_png(&rows, &title, p)
            .map_err(CliError::Usage)?;
        if !with_text {
            note(&format!(
                "note: no DejaVu font found (fonts-dejavu-core): {} has no axis labels",
                p.display()
            ));
        }
        report.plot = Some(p.clone());
    }
    emit(&report, args.smooth.json)
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "certify [{bar:30}] {pos}/{len} examples {msg} ({elapsed} < {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
