//! `rampart card`: a security model card from recorded runs (see [`crate::card`]).

use std::path::PathBuf;

use clap::Args;

use super::args::ModelArgs;
use super::{CliError, CliResult, emit};
use crate::artifact::files::{self, Outputs};
use crate::card::{self, Card, evidence};
use crate::signing;
use crate::signing::keys::PrivateKey;

#[derive(Args, Debug)]
pub struct CardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// `--json` reports of `rampart eval`, `evaluate`, `certify` or `detect evaluate` on this
    /// model (comma-separated or repeated); each figure of the card comes from one.
    #[arg(long, value_delimiter = ',')]
    pub evaluation: Vec<PathBuf>,
    /// What the model is for, in the owner's words.
    #[arg(long)]
    pub intended_use: Option<String>,
    /// The card to write (Markdown with Hugging Face front matter).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the card's content as JSON here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Sign the card with this private key (writes OUT.sig).
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
}

/// What `card` prints.
#[derive(Debug, serde::Serialize)]
struct Written {
    card: PathBuf,
    json: Option<PathBuf>,
    signature: Option<PathBuf>,
    runs: usize,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "card from {} runs: {}", self.runs, self.card.display())?;
        if let Some(j) = &self.json {
            writeln!(f, "as JSON: {}", j.display())?;
        }
        if let Some(s) = &self.signature {
            writeln!(f, "signed: {}", s.display())?;
        }
        Ok(())
    }
}

pub fn run(args: CardArgs) -> CliResult {
    let device = burn::tensor::Device::flex();
    let opened = crate::artifact::open_verified(
        &args.model.model,
        args.model.open_options(),
        args.model.verify_key.as_deref(),
        &device,
    )?;
    let mut outputs = Outputs::new();
    outputs.inputs(&opened.files);
    outputs.inputs(&args.evaluation);
    outputs.output(&args.out, "--out", files::OutputKind::Card)?;
    if let Some(j) = &args.json_out {
        outputs.output(j, "--json-out", files::OutputKind::Card)?;
    }
    let sig = args.sign_key.as_ref().map(|_| signing::beside(&args.out));
    if let Some(sig) = &sig {
        outputs.output(sig, "the card's signature", files::OutputKind::Signature)?;
    }
    let runs = args
        .evaluation
        .iter()
        .map(|f| evidence::read(f, &opened.sha256))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let status = card::signature_status(&args.model.model, args.model.verify_key.as_deref());
    let card = Card::build(&opened, status, args.intended_use.clone(), runs);
    files::write_atomic(&args.out, card::render::markdown(&card).as_bytes())?;
    if let Some(j) = &args.json_out {
        let text = serde_json::to_string_pretty(&card).expect("card serialises");
        files::write_atomic(j, text.as_bytes())?;
    }
    let signature = match (&args.sign_key, sig) {
        (Some(k), Some(sig)) => {
            let key = PrivateKey::load(k)?;
            signing::sign(&args.out, &key, &sig, &[])?;
            Some(sig)
        }
        _ => None,
    };
    emit(
        &Written {
            card: args.out.clone(),
            json: args.json_out.clone(),
            signature,
            runs: card.runs.len(),
        },
        false,
    )
}
