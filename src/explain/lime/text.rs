//! LIME for text: the features are the distinct words (the reference's bag of words); removing
//! one removes every occurrence (its tokens become padding, which the bag-of-words encoder
//! skips). Samples remove a uniform number of words; distance: cosine to the all-ones row
//! × 100; reference width 25.

use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;

use super::{Representation, Samples, cosine_to_ones, design_rows, remove_some, score_batches};
use crate::data::records::{SecuritySet, TEXT_LEN, words};
use crate::explain::ExplainError;
use crate::model::FusionModel;

pub struct Words<'a> {
    model: &'a FusionModel,
    /// The explained record (one row, every modality as given).
    record: SecuritySet,
    words: Vec<String>,
    /// Word membership of each token position `[d, TEXT_LEN]`.
    assign: Tensor<2>,
}

impl<'a> Words<'a> {
    /// `record` is one laid-out record and `text` its text as written.
    pub fn new(
        model: &'a FusionModel,
        record: SecuritySet,
        text: &str,
    ) -> Result<Self, ExplainError> {
        if record.len() != 1 {
            return Err(ExplainError::Invalid(
                "LIME explains one record at a time".into(),
            ));
        }
        let tokens = words(text);
        let mut distinct: Vec<String> = Vec::new();
        let mut assign = Vec::new();
        for (pos, w) in tokens.iter().enumerate() {
            let f = match distinct.iter().position(|d| d == w) {
                Some(f) => f,
                None => {
                    distinct.push(w.clone());
                    assign.extend(std::iter::repeat_n(0f32, TEXT_LEN));
                    distinct.len() - 1
                }
            };
            assign[f * TEXT_LEN + pos] = 1.0;
        }
        let d = distinct.len();
        if d == 0 {
            return Err(ExplainError::Invalid(
                "the record has no words to explain: pick a record with text".into(),
            ));
        }
        let assign = Tensor::from_data(
            TensorData::new(assign, [d, TEXT_LEN]),
            &record.labels.device(),
        );
        Ok(Self {
            model,
            record,
            words: distinct,
            assign,
        })
    }
}

impl Representation for Words<'_> {
    fn features(&self) -> usize {
        self.words.len()
    }

    fn names(&self) -> Vec<String> {
        self.words.clone()
    }

    fn kernel_width(&self) -> f64 {
        25.0
    }

    fn sample(&self, n: usize, rng: &mut StdRng, batch: usize) -> Result<Samples, ExplainError> {
        let z = remove_some(n, self.features(), rng);
        let device = self.record.labels.device();
        let (logits, classes) = score_batches(n, batch, |start, end| {
            let b = end - start;
            let keep = design_rows(&z, start, end, &device).matmul(self.assign.clone());
            let mut set = self
                .record
                .select(crate::explain::repeated_rows(1, b, &device));
            set.text = (set.text.float() * keep).int();
            self.model.forward(&set)
        })?;
        Ok(Samples {
            distance: cosine_to_ones(&z).into_iter().map(|d| d * 100.0).collect(),
            z,
            logits,
            classes,
        })
    }
}
