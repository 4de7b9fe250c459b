//! Flat configs of earlier Rampart versions (`mode = "pgd"`, `epsilon = 0.1`, `lr = ...` all at
//! the top level, as configs, ensemble members and the `rampart.config` of older model files
//! and checkpoints wrote them) migrated to the nested layout. Keys the chosen mode, optimizer,
//! schedule or data set does not use are dropped, as the flat layout ignored them; a key that
//! never existed is an error.

/// Keys of the flat layout.
const FLAT: [&str; 36] = [
    "arch",
    "mode",
    "sigma",
    "epsilon",
    "attack_steps",
    "attack_alpha",
    "trades_beta",
    "robust_eval_size",
    "ramp_epochs",
    "guard_ratio",
    "dataset",
    "data_dir",
    "train_limit",
    "eval_limit",
    "synthetic_size",
    "normalize",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "step_epochs",
    "gamma",
    "batch_size",
    "epochs",
    "seed",
    "device",
    "out",
    "train_records",
    "test_records",
    "class_names",
    "network_box",
    "modalities",
    "fusion",
    "dim",
    "embedding_epsilon",
];

/// Top-level keys the nested layout has too.
const SHARED: [&str; 8] = [
    "mode",
    "optimizer",
    "schedule",
    "batch_size",
    "epochs",
    "seed",
    "device",
    "out",
];

/// Whether `t` is in the flat layout: a string `mode`, `optimizer` or `schedule`, or a key
/// that only the flat layout has at the top level.
pub fn is_flat(t: &toml::Table) -> bool {
    ["mode", "optimizer", "schedule"]
        .iter()
        .any(|k| t.get(*k).is_some_and(toml::Value::is_str))
        || t.keys()
            .any(|k| FLAT.contains(&k.as_str()) && !SHARED.contains(&k.as_str()))
}

/// The nested form of a flat table.
pub fn migrate(flat: &toml::Table) -> Result<toml::Table, String> {
    if let Some(k) = flat.keys().find(|k| !FLAT.contains(&k.as_str())) {
        return Err(format!("unknown key `{k}`"));
    }
    let text = |k: &str, default: &str| -> String {
        flat.get(k)
            .and_then(toml::Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let arch = text("arch", "cnn");
    let fusion = arch == "fusion";
    let mut out = toml::Table::new();
    // Older fusion configs had their own defaults.
    if fusion {
        out.insert("epochs".into(), 8.into());
        out.insert("out".into(), "runs/security-fusion".into());
    }
    for k in ["batch_size", "epochs", "seed", "device", "out"] {
        copy(flat, &mut out, k, k);
    }
    out.insert("model".into(), model(flat, &arch).into());
    out.insert("data".into(), data(flat, fusion).into());
    out.insert("mode".into(), mode(flat, &text("mode", "standard")).into());
    out.insert("optimizer".into(), optimizer(flat, fusion).into());
    out.insert(
        "schedule".into(),
        schedule(flat, &text("schedule", "constant")).into(),
    );
    Ok(out)
}

fn copy(from: &toml::Table, to: &mut toml::Table, key: &str, as_key: &str) {
    if let Some(v) = from.get(key) {
        to.insert(as_key.to_string(), v.clone());
    }
}

fn section(tag: &str, kind: &str) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert(tag.to_string(), kind.into());
    t
}

fn model(flat: &toml::Table, arch: &str) -> toml::Table {
    let mut t = section("arch", arch);
    let keys: &[&str] = if arch == "fusion" {
        &["class_names", "network_box", "modalities", "fusion", "dim"]
    } else {
        &["normalize"]
    };
    for k in keys {
        copy(flat, &mut t, k, k);
    }
    t
}

fn data(flat: &toml::Table, fusion: bool) -> toml::Table {
    let dataset = if fusion {
        "records".to_string()
    } else {
        flat.get("dataset")
            .and_then(toml::Value::as_str)
            .unwrap_or("fashion-mnist")
            .to_string()
    };
    let mut t = section("dataset", &dataset);
    let own: &[&str] = match dataset.as_str() {
        "records" => &["train_records", "test_records"],
        "synthetic" => &["synthetic_size"],
        _ => &["data_dir"],
    };
    for k in own.iter().chain(&["train_limit", "eval_limit"]) {
        copy(flat, &mut t, k, k);
    }
    t
}

fn mode(flat: &toml::Table, kind: &str) -> toml::Table {
    let mut t = section("kind", kind);
    let keys: &[(&str, &str)] = match kind {
        "gaussian" => &[("sigma", "sigma")],
        "fgsm-rs" => &[
            ("epsilon", "epsilon"),
            ("attack_alpha", "alpha"),
            ("attack_steps", "steps"),
            ("guard_ratio", "guard_ratio"),
            ("robust_eval_size", "robust_eval_size"),
        ],
        "pgd" => &[
            ("epsilon", "epsilon"),
            ("attack_steps", "steps"),
            ("attack_alpha", "alpha"),
            ("robust_eval_size", "robust_eval_size"),
        ],
        "trades" => &[
            ("epsilon", "epsilon"),
            ("attack_steps", "steps"),
            ("attack_alpha", "alpha"),
            ("trades_beta", "beta"),
            ("robust_eval_size", "robust_eval_size"),
        ],
        "adaptive" => &[
            ("epsilon", "epsilon"),
            ("attack_steps", "steps"),
            ("attack_alpha", "alpha"),
            ("ramp_epochs", "ramp_epochs"),
            ("guard_ratio", "guard_ratio"),
            ("robust_eval_size", "robust_eval_size"),
        ],
        "pgd-embeddings" => &[("embedding_epsilon", "epsilon"), ("attack_steps", "steps")],
        _ => &[],
    };
    for (from, to) in keys {
        copy(flat, &mut t, from, to);
    }
    t
}

fn optimizer(flat: &toml::Table, fusion: bool) -> toml::Table {
    let kind = flat
        .get("optimizer")
        .and_then(toml::Value::as_str)
        .unwrap_or("adam");
    let mut t = section("kind", kind);
    if fusion {
        t.insert("lr".into(), 3e-3.into());
    }
    copy(flat, &mut t, "lr", "lr");
    copy(flat, &mut t, "weight_decay", "weight_decay");
    if kind == "sgd" {
        copy(flat, &mut t, "momentum", "momentum");
    }
    t
}

fn schedule(flat: &toml::Table, kind: &str) -> toml::Table {
    let mut t = section("kind", kind);
    if kind == "step" {
        copy(flat, &mut t, "step_epochs", "step_epochs");
        copy(flat, &mut t, "gamma", "gamma");
    }
    t
}
