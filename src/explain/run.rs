//! One explanation of one example for every model kind: the method's attributions of the
//! target class (default: the model's prediction) for each input the model reads, with the
//! prediction, and with `compare` the same for the example's PGD adversarial version.
//!
//! Fusion models are explained one modality at a time with the others fixed (words, byte
//! positions, network features); each modality's share is its part of the total |attribution|.
//! A modality a record lacks is multiplied out by the model, so its attributions are zero.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor};
use serde::Serialize;

use super::lime::{Patches, Sequence, Tabular};
use super::method::{Gradient, Method};
use super::{ExplainError, Explainer, completeness_delta, host_floats};
use crate::artifact::{AnyModel, ModelInfo};
use crate::attack::{Attack, Pgd};
use crate::classifier::fusion::{EmbeddingView, NetworkView};
use crate::classifier::{Classifier, ImageModel, Input};
use crate::data::records::{FLOW_FEATURES, SecuritySet};
use crate::model::Modality;
use crate::workload::{Data, DataInfo, Workload, modality_name};

/// What to explain and how.
#[derive(Debug, Clone)]
pub struct Plan {
    pub method: Method,
    /// The class explained (default: each input's prediction).
    pub target: Option<usize>,
    /// Also explain the example's adversarial version under this attack.
    pub compare: Option<Pgd>,
    /// Fusion models: explain only this modality (default: every one the model reads); the
    /// one `compare` attacks (default: the model's default input).
    pub modality: Option<Modality>,
    /// Seeds the device's generator (SmoothGrad's noise, PGD's random start).
    pub seed: u64,
}

/// What a fusion record brings besides its tensors: its text as written (for the words) and
/// reference network rows `[R, F]` (LIME draws removed features from them).
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub text: Option<String>,
    pub reference: Vec<f32>,
}

/// A LIME surrogate's fit.
#[derive(Debug, Clone, Serialize)]
pub struct Surrogate {
    pub r2: f64,
    pub intercept: f64,
    pub local_prediction: f64,
    pub model_prediction: f64,
    pub kernel_width: f64,
    pub samples: usize,
    /// Image superpixels: each patch and its weight.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<(String, f64)>,
}

/// The attributions of one input of the model.
#[derive(Debug, Clone, Serialize)]
pub struct Map {
    /// "image", "text", "bytes" or "network".
    pub modality: String,
    /// `[1, 28, 28]` for images; `[n]` for words, bytes and features.
    pub shape: Vec<usize>,
    /// A name per value (words, bytes, features); empty for images.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    pub values: Vec<f64>,
    /// This modality's part of the total |attribution| over the maps of its side.
    pub share: f64,
    /// Σ attributions − (f(x) − f(baseline)) of integrated gradients, logit units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completeness_delta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lime: Option<Surrogate>,
}

/// One input (clean or adversarial) explained.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// "clean" or "adversarial".
    pub input: String,
    pub prediction: usize,
    pub target: usize,
    /// The model's probability of the target class.
    pub probability: f64,
    /// The image's pixels, for the heat map (images only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pixels: Vec<f32>,
    pub maps: Vec<Map>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: ModelInfo,
    pub data: DataInfo,
    /// The example's index in its set (None for a file given with --input).
    pub example: Option<usize>,
    pub label: Option<usize>,
    pub classes: Vec<String>,
    pub method: String,
    /// "clean", then "adversarial" with --compare-adversarial.
    pub sides: Vec<Side>,
    /// Modalities not explained, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// Explains the workload's one example (its first).
