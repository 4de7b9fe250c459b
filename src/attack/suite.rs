//! AutoAttack's versions (Croce & Hein 2020) as lists of attacks, and the attacks a custom
//! evaluation can name. FAB-T is not implemented: `standard` here is APGD-CE, APGD-T and
//! Square, and reports say so.

use serde::Serialize;

use super::apgd::{self, Apgd};
use super::square::{self, Square};
use super::{AttackError, AttackLoss, Method, Norm};

/// An evaluation protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// APGD-CE, APGD-T (9 target classes), Square (5,000 queries); one run each.
    Standard,
    /// APGD-CE and APGD-DLR with 5 restarts each, Square, APGD-T.
    Plus,
    /// For randomized models: APGD-CE and APGD-DLR, each gradient averaged over 20 draws
    /// (expectation over transformation).
    Rand,
    /// The attacks `--attacks` names, with the standard parameters.
    Custom,
}

/// An attack a custom evaluation can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Named {
    #[value(name = "apgd-ce")]
    ApgdCe,
    #[value(name = "apgd-dlr")]
    ApgdDlr,
    #[value(name = "apgd-t")]
    ApgdT,
    Square,
}

/// Iterations, queries and the radius of a suite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub norm: Norm,
    /// Radius, input units.
    pub epsilon: f64,
    /// APGD iterations per run (AutoAttack: 100).
    pub steps: usize,
    /// Square queries per run (AutoAttack: 5,000).
    pub queries: usize,
    /// APGD-T target classes (AutoAttack: 9), capped at the model's classes − 1.
    pub targets: usize,
}

impl Budget {
    pub fn new(norm: Norm, epsilon: f64) -> Self {
        Self {
            norm,
            epsilon,
            steps: apgd::DEFAULT_STEPS,
            queries: square::DEFAULT_QUERIES,
            targets: apgd::DEFAULT_TARGETS,
        }
    }

    fn apgd(&self, loss: AttackLoss, restarts: usize, eot: usize) -> Result<Method, AttackError> {
        Ok(Method::Apgd(
            Apgd::new(self.norm, self.epsilon, self.steps)?
                .with_loss(loss)?
                .with_restarts(restarts)?
                .with_eot(eot)?,
        ))
    }

    fn apgd_t(&self) -> Result<Method, AttackError> {
        Ok(Method::Apgd(
            Apgd::new(self.norm, self.epsilon, self.steps)?.targeted(self.targets)?,
        ))
    }

    fn square(&self) -> Result<Method, AttackError> {
        Ok(Method::Square(Square::new(
            self.norm,
            self.epsilon,
            self.queries,
        )?))
    }

    fn named(&self, attack: Named) -> Result<Method, AttackError> {
        match attack {
            Named::ApgdCe => self.apgd(AttackLoss::Ce, 1, 1),
            Named::ApgdDlr => self.apgd(AttackLoss::Dlr, 1, 1),
            Named::ApgdT => self.apgd_t(),
            Named::Square => self.square(),
        }
    }
}

/// The attacks of `version` in the order they run, and notes on what differs from the
/// reference (no FAB or FAB-T). `custom` takes `attacks`.
pub fn attacks(
    version: Version,
    custom: &[Named],
    budget: &Budget,
) -> Result<(Vec<Method>, Vec<String>), AttackError> {
    let mut notes = Vec::new();
    let mut plan = match version {
        Version::Standard => {
            notes.push("standard without FAB-T (not implemented)".to_string());
            vec![budget.named(Named::ApgdCe)?, budget.apgd_t()?]
        }
        Version::Plus => {
            notes.push("plus without FAB and FAB-T (not implemented)".to_string());
            vec![
                budget.apgd(AttackLoss::Ce, 5, 1)?,
                budget.apgd(AttackLoss::Dlr, 5, 1)?,
            ]
        }
        Version::Rand => vec![
            budget.apgd(AttackLoss::Ce, 1, 20)?,
            budget.apgd(AttackLoss::Dlr, 1, 20)?,
        ],
        Version::Custom => {
            if custom.is_empty() {
                return Err(AttackError::new(
                    "attacks",
                    "--version custom needs --attacks, e.g. --attacks apgd-ce,square".into(),
                ));
            }
            custom
                .iter()
                .map(|a| budget.named(*a))
                .collect::<Result<_, _>>()?
        }
    };
    if matches!(version, Version::Standard | Version::Plus) {
        // After the two APGD runs in both versions, as AutoAttack orders them.
        plan.insert(2, budget.square()?);
        if version == Version::Plus {
            plan.push(budget.apgd_t()?);
        }
    }
    Ok((plan, notes))
}
