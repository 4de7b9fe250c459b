//! `rampart explain`: one example's attributions (gradient methods or LIME) as text, JSON, a
//! PNG heat map, an SVG bar chart and an HTML page; `rampart faithfulness`: how far a method's
//! explanations of a model can be trusted, over many examples.

use std::path::PathBuf;

use clap::Args;

use super::args::{DataArgs, ModelArgs, WorkloadArgs, guard};
use super::{CliError, CliResult, emit, note};
use crate::artifact::files::{self, OutputKind};
use crate::attack::{Norm, Pgd};
use crate::data::records;
use crate::device::DeviceChoice;
use crate::explain::lime::{Lime, Output};
use crate::explain::method::{Gradient, Method};
use crate::explain::run::{Context, Plan};
use crate::explain::study::StudyPlan;
use crate::explain::{Baseline, ExplainError, IntegratedGradients, Rule, Saliency, SmoothGrad};
use crate::model::Modality;
use crate::workload::{Data, Source, Workload, WorkloadSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodKind {
    /// |∂f/∂x|.
    Saliency,
    /// x ⊙ ∂f/∂x.
    GradientXInput,
    /// Integrated gradients.
    Ig,
    /// SmoothGrad over saliency or IG (--inner).
    Smoothgrad,
    /// LIME.
    Lime,
    /// KernelSHAP (LIME's machinery with the Shapley kernel).
    KernelShap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineKind {
    Zero,
    Blur,
}

/// The method and its parameters, shared by both commands.
#[derive(Args, Debug, Clone)]
pub struct MethodArgs {
    #[arg(long, value_enum, default_value_t = MethodKind::Ig)]
    pub method: MethodKind,
    /// Integrated gradients: path points (2 to 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub steps: u64,
    /// Integrated gradients: quadrature rule.
    #[arg(long, value_enum, default_value_t = Rule::GaussLegendre)]
    pub rule: Rule,
    /// Integrated gradients: the reference input (blur: a box blur of the image, half-width
    /// --blur-radius pixels; zeros for other inputs).
    #[arg(long, value_enum, default_value_t = BaselineKind::Zero)]
    pub baseline: BaselineKind,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=27))]
    pub blur_radius: u64,
    /// SmoothGrad: the method under the noise tunnel (saliency or ig).
    #[arg(long, value_enum, default_value_t = MethodKind::Saliency)]
    pub inner: MethodKind,
    /// SmoothGrad: noisy copies; LIME, KernelSHAP: perturbation samples (default 50 and 1000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub samples: Option<u64>,
    /// SmoothGrad: noise standard deviation, input units.
    #[arg(long, default_value_t = 0.15)]
    pub sigma: f64,
    /// LIME, KernelSHAP: superpixel side in pixels (images).
    #[arg(long, default_value_t = 4)]
    pub patch: usize,
    /// LIME, KernelSHAP: bytes per feature of a fusion record's byte sequence.
    #[arg(long, default_value_t = 16)]
    pub byte_chunk: usize,
    /// LIME: features in the surrogate (default: all).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// LIME: kernel width (default: the reference's, 0.25 images, 25 text, 0.75·√d tabular).
    #[arg(long)]
    pub kernel_width: Option<f64>,
    /// LIME: explain the class probability (the reference's choice) or its logit.
    #[arg(long, value_enum, default_value_t = LimeOutput::Probability)]
    pub lime_output: LimeOutput,
    /// Fusion models: explain only this modality (default: all it reads).
    #[arg(long, value_enum)]
    pub modality: Option<Modality>,
    /// Inputs per forward pass.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LimeOutput {
    Probability,
    Logit,
}

impl MethodArgs {
    fn integrated(&self) -> Result<IntegratedGradients, CliError> {
        Ok(IntegratedGradients {
            steps: self.steps as usize,
            rule: self.rule,
            baseline: match self.baseline {
                BaselineKind::Zero => Baseline::Zero,
                BaselineKind::Blur => Baseline::Blur(self.blur_radius as usize),
            },
            batch: self.batch as usize,
        })
    }

