//! candle modules of the acoustic models: log-mel front-end, Conformer encoder, CTC and RNN-T heads.

pub mod channel;
pub mod conformer;
pub mod conv2d;
pub mod cpu_inference;
pub mod ctc;
pub mod depthwise;
pub mod frontend;
pub mod layers;
pub mod specaug;
pub mod transducer;
pub mod vector_math;
