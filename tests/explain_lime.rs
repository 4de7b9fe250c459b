//! LIME: it recovers a linear model's weights on tabular features (sign and rank), the one
//! patch an image model reads, and the one informative word of a text rule learnt by a fusion
//! model.

mod common;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use common::Linear;
use rampart::artifact::{self, AnyModel, OpenOptions};
use rampart::classifier::{Classifier, Domain};
use rampart::data::records::{self, Record};
use rampart::explain::lime::{Lime, Output, Patches, Sequence, Tabular};
use rampart::model::fusion::Modality;
use rampart::train::config::{
    DataConfig, FusionModel, ModelConfig, Optimizer, RecordsData, TrainConfig,
};

/// A small deterministic generator (the tests' data must not depend on the library's).
fn lcg(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

fn ranks(v: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[b].abs().total_cmp(&v[a].abs()));
    order
}

#[test]
fn lime_recovers_a_linear_models_weights_on_tabular_features() {
    let d = Device::flex();
    let w = [3.0f32, -2.0, 1.2, -0.6, 0.3, -4.0];
    // Class 1's logit is w · x, class 0's is 0.
    let weights: Vec<f32> = w.iter().flat_map(|&wi| [0.0, wi * 0.5]).collect();
    let model = Linear::new(weights, vec![0.0, 0.0], &d);
    let mut state = 7;
    let reference: Vec<f32> = (0..600 * 6).map(|_| lcg(&mut state) as f32).collect();
    let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32; 6], [1, 6]), &d);
    let names: Vec<String> = (0..6).map(|j| format!("f{j}")).collect();
    let rep = Tabular::new(&model, x, reference.clone(), names).unwrap();
    for output in [Output::Logit, Output::Probability] {
        let lime = Lime {
            samples: 2000,
            output,
            seed: 3,
            ..Lime::default()
        };
        let e = lime.explain(&rep, 1).unwrap();
        // A feature's surrogate weight is its effect when kept rather than drawn from the
        // reference, about w_j · (1 − mean_j) with every mean near 0.5 (the kernel favours
        // draws near x, which shrinks it): the sign and order of w.
        assert_eq!(
            ranks(&e.weights),
            vec![5, 0, 1, 2, 3, 4],
            "{output:?}: {e:?}"
        );
        for (got, want) in e.weights.iter().zip(w) {
            assert_eq!(got.signum(), want.signum() as f64, "{output:?}: {e:?}");
        }
        assert!(
            (e.local_prediction - e.model_prediction).abs() < 0.25,
            "{e:?}"
        );
    }
    // KernelSHAP on the same features: the same signs and order, and its values add up to
    // the model's output at x less its mean with every feature drawn from the reference.
    let shap = Lime {
        samples: 3000,
        output: Output::Logit,
        seed: 4,
        ..Lime::default()
    }
    .kernel_shap();
    let e = shap.explain(&rep, 1).unwrap();
    assert_eq!(ranks(&e.weights), vec![5, 0, 1, 2, 3, 4], "{e:?}");
    // Unlike LIME's, its weights are the interventional Shapley values of the linear model,
    // 0.5 · w_j · (x_j − mean_j), up to sampling noise.
    for (j, (got, want)) in e.weights.iter().zip(w).enumerate() {
        let mean: f64 = reference
            .iter()
            .skip(j)
            .step_by(6)
            .map(|&v| v as f64)
            .sum::<f64>()
            / 600.0;
        let expected = 0.5 * want as f64 * (1.0 - mean);
        assert!(
            (got - expected).abs() < 0.1 * expected.abs() + 0.03,
            "{j}: {e:?}"
        );
    }
    // Top-k keeps the k largest effects (forward selection for k ≤ 6).
    let lime = Lime {
        samples: 2000,
        top_k: Some(2),
        output: Output::Logit,
        ..Lime::default()
    };
    let e = lime.explain(&rep, 1).unwrap();
    let used: Vec<usize> = (0..6).filter(|&j| e.weights[j] != 0.0).collect();
    assert_eq!(used, vec![0, 5], "{e:?}");
    // Errors name the problem.
    let few = Lime {
        samples: 1,
        ..Lime::default()
    };
    assert!(
        few.explain(&rep, 1)
            .unwrap_err()
            .to_string()
            .contains("--samples")
    );
    assert!(
        lime.explain(&rep, 2)
            .unwrap_err()
            .to_string()
            .contains("--target 2")
    );
}

/// Class 1's logit is 10 × Σ s ⊙ x over one 4×4 patch (rows 8-11, columns 12-15), s a ±1
/// checkerboard: a checkerboard image there scores 80, its mean-filled patch 0.
struct OnePatch {
    s: Tensor<2>,
}

impl Classifier<4> for OnePatch {
    type Input = Tensor<4>;

    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let n = x.dims()[0];
        let v = (x.reshape([n, 784]) * self.s.clone()).sum_dim(1) * 10.0;
        Tensor::cat(vec![v.zeros_like(), v], 1)
    }

    fn num_classes(&self) -> usize {
        2
    }

    fn domain(&self) -> Domain {
        Domain::pixels()
    }
}

