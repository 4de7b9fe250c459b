//! A model of any kind opened together with the labelled examples it is run on: what `eval`,
//! `attack`, `certify` and `predict` take. Each of those is a [`Job`], written once over the
//! [`Classifier`] interface; [`Workload::run`] hands it the right classifier (an image network,
//! an ensemble, or the fusion network seen through one modality).

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use serde::Serialize;

use crate::artifact::{self, AnyModel, ArtifactError, ModelInfo, OpenOptions, Opened};
use crate::classifier::fusion::{EmbeddingView, NetworkView};
use crate::classifier::{Classifier, ImageModel};
use crate::data::records::{self, RecordError, SecuritySet};
use crate::data::{self, DataError, FASHION_CLASSES, ImageSet, Split};
use crate::device::{self, Chosen, DeviceChoice};
use crate::model::Modality;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("device: {0}")]
    Device(String),
    #[error("{0}")]
    Mismatch(String),
}

/// Where the examples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A Fashion-MNIST split (directory: flag, `$RAMPART_DATA`, or the defaults).
    FashionMnist { dir: Option<PathBuf>, split: Split },
    /// `size` SYNTHETIC bar images drawn with `seed`.
    Synthetic { size: usize, seed: u64 },
    /// JSONL records, for fusion models.
    Records(PathBuf),
    /// One 28×28 PNG image, unlabelled (its label reads 0).
    Png(PathBuf),
}

/// What to open: the model, its data, the device, and which examples.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub model: PathBuf,
    pub open: OpenOptions,
    pub source: Source,
    pub device: DeviceChoice,
    /// Every `skip`-th example (at least 1) from example `offset` on, at most `limit` of them.
    pub offset: usize,
    pub skip: usize,
    pub limit: Option<usize>,
    /// Verify the model's signature with this public key before loading it.
    pub verify_key: Option<PathBuf>,
    /// Which stripe of the selected examples this process runs.
    pub shard: Shard,
}

pub use crate::shard::Shard;

/// The examples of a workload (tensor handles: variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Data {
    Images(ImageSet),
    Records(SecuritySet),
}

/// The labelled examples a job runs on, with each example's index in its full set (which
/// keys smoothing noise and names rows in outputs).
#[derive(Debug, Clone)]
pub struct Examples<I> {
    pub inputs: I,
    pub labels: Tensor<1, Int>,
    pub ids: Vec<usize>,
}

/// An operation written once over any classifier.
pub trait Job {
    type Output;
    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        examples: Examples<C::Input>,
    ) -> Self::Output;
}

/// The data of a report, the same for every kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataInfo {
    /// Where the examples came from; SYNTHETIC sets say so.
    pub name: String,
    pub examples: usize,
    pub synthetic: bool,
}

/// A model with its examples on one device.
pub struct Workload {
    pub opened: Opened,
    pub data: Data,
    pub ids: Vec<usize>,
    pub device: Chosen,
    /// Every file read: model, manifest and members, data.
    pub files: Vec<PathBuf>,
}

impl Workload {
    /// Opens the model and its data and checks that they fit each other.
    pub fn open(spec: &WorkloadSpec) -> Result<Self, WorkloadError> {
        let device = device::choose(spec.device).map_err(WorkloadError::Device)?;
        let opened = artifact::open_verified(
            &spec.model,
            spec.open,
            spec.verify_key.as_deref(),
            &device.device,
        )?;
        let mut files = opened.files.clone();
        let (data, ids) = load_data(&opened, spec, &device, &mut files)?;
        Ok(Self {
            opened,
            data,
            ids,
            device,
            files,
        })
    }

    pub fn model_info(&self) -> ModelInfo {
        self.opened.info()
    }

    pub fn data_info(&self) -> DataInfo {
        let name = match &self.data {
            Data::Images(s) => s.name.clone(),
            Data::Records(s) => s.name.clone(),
        };
        DataInfo {
            synthetic: name.contains("SYNTHETIC"),
            examples: self.ids.len(),
            name,
        }
    }

