//! The report of `rampart evaluate` (one schema for every model kind) and the per-example
//! TSV.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::checks::Check;
use super::{Found, Plan, Row, attack_names};
use crate::artifact::ModelInfo;
use crate::attack::run::AfterAttack;
use crate::attack::suite::Version;
use crate::attack::{Method, Norm};
use crate::model::Modality;
use crate::workload::{DataInfo, Workload};

#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    /// The attacked input: "images", or a fusion model's "network", "text" or "bytes".
    pub input: String,
    /// The unit of epsilon.
    pub units: String,
    pub norm: Norm,
    pub epsilon: f64,
    pub version: Version,
    /// The Gaussian noise of the randomized classifier evaluated (`--sigma`), input units.
    pub sigma: Option<f64>,
    /// How this protocol differs from the reference one.
    pub notes: Vec<String>,
    pub attacks: Vec<Method>,
    #[serde(flatten)]
    pub figures: Figures,
    pub checks: Vec<Check>,
    /// The checks' warnings, each with its reason.
    pub warnings: Vec<String>,
    /// Examples taken from the state file instead of attacked in this run.
    pub resumed: usize,
    pub examples_per_sec: f64,
    pub seconds: f64,
    pub per_example: Option<PathBuf>,
    pub saved: Option<PathBuf>,
    pub state: Option<PathBuf>,
}

/// What the rows show, computed from them alone (so merged shards give the unsharded run's).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub examples: usize,
    pub clean_accuracy: f64,
    /// Per-example worst case over every attack.
    pub robust_accuracy: f64,
    /// Robust accuracy after each attack in turn.
    pub after_each: Vec<AfterAttack>,
    /// The largest perturbation of any returned example in the threat model's norm (at most
    /// epsilon); NaN examples excluded.
    pub max_perturbation: f64,
    pub nan_examples: usize,
}

/// The figures of `rows` under `attacks` (indexed like [`Row::broken_by`]).
pub fn figures(rows: &[Row], attacks: &[Method]) -> Figures {
    let n = rows.len().max(1) as f64;
    let fraction = |count: usize| count as f64 / n;
    let after_each = attack_names(attacks)
        .into_iter()
        .enumerate()
        .map(|(a, attack)| AfterAttack {
            attack,
            robust_accuracy: fraction(
                rows.iter()
                    .filter(|r| r.clean_correct && r.broken_by.is_none_or(|b| b > a))
                    .count(),
            ),
        })
        .collect();
    let norm = attacks.first().map(Method::norm).unwrap_or(Norm::Linf);
    let max_perturbation = rows
        .iter()
        .filter_map(|r| match norm {
            Norm::Linf => r.linf,
            Norm::L2 => r.l2,
        })
        .fold(0.0, f64::max);
    Figures {
        examples: rows.len(),
        clean_accuracy: fraction(rows.iter().filter(|r| r.clean_correct).count()),
        robust_accuracy: fraction(rows.iter().filter(|r| r.robust()).count()),
        after_each,
        max_perturbation,
        nan_examples: rows.iter().filter(|r| r.nan).count(),
    }
}

/// Clean accuracy, the robust accuracy after each attack and the worst case over every
/// `over` ("attack", "run"), one line each after `indent`: the figures every attack report
/// (attack, evaluate, their merged shards) prints.
pub fn write_accuracies(
    f: &mut fmt::Formatter<'_>,
    indent: &str,
    clean: f64,
    after_each: &[AfterAttack],
    robust: f64,
    over: &str,
) -> fmt::Result {
    writeln!(f, "{indent}clean accuracy:  {:.2}%", 100.0 * clean)?;
    for a in after_each {
        writeln!(
            f,
            "{indent}  after {:<10} {:.2}%",
            a.attack,
            100.0 * a.robust_accuracy
        )?;
    }
    writeln!(
        f,
        "{indent}robust accuracy: {:.2}% (worst case over every {over})",
        100.0 * robust
    )
}

