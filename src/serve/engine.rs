//! The models the service holds on its device, and one forward pass over a batch of inputs
//! gathered from many requests: probabilities and decisions, the fitted detectors' scores and
//! the drift features, each written once over any [`Classifier`].

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor, TensorData};

use super::ServeError;
use crate::artifact::{self, AnyModel, OpenOptions, Opened};
use crate::certify::{Certificate, Smooth};
use crate::classifier::fusion::{EmbeddingView, NetworkView};
use crate::classifier::{Classifier, ImageModel, Input};
use crate::data::records::{self, Record};
use crate::detect::DetectError;
use crate::detect::drift::Summary;
use crate::detect::score::{BatchScores, score_batch_with};
use crate::detect::store::Fitted;
use crate::device::Chosen;
use crate::model::fusion::{FusionModel, FusionSpec, Modality};
use crate::model::image::IMAGE_SHAPE;
use crate::workload::{Examples, Job};

/// Inputs parsed and validated on the host: images `[n, 1, 28, 28]` in [0, 1], flattened, or
/// fusion records.
#[derive(Debug, Clone)]
pub enum Inputs {
    Images { values: Vec<f32>, n: usize },
    Records(Vec<Record>),
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Self::Images { n, .. } => *n,
            Self::Records(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Several requests' inputs as one batch (all of the same kind).
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Inputs>) -> Inputs {
        let mut values = Vec::new();
        let mut n = 0;
        let mut recs = Vec::new();
        let mut images = true;
        for p in parts {
            match p {
                Self::Images { values: v, n: k } => {
                    values.extend_from_slice(v);
                    n += k;
                }
                Self::Records(r) => {
                    images = false;
                    recs.extend(r.iter().cloned());
                }
            }
        }
        if images {
            Self::Images { values, n }
        } else {
            Self::Records(recs)
        }
    }

    /// Input `i` as a flat vector in the model's input box (for the extraction ledger); a
    /// record's network features.
    pub fn row(&self, i: usize) -> Vec<f32> {
        match self {
            Self::Images { values, .. } => {
                let d: usize = IMAGE_SHAPE.iter().product();
                values[i * d..(i + 1) * d].to_vec()
            }
            Self::Records(r) => r[i]
                .network
                .as_ref()
                .map(|v| v.iter().map(|x| *x as f32).collect())
                .unwrap_or_default(),
        }
    }

    /// Inputs `ids` alone.
    pub fn select(&self, ids: &[usize]) -> Inputs {
        match self {
            Self::Images { .. } => Self::Images {
                values: ids.iter().flat_map(|i| self.row(*i)).collect(),
                n: ids.len(),
            },
            Self::Records(r) => Self::Records(ids.iter().map(|i| r[*i].clone()).collect()),
        }
    }
}

/// A loaded model, ready to run.
pub struct Served {
    pub path: PathBuf,
    pub sha256: String,
    pub opened: Opened,
    kind: Kind,
}

#[allow(clippy::large_enum_variant)] // one per loaded model
enum Kind {
    Image(ImageModel),
    Fusion { net: FusionModel, spec: FusionSpec },
}

impl Served {
    /// Opens a model, checking its signature first when `verify_key` is given.
    pub fn open(
        path: &Path,
        verify_key: Option<&Path>,
        device: &Chosen,
    ) -> Result<Self, ServeError> {
        let opened =
            artifact::open_verified(path, OpenOptions::default(), verify_key, &device.device)?;
        let kind = match &opened.model {
            AnyModel::Image { net, .. } => Kind::Image(ImageModel::Single(net.valid())),
            AnyModel::Ensemble { ensemble, .. } => {
                Kind::Image(ImageModel::Ensemble(ensemble.valid()))
            }
            AnyModel::Fusion { net, spec, .. } => Kind::Fusion {
                net: net.valid(),
                spec: spec.clone(),
            },
        };
        Ok(Self {
            path: path.to_path_buf(),
            sha256: opened.sha256.clone(),
            opened,
            kind,
        })
    }

    /// The file name, for metrics and the dashboard.
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    pub fn num_classes(&self) -> usize {
        self.opened.model.num_classes()
    }

    /// Whether the model reads images (else fusion records).
    pub fn reads_images(&self) -> bool {
        matches!(self.kind, Kind::Image(_))
    }

    /// The fusion spec, for checking records.
    pub fn fusion_spec(&self) -> Option<&FusionSpec> {
        match &self.kind {
            Kind::Fusion { spec, .. } => Some(spec),
            Kind::Image(_) => None,
        }
    }

    /// Input `i` as the extraction ledger sees it: pixels, or a record's network features
    /// rescaled to [0, 1] by their box (empty for a record without them).
    pub fn ledger_row(&self, inputs: &Inputs, i: usize) -> Vec<f32> {
        let row = inputs.row(i);
        match &self.kind {
            Kind::Fusion { spec, .. } => row
                .iter()
                .zip(&spec.network_box)
                .map(|(v, (lo, hi))| ((f64::from(*v) - lo) / (hi - lo)) as f32)
                .collect(),
            Kind::Image(_) => row,
        }
    }

