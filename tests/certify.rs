//! Randomized smoothing: statistics against reference values, soundness and tightness on a
//! linear classifier whose smoothed version is known in closed form, coverage of the
//! Clopper-Pearson bound, abstention on a coin flip, and batching that does not change counts.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::serial;
use rampart::certify::{self, Smooth, Stage};
use rampart::classifier::{Classifier, Domain};
use statrs::distribution::{Binomial, ContinuousCDF, Discrete, Normal};

/// f(x) = 1 if w·x + b > 0 else 0, with w = (1/28, ..., 1/28) (unit norm). For the constant
/// image 0.5, w·x = 14, so b = margin - 14 puts x at signed L2 distance `margin` from the
/// boundary, and P(f(x + ε) = 1) = Φ(margin / σ).
struct Linear {
    w: Tensor<2>,
    b: f32,
}

impl Linear {
    fn new(margin: f32, device: &Device) -> Self {
        Self {
            w: Tensor::full([784, 1], 1.0 / 28.0, device),
            b: margin - 14.0,
        }
    }
}

/// Logits [0, w·x + b]: class 1 exactly when w·x + b > 0 (ties go to class 0).
impl Classifier<4> for Linear {
    type Input = Tensor<4>;

    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let z: Tensor<2> = x.flatten::<2>(1, 3).matmul(self.w.clone()) + self.b;
        Tensor::cat(vec![z.zeros_like(), z], 1)
    }

    fn num_classes(&self) -> usize {
        2
    }

    fn domain(&self) -> Domain {
        Domain::pixels()
    }
}

fn halves(count: usize, device: &Device) -> Tensor<4> {
    Tensor::full([count, 1, 28, 28], 0.5, device)
}

fn phi(z: f64) -> f64 {
    Normal::new(0.0, 1.0).unwrap().cdf(z)
}

#[test]
fn statistics_match_scipy() {
    // scipy.stats.beta.ppf(alpha, k, n - k + 1)
    let cp = [
        (990, 1000, 0.001, 0.9760361871553114),
        (100, 100, 0.001, 0.933254300796991),
        (50, 100, 0.05, 0.41362171463091174),
        (1, 10, 0.01, 0.0010045287082499491),
        (99990, 100000, 0.001, 0.9997586773435911),
    ];
    for (k, n, a, want) in cp {
        let got = certify::lower_confidence_bound(k, n, a);
        assert!(
            (got - want).abs() < 1e-9,
            "CP({k}, {n}, {a}) = {got}, scipy {want}"
        );
    }
    assert_eq!(certify::lower_confidence_bound(0, 50, 0.001), 0.0);
    // scipy.stats.binomtest(k, n, 0.5).pvalue
    let binom = [
        (60, 100, 0.05688793364098089),
        (58, 100, 0.13321061920721358),
        (5, 10, 1.0),
        (10, 10, 0.001953125),
        (30, 45, 0.035697803555194696),
        (0, 7, 0.015625),
    ];
    for (k, n, want) in binom {
        let got = certify::binomial_test_half(k, n);
        assert!(
            (got - want).abs() < 1e-9,
            "binomtest({k}, {n}) = {got}, scipy {want}"
        );
    }
}

/// The exact coverage of the one-sided Clopper-Pearson bound: P(bound > p) <= alpha for any p.
#[test]
fn clopper_pearson_coverage_is_exact_at_least_one_minus_alpha() {
    for n in [20u64, 100, 400] {
        for p in [0.3, 0.5, 0.8, 0.95, 0.99] {
            let b = Binomial::new(p, n).unwrap();
            let fail: f64 = (0..=n)
                .filter(|&k| certify::lower_confidence_bound(k, n, 0.05) > p)
                .map(|k| b.pmf(k))
                .sum();
            assert!(
                fail <= 0.05 + 1e-12,
                "n {n} p {p}: failure probability {fail}"
            );
        }
    }
}

