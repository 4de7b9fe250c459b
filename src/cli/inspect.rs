//! `rampart inspect`: what a model file or manifest holds (every member's digest checked).

use clap::Args;

use super::args::ModelArgs;
use super::{CliResult, emit};
use crate::artifact::{self, inspect::Inspection};

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> CliResult {
    let device = burn::tensor::Device::flex();
    let opened = artifact::open_verified(
        &args.model.model,
        args.model.open_options(),
        args.model.verify_key.as_deref(),
        &device,
    )?;
    emit(&Inspection::of(&opened), args.json)
}
