//! Hostile files and careless flags, as a new or a hostile user would try them: every probe
//! must end in one clear error (exit code 1 or a usage error, never a panic or an abort), leave
//! every input untouched, and never write through or over anything but a regular file.

mod common;

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::rampart;
use safetensors::{Dtype, tensor::TensorView};

/// Runs `args` in `dir` and checks it failed cleanly; returns its standard error.
fn refused(args: &[&str], dir: &Path) -> String {
    let out = rampart(args, dir);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out.status.code();
    assert!(
        matches!(code, Some(1) | Some(2)),
        "{args:?}: exit {code:?} (a panic is 101, an abort has none)\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    stderr
}

/// A safetensors file of f32 tensors, each filled with `fill`, and optional metadata.
fn write_model(path: &Path, tensors: &[(&str, Vec<usize>)], fill: f32, meta: &[(&str, &str)]) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, s)| {
            let n: usize = s.iter().product();
            (0..n).flat_map(|_| fill.to_le_bytes()).collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), b)| {
            (
                n.to_string(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = (!meta.is_empty()).then(|| {
        meta.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

fn mlp_tensors(classes: usize) -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("fc1.weight", vec![256, 784]),
        ("fc1.bias", vec![256]),
        ("fc2.weight", vec![256, 256]),
        ("fc2.bias", vec![256]),
        ("fc3.weight", vec![classes, 256]),
        ("fc3.bias", vec![classes]),
    ]
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A directory with a small trained model (`m.safetensors`, 10 classes) and a second one.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (seed, out) in [("1", "a"), ("2", "b")] {
        common::ok(&rampart(
            &[
                "train",
                "--arch",
                "mlp",
                "--dataset",
                "synthetic",
                "--synthetic-size",
                "200",
                "--epochs",
                "1",
                "--device",
                "flex",
                "--seed",
                seed,
                "--out",
                out,
            ],
            dir.path(),
        ));
    }
    std::fs::copy(
        dir.path().join("a/model.safetensors"),
        dir.path().join("m.safetensors"),
    )
    .unwrap();
    dir
}

const SYNTH: [&str; 4] = ["--dataset", "synthetic", "--device", "flex"];

/// One epoch of the mlp on 50 synthetic images: the shortest training run.
const TINY_TRAIN: [&str; 11] = [
    "train",
    "--arch",
    "mlp",
    "--dataset",
    "synthetic",
    "--synthetic-size",
    "50",
    "--epochs",
    "1",
    "--device",
    "flex",
];

fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(extra).copied().collect()
}

/// Outputs never overwrite inputs, each other, or anything that is not an earlier output of
/// the same kind; the files stay as they were.
#[test]
fn outputs_never_overwrite_inputs_or_foreign_files() {
    let dir = workspace();
    let d = dir.path();
    let model = std::fs::read(d.join("m.safetensors")).unwrap();
    std::fs::copy(d.join("m.safetensors"), d.join("m.toml")).unwrap();
    let certify = [
        "certify",
        "--model",
        "m.safetensors",
        "--sigma",
        "0.25",
        "--n",
        "20",
        "--n0",
        "5",
        "--limit",
        "2",
        "--dataset",
        "synthetic",
        "--device",
        "flex",
    ];
    let create = [
        "ensemble",
        "create",
        "--strategy",
        "mean_probs",
        "--device",
        "flex",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            with(&certify, &["--out", "m.safetensors"]),
            "which this command reads",
        ),
        (
            with(&certify, &["--out", "c.tsv", "--plot", "m.safetensors"]),
            "which this command reads",
        ),
        (with(&certify, &["--out", "x.png"]), "name the same file"),
        (
            with(&certify, &["--out", "c.tsv", "--plot", "c.tsv"]),
            "name the same file",
        ),
        (
            with(&certify, &["--out", "a/metrics.jsonl"]),
            "not a certification TSV",
        ),
        (
            with(
                &create,
                &["--out", "m.toml", "m.toml", "b/model.safetensors"],
            ),
            "which this command reads",
        ),
        (
            with(
                &create,
                &["--out", "a/model.safetensors", "b/model.safetensors"],
            ),
            "a manifest is .toml or .json",
        ),
        (
            vec![
                "data",
                "synth-security",
                "--n",
                "10",
                "--out",
                "m.safetensors",
            ],
            "not a JSON-lines file",
        ),
    ];
    for (args, expected) in cases {
        let e = refused(&args, d);
        assert!(e.contains(expected), "{args:?}: {e}");
        assert_eq!(
            std::fs::read(d.join("m.safetensors")).unwrap(),
            model,
            "{args:?} changed the model"
        );
        assert_eq!(
            std::fs::read(d.join("m.toml")).unwrap(),
            model,
            "{args:?} changed m.toml"
        );
    }
    // --save-examples into a folder where grid.png is someone's notes: refused, kept.
    std::fs::create_dir(d.join("ex")).unwrap();
    std::fs::write(d.join("ex/grid.png"), b"my notes").unwrap();
    let attack = [
        "attack",
        "--model",
        "m.safetensors",
        "--eps",
        "0.1",
        "--steps",
        "1",
        "--limit",
        "2",
        "--dataset",
        "synthetic",
        "--device",
        "flex",
        "--save-examples",
        "ex",
    ];
    let e = refused(&attack, d);
    assert!(e.contains("not a PNG image"), "{e}");
    assert_eq!(std::fs::read(d.join("ex/grid.png")).unwrap(), b"my notes");
    // An earlier output of the same kind is replaced.
    std::fs::remove_file(d.join("ex/grid.png")).unwrap();
    common::ok(&rampart(&attack, d));
    common::ok(&rampart(&attack, d));
    // An ensemble config kept where its manifest goes: refused before any member trains.
    std::fs::create_dir(d.join("ens")).unwrap();
    let config = "strategy = \"mean_probs\"\nout = \"ens\"\n[base]\narch = \"mlp\"\ndataset = \"synthetic\"\n\
                  synthetic_size = 50\nepochs = 1\ndevice = \"flex\"\n[[member]]\nseed = 1\n";
    std::fs::write(d.join("ens/ensemble.toml"), config).unwrap();
    let e = refused(&["ensemble", "train", "--config", "ens/ensemble.toml"], d);
    assert!(e.contains("which this command reads"), "{e}");
    assert_eq!(
        std::fs::read_to_string(d.join("ens/ensemble.toml")).unwrap(),
        config
    );
    assert!(!d.join("ens/member-0-standard").exists());
}

/// An output path that is a symlink, a FIFO or a directory is refused; nothing is renamed over
/// it and it keeps its kind.
#[test]
fn outputs_never_replace_links_devices_or_directories() {
    let dir = workspace();
    let d = dir.path();
    std::fs::write(d.join("target.txt"), b"keep me").unwrap();
    std::os::unix::fs::symlink(d.join("target.txt"), d.join("link.jsonl")).unwrap();
    mkfifo(&d.join("fifo.jsonl"));
    std::fs::create_dir(d.join("dir.jsonl")).unwrap();
    for (out, what) in [
        ("link.jsonl", "symlink"),
        ("fifo.jsonl", "FIFO"),
        ("dir.jsonl", "directory"),
    ] {
        let e = refused(&["data", "synth-security", "--n", "5", "--out", out], d);
        assert!(e.contains(what), "{out}: {e}");
    }
    let link = std::fs::symlink_metadata(d.join("link.jsonl")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(std::fs::read(d.join("target.txt")).unwrap(), b"keep me");
    assert!(
        std::fs::symlink_metadata(d.join("fifo.jsonl"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(d.join("dir.jsonl").is_dir());
    // The certification TSV and the training run directory follow the same rule.
    let e = refused(
        &with(
            &[
                "certify",
                "--model",
                "m.safetensors",
                "--sigma",
                "0.25",
                "--n",
                "20",
                "--n0",
                "5",
                "--limit",
                "2",
                "--out",
                "link.jsonl",
            ],
            &SYNTH,
        ),
        d,
    );
    assert!(e.contains("symlink"), "{e}");
    std::fs::create_dir(d.join("run")).unwrap();
    std::os::unix::fs::symlink(d.join("target.txt"), d.join("run/model.safetensors")).unwrap();
    let e = refused(&with(&TINY_TRAIN, &["--out", "run"]), d);
    assert!(e.contains("symlink"), "{e}");
    assert_eq!(std::fs::read(d.join("target.txt")).unwrap(), b"keep me");
}

/// Zero counts, absurd sizes and declared sizes that overflow get an error, not a panic or an
/// abort.
#[test]
fn zero_counts_and_absurd_sizes_are_errors_not_panics() {
    let dir = workspace();
    let d = dir.path();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            with(
                &["eval", "--model", "m.safetensors", "--limit", "0"],
                &SYNTH,
            ),
            "--limit",
        ),
        (
            vec![
                "train",
                "--dataset",
                "synthetic",
                "--train-limit",
                "0",
                "--device",
                "flex",
                "--out",
                "t0",
            ],
            "train_limit must be at least 1",
        ),
        (
            vec![
                "train",
                "--dataset",
                "synthetic",
                "--eval-limit",
                "0",
                "--device",
                "flex",
                "--out",
                "t1",
            ],
            "eval_limit must be at least 1",
        ),
        (
            vec![
                "ensemble",
                "create",
                "--strategy",
                "mean_probs",
                "--fit-weights",
                "--validation-size",
                "0",
                "--out",
                "e.toml",
                "m.safetensors",
            ],
            "--validation-size",
        ),
        (
            with(
                &[
                    "certify",
                    "--model",
                    "m.safetensors",
                    "--sigma",
                    "0.25",
                    "--n",
                    "100000000",
                    "--batch",
                    "100000000",
                ],
                &SYNTH,
            ),
            "--n must be between",
        ),
        (
            with(
                &[
                    "certify",
                    "--model",
                    "m.safetensors",
                    "--sigma",
                    "0.25",
                    "--n",
                    "100",
                    "--batch",
                    "100000000",
                ],
                &SYNTH,
            ),
            "--batch must be between",
        ),
        (
            with(
                &[
                    "certify",
                    "--model",
                    "m.safetensors",
                    "--sigma",
                    "0.25",
                    "--n",
                    "1e8",
                ],
                &SYNTH,
            ),
            "--n",
        ),
        (
            with(
                &[
                    "attack",
                    "--model",
                    "m.safetensors",
                    "--eps",
                    "0.1",
                    "--steps",
                    "0",
                ],
                &SYNTH,
            ),
            "--steps must be between",
        ),
        (
            with(
                &[
                    "attack",
                    "--model",
                    "m.safetensors",
                    "--eps",
                    "0.1",
                    "--restarts",
                    "0",
                ],
                &SYNTH,
            ),
            "--restarts",
        ),
        (vec!["train", "--seed", "18446744073709551616"], "--seed"),
        (vec!["train", "--epochs", "-3"], "--epochs"),
        (
            with(
                &["eval", "--model", "m.safetensors", "--records", "r.jsonl"],
                &SYNTH,
            ),
            "--records",
        ),
    ];
    for (args, expected) in cases {
        let e = refused(&args, d);
        assert!(e.contains(expected), "{args:?}: {e}");
    }
}

/// Model files that lie: a scalar or zero-row head, 10^12 classes in the metadata, a
/// normalisation dividing by zero, NaN weights, a fusion file with a broken spec.
#[test]
fn lying_model_files_are_refused_before_anything_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = |classes: &str, std: &str| {
        format!("{{\"arch\":\"mlp\",\"num_classes\":{classes},\"mean\":0.0,\"std\":{std}}}")
    };
    let mut scalar_head = mlp_tensors(10);
    scalar_head[4].1 = vec![];
    let huge = spec("1000000000000", "1.0");
    let zero_std = spec("10", "0.0");
    // (file, tensors, fill value, metadata, expected error)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, Vec<usize>)>,
        f32,
        Vec<(&'a str, &'a str)>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("scalar.safetensors", scalar_head, 0.1, vec![], "fc3.weight"),
        (
            "zero.safetensors",
            mlp_tensors(0),
            0.1,
            vec![],
            "num_classes is 0",
        ),
        (
            "huge.safetensors",
            mlp_tensors(10),
            0.1,
            vec![("rampart.spec", huge.as_str())],
            "num_classes is 1000000000000",
        ),
        (
            "std.safetensors",
            mlp_tensors(10),
            0.1,
            vec![("rampart.spec", zero_std.as_str())],
            "std finite and positive",
        ),
        (
            "nan.safetensors",
            mlp_tensors(10),
            f32::NAN,
            vec![],
            "NaN or infinite",
        ),
        (
            "inf.safetensors",
            mlp_tensors(10),
            f32::INFINITY,
            vec![],
            "NaN or infinite",
        ),
        (
            "fusion.safetensors",
            mlp_tensors(10),
            0.1,
            vec![("rampart.fusion", "{\"dim\": 1e9}")],
            "rampart.fusion is not valid",
        ),
    ];
    for (name, tensors, fill, meta, expected) in cases {
        write_model(&d.join(name), &tensors, fill, &meta);
        let e = refused(&["inspect", "--model", name], d);
        assert!(e.contains(expected) && e.contains(name), "{name}: {e}");
    }
}

/// Reads of untrusted files are bounded: a FIFO, a character device and a directory are
/// refused before they are opened for reading (no hang, no endless read).
#[test]
fn reads_refuse_fifos_devices_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mkfifo(&d.join("model.safetensors"));
    std::fs::create_dir(d.join("folder.safetensors")).unwrap();
    for (model, what) in [
        ("model.safetensors", "FIFO"),
        ("/dev/zero", "character device"),
        ("folder.safetensors", "directory"),
    ] {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["inspect", "--model", model])
            .current_dir(d)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(30) {
                child.kill().unwrap();
                panic!("{model}: still reading after 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(1), "{model}: {stderr}");
        assert!(stderr.contains(what), "{model}: {stderr}");
    }
}

/// IDX files whose header lies: dimensions whose product overflows, a declared size beyond
/// the limit, and a gzip bomb (a small file that decompresses to far more than it declares),
/// of which only the declared bytes are read.
#[test]
fn lying_idx_headers_are_refused_before_allocation() {
    use rampart::data::{DataError, idx};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t10k-images-idx3-ubyte");
    let header = |dims: [u32; 3]| {
        let mut h = idx::magic(3).to_be_bytes().to_vec();
        for d in dims {
            h.extend(d.to_be_bytes());
        }
        h
    };
    for dims in [[u32::MAX, u32::MAX, u32::MAX], [100_000_000, 28, 28]] {
        std::fs::write(&path, header(dims)).unwrap();
        match idx::read_idx(&path, 3, "images") {
            Err(DataError::Oversized { .. }) => {}
            other => panic!("{dims:?}: {other:?}"),
        }
    }
    // 64 MiB of zeros behind a header that declares two images.
    let gz = dir.path().join("bomb-idx3-ubyte.gz");
    let mut bytes = header([2, 28, 28]);
    bytes.resize(bytes.len() + (64 << 20), 0);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut enc, &bytes).unwrap();
    let compressed = enc.finish().unwrap();
    assert!(compressed.len() < 1 << 20);
    std::fs::write(&gz, &compressed).unwrap();
    let (dims, data) = idx::read_idx(&gz, 3, "images").unwrap();
    assert_eq!(dims, [2, 28, 28]);
    assert_eq!(data.len(), 2 * 784);
}

