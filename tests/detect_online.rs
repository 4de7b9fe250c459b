//! Online drift: the bootstrap-calibrated MMD window holds its expected run time on streams
//! without drift and raises the alarm soon after a shift; `rampart detect online` end to end.

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use common::{failed, json, rampart, reference_path, serial};
use rampart::detect::drift::online::OnlineMmd;

#[test]
fn online_mmd_keeps_its_run_length_and_finds_a_shift() {
    let d = Device::flex();
    d.seed(2);
    let reference = Tensor::<2>::random([400, 4], Distribution::Normal(0.0, 1.0), &d);
    let detector = OnlineMmd::fit(reference, 10, 50.0, 400, 1).unwrap();
    // 100 fresh streams of 300 from the same distribution: false alarms per step watched
    // (about 100 alarms: the estimate's standard error is about 10%).
    let (mut watched, mut alarms) = (0usize, 0usize);
    for _ in 0..100 {
        let stream = Tensor::<2>::random([300, 4], Distribution::Normal(0.0, 1.0), &d);
        let run = detector.run(stream).unwrap();
        watched += run.alarm_at.unwrap_or(300) - 10 + 1;
        alarms += usize::from(run.alarm_at.is_some());
    }
    let measured = watched as f64 / alarms.max(1) as f64;
    assert!(
        (25.0..=100.0).contains(&measured),
        "measured ERT {measured} ({alarms} alarms in {watched} steps) for 50"
    );
    // A shift of one standard deviation from step 150: alarms within 40 steps in most streams.
    let mut quick = 0;
    for _ in 0..10 {
        let before = Tensor::<2>::random([150, 4], Distribution::Normal(0.0, 1.0), &d);
        let after = Tensor::<2>::random([150, 4], Distribution::Normal(1.0, 1.0), &d);
        let stats = detector
            .statistics(Tensor::cat(vec![before, after], 0))
            .unwrap();
        let last = *detector.thresholds.last().unwrap();
        let first = stats
            .iter()
            .enumerate()
            .find(|(i, s)| i + 10 > 150 && **s > *detector.thresholds.get(*i).unwrap_or(&last));
        quick += usize::from(first.is_some_and(|(i, _)| i + 10 <= 190));
    }
    assert!(
        quick >= 8,
        "{quick} of 10 shifted streams alarmed within 40 steps"
    );
    let small = Tensor::<2>::random([30, 4], Distribution::Normal(0.0, 1.0), &d);
    assert!(OnlineMmd::fit(small, 10, 50.0, 400, 1).is_err());
    let reference = Tensor::<2>::random([400, 4], Distribution::Normal(0.0, 1.0), &d);
    assert!(OnlineMmd::fit(reference.clone(), 10, 500.0, 400, 1).is_err());
    // Enough streams to start, too few left to resolve the quantile later: an error, not a
    // detector that silently never alarms.
    let err = OnlineMmd::fit(reference, 60, 5.0, 20, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--bootstraps"), "{err}");
}

#[test]
fn detect_online_runs_on_fashion_mnist_features() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let report = json(&rampart(
        &[
            "detect",
            "online",
            "--model",
            m,
            "--limit",
            "1500",
            "--reference",
            "600",
            "--window",
            "10",
            "--ert",
            "50",
            "--bootstraps",
            "200",
            "--streams",
            "4",
            "--stream-length",
            "200",
            "--shift",
            "noise",
            "--strength",
            "0.2",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(report["requested_ert"], 50.0);
    let delays = report["delays"].as_array().unwrap();
    let early = report["alarmed_before_change"].as_u64().unwrap() as usize;
    assert_eq!(delays.len() + early, 4);
    let caught = delays
        .iter()
        .filter(|d| d.as_u64().is_some_and(|d| d <= 60))
        .count();
    assert!(caught >= 3, "{report}");
    assert!(report["steps_watched"].as_u64().unwrap() > 0);
    if let Some(ert) = report["measured_ert"].as_f64() {
        let interval = &report["measured_ert_interval"];
        assert!(interval[0].as_f64().unwrap() <= ert && ert <= interval[1].as_f64().unwrap());
    }
    for (args, expected) in [
        (vec!["--ert", "1"], "--ert"),
        (vec!["--bootstraps", "10"], "--bootstraps"),
        (vec!["--stream-length", "5000"], "--stream-length"),
        (vec!["--shift", "remove-class"], "remove-class"),
    ] {
        let mut all = vec![
            "detect",
            "online",
            "--model",
            m,
            "--limit",
            "1500",
            "--reference",
            "600",
        ];
        all.extend(args.iter().copied());
        let err = failed(&rampart(&all, dir.path()));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
