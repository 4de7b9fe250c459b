//! Measuring the ledger: benign clients replaying test images in random order (the
//! false-alarm rates), and an extraction attacker (the queries until each check catches it,
//! and how good its stolen copy is by then). Arrival times are SIMULATED: each client sends a
//! Poisson number of queries per interval, benign ones at the CUSUM's in-control rate, the
//! attacker at its own.
//!
//! The attacker is Papernot et al.'s Jacobian-based dataset augmentation (AsiaCCS 2017):
//! from a few seed images, each round trains a substitute network on every query so far,
//! labelled by the target, and queries x + λ·sign(∇ₓ z_{F(x)}(x)) on the substitute for every
//! point so far (the set doubles each round). The substitute is an image network, so this
//! runs on 1×28×28 image models; on other inputs the target's own Jacobian stands in for the
//! substitute's, stepping from the newest points, and no copy is trained.

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Poisson};
use serde::Serialize;

use super::cusum::RateCusum;
use super::substitute::Substitute;
use super::{Client, Prada};
use crate::artifact::ModelInfo;
use crate::attack::pgd::input_gradient;
use crate::classifier::{Classifier, Input};
use crate::detect::{DetectError, RunError, host_ints};
use crate::model::image::IMAGE_SHAPE;
use crate::model::{ImageNet, ImageSpec};
use crate::workload::{DataInfo, Examples, Job, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct ExtractionPlan {
    pub prada: Prada,
    /// The query-rate CUSUM; benign clients send at its in-control rate.
    pub cusum: RateCusum,
    /// The attacker's rate, queries per interval.
    pub attacker_rate: f64,
    /// Most queries per client before the volume alarm (none: no cap).
    pub max_queries: Option<usize>,
    /// Benign clients, each replaying `queries` test images in its own random order.
    pub clients: usize,
    pub queries: usize,
    /// The attacker's seed images and step λ (input units).
    pub seeds: usize,
    pub lambda: f64,
    pub substitute: Substitute,
    pub batch: usize,
    pub seed: u64,
}

/// One client's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    pub client: String,
    pub queries: usize,
    /// Intervals its queries spanned.
    pub intervals: u64,
    /// The query at which PRADA raised the alarm, and W then.
    pub alarm_at: Option<usize>,
    pub w_at_alarm: Option<f64>,
    /// The last W computed, and the lowest.
    pub last_w: Option<f64>,
    pub min_w: Option<f64>,
    /// The interval whose count raised the rate alarm, and the query that did.
    pub rate_alarm_interval: Option<u64>,
    pub rate_alarm_at: Option<usize>,
    /// The query that went over the volume cap.
    pub volume_alarm_at: Option<usize>,
    /// The first alarm of any check: the query, and the check.
    pub caught_at: Option<usize>,
    pub caught_by: Option<String>,
    /// Queries identical to an earlier one at 4 bits per coordinate.
    pub duplicates: usize,
}

/// The attacker's stolen copy, and the target, on the selected images after the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct StolenCopy {
    pub substitute: Substitute,
    pub rounds: usize,
    pub evaluated_on: usize,
    pub target_accuracy: f64,
    /// Trained on the queries up to the first alarm, when there was one.
    pub accuracy_when_caught: Option<f64>,
    /// Trained on every query: accuracy, and agreement with the target's labels.
    pub accuracy_final: f64,
    pub agreement_final: f64,
    /// The copy trained on every query (inference mode), to save.
    #[serde(skip)]
    pub network: Option<(ImageNet, ImageSpec)>,
}

/// `rampart detect extraction`'s report.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractionReport {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub device: String,
    pub prada: Prada,
    pub cusum: RateCusum,
    pub attacker_rate: f64,
    pub max_queries: Option<usize>,
    pub arrivals: &'static str,
    pub benign: Vec<ClientRow>,
    /// Benign clients alarmed by PRADA, by the rate CUSUM, by any check; of all.
    pub false_alarm_rate: f64,
    pub rate_false_alarm_rate: f64,
    pub any_false_alarm_rate: f64,
    pub attacker: ClientRow,
    pub attacker_strategy: String,
    /// None where the inputs are not 1×28×28 images.
    pub stolen: Option<StolenCopy>,
}

struct ExtractionJob<'a> {
    plan: &'a ExtractionPlan,
}

