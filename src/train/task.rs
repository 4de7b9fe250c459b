//! What the trainer needs from a kind of model and its data: building the network, batches of
//! training examples, the training forward pass, the perturbable input of a batch as a
//! [`Classifier`] (what noise and attacks work on), the evaluation set, and saving.
//!
//! - [`ImageTask`]: mlp and cnn on Fashion-MNIST or the synthetic set; inputs are pixels.
//! - [`FusionTask`]: the fusion network on JSONL records; the perturbable input is the network
//!   features (the `pgd-embeddings` mode perturbs the embeddings, see
//!   [`super::objective::EmbeddingPgd`]).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleSnapshot;
use burn::tensor::{Device, Int, Tensor};

use super::TrainError;
use super::config::{DataConfig, TrainConfig};
use crate::artifact::{self, ArtifactError, Metadata};
use crate::classifier::fusion::NetworkView;
use crate::classifier::{Classifier, Rows};
use crate::data::records::{self, SecuritySet};
use crate::data::{self, ImageSet, Split};
use crate::model::{FusionModel, FusionSpec, ImageNet, ImageSpec};
use crate::privacy::dpsgd::{DpSgd, PrivateStep};
use crate::workload::Examples;

/// A kind of model with its training and evaluation data, on one device.
pub trait Task<const D: usize> {
    type Model: Module + ModuleSnapshot;
    type Batch: Clone;
    /// The inference-mode model as a classifier of a batch's perturbable input.
    type View: Classifier<D>;

    /// A freshly initialised network on `device` (seed the device first).
    fn init(&self, device: &Device) -> Self::Model;
    /// The network of the model file at `path` on `device`, to fine-tune; refused unless it
    /// is this task's architecture.
    fn load(&self, path: &Path, _device: &Device) -> Result<Self::Model, TrainError> {
        Err(TrainError::Invalid(format!(
            "{}: only image models can be fine-tuned",
            path.display()
        )))
    }
    fn train_len(&self) -> usize;
    /// The training examples at `rows`, gathered on the device.
    fn batch(&self, rows: &[usize]) -> Self::Batch;
    /// DP-SGD's private gradients of `model` on `batch` (clipped per-example gradients and
    /// noise), for tasks that implement it.
    fn private_step(
        &self,
        _model: &Self::Model,
        _batch: &Self::Batch,
        _dp: &DpSgd,
    ) -> Option<PrivateStep> {
        None
    }
    /// A batch moved to another device (a data-parallel replica's).
    fn batch_to(&self, batch: Self::Batch, device: &Device) -> Self::Batch;
    fn labels(&self, batch: &Self::Batch) -> Tensor<1, Int>;
    /// Logits of the training model (autodiff) on a batch.
    fn forward(&self, model: &Self::Model, batch: &Self::Batch) -> Tensor<2>;
    /// The inference-mode model as a classifier of the batch's perturbable input, and that
    /// input.
    fn view(
        &self,
        valid: &Self::Model,
        batch: &Self::Batch,
    ) -> (Self::View, <Self::View as Classifier<D>>::Input);
    /// The batch's perturbable tensor (pixels, or network features).
    fn perturbable(&self, batch: &Self::Batch) -> Tensor<D>;
    /// The batch with its perturbable tensor replaced by `x`.
    fn perturbed(&self, batch: &Self::Batch, x: Tensor<D>) -> Self::Batch;
    /// The evaluation set through the inference-mode model.
    fn evaluation(
        &self,
        valid: &Self::Model,
    ) -> (Self::View, Examples<<Self::View as Classifier<D>>::Input>);
    /// Saves the inference-mode model in PyTorch layout with its spec and `metadata`.
    fn save(
        &self,
        valid: &Self::Model,
        metadata: &Metadata,
        path: &Path,
    ) -> Result<(), ArtifactError>;
    /// The training data's name (SYNTHETIC sets say so).
    fn data_name(&self) -> String;
    fn eval_len(&self) -> usize;
    /// Every file the data was read from.
    fn files(&self) -> Vec<PathBuf>;
}

/// The fewest copies of a watermark's triggers in the training set: a trigger seen once per
/// epoch is not reliably memorised in a few epochs.
pub const TRIGGER_COPIES: usize = 4;

/// Turns a config's training images into the ones a run trains on, on the run's device, and
/// gives the images to evaluate on instead of the config's when those would overlap them.
pub type Reshape<'a> =
    dyn Fn(ImageSet, &Device) -> Result<(ImageSet, Option<ImageSet>), TrainError> + 'a;

