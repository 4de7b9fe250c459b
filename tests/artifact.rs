//! Saving and loading in PyTorch layout: names, shapes, semantics, bad files, and a file
//! written by PyTorch itself.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rampart::artifact::metadata::{self, Metadata};
use rampart::artifact::{self, ArtifactError, files};
use rampart::model::{Arch, ImageNet, ImageSpec};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

fn save(model: &ImageNet, spec: &ImageSpec, meta: &BTreeMap<String, String>, path: &Path) {
    artifact::save_image(model, spec, &Metadata::new(meta.clone()), path).unwrap();
}

fn load(path: &Path, arch: Option<Arch>) -> Result<(ImageNet, ImageSpec, Metadata), ArtifactError> {
    artifact::open_image(path, arch, &Device::flex())
}

fn header(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect()
}

fn tensor_f32(path: &Path, name: &str) -> Vec<f32> {
    common::tensor_f32(path, name).1
}

fn logits(model: &ImageNet, x: &Tensor<4>) -> Vec<f32> {
    model.forward(x.clone()).into_data().try_to_vec().unwrap()
}

#[test]
fn round_trip_keeps_outputs_exactly() {
    let d = Device::flex();
    for arch in [Arch::Mlp, Arch::Cnn] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let spec = ImageSpec::fashion_normalised(arch);
        let model = spec.init(&d);
        let mut meta = BTreeMap::new();
        meta.insert("rampart.summary".to_string(), "{\"epochs\":3}".to_string());
        save(&model, &spec, &meta, &path);
        let (net, loaded_spec, loaded_meta) = load(&path, None).unwrap();
        assert_eq!(loaded_spec, spec);
        assert_eq!(loaded_meta.raw["rampart.summary"], "{\"epochs\":3}");
        let x = Tensor::<4>::random([3, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &d);
        assert_eq!(logits(&model, &x), logits(&net, &x), "{arch}");
    }
}

#[test]
fn files_use_pytorch_names_and_shapes() {
    let d = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let expect = |pairs: &[(&str, &[usize])]| -> BTreeMap<String, Vec<usize>> {
        pairs
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect()
    };
    let mlp = dir.path().join("mlp.safetensors");
    let spec = ImageSpec::new(Arch::Mlp);
    save(&spec.init(&d), &spec, &BTreeMap::new(), &mlp);
    assert_eq!(
        header(&mlp),
        expect(&[
            ("fc1.weight", &[256, 784]),
            ("fc1.bias", &[256]),
            ("fc2.weight", &[256, 256]),
            ("fc2.bias", &[256]),
            ("fc3.weight", &[10, 256]),
            ("fc3.bias", &[10]),
        ])
    );
    let cnn = dir.path().join("cnn.safetensors");
    let spec = ImageSpec::new(Arch::Cnn);
    save(&spec.init(&d), &spec, &BTreeMap::new(), &cnn);
    assert_eq!(
        header(&cnn),
        expect(&[
            ("conv1.weight", &[32, 1, 5, 5]),
            ("conv1.bias", &[32]),
            ("conv2.weight", &[64, 32, 5, 5]),
            ("conv2.bias", &[64]),
            ("fc1.weight", &[1024, 3136]),
            ("fc1.bias", &[1024]),
            ("fc2.weight", &[10, 1024]),
            ("fc2.bias", &[10]),
        ])
    );
}

