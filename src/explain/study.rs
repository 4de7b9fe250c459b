//! `rampart faithfulness`: how far a method's explanations of a model can be trusted, over
//! many examples: deletion and insertion areas against a random ranking, stability under small
//! input noise (and, for LIME, another seed), integrated gradients' completeness at 20, 50 and
//! 200 steps; every mean with a bootstrap interval.

use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use serde::Serialize;

use super::faithfulness::{Estimate, bootstrap, curves, random_scores, spearman, top_k_overlap};
use super::lime::{Lime, Patches, Tabular};
use super::method::{Gradient, Method};
use super::{ExplainError, Explainer, IntegratedGradients, completeness_delta, host_floats};
use crate::artifact::{AnyModel, ModelInfo};
use crate::classifier::fusion::NetworkView;
use crate::classifier::{Classifier, ImageModel, Input, Rows};
use crate::model::Modality;
use crate::workload::{Data, DataInfo, Examples, Job, Workload, modality_name};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct StudyPlan {
    pub method: Method,
    /// Points per deletion or insertion curve, past the first (fractions k/steps).
    pub steps: usize,
    /// Standard deviation of the input noise for stability, input units.
    pub noise: f64,
    /// Top-k overlap counts the k largest |attributions| (a fraction of the coordinates).
    pub top_fraction: f64,
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    pub seed: u64,
    /// Examples attributed together.
    pub chunk: usize,
    /// Inputs per forward pass for the curves.
    pub batch: usize,
}

/// Completeness of integrated gradients at one step count.
#[derive(Debug, Clone, Serialize)]
pub struct Completeness {
    pub steps: usize,
    /// Mean |Σ attributions − (f(x) − f(baseline))|, logit units.
    pub mean_abs_delta: Estimate,
    /// Mean |f(x) − f(baseline)|, for scale.
    pub mean_abs_change: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StudyReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    /// "images", or the fusion model's explained input.
    pub input: String,
    pub method: String,
    /// Curves explain each example's predicted class.
    pub steps: usize,
    pub deletion_area: Estimate,
    pub deletion_area_random: Estimate,
    pub insertion_area: Estimate,
    pub insertion_area_random: Estimate,
    /// Per example, random's deletion area minus the method's (> 0: the method finds what
    /// matters faster than chance).
    pub deletion_gain: Estimate,
    /// Per example, the method's insertion area minus random's.
    pub insertion_gain: Estimate,
    pub noise_sigma: f64,
    pub top_k: usize,
    /// Spearman correlation of attributions at x and at x + N(0, σ²).
    pub noise_spearman: Estimate,
    pub noise_top_k_overlap: Estimate,
    /// LIME only: between seeds `seed` and `seed + 1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_spearman: Option<Estimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_top_k_overlap: Option<Estimate>,
    /// Integrated gradients only: completeness at 20, 50 and 200 steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub completeness: Vec<Completeness>,
    /// Mean curves, method and random, `[steps + 1]`.
    pub mean_deletion: Vec<f64>,
    pub mean_deletion_random: Vec<f64>,
    pub mean_insertion: Vec<f64>,
    pub mean_insertion_random: Vec<f64>,
}

/// A way to attribute a chunk of examples for their targets, with a seed for methods that
/// sample.
trait Attributor<const D: usize, C: Classifier<D>> {
    fn attribute(
        &self,
        model: &C,
        x: &C::Input,
        target: &Tensor<1, Int>,
        seed: u64,
    ) -> Result<Tensor<D>, ExplainError>;
    /// Whether another seed gives other attributions.
    fn seeded(&self) -> bool {
        false
    }
}

impl<const D: usize, C: Classifier<D>> Attributor<D, C> for Gradient {
    fn attribute(
        &self,
        model: &C,
        x: &C::Input,
        target: &Tensor<1, Int>,
        _seed: u64,
    ) -> Result<Tensor<D>, ExplainError> {
        Ok(Explainer::attribute(self, model, x, target))
    }
}

/// LIME over image patches, one example at a time, painted per pixel.
struct LimeImages(Lime, usize);

impl Attributor<4, ImageModel> for LimeImages {
    fn attribute(
        &self,
        model: &ImageModel,
        x: &Tensor<4>,
        target: &Tensor<1, Int>,
        seed: u64,
    ) -> Result<Tensor<4>, ExplainError> {
        let targets = crate::data::host_labels(target);
        let mut maps = Vec::with_capacity(targets.len());
        for (i, &t) in targets.iter().enumerate() {
            let rep = Patches::new(model, Input::range(x, i, i + 1), self.1)?;
            let lime = Lime { seed, ..self.0 };
            let e = lime.explain(&rep, t)?;
            maps.extend(rep.paint(&e.weights).into_iter().map(|v| v as f32));
        }
        let dims = x.dims();
        Ok(Tensor::from_data(TensorData::new(maps, dims), &x.device()))
    }