/// The interval of each of `n` queries sent at a Poisson `rate` per interval.
fn arrivals(rng: &mut StdRng, rate: f64, n: usize) -> Result<Vec<u64>, DetectError> {
    let poisson = Poisson::new(rate)
        .map_err(|e| DetectError::Invalid(format!("arrival rate {rate}: {e}")))?;
    let mut out = Vec::with_capacity(n);
    let mut interval = 0u64;
    while out.len() < n {
        let count = poisson.sample(rng) as usize;
        out.extend(std::iter::repeat_n(interval, count.min(n - out.len())));
        interval += 1;
    }
    Ok(out)
}

/// Feeds a client the queries `x` (its rows, in order), predicting in batches: one read of
/// inputs and decisions per batch. With `rate`, the CUSUM and the interval of each query
/// (indexed by the client's query count). Returns the decisions.
pub fn replay<const D: usize, C: Classifier<D>>(
    model: &C,
    client: &mut Client,
    prada: &Prada,
    rate: Option<(&RateCusum, &[u64])>,
    x: &C::Input,
    batch: usize,
) -> Result<Tensor<1, Int>, DetectError> {
    let box_ = model.domain().bounds.unwrap_or((0.0, 1.0));
    let mut decided = Vec::new();
    for start in (0..x.len()).step_by(batch) {
        let xs = x.range(start, start + batch);
        let n = xs.len();
        let decisions = model.decide(xs.clone());
        let classes = host_ints(decisions.clone(), "decisions")?;
        decided.push(decisions);
        let values = crate::detect::host_floats(xs.x().clone(), "queries")?;
        let width = values.len() / n.max(1);
        for (row, class) in values.chunks_exact(width).zip(classes) {
            if let Some((cusum, when)) = rate {
                client.rate.observe(cusum, when[client.queries])?;
            }
            client.observe(prada, row, class.max(0) as usize, box_)?;
        }
    }
    Ok(Tensor::cat(decided, 0))
}

/// The row of a client whose queries arrived at `when`, after closing its last interval.
fn row(name: String, c: &mut Client, plan: &ExtractionPlan, when: &[u64]) -> ClientRow {
    let last = when.last().map_or(0, |w| w + 1);
    c.rate.close_until(&plan.cusum, last);
    let rate_at = c.rate.alarm_query.map(|q| q as usize);
    let volume_at = plan
        .max_queries
        .filter(|cap| c.queries > *cap)
        .map(|cap| cap + 1);
    let caught = [
        (c.alarm.map(|a| a.0), "prada"),
        (rate_at, "rate"),
        (volume_at, "volume"),
    ]
    .into_iter()
    .filter_map(|(at, by)| at.map(|q| (q, by)))
    .min_by_key(|(q, _)| *q);
    ClientRow {
        client: name,
        queries: c.queries,
        intervals: last,
        alarm_at: c.alarm.map(|a| a.0),
        w_at_alarm: c.alarm.map(|a| a.1),
        last_w: c.last_w,
        min_w: c.min_w,
        rate_alarm_interval: c.rate.alarm,
        rate_alarm_at: rate_at,
        volume_alarm_at: volume_at,
        caught_at: caught.map(|c| c.0),
        caught_by: caught.map(|c| c.1.to_string()),
        duplicates: c.duplicates,
    }
}

/// `x` `[N, ...]` as images `[N, 1, 28, 28]`.
fn images<const D: usize>(x: Tensor<D>) -> Tensor<4> {
    let n = x.dims()[0];
    x.reshape([n, IMAGE_SHAPE[0], IMAGE_SHAPE[1], IMAGE_SHAPE[2]])
}

/// The attacker's queries and the target's answers, in order.
struct Taken<const D: usize> {
    x: Tensor<D>,
    y: Tensor<1, Int>,
    rounds: usize,
}

