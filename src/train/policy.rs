//! Epoch policies of adversarial training: after each epoch, with the model's robust accuracy
//! measured, a policy lets training continue, switches the attack the next epoch trains
//! against, or rolls the epoch back.
//!
//! - [`Guard`]: the catastrophic-overfitting guard of single-step (FGSM-RS) epochs.
//! - [`AdaptiveChoice`]: the `adaptive` mode's choice of the attack that breaks the model most.

use std::collections::BTreeMap;

use super::config::Mode;
use super::metrics::EpochMetrics;
use crate::attack::pgd::default_alpha;
use crate::attack::{AttackError, Norm, Pgd};

/// The attack that makes an epoch's training examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EpochAttack {
    /// One FGSM step from a uniform random start (Wong, Rice & Kolter 2020).
    FgsmRs,
    /// PGD with the mode's steps (Madry et al. 2018).
    Pgd,
}

impl EpochAttack {
    /// "fgsm-rs", or "pgd" with the mode's step count ("pgd7").
    pub fn name(self, mode: &Mode) -> String {
        match self {
            EpochAttack::FgsmRs => "fgsm-rs".into(),
            EpochAttack::Pgd => format!("pgd{}", mode.pgd_steps().map_or(7, |(s, _)| s)),
        }
    }

    /// The attack a log line names ("fgsm-rs", "pgd7"): only for checkpoints written before
    /// the state recorded the attack itself.
    pub fn parse_logged(name: &str) -> Option<Self> {
        if name == "fgsm-rs" {
            Some(EpochAttack::FgsmRs)
        } else if name.starts_with("pgd") {
            Some(EpochAttack::Pgd)
        } else {
            None
        }
    }

    /// The L∞ attack at radius `epsilon` (a ramp's current radius), random start. FGSM-RS
    /// steps 1.25·epsilon (or fgsm-rs's `alpha`, scaled); PGD takes the mode's steps and step
    /// (2.5·epsilon/steps unless set), scaled with the radius.
    pub fn at(self, mode: &Mode, epsilon: f64) -> Result<Pgd, AttackError> {
        let full = mode.epsilon().unwrap_or(epsilon);
        let scale = epsilon / full;
        match self {
            EpochAttack::FgsmRs => {
                let alpha = match mode {
                    Mode::FgsmRs(m) => m.alpha.map_or(1.25 * epsilon, |a| a * scale),
                    _ => 1.25 * epsilon,
                };
                Pgd::new(Norm::Linf, epsilon, 1)?.with_alpha(alpha)
            }
            EpochAttack::Pgd => {
                let (steps, alpha) = mode.pgd_steps().unwrap_or((7, default_alpha(full, 7)));
                Pgd::new(Norm::Linf, epsilon, steps)?.with_alpha(alpha * scale)
            }
        }
    }
}

/// What a policy decides after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Continue,
    /// Train the next epoch against this attack.
    Switch(EpochAttack),
    /// Discard the epoch, restore the last checkpoint and redo it against this attack.
    RollBack {
        to: EpochAttack,
        note: String,
    },
}

/// What a policy sees after an epoch.
pub struct Review<'a> {
    pub mode: &'a Mode,
    /// 0-based index of the epoch just trained.
    pub epoch: usize,
    /// The attack it trained against.
    pub attack: Option<EpochAttack>,
    pub epsilon: f64,
    pub next_epsilon: f64,
    /// Its PGD-10 robust accuracy at `epsilon`.
    pub robust: f64,
    /// The epochs kept so far.
    pub history: &'a [EpochMetrics],
    /// Robust accuracy on the held-out examples under an attack.
    pub measure: &'a dyn Fn(Pgd) -> f64,
}

/// A policy's verdict, with the measurements it made (logged in `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: Action,
    /// Adaptive: robust accuracy under each candidate at the next epsilon.
    pub candidates: Option<BTreeMap<String, f64>>,
    /// Guard: FGSM-RS robust accuracy at this epoch's epsilon.
    pub fgsm_accuracy: Option<f64>,
}

impl Verdict {
    fn keep() -> Self {
        Self {
            action: Action::Continue,
            candidates: None,
            fgsm_accuracy: None,
        }
    }
}

