//! Data-parallel training (`replicas`): the batch split across replicas, each part's loss
//! weighted by its share, one optimiser step over all their gradients, gives the model one
//! device gives (up to the order of floating-point sums); bad counts are refused.

mod common;

use std::path::Path;

use common::{serial, tensor_bytes};
use rampart::device::DeviceChoice;
use rampart::train::config::{
    DataConfig, ImageModel, ModelConfig, Optimizer, Sgd, SyntheticData, TrainConfig,
};
use rampart::train::{self, TrainReport};

fn cfg(out: &Path, replicas: usize, model: ModelConfig) -> TrainConfig {
    TrainConfig {
        model,
        data: DataConfig::Synthetic(SyntheticData {
            synthetic_size: 600,
            ..SyntheticData::default()
        }),
        // Plain SGD: a difference in the gradients shows in the weights as it is.
        optimizer: Optimizer::Sgd(Sgd {
            lr: 0.1,
            ..Sgd::default()
        }),
        batch_size: 50,
        epochs: 1,
        seed: 3,
        device: DeviceChoice::Flex,
        replicas,
        out: out.to_path_buf(),
        ..TrainConfig::default()
    }
}

fn train(cfg: &TrainConfig) -> TrainReport {
    train::train(cfg, &[], false, &mut []).unwrap()
}

/// The largest absolute difference between the weights of two model files, and the largest
/// absolute weight.
fn gap(a: &Path, b: &Path) -> (f32, f32) {
    let floats = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (ta, tb) = (tensor_bytes(a), tensor_bytes(b));
    assert_eq!(
        ta.iter().map(|t| &t.0).collect::<Vec<_>>(),
        tb.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    let mut worst = (0.0f32, 0.0f32);
    for ((_, x), (_, y)) in ta.iter().zip(&tb) {
        for (u, v) in floats(x).iter().zip(floats(y)) {
            worst.0 = worst.0.max((u - v).abs());
            worst.1 = worst.1.max(u.abs());
        }
    }
    worst
}

#[test]
fn replicas_train_the_model_one_device_trains() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    for (name, model) in [
        ("mlp", ModelConfig::Mlp(ImageModel::default())),
        ("cnn", ModelConfig::Cnn(ImageModel::default())),
    ] {
        let one = dir.path().join(format!("{name}-1"));
        let single = train(&cfg(&one, 1, model.clone()));
        let mut last = None;
        // 3 replicas split a batch of 50 into 16, 17 and 17: unequal shares.
        for k in [2, 3] {
            let out = dir.path().join(format!("{name}-{k}"));
            let report = train(&cfg(&out, k, model.clone()));
            let (diff, scale) = gap(
                &one.join("model.safetensors"),
                &out.join("model.safetensors"),
            );
            assert!(
                diff < 1e-4 * scale.max(1.0),
                "{name}, {k} replicas: weights differ by {diff} (largest weight {scale})"
            );
            let loss = |r: &TrainReport| r.history[0].train_loss;
            assert!(
                (loss(&report) - loss(&single)).abs() < 1e-4,
                "{name}, {k} replicas: loss {} against {}",
                loss(&report),
                loss(&single)
            );
            last = Some(diff);
        }
        // Training moved the weights: the comparison is not between untouched models.
        let fresh = dir.path().join(format!("{name}-fresh"));
        train(&TrainConfig {
            optimizer: Optimizer::Sgd(Sgd {
                lr: 1e-9,
                ..Sgd::default()
            }),
            ..cfg(&fresh, 1, model.clone())
        });
        let (moved, _) = gap(
            &one.join("model.safetensors"),
            &fresh.join("model.safetensors"),
        );
        assert!(
            moved > 100.0 * last.unwrap().max(1e-7),
            "{name}: moved only {moved}"
        );
    }
}

#[test]
fn replica_counts_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let model = ModelConfig::Mlp(ImageModel::default());
    for (k, says) in [
        (0, "replicas must be between 1 and 16"),
        (17, "between 1 and 16"),
    ] {
        let e = train::train(&cfg(dir.path(), k, model.clone()), &[], false, &mut []).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
    let small = TrainConfig {
        batch_size: 4,
        ..cfg(dir.path(), 8, model)
    };
    let e = train::train(&small, &[], false, &mut []).unwrap_err();
    assert!(e.to_string().contains("more than batch_size 4"), "{e}");
}
