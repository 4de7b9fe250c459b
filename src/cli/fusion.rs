//! `eval`, `attack`, `certify`, `predict` and `inspect` for multimodal fusion models
//! (`--records`).

use burn::module::Module;
use burn::tensor::{Int, Tensor};

use super::{
    AttackArgs, Certified, CertifyArgs, CliResult, EvalArgs, InspectArgs, PredictArgs, announce,
};
use crate::attack::{Pgd, Tally, worst_case};
use crate::certify::Smooth;
use crate::certify::run::{CertifyRun, certify_all, predict_all};
use crate::multimodal::model::Modality;
use crate::multimodal::train::{FusionMode, FusionTrainConfig};
use crate::multimodal::{EmbeddingView, NetworkView, data::SecuritySet, evaluate};

type Error = Box<dyn std::error::Error>;

pub(super) fn eval(args: &EvalArgs) -> CliResult {
    let opened = args.on.open_fusion()?;
    let set = match args.limit {
        Some(l) => opened.records.range(0, l),
        None => opened.records,
    };
    let spec = &opened.loaded.spec;
    let model = opened.loaded.model.valid();
    let report = evaluate(&model, &set, args.batch);
    let accuracy = |set: &SecuritySet| evaluate(&model, set, args.batch).accuracy;
    // The fused model with one modality alone, and with one withheld.
    let mut ablation = Vec::new();
    for m in &spec.modalities {
        let mut alone = [false; 3];
        alone[m.column()] = true;
        let mut without = [true; 3];
        without[m.column()] = false;
        ablation.push((*m, accuracy(&set.only(alone)), accuracy(&set.only(without))));
    }
    if args.json {
        let out = serde_json::json!({
            "model": args.on.model,
            "arch": "fusion",
            "spec": spec,
            "dataset": set.name,
            "device": opened.chosen.description,
            "records": set.len(),
            "accuracy": report.accuracy,
            "per_class_accuracy": report.per_class_accuracy,
            "modality_alone": ablation.iter().map(|(m, a, _)| (format!("{m:?}").to_lowercase(), *a)).collect::<std::collections::BTreeMap<_, _>>(),
            "modality_withheld": ablation.iter().map(|(m, _, w)| (format!("{m:?}").to_lowercase(), *w)).collect::<std::collections::BTreeMap<_, _>>(),
            "confusion": report.confusion,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    eprintln!("device: {}", opened.chosen.description);
    println!(
        "{}: fusion ({:?}, modalities {:?}) on {}",
        args.on.model.display(),
        spec.fusion,
        spec.modalities,
        set.name
    );
    println!(
        "accuracy: {:.2}% ({} records)",
        100.0 * report.accuracy,
        set.len()
    );
    for (m, alone, without) in &ablation {
        println!(
            "  {:<8} alone {:6.2}%   withheld {:6.2}%",
            format!("{m:?}").to_lowercase(),
            100.0 * alone,
            100.0 * without
        );
    }
    println!("per class (accuracy, then confusion row: true class against predicted):");
    for (i, (row, acc)) in report
        .confusion
        .iter()
        .zip(&report.per_class_accuracy)
        .enumerate()
    {
        let name = spec.class_names.get(i).map(String::as_str).unwrap_or("");
        println!("  {name:<14} {:6.2}%  {row:?}", 100.0 * acc);
    }
    Ok(())
}

pub(super) fn attack(args: &AttackArgs, attacks: &[Pgd], alpha: f64) -> CliResult {
    if args.save_examples.is_some() {
        return Err("--save-examples writes images; it is not available for fusion models".into());
    }
    let opened = args.on.open_fusion()?;
    let spec = &opened.loaded.spec;
    let modality = args.modality.unwrap_or(Modality::Network);
    if !spec.has(modality) {
        return Err(format!(
            "--modality {modality:?}: the model reads only {:?}",
            spec.modalities
        )
        .into());
    }
    let classes = spec.num_classes();
    if let Some(t) = args.target.filter(|t| *t >= classes) {
        return Err(format!("--target {t}: the model has {classes} classes").into());
    }
    let set = match args.limit {
        Some(l) => opened.records.range(0, l),
        None => opened.records,
    };
    let device = opened.chosen.device.clone();
    device.seed(args.seed);
    let model = opened.loaded.model.valid();
    let started = std::time::Instant::now();
    let mut tally = Tally::new(&device);
    for s in (0..set.len()).step_by(args.batch) {
        let b = set.range(s, s + args.batch);
        let target = args
            .target
            .map(|t| Tensor::<1, Int>::full([b.len()], t as i64, &device));
        match modality {
            Modality::Network => {
                let view = NetworkView::new(&model, &b);
                tally.add(&worst_case(
                    &view,
                    &b.network,
                    &b.labels,
                    attacks,
                    args.restarts,
                    target.as_ref(),
                ));
            }
            _ => {
                let view = EmbeddingView {
                    model: &model,
                    context: b.clone(),
                    modality,
                };
                let x = view.embeddings().expect("modality checked above");
                tally.add(&worst_case(
                    &view,
                    &x,
                    &b.labels,
                    attacks,
                    args.restarts,
                    target.as_ref(),
                ));
            }
        }
    }
    let (clean, robust) = tally.read();
    let seconds = started.elapsed().as_secs_f64();
    let n = set.len() as f64;
    let units = match modality {
        Modality::Network => "fraction of each network feature's box",
        _ => "embedding units (unbounded)",
    };
    if args.json {
        let out = serde_json::json!({
            "model": args.on.model,
            "arch": "fusion",
            "dataset": set.name,
            "device": opened.chosen.description,
            "modality": modality,
            "epsilon_units": units,
            "attacks": attacks,
            "restarts": args.restarts,
            "target": args.target,
            "records": set.len(),
            "clean_accuracy": clean as f64 / n,
            "robust_accuracy": robust as f64 / n,
            "records_per_sec": n / seconds,
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    eprintln!("device: {}", opened.chosen.description);
    println!(
        "{} on {} ({} records): {:?} {:?} eps {} ({units}; alpha {alpha:.4}, {} steps, {} restarts)",
        args.on.model.display(),
        set.name,
        set.len(),
        modality,
        args.norm,
        args.eps,
        args.steps,
        args.restarts
    );
    println!("clean accuracy:  {:.2}%", 100.0 * clean as f64 / n);
    println!(
        "robust accuracy: {:.2}% (worst case over every run)",
        100.0 * robust as f64 / n
    );
    println!("{:.1} records/s, {seconds:.1} s", n / seconds);
    Ok(())
}

/// Model, sigma, the whole record set (the context noisy rows are matched to by id) and the
/// chosen records' ids, for smoothing over the network features.
struct Job {
    description: String,
    model: crate::multimodal::model::FusionModel,
    sigma: f64,
    all: SecuritySet,
    ids: Vec<usize>,
}

fn job(c: &super::SmoothArgs) -> Result<Job, Error> {
    let opened = c.on.open_fusion()?;
    if !opened.loaded.spec.has(Modality::Network) {
        return Err(format!(
            "{}: smoothing is over the network features, and this model does not read them",
            c.on.model.display()
        )
        .into());
    }
    let trained = opened
        .loaded
        .metadata
        .get("rampart.config")
        .and_then(|j| serde_json::from_str::<FusionTrainConfig>(j).ok())
        .filter(|cfg| cfg.mode == FusionMode::Gaussian)
        .map(|cfg| cfg.sigma);
    let sigma = c.sigma.or(trained).ok_or_else(|| {
        format!(
            "{}: not trained with mode gaussian, so there is no sigma to default to; pass --sigma",
            c.on.model.display()
        )
    })?;
    let ids = crate::data::every_index(opened.records.len(), c.skip, c.limit);
    Ok(Job {
        description: opened.chosen.description,
        model: opened.loaded.model.valid(),
        sigma,
        all: opened.records,
        ids,
    })
}

impl Job {
    fn chosen(&self) -> SecuritySet {
        self.all
            .select(crate::data::indices(&self.ids, &self.all.labels.device()))
    }
}

pub(super) fn certify(args: &CertifyArgs) -> Result<Certified, Error> {
    let c = &args.common;
    let job = job(c)?;
    eprintln!("device: {}", job.description);
    let chosen = job.chosen();
    announce(
        "records (noise on network features)",
        chosen.len(),
        &chosen.name,
        job.sigma,
        args,
    );
    let labels = chosen.host_labels();
    let view = NetworkView::new(&job.model, &job.all);
    let smooth = Smooth {
        base: &view,
        sigma: job.sigma,
        batch: c.batch,
        seed: c.seed,
    };
    let run = CertifyRun {
        inputs: &chosen.network,
        labels: &labels,
        ids: &job.ids,
        n0: args.n0,
        n: c.n,
        alpha: c.alpha,
    };
    let (rows, summary) = certify_all(&smooth, &run, args.out.as_deref())?;
    Ok(Certified {
        device: job.description,
        name: format!("{} (L2 radius over network features)", chosen.name),
        sigma: job.sigma,
        rows,
        summary,
    })
}

pub(super) fn predict(args: &PredictArgs) -> CliResult {
    let c = &args.common;
    c.check()?;
    let job = job(c)?;
    let chosen = job.chosen();
    let labels = chosen.host_labels();
    let view = NetworkView::new(&job.model, &job.all);
    let smooth = Smooth {
        base: &view,
        sigma: job.sigma,
        batch: c.batch,
        seed: c.seed,
    };
    let started = std::time::Instant::now();
    let predictions = predict_all(&smooth, &chosen.network, &job.ids, c.n, c.alpha);
    super::print_predictions(
        c,
        &job.description,
        &chosen.name,
        job.sigma,
        &job.ids,
        &labels,
        &predictions,
        started.elapsed().as_secs_f64(),
    )
}

pub(super) fn inspect(args: &InspectArgs) -> CliResult {
    let loaded = crate::multimodal::load(&args.model, &burn::tensor::Device::flex())?;
    // Loading checked every tensor against the spec, so the model's own shapes are the file's.
    let tensors = crate::store::tensor_shapes(&loaded.model);
    let params: usize = tensors.values().map(|s| s.iter().product::<usize>()).sum();
    let parse = |k: &str| crate::store::metadata_json(&loaded.metadata, k);
    if args.json {
        let out = serde_json::json!({
            "model": args.model,
            "arch": "fusion",
            "spec": loaded.spec,
            "parameters": params,
            "tensors": tensors,
            "config": parse("rampart.config"),
            "summary": parse("rampart.summary"),
            "dataset": loaded.metadata.get("rampart.dataset"),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let spec = &loaded.spec;
    println!("file:         {}", args.model.display());
    println!("architecture: fusion ({:?})", spec.fusion);
    println!("modalities:   {:?}", spec.modalities);
    println!("classes:      {:?}", spec.class_names);
    println!("network box:  {:?}", spec.network_box);
    if let Some(d) = loaded.metadata.get("rampart.dataset") {
        println!("trained on:   {d}");
    }
    println!("parameters:   {params}");
    println!("tensors (PyTorch layout):");
    for (name, shape) in &tensors {
        println!("  {name:<18} {shape:?}");
    }
    Ok(())
}