    fn seeded(&self) -> bool {
        true
    }
}

/// LIME over network features, removed features drawn from `reference`.
struct LimeNetwork(Lime, Vec<f32>, usize);

impl Attributor<2, NetworkView> for LimeNetwork {
    fn attribute(
        &self,
        model: &NetworkView,
        x: &Rows<2>,
        target: &Tensor<1, Int>,
        seed: u64,
    ) -> Result<Tensor<2>, ExplainError> {
        let targets = crate::data::host_labels(target);
        let names: Vec<String> = (0..self.2).map(|j| format!("network[{j}]")).collect();
        let mut weights = Vec::with_capacity(targets.len() * self.2);
        for (i, &t) in targets.iter().enumerate() {
            let rep = Tabular::new(model, x.range(i, i + 1), self.1.clone(), names.clone())?;
            let lime = Lime { seed, ..self.0 };
            weights.extend(lime.explain(&rep, t)?.weights.into_iter().map(|v| v as f32));
        }
        Ok(Tensor::from_data(
            TensorData::new(weights, [targets.len(), self.2]),
            &x.x.device(),
        ))
    }

    fn seeded(&self) -> bool {
        true
    }
}

/// Per-example measurements, gathered chunk by chunk.
#[derive(Default)]
struct Tally {
    del: Vec<f64>,
    del_random: Vec<f64>,
    ins: Vec<f64>,
    ins_random: Vec<f64>,
    curves: [Vec<Vec<f64>>; 4],
    noise_rho: Vec<f64>,
    noise_overlap: Vec<f64>,
    seed_rho: Vec<f64>,
    seed_overlap: Vec<f64>,
    /// Per step count: |delta| per example and |f(x) − f(b)| per example.
    completeness: Vec<(usize, Vec<f64>, Vec<f64>)>,
    /// Attributed coordinates per example.
    coordinates: usize,
}

/// Runs the study on the workload's examples.
pub fn study(
    work: &Workload,
    plan: &StudyPlan,
    modality: Option<Modality>,
    reference: &[f32],
) -> Result<StudyReport, ExplainError> {
    let (tally, input) = match (plan.method, &work.opened.model, &work.data) {
        (Method::Gradient(g), _, _) => {
            let job = GradientJob { g, plan };
            let t = work
                .run(job, modality)
                .map_err(|e| ExplainError::Invalid(e.to_string()))??;
            (t, work.input_name(modality))
        }
        (Method::Lime { lime, patch, .. }, AnyModel::Image { net, .. }, Data::Images(set)) => {
            let model = ImageModel::Single(net.valid());
            let t = measure(&model, set.images.clone(), &LimeImages(lime, patch), plan)?;
            (t, "images".into())
        }
        (
            Method::Lime { lime, patch, .. },
            AnyModel::Ensemble { ensemble, .. },
            Data::Images(set),
        ) => {
            let model = ImageModel::Ensemble(ensemble.valid());
            let t = measure(&model, set.images.clone(), &LimeImages(lime, patch), plan)?;
            (t, "images".into())
        }
        (Method::Lime { lime, .. }, AnyModel::Fusion { net, spec, .. }, Data::Records(set)) => {
            if modality.is_some_and(|m| m != Modality::Network) {
                return Err(ExplainError::Invalid(
                    "the faithfulness of LIME is measured on network features \
                     (--modality network); text curves would need word-level deletion"
                        .into(),
                ));
            }
            if !spec.has(Modality::Network) {
                return Err(ExplainError::Invalid(
                    "the faithfulness of LIME on a fusion model is measured on its network \
                     features, which this model does not read; use a gradient method with \
                     --modality text or bytes"
                        .into(),
                ));
            }
            let net = net.valid();
            let view = NetworkView::new(&net, set);
            let f = set.network.dims()[1];
            let attributor = LimeNetwork(lime, reference.to_vec(), f);
            let t = measure(&view, NetworkView::input(set), &attributor, plan)?;
            (t, modality_name(Modality::Network).into())
        }
        _ => {
            return Err(ExplainError::Invalid(
                "the model and the data are of different kinds".into(),
            ));
        }
    };
    Ok(report(work, plan, tally, input))
}

struct GradientJob<'a> {
    g: Gradient,
    plan: &'a StudyPlan,
}

impl Job for GradientJob<'_> {
    type Output = Result<Tally, ExplainError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        examples: Examples<C::Input>,
    ) -> Self::Output {
        measure(model, examples.inputs, &self.g, self.plan)
    }
}

