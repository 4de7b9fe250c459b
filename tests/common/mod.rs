//! Helpers shared by the integration tests: turns on Burn's process-global generator, the
//! binary, the reference model and the Fashion-MNIST test split, and reading tensors back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use burn::tensor::TensorData;
use burn::tensor::{Bool, Device, Int, Tensor};
use rampart::classifier::{Classifier, Domain};
use rampart::data::{self, ImageSet, Split};
use rampart::model::ImageNet;

/// Burn's random generator is process-global: tests that seed it or train take turns.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the `rampart` binary in `cwd`.
pub fn rampart(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run rampart")
}

/// `rampart train` of an mlp on the SYNTHETIC set (configs/synthetic-cnn.toml with Adam
/// 1e-3, 3 epochs, flex) in `dir`, with `extra` flags.
pub fn train_synthetic_mlp(dir: &Path, extra: &[&str]) -> Output {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/synthetic-cnn.toml");
    let mut args = vec![
        "train",
        "--config",
        config.to_str().unwrap(),
        "--arch",
        "mlp",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--epochs",
        "3",
        "--device",
        "flex",
    ];
    args.extend_from_slice(extra);
    rampart(&args, dir)
}

/// The permission bits of the file at `path` (0o600 for a private file).
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The standard output of a run that must succeed (its output shown if it did not).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The standard error of a run that must fail.
pub fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The JSON report of a run that must succeed.
pub fn json(out: &Output) -> serde_json::Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `models/fmnist-cnn.safetensors`, the reference model.
pub fn reference_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fmnist-cnn.safetensors")
}

pub fn reference_cnn() -> ImageNet {
    rampart::artifact::open_image(&reference_path(), None, &Device::flex())
        .unwrap()
        .0
}

/// Every `skip`-th Fashion-MNIST test image, at most `n` (needs the data: scripts/test.sh
/// fetches it).
pub fn fashion_test(skip: usize, n: usize) -> ImageSet {
    let dir = data::resolve_data_dir(None).expect("Fashion-MNIST: run scripts/fetch-data.sh");
    data::load_split(&dir, Split::Test, &Device::flex())
        .unwrap()
        .every(0, skip, Some(n))
}

pub fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

pub fn ints(t: Tensor<1, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec().unwrap()
}

pub fn bools(t: Tensor<1, Bool>) -> Vec<bool> {
    t.into_data().convert::<bool>().try_to_vec().unwrap()
}

/// All tensor bytes of a safetensors file, by name.
pub fn tensor_bytes(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

/// One f32 tensor of a safetensors file.
pub fn tensor_f32(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let values = t
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), values)
}

/// The JSON values of a report's top-level keys, sorted.
pub fn top_keys(v: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// A linear classifier, logits = x · W + b with W `[F, K]`, inputs in [0, 1].
pub struct Linear {
    pub w: Tensor<2>,
    pub b: Tensor<1>,
}

impl Linear {
    /// `w` row-major `[F, K]` with K = `b.len()`.
    pub fn new(w: Vec<f32>, b: Vec<f32>, d: &Device) -> Self {
        let k = b.len();
        Self {
            w: Tensor::from_data(TensorData::new(w.clone(), [w.len() / k, k]), d),
            b: Tensor::from_data(TensorData::new(b, [k]), d),
        }
    }
}

impl Classifier<2> for Linear {
    type Input = Tensor<2>;

    fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        let n = x.dims()[0];
        let k = self.b.dims()[0];
        x.matmul(self.w.clone()) + self.b.clone().reshape([1, k]).repeat_dim(0, n)
    }

    fn num_classes(&self) -> usize {
        self.b.dims()[0]
    }

    fn domain(&self) -> Domain {
        Domain {
            shape: vec![self.w.dims()[0]],
            bounds: Some((0.0, 1.0)),
            units: "test units",
        }
    }
}
