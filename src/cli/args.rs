//! Argument groups shared by the commands: the model, the data it runs on, the device.

use std::path::PathBuf;

use clap::Args;

use crate::artifact::{OpenOptions, Outputs};
use crate::data::{DatasetChoice, Split};
use crate::device::DeviceChoice;
use crate::model::Arch;
use crate::workload::{Shard, Source, WorkloadSpec};

/// A model file or manifest.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model file (safetensors, PyTorch layout; image or fusion model), or an ensemble
    /// manifest (.toml/.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Architecture of an image model file without Rampart metadata (saved by PyTorch).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Let ensemble members lie outside the manifest's folder.
    #[arg(long)]
    pub allow_outside: bool,
    /// Verify the model's signature (MODEL.sig, or model.sig in its folder) with this public
    /// key before loading it; an unsigned or changed model is refused.
    #[arg(long, env = "RAMPART_VERIFY_KEY")]
    pub verify_key: Option<PathBuf>,
}

impl ModelArgs {
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            arch: self.arch,
            allow_outside: self.allow_outside,
        }
    }
}

/// The examples a model runs on.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Image test set to run an image model or ensemble on.
    #[arg(long, value_enum, default_value_t = DatasetChoice::FashionMnist)]
    pub dataset: DatasetChoice,
    /// Fashion-MNIST directory (unset: $RAMPART_DATA, datasets/fashion-mnist, then
    /// /usr/share/datasets/fashion-mnist).
    #[arg(long, conflicts_with = "records")]
    pub data_dir: Option<PathBuf>,
    /// JSONL records to run a multimodal fusion model on (instead of --dataset).
    #[arg(long, conflicts_with = "dataset")]
    pub records: Option<PathBuf>,
    /// Which Fashion-MNIST split to run on: test (10,000 images) or train (60,000).
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Start at this example (0-based), e.g. past the examples a detector was calibrated on.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// At most this many examples (the first ones, or after --skip).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// Model, data and device: what `eval`, `attack`, `certify` and `predict` open.
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Compute device: auto (a GPU if wgpu finds one, else flex), flex or wgpu.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

/// The SYNTHETIC image test set the commands use with `--dataset synthetic`.
pub const SYNTHETIC_TEST: (usize, u64) = (500, 0x7e57);

impl WorkloadArgs {
    /// What to open, taking every `skip`-th example.
    pub fn spec(&self, skip: usize) -> WorkloadSpec {
        let source = match (&self.data.records, self.data.dataset) {
            (Some(r), _) => Source::Records(r.clone()),
            (None, DatasetChoice::FashionMnist) => Source::FashionMnist {
                dir: self.data.data_dir.clone(),
                split: self.data.split,
            },
            (None, DatasetChoice::Synthetic) => Source::Synthetic {
                size: SYNTHETIC_TEST.0,
                seed: SYNTHETIC_TEST.1,
            },
        };
        WorkloadSpec {
            model: self.model.model.clone(),
            open: self.model.open_options(),
            source,
            device: self.device,
            offset: self.data.offset as usize,
            skip: skip.max(1),
            limit: self.data.limit.map(|l| l as usize),
            verify_key: self.model.verify_key.clone(),
            shard: Shard::default(),
        }
    }
}

/// An output guard that knows every file of a workload as an input.
pub fn guard(files: &[PathBuf]) -> Outputs {
    let mut outputs = Outputs::new();
    outputs.inputs(files);
    outputs
}

/// Running one stripe of the examples, for a job split across processes or machines.
#[derive(Args, Debug, Clone)]
pub struct ShardArgs {
    /// This process's shard, 0-based (default: $JOB_COMPLETION_INDEX of a Kubernetes Indexed
    /// Job, or $SLURM_ARRAY_TASK_ID of a Slurm array).
    #[arg(long)]
    pub shard_index: Option<u64>,
    /// Shards the selected examples are striped into: the k-th goes to shard k mod count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub shard_count: u64,
}

impl ShardArgs {
    /// The shard: the flag, else the scheduler's variable; required when there are several.
    pub fn shard(&self) -> Result<Shard, String> {
        let count = self.shard_count as usize;
        let from_env = || {
            ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"]
                .iter()
                .find_map(|v| std::env::var(v).ok().map(|value| (*v, value)))
        };
        let index = match (self.shard_index, from_env()) {
            (Some(i), _) => i as usize,
            // One shard is the whole run, whatever the scheduler numbers this process.
            (None, _) if count == 1 => 0,
            (None, Some((var, value))) => value.trim().parse::<usize>().map_err(|_| {
                format!("${var} is {value:?}, not a shard index; set --shard-index")
            })?,
            (None, None) => {
                return Err(format!(
                    "--shard-count {count} needs --shard-index (or $JOB_COMPLETION_INDEX / $SLURM_ARRAY_TASK_ID)"
                ));
            }
        };
        if index >= count {
            return Err(format!(
                "--shard-index {index} must be below --shard-count {count}"
            ));
        }
        Ok(Shard {
            index,
            count,
            block: 1,
        })
    }
}