#[test]
fn linear_classifier_radius_is_sound_and_tightens_with_n() {
    let _turn = serial();
    let d = Device::flex();
    let sigma = 0.5;
    for margin in [0.1f32, 0.3, 0.6, -0.4] {
        let f = Linear::new(margin, &d);
        let smooth = Smooth {
            base: &f,
            sigma,
            batch: 4096,
            seed: 1,
            lattice: None,
        };
        let x = halves(1, &d);
        let coarse = smooth.certify(&x, &[0], 100, 500, 0.001)[0];
        let fine = smooth.certify(&x, &[0], 100, 20_000, 0.001)[0];
        let distance = margin.abs() as f64;
        let class = if margin > 0.0 { 1 } else { 0 };
        for c in [coarse, fine] {
            // The certificate never claims more than the true distance to the boundary.
            assert!(
                c.radius <= distance,
                "margin {margin}: radius {} > {distance}",
                c.radius
            );
            if let Some(k) = c.class {
                assert_eq!(k, class);
            }
        }
        assert_eq!(fine.class, Some(class), "margin {margin}");
        assert!(
            fine.radius > coarse.radius,
            "margin {margin}: more samples, larger radius"
        );
        // Closed form: pA = Φ(|margin| / σ); with 20k samples the bound is within a few %.
        assert!(
            fine.radius > 0.8 * distance,
            "margin {margin}: radius {}",
            fine.radius
        );
        let p_a = phi(distance / sigma);
        assert!(fine.p_a_lower < p_a && fine.p_a_lower > p_a - 0.02);
    }
}

/// Many independent certifications of one input (distinct ids: fresh noise each) in one
/// batched call: the bound exceeds the true pA in at most about an alpha fraction.
#[test]
fn clopper_pearson_bound_fails_at_most_alpha_in_simulation() {
    let _turn = serial();
    let d = Device::flex();
    let (sigma, margin, alpha, runs, n) = (0.5, 0.42f32, 0.05, 400usize, 100usize);
    let f = Linear::new(margin, &d);
    let p1 = phi(margin as f64 / sigma);
    let smooth = Smooth {
        base: &f,
        sigma,
        batch: 8192,
        seed: 2,
        lattice: None,
    };
    let ids: Vec<u64> = (0..runs as u64).collect();
    // n0 = 100 selects class 1 (true probability 0.8) except with probability ~1e-10, so each
    // bound is a bound on p1.
    let certs = smooth.certify(&halves(runs, &d), &ids, 100, n, alpha);
    let failures = certs.iter().filter(|c| c.p_a_lower > p1).count() as f64;
    let rate = failures / runs as f64;
    let slack = 3.0 * (alpha * (1.0 - alpha) / runs as f64).sqrt();
    assert!(rate <= alpha + slack, "bound failed in {rate} of runs");
    // The vote fractions really vary around pA (the runs are independent, not copies).
    let fractions: std::collections::HashSet<u64> = certs.iter().map(|c| c.n_a).collect();
    assert!(fractions.len() > 5);
}

#[test]
fn coin_flip_classifier_abstains() {
    let _turn = serial();
    let d = Device::flex();
    let f = Linear::new(0.0, &d); // on the boundary: each class with probability 1/2
    let smooth = Smooth {
        base: &f,
        sigma: 0.25,
        batch: 8192,
        seed: 3,
        lattice: None,
    };
    let runs = 200;
    let ids: Vec<u64> = (0..runs as u64).collect();
    let x = halves(runs, &d);
    let predictions = smooth.predict(&x, &ids, 1000, 0.01);
    let abstained = predictions.iter().filter(|p| p.is_none()).count() as f64 / runs as f64;
    assert!(
        abstained >= 0.96,
        "PREDICT abstained on only {abstained} of coin flips"
    );
    let certs = smooth.certify(&x, &ids, 100, 1000, 0.01);
    let abstained = certs.iter().filter(|c| c.class.is_none()).count() as f64 / runs as f64;
    assert!(
        abstained >= 0.96,
        "CERTIFY abstained on only {abstained} of coin flips"
    );
    assert!(
        certs
            .iter()
            .filter(|c| c.class.is_none())
            .all(|c| c.radius == 0.0)
    );
}