    /// The input a job attacks: "images", or a fusion model's `modality` (default: its
    /// default input) as "network", "text" or "bytes".
    pub fn input_name(&self, modality: Option<Modality>) -> String {
        match &self.opened.model {
            AnyModel::Fusion { spec, .. } => {
                modality_name(modality.unwrap_or(spec.default_input())).to_string()
            }
            _ => "images".to_string(),
        }
    }

    /// The names of the classes, in label order.
    pub fn class_names(&self) -> Vec<String> {
        match (&self.opened.model, &self.data) {
            (AnyModel::Fusion { spec, .. }, _) => spec.class_names.clone(),
            (_, Data::Images(s)) if s.name.contains("SYNTHETIC") => {
                (0..s.num_classes).map(|i| format!("bar {i}")).collect()
            }
            _ => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The same workload with only the modalities in `keep` (text, bytes, network) present in
    /// each record; `None` for image workloads.
    pub fn only(&self, keep: [bool; 3]) -> Option<Workload> {
        let Data::Records(set) = &self.data else {
            return None;
        };
        Some(Workload {
            opened: self.opened.clone(),
            data: Data::Records(set.only(keep)),
            ids: self.ids.clone(),
            device: self.device.clone(),
            files: self.files.clone(),
        })
    }

    fn no_modality(&self, modality: Option<Modality>) -> Result<(), WorkloadError> {
        match modality {
            Some(m) => Err(WorkloadError::Mismatch(format!(
                "--modality {}: {} is an image model; modalities are for fusion models",
                modality_name(m),
                self.opened.path.display()
            ))),
            None => Ok(()),
        }
    }

    /// Runs `job` on an inference-mode copy of the model. For a fusion model, `modality`
    /// chooses the input the classifier exposes (default: the network features, or for a
    /// model without them its first modality; text and bytes are their embeddings); image
    /// models take none.
    pub fn run<J: Job>(
        &self,
        job: J,
        modality: Option<Modality>,
    ) -> Result<J::Output, WorkloadError> {
        let mismatch = |m: String| Err(WorkloadError::Mismatch(m));
        match (&self.opened.model, &self.data) {
            (AnyModel::Image { net, .. }, Data::Images(set)) => {
                self.no_modality(modality)?;
                let model = ImageModel::Single(net.valid());
                Ok(job.run(&model, image_examples(set, &self.ids)))
            }
            (AnyModel::Ensemble { ensemble, .. }, Data::Images(set)) => {
                self.no_modality(modality)?;
                let model = ImageModel::Ensemble(ensemble.valid());
                Ok(job.run(&model, image_examples(set, &self.ids)))
            }
            (AnyModel::Fusion { net, spec, .. }, Data::Records(set)) => {
                let modality = modality.unwrap_or(spec.default_input());
                if !spec.has(modality) {
                    return mismatch(format!(
                        "{} does not read the {} input (it reads only {})",
                        self.opened.path.display(),
                        modality_name(modality),
                        spec.modalities
                            .iter()
                            .map(|m| modality_name(*m))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                let net = net.valid();
                let labels = set.labels.clone();
                let ids = self.ids.clone();
                if modality == Modality::Network {
                    let view = NetworkView::new(&net, set);
                    let inputs = NetworkView::input(set);
                    return Ok(job.run(
                        &view,
                        Examples {
                            inputs,
                            labels,
                            ids,
                        },
                    ));
                }
                let view = EmbeddingView::new(&net, set, modality);
                match view.input() {
                    Some(inputs) => Ok(job.run(
                        &view,
                        Examples {
                            inputs,
                            labels,
                            ids,
                        },
                    )),
                    None => mismatch(format!(
                        "the model does not embed {}",
                        modality_name(modality)
                    )),
                }
            }
            _ => mismatch("the model and the data are of different kinds".into()),
        }
    }
}

/// "network", "text", "bytes".
pub fn modality_name(m: Modality) -> &'static str {
    match m {
        Modality::Text => "text",
        Modality::Bytes => "bytes",
        Modality::Network => "network",
    }
}

fn image_examples(set: &ImageSet, ids: &[usize]) -> Examples<Tensor<4>> {
    Examples {
        inputs: set.images.clone(),
        labels: set.labels.clone(),
        ids: ids.to_vec(),
    }
}

/// Loads the examples `spec` names for `opened` (every skip-th, at most limit), checking that
/// the kinds and class counts fit and that some examples are left.
fn load_data(
    opened: &Opened,
    spec: &WorkloadSpec,
    device: &Chosen,
    files: &mut Vec<PathBuf>,
) -> Result<(Data, Vec<usize>), WorkloadError> {
    let path = opened.path.display();
    let d = &device.device;
    let (data, ids) = match (&opened.model, &spec.source) {
        (AnyModel::Fusion { .. }, Source::FashionMnist { .. } | Source::Synthetic { .. }) => {
            return Err(WorkloadError::Mismatch(format!(
                "{path} is a multimodal fusion model: pass its JSONL records with --records"
            )));
        }
        (AnyModel::Fusion { spec: fspec, .. }, Source::Records(records_path)) => {
            files.push(records_path.clone());
            let all = records::load(records_path, &fspec.schema(), d)?;
            let ids = spec.shard.stripe(data::every_index(
                all.len(),
                spec.offset,
                spec.skip,
                spec.limit,
            ));
            let set = all.select(data::indices(&ids, d));
            (Data::Records(set), ids)
        }
        (AnyModel::Fusion { .. }, Source::Png(_)) => {
            return Err(WorkloadError::Mismatch(format!(
                "{path} is a multimodal fusion model: give it a JSONL record, not a PNG"
            )));
        }
        (_, Source::Png(png)) => {
            files.push(png.clone());
            let bytes = crate::artifact::files::read_bounded(png, crate::artifact::files::PNG)
                .map_err(crate::artifact::ArtifactError::from)?;
            let pixels = data::png::decode(bytes)
                .map_err(|e| WorkloadError::Mismatch(format!("{}: {e}", png.display())))?;
            let set = ImageSet {
                images: Tensor::from_data(TensorData::new(pixels, [1, 1, 28, 28]), d),
                labels: Tensor::from_data(TensorData::new(vec![0i64], [1]), d),
                num_classes: opened.model.num_classes(),
                name: format!("{} (unlabelled)", png.display()),
            };
            (Data::Images(set), vec![0])
        }
        (_, Source::Records(_)) => {
            return Err(WorkloadError::Mismatch(format!(
                "records (--records, or --input FILE.jsonl) are for multimodal fusion models; {path} is an image model (use --dataset, or --input FILE.png)"
            )));
        }
        (_, Source::FashionMnist { dir, split }) => {
            let dir = data::resolve_data_dir(dir.as_deref())?;
            files.extend(data::split_files(&dir, *split));
            images(opened, data::load_split(&dir, *split, d)?, spec)?
        }
        (_, Source::Synthetic { size, seed }) => {
            images(opened, data::synthetic(*size, *seed, d), spec)?
        }
    };
    if ids.is_empty() {
        return Err(WorkloadError::Mismatch(format!(
            "no examples to run on (offset {}, skip {}, limit {:?}, shard {} of {}); the data set is empty, ends before the offset or has fewer examples than shards",
            spec.offset, spec.skip, spec.limit, spec.shard.index, spec.shard.count
        )));
    }
    Ok((data, ids))
}

/// Every skip-th image of `all`, at most limit, once the class counts are checked.
fn images(
    opened: &Opened,
    all: ImageSet,
    spec: &WorkloadSpec,
) -> Result<(Data, Vec<usize>), WorkloadError> {
    check_classes(opened, &all)?;
    let ids = data::every_index(all.len(), spec.offset, spec.skip, spec.limit);
    if spec.shard.count <= 1 {
        return Ok((
            Data::Images(all.every(spec.offset, spec.skip, spec.limit)),
            ids,
        ));
    }
    let ids = spec.shard.stripe(ids);
    let (images, labels) = all.gather(&ids);
    Ok((
        Data::Images(ImageSet {
            images,
            labels,
            ..all
        }),
        ids,
    ))
}

fn check_classes(opened: &Opened, set: &ImageSet) -> Result<(), WorkloadError> {
    let model = opened.model.num_classes();
    if model != set.num_classes {
        return Err(WorkloadError::Mismatch(format!(
            "{} has {model} classes but {} has {}; run it on data with the same classes",
            opened.path.display(),
            set.name,
            set.num_classes
        )));
    }
    Ok(())
}
