//! The error type of the loss kernels: bad inputs are reported, never panicked on.

use thiserror::Error;

/// Everything that can go wrong when a loss is asked for.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum LossError {
    /// A tensor has the wrong rank or a dimension disagrees with another tensor.
    #[error("{loss}: shape mismatch: {msg}")]
    Shape { loss: &'static str, msg: String },
    /// A length is negative or larger than the padded dimension it indexes.
    #[error("{loss}: length out of range: {msg}")]
    Length { loss: &'static str, msg: String },
    /// A target id is outside `0..C` or equals the blank id.
    #[error("{loss}: invalid target: {msg}")]
    Target { loss: &'static str, msg: String },
    /// The blank id is outside `0..C`, or another option is out of its domain.
    #[error("{loss}: invalid option: {msg}")]
    Option { loss: &'static str, msg: String },
    /// The tensor's dtype is not supported by the kernel.
    #[error("{loss}: unsupported dtype {dtype} for {what} (expected {expected})")]
    DType {
        loss: &'static str,
        what: &'static str,
        dtype: String,
        expected: &'static str,
    },
    /// The kernel has no implementation for this device yet.
    #[error("{loss}: not yet implemented for {device}; the CUDA kernels land with the GPU issue (use a CPU tensor)")]
    Device { loss: &'static str, device: String },
}

impl From<LossError> for candle_core::Error {
    fn from(e: LossError) -> Self {
        candle_core::Error::wrap(e)
    }
}
