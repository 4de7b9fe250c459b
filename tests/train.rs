//! Training: learning on the synthetic set, determinism, checkpoints and resume, configs, and a
//! short run on real Fashion-MNIST.

use std::path::Path;

use rampart::device::DeviceChoice;
use rampart::model::Arch;
use rampart::train::{self, DatasetChoice, OptimizerKind, TrainConfig};
use safetensors::SafeTensors;

/// Burn's random generator is process-global: tests that train take turns so that each run
/// sees only its own seed.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn synthetic_cfg(out: &Path, arch: Arch, epochs: usize) -> TrainConfig {
    TrainConfig {
        arch,
        dataset: DatasetChoice::Synthetic,
        synthetic_size: 1200,
        optimizer: OptimizerKind::Adam,
        lr: 1e-3,
        batch_size: 64,
        epochs,
        seed: 7,
        device: DeviceChoice::Flex,
        out: out.to_path_buf(),
        ..TrainConfig::default()
    }
}

/// All tensor bytes of a model file, by name.
fn weights(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn mlp_learns_the_synthetic_set() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let report = train::train(&synthetic_cfg(dir.path(), Arch::Mlp, 2), false).unwrap();
    let last = report.history.last().unwrap();
    // Ten classes: chance is 10%.
    assert!(last.eval_accuracy > 0.9, "{:?}", report.history);
    assert!(report.history[1].train_loss < report.history[0].train_loss);
    assert!(report.dataset.contains("SYNTHETIC"));
    let lines = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    let first: train::EpochMetrics = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first, report.history[0]);
}

#[test]
fn cnn_learns_the_synthetic_set() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let report = train::train(&synthetic_cfg(dir.path(), Arch::Cnn, 1), false).unwrap();
    assert!(
        report.history[0].eval_accuracy > 0.8,
        "{:?}",
        report.history
    );
}

#[test]
fn same_seed_same_device_same_model() {
    let _turn = serial();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let ra = train::train(&synthetic_cfg(a.path(), Arch::Mlp, 1), false).unwrap();
    let rb = train::train(&synthetic_cfg(b.path(), Arch::Mlp, 1), false).unwrap();
    let other_seed = TrainConfig {
        seed: 8,
        ..synthetic_cfg(c.path(), Arch::Mlp, 1)
    };
    let rc = train::train(&other_seed, false).unwrap();
    assert_eq!(weights(&ra.model_path), weights(&rb.model_path));
    assert_ne!(weights(&ra.model_path), weights(&rc.model_path));
}

#[test]
fn resume_continues_exactly_where_the_run_stopped() {
    let _turn = serial();
    let straight = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    let full = train::train(&synthetic_cfg(straight.path(), Arch::Mlp, 2), false).unwrap();

    // "Interrupted" after one epoch, then resumed with the full epoch count.
    train::train(&synthetic_cfg(split.path(), Arch::Mlp, 1), false).unwrap();
    let resumed = train::train(&synthetic_cfg(split.path(), Arch::Mlp, 2), true).unwrap();
    assert_eq!(resumed.history.len(), 2);
    assert_eq!(weights(&full.model_path), weights(&resumed.model_path));
    let lines = std::fs::read_to_string(split.path().join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
}

#[test]
fn checkpoints_are_neither_clobbered_nor_resumed_blindly() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = synthetic_cfg(dir.path(), Arch::Mlp, 1);
    train::train(&cfg, false).unwrap();
    let state = std::fs::read(dir.path().join("checkpoint/state.json")).unwrap();

    // A second fresh run into the same directory would overwrite the checkpoint: refused.
    let e = train::train(&cfg, false).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    // Resuming a finished run asks for more epochs.
    let e = train::train(&cfg, true).unwrap_err().to_string();
    assert!(e.contains("already finished 1 of 1 epochs"), "{e}");
    // Resuming with a different recipe is refused.
    let changed = TrainConfig {
        lr: 0.01,
        epochs: 2,
        ..cfg.clone()
    };
    let e = train::train(&changed, true).unwrap_err().to_string();
    assert!(e.contains("different config"), "{e}");
    // Nothing above touched the checkpoint.
    assert_eq!(
        std::fs::read(dir.path().join("checkpoint/state.json")).unwrap(),
        state
    );

    let empty = tempfile::tempdir().unwrap();
    let e = train::train(&synthetic_cfg(empty.path(), Arch::Mlp, 2), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing to resume"), "{e}");
}

#[test]
fn configs_reject_unknown_keys_and_bad_values() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "arch = \"mlp\"\nlearning_rate = 0.1\n").unwrap();
    let e = TrainConfig::from_toml_file(&path).unwrap_err().to_string();
    assert!(e.contains("c.toml") && e.contains("learning_rate"), "{e}");
    std::fs::write(&path, "lr = -1.0\n").unwrap();
    let e = TrainConfig::from_toml_file(&path).unwrap_err().to_string();
    assert!(e.contains("lr must be a positive number"), "{e}");
    std::fs::write(&path, "lr = nan\n").unwrap();
    assert!(TrainConfig::from_toml_file(&path).is_err());
    std::fs::write(&path, "arch = \"resnet999\"\n").unwrap();
    let e = TrainConfig::from_toml_file(&path).unwrap_err().to_string();
    assert!(e.contains("resnet999"), "{e}");
}

