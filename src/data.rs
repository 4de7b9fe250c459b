//! Image data: the IDX format of MNIST and Fashion-MNIST, where to find it, and a seeded
//! synthetic set for fast tests.
//!
//! Images are pixels in [0, 1] with shape `[N, 1, 28, 28]`; labels are class indices. A whole
//! set is uploaded to the device once and batches are gathered there.

use std::io::Read;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

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

const IDX_UBYTE: u8 = 0x08;
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
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
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
    #[error("{path}: label {label} at index {index} is not below {num_classes}")]
    BadLabel {
        path: PathBuf,
        index: usize,
        label: u8,
        num_classes: usize,
    },
}

/// Which half of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// The first `n` examples (all of them if `n` is `None` or larger than the set).
    pub fn take(self, n: Option<usize>) -> ImageSet {
        match n {
            Some(n) if n < self.len() => {
                let (images, labels) = self.range(0, n);
                ImageSet {
                    images,
                    labels,
                    ..self
                }
            }
            _ => self,
        }
    }

    /// Examples `start..end` (clamped to the set) as a set of their own.
    pub fn slice(self, start: usize, end: usize) -> ImageSet {
        let start = start.min(self.len());
        let (images, labels) = self.range(start, end.max(start));
        ImageSet {
            images,
            labels,
            ..self
        }
    }

    /// Every `skip`-th example starting at 0, then at most `limit` of them, as Cohen et al.
    /// pick certification images ("every 20th test image").
    pub fn every(self, skip: usize, limit: Option<usize>) -> ImageSet {
        let skip = skip.max(1);
        if skip == 1 {
            return self.take(limit);
        }
        let (images, labels) = self.gather(&every_index(self.len(), skip, limit));
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

/// Indices 0, skip, 2·skip, ... below `n`, at most `limit` of them.
pub fn every_index(n: usize, skip: usize, limit: Option<usize>) -> Vec<usize> {
    (0..n)
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
    let (dims, pixels) = read_idx(&images_path, 3, "IDX images: ubyte, 3 dimensions")?;
    let (ldims, labels) = read_idx(&labels_path, 1, "IDX labels: ubyte, 1 dimension")?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if (rows, cols) != (28, 28) {
        return Err(DataError::BadImageSize {
            path: images_path,
            rows,
            cols,
        });
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
fn from_bytes(
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

/// Reads an unsigned-byte IDX file (gzipped or not) of `ndim` dimensions: the dimensions and
/// the raw data. See <http://yann.lecun.com/exdb/mnist/> for the format.
pub fn read_idx(
    path: &Path,
    ndim: u8,
    what: &'static str,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        out
    } else {
        raw
    };
    let expected_magic = u32::from_be_bytes([0, 0, IDX_UBYTE, ndim]);
    let header_len = 4 + 4 * ndim as usize;
    let truncated = |expected: usize| DataError::Truncated {
        path: path.to_path_buf(),
        expected,
        found: bytes.len(),
    };
    if bytes.len() < 4 {
        return Err(truncated(header_len));
    }
    let magic = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
    if magic != expected_magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: magic,
            expected: expected_magic,
            what,
        });
    }
    if bytes.len() < header_len {
        return Err(truncated(header_len));
    }
    let dims: Vec<usize> = (0..ndim as usize)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let total = header_len + dims.iter().product::<usize>();
    if bytes.len() < total {
        return Err(truncated(total));
    }
    Ok((dims, bytes[header_len..total].to_vec()))
}

/// Writes an unsigned-byte IDX file (gzipped when `path` ends in `.gz`); for tests and tools.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> std::io::Result<()> {
    let mut out = vec![0, 0, IDX_UBYTE, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&out)?;
        out = enc.finish()?;
    }
    crate::store::write_atomic(path, &out)
}

/// A seeded SYNTHETIC 10-class set of 28x28 images for fast tests: each class is a bright bar
/// at its own position and angle, drawn with random shift, contrast and pixel noise. Learnable
/// in an epoch or two by both architectures, but not linearly trivial.
pub fn synthetic(n: usize, seed: u64, device: &Device) -> ImageSet {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * 784];
    let mut labels = vec![0u8; n];
    for (i, img) in pixels.chunks_mut(784).enumerate() {
        let class = rng.random_range(0..10u8);
        labels[i] = class;
        let angle = class as f32 * std::f32::consts::PI / 10.0;
        let (s, c) = angle.sin_cos();
        let dx = rng.random_range(-3.0..3.0f32);
        let dy = rng.random_range(-3.0..3.0f32);
        let contrast = rng.random_range(0.5..1.0f32);
        for y in 0..28 {
            for x in 0..28 {
                let (u, v) = (x as f32 - 13.5 - dx, y as f32 - 13.5 - dy);
                // Distance from the class's line through the (shifted) centre.
                let d = (u * s - v * c).abs();
                let along = (u * c + v * s).abs();
                let bar = if d < 2.0 && along < 10.0 {
                    contrast
                } else {
                    0.0
                };
                let noise = rng.random_range(0.0..0.35f32);
                img[y * 28 + x] = ((bar + noise).min(1.0) * 255.0) as u8;
            }
        }
    }
    from_bytes(
        &pixels,
        &labels,
        n,
        10,
        format!("SYNTHETIC bars (seed {seed})"),
        device,
    )
}
