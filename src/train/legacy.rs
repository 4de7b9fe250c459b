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

/// Where a key of the flat layout lives in the nested one.
fn moved_to(key: &str) -> &'static str {
    match key {
        "arch" | "normalize" | "class_names" | "network_box" | "modalities" | "fusion" | "dim" => {
            "[model]"
        }
        "dataset" | "data_dir" | "train_limit" | "eval_limit" | "synthetic_size"
        | "train_records" | "test_records" => "[data]",
        "lr" | "momentum" | "weight_decay" => "[optimizer]",
        "step_epochs" | "gamma" => "[schedule]",
        _ => "[mode]",
    }
}

/// The nested form of a flat table. A table that mixes the layouts (a flat key beside a
/// section) is refused, naming where the flat key moved.
pub fn migrate(flat: &toml::Table) -> Result<toml::Table, String> {
    let sectioned = flat
        .iter()
        .find(|(k, v)| v.is_table() || matches!(k.as_str(), "model" | "data"));
    if let Some((section, _)) = sectioned {
        let key = flat
            .keys()
            .find(|k| FLAT.contains(&k.as_str()) && !SHARED.contains(&k.as_str()))
            .map_or("mode", String::as_str);
        return Err(format!(
            "`{key}` is a key of the flat layout of earlier versions, but this config also has the section `{section}` of the nested one; move `{key}` into {} (or write the whole config in one layout)",
            moved_to(key)
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn flat_keys_move_to_their_sections_and_unused_ones_drop() {
        let flat = table(
            "arch = \"mlp\"\nmode = \"pgd\"\nepsilon = 0.2\nattack_steps = 3\nsigma = 0.5\nlr = 0.01\noptimizer = \"sgd\"\nmomentum = 0.8\ngamma = 0.5\nepochs = 4\n",
        );
        assert!(is_flat(&flat));
        let nested = migrate(&flat).unwrap();
        let want = table(
            "epochs = 4\n[model]\narch = \"mlp\"\n[data]\ndataset = \"fashion-mnist\"\n[mode]\nkind = \"pgd\"\nepsilon = 0.2\nsteps = 3\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\nmomentum = 0.8\n[schedule]\nkind = \"constant\"\n",
        );
        assert_eq!(nested, want);
        // A flat fusion config keeps that layout's defaults (lr 3e-3, 8 epochs).
        let fusion = migrate(&table(
            "arch = \"fusion\"\nmode = \"pgd-embeddings\"\nembedding_epsilon = 2.0\n",
        ))
        .unwrap();
        assert_eq!(fusion["optimizer"]["lr"].as_float(), Some(3e-3));
        assert_eq!(fusion["epochs"].as_integer(), Some(8));
        assert_eq!(fusion["mode"]["epsilon"].as_float(), Some(2.0));
        assert_eq!(fusion["data"]["dataset"].as_str(), Some("records"));
    }

    #[test]
    fn nested_tables_are_not_flat_and_mixed_ones_are_refused() {
        assert!(!is_flat(&table("epochs = 2\n[mode]\nkind = \"pgd\"\n")));
        let mixed = table("lr = 0.01\n[mode]\nkind = \"pgd\"\n");
        assert!(is_flat(&mixed));
        let e = migrate(&mixed).unwrap_err();
        assert!(e.contains("`lr`") && e.contains("[optimizer]"), "{e}");
        let e = migrate(&table("learning_rate = 0.1\narch = \"cnn\"\n")).unwrap_err();
        assert!(e.contains("learning_rate"), "{e}");
    }
}
