//! Measuring PRADA: benign clients replaying test images in random order (the false-alarm
//! rate), and a synthetic extraction attacker (the queries until the alarm). The attacker
//! follows Papernot et al.'s Jacobian-based dataset augmentation (AsiaCCS 2017): from a few
//! seed images, each round queries x + λ·sign(∇ₓ z_{F(x)}(x)) for the newest points. A real
//! attacker takes that Jacobian on its substitute model; this one takes it on the target
//! itself, a stand-in that gives the same kind of queries (small signed steps from earlier
//! ones). Training the stolen copy is not part of this measurement.

use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::{Client, Prada};
use crate::artifact::ModelInfo;
use crate::attack::pgd::input_gradient;
use crate::classifier::{Classifier, Input};
use crate::detect::{DetectError, RunError};
use crate::workload::{DataInfo, Examples, Job, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct ExtractionPlan {
    pub prada: Prada,
    /// Benign clients, each replaying `queries` test images in its own random order.
    pub clients: usize,
    pub queries: usize,
    /// The attacker's seed images and step λ (input units).
    pub seeds: usize,
    pub lambda: f64,
    pub batch: usize,
    pub seed: u64,
}

/// One client's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    pub client: String,
    pub queries: usize,
    /// The query at which PRADA raised the alarm, and W then.
    pub alarm_at: Option<usize>,
    pub w_at_alarm: Option<f64>,
    /// The last W computed, and the lowest.
    pub last_w: Option<f64>,
    pub min_w: Option<f64>,
    /// Queries identical to an earlier one at 4 bits per coordinate.
    pub duplicates: usize,
}

/// `rampart detect extraction`'s report.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractionReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    pub prada: Prada,
    pub benign: Vec<ClientRow>,
    /// Benign clients alarmed, of all.
    pub false_alarm_rate: f64,
    pub attacker: ClientRow,
    pub attacker_strategy: String,
}

struct ExtractionJob<'a> {
    plan: &'a ExtractionPlan,
}

/// Feeds a client the queries `x` (its rows, in order), predicting in batches: one read of
/// inputs and decisions per batch.
fn replay<const D: usize, C: Classifier<D>>(
    model: &C,
    client: &mut Client,
    plan: &ExtractionPlan,
    x: &C::Input,
) -> Result<(), DetectError> {
    let box_ = model.domain().bounds.unwrap_or((0.0, 1.0));
    for start in (0..x.len()).step_by(plan.batch) {
        let xs = x.range(start, start + plan.batch);
        let n = xs.len();
        let classes = crate::detect::host_ints(model.decide(xs.clone()), "decisions")?;
        let values = crate::detect::host_floats(xs.x().clone(), "queries")?;
        let width = values.len() / n.max(1);
        for (row, class) in values.chunks_exact(width).zip(classes) {
            client.observe(&plan.prada, row, class.max(0) as usize, box_)?;
        }
    }
    Ok(())
}

fn row(name: String, c: &Client) -> ClientRow {
    ClientRow {
        client: name,
        queries: c.queries,
        alarm_at: c.alarm.map(|a| a.0),
        w_at_alarm: c.alarm.map(|a| a.1),
        last_w: c.last_w,
        min_w: c.min_w,
        duplicates: c.duplicates,
    }
}

impl Job for ExtractionJob<'_> {
    type Output = Result<(Vec<ClientRow>, ClientRow), DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let plan = self.plan;
        let n = ex.inputs.len();
        if plan.queries > n || plan.seeds == 0 || plan.seeds > n {
            return Err(DetectError::Invalid(format!(
                "--queries {} and --seeds {} must be at most the {n} selected images (and seeds at least 1)",
                plan.queries, plan.seeds
            )));
        }
        let device = ex.labels.device();
        device.seed(plan.seed);
        let mut rng = StdRng::seed_from_u64(plan.seed);
        let mut benign = Vec::with_capacity(plan.clients);
        for c in 0..plan.clients {
            let mut order: Vec<i64> = (0..n as i64).collect();
            order.shuffle(&mut rng);
            order.truncate(plan.queries);
            let idx = Tensor::<1, Int>::from_data(TensorData::new(order, [plan.queries]), &device);
            let mut client = Client::default();
            replay(model, &mut client, plan, &ex.inputs.select(idx))?;
            benign.push(row(format!("benign-{c}"), &client));
        }
        // The attacker: seeds, then rounds of Jacobian-sign steps from the newest points
        // (Papernot et al. step from every point, with a substitute retrained each round;
        // with the target's fixed Jacobian that would repeat earlier queries exactly).
        let mut attacker = Client::default();
        let mut newest = ex.inputs.range(0, plan.seeds);
        replay(model, &mut attacker, plan, &newest)?;
        let bounds = model.domain().bounds;
        while attacker.queries < plan.queries {
            let room = plan.queries - attacker.queries;
            let base = newest.range(0, newest.len().min(room));
            let mut steps = Vec::new();
            for start in (0..base.len()).step_by(plan.batch) {
                let xs = base.range(start, start + plan.batch);
                let classes = model.decide(xs.clone());
                let xa = xs.x().clone().autodiff().require_grad();
                let logits = model.logits(xs.with_x(xa.clone()));
                let k = logits.dims()[1];
                let own = (logits * classes.autodiff().one_hot::<2>(k).float()).sum();
                let step = xs.x().clone() + input_gradient(&xa, own).sign() * plan.lambda;
                steps.push(match bounds {
                    Some((lo, hi)) => step.clamp(lo, hi),
                    None => step,
                });
            }
            newest = base.with_x(Tensor::cat(steps, 0));
            replay(model, &mut attacker, plan, &newest)?;
        }
        Ok((benign, row("attacker".into(), &attacker)))
    }
}

/// Runs the benign clients and the attacker against PRADA on the workload's model.
pub fn evaluate(work: &Workload, plan: &ExtractionPlan) -> Result<ExtractionReport, RunError> {
    let (benign, attacker) = work.run(ExtractionJob { plan }, None)??;
    let alarmed = benign.iter().filter(|c| c.alarm_at.is_some()).count();
    Ok(ExtractionReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        prada: plan.prada,
        false_alarm_rate: alarmed as f64 / benign.len().max(1) as f64,
        benign,
        attacker,
        attacker_strategy: format!(
            "Jacobian-based augmentation (target's own Jacobian as the substitute's stand-in), {} seed images, λ {}",
            plan.seeds, plan.lambda
        ),
    })
}

impl std::fmt::Display for ExtractionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "PRADA (δ {}, first test after {} distances, then every {}) on {} · {}",
            self.prada.delta,
            self.prada.min_queries,
            self.prada.every,
            self.model.path.display(),
            self.data.name
        )?;
        let show = |r: &ClientRow| {
            format!(
                "{:<10} {} queries, alarm {}, last W {}, lowest W {}, {} duplicates",
                r.client,
                r.queries,
                r.alarm_at
                    .map_or("none".into(), |q| format!("at query {q}")),
                r.last_w.map_or("-".into(), |w| format!("{w:.4}")),
                r.min_w.map_or("-".into(), |w| format!("{w:.4}")),
                r.duplicates
            )
        };
        for r in &self.benign {
            writeln!(f, "  {}", show(r))?;
        }
        writeln!(f, "  {}", show(&self.attacker))?;
        writeln!(f, "attacker: {}", self.attacker_strategy)?;
        writeln!(
            f,
            "benign clients alarmed: {:.0}%",
            100.0 * self.false_alarm_rate
        )
    }
}
