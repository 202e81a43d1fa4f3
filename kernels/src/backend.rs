//! The backend seam: one set of kernel entry points, dispatched to the CPU or (later) CUDA code.

use crate::error::LossError;
use candle_core::Device;

/// Where a loss kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The rayon-parallel CPU kernels (module `cpu`).
    Cpu,
    /// CUDA kernels: not implemented yet, they land with the GPU issue.
    Cuda,
}

impl Backend {
    /// The backend for tensors on `device`; errors for devices with no kernels planned (Metal).
    pub fn of(device: &Device, loss: &'static str) -> Result<Self, LossError> {
        match device {
            Device::Cpu => Ok(Backend::Cpu),
            Device::Cuda(_) => Ok(Backend::Cuda),
            Device::Metal(_) => Err(LossError::Device {
                loss,
                device: "Metal".into(),
            }),
        }
    }

    /// `Ok(())` when the kernels for this backend exist, else the error to report.
    pub fn ensure_implemented(self, loss: &'static str) -> Result<(), LossError> {
        match self {
            Backend::Cpu => Ok(()),
            Backend::Cuda => Err(cuda_not_yet(loss)),
        }
    }
}

/// The error every CUDA entry point returns until the GPU issue lands.
pub(crate) fn cuda_not_yet(loss: &'static str) -> LossError {
    LossError::Device {
        loss,
        device: "CUDA".into(),
    }
}