impl ExtractionJob<'_> {
    /// Runs the attacker; with `substitute` set, Papernot et al.'s loop on images.
    fn attack<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        seeds: &C::Input,
        client: &mut Client,
        when: &[u64],
        substitute: bool,
    ) -> Result<Taken<D>, DetectError> {
        let plan = self.plan;
        let bounds = model.domain().bounds.unwrap_or((0.0, 1.0));
        let classes = model.decisions();
        let mut xs = vec![seeds.x().clone()];
        let mut ys = vec![replay(
            model,
            client,
            &plan.prada,
            Some((&plan.cusum, when)),
            seeds,
            plan.batch,
        )?];
        let mut newest = seeds.clone();
        let mut rounds = 0;
        while client.queries < plan.queries {
            let room = plan.queries - client.queries;
            let next = if substitute {
                let all_x = Tensor::cat(xs.clone(), 0);
                let all_y = Tensor::cat(ys.clone(), 0);
                let copy = plan.substitute.train(
                    classes,
                    &images(all_x.clone()),
                    &all_y,
                    plan.seed + rounds as u64,
                );
                let take = all_x.dims()[0].min(room);
                let base = seeds.with_x(all_x.narrow(0, 0, take));
                let labels = all_y.narrow(0, 0, take);
                let steps: Vec<Tensor<D>> = (0..take)
                    .step_by(plan.batch)
                    .map(|start| {
                        let end = (start + plan.batch).min(take);
                        let part = base.x().clone().narrow(0, start, end - start);
                        let dims = part.dims();
                        Substitute::augment(
                            &copy,
                            &images(part),
                            &labels.clone().narrow(0, start, end - start),
                            plan.lambda,
                            bounds,
                        )
                        .reshape(dims)
                    })
                    .collect();
                base.with_x(Tensor::cat(steps, 0))
            } else {
                self.target_steps(model, &newest.range(0, newest.len().min(room)))
            };
            ys.push(replay(
                model,
                client,
                &plan.prada,
                Some((&plan.cusum, when)),
                &next,
                plan.batch,
            )?);
            xs.push(next.x().clone());
            newest = next;
            rounds += 1;
        }
        Ok(Taken {
            x: Tensor::cat(xs, 0),
            y: Tensor::cat(ys, 0),
            rounds,
        })
    }

    /// The stand-in for a substitute: steps on the target's own Jacobian from `base`.
    fn target_steps<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        base: &C::Input,
    ) -> C::Input {
        let bounds = model.domain().bounds;
        let mut steps = Vec::new();
        for start in (0..base.len()).step_by(self.plan.batch) {
            let xs = base.range(start, start + self.plan.batch);
            let classes = model.decide(xs.clone());
            let xa = xs.x().clone().autodiff().require_grad();
            let logits = model.logits(xs.with_x(xa.clone()));
            let k = logits.dims()[1];
            let own = (logits * classes.autodiff().one_hot::<2>(k).float()).sum();
            let step = xs.x().clone() + input_gradient(&xa, own).sign() * self.plan.lambda;
            steps.push(match bounds {
                Some((lo, hi)) => step.clamp(lo, hi),
                None => step,
            });
        }
        base.with_x(Tensor::cat(steps, 0))
    }

    /// The copy trained on the first queries (to the first alarm) and on all, judged on the
    /// selected images after the seeds.
    fn stolen<const D: usize, C: Classifier<D>>(
        &self,
        model: &C,
        ex: &Examples<C::Input>,
        taken: &Taken<D>,
        caught_at: Option<usize>,
    ) -> Option<StolenCopy> {
        let plan = self.plan;
        let n = ex.inputs.len();
        let held = ex.inputs.range(plan.seeds, n);
        if held.is_empty() {
            return None;
        }
        let x = images(held.x().clone());
        let y = ex.labels.clone().narrow(0, plan.seeds, held.len());
        let target = Tensor::cat(
            (0..held.len())
                .step_by(plan.batch)
                .map(|s| model.decide(held.range(s, s + plan.batch)))
                .collect(),
            0,
        );
        let classes = model.decisions();
        let train = |queries: usize| {
            plan.substitute.train(
                classes,
                &images(taken.x.clone().narrow(0, 0, queries)),
                &taken.y.clone().narrow(0, 0, queries),
                plan.seed.wrapping_add(1 << 32),
            )
        };
        let last = train(taken.y.dims()[0]);
        let target_hits = target
            .clone()
            .equal(y.clone())
            .int()
            .sum()
            .into_scalar::<i64>();
        Some(StolenCopy {
            substitute: plan.substitute,
            rounds: taken.rounds,
            evaluated_on: held.len(),
            target_accuracy: target_hits as f64 / held.len() as f64,
            accuracy_when_caught: caught_at
                .map(|q| Substitute::accuracy(&train(q), &x, &y, plan.batch)),
            accuracy_final: Substitute::accuracy(&last, &x, &y, plan.batch),
            agreement_final: Substitute::accuracy(&last, &x, &target, plan.batch),
            network: Some((last.valid(), plan.substitute.spec(classes))),
        })
    }
}

