//! Reductions of per-sample losses, written with candle ops so that they are differentiable.

use crate::options::Reduction;
use candle_core::{DType, Result, Tensor};

/// Reduces `(B,)` per-sample losses: `none` keeps them, `sum`, `mean` (each loss divided by its
/// target length clamped to at least 1, then the batch mean) and `mean_batch` give scalars.
pub fn reduce(
    per_sample: &Tensor,
    target_lengths: &[usize],
    reduction: Reduction,
) -> Result<Tensor> {
    let b = target_lengths.len();
    match reduction {
        Reduction::None => Ok(per_sample.clone()),
        Reduction::Sum => per_sample.sum(0),
        Reduction::MeanBatch => per_sample.mean(0),
        Reduction::Mean => {
            let w: Vec<f64> = target_lengths
                .iter()
                .map(|&l| reduction.weight(l, b))
                .collect();
            let w = Tensor::from_vec(w, b, per_sample.device())?.to_dtype(per_sample.dtype())?;
            (per_sample * w)?.sum(0)
        }
    }
}

/// The tensor the kernels read: contiguous, and f16 / bf16 widened to f32 (a differentiable cast,
/// so gradients flow back in the caller's dtype; the loss itself is then f32).
pub(crate) fn kernel_input(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::F16 | DType::BF16 => t.to_dtype(DType::F32)?.contiguous(),
        _ => t.contiguous(),
    }
}
