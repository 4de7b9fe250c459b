//! Privacy of the training data: differentially private training ([`dpsgd`]: per-example
//! clipping and Gaussian noise), its accounting ([`accountant`]: Rényi DP of the sampled
//! Gaussian mechanism, converted to (ε, δ)), and membership inference, which measures what a
//! model leaks ([`membership`]: the loss threshold; [`lira`]: the likelihood-ratio attack over
//! [`shadows`] trained with the target's recipe).

pub mod accountant;
pub mod dpsgd;
pub mod lira;
pub mod membership;
pub mod shadows;
