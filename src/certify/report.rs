//! `rampart certify` over any workload, its report (one schema for every model kind), and the
//! smoothing protocol `certify` and `predict` share.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Smooth;
use super::noise::Lattice;
use super::run::{CertifyRun, Row, Summary, certify_all};
use crate::artifact::ModelInfo;
use crate::classifier::{Classifier, Input};
use crate::data::host_labels;
use crate::workload::{DataInfo, Examples, Job, Workload, WorkloadError};

/// Most Monte Carlo samples per example (f32 vote counts are exact below 2^24).
pub const MAX_N: usize = 10_000_000;
/// Most noisy inputs per forward pass.
pub const MAX_BATCH: usize = 65_536;

/// The smoothing protocol: sigma (default: the model's training sigma), n0 selection and n
/// estimation samples per example, alpha, noisy inputs per forward pass, seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Protocol {
    pub sigma: Option<f64>,
    pub n0: usize,
    pub n: usize,
    pub alpha: f64,
    pub batch: usize,
    pub seed: u64,
    /// Stop early (`--target-radius` or `--early-stop`, `--stages`).
    pub target: Option<super::sequential::Target>,
    /// Sound smoothing (`--sound`): integer noise on the 1/[`GRID`] grid ([`Lattice`]).
    pub sound: bool,
}

/// The grid of sound smoothing: 8-bit images, 255 steps per pixel unit.
pub const GRID: u32 = 255;

/// Inputs further than this (in grid steps) from the grid are refused by `--sound`.
const GRID_TOLERANCE: f64 = 1e-3;

impl Protocol {
    /// Refuses values that cannot work, naming the flag: sigma not positive, alpha outside
    /// (0, 1), counts of 0 or above [`MAX_N`], a batch of 0 or above [`MAX_BATCH`].
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = self.sigma.filter(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("--sigma must be a positive number, got {s}"));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("--alpha must be in (0, 1), got {}", self.alpha));
        }
        for (flag, v) in [("--n", self.n), ("--n0", self.n0)] {
            if !(1..=MAX_N).contains(&v) {
                return Err(format!("{flag} must be between 1 and {MAX_N}, got {v}"));
            }
        }
        if let Some(t) = self.target {
            if let super::sequential::Goal::Radius(r) = t.goal
                && !(r.is_finite() && r >= 0.0)
            {
                return Err(format!("--target-radius must be 0 or more, got {r}"));
            }
            if !(1..=16).contains(&t.stages) {
                return Err(format!(
                    "--stages must be between 1 and 16, got {}",
                    t.stages
                ));
            }
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(format!(
                "--batch must be between 1 and {MAX_BATCH}, got {}",
                self.batch
            ));
        }
        Ok(())
    }

    /// `base` smoothed with noise of `sigma`, per this protocol's batch and seed.
    pub fn smooth<'a, C: Classifier<D>, const D: usize>(
        &self,
        base: &'a C,
        sigma: f64,
    ) -> Smooth<'a, C, D> {
        Smooth {
            base,
            sigma,
            batch: self.batch,
            seed: self.seed,
            lattice: self.sound.then(|| Lattice::new(sigma, GRID)),
        }
    }

    /// Sigma: the flag's, else the one the model was trained with.
    pub fn sigma_for(&self, work: &Workload) -> Result<f64, WorkloadError> {
        self.sigma
            .or_else(|| work.opened.model.training_sigma())
            .ok_or_else(|| {
                WorkloadError::Mismatch(format!(
                    "{}: not trained with --mode gaussian (every member, for an ensemble, with one sigma), so there is no sigma to default to; pass --sigma",
                    work.opened.path.display()
                ))
            })
    }
}

struct CertifyJob<'a> {
    protocol: Protocol,
    sigma: f64,
    out: Option<&'a Path>,
    /// Rows a resumed run already has; their examples are not certified again.
    done: &'a [Row],
    progress: &'a mut dyn FnMut(&[Row]),
}

