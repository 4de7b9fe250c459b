//! LIME for the fusion model's sequences. Text: the features are the distinct words (the
//! reference's bag of words), and removing one removes every occurrence (its tokens become
//! padding, which the bag-of-words encoder skips). Bytes: the features are chunks of
//! consecutive byte positions, and removing one pads them out of the sequence the convolution
//! reads (the byte histogram stays as given, as for the gradient methods). Samples remove a
//! uniform number of features; distance: cosine to the all-ones row × 100; reference width 25.

use burn::tensor::{Tensor, TensorData};
use nalgebra::DMatrix;
use rand::rngs::StdRng;

use super::{Representation, Scored, cosine_to_ones, design_rows, remove_some, score_batches};
use crate::data::records::{BYTES_LEN, SecuritySet, TEXT_LEN, words};
use crate::explain::{ExplainError, host_floats};
use crate::model::{FusionModel, Modality};

pub struct Sequence<'a> {
    model: &'a FusionModel,
    /// The explained record (one row, every modality as given).
    record: SecuritySet,
    modality: Modality,
    names: Vec<String>,
    /// Feature membership of each sequence position `[d, length]`.
    assign: Tensor<2>,
}

impl<'a> Sequence<'a> {
    /// The distinct words of `record`'s text (`text` as written).
    pub fn words(
        model: &'a FusionModel,
        record: SecuritySet,
        text: &str,
    ) -> Result<Self, ExplainError> {
        let mut names: Vec<String> = Vec::new();
        let mut of_position = Vec::new();
        for w in words(text) {
            let f = names.iter().position(|d| *d == w).unwrap_or_else(|| {
                names.push(w);
                names.len() - 1
            });
            of_position.push(f);
        }
        Self::new(model, record, Modality::Text, names, &of_position, TEXT_LEN)
    }

    /// `record`'s bytes in chunks of `chunk` positions (the first [`BYTES_LEN`] bytes).
    pub fn bytes(
        model: &'a FusionModel,
        record: SecuritySet,
        chunk: usize,
    ) -> Result<Self, ExplainError> {
        if chunk == 0 {
            return Err(ExplainError::Invalid(
                "--byte-chunk must be at least 1".into(),
            ));
        }
        let present = host_floats(record.bytes.clone().float())?;
        let len = present.iter().take_while(|&&v| v > 0.0).count();
        let of_position: Vec<usize> = (0..len).map(|p| p / chunk).collect();
        let names = (0..len.div_ceil(chunk))
            .map(|f| format!("bytes {}-{}", f * chunk, ((f + 1) * chunk).min(len) - 1))
            .collect();
        Self::new(
            model,
            record,
            Modality::Bytes,
            names,
            &of_position,
            BYTES_LEN,
        )
    }

    fn new(
        model: &'a FusionModel,
        record: SecuritySet,
        modality: Modality,
        names: Vec<String>,
        of_position: &[usize],
        length: usize,
    ) -> Result<Self, ExplainError> {
        if record.len() != 1 {
            return Err(ExplainError::Invalid(
                "LIME explains one record at a time".into(),
            ));
        }
        let d = names.len();
        if d == 0 {
            return Err(ExplainError::Invalid(format!(
                "the record has no {} to explain: pick a record that has them",
                crate::workload::modality_name(modality)
            )));
        }
        let mut assign = vec![0f32; d * length];
        for (pos, &f) in of_position.iter().enumerate() {
            assign[f * length + pos] = 1.0;
        }
        let assign = Tensor::from_data(
            TensorData::new(assign, [d, length]),
            &record.labels.device(),
        );
        Ok(Self {
            model,
            record,
            modality,
            names,
            assign,
        })
    }
}

impl Representation for Sequence<'_> {
    fn features(&self) -> usize {
        self.names.len()
    }

    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn kernel_width(&self) -> f64 {
        25.0
    }

    fn design(&self, n: usize, rng: &mut StdRng) -> DMatrix<f64> {
        remove_some(n, self.features(), rng)
    }

    fn score(
        &self,
        z: &DMatrix<f64>,
        _rng: &mut StdRng,
        batch: usize,
    ) -> Result<Scored, ExplainError> {
        let device = self.record.labels.device();
        let (logits, classes) = score_batches(z.nrows(), batch, |start, end| {
            let b = end - start;
            let keep = design_rows(z, start, end, &device).matmul(self.assign.clone());
            let mut set = self
                .record
                .select(crate::explain::repeated_rows(1, b, &device));
            match self.modality {
                Modality::Bytes => set.bytes = (set.bytes.float() * keep).int(),
                _ => set.text = (set.text.float() * keep).int(),
            }
            self.model.forward(&set)
        })?;
        Ok(Scored {
            distance: cosine_to_ones(z).into_iter().map(|d| d * 100.0).collect(),
            logits,
            classes,
        })
    }
}