/// The saved weights mean what PyTorch means: y = relu(x W1^T + b1) ... computed on the host
/// from the file alone must equal the model's logits.
#[test]
fn saved_mlp_computes_like_pytorch_linear_layers() {
    let d = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    let spec = ImageSpec::new(Arch::Mlp);
    let model = spec.init(&d);
    save(&model, &spec, &BTreeMap::new(), &path);
    let x = Tensor::<4>::random([1, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &d);
    let input: Vec<f32> = x.clone().into_data().try_to_vec().unwrap();
    let layer = |v: &[f32], name: &str, out: usize, relu: bool| -> Vec<f32> {
        let w = tensor_f32(&path, &format!("{name}.weight"));
        let b = tensor_f32(&path, &format!("{name}.bias"));
        (0..out)
            .map(|o| {
                let s: f32 = v
                    .iter()
                    .zip(&w[o * v.len()..])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    + b[o];
                if relu { s.max(0.0) } else { s }
            })
            .collect()
    };
    let h = layer(&input, "fc1", 256, true);
    let h = layer(&h, "fc2", 256, true);
    let host = layer(&h, "fc3", 10, false);
    let dev = logits(&model, &x);
    for (a, b) in host.iter().zip(&dev) {
        assert!((a - b).abs() < 1e-4, "host {host:?} vs model {dev:?}");
    }
}

fn write_raw(path: &Path, tensors: &[(&str, Vec<usize>)], meta: Option<(&str, &str)>) {
    let datas: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&datas)
        .map(|((n, s), b)| {
            (
                n.to_string(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = meta.map(|(k, v)| std::collections::HashMap::from([(k.to_string(), v.to_string())]));
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

fn mlp_tensors() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("fc1.weight", vec![256, 784]),
        ("fc1.bias", vec![256]),
        ("fc2.weight", vec![256, 256]),
        ("fc2.bias", vec![256]),
        ("fc3.weight", vec![10, 256]),
        ("fc3.bias", vec![10]),
    ]
}

#[test]
fn wrong_missing_and_extra_tensors_are_all_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let mut t = mlp_tensors();
    t[0].1 = vec![128, 784]; // wrong shape
    t.retain(|(n, _)| *n != "fc2.bias"); // missing
    t.push(("fc4.weight", vec![2, 2])); // unexpected
    write_raw(&path, &t, None);
    let e = load(&path, None).expect_err("must fail");
    assert!(matches!(e, ArtifactError::Mismatch { .. }));
    let e = e.to_string();
    assert!(
        e.contains("fc1.weight: shape [128, 784], expected [256, 784]"),
        "{e}"
    );
    assert!(e.contains("missing tensor fc2.bias [256]"), "{e}");
    assert!(e.contains("unexpected tensor fc4.weight"), "{e}");
    assert!(e.contains("bad.safetensors"), "{e}");
}

#[test]
fn pytorch_file_without_metadata_is_inferred_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.safetensors");
    write_raw(&path, &mlp_tensors(), None);
    let (_, spec, _) = load(&path, None).unwrap();
    assert_eq!(spec, ImageSpec::new(Arch::Mlp));
    // Asked to read it as a cnn: every cnn tensor is named as missing.
    let e = load(&path, Some(Arch::Cnn)).err().unwrap().to_string();
    assert!(e.contains("missing tensor conv1.weight"), "{e}");

    write_raw(&path, &[("layer.weight", vec![2, 2])], None);
    let e = load(&path, None).err().unwrap().to_string();
    assert!(
        e.contains("cannot tell the architecture") && e.contains("--arch"),
        "{e}"
    );

    write_raw(
        &path,
        &mlp_tensors(),
        Some((metadata::SPEC, "{\"arch\":\"transformer\"}")),
    );
    let e = load(&path, None).err().unwrap().to_string();
    assert!(e.contains("rampart.spec is not valid"), "{e}");
}

#[test]
fn missing_and_corrupt_files_are_reported() {
    let d = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.safetensors");
    let e = load(&path, None).err().unwrap().to_string();
    assert!(
        e.contains("absent.safetensors: model file not found"),
        "{e}"
    );

    std::fs::write(&path, b"this is not a safetensors file at all").unwrap();
    let e = load(&path, None).err().unwrap().to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");

    // Truncated: a real file cut short.
    let spec = ImageSpec::new(Arch::Mlp);
    save(&spec.init(&d), &spec, &BTreeMap::new(), &path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let e = load(&path, None).err().unwrap().to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");
}

#[test]
fn atomic_write_replaces_whole_files_and_leaves_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/out.txt");
    files::write_atomic(&path, b"first").unwrap();
    files::write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("out.txt")]);
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect()
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn assert_close(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (a, b) in ours.iter().zip(theirs) {
        assert!((a - b).abs() < 1e-4, "{what}: rampart {a} vs pytorch {b}");
    }
}

/// tests/fixtures/torch-NAME.safetensors was written by PyTorch (scripts/make-torch-fixture.py)
/// as a plain state_dict, with inputs and PyTorch's logits for them; Rampart must infer the
/// architecture and compute the same logits.
fn pytorch_image_fixture(name: &str, arch: Arch) {
    let d = Device::flex();
    let root = fixtures();
    let (net, spec, _) = load(&root.join(format!("torch-{name}.safetensors")), None).unwrap();
    assert_eq!(spec.arch, arch);
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join(format!("torch-{name}-expected.json"))).unwrap(),
    )
    .unwrap();
    let inputs = floats(&expected["inputs"]);
    let n = inputs.len() / 784;
    let x = Tensor::<4>::from_data(TensorData::new(inputs, [n, 1, 28, 28]), &d);
    let ours = logits(&net, &x);
    let theirs = floats(&expected["logits"]);
    assert_close(&ours, &theirs, name);
    let argmax = |v: &[f32]| -> Vec<usize> {
        v.chunks(10)
            .map(|r| (0..10).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap())
            .collect()
    };
    assert_eq!(argmax(&ours), argmax(&theirs));
}

#[test]
fn pytorch_saved_model_gives_pytorch_predictions() {
    pytorch_image_fixture("mlp", Arch::Mlp);
}

/// The cnn: PyTorch's conv layout [out, in, kh, kw], padding 2 and the C·H·W flatten before
/// fc1 must all match, or the logits differ.
#[test]
fn pytorch_saved_cnn_gives_pytorch_logits() {
    pytorch_image_fixture("cnn", Arch::Cnn);
}

/// The fusion twin written by PyTorch (its spec as `rampart.fusion` metadata) on records whose
/// text exercises the FNV-1a tokeniser (case, punctuation) and whose modalities are sometimes
/// missing: Rampart's record preprocessing and network give PyTorch's logits.
#[test]
fn pytorch_saved_fusion_model_gives_pytorch_logits() {
    use rampart::artifact::{AnyModel, OpenOptions};
    let d = Device::flex();
    let root = fixtures();
    let opened = artifact::open(
        &root.join("torch-fusion.safetensors"),
        OpenOptions::default(),
        &d,
    )
    .unwrap();
    let AnyModel::Fusion { net, spec, .. } = opened.model else {
        panic!("not a fusion model");
    };
    let set =
        rampart::data::records::load(&root.join("torch-fusion-records.jsonl"), &spec.schema(), &d)
            .unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("torch-fusion-expected.json")).unwrap(),
    )
    .unwrap();
    let ours: Vec<f32> = net.forward(&set).into_data().try_to_vec().unwrap();
    assert_close(&ours, &floats(&expected["logits"]), "fusion");
}
