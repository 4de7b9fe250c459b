//! `rampart merge`: the shards of a sharded `certify`, `predict`, `attack` or `evaluate` run (each table
//! with its `OUT.shard.json`) checked to be one run and joined into the unsharded run's table
//! and report; and the pieces the sharded commands share (their table's outputs, the rule
//! that a shard keeps its table).

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::args::guard;
use super::{CliError, CliResult, emit};
use crate::artifact::files::{self, FileError, OutputKind, Outputs};
use crate::attack::shard::MergedAttack;
use crate::certify::predict::{self, PredictSummary};
use crate::certify::run::{self, Summary};
use crate::certify::shard as certify_shard;
use crate::evaluate::shard::MergedEvaluation;
use crate::shard::{self, Command, Description, Shard, ShardError};

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shards' tables (each with its OUT.shard.json), all shards of one run.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// The merged table (with its .shard.json): the rows of the unsharded run, in index order.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// What the merged run found: the report the unsharded command gives.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Merged {
    Certify(Summary),
    Predict(PredictSummary),
    Attack(MergedAttack),
    Evaluate(MergedEvaluation),
}

/// What `rampart merge` reports.
#[derive(Debug, Serialize)]
pub struct MergeReport {
    pub run: Command,
    pub model_sha256: String,
    pub data: String,
    pub shards: usize,
    pub out: PathBuf,
    pub merged: Merged,
}

impl std::fmt::Display for MergeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "merged {} shards of one {} run into {}: {} (model sha256 {})",
            self.shards,
            self.run,
            self.out.display(),
            self.data,
            &self.model_sha256[..12.min(self.model_sha256.len())],
        )?;
        match &self.merged {
            Merged::Certify(s) => {
                writeln!(
                    f,
                    "  {} examples; sigma {}, n0 {}, n {}, alpha {}",
                    s.images, s.sigma, s.n0, s.n, s.alpha
                )?;
                for (r, acc) in &s.certified_accuracy {
                    writeln!(
                        f,
                        "  certified accuracy at radius {r:.2}: {:.1}%",
                        100.0 * acc
                    )?;
                }
                writeln!(f, "  abstained: {:.1}%", 100.0 * s.abstain_rate)
            }
            Merged::Predict(p) => write!(f, "{p}"),
            Merged::Attack(a) => write!(f, "{a}"),
            Merged::Evaluate(r) => write!(f, "{r}"),
        }
    }
}

/// Refuses a shard (of several) without the table `rampart merge` needs.
pub fn require_table(shard: &Shard, out: Option<&Path>, flag: &str) -> Result<(), CliError> {
    if shard.count > 1 && out.is_none() {
        return Err(CliError::Usage(format!(
            "a shard must keep its rows for `rampart merge`: give {flag}"
        )));
    }
    Ok(())
}

/// Registers a shardable table `out` of `kind` and what goes beside it: `OUT.partial` while it
/// is written, `OUT.shard.json` and `OUT.partial.shard.json`.
pub fn guard_table(
    outputs: &mut Outputs,
    out: &Path,
    flag: &str,
    kind: OutputKind,
) -> Result<(), FileError> {
    let partial = shard::partial_path(out);
    outputs.output(out, flag, kind)?;
    outputs.output(&partial, &format!("{flag} (its .partial)"), kind)?;
    outputs.output(
        &shard::meta_path(out),
        &format!("{flag} (its .shard.json)"),
        OutputKind::ShardMeta,
    )?;
    outputs.output(
        &shard::meta_path(&partial),
        &format!("{flag} (its .partial.shard.json)"),
        OutputKind::ShardMeta,
    )
}

fn usage(e: ShardError) -> CliError {
    CliError::Usage(e.to_string())
}

/// `rampart merge`: the shards of one run as the single result.
pub fn merge(args: MergeArgs) -> CliResult {
    let mut outputs = guard(&args.shards);
    let metas: Vec<PathBuf> = args.shards.iter().map(|p| shard::meta_path(p)).collect();
    outputs.inputs(&metas);
    let first = shard::read_meta(&args.shards[0]).map_err(usage)?;
    for path in &args.shards[1..] {
        let meta = shard::read_meta(path).map_err(usage)?;
        if meta.command != first.command {
            return Err(usage(ShardError::Mismatch(format!(
                "{} is a shard of a {} run, {} of a {} run",
                path.display(),
                meta.command,
                args.shards[0].display(),
                first.command
            ))));
        }
    }
    let kind = match first.command {
        Command::Certify | Command::Predict => OutputKind::Tsv,
        Command::Attack | Command::Evaluate => OutputKind::EvaluationTsv,
    };
    outputs.output(&args.out, "--out", kind)?;
    outputs.output(
        &shard::meta_path(&args.out),
        "--out (its .shard.json)",
        OutputKind::ShardMeta,
    )?;
    let (meta, text, merged) = match first.command {
        Command::Certify => merge_certify(&args.shards)?,
        Command::Predict => merge_predict(&args.shards)?,
        Command::Attack => merge_attack(&args.shards)?,
        Command::Evaluate => merge_evaluate(&args.shards)?,
    };
    files::write_atomic(&args.out, text.as_bytes())?;
    shard::write_meta(&args.out, &meta)?;
    let report = MergeReport {
        run: meta.command,
        model_sha256: meta.model_sha256.clone(),
        data: meta.data.clone(),
        shards: args.shards.len(),
        out: args.out.clone(),
        merged,
    };
    emit(&report, args.json)
}

type MergedRun = (Description, String, Merged);

fn merge_certify(tsvs: &[PathBuf]) -> Result<MergedRun, CliError> {
    let (meta, rows) = certify_shard::merge(tsvs).map_err(usage)?;
    let p = certify_shard::protocol(&meta, &tsvs[0]).map_err(usage)?;
    let mut text = run::TSV_COLUMNS.join("\t");
    text.push('\n');
    for r in &rows {
        text.push_str(&run::tsv_line(r));
        text.push('\n');
    }
    let seconds = rows.iter().map(|r| r.time).sum::<f64>() / rows.len().max(1) as f64;
    let mut summary = run::summarise(&rows, p.sigma, p.n0, p.n, p.alpha, seconds);
    summary.target = p.target;
    Ok((meta, text, Merged::Certify(summary)))
}

fn merge_predict(tsvs: &[PathBuf]) -> Result<MergedRun, CliError> {
    let (meta, rows) = predict::merge(tsvs).map_err(usage)?;
    let p = predict::protocol(&meta, &tsvs[0]).map_err(usage)?;
    let summary = PredictSummary::of(&p, &rows);
    Ok((meta, predict::tsv(&rows), Merged::Predict(summary)))
}

fn merge_attack(tsvs: &[PathBuf]) -> Result<MergedRun, CliError> {
    let (meta, rows, merged) = crate::attack::shard::merge(tsvs).map_err(usage)?;
    let text = crate::evaluate::report::tsv(&rows, &merged.protocol.attacks);
    Ok((meta, text, Merged::Attack(merged)))
}

fn merge_evaluate(tsvs: &[PathBuf]) -> Result<MergedRun, CliError> {
    let (meta, rows, merged) = crate::evaluate::shard::merge(tsvs).map_err(usage)?;
    let text = crate::evaluate::report::tsv(&rows, &merged.protocol.attacks);
    Ok((meta, text, Merged::Evaluate(merged)))
}