    /// Runs `job` on `inputs` through this model (a fusion model through its default input,
    /// as `rampart detect fit` does).
    pub fn run<J: Job>(
        &self,
        inputs: &Inputs,
        job: J,
        device: &Chosen,
    ) -> Result<J::Output, ServeError> {
        let d = &device.device;
        let n = inputs.len();
        let labels = Tensor::<1, Int>::zeros([n], d);
        let ids: Vec<usize> = (0..n).collect();
        match (&self.kind, inputs) {
            (Kind::Image(model), Inputs::Images { values, n }) => {
                let [c, h, w] = IMAGE_SHAPE;
                let x = Tensor::<4>::from_data(TensorData::new(values.clone(), [*n, c, h, w]), d);
                Ok(job.run(
                    model,
                    Examples {
                        inputs: x,
                        labels,
                        ids,
                    },
                ))
            }
            (Kind::Fusion { net, spec }, Inputs::Records(recs)) => {
                let set = records::to_set(recs, &spec.schema(), "request", d)
                    .map_err(|e| ServeError::BadInput(e.to_string()))?;
                let modality = spec.default_input();
                if modality == Modality::Network {
                    let view = NetworkView::new(net, &set);
                    let inputs = NetworkView::input(&set);
                    return Ok(job.run(
                        &view,
                        Examples {
                            inputs,
                            labels,
                            ids,
                        },
                    ));
                }
                let view = EmbeddingView::new(net, &set, modality);
                let inputs = view
                    .input()
                    .ok_or_else(|| ServeError::BadInput("the model embeds no input".into()))?;
                Ok(job.run(
                    &view,
                    Examples {
                        inputs,
                        labels,
                        ids,
                    },
                ))
            }
            _ => Err(ServeError::BadInput(
                "images for a fusion model or records for an image model".into(),
            )),
        }
    }
}

/// One batch's outcome, read back.
#[derive(Debug, Clone, Default)]
pub struct Forward {
    /// `probabilities[i]`: softmax of input i's logits.
    pub probabilities: Vec<Vec<f32>>,
    /// The decision (a class, or the "no decision" index of a model that abstains).
    pub decision: Vec<i64>,
    pub scores: Option<BatchScores>,
    /// Drift features and entropies, left on the device; class counts from the decisions.
    pub summary: Option<Summary>,
}

/// Probabilities and decisions, with the detectors and the drift summary when asked.
pub struct ForwardJob<'a> {
    pub fitted: Option<&'a Fitted>,
    pub drift: bool,
}

impl Job for ForwardJob<'_> {
    type Output = Result<Forward, DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let x = ex.inputs;
        let n = x.len();
        let k = model.num_classes();
        let logits = model.logits(x.clone());
        // Probabilities and decisions as rows [k + 1, n], read back with the detectors' scores
        // when there are detectors: one transfer per batch.
        let rows = Tensor::cat(
            vec![
                softmax(logits.clone(), 1).transpose(),
                model.decide(x.clone()).float().reshape([1, n]),
            ],
            0,
        );
        let (scores, all) = match self.fitted {
            Some(f) => {
                let (s, rest) = score_batch_with(f, model, &x, Some(rows))?;
                (Some(s), rest)
            }
            None => (None, crate::detect::host_floats(rows, "probabilities")?),
        };
        let probabilities: Vec<Vec<f32>> = (0..n)
            .map(|i| (0..k).map(|c| all[c * n + i]).collect())
            .collect();
        let decision: Vec<i64> = all[k * n..(k + 1) * n].iter().map(|d| *d as i64).collect();
        let summary = self.drift.then(|| {
            let log_p = log_softmax(logits, 1);
            let entropy = (log_p.clone().exp() * log_p)
                .sum_dim(1)
                .squeeze_dim::<1>(1)
                .neg();
            let (features, penultimate) = match model.features(x.clone()) {
                Some(f) => (f, true),
                None => (x.x().clone().flatten::<2>(1, D - 1), false),
            };
            let mut counts = vec![0u64; model.decisions()];
            for d in &decision {
                if let Some(c) = counts.get_mut(*d as usize) {
                    *c += 1;
                }
            }
            Summary {
                features,
                entropy,
                counts,
                penultimate,
            }
        });
        Ok(Forward {
            probabilities,
            decision,
            scores,
            summary,
        })
    }
}

/// CERTIFY on each input with fresh noise keyed by `ids`.
pub struct SmoothJob {
    pub sigma: f64,
    pub n0: usize,
    pub n: usize,
    pub alpha: f64,
    pub seed: u64,
    pub ids: Vec<u64>,
    pub batch: usize,
}

impl Job for SmoothJob {
    type Output = Vec<Certificate>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        Smooth {
            base: model,
            sigma: self.sigma,
            batch: self.batch,
            seed: self.seed,
            lattice: None,
        }
        .certify(&ex.inputs, &self.ids, self.n0, self.n, self.alpha)
    }
}

/// Checks detectors against the model they will score with (one forward pass on `probe`).
pub struct CheckJob<'a> {
    pub fitted: &'a Fitted,
}

impl Job for CheckJob<'_> {
    type Output = Result<(), DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        crate::detect::score::check_model(self.fitted, model, &ex.inputs)
    }
}
