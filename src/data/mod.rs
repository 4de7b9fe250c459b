//! Data: Fashion-MNIST images (the IDX format), where to find them, a seeded synthetic set,
//! and the multimodal JSONL records.
//!
//! Images are pixels in [0, 1] with shape `[N, 1, 28, 28]`; labels are class indices. A whole
//! set is uploaded to the device once and batches are gathered there.
//!
//! - [`idx`]: the IDX file format, read with bounds.
//! - [`synthetic`]: SYNTHETIC bars.
//! - [`records`]: multimodal security records (JSONL), validated line by line.
//! - [`synth_security`]: the SYNTHETIC multimodal security task.

pub mod idx;
pub mod png;
pub mod records;
pub mod synth_security;
pub mod synthetic;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::artifact::files::FileError;

pub use idx::{read_idx, write_idx};
pub use synthetic::synthetic;

/// The ten Fashion-MNIST classes, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Environment variable naming the Fashion-MNIST directory.
pub const DATA_ENV: &str = "RAMPART_DATA";
/// Where Debian's `dataset-fashion-mnist` package puts the IDX files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The project's own data folder (git-ignored contents), relative to the working directory.
pub const LOCAL_DIR: &str = "datasets/fashion-mnist";

const FETCH_HINT: &str = "run scripts/fetch-data.sh (or apt-get install dataset-fashion-mnist)";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data directory {path} ({from}) does not exist; {FETCH_HINT}")]
    MissingDir { path: PathBuf, from: &'static str },
    #[error(
        "no Fashion-MNIST directory found (tried {tried}); {FETCH_HINT}, or pass --data-dir / set {DATA_ENV}"
    )]
    NotFound { tried: String },
    #[error("{path}: missing (looked for {name} and {name}.gz); {FETCH_HINT}")]
    MissingFile { path: PathBuf, name: String },
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "{path}: the header declares dimensions {dims:?}, more than the {limit} bytes an IDX file may hold; the file is corrupt or hostile"
    )]
    Oversized {
        path: PathBuf,
        dims: Vec<usize>,
        limit: u64,
    },
    #[error(
        "{path}: bad magic number {found:#010x}, expected {expected:#010x} ({what}); the file is corrupt or not this IDX file, fetch it again"
    )]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
        what: &'static str,
    },
    #[error(
        "{path}: truncated: the header promises {expected} bytes but the file holds {found}; the download is incomplete, fetch it again"
    )]
    Truncated {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("{path}: images are {rows}x{cols}, expected 28x28")]
    BadImageSize {
        path: PathBuf,
        rows: usize,
        cols: usize,
    },
    #[error(
        "{images} holds {n_images} images but {labels} holds {n_labels} labels; the two files are from different sets"
    )]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
    #[error("{path}: holds no examples; fetch the data again")]
    Empty { path: PathBuf },
    #[error("{path}: label {label} at index {index} is not below {num_classes}")]
    BadLabel {
        path: PathBuf,
        index: usize,
        label: u8,
        num_classes: usize,
    },
}

/// The image data sets a command can run on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetChoice {
    /// Fashion-MNIST IDX files.
    FashionMnist,
    /// A seeded SYNTHETIC set of bars (for tests and demos).
    Synthetic,
}

/// Which half of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// An image classification set held on one device.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Pixels in [0, 1], shape `[N, 1, 28, 28]`.
    pub images: Tensor<4>,
    /// Class indices, shape `[N]`.
    pub labels: Tensor<1, Int>,
    pub num_classes: usize,
    /// Human-readable origin; synthetic sets say so.
    pub name: String,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.images.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images and labels `start..end` (clamped to the set).
    pub fn range(&self, start: usize, end: usize) -> (Tensor<4>, Tensor<1, Int>) {
        let end = end.min(self.len());
        (
            self.images.clone().narrow(0, start, end - start),
            self.labels.clone().narrow(0, start, end - start),
        )
    }

    /// Images and labels at `indices`, gathered on the device.
    pub fn gather(&self, indices: &[usize]) -> (Tensor<4>, Tensor<1, Int>) {
        let idx = self::indices(indices, &self.images.device());
        (
            self.images.clone().select(0, idx.clone()),
            self.labels.clone().select(0, idx),
        )
    }

    /// The first `n` examples (all of them if `n` is `None` or larger than the set), as a set
    /// of their own.
    pub fn take(self, n: Option<usize>) -> ImageSet {
        match n {
            Some(n) if n < self.len() => self.slice(0, n),
            _ => self,
        }
    }

    /// Examples `start..end` (clamped to the set) as a set of their own: copied once into
    /// tensors of their own size. (A narrowed view would keep the whole buffer, and burn-flex
    /// copies such a view whole before every `select`: a training batch gathered from the
    /// first 20,000 images copied all 20,000 of them, 16x slower training.)
    pub fn slice(self, start: usize, end: usize) -> ImageSet {
        let start = start.min(self.len());
        let end = end.clamp(start, self.len());
        let rows: Vec<usize> = (start..end).collect();
        let (images, labels) = self.gather(&rows);
        ImageSet {
            images,
            labels,
            ..self
        }
    }

    /// Every `skip`-th example starting at `offset`, then at most `limit` of them, as Cohen
    /// et al. pick certification images ("every 20th test image").
    pub fn every(self, offset: usize, skip: usize, limit: Option<usize>) -> ImageSet {
        let skip = skip.max(1);
        if skip == 1 && offset == 0 {
            return self.take(limit);
        }
        let (images, labels) = self.gather(&every_index(self.len(), offset, skip, limit));
        ImageSet {
            images,
            labels,
            ..self
        }
    }

    /// The labels, read back to the host once.
    pub fn host_labels(&self) -> Vec<usize> {
        host_labels(&self.labels)
    }
}

