//! Privacy of the training data: differentially private training's accounting
//! ([`accountant`]: Rényi DP of the sampled Gaussian mechanism, converted to (ε, δ)).

pub mod accountant;