    fn method(&self) -> Result<Method, CliError> {
        let positive = |v: f64, flag: &str| {
            if v > 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err(CliError::Usage(format!(
                    "--{flag} {v} must be a positive number"
                )))
            }
        };
        Ok(match self.method {
            MethodKind::Saliency => Method::Gradient(Gradient::Saliency),
            MethodKind::GradientXInput => Method::Gradient(Gradient::GradientTimesInput),
            MethodKind::Ig => Method::Gradient(Gradient::Integrated(self.integrated()?)),
            MethodKind::Smoothgrad => {
                let samples = self.samples.unwrap_or(50) as usize;
                let sigma = positive(self.sigma, "sigma")?;
                Method::Gradient(match self.inner {
                    MethodKind::Saliency => Gradient::SmoothSaliency(SmoothGrad {
                        inner: Saliency,
                        samples,
                        sigma,
                        batch: self.batch as usize,
                    }),
                    MethodKind::Ig => Gradient::SmoothIntegrated(SmoothGrad {
                        inner: self.integrated()?,
                        samples,
                        sigma,
                        batch: self.batch as usize,
                    }),
                    other => {
                        return Err(CliError::Usage(format!(
                            "--inner {other:?} is not a SmoothGrad inner method: use saliency or ig"
                        )));
                    }
                })
            }
            MethodKind::Lime | MethodKind::KernelShap => {
                if let Some(w) = self.kernel_width {
                    positive(w, "kernel-width")?;
                }
                if self.top_k == Some(0) {
                    return Err(CliError::Usage("--top-k must be at least 1".into()));
                }
                let lime = Lime {
                    samples: self.samples.unwrap_or(1000) as usize,
                    top_k: self.top_k,
                    kernel_width: self.kernel_width,
                    output: match self.lime_output {
                        LimeOutput::Probability => Output::Probability,
                        LimeOutput::Logit => Output::Logit,
                    },
                    seed: self.seed,
                    batch: self.batch as usize,
                    ..Lime::default()
                };
                Method::Lime {
                    lime: if self.method == MethodKind::KernelShap {
                        lime.kernel_shap()
                    } else {
                        lime
                    },
                    patch: self.patch,
                    chunk: self.byte_chunk,
                }
            }
        })
    }
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub on: WorkloadArgs,
    /// The example to explain (0-based index into the data); or use --input.
    #[arg(long, default_value_t = 0, conflicts_with = "input")]
    pub index: u64,
    /// Explain this file instead: a 28×28 PNG for image models, or the first record of a
    /// JSONL file for fusion models.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The class to explain (default: the model's prediction).
    #[arg(long)]
    pub target: Option<usize>,
    #[command(flatten)]
    pub how: MethodArgs,
    /// Also explain the example's PGD adversarial version (L-infinity, --eps, --attack-steps).
    #[arg(long)]
    pub compare_adversarial: bool,
    #[arg(long, default_value_t = 0.1)]
    pub eps: f64,
    #[arg(long, default_value_t = 40)]
    pub attack_steps: usize,
    /// LIME on network features: draw removed features from these records (default: the
    /// --records file).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Write explanation.json, heatmap.png (images), bars.svg and explanation.html (named
    /// features and words) into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// The workload spec for `index` (limit 1) or the `--input` file (by its extension).
fn one_example(
    on: &WorkloadArgs,
    index: u64,
    input: &Option<PathBuf>,
) -> Result<WorkloadSpec, CliError> {
    let mut spec = on.spec(1);
    spec.offset = index as usize;
    spec.limit = Some(1);
    if let Some(p) = input {
        let ext = p
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        spec.source = match ext.as_deref() {
            Some("png") => Source::Png(p.clone()),
            Some("jsonl" | "json") => Source::Records(p.clone()),
            _ => {
                return Err(CliError::Usage(format!(
                    "--input {}: give a .png image (image models) or a .jsonl record (fusion models)",
                    p.display()
                )));
            }
        };
        spec.offset = 0;
    }
    Ok(spec)
}

/// A fusion record's text (as written) and the reference network rows.
fn context(
    work: &Workload,
    spec: &WorkloadSpec,
    reference: Option<&PathBuf>,
    needs_reference: bool,
) -> Result<Context, CliError> {
    let (
        Data::Records(_),
        Source::Records(path),
        crate::artifact::AnyModel::Fusion { spec: fs, .. },
    ) = (&work.data, &spec.source, &work.opened.model)
    else {
        return Ok(Context::default());
    };
    let schema = fs.schema();
    let all = records::read_jsonl(path, &schema).map_err(crate::workload::WorkloadError::from)?;
    let text = all.get(spec.offset).and_then(|r| r.text.clone());
    let mut reference_rows = Vec::new();
    if needs_reference {
        let rows = match reference {
            Some(p) => {
                records::read_jsonl(p, &schema).map_err(crate::workload::WorkloadError::from)?
            }
            None => all,
        };
        let set = records::to_set(&rows, &schema, "reference", &work.device.device)
            .map_err(crate::workload::WorkloadError::from)?;
        reference_rows = crate::explain::host_floats(set.network).map_err(explain_error)?;
    }
    Ok(Context {
        text,
        reference: reference_rows,
    })
}

fn explain_error(e: ExplainError) -> CliError {
    CliError::Usage(e.to_string())
}

