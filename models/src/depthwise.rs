//! Depthwise Conv1d (one filter per channel, "same" padding) as a candle custom op with its own backward.
//!
//! candle's grouped convolution has no working backward and is slow on CPU; this direct loop is both correct
//! under autograd and fast for the Conformer's kernel sizes.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::channel::f32_slice;

struct DepthwiseConv1d {
    padding: usize,
}

/// y[b, c, t] = Σ_k w[c, k] · x[b, c, t + k − pad] (zero outside).
fn forward(x: &[f32], w: &[f32], b: usize, c: usize, t: usize, k: usize, pad: usize) -> Vec<f32> {
    let mut y = vec![0f32; b * c * t];
    y.par_chunks_mut(t).enumerate().for_each(|(row, out)| {
        let ch = row % c;
        let xs = &x[row * t..(row + 1) * t];
        let ws = &w[ch * k..(ch + 1) * k];
        for (j, &wj) in ws.iter().enumerate() {
            // Output positions whose input index t_out + j - pad lies inside [0, t).
            let lo = pad.saturating_sub(j);
            let hi = (t + pad).saturating_sub(j).min(t);
            for to in lo..hi {
                out[to] += wj * xs[to + j - pad];
            }
        }
    });
    y
}

impl CustomOp2 for DepthwiseConv1d {
    fn name(&self) -> &'static str {
        "depthwise-conv1d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c, t) = l1.shape().dims3()?;
        let (c2, one, k) = l2.shape().dims3()?;
        if c2 != c || one != 1 {
            candle_core::bail!(
                "depthwise conv1d: weight {:?} does not fit input {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let x = f32_slice(s1, l1, "depthwise conv1d input")?;
        let w = f32_slice(s2, l2, "depthwise conv1d weight")?;
        let y = forward(x, w, b, c, t, k, self.padding);
        Ok((CpuStorage::F32(y), Shape::from((b, c, t))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, c, t) = x.dims3()?;
        let k = w.dim(2)?;
        let pad = self.padding;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.flatten_all()?.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        // dx[b, c, s] = Σ_j w[c, j] · g[b, c, s − j + pad]: a correlation with the reversed kernel and the
        // mirrored padding.
        let mut flipped = vec![0f32; c * k];
        for ch in 0..c {
            for j in 0..k {
                flipped[ch * k + j] = ws[ch * k + (k - 1 - j)];
            }
        }
        let dx = forward(&gs, &flipped, b, c, t, k, k - 1 - pad);
        // dw[c, j] = Σ_b Σ_t g[b, c, t] · x[b, c, t + j − pad].
        let dw: Vec<f32> = (0..c)
            .into_par_iter()
            .flat_map_iter(|ch| {
                let mut acc = vec![0f32; k];
                for bi in 0..b {
                    let row = (bi * c + ch) * t;
                    let (xr, gr) = (&xs[row..row + t], &gs[row..row + t]);
                    for (j, a) in acc.iter_mut().enumerate() {
                        let lo = pad.saturating_sub(j);
                        let hi = (t + pad).saturating_sub(j).min(t);
                        let mut s = 0f32;
                        for to in lo..hi {
                            s += gr[to] * xr[to + j - pad];
                        }
                        *a += s;
                    }
                }
                acc
            })
            .collect();
        let dx = Tensor::from_vec(dx, (b, c, t), x.device())?;
        let dw = Tensor::from_vec(dw, (c, 1, k), w.device())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Depthwise conv1d of `x` [B, C, T] with `weight` [C, 1, K] and optional `bias` [C]; output length T when
/// `padding` is (K − 1) / 2.
pub fn depthwise_conv1d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
) -> Result<Tensor> {
    let k = weight.dim(2)?;
    if 2 * padding != k - 1 {
        candle_core::bail!(
            "depthwise conv1d supports 'same' padding only: kernel {k}, padding {padding}"
        );
    }
    let y = x
        .contiguous()?
        .apply_op2(&weight.contiguous()?, DepthwiseConv1d { padding })?;
    match bias {
        Some(b) => crate::channel::add_channel_bias(&y, b, 1),
        None => Ok(y),
    }
}

/// A depthwise Conv1d layer with NeMo's parameter names (`weight` [C, 1, K], `bias` [C]).
pub struct DepthwiseConv1dLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
}

impl DepthwiseConv1dLayer {
    pub fn new(channels: usize, kernel: usize, vb: candle_nn::VarBuilder) -> Result<Self> {
        let bound = 1.0 / (kernel as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((channels, 1, kernel), "weight", init)?,
            bias: Some(vb.get_with_hints(channels, "bias", init)?),
            padding: (kernel - 1) / 2,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        depthwise_conv1d(x, &self.weight, self.bias.as_ref(), self.padding)
    }
}
