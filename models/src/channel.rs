//! Per-channel bias and scale (`x + b[c]`, `x · w[c]`) and a Linear layer, with backward passes that avoid candle's
//! slow reductions over leading dimensions.
//!
//! candle's gradient of a broadcast sums over the broadcast dimensions with a per-element index computation,
//! single-threaded, when those are not the trailing ones: a bias added to [B, T, C] (or a weight broadcast over
//! the batch of a matmul) costs more in backward than the matmul itself. Here the channel sums are plain
//! row loops over the contiguous layout, split across threads.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// (product of the dimensions before `dim`, size of `dim`, product of the dimensions after it).
fn split(shape: &Shape, dim: usize) -> Result<(usize, usize, usize)> {
    let dims = shape.dims();
    if dim >= dims.len() {
        candle_core::bail!("channel dimension {dim} out of range for shape {shape:?}");
    }
    Ok((
        dims[..dim].iter().product(),
        dims[dim],
        dims[dim + 1..].iter().product(),
    ))
}

/// The f32 values of a contiguous CPU tensor (custom ops' inputs); `what` names it in errors.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what}: only f32 tensors"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: the input must be contiguous"),
    }
}

/// Σ over everything but the channel of `f(a, b)` for two tensors laid out [pre, C, post] (`b` absent: `a` alone).
fn channel_reduce(a: &[f32], b: Option<&[f32]>, pre: usize, c: usize, post: usize) -> Vec<f32> {
    let row = c * post;
    if row == 0 || pre == 0 {
        return vec![0.0; c];
    }
    let rows_per_task = pre.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
    let block = row * rows_per_task;
    let partial = |(i, xa): (usize, &[f32])| {
        let mut acc = vec![0f32; c];
        let xb = b.map(|b| &b[i * block..i * block + xa.len()]);
        for (r, ra) in xa.chunks_exact(row).enumerate() {
            let rb = xb.map(|xb| &xb[r * row..(r + 1) * row]);
            match (rb, post) {
                (None, 1) => acc.iter_mut().zip(ra).for_each(|(s, v)| *s += v),
                (Some(rb), 1) => acc
                    .iter_mut()
                    .zip(ra.iter().zip(rb))
                    .for_each(|(s, (u, v))| *s += u * v),
                (None, _) => acc
                    .iter_mut()
                    .zip(ra.chunks_exact(post))
                    .for_each(|(s, u)| *s += u.iter().sum::<f32>()),
                (Some(rb), _) => acc
                    .iter_mut()
                    .zip(ra.chunks_exact(post).zip(rb.chunks_exact(post)))
                    .for_each(|(s, (u, v))| *s += u.iter().zip(v).map(|(p, q)| p * q).sum::<f32>()),
            }
        }
        acc
    };
    // Partial sums per block, added in block order: the same result whatever the thread scheduling.
    let partials: Vec<Vec<f32>> = a.par_chunks(block).enumerate().map(partial).collect();
    let mut total = vec![0f32; c];
    for p in partials {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

/// `x` [pre, C, post] combined with `v[c]` element by element.
fn channel_apply(
    x: &[f32],
    v: &[f32],
    post: usize,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let c = v.len();
    let mut out = x.to_vec();
    if c * post == 0 {
        return out;
    }
    out.par_chunks_mut(c * post).for_each(|row| {
        if post == 1 {
            row.iter_mut().zip(v).for_each(|(y, &b)| *y = f(*y, b));
        } else {
            for (seg, &b) in row.chunks_exact_mut(post).zip(v) {
                seg.iter_mut().for_each(|y| *y = f(*y, b));
            }
        }
    });
    out
}

/// Σ over everything but `dim`, as a [C] tensor; backward broadcasts the gradient back.
struct ChannelSum {
    dim: usize,
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (pre, c, post) = split(l.shape(), self.dim)?;
        let x = f32_slice(s, l, self.name())?;
        Ok((
            CpuStorage::F32(channel_reduce(x, None, pre, c, post)),
            Shape::from(c),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (pre, c, post) = split(arg.shape(), self.dim)?;
        let g = grad
            .reshape((1, c, 1))?
            .broadcast_as((pre, c, post))?
            .contiguous()?
            .reshape(arg.shape())?;
        Ok(Some(g))
    }
}

/// Σ over everything but `dim` of `a · b`, as a [C] tensor (a gradient only: no backward of its own).
struct ChannelDot {
    dim: usize,
}

impl CustomOp2 for ChannelDot {
    fn name(&self) -> &'static str {
        "channel-dot"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("channel-dot: shapes {:?} and {:?}", l1.shape(), l2.shape());
        }
        let (pre, c, post) = split(l1.shape(), self.dim)?;
        let a = f32_slice(s1, l1, self.name())?;
        let b = f32_slice(s2, l2, self.name())?;
        Ok((
            CpuStorage::F32(channel_reduce(a, Some(b), pre, c, post)),
            Shape::from(c),
        ))
    }
}

#[derive(Clone, Copy)]
enum Combine {
    Add,
    Mul,
}

/// `x` with `v[c]` added to (or multiplied into) channel `c` of dimension `dim`.
struct ChannelOp {
    dim: usize,
    combine: Combine,
}

impl CustomOp2 for ChannelOp {
    fn name(&self) -> &'static str {
        match self.combine {
            Combine::Add => "channel-add",
            Combine::Mul => "channel-mul",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, post) = split(l1.shape(), self.dim)?;
        if l2.shape().dims() != [c] {
            candle_core::bail!(
                "{}: a [{c}] vector is needed for {:?} at dimension {}, got {:?}",
                self.name(),
                l1.shape(),
                self.dim,
                l2.shape()
            );
        }
        let x = f32_slice(s1, l1, self.name())?;
        let v = f32_slice(s2, l2, self.name())?;
        let out = match self.combine {
            Combine::Add => channel_apply(x, v, post, |a, b| a + b),
            Combine::Mul => channel_apply(x, v, post, |a, b| a * b),
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        match self.combine {
            Combine::Add => {
                let gv = grad.apply_op1_no_bwd(&ChannelSum { dim: self.dim })?;
                Ok((Some(grad), Some(gv)))
            }
            Combine::Mul => {
                let gx = grad.apply_op2_no_bwd(
                    &v.detach(),
                    &ChannelOp {
                        dim: self.dim,
                        combine: Combine::Mul,
                    },
                )?;
                let gv = grad.apply_op2_no_bwd(&x.detach(), &ChannelDot { dim: self.dim })?;
                Ok((Some(gx), Some(gv)))
            }
        }
    }
}

/// The custom op pays off only for its backward: without a gradient to compute (inference), and off the CPU
/// or f32, candle's broadcast op is used.
fn fast_path(x: &Tensor, v: &Tensor) -> bool {
    (x.track_op() || v.track_op())
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && v.dtype() == DType::F32
}

fn channel_op(x: &Tensor, v: &Tensor, dim: usize, combine: Combine) -> Result<Tensor> {
    if !fast_path(x, v) {
        let mut shape = vec![1; x.rank()];
        shape[dim] = v.elem_count();
        let v = v.reshape(shape)?;
        return match combine {
            Combine::Add => x.broadcast_add(&v),
            Combine::Mul => x.broadcast_mul(&v),
        };
    }
    x.contiguous()?
        .apply_op2(&v.contiguous()?, ChannelOp { dim, combine })
}

/// `x + bias[c]` along dimension `dim` (`bias` has `x.dim(dim)` elements).
pub fn add_channel_bias(x: &Tensor, bias: &Tensor, dim: usize) -> Result<Tensor> {
    channel_op(x, bias, dim, Combine::Add)
}

/// `x · scale[c]` along dimension `dim` (`scale` has `x.dim(dim)` elements).
pub fn mul_channel_scale(x: &Tensor, scale: &Tensor, dim: usize) -> Result<Tensor> {
    channel_op(x, scale, dim, Combine::Mul)
}

/// Σ of `x` over every dimension but `dim`, as a [x.dim(dim)] tensor.
pub fn channel_sum(x: &Tensor, dim: usize) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        let mut keep = x.clone();
        for d in (0..x.rank()).rev() {
            if d != dim {
                keep = keep.sum(d)?;
            }
        }
        return Ok(keep);
    }
    x.contiguous()?.apply_op1(ChannelSum { dim })
}

