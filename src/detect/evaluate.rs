//! Measuring a fitted detector on held-out data: the false-positive rate it reaches on clean
//! examples (against the rate it was calibrated to, with a Clopper-Pearson interval), and
//! against each attack the detection rate among the adversarial examples that fool the model
//! and the ROC area; then, for every detector with a gradient (its own, BPDA or EOT: see
//! [`super::adaptive`]), the adaptive attack that tries to fool the model without raising
//! that detector's alarm, and (with Bonferroni fusion) one aimed at all of them at the fused
//! thresholds.

use std::time::Instant;

use burn::tensor::Int;
use serde::Serialize;
use statrs::distribution::{Beta, ContinuousCDF};

use super::adaptive::Adaptive;
use super::adversarial::Detector;
use super::roc::{self, Panel};
use super::score::{self, BatchScores, score_batch};
use super::store::Fitted;
use super::{DetectError, RunError};
use crate::artifact::ModelInfo;
use crate::attack::{Attack, Method as AttackMethod};
use crate::classifier::{Classifier, Input};
use crate::workload::{DataInfo, Examples, Job, Workload};

/// What to measure.
#[derive(Debug, Clone)]
pub struct EvalPlan {
    /// The attacks, each with the name its row carries.
    pub attacks: Vec<(String, AttackMethod)>,
    /// The adaptive attack's budget; `None` skips it.
    pub adaptive: Option<Adaptive>,
    pub batch: usize,
    pub seed: u64,
}

/// A rate with its 95% Clopper-Pearson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    pub rate: f64,
    pub count: usize,
    pub of: usize,
    pub low: f64,
    pub high: f64,
}

impl Rate {
    pub fn new(count: usize, of: usize) -> Self {
        let (low, high) = clopper_pearson(count, of, 0.05);
        Self {
            rate: if of == 0 {
                0.0
            } else {
                count as f64 / of as f64
            },
            count,
            of,
            low,
            high,
        }
    }
}

/// The two-sided (1 − alpha) Clopper-Pearson interval of `k` successes in `n` trials
/// (`statrs` Beta quantiles); [0, 1] when n = 0.
pub fn clopper_pearson(k: usize, n: usize, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let low = if k == 0.0 {
        0.0
    } else {
        Beta::new(k, n - k + 1.0)
            .expect("valid beta parameters")
            .inverse_cdf(alpha / 2.0)
    };
    let high = if k == n {
        1.0
    } else {
        Beta::new(k + 1.0, n - k)
            .expect("valid beta parameters")
            .inverse_cdf(1.0 - alpha / 2.0)
    };
    (low, high)
}

/// One detector (or the fusion) against one set of inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    pub detector: String,
    /// Alarms among the adversarial examples that fool the model.
    pub detection: Rate,
    /// ROC area of its score, clean examples against those adversarial examples.
    pub auc: Option<f64>,
}

/// An attack's row.
#[derive(Debug, Clone, Serialize)]
pub struct AttackRow {
    pub attack: String,
    /// Clean-correct examples the attack fools.
    pub success: Rate,
    pub detectors: Vec<Detection>,
}

/// The adaptive attack on one detector.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptiveRow {
    pub detector: String,
    /// Where its gradient comes from: the score's own, BPDA or EOT.
    pub gradient: String,
    /// Clean-correct examples it fools.
    pub fooled: Rate,
    /// Clean-correct examples it fools without raising the attacked detector's alarm.
    pub evaded: Rate,
    /// Alarms of each detector (and the fusion) among the examples it fools.
    pub detectors: Vec<Detection>,
}

/// `rampart detect evaluate`'s report.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    pub detectors: Vec<String>,
    pub fusion: String,
    /// The false-positive rate the alarms were calibrated to.
    pub target_fpr: f64,
    pub calibration_examples: usize,
    pub clean_accuracy: f64,
    /// Alarms on the clean examples, per detector and fused ("fused" last).
    pub false_positives: Vec<(String, Rate)>,
    pub attacks: Vec<AttackRow>,
    pub adaptive: Vec<AdaptiveRow>,
    pub adaptive_budget: Option<String>,
    pub roc_png: Option<std::path::PathBuf>,
    pub seconds: f64,
}