pub fn explain(
    work: &Workload,
    plan: &Plan,
    context: &Context,
    labelled: bool,
) -> Result<Report, ExplainError> {
    let mut skipped = Vec::new();
    work.device.device.seed(plan.seed);
    let (sides, label) = match (&work.opened.model, &work.data) {
        (AnyModel::Image { net, .. }, Data::Images(set)) => {
            let model = ImageModel::Single(net.valid());
            image_sides(&model, set.range(0, 1), plan, labelled)?
        }
        (AnyModel::Ensemble { ensemble, .. }, Data::Images(set)) => {
            let model = ImageModel::Ensemble(ensemble.valid());
            image_sides(&model, set.range(0, 1), plan, labelled)?
        }
        (AnyModel::Fusion { net, spec, .. }, Data::Records(set)) => {
            let net = net.valid();
            let one = set.range(0, 1);
            let label = super::super::data::host_labels(&one.labels)[0];
            let attacked = plan.modality.unwrap_or(spec.default_input());
            let modalities: Vec<Modality> = match plan.modality {
                Some(m) => vec![m],
                None => spec.modalities.clone(),
            };
            let fusion = Fusion {
                net: &net,
                set: one,
                context,
                plan,
            };
            let mut sides = vec![fusion.side("clean", &modalities, None, &mut skipped)?];
            if let Some(pgd) = &plan.compare {
                sides.push(fusion.side("adversarial", &[attacked], Some(pgd), &mut skipped)?);
            }
            (sides, label)
        }
        _ => {
            return Err(ExplainError::Invalid(
                "the model and the data are of different kinds".into(),
            ));
        }
    };
    Ok(Report {
        model: work.model_info(),
        data: work.data_info(),
        example: labelled.then(|| work.ids.first().copied()).flatten(),
        label: labelled.then_some(label),
        classes: work.class_names(),
        method: plan.method.name(),
        sides,
        skipped,
    })
}

/// The prediction for one input and the probability of each class.
fn predict<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
) -> Result<(usize, Vec<f64>), ExplainError> {
    let p = host_floats(softmax(model.logits(x.clone()), 1))?;
    let best = (0..p.len())
        .max_by(|&a, &b| p[a].total_cmp(&p[b]))
        .unwrap_or(0);
    Ok((best, p.into_iter().map(f64::from).collect()))
}

/// A gradient method's attributions of one input, flattened.
struct Attributed {
    values: Vec<f64>,
    /// The shape of one input.
    dims: Vec<usize>,
    /// Integrated gradients' completeness delta.
    delta: Option<f64>,
}

fn gradient_map<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    target: usize,
    g: &Gradient,
) -> Result<Attributed, ExplainError> {
    let t = crate::data::indices(&[target], &x.x().device());
    let a = g.attribute(model, x, &t);
    let dims = a.dims()[1..].to_vec();
    let delta = match g.integrated() {
        Some(ig) => {
            let baseline = x.with_x(ig.baseline(x.x()));
            let d = completeness_delta(model, x, &baseline, &t, a.clone());
            Some(f64::from(host_floats(d)?[0]))
        }
        None => None,
    };
    let values = host_floats(a)?.into_iter().map(f64::from).collect();
    Ok(Attributed {
        values,
        dims,
        delta,
    })
}

/// The fit of a LIME or KernelSHAP explanation, with each interpretable feature's weight.
fn surrogate(e: &super::lime::Explanation) -> Surrogate {
    Surrogate {
        r2: e.r2,
        intercept: e.intercept,
        local_prediction: e.local_prediction,
        model_prediction: e.model_prediction,
        kernel_width: e.kernel_width,
        samples: e.samples,
        features: e.names.iter().cloned().zip(e.weights.clone()).collect(),
    }
}

/// The clean side of an image, and with `compare` its adversarial side.
fn image_sides(
    model: &ImageModel,
    (x, labels): (Tensor<4>, Tensor<1, Int>),
    plan: &Plan,
    labelled: bool,
) -> Result<(Vec<Side>, usize), ExplainError> {
    let label = super::super::data::host_labels(&labels)[0];
    let clean = image_side(model, x.clone(), "clean", plan)?;
    // An unlabelled image is attacked away from the model's own prediction.
    let labels = if labelled {
        labels
    } else {
        crate::data::indices(&[clean.prediction], &x.device())
    };
    let mut sides = vec![clean];
    if let Some(pgd) = &plan.compare {
        let adv = pgd.perturb(model, &x, &labels, None);
        sides.push(image_side(model, adv, "adversarial", plan)?);
    }
    Ok((sides, label))
}

