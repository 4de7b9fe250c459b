//! `rampart serve` (the monitored inference service) and `rampart incidents verify`.
//! Every scalar key of `configs/serve.toml` is also a flag, declared once in [`KEYS`].

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, Subcommand};

use super::{CliError, CliResult, emit};
use crate::artifact::files;
use crate::serve::config::ServeConfig;
use crate::serve::{ServeError, incidents};

impl From<ServeError> for CliError {
    fn from(e: ServeError) -> Self {
        CliError::Usage(e.to_string())
    }
}

/// What a flag's value is in the config.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Float,
    Bool,
    /// Repeatable, a list of strings.
    List,
}

/// (flag, config key path, kind, help).
const KEYS: &[(&str, &str, Kind, &str)] = &[
    (
        "listen",
        "listen",
        Kind::Text,
        "Address to listen on (e.g. 127.0.0.1:8080)",
    ),
    (
        "device",
        "device",
        Kind::Text,
        "Compute device: auto, flex or wgpu",
    ),
    (
        "verify-key",
        "verify_key",
        Kind::Text,
        "Public key every model must be signed with",
    ),
    (
        "incident-log",
        "incident_log",
        Kind::Text,
        "The hash-chained incident log (JSON lines)",
    ),
    (
        "primary",
        "model.primary",
        Kind::Text,
        "The primary model (file or ensemble manifest)",
    ),
    (
        "detectors",
        "model.detectors",
        Kind::Text,
        "Fitted adversarial-input detectors for the primary",
    ),
    (
        "drift-reference",
        "model.drift_reference",
        Kind::Text,
        "Drift reference for the primary",
    ),
    (
        "ledger",
        "model.ledger",
        Kind::Text,
        "Extraction ledger settings",
    ),
    (
        "backup",
        "model.backups",
        Kind::List,
        "A signed backup model (repeat for more, in order of preference)",
    ),
    (
        "max-batch",
        "batch.max_batch",
        Kind::Int,
        "Most inputs per forward pass",
    ),
    (
        "max-wait-ms",
        "batch.max_wait_ms",
        Kind::Int,
        "Longest wait for a batch to fill, ms",
    ),
    (
        "queue",
        "batch.queue",
        Kind::Int,
        "Most requests waiting (more: 503)",
    ),
    (
        "max-inputs",
        "batch.max_inputs",
        Kind::Int,
        "Most inputs per request",
    ),
    (
        "timeout-ms",
        "batch.timeout_ms",
        Kind::Int,
        "Longest a request may take, queue included, ms (then 408)",
    ),
    (
        "max-body-bytes",
        "batch.max_body_bytes",
        Kind::Int,
        "Largest request body, bytes",
    ),
    (
        "smooth-sigma",
        "smooth.sigma",
        Kind::Float,
        "Noise of ?smooth=1, input units",
    ),
    (
        "smooth-n0",
        "smooth.n0",
        Kind::Int,
        "CERTIFY's selection samples",
    ),
    (
        "smooth-n",
        "smooth.n",
        Kind::Int,
        "CERTIFY's estimation samples",
    ),
    (
        "smooth-alpha",
        "smooth.alpha",
        Kind::Float,
        "CERTIFY's failure probability",
    ),
    (
        "smooth-max-inputs",
        "smooth.max_inputs",
        Kind::Int,
        "Most inputs per smoothed request",
    ),
    (
        "drift-window",
        "monitor.drift_window",
        Kind::Int,
        "Inputs per drift test",
    ),
    (
        "online-window",
        "monitor.online_window",
        Kind::Int,
        "Sliding window of the online MMD drift detector (0: off)",
    ),
    (
        "online-ert",
        "monitor.online_ert",
        Kind::Float,
        "Expected inputs between false alarms of the online detector",
    ),
    (
        "drift-alpha",
        "monitor.drift_alpha",
        Kind::Float,
        "Level of each window's drift test",
    ),
    (
        "feedback-window",
        "monitor.feedback_window",
        Kind::Int,
        "Labelled outcomes per health window",
    ),
    (
        "health-threshold",
        "monitor.health_threshold",
        Kind::Float,
        "Accuracy the active model must keep",
    ),
    (
        "health-confidence",
        "monitor.health_confidence",
        Kind::Float,
        "Confidence of the accuracy bounds",
    ),
    (
        "health-windows",
        "monitor.health_windows",
        Kind::Int,
        "Bad (or good) windows in a row before failing over (or back)",
    ),
    (
        "failback-margin",
        "monitor.failback_margin",
        Kind::Float,
        "Fail back at threshold + margin",
    ),
    (
        "check-seconds",
        "monitor.check_seconds",
        Kind::Int,
        "Seconds between latency and error-rate checks",
    ),
    (
        "latency-p99-ms",
        "monitor.latency_p99_ms",
        Kind::Float,
        "p99 latency alert threshold, ms",
    ),
    (
        "error-rate",
        "monitor.error_rate",
        Kind::Float,
        "5xx share alert threshold",
    ),
    (
        "interval-seconds",
        "monitor.interval_seconds",
        Kind::Float,
        "Seconds per query-rate interval",
    ),
    (
        "remember",
        "monitor.remember",
        Kind::Int,
        "Requests remembered for feedback",
    ),
    (
        "block-adversarial",
        "policy.block_adversarial",
        Kind::Bool,
        "Refuse inputs flagged high (true/false)",
    ),
    (
        "block-p",
        "policy.block_p",
        Kind::Float,
        "Fused p-value at or below which an input is flagged high",
    ),
    (
        "degrade-to",
        "policy.degrade_to",
        Kind::Text,
        "Output policy of a client suspected of extraction (full, top3, rounded, label)",
    ),
    (
        "limited-rate",
        "policy.limited_rate",
        Kind::Float,
        "Requests per second of a rate-limited client",
    ),
    (
        "block-after",
        "policy.block_after",
        Kind::Int,
        "Distinct extraction alarms before a client is blocked",
    ),
];

