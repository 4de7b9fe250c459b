//! Checks that a robustness figure is not an artefact of gradient masking (Croce & Hein's
//! `checks.py`, Carlini et al. 2019): each is a figure and, when it looks wrong, a warning
//! with the reason. The first four run on the first batch before the attacks; the last two
//! read the finished rows.

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::{Plan, Row};
use crate::attack::ball::l2_norms;
use crate::attack::loss::{AttackLoss, ascent};
use crate::attack::pgd::input_gradient;
use crate::attack::suite::Version;
use crate::attack::{Method, Pgd, worst_case};
use crate::classifier::{Classifier, Input};

/// Examples of the first batch the checks use.
const CHECK_EXAMPLES: usize = 128;
/// PGD-100 this far (fraction) below PGD-20 means the attack had not converged.
const PGD_GAP: f64 = 0.05;
/// Two forward passes differing by more than this fraction of the largest logit are random.
const RANDOMIZED_TOLERANCE: f64 = 1e-4;
/// Square breaking more than this fraction after the gradient attacks (AutoAttack: 0.2 points).
const SQUARE_GAP: f64 = 0.002;

/// One check: its name, the figure it measured, and a warning when the figure is suspect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    pub value: f64,
    pub warning: Option<String>,
}

impl Check {
    fn new(name: &str, value: f64, warning: Option<String>) -> Self {
        Self {
            name: name.to_string(),
            value,
            warning,
        }
    }
}

/// The checks on (the first examples of) a batch, before the attacks.
pub fn before<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    y: &Tensor<1, Int>,
    plan: &Plan,
) -> Vec<Check> {
    let m = x.len().min(CHECK_EXAMPLES);
    let x = x.range(0, m);
    let y = y.clone().narrow(0, 0, m);
    let logits = model.logits(x.clone());
    let mut checks = vec![
        probabilities(logits.clone()),
        randomized(model, &x, logits, plan.version),
        zero_gradients(model, &x, &y),
    ];
    if let Some(pgd) = pgd_convergence(model, &x, &y, &plan.attacks) {
        checks.push(pgd);
    }
    checks
}

/// Outputs that are already probabilities (rows in [0, 1] summing to 1): a softmax inside the
/// model flattens cross-entropy gradients.
fn probabilities(logits: Tensor<2>) -> Check {
    let inside = logits.clone().min().into_scalar::<f32>() >= 0.0
        && logits.clone().max().into_scalar::<f32>() <= 1.0;
    let sums = logits.sum_dim(1);
    let off = (sums - 1.0).abs().max().into_scalar::<f32>();
    let looks = inside && off < 1e-3;
    Check::new(
        "probability_outputs",
        f64::from(u8::from(looks)),
        looks.then(|| "the model's outputs look like probabilities (each row in [0, 1], summing to 1): give attacks the logits before the softmax, or the cross-entropy gradients vanish".to_string()),
    )
}

/// A forward pass that gives different outputs for the same input.
fn randomized<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    logits: Tensor<2>,
    version: Version,
) -> Check {
    let again = model.logits(x.clone());
    // Relative to the logits' scale, so that large logits' rounding does not count.
    let scale = f64::from(logits.clone().abs().max().into_scalar::<f32>()).max(1.0);
    let diff = f64::from((again - logits).abs().max().into_scalar::<f32>()) / scale;
    let random = diff > RANDOMIZED_TOLERANCE && version != Version::Rand;
    Check::new(
        "randomized_forward",
        diff,
        random.then(|| format!("two forward passes on the same inputs differ by up to {diff:.3e} of the largest logit: the model is randomized; use --version rand (expectation over 20 draws)")),
    )
}

/// The fraction of examples whose cross-entropy input gradient is exactly zero.
fn zero_gradients<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    y: &Tensor<1, Int>,
) -> Check {
    let xa = x.x().clone().autodiff().require_grad();
    let logits = model.logits(x.with_x(xa.clone()));
    let loss = ascent(AttackLoss::Ce, logits, &y.clone().autodiff(), None);
    let grad = input_gradient(&xa, loss);
    let zero = l2_norms(&grad)
        .equal_elem(0.0)
        .float()
        .mean()
        .into_scalar::<f32>();
    let zero = f64::from(zero);
    Check::new(
        "zero_gradients",
        zero,
        (zero > 0.0).then(|| format!("{:.1}% of the examples have an all-zero input gradient: gradient attacks cannot move them, so their robustness may be masking; Square's figure is the one to trust for them", 100.0 * zero)),
    )
}

/// Robust accuracy under PGD-20 and PGD-100 (L∞ or L2 at the plan's radius, 2.5·eps/steps,
/// random start): a large gap means gradient attacks with few steps do not converge here.
fn pgd_convergence<const D: usize, C: Classifier<D>>(
    model: &C,
    x: &C::Input,
    y: &Tensor<1, Int>,
    attacks: &[Method],
) -> Option<Check> {
    let first = attacks.first()?;
    let accuracy = |steps| -> Option<f64> {
        let pgd = Pgd::new(first.norm(), first.epsilon(), steps).ok()?;
        let out = worst_case(model, x, y, &[Method::Pgd(pgd)], 1, None);
        Some(f64::from(out.robust.float().mean().into_scalar::<f32>()))
    };
    let (a20, a100) = (accuracy(20)?, accuracy(100)?);
    let gap = a20 - a100;
    Some(Check::new(
        "pgd100_below_pgd20",
        gap,
        (gap > PGD_GAP).then(|| format!("PGD-100 robust accuracy ({:.1}%) is {:.1} points below PGD-20 ({:.1}%) on the first examples: short gradient attacks do not converge on this model, so report the strongest attack only", 100.0 * a100, 100.0 * gap, 100.0 * a20)),
    ))
}

/// Checks on the finished rows: Square breaking points the gradient attacks left, and NaNs.
pub fn after(attacks: &[Method], rows: &[Row]) -> Vec<Check> {
    let n = rows.len().max(1) as f64;
    let mut checks = Vec::new();
    let square = attacks.iter().position(|a| matches!(a, Method::Square(_)));
    let gradient_before =
        square.is_some_and(|s| attacks[..s].iter().any(|a| !matches!(a, Method::Square(_))));
    if let (Some(s), true) = (square, gradient_before) {
        let by_square = rows.iter().filter(|r| r.broken_by == Some(s)).count() as f64 / n;
        checks.push(Check::new(
            "square_beats_white_box",
            by_square,
            (by_square > SQUARE_GAP).then(|| format!("Square, which uses no gradients, fooled {:.2}% of the examples the gradient attacks before it could not (more than {:.1} points): the gradients are likely masked, so trust the final figure, not the gradient attacks' alone", 100.0 * by_square, 100.0 * SQUARE_GAP)),
        ));
    }
    let nans = rows.iter().filter(|r| r.nan).count();
    checks.push(Check::new(
        "nan_examples",
        nans as f64,
        (nans > 0).then(|| format!("{nans} adversarial examples contain NaN: the model's gradients or outputs overflow; their figures are not meaningful")),
    ));
    checks
}