impl Job for CertifyJob<'_> {
    type Output = Result<(Vec<Row>, Summary, String, f64), WorkloadError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let p = self.protocol;
        let smooth = p.smooth(model, self.sigma);
        if let Some(lattice) = &smooth.lattice {
            let off = lattice.off_grid(ex.inputs.x().clone());
            if off.is_nan() || off > GRID_TOLERANCE {
                return Err(WorkloadError::Mismatch(format!(
                    "--sound needs inputs on the 1/{GRID} grid (8-bit images), but an input lies {off:.3} grid steps off it; certify these inputs without --sound"
                )));
            }
        }
        let all_labels = host_labels(&ex.labels);
        let done: std::collections::HashSet<usize> = self.done.iter().map(|r| r.idx).collect();
        let left: Vec<usize> = (0..ex.ids.len())
            .filter(|&k| !done.contains(&ex.ids[k]))
            .collect();
        let inputs = if left.is_empty() || left.len() == ex.ids.len() {
            ex.inputs
        } else {
            let device = ex.inputs.x().device();
            ex.inputs.select(crate::data::indices(&left, &device))
        };
        let labels: Vec<usize> = left.iter().map(|&k| all_labels[k]).collect();
        let ids: Vec<usize> = left.iter().map(|&k| ex.ids[k]).collect();
        let run = CertifyRun {
            inputs: &inputs,
            labels: &labels,
            ids: &ids,
            n0: p.n0,
            n: p.n,
            alpha: p.alpha,
            done: self.done,
            target: p.target,
        };
        let slack = smooth.slack(&inputs);
        let (rows, summary) = certify_all(&smooth, &run, self.out, self.progress)
            .map_err(crate::artifact::ArtifactError::from)?;
        Ok((rows, summary, model.domain().units.to_string(), slack))
    }
}

/// `rampart certify`: every key is present for every model kind.
#[derive(Debug, Clone, Serialize)]
pub struct CertifyReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    /// The unit of sigma and of the radii (L2).
    pub units: String,
    pub tsv: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub summary: Summary,
    /// Sound smoothing's grid and the bound subtracted from every pA lower bound; `None` for
    /// Gaussian noise in floating point.
    pub sound: Option<Sound>,
}

/// How a sound certification was made.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sound {
    /// Grid steps per input unit.
    pub levels: u32,
    /// Total-variation bound of the sampled lattice noise, subtracted from pA's lower bound.
    pub slack: f64,
}

/// CERTIFY for every example of the workload (a fusion model: over its network features),
/// streaming the TSV to `out`; also returns the rows.
pub fn certify(
    work: &Workload,
    protocol: Protocol,
    out: Option<&Path>,
    done: &[Row],
    progress: &mut dyn FnMut(&[Row]),
) -> Result<(CertifyReport, Vec<Row>), WorkloadError> {
    let sigma = protocol.sigma_for(work)?;
    let job = CertifyJob {
        protocol,
        sigma,
        out,
        done,
        progress,
    };
    let (rows, summary, units, slack) = work.run(job, None)??;
    let report = CertifyReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        units,
        tsv: out.map(Path::to_path_buf),
        plot: None,
        summary,
        sound: protocol.sound.then_some(Sound {
            levels: GRID,
            slack,
        }),
    };
    Ok((report, rows))
}

impl fmt::Display for CertifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        writeln!(
            f,
            "{} on {} ({} examples; sigma {}, n0 {}, n {}, alpha {})",
            self.model.path.display(),
            self.data.name,
            s.images,
            s.sigma,
            s.n0,
            s.n,
            s.alpha
        )?;
        writeln!(f, "certified accuracy (L2 radius, {}):", self.units)?;
        for (r, acc) in &s.certified_accuracy {
            writeln!(f, "  radius {r:.2}: {:6.2}%", 100.0 * acc)?;
        }
        writeln!(f, "abstain rate: {:.2}%", 100.0 * s.abstain_rate)?;
        if let Some(sound) = self.sound {
            writeln!(
                f,
                "sound smoothing: integer noise on the 1/{} grid; pA lower bounds lowered by {:.1e}",
                sound.levels, sound.slack
            )?;
        }
        writeln!(f, "seconds per example: {:.3}", s.seconds_per_image)?;
        if let (Some(t), Some(m)) = (s.target, s.mean_samples) {
            writeln!(
                f,
                "early stopping for {} ({} stages): {m:.0} of {} estimation samples per example on average ({:.1}%)",
                t.goal,
                t.stages,
                s.n,
                100.0 * m / s.n as f64
            )?;
        }
        for path in self.tsv.iter().chain(&self.plot) {
            writeln!(f, "wrote {}", path.display())?;
        }
        Ok(())
    }
}