fn image_side(
    model: &ImageModel,
    x: Tensor<4>,
    input: &str,
    plan: &Plan,
) -> Result<Side, ExplainError> {
    let (prediction, p) = predict(model, &x)?;
    let target = checked_target(plan.target, prediction, p.len())?;
    let pixels = host_floats(x.clone())?;
    let map = match &plan.method {
        Method::Gradient(g) => {
            let a = gradient_map(model, &x, target, g)?;
            Map {
                modality: "image".into(),
                shape: a.dims,
                names: Vec::new(),
                values: a.values,
                share: 1.0,
                completeness_delta: a.delta,
                lime: None,
            }
        }
        Method::Lime { lime, patch, .. } => {
            let rep = Patches::new(model, x, *patch)?;
            let e = lime.explain(&rep, target)?;
            Map {
                modality: "image".into(),
                shape: vec![1, 28, 28],
                names: Vec::new(),
                values: rep.paint(&e.weights),
                share: 1.0,
                completeness_delta: None,
                lime: Some(surrogate(&e)),
            }
        }
    };
    Ok(Side {
        input: input.into(),
        prediction,
        target,
        probability: p[target],
        pixels,
        maps: vec![map],
    })
}

fn checked_target(
    target: Option<usize>,
    prediction: usize,
    classes: usize,
) -> Result<usize, ExplainError> {
    match target {
        Some(t) if t >= classes => Err(ExplainError::Invalid(format!(
            "--target {t} is not a class of a {classes}-class model (0 to {})",
            classes - 1
        ))),
        Some(t) => Ok(t),
        None => Ok(prediction),
    }
}

/// One fusion record to explain.
struct Fusion<'a> {
    net: &'a crate::model::FusionModel,
    set: SecuritySet,
    context: &'a Context,
    plan: &'a Plan,
}