impl Job for ExtractionJob<'_> {
    type Output = Result<(Vec<ClientRow>, ClientRow, Option<StolenCopy>), DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let plan = self.plan;
        let n = ex.inputs.len();
        if plan.queries > n || plan.seeds == 0 || plan.seeds > plan.queries {
            return Err(DetectError::Invalid(format!(
                "--queries {} must be at most the {n} selected images, and --seeds {} between 1 and --queries",
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
            let when = arrivals(&mut rng, plan.cusum.rate, plan.queries)?;
            let mut client = Client::default();
            replay(
                model,
                &mut client,
                &plan.prada,
                Some((&plan.cusum, &when)),
                &ex.inputs.select(idx),
                plan.batch,
            )?;
            benign.push(row(format!("benign-{c}"), &mut client, plan, &when));
        }
        let domain = model.domain();
        let substitute = domain.shape == IMAGE_SHAPE && domain.bounds.is_some();
        let when = arrivals(&mut rng, plan.attacker_rate, plan.queries)?;
        let mut client = Client::default();
        let taken = self.attack(
            model,
            &ex.inputs.range(0, plan.seeds),
            &mut client,
            &when,
            substitute,
        )?;
        let attacker = row("attacker".into(), &mut client, plan, &when);
        let stolen = if substitute {
            self.stolen(model, &ex, &taken, attacker.caught_at)
        } else {
            None
        };
        Ok((benign, attacker, stolen))
    }
}

/// Runs the benign clients and the attacker against the ledger's checks on the workload's
/// model.
pub fn evaluate(work: &Workload, plan: &ExtractionPlan) -> Result<ExtractionReport, RunError> {
    let (benign, attacker, stolen) = work.run(ExtractionJob { plan }, None)??;
    let share = |hit: fn(&ClientRow) -> bool| {
        benign.iter().filter(|c| hit(c)).count() as f64 / benign.len().max(1) as f64
    };
    let strategy = match &stolen {
        Some(s) => format!(
            "Jacobian-based augmentation with a {} substitute retrained ({} epochs) each round, {} rounds",
            s.substitute.arch, s.substitute.epochs, s.rounds
        ),
        None => "Jacobian-based augmentation with the target's own Jacobian standing in for a substitute (inputs are not 1×28×28 images), no copy trained".into(),
    };
    Ok(ExtractionReport {
        model: work.model_info(),
        data: work.data_info(),
        device: work.device.description.clone(),
        prada: plan.prada,
        cusum: plan.cusum,
        attacker_rate: plan.attacker_rate,
        max_queries: plan.max_queries,
        arrivals: "SIMULATED: Poisson counts per interval",
        false_alarm_rate: share(|c| c.alarm_at.is_some()),
        rate_false_alarm_rate: share(|c| c.rate_alarm_at.is_some()),
        any_false_alarm_rate: share(|c| c.caught_at.is_some()),
        benign,
        attacker,
        attacker_strategy: format!("{strategy}; {} seed images, λ {}", plan.seeds, plan.lambda),
        stolen,
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
        let c = &self.cusum;
        writeln!(
            f,
            "rate CUSUM: in control {} queries per interval, alert at {}: k {}, h {}, ARL {:.0} intervals in control, {:.1} at the alert rate; attacker sends {} per interval ({})",
            c.rate, c.alert_rate, c.k, c.h, c.arl0, c.arl1, self.attacker_rate, self.arrivals
        )?;
        let opt = |v: Option<usize>| v.map_or("-".to_string(), |q| q.to_string());
        let show = |r: &ClientRow| {
            format!(
                "{:<10} {} queries over {} intervals; PRADA at {} (last W {}, lowest {}); rate at {}; volume at {}; {} duplicates",
                r.client,
                r.queries,
                r.intervals,
                opt(r.alarm_at),
                r.last_w.map_or("-".into(), |w| format!("{w:.4}")),
                r.min_w.map_or("-".into(), |w| format!("{w:.4}")),
                opt(r.rate_alarm_at),
                opt(r.volume_alarm_at),
                r.duplicates
            )
        };
        for r in &self.benign {
            writeln!(f, "  {}", show(r))?;
        }
        writeln!(f, "  {}", show(&self.attacker))?;
        writeln!(f, "attacker: {}", self.attacker_strategy)?;
        if let Some(s) = &self.stolen {
            let caught = match (s.accuracy_when_caught, self.attacker.caught_at) {
                (Some(a), Some(q)) => format!("{:.1}% when first caught (query {q})", 100.0 * a),
                _ => "never caught".into(),
            };
            writeln!(
                f,
                "stolen copy on {} held-out images: {caught}, {:.1}% after all queries ({:.1}% agreement with the target; the target: {:.1}%)",
                s.evaluated_on,
                100.0 * s.accuracy_final,
                100.0 * s.agreement_final,
                100.0 * s.target_accuracy
            )?;
        }
        writeln!(
            f,
            "benign clients alarmed: PRADA {:.0}%, rate {:.0}%, any check {:.0}%",
            100.0 * self.false_alarm_rate,
            100.0 * self.rate_false_alarm_rate,
            100.0 * self.any_false_alarm_rate
        )
    }
}