pub trait EpochPolicy {
    fn review(&self, r: &Review<'_>) -> Verdict;
}

/// The policies of a mode, in the order they are consulted (a roll-back ends the review).
pub fn for_mode(mode: &Mode) -> Vec<Box<dyn EpochPolicy>> {
    match mode {
        Mode::FgsmRs(m) => vec![Box::new(Guard {
            ratio: m.guard_ratio,
        })],
        Mode::Adaptive(m) => vec![
            Box::new(Guard {
                ratio: m.guard_ratio,
            }),
            Box::new(AdaptiveChoice),
        ],
        _ => Vec::new(),
    }
}

/// Catastrophic overfitting (Wong et al. 2020): in a single-step epoch, PGD robust accuracy
/// falls below `ratio` × the best PGD accuracy of earlier epochs at the same epsilon while
/// FGSM accuracy stays 10 points above it. The epoch is rolled back and redone with PGD.
pub struct Guard {
    /// 0 disables the guard.
    pub ratio: f64,
}

impl Guard {
    /// The best PGD-10 accuracy of the kept epochs measured at `epsilon`.
    pub fn best_at(history: &[EpochMetrics], epsilon: f64) -> Option<f64> {
        history
            .iter()
            .filter(|m| {
                m.epsilon
                    .is_some_and(|e| (e - epsilon).abs() <= 1e-12 * epsilon.max(1.0))
            })
            .filter_map(|m| m.robust_accuracy)
            .reduce(f64::max)
    }
}

impl EpochPolicy for Guard {
    /// Measures FGSM-RS accuracy after every single-step epoch (it is logged), and rolls back
    /// when the collapse criterion holds.
    fn review(&self, r: &Review<'_>) -> Verdict {
        if r.attack != Some(EpochAttack::FgsmRs) {
            return Verdict::keep();
        }
        let Ok(fgsm) = EpochAttack::FgsmRs.at(r.mode, r.epsilon) else {
            return Verdict::keep();
        };
        let fgsm_acc = (r.measure)(fgsm);
        let measured = Verdict {
            fgsm_accuracy: Some(fgsm_acc),
            ..Verdict::keep()
        };
        let best = Self::best_at(r.history, r.epsilon).unwrap_or(0.0);
        let collapsed = self.ratio > 0.0
            && best > 0.0
            && r.robust < self.ratio * best
            && fgsm_acc > r.robust + 0.1;
        if !collapsed {
            return measured;
        }
        let to = EpochAttack::Pgd;
        let note = format!(
            "overfitting guard: epoch {} PGD accuracy {:.1}% (best {:.1}% at epsilon {}) with FGSM accuracy {:.1}%; rolled back to epoch {} and continuing with {}",
            r.epoch + 1,
            100.0 * r.robust,
            100.0 * best,
            r.epsilon,
            100.0 * fgsm_acc,
            r.epoch,
            to.name(r.mode)
        );
        Verdict {
            action: Action::RollBack { to, note },
            ..measured
        }
    }
}

/// `adaptive`: FGSM-RS and PGD measured at the next epoch's epsilon; the next epoch trains
/// against the one that leaves the lower robust accuracy (ties to the cheaper FGSM-RS).
pub struct AdaptiveChoice;

impl EpochPolicy for AdaptiveChoice {
    fn review(&self, r: &Review<'_>) -> Verdict {
        let measured: Vec<(EpochAttack, f64)> = [EpochAttack::FgsmRs, EpochAttack::Pgd]
            .into_iter()
            .filter_map(|a| Some((a, (r.measure)(a.at(r.mode, r.next_epsilon).ok()?))))
            .collect();
        // min_by keeps the first of equal minima: ties go to the cheaper FGSM-RS.
        let choice = measured
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(a, _)| *a);
        let candidates = measured
            .iter()
            .map(|(a, acc)| (a.name(r.mode), *acc))
            .collect();
        Verdict {
            action: choice.map_or(Action::Continue, Action::Switch),
            candidates: Some(candidates),
            fgsm_accuracy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::{Adaptive, FgsmRs};

    fn epoch(epsilon: f64, robust: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: 1,
            lr: 1e-3,
            train_loss: 1.0,
            train_accuracy: 0.5,
            eval_accuracy: 0.5,
            eval_examples: 100,
            images_per_sec: 1.0,
            seconds: 1.0,
            epsilon: Some(epsilon),
            attack: Some("fgsm-rs".into()),
            robust_accuracy: Some(robust),
            fgsm_accuracy: None,
            candidates: None,
            next_attack: Some("fgsm-rs".into()),
            event: None,
            privacy: None,
        }
    }

