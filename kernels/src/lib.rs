//! Numeric kernels: CTC and RNN-T losses with their gradients as candle custom ops (CPU now, CUDA
//! behind the same entry points with the GPU issue), and the f32 GEMM of the CPU inference path.
//!
//! The training loop calls [`ctc_loss`] / [`rnnt_loss`] (differentiable: `loss.backward()` flows
//! into the logits) or [`ctc_loss_and_grad`] / [`rnnt_loss_and_grad`] (loss and gradient at once,
//! no graph). Both are exact log-space forward-backward implementations with the log-softmax
//! fused, checked against PyTorch's `ctc_loss` and torchaudio's `rnnt_loss` in `tests/`.

mod backend;
mod batch;
mod cpu;
mod ctc;
mod error;
mod options;
mod reduce;
mod rnnt;
pub mod sgemm;

pub use backend::Backend;
pub use ctc::{ctc_loss, ctc_loss_and_grad};
pub use error::LossError;
pub use options::{CtcInput, CtcOptions, Reduction, RnntOptions};
pub use reduce::reduce;
pub use rnnt::{rnnt_loss, rnnt_loss_and_grad};
