//! The keys of a training config, read from its declaration: the JSON schema `schemars`
//! derives from [`TrainConfig`] (doc comments included). From it come the `rampart train`
//! flags, the check of a config table's keys (an unknown key, or a key the chosen kind does
//! not have, is named with the keys that would fit), and the rule for laying one table over
//! another (flags over a file, an ensemble member over its base).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

use super::config::TrainConfig;

/// The type of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Integer,
    Number,
    Text,
    /// A list of strings (comma-separated as a flag).
    List,
    /// Anything else (e.g. a list of pairs): config files only.
    Other,
}

/// One key of a config.
#[derive(Debug, Clone)]
pub struct Key {
    /// `None` for top-level keys, else the section (`model`, `data`, `mode`, ...).
    pub section: Option<String>,
    /// The key's name in its table (`sigma`), or the section's tag (`kind`, `arch`, ...).
    pub name: String,
    /// The flag without dashes: the name in kebab case; for a tag, the section's choice
    /// (`mode`, `optimizer`, `schedule`, `arch`, `dataset`).
    pub flag: String,
    pub help: String,
    pub kind: Kind,
    /// The values a string key takes, if it is an enumeration (tags: the kinds).
    pub choices: Vec<String>,
    /// For a key of a tagged section: the kinds that have it.
    pub kinds: Vec<String>,
    pub is_tag: bool,
}

/// A tagged section: its tag key and, per kind, the keys it has.
#[derive(Debug, Clone)]
pub struct Section {
    pub tag: String,
    pub kinds: BTreeMap<String, BTreeSet<String>>,
    /// The kind used when a config does not name one.
    pub default: String,
}

/// Every key of [`TrainConfig`], and its tagged sections.
#[derive(Debug, Clone)]
pub struct Schema {
    pub keys: Vec<Key>,
    pub sections: BTreeMap<String, Section>,
}

/// The schema of [`TrainConfig`], built once.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(build)
}

fn build() -> Schema {
    let root = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<TrainConfig>();
    let root = serde_json::to_value(root).unwrap_or_default();
    let defaults = serde_json::to_value(TrainConfig::default()).unwrap_or_default();
    let mut keys = Vec::new();
    let mut sections = BTreeMap::new();
    for (name, prop) in properties(&root) {
        match variants(prop) {
            Some(vars) => {
                let (section, mut section_keys) = tagged(name, prop, &vars, &defaults);
                keys.append(&mut section_keys);
                sections.insert(name.clone(), section);
            }
            None => keys.push(field(None, name, prop, Vec::new())),
        }
    }
    Schema { keys, sections }
}

fn properties(v: &Value) -> Vec<(&String, &Value)> {
    v.get("properties")
        .and_then(Value::as_object)
        .map(|m| m.iter().collect())
        .unwrap_or_default()
}

fn description(v: &Value) -> String {
    v.get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .replace('\n', " ")
        .trim_end_matches('.')
        .to_string()
}

/// The object variants of a tagged enum's schema (`oneOf` of objects), if it is one.
fn variants(prop: &Value) -> Option<Vec<&Value>> {
    let one_of = prop.get("oneOf")?.as_array()?;
    let objects: Vec<&Value> = one_of
        .iter()
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("object"))
        .collect();
    (!objects.is_empty() && objects.len() == one_of.len()).then_some(objects)
}

/// The tag key of a variant: the property holding a `const`.
fn tag_of(variant: &Value) -> Option<(String, String)> {
    properties(variant).into_iter().find_map(|(k, v)| {
        v.get("const")
            .and_then(Value::as_str)
            .map(|c| (k.clone(), c.to_string()))
    })
}

