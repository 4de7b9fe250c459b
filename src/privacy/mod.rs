//! Privacy of the training data: differentially private training ([`dpsgd`]: per-example
//! clipping and Gaussian noise), its accounting ([`accountant`]: Rényi DP of the sampled
//! Gaussian mechanism, converted to (ε, δ)), and membership inference, which measures what a
//! model leaks ([`membership`]).

pub mod accountant;
pub mod dpsgd;
pub mod membership;