/// The scores of one set of inputs, gathered over batches.
#[derive(Default)]
struct Gathered {
    scores: Vec<Vec<f32>>,
    fused: Vec<f32>,
    /// The model was fooled (adversarial sets) or right (the clean set).
    counted: Vec<bool>,
}

impl Gathered {
    fn push(&mut self, b: &BatchScores, labels: &[i64], clean: bool) {
        if self.scores.is_empty() {
            self.scores = vec![Vec::new(); b.scores.len()];
        }
        for (all, s) in self.scores.iter_mut().zip(&b.scores) {
            all.extend_from_slice(s);
        }
        self.fused.extend_from_slice(&b.fused);
        self.counted.extend(
            b.decision
                .iter()
                .zip(labels)
                .map(|(d, y)| (d == y) == clean),
        );
    }

    /// Detector `d`'s scores where `keep` holds (the fusion: 1 − p, `d` = number of detectors).
    fn column(&self, d: usize, keep: &[bool]) -> Vec<f32> {
        let values: Vec<f32> = if d < self.scores.len() {
            self.scores[d].clone()
        } else {
            self.fused.iter().map(|p| 1.0 - p).collect()
        };
        values
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(v, _)| v)
            .collect()
    }

    fn alarms(&self, d: usize, thresholds: &[f32], fpr: f64) -> Vec<bool> {
        if d < self.scores.len() {
            self.scores[d]
                .iter()
                .map(|s| score::alarm(*s, thresholds[d]))
                .collect()
        } else {
            self.fused.iter().map(|p| score::p_alarm(*p, fpr)).collect()
        }
    }
}

struct Found {
    clean: Gathered,
    attacked: Vec<Gathered>,
    adaptive: Vec<(usize, Gathered)>,
}

struct EvalJob<'a> {
    fitted: &'a Fitted,
    plan: &'a EvalPlan,
    thresholds: &'a [f32],
}

impl Job for EvalJob<'_> {
    type Output = Result<(Found, Vec<i64>), DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let (fitted, plan) = (self.fitted, self.plan);
        let domain = model.domain();
        for (name, attack) in &plan.attacks {
            attack
                .check_domain(&domain)
                .map_err(|e| DetectError::Invalid(format!("{name}: {}", e.message)))?;
        }
        score::check_model(fitted, model, &ex.inputs)?;
        let device = ex.labels.device();
        device.seed(plan.seed);
        let labels = super::host_ints(ex.labels.clone(), "labels")?;
        let spreads: Vec<f64> = fitted
            .calibrations
            .iter()
            .map(|c| {
                let q = |f: f64| f64::from(c.scores[((c.len() - 1) as f64 * f) as usize]);
                // The interquartile range; where most clean scores tie (the vote is mostly
                // unanimous), the standard deviation.
                let iqr = q(0.75) - q(0.25);
                let n = c.len() as f64;
                let mean = c.scores.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
                let sd = (c
                    .scores
                    .iter()
                    .map(|v| (f64::from(*v) - mean).powi(2))
                    .sum::<f64>()
                    / n)
                    .sqrt();
                if iqr > 0.0 { iqr } else { sd.max(1e-6) }
            })
            .collect();
        let k = fitted.methods.len();
        let attackable: Vec<usize> = (0..k)
            .filter(|d| fitted.methods[*d].gradient().is_some())
            .collect();
        // The Bonferroni fusion alarms when some detector's p-value is at most fpr / k: its
        // attackable part is attacked at those thresholds (index k in the rows).
        let fused: Option<Vec<f64>> =
            (fitted.header.fusion == super::calibrate::Fusion::Bonferroni && attackable.len() >= 2)
                .then(|| {
                    attackable
                        .iter()
                        .map(|d| {
                            fitted.calibrations[*d]
                                .threshold(fitted.header.fpr / k as f64)
                                .map(f64::from)
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .ok()
                })
                .flatten();
        let mut targets: Vec<usize> = match plan.adaptive {
            Some(_) => attackable.clone(),
            None => Vec::new(),
        };
        if plan.adaptive.is_some() && fused.is_some() {
            targets.push(k);
        }
        let mut found = Found {
            clean: Gathered::default(),
            attacked: (0..plan.attacks.len())
                .map(|_| Gathered::default())
                .collect(),
            adaptive: targets.iter().map(|d| (*d, Gathered::default())).collect(),
        };
        let n = ex.inputs.len();
        for start in (0..n).step_by(plan.batch) {
            let x = ex.inputs.range(start, start + plan.batch);
            let y: burn::tensor::Tensor<1, Int> = ex.labels.clone().narrow(0, start, x.len());
            let ys = &labels[start..start + x.len()];
            found.clean.push(&score_batch(fitted, model, &x)?, ys, true);
            for ((_, attack), g) in plan.attacks.iter().zip(&mut found.attacked) {
                let adv = attack.perturb(model, &x, &y, None);
                g.push(&score_batch(fitted, model, &x.with_x(adv))?, ys, false);
            }
            if let Some(adaptive) = plan.adaptive {
                for (d, g) in found.adaptive.iter_mut() {
                    let aims: Vec<_> = if *d == k {
                        attackable
                            .iter()
                            .zip(fused.iter().flatten())
                            .map(|(e, t)| (&fitted.methods[*e], *t, spreads[*e]))
                            .collect()
                    } else {
                        vec![(
                            &fitted.methods[*d],
                            f64::from(self.thresholds[*d]),
                            spreads[*d],
                        )]
                    };
                    let adv = adaptive.perturb(model, &aims, &x, &y);
                    g.push(&score_batch(fitted, model, &x.with_x(adv))?, ys, false);
                }
            }
        }
        Ok((found, labels))
    }
}