fn tagged(name: &str, prop: &Value, vars: &[&Value], defaults: &Value) -> (Section, Vec<Key>) {
    let mut kinds = BTreeMap::new();
    // Per field: its schema, and each kind that has it with the kind's description of it.
    let mut fields: BTreeMap<String, (Value, Vec<(String, String)>)> = BTreeMap::new();
    let mut tag = String::from("kind");
    let mut choices = Vec::new();
    let mut helps = Vec::new();
    for v in vars {
        let Some((t, kind)) = tag_of(v) else { continue };
        tag = t;
        helps.push(format!("{kind} ({})", description(v)));
        choices.push(kind.clone());
        let mut own = BTreeSet::new();
        for (k, p) in properties(v) {
            if *k == tag {
                continue;
            }
            own.insert(k.clone());
            let entry = fields
                .entry(k.clone())
                .or_insert_with(|| (p.clone(), Vec::new()));
            entry.1.push((kind.clone(), description(p)));
        }
        kinds.insert(kind, own);
    }
    let default = defaults
        .get(name)
        .and_then(|d| d.get(&tag))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let flag = if tag == "kind" {
        name.to_string()
    } else {
        tag.clone()
    };
    let mut keys = vec![Key {
        section: Some(name.to_string()),
        name: tag.clone(),
        flag,
        help: format!("{}: {}", description(prop), helps.join("; ")),
        kind: Kind::Text,
        choices,
        kinds: Vec::new(),
        is_tag: true,
    }];
    for (k, (p, in_kinds)) in fields {
        let mut key = field(
            Some(name),
            &k,
            &p,
            in_kinds.iter().map(|(k, _)| k.clone()).collect(),
        );
        key.help = per_kind_help(name, &in_kinds);
        keys.push(key);
    }
    let section = Section {
        tag,
        kinds,
        default,
    };
    (section, keys)
}

/// "[mode fgsm-rs] FGSM step ...; [mode pgd, trades] PGD step ...": a field's description
/// per kind, kinds with the same description grouped.
fn per_kind_help(section: &str, in_kinds: &[(String, String)]) -> String {
    let mut groups: Vec<(Vec<&str>, &str)> = Vec::new();
    for (kind, help) in in_kinds {
        match groups.iter_mut().find(|(_, h)| *h == help.as_str()) {
            Some((kinds, _)) => kinds.push(kind),
            None => groups.push((vec![kind], help)),
        }
    }
    groups
        .iter()
        .map(|(kinds, help)| format!("[{section} {}] {help}", kinds.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn field(section: Option<&str>, name: &str, prop: &Value, kinds: Vec<String>) -> Key {
    let types: Vec<&str> = match prop.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let choices: Vec<String> = prop
        .get("oneOf")
        .or_else(|| prop.get("enum"))
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.get("const").or(Some(v)).and_then(Value::as_str))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let kind = if types.contains(&"boolean") {
        Kind::Bool
    } else if types.contains(&"integer") {
        Kind::Integer
    } else if types.contains(&"number") {
        Kind::Number
    } else if types.contains(&"array") {
        let item = prop.get("items");
        let strings = item.is_some_and(|i| {
            i.get("type").and_then(Value::as_str) == Some("string")
                || i.get("enum").is_some()
                || i.get("oneOf").is_some()
        });
        if strings { Kind::List } else { Kind::Other }
    } else {
        Kind::Text
    };
    let help = description(prop);
    Key {
        section: section.map(String::from),
        name: name.to_string(),
        flag: name.replace('_', "-"),
        help,
        kind,
        choices,
        kinds,
        is_tag: false,
    }
}

/// Dotted paths of a JSON value's leaves (`mode.epsilon` → 0.1), nulls left out.
pub fn leaves(v: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, x, out);
                }
            }
            Value::Null => {}
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", v, &mut out);
    out
}