/// An image network and its images.
pub struct ImageTask {
    spec: ImageSpec,
    train: ImageSet,
    eval: ImageSet,
    files: Vec<PathBuf>,
}

impl ImageTask {
    /// Loads the training and evaluation images `cfg` names onto `device`; `reshape`, when
    /// given, turns the config's training images into the ones trained on (a membership
    /// attack's shadow set) and may replace the evaluation images (the config's limit still
    /// applies). With a watermark `secret`, its triggers are appended to the
    /// training images, repeated to make up about 1% of them and at least [`TRIGGER_COPIES`]
    /// times.
    pub fn load(
        cfg: &TrainConfig,
        spec: ImageSpec,
        device: &Device,
        secret: Option<&crate::watermark::Secret>,
        reshape: Option<&Reshape<'_>>,
    ) -> Result<Self, TrainError> {
        let (train_limit, eval_limit) = cfg.data.limits();
        let mut files = Vec::new();
        let (train, eval) = match &cfg.data {
            DataConfig::FashionMnist(d) => {
                let dir = data::resolve_data_dir(d.data_dir.as_deref())?;
                files.extend(data::split_files(&dir, Split::Train));
                files.extend(data::split_files(&dir, Split::Test));
                (
                    data::load_split(&dir, Split::Train, device)?,
                    data::load_split(&dir, Split::Test, device)?,
                )
            }
            DataConfig::Synthetic(d) => (
                data::synthetic(d.synthetic_size, cfg.seed, device),
                data::synthetic((d.synthetic_size / 4).max(1), cfg.seed ^ 0x7e57, device),
            ),
            DataConfig::Records(_) => {
                return Err(TrainError::Invalid(
                    "an image model cannot train on records".into(),
                ));
            }
        };
        let (mut train, mut eval) = (train.take(train_limit), eval);
        if let Some(reshape) = reshape {
            let (fit, held_out) = reshape(train, device)?;
            train = fit;
            eval = held_out.unwrap_or(eval);
        }
        if let Some(secret) = secret {
            let (x, y) = secret.triggers(device);
            let copies = (train.len() / 100 / secret.triggers).max(TRIGGER_COPIES);
            train.images = Tensor::cat(
                std::iter::once(train.images)
                    .chain(std::iter::repeat_n(x, copies))
                    .collect(),
                0,
            );
            train.labels = Tensor::cat(
                std::iter::once(train.labels)
                    .chain(std::iter::repeat_n(y, copies))
                    .collect(),
                0,
            );
        }
        Ok(Self {
            spec,
            train,
            eval: eval.take(eval_limit),
            files,
        })
    }
}

impl Task<4> for ImageTask {
    type Model = ImageNet;
    type Batch = (Tensor<4>, Tensor<1, Int>);
    type View = ImageNet;

    fn init(&self, device: &Device) -> ImageNet {
        self.spec.init(device)
    }

    fn load(&self, path: &Path, device: &Device) -> Result<ImageNet, TrainError> {
        let (net, spec, _) = artifact::open_image(path, None, device)?;
        if spec != self.spec {
            return Err(TrainError::Invalid(format!(
                "init {}: the model is {spec:?}, the config trains {:?}; give the [model] it was trained with",
                path.display(),
                self.spec
            )));
        }
        Ok(net)
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn batch(&self, rows: &[usize]) -> Self::Batch {
        self.train.gather(rows)
    }

    fn batch_to(&self, (x, y): Self::Batch, device: &Device) -> Self::Batch {
        (x.to_device(device), y.to_device(device))
    }

    fn private_step(
        &self,
        model: &ImageNet,
        (x, y): &Self::Batch,
        dp: &DpSgd,
    ) -> Option<PrivateStep> {
        Some(crate::privacy::dpsgd::private_step(model, x.clone(), y, dp))
    }

    fn labels(&self, batch: &Self::Batch) -> Tensor<1, Int> {
        batch.1.clone()
    }

    fn forward(&self, model: &ImageNet, batch: &Self::Batch) -> Tensor<2> {
        model.forward(batch.0.clone().autodiff())
    }

    fn view(&self, valid: &ImageNet, batch: &Self::Batch) -> (ImageNet, Tensor<4>) {
        (valid.clone(), batch.0.clone())
    }

    fn perturbable(&self, batch: &Self::Batch) -> Tensor<4> {
        batch.0.clone()
    }

    fn perturbed(&self, batch: &Self::Batch, x: Tensor<4>) -> Self::Batch {
        (x, batch.1.clone())
    }

    fn evaluation(&self, valid: &ImageNet) -> (ImageNet, Examples<Tensor<4>>) {
        let ex = Examples {
            inputs: self.eval.images.clone(),
            labels: self.eval.labels.clone(),
            ids: (0..self.eval.len()).collect(),
        };
        (valid.clone(), ex)
    }

    fn save(&self, valid: &ImageNet, meta: &Metadata, path: &Path) -> Result<(), ArtifactError> {
        artifact::save_image(valid, &self.spec, meta, path)
    }

    fn data_name(&self) -> String {
        self.train.name.clone()
    }

    fn eval_len(&self) -> usize {
        self.eval.len()
    }

    fn files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }
}