#[test]
fn shipped_configs_parse() {
    let _turn = serial();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        if table.get("arch").and_then(|a| a.as_str()) == Some("fusion") {
            rampart::multimodal::train::FusionTrainConfig::from_toml_table(table)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        } else if table.contains_key("member") {
            let cfg = rampart::ensemble::EnsembleTrainConfig::read(&path)
                .unwrap_or_else(|e| panic!("{e}"));
            for i in 0..cfg.members.len() {
                let member = cfg.member_config(i).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(member.train_limit, Some(60_000 - cfg.validation_size));
            }
        } else {
            TrainConfig::from_toml_file(&path).unwrap_or_else(|e| panic!("{e}"));
        }
        n += 1;
    }
    assert!(n >= 7);
}

/// Real data: the mlp on 12k Fashion-MNIST images for one epoch must clear 78% on 2000 test
/// images (the full mlp reaches about 88%). Needs the data: scripts/test.sh fetches it.
#[test]
fn short_fashion_mnist_run_passes_an_accuracy_floor() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        arch: Arch::Mlp,
        dataset: DatasetChoice::FashionMnist,
        train_limit: Some(12_000),
        eval_limit: Some(2_000),
        epochs: 1,
        device: DeviceChoice::Flex,
        out: dir.path().to_path_buf(),
        ..TrainConfig::default()
    };
    let report = train::train(&cfg, false).unwrap_or_else(|e| {
        panic!("{e}\n(Fashion-MNIST is needed for this test: run scripts/fetch-data.sh)")
    });
    let acc = report.history[0].eval_accuracy;
    assert!(acc > 0.78, "Fashion-MNIST accuracy {acc}");
}

/// Adversarial training (fgsm-rs, pgd, trades) on the synthetic set gives higher L∞ PGD
/// robust accuracy at epsilon 0.1 than standard training of the same mlp (measured: standard
/// 0%, fgsm-rs about 19%, pgd 29%, trades 88%).
#[test]
fn adversarial_training_beats_standard_training_under_attack() {
    use rampart::train::TrainMode;
    let _turn = serial();
    let robust = |mode| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            mode,
            epsilon: 0.1,
            synthetic_size: 2000,
            epochs: 3,
            robust_eval_size: 500,
            ..synthetic_cfg(dir.path(), Arch::Mlp, 3)
        };
        let report = train::train(&cfg, false).unwrap();
        let last = report.history.last().unwrap().clone();
        if mode == TrainMode::Standard {
            assert_eq!(last.robust_accuracy, None);
            let model =
                rampart::store::load_model(&report.model_path, None, &burn::tensor::Device::flex())
                    .unwrap()
                    .model;
            let test =
                rampart::data::synthetic(500, cfg.seed ^ 0x7e57, &burn::tensor::Device::flex());
            let pgd = rampart::attack::Pgd {
                norm: rampart::attack::Norm::Linf,
                epsilon: 0.1,
                alpha: 0.025,
                steps: 10,
                random_start: true,
                loss: rampart::attack::AttackLoss::Ce,
            };
            let out =
                rampart::attack::worst_case(&model, &test.images, &test.labels, &[pgd], 1, None);
            out.robust.int().sum().into_scalar::<i64>() as f64 / 500.0
        } else {
            assert_eq!(last.epsilon, Some(0.1));
            last.robust_accuracy.expect("robust accuracy logged")
        }
    };
    let standard = robust(TrainMode::Standard);
    for mode in [TrainMode::FgsmRs, TrainMode::Pgd, TrainMode::Trades] {
        let adversarial = robust(mode);
        assert!(
            adversarial > standard + 0.1,
            "{mode:?}: robust {adversarial} vs standard {standard}"
        );
    }
}