#[test]
fn batched_and_one_at_a_time_give_the_same_counts() {
    let _turn = serial();
    let d = Device::flex();
    // Images near the boundary of a linear classifier: every noise draw can flip a vote.
    let f = Linear::new(0.0, &d);
    let images = at_margins(&[-0.1, 0.0, 0.15], &d);
    let ids = [5u64, 9, 11];
    let smooth = |batch| Smooth {
        base: &f,
        sigma: 0.5,
        batch,
        seed: 4,
        lattice: None,
    };
    let together = smooth(512).sample_noise(&images, &ids, 300, Stage::Estimation);
    for (i, id) in ids.iter().enumerate() {
        let alone = smooth(512).sample_noise(
            &images.clone().narrow(0, i, 1),
            &[*id],
            300,
            Stage::Estimation,
        );
        assert_eq!(alone[0], together[i], "image {id}");
    }
    // Forward passes of 7 or 128 rows split images and samples anywhere: the same counts.
    for batch in [7, 128] {
        assert_eq!(
            smooth(batch).sample_noise(&images, &ids, 300, Stage::Estimation),
            together,
            "batch {batch}"
        );
    }
    // Draws 0..100 and 100..300 add up to draws 0..300.
    let head = smooth(64).sample_noise_from(&images, &ids, 0, 100, Stage::Estimation);
    let tail = smooth(64).sample_noise_from(&images, &ids, 100, 200, Stage::Estimation);
    for i in 0..ids.len() {
        let sum: Vec<u64> = head[i].iter().zip(&tail[i]).map(|(a, b)| a + b).collect();
        assert_eq!(sum, together[i], "image {}", ids[i]);
    }
    for counts in &together {
        assert_eq!(counts.iter().sum::<u64>(), 300);
    }
    // Another seed, stage or example id draws other noise, so other votes.
    let other_seed = Smooth {
        seed: 5,
        ..smooth(512)
    }
    .sample_noise(&images, &ids, 300, Stage::Estimation);
    assert_ne!(other_seed, together);
    let other_stage = smooth(512).sample_noise(&images, &ids, 300, Stage::Selection);
    assert_ne!(other_stage, together);
    let other_ids = smooth(512).sample_noise(&images, &[6, 10, 12], 300, Stage::Estimation);
    assert_ne!(other_ids, together);
}

/// Constant images at signed L2 distances `margins` from the boundary of `Linear::new(0.0)`
/// (w·x = 28·v for the constant image v, so v = 0.5 + m/28 sits at distance m).
fn at_margins(margins: &[f32], d: &Device) -> Tensor<4> {
    let pixels: Vec<f32> = margins
        .iter()
        .flat_map(|m| std::iter::repeat_n(0.5 + m / 28.0, 784))
        .collect();
    Tensor::from_data(TensorData::new(pixels, [margins.len(), 1, 28, 28]), d)
}

/// Counts land on their own image and class: three images at different margins near the
/// boundary, each row within 5 standard deviations of n·(1 − Φ(m/σ)), n·Φ(m/σ). The same seed
/// repeats the counts exactly; another seed draws other noise, so they differ.
#[test]
fn seeds_repeat_and_counts_live_on_the_right_image() {
    let _turn = serial();
    let d = Device::flex();
    let f = Linear::new(0.0, &d);
    let (sigma, n) = (0.5, 2000usize);
    let margins = [-0.3f32, 0.05, 0.4];
    let x = at_margins(&margins, &d);
    let smooth = |seed| Smooth {
        base: &f,
        sigma,
        batch: 4096,
        seed,
        lattice: None,
    };
    let counts = smooth(6).sample_noise(&x, &[0, 1, 2], n, Stage::Selection);
    for (row, m) in counts.iter().zip(margins) {
        let p = phi(m as f64 / sigma);
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        let expected = [n as f64 * (1.0 - p), n as f64 * p];
        for (c, e) in row.iter().zip(expected) {
            assert!(
                (*c as f64 - e).abs() <= 5.0 * sd,
                "margin {m}: counts {row:?}, expected about {expected:?}"
            );
        }
    }
    // Swapping images or classes would break the order of the class-1 fractions.
    assert!(
        counts[0][1] < counts[1][1] && counts[1][1] < counts[2][1],
        "{counts:?}"
    );
    assert_eq!(
        smooth(6).sample_noise(&x, &[0, 1, 2], n, Stage::Selection),
        counts
    );
    assert_ne!(
        smooth(7).sample_noise(&x, &[0, 1, 2], n, Stage::Selection),
        counts
    );
}