    fn review<'a>(
        mode: &'a Mode,
        history: &'a [EpochMetrics],
        epsilon: f64,
        robust: f64,
        measure: &'a dyn Fn(Pgd) -> f64,
    ) -> Review<'a> {
        Review {
            mode,
            epoch: history.len(),
            attack: Some(EpochAttack::FgsmRs),
            epsilon,
            next_epsilon: epsilon,
            robust,
            history,
            measure,
        }
    }

    /// During the adaptive ramp, robust accuracy at a larger epsilon is naturally lower: the
    /// guard compares only with epochs at the same epsilon.
    #[test]
    fn the_guard_compares_robust_accuracy_at_the_same_epsilon() {
        let mode = Mode::Adaptive(Adaptive::default());
        let guard = Guard { ratio: 0.5 };
        let fgsm_high = |_: Pgd| 0.6;
        let ramp = [epoch(0.05, 0.7)];
        let v = guard.review(&review(&mode, &ramp, 0.1, 0.2, &fgsm_high));
        assert_eq!(
            v.action,
            Action::Continue,
            "tripped on a smaller epsilon's best"
        );
        assert_eq!(v.fgsm_accuracy, Some(0.6));
        let same = [epoch(0.05, 0.7), epoch(0.1, 0.7)];
        let v = guard.review(&review(&mode, &same, 0.1, 0.2, &fgsm_high));
        assert!(matches!(
            v.action,
            Action::RollBack {
                to: EpochAttack::Pgd,
                ..
            }
        ));
        // No collapse when FGSM accuracy falls with PGD's.
        let fgsm_low = |_: Pgd| 0.25;
        let v = guard.review(&review(&mode, &same, 0.1, 0.2, &fgsm_low));
        assert_eq!(v.action, Action::Continue);
        // A disabled guard still measures, but never trips.
        let v = Guard { ratio: 0.0 }.review(&review(&mode, &same, 0.1, 0.2, &fgsm_high));
        assert_eq!((v.action, v.fgsm_accuracy), (Action::Continue, Some(0.6)));
    }

    /// The PGD an fgsm-rs run falls back to steps 2.5·epsilon/steps, not FGSM's 1.25·epsilon.
    #[test]
    fn the_fallback_pgd_of_fgsm_rs_uses_the_pgd_step() {
        let mode = Mode::FgsmRs(FgsmRs {
            epsilon: 0.1,
            steps: 7,
            ..FgsmRs::default()
        });
        let pgd = EpochAttack::Pgd.at(&mode, 0.1).unwrap();
        assert_eq!(pgd.steps(), 7);
        assert!(
            (pgd.alpha() - 2.5 * 0.1 / 7.0).abs() < 1e-12,
            "{}",
            pgd.alpha()
        );
        let fgsm = EpochAttack::FgsmRs.at(&mode, 0.1).unwrap();
        assert_eq!(fgsm.steps(), 1);
        assert!((fgsm.alpha() - 0.125).abs() < 1e-12);
        // An adaptive ramp scales both with epsilon.
        let mode = Mode::Adaptive(Adaptive::default());
        let half = EpochAttack::Pgd.at(&mode, 0.05).unwrap();
        assert!((half.alpha() - 2.5 * 0.05 / 7.0).abs() < 1e-12);
        assert!((EpochAttack::FgsmRs.at(&mode, 0.05).unwrap().alpha() - 0.0625).abs() < 1e-12);
    }

    #[test]
    fn adaptive_choice_takes_the_stronger_attack_and_ties_go_to_fgsm() {
        let mode = Mode::Adaptive(Adaptive::default());
        let history = [];
        let pgd_stronger = |a: Pgd| if a.steps() > 1 { 0.3 } else { 0.5 };
        let v = AdaptiveChoice.review(&review(&mode, &history, 0.1, 0.4, &pgd_stronger));
        assert_eq!(v.action, Action::Switch(EpochAttack::Pgd));
        let tie = |_: Pgd| 0.4;
        let v = AdaptiveChoice.review(&review(&mode, &history, 0.1, 0.4, &tie));
        assert_eq!(v.action, Action::Switch(EpochAttack::FgsmRs));
    }
}