fn compare(args: &ExplainArgs) -> Result<Option<Pgd>, CliError> {
    if !args.compare_adversarial {
        return Ok(None);
    }
    Pgd::new(Norm::Linf, args.eps, args.attack_steps)
        .map(Some)
        .map_err(|e| {
            CliError::Usage(format!(
                "--{} {}",
                if e.param == "epsilon" { "eps" } else { e.param },
                e.message
            ))
        })
}

pub fn run(args: ExplainArgs) -> CliResult {
    if args.on.data.offset != 0 || args.on.data.limit.is_some() {
        return Err(CliError::Usage(
            "explain takes one example: choose it with --index (not --offset or --limit)".into(),
        ));
    }
    let method = args.how.method()?;
    let plan = Plan {
        method,
        target: args.target,
        compare: compare(&args)?,
        modality: args.how.modality,
        seed: args.how.seed,
    };
    let spec = one_example(&args.on, args.index, &args.input)?;
    let work = Workload::open(&spec)?;
    let mut outputs = guard(&work.files);
    if let Some(r) = &args.reference {
        outputs.inputs(std::slice::from_ref(r));
    }
    let out = args.out.as_ref();
    if let Some(dir) = out {
        for (name, kind) in [
            ("explanation.json", OutputKind::Explanation),
            ("heatmap.png", OutputKind::Png),
            ("bars.svg", OutputKind::Svg),
            ("explanation.html", OutputKind::Html),
        ] {
            outputs.output(&dir.join(name), "--out", kind)?;
        }
    }
    note(&format!("device: {}", work.device.description));
    let lime = matches!(method, Method::Lime { .. });
    let ctx = context(&work, &spec, args.reference.as_ref(), lime)?;
    let labelled = !matches!(spec.source, Source::Png(_));
    let report =
        crate::explain::run::explain(&work, &plan, &ctx, labelled).map_err(explain_error)?;
    if let Some(dir) = out {
        write_outputs(dir, &report)?;
        note(&format!("wrote the explanation into {}", dir.display()));
    }
    emit(&report, args.json)
}

fn write_outputs(dir: &std::path::Path, report: &crate::explain::run::Report) -> CliResult {
    use crate::explain::render;
    std::fs::create_dir_all(dir).map_err(CliError::Output)?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    files::write_atomic(&dir.join("explanation.json"), json.as_bytes())?;
    if let Some(png) =
        render::heatmap_png(report).map_err(|e| CliError::Output(std::io::Error::other(e)))?
    {
        files::write_atomic(&dir.join("heatmap.png"), &png)?;
    }
    if let Some(svg) = render::bars_svg(report) {
        files::write_atomic(&dir.join("bars.svg"), svg.as_bytes())?;
    }
    if let Some(html) = render::words_html(report) {
        files::write_atomic(&dir.join("explanation.html"), html.as_bytes())?;
    }
    Ok(())
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct FaithfulnessArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub how: MethodArgs,
    /// Points per deletion or insertion curve past the first (fractions k/curve-steps).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub curve_steps: u64,
    /// Input noise for the stability measure, input units.
    #[arg(long, default_value_t = 0.02)]
    pub noise: f64,
    /// Top-k overlap counts this fraction of the coordinates.
    #[arg(long, default_value_t = 0.1)]
    pub top_fraction: f64,
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub resamples: u64,
    /// Examples attributed together.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub chunk: u64,
    /// LIME on network features: draw removed features from these records (default: the
    /// --records file).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn faithfulness(args: FaithfulnessArgs) -> CliResult {
    if !(args.noise >= 0.0 && args.noise.is_finite()) {
        return Err(CliError::Usage(format!(
            "--noise {} must be 0 or more",
            args.noise
        )));
    }
    if !(args.top_fraction > 0.0 && args.top_fraction <= 1.0) {
        return Err(CliError::Usage(format!(
            "--top-fraction {} must lie in (0, 1]",
            args.top_fraction
        )));
    }
    let plan = StudyPlan {
        method: args.how.method()?,
        steps: args.curve_steps as usize,
        noise: args.noise,
        top_fraction: args.top_fraction,
        resamples: args.resamples as usize,
        seed: args.how.seed,
        chunk: args.chunk as usize,
        batch: args.how.batch as usize,
    };
    let on = WorkloadArgs {
        model: args.model.clone(),
        data: args.data.clone(),
        device: args.device,
    };
    let spec = on.spec(1);
    let work = Workload::open(&spec)?;
    note(&format!("device: {}", work.device.description));
    let lime = matches!(plan.method, Method::Lime { .. });
    let ctx = context(&work, &spec, args.reference.as_ref(), lime)?;
    let report = crate::explain::study::study(&work, &plan, args.how.modality, &ctx.reference)
        .map_err(explain_error)?;
    emit(&report, args.json)
}