/// The config keys given as flags.
#[derive(Clone, Default)]
pub struct ServeFlags {
    set: Vec<(&'static str, toml::Value)>,
}

impl Args for ServeFlags {
    fn augment_args(mut cmd: Command) -> Command {
        for (flag, key, kind, help) in KEYS {
            let mut arg = Arg::new(*flag)
                .long(*flag)
                .help(format!("{help} [config: {key}]"))
                .allow_negative_numbers(true);
            arg = match kind {
                Kind::List => arg.action(ArgAction::Append),
                _ => arg.action(ArgAction::Set),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for ServeFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut set = Vec::new();
        for (flag, key, kind, _) in KEYS {
            let Some(values) = m.get_many::<String>(flag) else {
                continue;
            };
            let values: Vec<&String> = values.collect();
            let bad = |why: &str| {
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!("--{flag} {}: {why}\n", values[0]),
                )
            };
            let v = match kind {
                Kind::Text => toml::Value::String(values[0].clone()),
                Kind::List => toml::Value::Array(
                    values
                        .iter()
                        .map(|s| toml::Value::String((*s).clone()))
                        .collect(),
                ),
                Kind::Int => {
                    toml::Value::Integer(values[0].parse().map_err(|_| bad("not a whole number"))?)
                }
                Kind::Float => {
                    toml::Value::Float(values[0].parse().map_err(|_| bad("not a number"))?)
                }
                Kind::Bool => {
                    toml::Value::Boolean(values[0].parse().map_err(|_| bad("true or false"))?)
                }
            };
            set.push((*key, v));
        }
        Ok(Self { set })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The service config (TOML); flags override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the config in effect (after flags) and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub flags: ServeFlags,
}

impl std::fmt::Debug for ServeFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.set.iter().map(|(k, v)| (k, v.to_string())))
            .finish()
    }
}

