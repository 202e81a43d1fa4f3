//! The `mezcla` command line, model folders, decoding, training and metrics.

pub mod cli;
pub mod dataset;
pub mod decode;
pub mod default_model;
pub mod evaluate;
pub mod lm;
pub mod logprobs;
pub mod metrics;
pub mod model;
pub mod nemo;
pub mod output;
pub mod train;
pub mod weights;
