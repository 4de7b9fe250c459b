//! Privacy of the training data: differentially private training ([`dpsgd`]: per-example
//! clipping and Gaussian noise) and its accounting ([`accountant`]: Rényi DP of the sampled
//! Gaussian mechanism, converted to (ε, δ)).

pub mod accountant;
pub mod dpsgd;