/// Manifests cannot reach outside their folder (absolute paths, `..`, symlinks) unless the
/// user allows it, cannot list themselves, and their errors never show the digest of a file
/// that is not a model.
#[test]
fn manifests_stay_inside_their_folder() {
    let dir = workspace();
    let d = dir.path();
    let secret = d.join("secret.txt");
    std::fs::write(&secret, b"not a model").unwrap();
    let secret_digest = rampart::artifact::digest::sha256_hex(b"not a model");
    std::fs::create_dir(d.join("ens")).unwrap();
    std::fs::copy(d.join("m.safetensors"), d.join("ens/m.safetensors")).unwrap();
    std::os::unix::fs::symlink(&secret, d.join("ens/sneaky.safetensors")).unwrap();
    let digest =
        rampart::artifact::digest::sha256_hex(&std::fs::read(d.join("m.safetensors")).unwrap());
    let member = |path: &str| {
        format!("[[member]]\npath = \"{path}\"\nsha256 = \"{digest}\"\nweight = 1.0\n")
    };
    let cases = [
        (
            member(secret.to_str().unwrap()),
            "outside the manifest's folder",
        ),
        (member("../m.safetensors"), "outside the manifest's folder"),
        (
            member("sneaky.safetensors"),
            "outside the manifest's folder",
        ),
        (member("self.toml"), "the manifest itself"),
    ];
    for (body, expected) in cases {
        std::fs::write(
            d.join("ens/self.toml"),
            format!("strategy = \"mean_probs\"\n{body}"),
        )
        .unwrap();
        let e = refused(&["inspect", "--model", "ens/self.toml"], d);
        assert!(e.contains(expected), "{body}: {e}");
        assert!(
            !e.contains(&secret_digest),
            "the error shows the digest of a non-model: {e}"
        );
    }
    // Allowed explicitly, an outside member loads (its digest is checked).
    std::fs::write(
        d.join("ens/self.toml"),
        format!("strategy = \"mean_probs\"\n{}", member("../m.safetensors")),
    )
    .unwrap();
    common::ok(&rampart(
        &["inspect", "--model", "ens/self.toml", "--allow-outside"],
        d,
    ));
    // A member replaced by another file: refused by name, without the new file's digest.
    std::fs::write(
        d.join("ens/self.toml"),
        format!("strategy = \"mean_probs\"\n{}", member("m.safetensors")),
    )
    .unwrap();
    std::fs::write(d.join("ens/m.safetensors"), b"not a model").unwrap();
    let e = refused(&["inspect", "--model", "ens/self.toml"], d);
    assert!(
        e.contains("does not match its sha256") && !e.contains(&secret_digest),
        "{e}"
    );
}