/// A fusion network and its records.
pub struct FusionTask {
    spec: FusionSpec,
    train: SecuritySet,
    eval: SecuritySet,
    files: Vec<PathBuf>,
}

impl FusionTask {
    /// Loads and validates the training and evaluation records `cfg` names onto `device`.
    pub fn load(cfg: &TrainConfig, spec: FusionSpec, device: &Device) -> Result<Self, TrainError> {
        let DataConfig::Records(d) = &cfg.data else {
            return Err(TrainError::Invalid(
                "a fusion model trains on records".into(),
            ));
        };
        let schema = spec.schema();
        // A copy of the first records, not a view: see `ImageSet::slice`.
        let take = |set: SecuritySet, limit: Option<usize>| match limit {
            Some(l) if l < set.len() => {
                let rows: Vec<usize> = (0..l).collect();
                set.select(crate::data::indices(&rows, &set.labels.device()))
            }
            _ => set,
        };
        let train = take(
            records::load(&d.train_records, &schema, device)?,
            d.train_limit,
        );
        let eval = take(
            records::load(&d.test_records, &schema, device)?,
            d.eval_limit,
        );
        Ok(Self {
            spec,
            train,
            eval,
            files: vec![d.train_records.clone(), d.test_records.clone()],
        })
    }
}

/// The same records on the autodiff device (for the training forward pass).
pub fn to_autodiff(set: &SecuritySet) -> SecuritySet {
    SecuritySet {
        text: set.text.clone().autodiff(),
        bytes: set.bytes.clone().autodiff(),
        histogram: set.histogram.clone().autodiff(),
        network: set.network.clone().autodiff(),
        present: set.present.clone().autodiff(),
        labels: set.labels.clone().autodiff(),
        name: set.name.clone(),
    }
}

impl Task<2> for FusionTask {
    type Model = FusionModel;
    type Batch = SecuritySet;
    type View = NetworkView;

    fn init(&self, device: &Device) -> FusionModel {
        self.spec.init(device)
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn batch(&self, rows: &[usize]) -> SecuritySet {
        self.train
            .select(data::indices(rows, &self.train.labels.device()))
    }

    fn batch_to(&self, batch: SecuritySet, device: &Device) -> SecuritySet {
        batch.to_device(device)
    }

    fn labels(&self, batch: &SecuritySet) -> Tensor<1, Int> {
        batch.labels.clone()
    }

    fn forward(&self, model: &FusionModel, batch: &SecuritySet) -> Tensor<2> {
        model.forward(&to_autodiff(batch))
    }

    fn view(&self, valid: &FusionModel, batch: &SecuritySet) -> (NetworkView, Rows<2>) {
        (NetworkView::new(valid, batch), NetworkView::input(batch))
    }

    fn perturbable(&self, batch: &SecuritySet) -> Tensor<2> {
        batch.network.clone()
    }

    fn perturbed(&self, batch: &SecuritySet, x: Tensor<2>) -> SecuritySet {
        SecuritySet {
            network: x,
            ..batch.clone()
        }
    }

    fn evaluation(&self, valid: &FusionModel) -> (NetworkView, Examples<Rows<2>>) {
        let ex = Examples {
            inputs: NetworkView::input(&self.eval),
            labels: self.eval.labels.clone(),
            ids: (0..self.eval.len()).collect(),
        };
        (NetworkView::new(valid, &self.eval), ex)
    }

    fn save(&self, valid: &FusionModel, meta: &Metadata, path: &Path) -> Result<(), ArtifactError> {
        artifact::save_fusion(valid, &self.spec, meta, path)
    }

    fn data_name(&self) -> String {
        self.train.name.clone()
    }

    fn eval_len(&self) -> usize {
        self.eval.len()
    }

    fn files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }
}