/// Gaussian noise augmentation is what makes smoothing work: at sigma 0.5 the noise-trained
/// mlp certifies more Fashion-MNIST test images at radius 0.75 than the same mlp trained on
/// clean images (measured: about 36 against 23 of 60).
/// Needs the data (scripts/test.sh fetches it).
#[test]
fn gaussian_training_beats_standard_training_under_smoothing() {
    use rampart::train::config::{
        DataConfig, FashionData, Gaussian, ImageModel, Mode, ModelConfig,
    };
    use rampart::train::{self, config::TrainConfig};
    let _turn = serial();
    let sigma = 0.5;
    let certified = |mode| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            model: ModelConfig::Mlp(ImageModel::default()),
            mode,
            data: DataConfig::FashionMnist(FashionData {
                eval_limit: Some(500),
                ..FashionData::default()
            }),
            epochs: 3,
            device: rampart::device::DeviceChoice::Flex,
            out: dir.path().to_path_buf(),
            ..TrainConfig::default()
        };
        let report = train::train(&cfg, &[], false, &mut []).unwrap();
        let (model, _, _) =
            rampart::artifact::open_image(&report.model_path, None, &Device::flex()).unwrap();
        let test = common::fashion_test(50, 60);
        let labels = common::ints(test.labels.clone());
        let ids: Vec<u64> = (0..60).collect();
        let smooth = Smooth {
            base: &model,
            sigma,
            batch: 4096,
            seed: 7,
            lattice: None,
        };
        let certs = smooth.certify(&test.images, &ids, 50, 500, 0.01);
        // Correct and certified at L2 radius 0.75 (pixel space): noise training raises pA,
        // and with it the radius; at radius 0 a clean-trained mlp is already noise-tolerant.
        certs
            .iter()
            .zip(&labels)
            .filter(|(c, l)| c.class == Some(**l as usize) && c.radius >= 0.75)
            .count()
    };
    let standard = certified(Mode::Standard);
    let gaussian = certified(Mode::Gaussian(Gaussian { sigma }));
    assert!(
        gaussian > standard + 6,
        "gaussian {gaussian} vs standard {standard} of 60"
    );
}

