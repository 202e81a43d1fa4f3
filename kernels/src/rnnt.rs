//! RNN-T loss as a candle custom op (forward keeps the small lattice state, backward the gradient).

use crate::backend::{cuda_not_yet, Backend};
use crate::batch::RnntBatch;
use crate::cpu::rnnt::{backward, forward, RnntSample};
use crate::cpu::Elem;
use crate::error::LossError;
use crate::options::RnntOptions;
use crate::reduce::reduce;
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor,
};
use std::sync::Mutex;

const NAME: &str = "rnnt_loss";

enum Saved {
    F32(Vec<RnntSample<f32>>),
    F64(Vec<RnntSample<f64>>),
}

/// The per-sample RNN-T loss op: logits `(B, T, U + 1, C)`, output `(B,)`.
struct RnntOp {
    batch: RnntBatch,
    lambda: f64,
    clamp: Option<f64>,
    keep: bool,
    saved: Mutex<Option<Saved>>,
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> std::result::Result<&'a [T], LossError> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(LossError::Shape {
            loss: NAME,
            msg: "logits must be contiguous".into(),
        }),
    }
}

fn lock_err<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg(format!("{NAME}: state lock poisoned"))
}

impl RnntOp {
    fn run_fwd<E: Elem>(&self, x: &[E]) -> (Vec<f64>, Vec<RnntSample<E>>) {
        let saved = forward(x, &self.batch);
        let scale = 1.0 + self.lambda;
        let loss = saved.iter().map(|s| -s.log_lik * scale).collect();
        (loss, saved)
    }

    fn grad<E: Elem>(&self, x: &[E], saved: &[RnntSample<E>], weights: &[f64]) -> Vec<E> {
        let mut out = vec![E::zero(); x.len()];
        backward(
            x,
            &self.batch,
            saved,
            weights,
            self.lambda,
            self.clamp,
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
        let guard = self.saved.lock().map_err(lock_err)?;
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

impl CustomOp1 for RnntOp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, saved) = match storage {
            CpuStorage::F32(v) => {
                let (loss, s) = self.run_fwd(contiguous(v, layout)?);
                (
                    CpuStorage::F32(loss.iter().map(|&v| v as f32).collect()),
                    Saved::F32(s),
                )
            }
            CpuStorage::F64(v) => {
                let (loss, s) = self.run_fwd(contiguous(v, layout)?);
                (CpuStorage::F64(loss), Saved::F64(s))
            }
            other => {
                return Err(LossError::DType {
                    loss: NAME,
                    what: "logits",
                    dtype: format!("{:?}", other.dtype()),
                    expected: "f32 or f64",
                }
                .into())
            }
        };
        if self.keep {
            *self.saved.lock().map_err(lock_err)? = Some(saved);
        }
        Ok((out, Shape::from(self.batch.b)))
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
    logits: &Tensor,
    targets: &Tensor,
    logit_lengths: &Tensor,
    target_lengths: &Tensor,
    opts: &RnntOptions,
    keep: bool,
) -> Result<(RnntOp, Tensor)> {
    Backend::of(logits.device(), NAME)?.ensure_implemented(NAME)?;
    let lambda = opts.fastemit_lambda as f64;
    if !lambda.is_finite() || lambda < 0.0 {
        return Err(LossError::Option {
            loss: NAME,
            msg: format!("fastemit_lambda must be finite and >= 0, got {lambda}"),
        }
        .into());
    }
    let clamp = match opts.clamp {
        Some(c) if c.is_nan() => {
            return Err(LossError::Option {
                loss: NAME,
                msg: "clamp is NaN".into(),
            }
            .into())
        }
        Some(c) if c > 0.0 && c.is_finite() => Some(c as f64),
        _ => None,
    };
    let batch = RnntBatch::from_tensors(
        logits.dims(),
        targets,
        logit_lengths,
        target_lengths,
        opts.blank,
    )?;
    let op = RnntOp {
        batch,
        lambda,
        clamp,
        keep,
        saved: Mutex::new(None),
    };
    Ok((op, crate::reduce::kernel_input(logits)?))
}

/// RNN-T loss of joint-network `logits` `(B, T, U + 1, C)` with the log-softmax fused,
/// differentiable with candle's autograd.
///
/// `targets` `(B, S)` with `S >= max(target_lengths)`, `logit_lengths` (each in `1..=T`) and
/// `target_lengths` (each in `0..=U`) `(B,)`; any integer dtype. Returns `(B,)` for
/// [`crate::Reduction::None`], else a scalar.
pub fn rnnt_loss(
    logits: &Tensor,
    targets: &Tensor,
    logit_lengths: &Tensor,
    target_lengths: &Tensor,
    opts: &RnntOptions,
) -> Result<Tensor> {
    let track = logits.track_op();
    let (op, x) = prepare(logits, targets, logit_lengths, target_lengths, opts, track)?;
    let tl = op.batch.target_lengths();
    let per_sample = if track {
        x.apply_op1(op)?
    } else {
        x.apply_op1_no_bwd(&op)?
    };
    reduce(&per_sample, &tl, opts.reduction)
}

/// RNN-T loss and its gradient w.r.t. `logits`, without an autograd graph: the reduced loss (for
/// [`crate::Reduction::None`] the `(B,)` losses) and the gradient of the reduced loss (for `None`,
/// of the losses' sum). Peak extra memory: the gradient plus `O(B T U)` lattice state.
pub fn rnnt_loss_and_grad(
    logits: &Tensor,
    targets: &Tensor,
    logit_lengths: &Tensor,
    target_lengths: &Tensor,
    opts: &RnntOptions,
) -> Result<(Tensor, Tensor)> {
    let (op, x) = prepare(logits, targets, logit_lengths, target_lengths, opts, true)?;
    let per_sample = x.apply_op1_no_bwd(&op)?;
    let tl = op.batch.target_lengths();
    let b = op.batch.b;
    let weights: Vec<f64> = tl.iter().map(|&l| opts.reduction.weight(l, b)).collect();
    let grad = op.grad_tensor(&x, &weights)?.to_dtype(logits.dtype())?;
    let loss = reduce(&per_sample, &tl, opts.reduction)?;
    Ok((loss, grad))
}