/// Adaptive mode: epsilon ramps up, each epoch logs the candidates' measured robust accuracy
/// and the next epoch trains against the one that left the lowest; a resumed run keeps the
/// choice.
#[test]
fn adaptive_mode_ramps_epsilon_and_picks_the_strongest_attack() {
    use rampart::train::TrainMode;
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        mode: TrainMode::Adaptive,
        epsilon: 0.1,
        ramp_epochs: 2,
        robust_eval_size: 300,
        synthetic_size: 1000,
        ..synthetic_cfg(dir.path(), Arch::Mlp, 2)
    };
    train::train(&cfg, false).unwrap();
    let report = train::train(
        &TrainConfig {
            epochs: 3,
            ..cfg.clone()
        },
        true,
    )
    .unwrap();
    let h = &report.history;
    assert_eq!(
        h.iter().map(|m| m.epsilon.unwrap()).collect::<Vec<_>>(),
        [0.05, 0.1, 0.1]
    );
    assert_eq!(h[0].attack.as_deref(), Some("fgsm-rs"));
    for (m, next) in h.iter().zip(h.iter().skip(1)) {
        let c = m.candidates.as_ref().expect("candidates logged");
        let weakest = c.values().cloned().fold(f64::INFINITY, f64::min);
        let chosen = m.next_attack.as_deref().unwrap();
        assert_eq!(
            c[chosen], weakest,
            "epoch {}: chose {chosen} from {c:?}",
            m.epoch
        );
        assert_eq!(
            next.attack.as_deref(),
            Some(chosen),
            "epoch {} trained against another attack",
            next.epoch
        );
    }
}

/// The catastrophic-overfitting guard rolls back and switches to PGD when PGD accuracy falls
/// below guard_ratio × its best while FGSM accuracy stays up. A ratio above 1 makes any
/// epoch that does not improve PGD accuracy by half trip it. (With this seed, measured: epoch
/// 2 falls to 4.8% PGD accuracy from 17.2% with FGSM accuracy 41.6%, a real collapse.)
#[test]
fn overfitting_guard_rolls_back_and_switches_to_pgd() {
    use rampart::train::TrainMode;
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        mode: TrainMode::FgsmRs,
        epsilon: 0.1,
        guard_ratio: 1.5,
        robust_eval_size: 500,
        synthetic_size: 2000,
        batch_size: 128,
        seed: 0,
        ..synthetic_cfg(dir.path(), Arch::Mlp, 3)
    };
    let report = train::train(&cfg, false).unwrap();
    let h = &report.history;
    assert_eq!(h.len(), 3);
    let tripped = h
        .iter()
        .position(|m| m.event.is_some())
        .expect("guard should trip");
    let event = h[tripped].event.as_deref().unwrap();
    assert!(
        event.contains("rolled back") && event.contains("pgd7"),
        "{event}"
    );
    assert_eq!(h[tripped].attack.as_deref(), Some("pgd7"));
    assert!(
        h[..tripped]
            .iter()
            .all(|m| m.attack.as_deref() == Some("fgsm-rs"))
    );
    assert!(
        h[tripped..]
            .iter()
            .all(|m| m.attack.as_deref() == Some("pgd7"))
    );
}