/// Checks a config table's keys against the schema: every top-level key known, every section
/// a table naming a known kind, every key of a section one its kind has. The error names the
/// key and what would fit.
pub fn check(table: &toml::Table) -> Result<(), String> {
    let s = schema();
    let top: BTreeSet<&str> = s
        .keys
        .iter()
        .filter(|k| k.section.is_none())
        .map(|k| k.name.as_str())
        .chain(s.sections.keys().map(String::as_str))
        .collect();
    for (key, value) in table {
        if !top.contains(key.as_str()) {
            return Err(format!(
                "unknown key `{key}` (top-level keys: {})",
                top.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let Some(section) = s.sections.get(key) else {
            check_value(None, key, value)?;
            continue;
        };
        let toml::Value::Table(t) = value else {
            return Err(format!(
                "`{key}` must be a table ([{key}] with {} = ...)",
                section.tag
            ));
        };
        check_section(key, section, t)?;
    }
    Ok(())
}

fn check_section(name: &str, section: &Section, t: &toml::Table) -> Result<(), String> {
    let kinds = section.kinds.keys().cloned().collect::<Vec<_>>().join(", ");
    let kind = match t.get(&section.tag) {
        Some(toml::Value::String(k)) => k.as_str(),
        Some(v) => {
            return Err(format!(
                "[{name}] {} = {v} is not one of {kinds}",
                section.tag
            ));
        }
        None => {
            return Err(format!("[{name}] needs {} = one of {kinds}", section.tag));
        }
    };
    let Some(fields) = section.kinds.get(kind) else {
        return Err(format!(
            "[{name}] {} = \"{kind}\" is not one of {kinds}",
            section.tag
        ));
    };
    for (key, value) in t.iter().filter(|(k, _)| **k != section.tag) {
        if !fields.contains(key) {
            let has = if fields.is_empty() {
                "no keys".to_string()
            } else {
                format!(
                    "keys {}",
                    fields.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(format!(
                "[{name}] {} = \"{kind}\" has no key `{key}` (it has {has})",
                section.tag
            ));
        }
        check_value(Some(name), key, value)?;
    }
    Ok(())
}

/// Checks a value's type against its key's: whole numbers >= 0, numbers, booleans, strings,
/// lists of strings. The error names the key.
fn check_value(section: Option<&str>, name: &str, value: &toml::Value) -> Result<(), String> {
    let Some(key) = schema()
        .keys
        .iter()
        .find(|k| k.section.as_deref() == section && k.name == name)
    else {
        return Ok(());
    };
    let shown = match section {
        Some(s) => format!("[{s}] {name}"),
        None => name.to_string(),
    };
    let fits = match (key.kind, value) {
        (Kind::Integer, toml::Value::Integer(i)) => *i >= 0,
        (Kind::Number, toml::Value::Float(_) | toml::Value::Integer(_)) => true,
        (Kind::Bool, toml::Value::Boolean(_)) => true,
        (Kind::Text, toml::Value::String(v)) => key.choices.is_empty() || key.choices.contains(v),
        (Kind::List, toml::Value::Array(a)) => a.iter().all(toml::Value::is_str),
        (Kind::Other, _) => true,
        _ => false,
    };
    if fits {
        return Ok(());
    }
    let expected = match key.kind {
        Kind::Integer => "a whole number >= 0".to_string(),
        Kind::Number => "a number".to_string(),
        Kind::Bool => "true or false".to_string(),
        Kind::Text if !key.choices.is_empty() => format!("one of {}", key.choices.join(", ")),
        Kind::Text => "a string".to_string(),
        Kind::List => "a list of strings".to_string(),
        Kind::Other => "a value of its type".to_string(),
    };
    Err(format!("{shown} = {value} is not {expected}"))
}

/// Lays `top` over `base`: top-level values are replaced; sections are merged key by key,
/// except that when `top` names another kind, the keys of `base`'s section that the new kind
/// does not have are dropped (they were written for the other kind).
pub fn overlay(mut base: toml::Table, top: toml::Table) -> toml::Table {
    let s = schema();
    for (key, value) in top {
        match (s.sections.get(&key), base.remove(&key), value) {
            (Some(section), Some(toml::Value::Table(mut old)), toml::Value::Table(new)) => {
                let new_kind = new
                    .get(&section.tag)
                    .and_then(|v| v.as_str().map(String::from));
                let old_kind = old
                    .get(&section.tag)
                    .and_then(|v| v.as_str().map(String::from));
                if let (Some(nk), Some(ok)) = (&new_kind, &old_kind)
                    && nk != ok
                {
                    let keep = section.kinds.get(nk).cloned().unwrap_or_default();
                    old.retain(|k, _| keep.contains(k));
                }
                old.extend(new);
                base.insert(key, toml::Value::Table(old));
            }
            (_, _, value) => {
                base.insert(key, value);
            }
        }
    }
    base
}

/// The section tables a set of keys belongs in, filled with the sections' default kinds where
/// the base names none: `--lr 0.01` alone becomes `[optimizer] kind = "adam", lr = 0.01`.
pub fn with_default_kinds(base: &toml::Table, mut top: toml::Table) -> toml::Table {
    for (name, section) in &schema().sections {
        let Some(toml::Value::Table(t)) = top.get_mut(name) else {
            continue;
        };
        if t.contains_key(&section.tag) {
            continue;
        }
        let base_kind = base
            .get(name)
            .and_then(|v| v.get(&section.tag))
            .cloned()
            .unwrap_or_else(|| toml::Value::String(section.default.clone()));
        t.insert(section.tag.clone(), base_kind);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn overlay_merges_sections_and_drops_keys_of_another_kind() {
        let base =
            table("epochs = 3\n[mode]\nkind = \"pgd\"\nepsilon = 0.3\nsteps = 5\nalpha = 0.1\n");
        let same = overlay(base.clone(), table("[mode]\nkind = \"pgd\"\nsteps = 9\n"));
        assert_eq!(same["mode"]["epsilon"].as_float(), Some(0.3));
        assert_eq!(same["mode"]["steps"].as_integer(), Some(9));
        // trades has epsilon, steps and alpha too: they stay; gaussian has none of them.
        let trades = overlay(base.clone(), table("[mode]\nkind = \"trades\"\n"));
        assert_eq!(trades["mode"]["alpha"].as_float(), Some(0.1));
        let gaussian = overlay(
            base.clone(),
            table("[mode]\nkind = \"gaussian\"\nsigma = 0.5\n"),
        );
        assert_eq!(gaussian["mode"].as_table().unwrap().len(), 2);
        assert_eq!(gaussian["epochs"].as_integer(), Some(3));
        // Keys without a kind go into the base's kind, or the section's default.
        let top = with_default_kinds(&base, table("[mode]\nsteps = 2\n[optimizer]\nlr = 0.5\n"));
        assert_eq!(top["mode"]["kind"].as_str(), Some("pgd"));
        assert_eq!(top["optimizer"]["kind"].as_str(), Some("adam"));
    }

    #[test]
    fn check_names_the_key_and_what_would_fit() {
        let e = check(&table("[mode]\nkind = \"gaussian\"\nepsilon = 0.1\n")).unwrap_err();
        assert!(e.contains("`epsilon`") && e.contains("sigma"), "{e}");
        let e = check(&table("[optimizer]\nkind = \"rmsprop\"\n")).unwrap_err();
        assert!(e.contains("rmsprop") && e.contains("adam, sgd"), "{e}");
        let e = check(&table("batch_size = 1.5\n")).unwrap_err();
        assert!(
            e.contains("batch_size") && e.contains("whole number"),
            "{e}"
        );
        let e = check(&table("device = \"tpu\"\n")).unwrap_err();
        assert!(e.contains("auto, flex, wgpu"), "{e}");
        assert!(check(&table("epochs = 2\n[mode]\nkind = \"pgd\"\nsteps = 3\n")).is_ok());
    }

    #[test]
    fn every_key_has_a_unique_flag() {
        let mut flags: Vec<&str> = schema()
            .keys
            .iter()
            .filter(|k| k.kind != Kind::Other)
            .map(|k| k.flag.as_str())
            .collect();
        let n = flags.len();
        flags.sort();
        flags.dedup();
        assert_eq!(flags.len(), n, "two keys share a flag");
        for flag in [
            "mode",
            "arch",
            "dataset",
            "optimizer",
            "schedule",
            "epsilon",
            "lr",
            "epochs",
        ] {
            assert!(flags.contains(&flag), "--{flag}");
        }
    }
}
