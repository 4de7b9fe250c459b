//! Model-extraction detection: PRADA's ledger on synthetic streams, and `rampart detect
//! extraction` on Fashion-MNIST with the reference CNN.

mod common;

use common::{failed, json, rampart, reference_path, serial};
use rampart::detect::extraction::cusum::{RateCusum, RateState};
use rampart::detect::extraction::{Client, Ledger, Prada};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Poisson};

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
    ledger.max_queries = Some(4);
    ledger.cusum = Some(RateCusum::calibrate(2.0, 4.0, 100.0).unwrap());
    let q = vec![0.25f32; 16];
    for _ in 0..5 {
        ledger.observe("a", &q, 0, (0.0, 1.0), 0).unwrap();
    }
    let b = ledger.observe("b", &q, 0, (0.0, 1.0), 0).unwrap();
    assert_eq!(b.volume, None);
    assert_eq!(ledger.clients["a"].duplicates, 4);
    assert_eq!(ledger.clients["b"].duplicates, 0);
    assert_eq!(ledger.clients["a"].queries, 5);
    // Five queries in interval 0 and one in interval 1: the volume cap of 4 went at the 5th;
    // closing interval 0 (5 − k over h?) decides the rate alarm.
    let a = ledger.observe("a", &q, 0, (0.0, 1.0), 1).unwrap();
    assert_eq!(a.volume, Some(5));
    let cusum = ledger.cusum.unwrap();
    assert_eq!(a.rate.is_some(), 5.0 - cusum.k > cusum.h, "{cusum:?}");
    // A burst raises the rate alarm within its interval, at the query that takes S over h,
    // before any later query closes the interval.
    let need = (cusum.h + cusum.k).floor() as usize + 1;
    for i in 1..=need {
        let c = ledger
            .observe("c", &[i as f32 / 100.0; 16], 0, (0.0, 1.0), 3)
            .unwrap();
        assert_eq!(
            c.rate,
            (i == need).then_some(3),
            "query {i} of {need}: {cusum:?}"
        );
    }
    assert_eq!(ledger.clients["c"].rate.alarm_query, Some(need as u64));
    assert!(
        ledger.observe("a", &q, 0, (0.0, 1.0), 0).is_err(),
        "intervals cannot go back"
    );
    assert!(
        ledger
            .observe("a", &[f32::NAN; 16], 0, (0.0, 1.0), 2)
            .is_err()
    );
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
            "--save-substitute",
            "copy.safetensors",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(report["false_alarm_rate"], 0.0, "{report}");
    assert_eq!(report["any_false_alarm_rate"], 0.0, "{report}");
    let at = report["attacker"]["alarm_at"]
        .as_u64()
        .expect("the attacker is caught");
    assert!(at <= 300, "{report}");
    // Four times the benign rate: the CUSUM catches it within its first intervals.
    let rate_at = report["attacker"]["rate_alarm_at"]
        .as_u64()
        .expect("rate alarm");
    assert!(rate_at <= 120, "{report}");
    assert_eq!(
        report["attacker"]["caught_at"].as_u64(),
        Some(rate_at.min(at))
    );
    // The stolen copy learnt something from 600 labelled queries (chance is 10%), and the
    // figures are accuracies on the 1,990 images that were not seeds.
    let stolen = &report["stolen"];
    assert_eq!(stolen["evaluated_on"], 1990);
    assert!(stolen["accuracy_final"].as_f64().unwrap() > 0.2, "{stolen}");
    assert!(
        stolen["target_accuracy"].as_f64().unwrap() > 0.85,
        "{stolen}"
    );
    assert!(
        stolen["accuracy_when_caught"].as_f64().is_some(),
        "{stolen}"
    );
    // The saved copy is that copy: the same accuracy on the same images.
    let copy = json(&rampart(
        &[
            "eval",
            "--model",
            "copy.safetensors",
            "--offset",
            "10",
            "--limit",
            "1990",
            "--device",
            "flex",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(copy["accuracy"], stolen["accuracy_final"], "{copy}");
    for (args, expected) in [
        (vec!["--queries", "5000"], "--queries"),
        (vec!["--delta", "1.2"], "--delta"),
        (vec!["--lambda", "0"], "--lambda"),
        (vec!["--alert-rate", "5"], "--alert-rate"),
        (vec!["--arl", "1"], "--arl"),
        (vec!["--attacker-rate", "0"], "--attacker-rate"),
        (vec!["--queries", "50", "--seeds", "60"], "--seeds"),
    ] {
        let mut all = vec!["detect", "extraction", "--model", m, "--limit", "2000"];
        all.extend(args.iter().copied());
        let err = failed(&rampart(&all, dir.path()));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// Run lengths of the CUSUM simulated with Poisson counts, `runs` of them: mean and its
/// standard error.
fn simulated_run_length(cusum: &RateCusum, lambda: f64, runs: usize, seed: u64) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let poisson = Poisson::new(lambda).unwrap();
    let lengths: Vec<f64> = (0..runs)
        .map(|_| {
            let mut state = RateState::default();
            let mut interval = 0u64;
            while state.alarm.is_none() {
                for _ in 0..poisson.sample(&mut rng) as u64 {
                    state.observe(cusum, interval).unwrap();
                }
                interval += 1;
                state.close_until(cusum, interval);
            }
            (state.alarm.unwrap() + 1) as f64
        })
        .collect();
    let mean = lengths.iter().sum::<f64>() / runs as f64;
    let var = lengths.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (runs - 1) as f64;
    (mean, (var / runs as f64).sqrt())
}

#[test]
fn the_rate_cusum_run_lengths_match_simulation_and_its_h_is_the_smallest_that_reaches_the_arl() {
    let cusum = RateCusum::calibrate(4.0, 8.0, 200.0).unwrap();
    // k = 4 / ln 2 = 5.77, on the grid of quarters.
    assert_eq!(cusum.k, 5.75);
    assert!(cusum.arl0 >= 200.0 && cusum.arl1 < 10.0, "{cusum:?}");
    let lower = RateCusum {
        h: cusum.h - 0.25,
        ..cusum
    };
    assert!(lower.average_run_length(4.0).unwrap() < 200.0, "{cusum:?}");
    for (lambda, arl, seed) in [(4.0, cusum.arl0, 1), (8.0, cusum.arl1, 2)] {
        let (mean, se) = simulated_run_length(&cusum, lambda, 4000, seed);
        assert!(
            (mean - arl).abs() < 4.0 * se,
            "rate {lambda}: chain {arl}, simulated {mean} ± {se}"
        );
    }
    // Idle intervals lower S; a burst raises it past h in its interval.
    let mut state = RateState::default();
    for _ in 0..30 {
        state.observe(&cusum, 5).unwrap();
    }
    state.close_until(&cusum, 6);
    assert_eq!(state.alarm, Some(5));
    for bad in [
        RateCusum::calibrate(0.0, 8.0, 200.0),
        RateCusum::calibrate(4.0, 4.0, 200.0),
        RateCusum::calibrate(4.0, 8.0, 1.0),
        RateCusum::calibrate(f64::NAN, 8.0, 200.0),
        RateCusum::calibrate(1.0, 1.01, 1e9),
        // k = 0.01 / ln 1.01 rounds to 1 on the quarter grid: no longer above the rate.
        RateCusum::calibrate(1.0, 1.01, 100.0),
        RateCusum::calibrate(0.001, 1.0, 100.0),
    ] {
        assert!(bad.is_err(), "{bad:?}");
    }
}

#[test]
fn a_saved_extraction_ledger_replays_queries_and_refuses_a_tampered_cusum() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let ledger = dir.path().join("ledger.safetensors");
    let l = ledger.to_str().unwrap();
    let fit = json(&rampart(
        &[
            "detect",
            "fit",
            "--kind",
            "extraction",
            "--model",
            m,
            "--max-queries",
            "50",
            "--rate",
            "4",
            "--alert-rate",
            "8",
            "--arl",
            "200",
            "--out",
            l,
            "--json",
        ],
        dir.path(),
    ));
    let cusum = &fit["settings"]["cusum"];
    assert_eq!(
        cusum,
        &serde_json::to_value(RateCusum::calibrate(4.0, 8.0, 200.0).unwrap()).unwrap()
    );
    let scored = json(&rampart(
        &[
            "detect",
            "score",
            "--detector",
            l,
            "--model",
            m,
            "--limit",
            "120",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(scored["queries"], 120);
    assert_eq!(scored["volume_alarm_at"], 51);
    assert_eq!(scored["alarm_at"], serde_json::Value::Null, "{scored}");
    assert!(scored["last_w"].as_f64().unwrap() > 0.9, "{scored}");
    // A decision interval edited in place (same length, so the file still parses).
    let text = std::fs::read(&ledger).unwrap();
    // The settings are JSON inside the safetensors header's JSON: quotes are escaped.
    let prefix = r#"\"h\":"#;
    let h = format!("{prefix}{}", cusum["h"]);
    let at = text
        .windows(h.len())
        .position(|w| w == h.as_bytes())
        .expect("h in the header");
    let mut edited = text.clone();
    let digit = at + prefix.len();
    edited[digit] = if edited[digit] == b'9' { b'8' } else { b'9' };
    let bad = dir.path().join("edited.safetensors");
    std::fs::write(&bad, edited).unwrap();
    let err = failed(&rampart(
        &[
            "detect",
            "score",
            "--detector",
            bad.to_str().unwrap(),
            "--model",
            m,
            "--limit",
            "10",
        ],
        dir.path(),
    ));
    assert!(
        err.contains("edited.safetensors") && err.contains("CUSUM"),
        "{err}"
    );
}

/// Queries without a vector (records without network features) count toward the volume cap
/// and the rate check, never toward PRADA; a long client keeps a bounded history.
#[test]
fn counted_queries_reach_the_cap_and_the_history_stays_bounded() {
    let mut ledger = Ledger::new(Prada::default());
    ledger.max_queries = Some(50);
    let mut last = Default::default();
    for _ in 0..60 {
        last = ledger.count("records-only", 0).unwrap();
    }
    assert_eq!(last.volume, Some(51));
    assert_eq!(last.prada, None);
    assert_eq!(ledger.clients["records-only"].queries, 60);
    // 7,000 distinct queries of one class: every one counted, tests still run on the last
    // 5,000 distances (an alarm or W values keep coming).
    let mut rng = StdRng::seed_from_u64(3);
    let mut ledger = Ledger::new(Prada::default());
    for _ in 0..7_000 {
        let x = gaussian(&mut rng, 16);
        ledger.observe("long", &x, 0, (-10.0, 10.0), 0).unwrap();
    }
    let c = &ledger.clients["long"];
    assert_eq!(c.queries, 7_000);
    assert!(c.last_w.is_some());
}