/// Attributes every example (its predicted class) chunk by chunk and measures.
fn measure<const D: usize, C: Classifier<D>, A: Attributor<D, C>>(
    model: &C,
    inputs: C::Input,
    attributor: &A,
    plan: &StudyPlan,
) -> Result<Tally, ExplainError> {
    let n = inputs.len();
    if n == 0 {
        return Err(ExplainError::Invalid("no examples to measure".into()));
    }
    let (ig, path) = match plan.method {
        Method::Gradient(g) => (g.integrated(), g.path()),
        Method::Lime { .. } => (None, None),
    };
    let mut tally = Tally {
        completeness: [20, 50, 200]
            .iter()
            .map(|&s| (s, Vec::new(), Vec::new()))
            .collect(),
        ..Tally::default()
    };
    let domain = model.domain();
    for (c, start) in (0..n).step_by(plan.chunk.max(1)).enumerate() {
        // Each chunk's noise (SmoothGrad, the random ranking, the stability noise) from its
        // own seed: a run repeats exactly.
        inputs.x().device().seed(plan.seed.wrapping_add(c as u64));
        let x = inputs.range(start, start + plan.chunk.max(1));
        let target = model.logits(x.clone()).argmax(1).squeeze_dim::<1>(1);
        let a = attributor.attribute(model, &x, &target, plan.seed)?;
        let baseline = match path {
            Some(ig) => ig.baseline(x.x()),
            None => x.x().zeros_like(),
        };
        let ours = curves(
            model,
            &x,
            &target,
            a.clone(),
            baseline.clone(),
            plan.steps,
            plan.batch,
        )?;
        let random = random_scores(&a);
        let chance = curves(model, &x, &target, random, baseline, plan.steps, plan.batch)?;
        tally.del.extend(ours.deletion_areas());
        tally.ins.extend(ours.insertion_areas());
        tally.del_random.extend(chance.deletion_areas());
        tally.ins_random.extend(chance.insertion_areas());
        for (k, c) in [
            ours.deletion,
            chance.deletion,
            ours.insertion,
            chance.insertion,
        ]
        .into_iter()
        .enumerate()
        {
            tally.curves[k].extend(c);
        }
        // Stability under input noise (clamped to the domain's box).
        let mut noisy = x.x().clone()
            + Tensor::random(
                x.x().dims(),
                Distribution::Normal(0.0, plan.noise),
                &x.x().device(),
            );
        if let Some((lo, hi)) = domain.bounds {
            noisy = noisy.clamp(lo, hi);
        }
        let b = attributor.attribute(model, &x.with_x(noisy), &target, plan.seed)?;
        let here = rows(a.clone())?;
        tally.coordinates = here[0].len();
        let k = top_k(tally.coordinates, plan.top_fraction);
        for (u, v) in here.iter().zip(rows(b)?) {
            tally.noise_rho.push(spearman(u, &v));
            tally.noise_overlap.push(top_k_overlap(u, &v, k));
        }
        if attributor.seeded() {
            let c = attributor.attribute(model, &x, &target, plan.seed + 1)?;
            for (u, v) in here.iter().zip(rows(c)?) {
                tally.seed_rho.push(spearman(u, &v));
                tally.seed_overlap.push(top_k_overlap(u, &v, k));
            }
        }
        if let Some(ig) = ig {
            for (steps, deltas, changes) in &mut tally.completeness {
                let (d, c) = completeness(model, &x, &target, ig, *steps)?;
                deltas.extend(d);
                changes.extend(c);
            }
        }
    }
    if ig.is_none() {
        tally.completeness.clear();
    }
    Ok(tally)
}

/// |delta| and |f(x) − f(baseline)| per example for IG at `steps`.
fn completeness<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    target: &Tensor<1, Int>,
    ig: IntegratedGradients,
    steps: usize,
) -> Result<(Vec<f64>, Vec<f64>), ExplainError> {
    let ig = IntegratedGradients { steps, ..ig };
    let a = ig.attribute(model, x, target);
    let baseline = x.with_x(ig.baseline(x.x()));
    let total = a
        .clone()
        .flatten::<2>(1, D - 1)
        .sum_dim(1)
        .squeeze_dim::<1>(1);
    let delta = completeness_delta(model, x, &baseline, target, a);
    let change = total - delta.clone();
    let both = Tensor::cat(vec![delta.abs(), change.abs()], 0);
    let v: Vec<f64> = host_floats(both)?.into_iter().map(f64::from).collect();
    let n = v.len() / 2;
    Ok((v[..n].to_vec(), v[n..].to_vec()))
}