/// Three shards of a certification, merged, are the unsharded run row for row (times aside);
/// merging refuses a missing shard, a shard of another protocol, one given twice and an edited
/// TSV, each by name.
#[test]
fn sharded_certification_merges_into_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::reference_path();
    let m = model.to_str().unwrap();
    let certify = |extra: &[&str]| {
        let mut args = vec![
            "certify", "--model", m, "--limit", "7", "--sigma", "0.25", "--n0", "20", "--n", "200",
            "--device", "flex",
        ];
        args.extend_from_slice(extra);
        common::rampart(&args, dir.path())
    };
    common::ok(&certify(&["--out", "full.tsv"]));
    for i in ["0", "1", "2"] {
        let out = format!("s{i}.tsv");
        common::ok(&certify(&[
            "--out",
            &out,
            "--shard-index",
            i,
            "--shard-count",
            "3",
        ]));
    }
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    // Shard 1 holds the 2nd and 5th selected examples.
    let s1: Vec<String> = read("s1.tsv")
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(s1, ["1", "4"]);
    let merge = |args: &[&str]| {
        let mut all = vec!["merge"];
        all.extend_from_slice(args);
        common::rampart(&all, dir.path())
    };
    let text = common::ok(&merge(&[
        "--out",
        "merged.tsv",
        "s2.tsv",
        "s0.tsv",
        "s1.tsv",
    ]));
    assert!(text.contains("merged 3 shards"), "{text}");
    let strip = |t: String| -> Vec<String> {
        t.lines()
            .map(|l| l.rsplit_once('\t').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(strip(read("merged.tsv")), strip(read("full.tsv")));
    let fails = |args: &[&str], want: &str| {
        let err = common::failed(&merge(args));
        assert!(err.contains(want), "{args:?}: {err}");
    };
    fails(
        &["--out", "m.tsv", "s0.tsv", "s1.tsv"],
        "shard 2 of 3 is missing",
    );
    fails(
        &["--out", "m.tsv", "s0.tsv", "s1.tsv", "s1.tsv"],
        "both shard 1",
    );
    common::ok(&certify(&[
        "--out",
        "other.tsv",
        "--shard-index",
        "2",
        "--shard-count",
        "3",
        "--seed",
        "9",
    ]));
    fails(
        &["--out", "m.tsv", "s0.tsv", "s1.tsv", "other.tsv"],
        "other.tsv differs",
    );
    let edited = read("s2.tsv")
        .lines()
        .take(2)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(dir.path().join("s2.tsv"), edited).unwrap();
    fails(&["--out", "m.tsv", "s0.tsv", "s1.tsv", "s2.tsv"], "s2.tsv");
    // A shard needs its index, from the flag or the scheduler.
    let err = common::failed(&certify(&["--out", "x.tsv", "--shard-count", "3"]));
    assert!(err.contains("--shard-index"), "{err}");
    // Kubernetes's and Slurm's variables name the shard; a bad one is named back.
    let scheduled = |out: &str, var: &str, value: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["certify", "--model", m, "--limit", "7", "--sigma", "0.25"])
            .args([
                "--n0",
                "20",
                "--n",
                "200",
                "--device",
                "flex",
                "--shard-count",
                "3",
            ])
            .args(["--out", out])
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env(var, value)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    common::ok(&scheduled("k.tsv", "JOB_COMPLETION_INDEX", "1"));
    assert_eq!(read("k.tsv").lines().count(), 3);
    common::ok(&scheduled("s.tsv", "SLURM_ARRAY_TASK_ID", "1"));
    assert_eq!(strip(read("s.tsv")), strip(read("k.tsv")));
    let err = common::failed(&scheduled("b.tsv", "SLURM_ARRAY_TASK_ID", "one"));
    assert!(err.contains("$SLURM_ARRAY_TASK_ID is \"one\""), "{err}");
    // An interrupted run resumes: a partial TSV with three whole rows and a torn fourth, and
    // its description, give the full run's rows, only four examples certified again.
    let full = read("full.tsv");
    let mut partial: String = full.lines().take(4).map(|l| format!("{l}\n")).collect();
    partial.push_str("3\t0\t");
    std::fs::write(dir.path().join("r.tsv.partial"), partial).unwrap();
    std::fs::copy(
        dir.path().join("full.tsv.shard.json"),
        dir.path().join("r.tsv.partial.shard.json"),
    )
    .unwrap();
    let out = certify(&["--out", "r.tsv"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    common::ok(&out);
    assert!(err.contains("resuming: 3 of 7"), "{err}");
    assert_eq!(strip(read("r.tsv")), strip(full));
    assert!(!dir.path().join("r.tsv.partial.shard.json").exists());
}

/// Early stopping for a target radius keeps the guarantee: at the hardest target (the true
/// radius, where a certificate at r needs a lower bound above the true pA), false
/// certificates stay below α in simulation; an easy target stops most images after the first
/// stage and an impossible one stops them early too; one stage is fixed-n CERTIFY exactly.
#[test]
fn early_stopping_for_a_target_radius_keeps_alpha_and_saves_samples() {
    use rampart::certify::sequential::{Goal, Target};
    let _turn = serial();
    let d = Device::flex();
    let (sigma, margin, alpha, runs, n) = (0.5, 0.42f32, 0.05, 400usize, 1024usize);
    let f = Linear::new(margin, &d);
    let p1 = phi(margin as f64 / sigma);
    let smooth = Smooth {
        base: &f,
        sigma,
        batch: 8192,
        seed: 3,
        lattice: None,
    };
    let ids: Vec<u64> = (0..runs as u64).collect();
    let x = halves(runs, &d);
    let at = |radius: f64, stages: usize| {
        let goal = Goal::Radius(radius);
        smooth.certify_target(&x, &ids, 100, n, alpha, Target { goal, stages })
    };
    let hard = at(margin as f64, 4);
    let false_certs = hard.iter().filter(|e| e.certificate.p_a_lower > p1).count() as f64;
    let slack = 3.0 * (alpha * (1.0 - alpha) / runs as f64).sqrt();
    assert!(
        false_certs / runs as f64 <= alpha + slack,
        "{false_certs} false certificates"
    );
    assert!(
        hard.iter()
            .all(|e| [128, 256, 512, 1024].contains(&e.samples))
    );
    // Easy: Φ(0.1 / 0.5) = 0.58 against pA 0.80.
    let easy = at(0.1, 4);
    let first = easy.iter().filter(|e| e.samples == 128).count();
    assert!(
        first as f64 > 0.9 * runs as f64,
        "{first} stopped at the first stage"
    );
    assert!(
        easy.iter()
            .filter(|e| e.samples == 128)
            .all(|e| e.certificate.radius >= 0.1)
    );
    // Impossible: Φ(2) = 0.977 against pA 0.80; stops early without a certificate at 1.0.
    let far = at(1.0, 4);
    let mean = far.iter().map(|e| e.samples).sum::<usize>() as f64 / runs as f64;
    assert!(mean < 0.5 * n as f64, "{mean} samples on average");
    assert!(far.iter().all(|e| e.certificate.radius < 1.0));
    // One stage: fixed-n CERTIFY at level α, the same samples.
    let one = at(0.3, 1);
    let fixed = smooth.certify(&x, &ids, 100, n, alpha);
    for (e, c) in one.iter().zip(&fixed) {
        assert_eq!((e.certificate.n_a, e.samples), (c.n_a, n));
        assert_eq!(e.certificate.p_a_lower, c.p_a_lower);
    }
}

/// Cohen's radius-agnostic protocol with early stopping: images at margins spread over the
/// report radii keep fixed n's certified accuracy at every report radius (within 4 points)
/// with fewer samples (images spread evenly over the radii are the hard case: most lie near
/// one); false certificates (a radius above the true one) stay within α; an
/// image the base classifier never gets wrong stops once the largest report radius is
/// certified.
#[test]
fn early_stopping_at_the_report_radii_keeps_certified_accuracy() {
    use rampart::certify::run::{REPORT_RADII, Row, certified_accuracy};
    use rampart::certify::sequential::{Goal, Target};
    let _turn = serial();
    let d = Device::flex();
    let (sigma, alpha, n, runs) = (0.5, 0.01, 2048usize, 300usize);
    let f = Linear::new(0.0, &d);
    // Margins -0.2 .. 1.3: true radii on both sides of every report radius.
    let margins: Vec<f32> = (0..runs)
        .map(|i| -0.2 + 1.5 * i as f32 / runs as f32)
        .collect();
    let x = at_margins(&margins, &d);
    let ids: Vec<u64> = (0..runs as u64).collect();
    let smooth = Smooth {
        base: &f,
        sigma,
        batch: 8192,
        seed: 11,
        lattice: None,
    };
    let target = Target {
        goal: Goal::ReportRadii,
        stages: 4,
    };
    let early = smooth.certify_target(&x, &ids, 100, n, alpha, target);
    let fixed = smooth.certify(&x, &ids, 100, n, alpha);
    let rows = |certs: Vec<certify::Certificate>| -> Vec<Row> {
        certs
            .into_iter()
            .enumerate()
            .map(|(i, c)| Row {
                idx: i,
                label: 1,
                predict: c.class.map_or(-1, |k| k as i64),
                radius: c.radius,
                correct: c.class == Some(1),
                time: 0.0,
            })
            .collect()
    };
    let false_certs = early
        .iter()
        .zip(&margins)
        .filter(|(e, m)| e.certificate.class == Some(1) && e.certificate.radius > **m as f64)
        .count();
    let slack = 3.0 * (alpha * (1.0 - alpha) / runs as f64).sqrt();
    assert!(
        false_certs as f64 / runs as f64 <= alpha + slack,
        "{false_certs} false certificates"
    );
    let mean = early.iter().map(|e| e.samples).sum::<usize>() as f64 / runs as f64;
    let (early_rows, fixed_rows) = (
        rows(early.iter().map(|e| e.certificate).collect()),
        rows(fixed),
    );
    for r in REPORT_RADII {
        let (a, b) = (
            certified_accuracy(&early_rows, r),
            certified_accuracy(&fixed_rows, r),
        );
        assert!((a - b).abs() <= 0.04, "radius {r}: early {a}, fixed n {b}");
    }
    // Measured: 1,439 of 2,048 (70%); margins spread evenly put many images near a radius.
    assert!(mean < 0.8 * n as f64, "{mean} samples per image on average");
    // Never wrong: certified at radius 1.0 (pA lower bound above Φ(2)) after 512 samples.
    let sure = Linear::new(20.0, &d);
    let perfect = Smooth {
        base: &sure,
        ..smooth
    }
    .certify_target(&halves(4, &d), &[0, 1, 2, 3], 100, n, alpha, target);
    for e in perfect {
        assert!(e.samples <= 512 && e.certificate.radius >= 1.0, "{e:?}");
    }
}

/// `rampart certify --json` of the reference cnn at sigma 0.25 on flex: the first `limit` test
/// images, `n0` and `n` samples, then `extra`.
fn certify_reference(
    dir: &std::path::Path,
    limit: &str,
    n0: &str,
    n: &str,
    extra: &[&str],
) -> std::process::Output {
    let model = common::reference_path();
    let mut args = vec![
        "certify",
        "--model",
        model.to_str().unwrap(),
        "--limit",
        limit,
        "--sigma",
        "0.25",
        "--n0",
        n0,
        "--n",
        n,
        "--device",
        "flex",
        "--json",
    ];
    args.extend_from_slice(extra);
    common::rampart(&args, dir)
}

/// `--target-radius` reports the samples it saved, and its description keeps resumed runs
/// and merged shards from mixing with fixed-n ones.
#[test]
fn certify_with_a_target_radius_reports_its_samples() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| certify_reference(dir.path(), "6", "20", "1024", extra);
    let v = common::json(&run(&["--target-radius", "0.1", "--out", "t.tsv"]));
    let mean = v["summary"]["mean_samples"].as_f64().unwrap();
    assert!(mean < 1024.0, "{v}");
    assert_eq!(v["summary"]["target"]["stages"], 4);
    assert_eq!(v["summary"]["target"]["goal"]["radius"], 0.1);
    let v = common::json(&run(&["--early-stop", "--stages", "3"]));
    assert_eq!(v["summary"]["target"]["goal"], "report-radii");
    assert!(
        v["summary"]["mean_samples"].as_f64().unwrap() <= 1024.0,
        "{v}"
    );
    let err = common::failed(&run(&["--early-stop", "--target-radius", "0.1"]));
    assert!(err.contains("--target-radius"), "{err}");
    let err = common::failed(&run(&["--target-radius", "-1"]));
    assert!(err.contains("--target-radius"), "{err}");
    let err = common::failed(&run(&["--stages", "3"]));
    assert!(err.contains("--target-radius"), "{err}");
    // A fixed-n shard and an early-stopping shard are not one run.
    common::ok(&run(&[
        "--out",
        "a.tsv",
        "--shard-index",
        "0",
        "--shard-count",
        "2",
    ]));
    common::ok(&run(&[
        "--out",
        "b.tsv",
        "--shard-index",
        "1",
        "--shard-count",
        "2",
        "--target-radius",
        "0.1",
    ]));
    let err = common::failed(&common::rampart(
        &["merge", "--out", "m.tsv", "a.tsv", "b.tsv"],
        dir.path(),
    ));
    assert!(err.contains("differs"), "{err}");
}

/// `--sound`: integer noise on the 1/255 grid, with its total-variation bound in the report;
/// certificates close to the floating-point protocol's on the same images; inputs off the
/// grid (a fusion model's rescaled network features) refused by name.
#[test]
fn sound_certification_on_images_and_refused_off_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let run =
        |extra: &[&str]| common::json(&certify_reference(dir.path(), "8", "50", "2000", extra));
    let sound = run(&["--sound", "--out", "sound.tsv"]);
    let float = run(&[]);
    assert_eq!(sound["sound"]["levels"], 255);
    let slack = sound["sound"]["slack"].as_f64().unwrap();
    assert!(slack > 0.0 && slack < 1e-8, "{sound}");
    assert!(float["sound"].is_null());
    let at0 = |v: &serde_json::Value| v["summary"]["certified_accuracy"][0][1].as_f64().unwrap();
    assert!(at0(&sound) > 0.5, "{sound}");
    assert!(
        (at0(&sound) - at0(&float)).abs() <= 0.25 + 1e-9,
        "sound {} vs float {}",
        at0(&sound),
        at0(&float)
    );
    // The shard description records the protocol, so a sound shard cannot merge with a float one.
    let meta = std::fs::read_to_string(dir.path().join("sound.tsv.shard.json")).unwrap();
    assert!(
        meta.contains("\"sound\":true") || meta.contains("\"sound\": true"),
        "{meta}"
    );

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let out = common::rampart(
        &[
            "certify",
            "--model",
            fixtures.join("torch-fusion.safetensors").to_str().unwrap(),
            "--records",
            fixtures
                .join("torch-fusion-records.jsonl")
                .to_str()
                .unwrap(),
            "--sigma",
            "0.25",
            "--n",
            "100",
            "--limit",
            "2",
            "--device",
            "flex",
            "--sound",
        ],
        dir.path(),
    );
    let err = common::failed(&out);
    assert!(err.contains("--sound") && err.contains("grid"), "{err}");
}