impl Fusion<'_> {
    /// The maps of `modalities`; with `attack`, of the record with the attacked modality
    /// (the first) replaced by its adversarial version.
    fn side(
        &self,
        input: &str,
        modalities: &[Modality],
        attack: Option<&Pgd>,
        skipped: &mut Vec<String>,
    ) -> Result<Side, ExplainError> {
        let mut set = self.set.clone();
        if let Some(pgd) = attack {
            set = self.attacked(modalities[0], pgd)?;
        }
        let (prediction, p) =
            predict(&NetworkView::new(self.net, &set), &NetworkView::input(&set))?;
        let target = checked_target(self.plan.target, prediction, p.len())?;
        let mut maps = Vec::new();
        for &m in modalities {
            match self.map(&set, m, target)? {
                Some(map) => maps.push(map),
                None => skipped.push(format!("{}: the model does not read it", modality_name(m))),
            }
        }
        let total: f64 = maps.iter().map(weight).sum();
        for map in &mut maps {
            map.share = if total > 0.0 {
                weight(map) / total
            } else {
                0.0
            };
        }
        Ok(Side {
            input: input.into(),
            prediction,
            target,
            probability: p[target],
            pixels: Vec::new(),
            maps,
        })
    }

    /// The record with modality `m` replaced by its PGD adversarial version (embeddings for
    /// text and bytes: the record keeps its tokens, so the attacked side is explained through
    /// the embedding view only).
    fn attacked(&self, m: Modality, pgd: &Pgd) -> Result<SecuritySet, ExplainError> {
        if m != Modality::Network {
            return Err(ExplainError::Invalid(format!(
                "--compare-adversarial attacks the network features of a fusion model; {} \
                 embeddings have no record to show (use --modality network)",
                modality_name(m)
            )));
        }
        let view = NetworkView::new(self.net, &self.set);
        let x = NetworkView::input(&self.set);
        let adv = pgd.perturb(&view, &x, &self.set.labels, None);
        Ok(SecuritySet {
            network: adv,
            ..self.set.clone()
        })
    }

    fn map(
        &self,
        set: &SecuritySet,
        m: Modality,
        target: usize,
    ) -> Result<Option<Map>, ExplainError> {
        let names = self.names(set, m)?;
        let (values, lime) = match (&self.plan.method, m) {
            (Method::Gradient(g), Modality::Network) => {
                let view = NetworkView::new(self.net, set);
                let a = gradient_map(&view, &NetworkView::input(set), target, g)?;
                return Ok(Some(map_of(m, names, a.values, a.delta, None)));
            }
            (Method::Gradient(g), _) => {
                let view = EmbeddingView::new(self.net, set, m);
                let Some(x) = view.input() else {
                    return Ok(None);
                };
                let a = gradient_map(&view, &x, target, g)?;
                // One value per position: the sum over the embedding dimensions.
                let per = a.dims[1];
                let v: Vec<f64> = a.values.chunks(per).map(|c| c.iter().sum()).collect();
                let v = v.into_iter().take(names.len()).collect();
                return Ok(Some(map_of(m, names, v, a.delta, None)));
            }
            (Method::Lime { .. }, _) if names.is_empty() => (Vec::new(), None),
            (Method::Lime { lime, chunk, .. }, Modality::Text | Modality::Bytes) => {
                let rep = match m {
                    Modality::Text => {
                        let text = self.context.text.clone().unwrap_or_default();
                        Sequence::words(self.net, set.clone(), &text)?
                    }
                    _ => Sequence::bytes(self.net, set.clone(), *chunk)?,
                };
                let e = lime.explain(&rep, target)?;
                // Each token carries its word's weight, each byte its chunk's.
                let v = (0..names.len())
                    .map(|p| match m {
                        Modality::Text => e
                            .names
                            .iter()
                            .position(|n| *n == names[p])
                            .map_or(0.0, |f| e.weights[f]),
                        _ => e.weights[p / chunk],
                    })
                    .collect();
                (v, Some(surrogate(&e)))
            }
            (Method::Lime { lime, .. }, Modality::Network) => {
                let view = NetworkView::new(self.net, set);
                let rep = Tabular::new(
                    &view,
                    NetworkView::input(set),
                    self.context.reference.clone(),
                    names.clone(),
                )?;
                let e = lime.explain(&rep, target)?;
                (e.weights.clone(), Some(surrogate(&e)))
            }
        };
        Ok(Some(map_of(m, names, values, None, lime)))
    }

    /// The names of modality `m`'s values: the words, the bytes (hex) or the features.
    fn names(&self, set: &SecuritySet, m: Modality) -> Result<Vec<String>, ExplainError> {
        Ok(match m {
            Modality::Text => {
                crate::data::records::words(self.context.text.as_deref().unwrap_or(""))
            }
            Modality::Bytes => {
                let b = host_floats(set.bytes.clone().float())?;
                b.iter()
                    .take_while(|&&v| v > 0.0)
                    .enumerate()
                    .map(|(i, &v)| format!("{i}:{:02x}", v as u32 - 1))
                    .collect()
            }
            Modality::Network => {
                let f = set.network.dims()[1];
                if f == FLOW_FEATURES.len() && set.name.contains("SYNTHETIC") {
                    FLOW_FEATURES.iter().map(|s| s.to_string()).collect()
                } else {
                    (0..f).map(|j| format!("network[{j}]")).collect()
                }
            }
        })
    }
}

fn map_of(
    m: Modality,
    names: Vec<String>,
    values: Vec<f64>,
    delta: Option<f64>,
    lime: Option<Surrogate>,
) -> Map {
    Map {
        modality: modality_name(m).into(),
        shape: vec![values.len()],
        names,
        values,
        share: 0.0,
        completeness_delta: delta,
        lime,
    }
}

/// A map's total |attribution|: over its values, or for LIME over its interpretable
/// features (a word counts once however often it occurs, a byte chunk once).
fn weight(map: &Map) -> f64 {
    match &map.lime {
        Some(s) if !s.features.is_empty() => s.features.iter().map(|(_, w)| w.abs()).sum(),
        _ => map.values.iter().map(|x| x.abs()).sum(),
    }
}
