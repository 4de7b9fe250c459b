//! Model-extraction detection: PRADA's ledger on synthetic streams, and `rampart detect
//! extraction` on Fashion-MNIST with the reference CNN.

mod common;

use common::{failed, json, rampart, reference_path, serial};
use rampart::detect::extraction::{Client, Ledger, Prada};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn gaussian(rng: &mut StdRng, d: usize) -> Vec<f32> {
    // Box-Muller: independent N(0, 1) coordinates.
    (0..d)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

#[test]
fn prada_alarms_on_small_steps_from_few_seeds_and_not_on_natural_queries() {
    let prada = Prada::default();
    let mut rng = StdRng::seed_from_u64(5);
    let d = 64;
    // Benign: 600 independent draws over 4 classes.
    let mut benign = Client::default();
    for i in 0..600 {
        benign
            .observe(&prada, &gaussian(&mut rng, d), i % 4, (-10.0, 10.0))
            .unwrap();
    }
    assert_eq!(benign.alarm, None, "lowest W {:?}", benign.min_w);
    assert!(benign.last_w.unwrap() > 0.95);
    // Attacker: 4 seeds, then each query a step of ±0.05 per coordinate from the last one.
    let mut attacker = Client::default();
    let mut points: Vec<Vec<f32>> = (0..4).map(|_| gaussian(&mut rng, d)).collect();
    for i in 0..600 {
        let class = i % 4;
        let step: Vec<f32> = points[class]
            .iter()
            .map(|v| v + if rng.random_bool(0.5) { 0.05 } else { -0.05 })
            .collect();
        let query = if i < 4 { points[class].clone() } else { step };
        attacker
            .observe(&prada, &query, class, (-10.0, 10.0))
            .unwrap();
        points[class] = query;
    }
    let (at, w) = attacker
        .alarm
        .expect("PRADA alarms on the synthetic stream");
    assert!(w < 0.9 && at <= 200, "alarm at query {at}, W {w}");
}

#[test]
fn the_ledger_keeps_clients_apart_and_counts_repeated_queries() {
    let mut ledger = Ledger::new(Prada::new(0.9, 100, 10).unwrap());
    let q = vec![0.25f32; 16];
    for _ in 0..5 {
        ledger.observe("a", &q, 0, (0.0, 1.0)).unwrap();
    }
    ledger.observe("b", &q, 0, (0.0, 1.0)).unwrap();
    assert_eq!(ledger.clients["a"].duplicates, 4);
    assert_eq!(ledger.clients["b"].duplicates, 0);
    assert_eq!(ledger.clients["a"].queries, 5);
    assert!(ledger.observe("a", &[f32::NAN; 16], 0, (0.0, 1.0)).is_err());
    assert!(Prada::new(1.5, 100, 10).is_err() && Prada::new(0.9, 2, 10).is_err());
}

#[test]
fn prada_catches_a_few_seed_attacker_on_fashion_mnist_and_spares_benign_clients() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let report = json(&rampart(
        &[
            "detect",
            "extraction",
            "--model",
            m,
            "--limit",
            "2000",
            "--clients",
            "3",
            "--queries",
            "600",
            "--seeds",
            "10",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(report["false_alarm_rate"], 0.0, "{report}");
    let at = report["attacker"]["alarm_at"]
        .as_u64()
        .expect("the attacker is caught");
    assert!(at <= 300, "{report}");
    for (args, expected) in [
        (vec!["--queries", "5000"], "--queries"),
        (vec!["--delta", "1.2"], "--delta"),
        (vec!["--lambda", "0"], "--lambda"),
    ] {
        let mut all = vec!["detect", "extraction", "--model", m, "--limit", "2000"];
        all.extend(args.iter().copied());
        let err = failed(&rampart(&all, dir.path()));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