/// Indices offset, offset + skip, offset + 2·skip, ... below `n`, at most `limit` of them.
pub fn every_index(n: usize, offset: usize, skip: usize, limit: Option<usize>) -> Vec<usize> {
    (offset.min(n)..n)
        .step_by(skip.max(1))
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// Row indices as an Int tensor on `device`, for `select`.
pub fn indices(rows: &[usize], device: &Device) -> Tensor<1, Int> {
    let idx: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(idx, [rows.len()]), device)
}

/// Class indices read back from the device to the host once.
pub fn host_labels(labels: &Tensor<1, Int>) -> Vec<usize> {
    labels
        .clone()
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("labels read back as i64")
        .into_iter()
        .map(|l| l as usize)
        .collect()
}

/// Where the Fashion-MNIST files are: `--data-dir`, then `$RAMPART_DATA`, then
/// `datasets/fashion-mnist`, then Debian's `/usr/share/datasets/fashion-mnist`.
///
/// A directory named explicitly (flag or environment) must exist; the fallbacks are tried in
/// turn and the error lists them all.
pub fn resolve_data_dir(flag: Option<&Path>) -> Result<PathBuf, DataError> {
    if let Some(p) = flag {
        return existing(p.to_path_buf(), "--data-dir");
    }
    if let Some(p) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        return existing(PathBuf::from(p), "$RAMPART_DATA");
    }
    let candidates = [PathBuf::from(LOCAL_DIR), PathBuf::from(DEBIAN_DIR)];
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .ok_or_else(|| DataError::NotFound {
            tried: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn existing(path: PathBuf, from: &'static str) -> Result<PathBuf, DataError> {
    if path.is_dir() {
        Ok(path)
    } else {
        Err(DataError::MissingDir { path, from })
    }
}

/// Loads one split of an MNIST-format set (Fashion-MNIST's file names) from `dir` onto `device`.
pub fn load_split(dir: &Path, split: Split, device: &Device) -> Result<ImageSet, DataError> {
    let images_path = find_file(dir, &format!("{}-images-idx3-ubyte", split.prefix()))?;
    let labels_path = find_file(dir, &format!("{}-labels-idx1-ubyte", split.prefix()))?;
    let (dims, pixels) = idx::read_idx(&images_path, 3, "IDX images: ubyte, 3 dimensions")?;
    let (ldims, labels) = idx::read_idx(&labels_path, 1, "IDX labels: ubyte, 1 dimension")?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if (rows, cols) != (28, 28) {
        return Err(DataError::BadImageSize {
            path: images_path,
            rows,
            cols,
        });
    }
    if n == 0 {
        return Err(DataError::Empty { path: images_path });
    }
    if ldims[0] != n {
        return Err(DataError::CountMismatch {
            images: images_path,
            n_images: n,
            labels: labels_path,
            n_labels: ldims[0],
        });
    }
    let num_classes = 10;
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| **l as usize >= num_classes)
    {
        return Err(DataError::BadLabel {
            path: labels_path,
            index,
            label,
            num_classes,
        });
    }
    let name = format!(
        "{} ({})",
        match split {
            Split::Train => "train",
            Split::Test => "test",
        },
        dir.display()
    );
    Ok(from_bytes(&pixels, &labels, n, num_classes, name, device))
}

/// Uploads u8 pixels and labels, scaling pixels to [0, 1] on the device.
pub(crate) fn from_bytes(
    pixels: &[u8],
    labels: &[u8],
    n: usize,
    num_classes: usize,
    name: String,
    device: &Device,
) -> ImageSet {
    let px: Vec<f32> = pixels.iter().map(|&p| p as f32).collect();
    let images = Tensor::<4>::from_data(TensorData::new(px, [n, 1, 28, 28]), device) / 255.0;
    let lb: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(lb, [n]), device);
    ImageSet {
        images,
        labels,
        num_classes,
        name,
    }
}

/// The image and label files of `split` in `dir` that exist (gzipped ones preferred).
pub fn split_files(dir: &Path, split: Split) -> Vec<PathBuf> {
    ["images-idx3-ubyte", "labels-idx1-ubyte"]
        .iter()
        .filter_map(|kind| find_file(dir, &format!("{}-{kind}", split.prefix())).ok())
        .collect()
}

fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        Ok(gz)
    } else if plain.is_file() {
        Ok(plain)
    } else {
        Err(DataError::MissingFile {
            path: dir.join(name),
            name: name.to_string(),
        })
    }
}
