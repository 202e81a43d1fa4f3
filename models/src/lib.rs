//! candle modules of the acoustic models: log-mel front-end, Conformer encoder and CTC head.

pub mod channel;
pub mod conformer;
pub mod conv2d;
pub mod cpu_inference;
pub mod ctc;
pub mod depthwise;
pub mod frontend;
pub mod layers;
pub mod specaug;
pub mod vector_math;