/// The config file's table with the flags applied.
fn config(args: &ServeArgs) -> Result<ServeConfig, CliError> {
    let mut table: toml::Table = match &args.config {
        Some(p) => {
            let text = files::read_text(p, files::CONFIG)?;
            text.parse()
                .map_err(|e| CliError::Usage(format!("{}: not TOML: {e}", p.display())))?
        }
        None => toml::Table::new(),
    };
    for (key, value) in &args.flags.set {
        let mut t = &mut table;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("a key has a name");
        for p in parts {
            t = t
                .entry(p)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| CliError::Usage(format!("config: `{p}` must be a table")))?;
        }
        t.insert(last.to_string(), value.clone());
    }
    let name = args
        .config
        .as_ref()
        .map_or("the flags".to_string(), |p| p.display().to_string());
    let cfg: ServeConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            CliError::Usage(format!(
                "{name}: key `{}`: {}",
                e.path(),
                e.inner().message()
            ))
        })?;
    cfg.check()?;
    Ok(cfg)
}

pub fn run(args: ServeArgs) -> CliResult {
    let cfg = config(&args)?;
    if args.print_config {
        let text =
            toml::to_string_pretty(&cfg).map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        return super::print(&text);
    }
    crate::serve::run(cfg, |addr| {
        super::note(&format!("rampart serve: listening on http://{addr}"))
    })?;
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum IncidentsCommand {
    /// Check an incident log's hash chain: every entry follows the one before it, unchanged.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The incident log (JSON lines).
    #[arg(long)]
    pub log: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// `rampart incidents verify`'s report.
#[derive(Debug, serde::Serialize)]
pub struct ChainReport {
    pub log: PathBuf,
    pub entries: usize,
    pub first: Option<String>,
    pub last: Option<String>,
    /// The last entry's hash: record it elsewhere to detect truncation later.
    pub head: String,
    /// Bytes after the last whole line (a torn write, never acknowledged).
    pub torn_bytes: usize,
    pub verified: bool,
}

impl std::fmt::Display for ChainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "incident log {}: {} entries, hash chain intact",
            self.log.display(),
            self.entries
        )?;
        if let (Some(a), Some(b)) = (&self.first, &self.last) {
            writeln!(f, "  from {a} to {b}")?;
        }
        writeln!(f, "  head (hash of the last entry): {}", self.head)?;
        if self.torn_bytes > 0 {
            writeln!(
                f,
                "  {} bytes after the last whole line: a torn, unacknowledged write",
                self.torn_bytes
            )?;
        }
        Ok(())
    }
}

pub fn incidents(c: IncidentsCommand) -> CliResult {
    match c {
        IncidentsCommand::Verify(a) => {
            let v = incidents::verify(&a.log).map_err(|e| CliError::Usage(e.to_string()))?;
            let report = ChainReport {
                log: a.log,
                entries: v.entries.len(),
                first: v.entries.first().map(|e| e.time.clone()),
                last: v.entries.last().map(|e| e.time.clone()),
                head: v
                    .entries
                    .last()
                    .map_or(incidents::GENESIS.to_string(), |e| e.hash.clone()),
                torn_bytes: v.torn.len(),
                verified: true,
            };
            emit(&report, a.json)
        }
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The incident log of `rampart serve` (its chain is verified first).
    #[arg(long)]
    pub log: PathBuf,
    /// Only entries this recent (e.g. 24h, 30min, 7days).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Also write the report as a self-contained HTML page with plots.
    #[arg(long)]
    pub html: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn report(a: ReportArgs) -> CliResult {
    let mut outputs = files::Outputs::new();
    outputs.input(&a.log);
    if let Some(h) = &a.html {
        outputs.output(h, "--html", files::OutputKind::Html)?;
    }
    let report =
        crate::serve::report::build(&a.log, a.since).map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(h) = &a.html {
        files::write_atomic(h, report.html().as_bytes())?;
    }
    emit(&report, a.json)
}
