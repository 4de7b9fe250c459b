//! `rampart train`'s flags, derived from the training config's declaration: every key of
//! [`TrainConfig`] is a flag of its name with its doc comment as help, each section's choice
//! (`--mode`, `--optimizer`, `--schedule`, `--arch`, `--dataset`) included. A key is declared
//! once, in `src/train/config.rs`.
//!
//! [`TrainConfig`]: crate::train::config::TrainConfig

use clap::builder::PossibleValuesParser;
use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::train::keys::{self, Key, Kind};

/// Flag names of the flat layout, still accepted: (alias, flag).
const ALIASES: [(&str, &str); 4] = [
    ("attack-steps", "steps"),
    ("attack-alpha", "alpha"),
    ("trades-beta", "beta"),
    ("embedding-epsilon", "epsilon"),
];

/// The config keys set on the command line.
#[derive(Debug, Clone, Default)]
pub struct ConfigFlags {
    /// (key, value, flag) in schema order.
    pub set: Vec<(Key, toml::Value, String)>,
}

/// The keys that can be flags: every key of the schema whose value is not a compound.
fn flag_keys() -> Vec<Key> {
    let mut seen = std::collections::BTreeSet::new();
    keys::schema()
        .keys
        .iter()
        .filter(|k| k.kind != Kind::Other)
        .filter(|k| seen.insert(k.flag.clone()))
        .cloned()
        .collect()
}

impl clap::Args for ConfigFlags {
    fn augment_args(mut cmd: Command) -> Command {
        for key in flag_keys() {
            let mut arg = Arg::new(key.flag.clone())
                .long(key.flag.clone())
                .help(key.help.clone())
                .action(ArgAction::Set)
                .allow_negative_numbers(true);
            if !key.choices.is_empty() {
                arg = arg.value_parser(PossibleValuesParser::new(key.choices.clone()));
            }
            if key.kind == Kind::List {
                arg = arg
                    .value_delimiter(',')
                    .num_args(1..)
                    .action(ArgAction::Append);
            }
            for (alias, flag) in ALIASES {
                if flag == key.flag {
                    arg = arg.alias(alias);
                }
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for ConfigFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut set = Vec::new();
        for key in flag_keys() {
            let Some(values) = m.get_many::<String>(&key.flag) else {
                continue;
            };
            let values: Vec<&String> = values.collect();
            let value = parse(&key, &values)
                .map_err(|e| clap::Error::raw(ErrorKind::ValueValidation, format!("{e}\n")))?;
            let flag = format!("--{}", key.flag);
            set.push((key, value, flag));
        }
        Ok(Self { set })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// A flag's text as the TOML value its key takes.
fn parse(key: &Key, values: &[&String]) -> Result<toml::Value, String> {
    let flag = &key.flag;
    let one = values.last().map(|s| s.as_str()).unwrap_or_default();
    Ok(match key.kind {
        Kind::Bool => match one {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => return Err(format!("--{flag} takes true or false, got '{one}'")),
        },
        Kind::Integer => {
            let v: i64 = one.parse().map_err(|_| {
                format!(
                    "--{flag} takes a whole number (at most {}), got '{one}'",
                    i64::MAX
                )
            })?;
            if v < 0 {
                return Err(format!("--{flag} must be 0 or more, got {v}"));
            }
            toml::Value::Integer(v)
        }
        Kind::Number => toml::Value::Float(
            one.parse()
                .map_err(|_| format!("--{flag} takes a number, got '{one}'"))?,
        ),
        Kind::List => toml::Value::Array(
            values
                .iter()
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Text | Kind::Other => toml::Value::String(one.to_string()),
    })
}

impl ConfigFlags {
    /// The flags as a config table: top-level keys at the top, the others in their sections.
    pub fn table(&self) -> toml::Table {
        let mut table = toml::Table::new();
        for (key, value, _) in &self.set {
            match &key.section {
                None => {
                    table.insert(key.name.clone(), value.clone());
                }
                Some(section) => {
                    let entry = table
                        .entry(section.clone())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(t) = entry {
                        t.insert(key.name.clone(), value.clone());
                    }
                }
            }
        }
        table
    }

    /// The flags given, for error messages ("--arch, --epochs").
    pub fn given(&self) -> Vec<String> {
        self.set.iter().map(|(_, _, f)| f.clone()).collect()
    }
}
