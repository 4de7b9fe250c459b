//! Trigger-set watermarks: a marked model matches its secret's triggers far beyond chance, an
//! unmarked one and another secret only by chance; the secret is private and never replaced;
//! a pruned copy still carries the mark; a bad secret is refused naming the file.

mod common;

use std::path::Path;

use common::{failed, json, ok, rampart, serial};

fn train(dir: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--out", out];
    args.extend_from_slice(extra);
    common::train_synthetic_mlp(dir, &args)
}

fn verify(dir: &Path, model: &str, secret: &str) -> serde_json::Value {
    json(&rampart(
        &[
            "watermark",
            "verify",
            "--model",
            &format!("{model}/model.safetensors"),
            "--secret",
            &format!("{secret}/watermark.secret"),
            "--device",
            "flex",
            "--json",
        ],
        dir,
    ))
}

#[test]
fn a_marked_model_proves_itself_and_others_do_not() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    ok(&train(p, "marked", &["--watermark", "50"]));
    ok(&train(p, "other", &["--watermark", "50"]));
    ok(&train(p, "plain", &[]));
    assert_eq!(common::mode(&p.join("marked/watermark.secret")), 0o600);

    let own = verify(p, "marked", "marked");
    let p_own = own["p_value"].as_f64().unwrap();
    assert!(p_own < 1e-8, "the marked model: p {p_own}, {own}");
    // A model that never saw these triggers, and the marked model against another secret.
    for (model, secret) in [("plain", "marked"), ("marked", "other")] {
        let v = verify(p, model, secret);
        let p_chance = v["p_value"].as_f64().unwrap();
        assert!(
            p_chance > 1e-3,
            "{model} against {secret}'s secret: p {p_chance}, {v}"
        );
    }

    // A copy with half of every weight tensor pruned still carries the mark.
    std::fs::create_dir(p.join("pruned")).unwrap();
    let prune = |fraction: &str, out: &str| {
        rampart(
            &[
                "prune",
                "--model",
                "marked/model.safetensors",
                "--fraction",
                fraction,
                "--out",
                out,
                "--device",
                "flex",
                "--json",
            ],
            p,
        )
    };
    let report = json(&prune("0.5", "pruned/model.safetensors"));
    assert!(
        (report["sparsity"].as_f64().unwrap() - 0.5).abs() < 1e-3,
        "{report}"
    );
    let pruned = verify(p, "pruned", "marked");
    assert!(pruned["p_value"].as_f64().unwrap() < 1e-3, "{pruned}");
    let err = failed(&prune("1.5", "pruned/other.safetensors"));
    assert!(err.contains("--fraction must be from 0 to 1"), "{err}");
    let err = failed(&prune("0.5", "marked/model.safetensors"));
    assert!(err.contains("which this command reads"), "{err}");

    // The secret is kept: a second run into the same folder with another size is refused.
    let err = failed(&train(p, "marked", &["--watermark", "20", "--resume"]));
    assert!(err.contains("watermark.secret holds 50 triggers"), "{err}");
    std::fs::write(p.join("bad.secret"), "{\"format\": \"x\"}").unwrap();
    let err = failed(&rampart(
        &[
            "watermark",
            "verify",
            "--model",
            "marked/model.safetensors",
            "--secret",
            "bad.secret",
        ],
        p,
    ));
    assert!(
        err.contains("bad.secret") && err.contains("not a watermark secret"),
        "{err}"
    );
}
