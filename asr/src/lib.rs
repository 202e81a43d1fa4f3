//! The `mezcla` command line and, as the pipeline grows, training, decoding and metrics.

pub mod cli;