#[test]
fn lime_finds_the_one_patch_an_image_model_reads() {
    let d = Device::flex();
    let mut s = vec![0f32; 784];
    let mut x = vec![0.3f32; 784];
    for i in 8..12 {
        for j in 12..16 {
            let plus = (i + j) % 2 == 0;
            s[i * 28 + j] = if plus { 1.0 } else { -1.0 };
            x[i * 28 + j] = if plus { 1.0 } else { 0.0 };
        }
    }
    let model = OnePatch {
        s: Tensor::from_data(TensorData::new(s, [1, 784]), &d),
    };
    let x = Tensor::<4>::from_data(TensorData::new(x, [1, 1, 28, 28]), &d);
    let rep = Patches::new(&model, x, 4).unwrap();
    let lime = Lime {
        samples: 500,
        output: Output::Logit,
        batch: 64,
        ..Lime::default()
    };
    let e = lime.explain(&rep, 1).unwrap();
    let patch = 2 * 7 + 3;
    assert_eq!(ranks(&e.weights)[0], patch, "{e:?}");
    assert_eq!(e.names[patch], "rows 8-11 cols 12-15");
    assert!((e.weights[patch] - 80.0).abs() < 2.0, "{e:?}");
    let others = e.weights.iter().enumerate().filter(|(f, _)| *f != patch);
    assert!(
        others.map(|(_, v)| v.abs()).fold(0.0, f64::max) < 1.0,
        "{e:?}"
    );
    assert!(e.r2 > 0.99, "{e:?}");
    assert!(Patches::new(&model, Tensor::zeros([1, 1, 28, 28], &d), 0).is_err());
    // KernelSHAP gives the patch its whole effect as its Shapley value, and the values add up
    // to f(x) − f(everything hidden) (efficiency).
    let shap = Lime {
        samples: 500,
        output: Output::Logit,
        batch: 64,
        ..Lime::default()
    }
    .kernel_shap();
    let e = shap.explain(&rep, 1).unwrap();
    assert_eq!(ranks(&e.weights)[0], patch, "{e:?}");
    assert!((e.weights[patch] - 80.0).abs() < 1e-3, "{e:?}");
    let total: f64 = e.weights.iter().sum();
    assert!(
        (total - (e.model_prediction - e.intercept)).abs() < 1e-3,
        "{e:?}"
    );
    // The intercept is the model with every patch at its mean: the checkerboard's mean is
    // 0.5 and the checkerboard weights cancel, so 0.
    assert!(e.intercept.abs() < 1e-3, "{e:?}");
    // Too few coalitions for the features is refused, naming the flag.
    let few = Lime {
        samples: 10,
        ..shap
    };
    let err = few.explain(&rep, 1).unwrap_err().to_string();
    assert!(err.contains("--samples 10") && err.contains("51"), "{err}");
}

const FILLER: [&str; 16] = [
    "meeting", "agenda", "report", "lunch", "team", "project", "notes", "draft", "the", "please",
    "attached", "see", "today", "thanks", "about", "update",
];

/// Texts of eight filler words; half also say "invoice", and only they are class 1.
fn rule_records(n: usize, seed: u64) -> Vec<Record> {
    let mut state = seed;
    (0..n)
        .map(|i| {
            let mut words: Vec<&str> = (0..8)
                .map(|_| FILLER[(lcg(&mut state) * 16.0) as usize])
                .collect();
            let label = i % 2;
            if label == 1 {
                let at = (lcg(&mut state) * 8.0) as usize;
                words.insert(at, "invoice");
            }
            Record {
                text: Some(words.join(" ")),
                bytes_b64: None,
                network: None,
                label,
                synthetic: true,
            }
        })
        .collect()
}

#[test]
fn lime_finds_the_informative_word_of_a_text_rule() {
    let _guard = common::serial();
    let dir = tempfile::tempdir().unwrap();
    records::write_jsonl(&dir.path().join("train.jsonl"), &rule_records(800, 1)).unwrap();
    let test = rule_records(20, 2);
    records::write_jsonl(&dir.path().join("test.jsonl"), &test).unwrap();
    let cfg = TrainConfig {
        model: ModelConfig::Fusion(FusionModel {
            modalities: vec![Modality::Text],
            dim: 16,
            ..FusionModel::default()
        }),
        data: DataConfig::Records(RecordsData {
            train_records: dir.path().join("train.jsonl"),
            test_records: dir.path().join("test.jsonl"),
            ..RecordsData::default()
        }),
        optimizer: Optimizer::Adam(rampart::train::config::Adam {
            lr: 1e-2,
            ..Default::default()
        }),
        epochs: 4,
        batch_size: 64,
        device: rampart::device::DeviceChoice::Flex,
        out: dir.path().join("run"),
        ..TrainConfig::default()
    };
    let report = rampart::train::train(&cfg, &[], false, &mut []).unwrap();
    assert!(report.history.last().unwrap().eval_accuracy > 0.95);
    let d = Device::flex();
    let opened = artifact::open(&report.model_path, OpenOptions::default(), &d).unwrap();
    let AnyModel::Fusion { net, spec, .. } = opened.model else {
        panic!("not a fusion model");
    };
    let net = net.valid();
    let record = test.iter().find(|r| r.label == 1).unwrap();
    let set = records::to_set(std::slice::from_ref(record), &spec.schema(), "one", &d).unwrap();
    let rep = Sequence::words(&net, set, record.text.as_deref().unwrap()).unwrap();
    let lime = Lime {
        samples: 1000,
        seed: 5,
        ..Lime::default()
    };
    let e = lime.explain(&rep, 1).unwrap();
    let top = ranks(&e.weights)[0];
    assert_eq!(e.names[top], "invoice", "{e:?}");
    assert!(e.weights[top] > 0.0, "{e:?}");
    // Every other word matters far less.
    let second = e.weights[ranks(&e.weights)[1]].abs();
    assert!(e.weights[top] > 3.0 * second, "{e:?}");
}