/// Runs the evaluation; writes the ROC figure to `roc_png` when given.
pub fn evaluate(
    work: &Workload,
    fitted: &Fitted,
    plan: &EvalPlan,
    roc_png: Option<&std::path::Path>,
) -> Result<DetectionReport, RunError> {
    let started = Instant::now();
    let header = &fitted.header;
    if work.data_info().name == header.calibration_data {
        let calibrated: std::collections::HashSet<usize> =
            header.calibration_ids.iter().copied().collect();
        if let Some(id) = work.ids.iter().find(|i| calibrated.contains(i)) {
            return Err(DetectError::Invalid(format!(
                "example {id} was one of the {} the detector was calibrated on; evaluate on other examples (--offset {} skips them)",
                header.calibration_ids.len(),
                header.calibration_ids.iter().max().map_or(0, |m| m.saturating_add(1))
            ))
            .into());
        }
    }
    let thresholds = score::thresholds(fitted)?;
    let (found, _) = work.run(
        EvalJob {
            fitted,
            plan,
            thresholds: &thresholds,
        },
        None,
    )??;
    let k = fitted.methods.len();
    let mut names: Vec<String> = header
        .detectors
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    names.push(format!("fused ({})", fusion_name(header.fusion)));
    let clean = &found.clean;
    let everyone = vec![true; clean.fused.len()];
    let correct = &clean.counted;
    let false_positives = (0..=k)
        .map(|d| {
            let alarms = clean.alarms(d, &thresholds, header.fpr);
            (
                names[d].clone(),
                Rate::new(alarms.iter().filter(|a| **a).count(), alarms.len()),
            )
        })
        .collect();
    // Detection among the adversarial examples that fool the model on clean-correct inputs.
    let detections = |g: &Gathered| -> (Rate, Vec<Detection>) {
        let success: Vec<bool> = g
            .counted
            .iter()
            .zip(correct)
            .map(|(f, c)| *f && *c)
            .collect();
        let rate = Rate::new(
            success.iter().filter(|s| **s).count(),
            correct.iter().filter(|c| **c).count(),
        );
        let rows = (0..=k)
            .map(|d| {
                let alarms = g.alarms(d, &thresholds, header.fpr);
                let caught = alarms
                    .iter()
                    .zip(&success)
                    .filter(|(a, s)| **a && **s)
                    .count();
                Detection {
                    detector: names[d].clone(),
                    detection: Rate::new(caught, rate.count),
                    auc: roc::auc(&clean.column(d, &everyone), &g.column(d, &success)),
                }
            })
            .collect();
        (rate, rows)
    };
    let mut panels = Vec::new();
    let attacks = plan
        .attacks
        .iter()
        .zip(&found.attacked)
        .map(|((name, _), g)| {
            let (success, detectors) = detections(g);
            let hit: Vec<bool> = g
                .counted
                .iter()
                .zip(correct)
                .map(|(f, c)| *f && *c)
                .collect();
            panels.push(Panel {
                title: name.clone(),
                curves: (0..=k)
                    .map(|d| {
                        (
                            names[d].clone(),
                            roc::curve(&clean.column(d, &everyone), &g.column(d, &hit)),
                        )
                    })
                    .collect(),
            });
            AttackRow {
                attack: name.clone(),
                success,
                detectors,
            }
        })
        .collect();
    let adaptive = found
        .adaptive
        .iter()
        .map(|(d, g)| {
            let (fooled, detectors) = detections(g);
            let alarms = g.alarms(*d, &thresholds, header.fpr);
            let evaded = g
                .counted
                .iter()
                .zip(correct)
                .zip(&alarms)
                .filter(|((f, c), a)| **f && **c && !**a)
                .count();
            AdaptiveRow {
                detector: names[*d].clone(),
                gradient: if *d == k {
                    "each detector's".into()
                } else {
                    fitted.methods[*d].gradient().unwrap_or("none").into()
                },
                evaded: Rate::new(evaded, fooled.of),
                fooled,
                detectors,
            }
        })
        .collect();
    let roc_written = match roc_png {
        Some(path) if !panels.is_empty() => {
            roc::png(&panels, path).map_err(DetectError::Invalid)?;
            Some(path.to_path_buf())
        }
        _ => None,
    };
    Ok(DetectionReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        detectors: names[..k].to_vec(),
        fusion: fusion_name(header.fusion).into(),
        target_fpr: header.fpr,
        calibration_examples: header.calibration_ids.len(),
        clean_accuracy: correct.iter().filter(|c| **c).count() as f64 / correct.len().max(1) as f64,
        false_positives,
        attacks,
        adaptive,
        adaptive_budget: plan.adaptive.map(|a| {
            format!(
                "{:?} eps {} · {} steps, from a random start",
                a.norm, a.epsilon, a.steps
            )
        }),
        roc_png: roc_written,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn fusion_name(f: super::calibrate::Fusion) -> &'static str {
    match f {
        super::calibrate::Fusion::Bonferroni => "bonferroni",
        super::calibrate::Fusion::Cauchy => "cauchy",
    }
}

impl std::fmt::Display for DetectionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |r: &Rate| {
            format!(
                "{:5.1}% [{:.1}, {:.1}]",
                100.0 * r.rate,
                100.0 * r.low,
                100.0 * r.high
            )
        };
        writeln!(
            f,
            "model {} · {} · {} examples · device {}",
            self.model.path.display(),
            self.data.name,
            self.data.examples,
            self.device
        )?;
        writeln!(
            f,
            "clean accuracy {:.2}%; alarms calibrated to a false-positive rate of {} on {} clean examples",
            100.0 * self.clean_accuracy,
            self.target_fpr,
            self.calibration_examples
        )?;
        writeln!(f, "\nfalse positives on clean examples (95% interval):")?;
        for (name, rate) in &self.false_positives {
            writeln!(f, "  {name:<20} {}", pct(rate))?;
        }
        for a in &self.attacks {
            writeln!(
                f,
                "\n{}: fools {} of the clean-correct examples; detection among those (ROC area):",
                a.attack,
                pct(&a.success)
            )?;
            for d in &a.detectors {
                let auc = d.auc.map_or("-".into(), |v| format!("{v:.3}"));
                writeln!(f, "  {:<20} {} ({auc})", d.detector, pct(&d.detection))?;
            }
        }
        if let Some(budget) = &self.adaptive_budget {
            writeln!(
                f,
                "\nadaptive attack ({budget}), one per detector with a gradient and one on the fusion of those:"
            )?;
            for a in &self.adaptive {
                writeln!(
                    f,
                    "  against {:<12} ({}) fools {}; fools without its alarm {}",
                    a.detector,
                    a.gradient,
                    pct(&a.fooled),
                    pct(&a.evaded)
                )?;
            }
        }
        if let Some(p) = &self.roc_png {
            writeln!(f, "\nROC curves: {}", p.display())?;
        }
        writeln!(f, "{:.1} s", self.seconds)
    }
}