/// PyTorch's nn.Linear (`weight` [out, in], optional `bias` [out]) over the last dimension, as one 2-D matmul of
/// all leading positions, so that the weight's gradient is one matmul too.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `bias`: whether the layer has one. Initial values are PyTorch's bounds (±1/sqrt(in)).
    pub fn new(cin: usize, cout: usize, bias: bool, vb: candle_nn::VarBuilder) -> Result<Self> {
        let bound = 1.0 / (cin as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((cout, cin), "weight", init)?,
            bias: if bias {
                Some(vb.get_with_hints(cout, "bias", init)?)
            } else {
                None
            },
        })
    }

    /// `[..., in]` → `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let cin = *dims.last().unwrap_or(&0);
        let (cout, _) = self.weight.dims2()?;
        let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
        let y = x
            .contiguous()?
            .reshape((rows, cin))?
            .matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => add_channel_bias(&y, b, 1)?,
            None => y,
        };
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = cout;
        }
        y.reshape(out)
    }
}

impl candle_core::Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Linear::forward(self, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Values and gradients of the channel ops equal those of candle's broadcast ops, for every channel
    /// position (first, middle, last dimension) and a loss that weights each output differently.
    #[test]
    fn channel_ops_match_candles_broadcast_ops() {
        for (shape, dim) in [
            (vec![3usize, 5, 7], 0usize),
            (vec![3, 5, 7], 1),
            (vec![3, 5, 7], 2),
            (vec![2, 4, 6, 8], 1),
            (vec![64, 33], 1),
        ] {
            let c = shape[dim];
            let mut vshape = vec![1; shape.len()];
            vshape[dim] = c;
            let weights = randn(&shape, 9);
            for combine in [Combine::Add, Combine::Mul] {
                let x = Var::from_tensor(&randn(&shape, 1)).unwrap();
                let v = Var::from_tensor(&randn(&[c], 2)).unwrap();
                let ours = match combine {
                    Combine::Add => add_channel_bias(&x, &v, dim).unwrap(),
                    Combine::Mul => mul_channel_scale(&x, &v, dim).unwrap(),
                };
                let vb = v.reshape(vshape.clone()).unwrap();
                let theirs = match combine {
                    Combine::Add => x.broadcast_add(&vb).unwrap(),
                    Combine::Mul => x.broadcast_mul(&vb).unwrap(),
                };
                assert!(max_diff(&ours, &theirs) < 1e-6);
                let g1 = (&ours * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let g2 = (&theirs * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for var in [x.as_tensor(), v.as_tensor()] {
                    let (a, b) = (g1.get(var).unwrap(), g2.get(var).unwrap());
                    assert_eq!(a.dims(), b.dims());
                    assert!(
                        max_diff(a, b) < 1e-4,
                        "{shape:?} dim {dim}: {}",
                        max_diff(a, b)
                    );
                }
            }
            let x = Var::from_tensor(&randn(&shape, 3)).unwrap();
            let s = channel_sum(&x, dim).unwrap();
            let mut expected = x.as_tensor().clone();
            for d in (0..shape.len()).rev() {
                if d != dim {
                    expected = expected.sum(d).unwrap();
                }
            }
            assert!(max_diff(&s, &expected) < 1e-4);
            let w = randn(&[c], 4);
            let g = (&s * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let expected = w
                .reshape(vshape.clone())
                .unwrap()
                .broadcast_as(shape.as_slice())
                .unwrap();
            assert!(max_diff(g.get(&x).unwrap(), &expected) < 1e-6);
        }
    }

    /// The sums are split across threads but added in a fixed order: bit-identical from run to run (a
    /// finite-difference gradient check cannot tell rounding noise from a wrong gradient otherwise).
    #[test]
    fn channel_sums_are_the_same_on_every_run() {
        let x = randn(&[64, 48, 300], 11);
        let first: Vec<f32> = channel_sum(&x, 1).unwrap().to_vec1().unwrap();
        for _ in 0..20 {
            let again: Vec<f32> = channel_sum(&x, 1).unwrap().to_vec1().unwrap();
            assert_eq!(again, first);
        }
    }

    #[test]
    fn linear_matches_candle_nn_linear_with_gradients() {
        let x = Var::from_tensor(&randn(&[2, 5, 7], 1)).unwrap();
        let w = Var::from_tensor(&randn(&[3, 7], 2)).unwrap();
        let b = Var::from_tensor(&randn(&[3], 3)).unwrap();
        let ours = Linear {
            weight: w.as_tensor().clone(),
            bias: Some(b.as_tensor().clone()),
        };
        let theirs = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let y1 = ours.forward(&x).unwrap();
        let y2 = candle_core::Module::forward(&theirs, x.as_tensor()).unwrap();
        assert_eq!(y1.dims(), &[2, 5, 3]);
        assert!(max_diff(&y1, &y2) < 1e-5);
        let weights = randn(&[2, 5, 3], 4);
        let g1 = (&y1 * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&y2 * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for var in [x.as_tensor(), w.as_tensor(), b.as_tensor()] {
            assert!(max_diff(g1.get(var).unwrap(), g2.get(var).unwrap()) < 1e-4);
        }
    }
}