/// The masking checks of a run: those of its first batch, then those of its rows.
pub fn all_checks(before: &[Check], attacks: &[Method], rows: &[Row], run: bool) -> Vec<Check> {
    let mut checks = before.to_vec();
    if run {
        checks.extend(super::checks::after(attacks, rows));
    }
    checks
}

pub(super) fn build(
    work: &Workload,
    plan: &Plan,
    modality: Option<Modality>,
    found: &Found,
) -> EvaluateReport {
    let rows = &found.rows;
    let first = found.attacks.first();
    let attacked = rows.len() - found.resumed;
    let checks = all_checks(&found.before, &found.attacks, rows, plan.checks);
    EvaluateReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        input: work.input_name(modality),
        units: found.units.clone(),
        norm: first.map(Method::norm).unwrap_or(Norm::Linf),
        epsilon: first.map(Method::epsilon).unwrap_or(0.0),
        version: plan.version,
        sigma: plan.sigma,
        notes: plan.notes.clone(),
        attacks: found.attacks.clone(),
        figures: figures(rows, &found.attacks),
        warnings: checks.iter().filter_map(|c| c.warning.clone()).collect(),
        checks,
        resumed: found.resumed,
        examples_per_sec: attacked as f64 / found.seconds.max(1e-9),
        seconds: found.seconds,
        per_example: None,
        saved: None,
        state: plan.state.clone(),
    }
}

/// The per-example table: one header line, then one line per example.
pub fn tsv(rows: &[Row], attacks: &[Method]) -> String {
    let names = attack_names(attacks);
    let mut out = String::from(
        "id\tlabel\tclean_prediction\tclean_correct\tbroken_by\titeration\tfinal_prediction\tlinf\tl2\tnan\n",
    );
    let opt = |v: Option<f64>| v.map_or("nan".to_string(), |v| format!("{v:.6}"));
    for r in rows {
        let broken = match (r.clean_correct, r.broken_by) {
            (false, _) => "clean".to_string(),
            (true, Some(a)) => names.get(a).cloned().unwrap_or_else(|| a.to_string()),
            (true, None) => "-".to_string(),
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            r.id,
            r.label,
            r.clean_prediction,
            u8::from(r.clean_correct),
            broken,
            r.iteration.map_or("-".to_string(), |i| i.to_string()),
            r.final_prediction,
            opt(r.linf),
            opt(r.l2),
            u8::from(r.nan),
        ));
    }
    out
}

impl fmt::Display for EvaluateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} on {} ({} examples, {}): {} {:?} eps {} ({})",
            self.model.path.display(),
            self.data.name,
            self.figures.examples,
            self.input,
            format!("{:?}", self.version).to_lowercase(),
            self.norm,
            self.epsilon,
            self.units,
        )?;
        if let Some(s) = self.sigma {
            writeln!(f, "randomized classifier: Gaussian input noise sigma {s}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        let g = &self.figures;
        write_accuracies(
            f,
            "",
            g.clean_accuracy,
            &g.after_each,
            g.robust_accuracy,
            "attack",
        )?;
        writeln!(
            f,
            "largest perturbation {:.4} ({:?}), {} NaN examples",
            self.figures.max_perturbation, self.norm, self.figures.nan_examples
        )?;
        for c in &self.checks {
            writeln!(f, "check {:<24} {:.4}", c.name, c.value)?;
        }
        for w in &self.warnings {
            writeln!(f, "WARNING: {w}")?;
        }
        if self.resumed > 0 {
            writeln!(f, "{} examples resumed from the state file", self.resumed)?;
        }
        writeln!(
            f,
            "{:.1} examples/s, {:.1} s",
            self.examples_per_sec, self.seconds
        )?;
        if let Some(p) = &self.per_example {
            writeln!(f, "per-example results in {}", p.display())?;
        }
        if let Some(dir) = &self.saved {
            writeln!(f, "examples in {}", dir.display())?;
        }
        Ok(())
    }
}
