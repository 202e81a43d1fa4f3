//! CTC loss as a candle custom op (forward keeps alphas, backward computes betas and the gradient).

use crate::backend::{cuda_not_yet, Backend};
use crate::batch::CtcBatch;
use crate::cpu::ctc::{backward, forward, CtcSaved};
use crate::cpu::Elem;
use crate::error::LossError;
use crate::options::CtcOptions;
use crate::reduce::reduce;
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor,
};
use std::sync::Mutex;

const NAME: &str = "ctc_loss";

enum Saved {
    F32(CtcSaved<f32>),
    F64(CtcSaved<f64>),
}

/// The per-sample CTC loss op: input `(B, T, C)`, output `(B,)`.
struct CtcOp {
    batch: CtcBatch,
    opts: CtcOptions,
    keep: bool,
    saved: Mutex<Option<Saved>>,
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> std::result::Result<&'a [T], LossError> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(LossError::Shape {
            loss: NAME,
            msg: "input must be contiguous".into(),
        }),
    }
}

impl CtcOp {
    fn run_fwd<E: Elem>(&self, x: &[E]) -> (Vec<f64>, CtcSaved<E>) {
        let (mut nll, saved) = forward(x, &self.batch, self.opts.input, self.keep);
        if self.opts.zero_infinity {
            for v in nll.iter_mut() {
                if *v == f64::INFINITY {
                    *v = 0.0;
                }
            }
        }
        (nll, saved)
    }

    fn grad<E: Elem>(&self, x: &[E], saved: &CtcSaved<E>, weights: &[f64]) -> Vec<E> {
        let mut out = vec![E::zero(); x.len()];
        backward(
            x,
            &self.batch,
            self.opts.input,
            saved,
            weights,
            self.opts.zero_infinity,
            &mut out,
        );
        out
    }

    /// Gradient tensor of `sum_b weights_b * loss_b` w.r.t. `arg` (the op's input).
    fn grad_tensor(&self, arg: &Tensor, weights: &[f64]) -> Result<Tensor> {
        Backend::of(arg.device(), NAME)?.ensure_implemented(NAME)?;
        let (storage, layout) = arg.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(cuda_not_yet(NAME).into());
        };
        let guard = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
        let saved = guard.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{NAME}: backward called without a forward state (op built without gradient)"
            ))
        })?;
        match (cpu, saved) {
            (CpuStorage::F32(v), Saved::F32(s)) => {
                let g = self.grad(contiguous(v, layout)?, s, weights);
                Tensor::from_vec(g, arg.shape(), arg.device())
            }
            (CpuStorage::F64(v), Saved::F64(s)) => {
                let g = self.grad(contiguous(v, layout)?, s, weights);
                Tensor::from_vec(g, arg.shape(), arg.device())
            }
            _ => Err(candle_core::Error::Msg(format!(
                "{NAME}: dtype changed between forward and backward"
            ))),
        }
    }
}

impl CustomOp1 for CtcOp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let b = self.batch.b;
        let (out, saved) = match storage {
            CpuStorage::F32(v) => {
                let (nll, s) = self.run_fwd(contiguous(v, layout)?);
                (
                    CpuStorage::F32(nll.iter().map(|&v| v as f32).collect()),
                    Saved::F32(s),
                )
            }
            CpuStorage::F64(v) => {
                let (nll, s) = self.run_fwd(contiguous(v, layout)?);
                (CpuStorage::F64(nll), Saved::F64(s))
            }
            other => {
                return Err(LossError::DType {
                    loss: NAME,
                    what: "input",
                    dtype: format!("{:?}", other.dtype()),
                    expected: "f32 or f64",
                }
                .into())
            }
        };
        if self.keep {
            *self
                .saved
                .lock()
                .map_err(|_| candle_core::Error::Msg("poisoned".into()))? = Some(saved);
        }
        Ok((out, Shape::from(b)))
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        Err(cuda_not_yet(NAME).into())
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let w = grad_res.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(Some(self.grad_tensor(arg, &w)?))
    }
}

fn prepare(
    input: &Tensor,
    targets: &Tensor,
    input_lengths: &Tensor,
    target_lengths: &Tensor,
    opts: &CtcOptions,
    keep: bool,
) -> Result<(CtcOp, Tensor)> {
    Backend::of(input.device(), NAME)?.ensure_implemented(NAME)?;
    let batch = CtcBatch::from_tensors(
        input.dims(),
        targets,
        input_lengths,
        target_lengths,
        opts.blank,
    )?;
    let op = CtcOp {
        batch,
        opts: *opts,
        keep,
        saved: Mutex::new(None),
    };
    Ok((op, crate::reduce::kernel_input(input)?))
}

/// CTC loss of `input` `(B, T, C)` (logits, or log-probabilities with
/// [`crate::CtcInput::LogProbs`]), differentiable with candle's autograd.
///
/// `targets` is padded `(B, S)` or concatenated `(sum of target_lengths,)`; `input_lengths` and
/// `target_lengths` are `(B,)`; all three any integer dtype. Returns `(B,)` for
/// [`crate::Reduction::None`], else a scalar. Impossible alignments give `+inf` (NaN gradients on their
/// frames) unless `zero_infinity`, exactly as PyTorch.
pub fn ctc_loss(
    input: &Tensor,
    targets: &Tensor,
    input_lengths: &Tensor,
    target_lengths: &Tensor,
    opts: &CtcOptions,
) -> Result<Tensor> {
    let track = input.track_op();
    let (op, x) = prepare(input, targets, input_lengths, target_lengths, opts, track)?;
    let tl = op.batch.target_lengths();
    let per_sample = if track {
        x.apply_op1(op)?
    } else {
        x.apply_op1_no_bwd(&op)?
    };
    reduce(&per_sample, &tl, opts.reduction)
}

/// CTC loss and its gradient w.r.t. `input`, without building an autograd graph: returns the
/// reduced loss (for [`crate::Reduction::None`] the `(B,)` losses) and the gradient of the reduced loss
/// (for `None`, of the losses' sum). For training loops that apply the gradient themselves.
pub fn ctc_loss_and_grad(
    input: &Tensor,
    targets: &Tensor,
    input_lengths: &Tensor,
    target_lengths: &Tensor,
    opts: &CtcOptions,
) -> Result<(Tensor, Tensor)> {
    let (op, x) = prepare(input, targets, input_lengths, target_lengths, opts, true)?;
    let per_sample = x.apply_op1_no_bwd(&op)?;
    let tl = op.batch.target_lengths();
    let b = op.batch.b;
    let weights: Vec<f64> = tl.iter().map(|&l| opts.reduction.weight(l, b)).collect();
    let grad = op.grad_tensor(&x, &weights)?.to_dtype(input.dtype())?;
    let loss = reduce(&per_sample, &tl, opts.reduction)?;
    Ok((loss, grad))
}
