//! Defensive distillation (`--mode distill`): the student learns the teacher's task, and its
//! logits come out about T times larger than the teacher's, the saturation that hides
//! gradients at temperature 1; a missing teacher and a file that is no model are refused.

mod common;

use std::path::Path;

use burn::tensor::Device;
use common::{failed, ok, serial};

fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    common::train_synthetic_mlp(dir, extra)
}

/// Mean absolute logit of a model on the synthetic test images, and its accuracy there.
fn logit_scale(path: &Path) -> (f64, f64) {
    let device = Device::flex();
    let (net, _, _) = rampart::artifact::open_image(path, None, &device).unwrap();
    let set = rampart::data::synthetic(500, 0x7e57, &device);
    let logits = net.forward(set.images.clone());
    let scale = f64::from(logits.clone().abs().mean().into_scalar::<f32>());
    let hits = logits
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(set.labels)
        .float()
        .mean();
    (scale, f64::from(hits.into_scalar::<f32>()))
}

#[test]
fn the_student_learns_with_logits_t_times_larger() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    ok(&train(p, &["--out", "teacher"]));
    ok(&train(
        p,
        &[
            "--mode",
            "distill",
            "--teacher",
            "teacher/model.safetensors",
            "--temperature",
            "20",
            "--out",
            "student",
        ],
    ));
    let (t_scale, t_acc) = logit_scale(&p.join("teacher/model.safetensors"));
    let (s_scale, s_acc) = logit_scale(&p.join("student/model.safetensors"));
    assert!(
        s_acc > 0.9 && s_acc > t_acc - 0.05,
        "student {s_acc}, teacher {t_acc}"
    );
    let ratio = s_scale / t_scale;
    assert!(
        ratio > 5.0,
        "student logits only {ratio:.1} times the teacher's"
    );

    let err = failed(&train(p, &["--mode", "distill", "--out", "x"]));
    assert!(err.contains("teacher"), "{err}");
    let err = failed(&train(
        p,
        &[
            "--mode",
            "distill",
            "--teacher",
            "missing.safetensors",
            "--out",
            "y",
        ],
    ));
    assert!(err.contains("missing.safetensors"), "{err}");
    // Not a model file at all.
    let err = failed(&train(
        p,
        &[
            "--mode",
            "distill",
            "--teacher",
            "teacher/metrics.jsonl",
            "--out",
            "z",
        ],
    ));
    assert!(err.contains("teacher/metrics.jsonl"), "{err}");
}