/// Results that would be silently wrong are refused: a model run on data with other classes,
/// and an empty data set.
#[test]
fn mismatched_and_empty_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_model(&d.join("five.safetensors"), &mlp_tensors(5), 0.01, &[]);
    let e = refused(&with(&["eval", "--model", "five.safetensors"], &SYNTH), d);
    assert!(e.contains("5 classes") && e.contains("10"), "{e}");
    std::fs::create_dir(d.join("empty")).unwrap();
    for (name, dims) in [
        ("t10k-images-idx3-ubyte", vec![0, 28, 28]),
        ("t10k-labels-idx1-ubyte", vec![0]),
    ] {
        rampart::data::write_idx(&d.join("empty").join(name), &dims, &[]).unwrap();
    }
    write_model(&d.join("ten.safetensors"), &mlp_tensors(10), 0.01, &[]);
    let e = refused(
        &[
            "eval",
            "--model",
            "ten.safetensors",
            "--data-dir",
            "empty",
            "--device",
            "flex",
        ],
        d,
    );
    assert!(e.contains("no examples"), "{e}");
}

/// One run per directory: a second run into a directory another run holds is refused, and a
/// fresh run never truncates an earlier run's metrics.
#[test]
fn runs_do_not_share_or_clobber_a_directory() {
    let dir = workspace();
    let d = dir.path();
    let held = rampart::artifact::files::RunLock::take(&d.join("busy")).unwrap();
    let train = |out: &'static str| with(&TINY_TRAIN, &["--out", out]);
    let e = refused(&train("busy"), d);
    assert!(e.contains("another Rampart run"), "{e}");
    drop(held);
    common::ok(&rampart(&train("busy"), d));
    let metrics = std::fs::read(d.join("a/metrics.jsonl")).unwrap();
    std::fs::remove_dir_all(d.join("a/checkpoint")).unwrap();
    let e = refused(&train("a"), d);
    assert!(e.contains("--resume"), "{e}");
    assert_eq!(std::fs::read(d.join("a/metrics.jsonl")).unwrap(), metrics);
}

/// Printing into a closed pipe (`rampart inspect ... | head -1`) ends quietly.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = workspace();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["inspect", "--model", "m.safetensors"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the report is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Bad flags and keys name themselves: a key of another mode, a resume with a changed key.
#[test]
fn misleading_messages_name_what_is_wrong() {
    let dir = workspace();
    let d = dir.path();
    let e = refused(
        &[
            "train",
            "--arch",
            "mlp",
            "--dataset",
            "synthetic",
            "--synthetic-size",
            "200",
            "--epochs",
            "2",
            "--device",
            "flex",
            "--seed",
            "1",
            "--out",
            "./a",
            "--resume",
            "--lr",
            "0.5",
        ],
        d,
    );
    assert!(e.contains("optimizer.lr") && !e.contains("out,"), "{e}");
    let e = refused(
        &with(
            &TINY_TRAIN,
            &[
                "--optimizer",
                "sgd",
                "--lr",
                "1e30",
                "--batch-size",
                "10",
                "--out",
                "nan",
            ],
        ),
        d,
    );
    assert!(e.contains("no checkpoint") && !e.contains("is kept"), "{e}");
    assert!(!d.join("nan/checkpoint").exists());
}
