//! `rampart attack` split across processes or machines ([`crate::shard`]): a shard runs every
//! K-th batch of `--batch` examples, seeded as that batch of the whole run, and keeps its
//! per-example table (the evaluation's columns) with a description. A shard run again
//! resumes after the last whole batch of its `.partial` table; merging gives the unsharded
//! run's rows and figures.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Attack;
use super::run::{AttackProtocol, resumable};
use crate::evaluate::Row;
use crate::evaluate::report::{Figures, figures, write_accuracies};
use crate::evaluate::shard::{merge_rows, read_tsv};
use crate::shard::{self, Description, ShardError};

/// The rows a re-run with description `planned` and table `out` already has: all of them if
/// `out` is complete with the same description, the whole batches of `out.partial` if an
/// interrupted run with the same description left it, else none.
pub fn resume(
    out: &Path,
    planned: &Description,
    p: &AttackProtocol,
) -> Result<Vec<Row>, ShardError> {
    for path in [out.to_path_buf(), shard::partial_path(out)] {
        if shard::written_by(&path, planned) {
            let rows = read_tsv(&path, &p.attacks)?;
            if resumable(&rows, &planned.ids, p.batch) {
                return Ok(rows);
            }
        }
    }
    Ok(Vec::new())
}

/// The merged run's result: its protocol and the figures of every row.
#[derive(Debug, Clone, Serialize)]
pub struct MergedAttack {
    #[serde(flatten)]
    pub protocol: AttackProtocol,
    #[serde(flatten)]
    pub figures: Figures,
}

impl fmt::Display for MergedAttack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.protocol;
        let names: Vec<String> = p.attacks.iter().map(super::Method::name).collect();
        writeln!(
            f,
            "  {} examples ({}): {}, {} restarts, on {}",
            self.figures.examples,
            p.input,
            names.join("+"),
            p.restarts,
            p.device
        )?;
        let g = &self.figures;
        write_accuracies(
            f,
            "  ",
            g.clean_accuracy,
            &g.after_each,
            g.robust_accuracy,
            "run",
        )
    }
}

/// The shards' rows as one run, in index order, with the run's description and result.
pub fn merge(tsvs: &[PathBuf]) -> Result<(Description, Vec<Row>, MergedAttack), ShardError> {
    let (meta, protocol, rows) =
        merge_rows::<AttackProtocol>(tsvs, "an attack", |p| p.attacks.as_slice())?;
    let merged = MergedAttack {
        figures: figures(&rows, &protocol.attacks),
        protocol,
    };
    Ok((meta, rows, merged))
}