/// Each example's attributions as one host row.
fn rows<const D: usize>(a: Tensor<D>) -> Result<Vec<Vec<f64>>, ExplainError> {
    let n = a.dims()[0];
    let v = host_floats(a)?;
    let p = v.len() / n.max(1);
    Ok(v.chunks(p.max(1))
        .map(|c| c.iter().map(|&x| f64::from(x)).collect())
        .collect())
}

fn top_k(p: usize, fraction: f64) -> usize {
    ((p as f64 * fraction).round() as usize).clamp(1, p.max(1))
}

fn mean_curve(c: &[Vec<f64>]) -> Vec<f64> {
    let points = c.first().map_or(0, Vec::len);
    (0..points)
        .map(|k| c.iter().map(|r| r[k]).sum::<f64>() / c.len() as f64)
        .collect()
}

fn report(work: &Workload, plan: &StudyPlan, t: Tally, input: String) -> StudyReport {
    let est = |v: &[f64], salt: u64| bootstrap(v, plan.resamples, plan.seed ^ salt);
    let finite = |v: &[f64]| {
        v.iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect::<Vec<_>>()
    };
    let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>();
    let some = |v: &[f64], salt| (!v.is_empty()).then(|| est(&finite(v), salt));
    StudyReport {
        model: work.model_info(),
        data: work.data_info(),
        input,
        method: plan.method.name(),
        steps: plan.steps,
        deletion_area: est(&t.del, 1),
        deletion_area_random: est(&t.del_random, 2),
        insertion_area: est(&t.ins, 3),
        insertion_area_random: est(&t.ins_random, 4),
        deletion_gain: est(&diff(&t.del_random, &t.del), 5),
        insertion_gain: est(&diff(&t.ins, &t.ins_random), 6),
        noise_sigma: plan.noise,
        top_k: top_k(t.coordinates, plan.top_fraction),
        noise_spearman: est(&finite(&t.noise_rho), 7),
        noise_top_k_overlap: est(&t.noise_overlap, 8),
        seed_spearman: some(&t.seed_rho, 9),
        seed_top_k_overlap: some(&t.seed_overlap, 10),
        completeness: t
            .completeness
            .iter()
            .map(|(steps, d, c)| Completeness {
                steps: *steps,
                mean_abs_delta: est(d, 11 + *steps as u64),
                mean_abs_change: c.iter().sum::<f64>() / c.len().max(1) as f64,
            })
            .collect(),
        mean_deletion: mean_curve(&t.curves[0]),
        mean_deletion_random: mean_curve(&t.curves[1]),
        mean_insertion: mean_curve(&t.curves[2]),
        mean_insertion_random: mean_curve(&t.curves[3]),
    }
}

impl std::fmt::Display for StudyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = |x: &Estimate| format!("{:.4} [{:.4}, {:.4}]", x.mean, x.low, x.high);
        writeln!(
            f,
            "faithfulness of {} on {} ({}), {} of {} ({} examples; 95% bootstrap intervals)",
            self.method,
            self.model.description,
            self.model.path.display(),
            self.input,
            self.data.name,
            self.deletion_area.n
        )?;
        writeln!(f, "{:<34} {:>28} {:>28}", "", "method", "random ranking")?;
        writeln!(
            f,
            "{:<34} {:>28} {:>28}",
            "deletion area (lower is better)",
            e(&self.deletion_area),
            e(&self.deletion_area_random)
        )?;
        writeln!(
            f,
            "{:<34} {:>28} {:>28}",
            "insertion area (higher is better)",
            e(&self.insertion_area),
            e(&self.insertion_area_random)
        )?;
        writeln!(f, "deletion gain over random:  {}", e(&self.deletion_gain))?;
        writeln!(f, "insertion gain over random: {}", e(&self.insertion_gain))?;
        writeln!(
            f,
            "stability under N(0, {}²) input noise: Spearman {}, top-{} overlap {}",
            self.noise_sigma,
            e(&self.noise_spearman),
            self.top_k,
            e(&self.noise_top_k_overlap)
        )?;
        if let (Some(r), Some(o)) = (&self.seed_spearman, &self.seed_top_k_overlap) {
            writeln!(
                f,
                "stability across LIME seeds: Spearman {}, top-{} overlap {}",
                e(r),
                self.top_k,
                e(o)
            )?;
        }
        for c in &self.completeness {
            writeln!(
                f,
                "IG completeness at {:>3} steps: mean |delta| {} (mean |f(x) - f(baseline)| {:.4})",
                c.steps,
                e(&c.mean_abs_delta),
                c.mean_abs_change
            )?;
        }
        Ok(())
    }
}
