//! Conv2d as im2col (a candle custom op with its col2im backward) and one matmul, for the subsampling stack.
//!
//! candle's own conv2d backward gives wrongly shaped gradients for strided convolutions whose input size is
//! not a multiple of the stride, and its grouped convolution has no backward; this path has neither problem.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

#[derive(Debug, Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(c: usize, h: usize, w: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        if h + 2 * padding < k || w + 2 * padding < k {
            candle_core::bail!("conv2d: input {h}x{w} is smaller than the {k}x{k} kernel");
        }
        Ok(Self {
            c,
            h,
            w,
            k,
            stride,
            padding,
            ho: (h + 2 * padding - k) / stride + 1,
            wo: (w + 2 * padding - k) / stride + 1,
        })
    }

    /// Input coordinates of output (oy, ox) and kernel tap (ky, kx), if inside the image.
    #[inline]
    fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let y = (oy * self.stride + ky).checked_sub(self.padding)?;
        let x = (ox * self.stride + kx).checked_sub(self.padding)?;
        (y < self.h && x < self.w).then_some((y, x))
    }
}

/// x [B, C, H, W] → columns [B, Ho·Wo, C·k·k] (column index c·k·k + ky·k + kx, as a conv weight flattens).
struct Im2Col {
    k: usize,
    stride: usize,
    padding: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let g = Geometry::new(c, h, w, self.k, self.stride, self.padding)?;
        let x = match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, e))) => &v[a..e],
            _ => candle_core::bail!("im2col needs a contiguous f32 input"),
        };
        let cols = c * g.k * g.k;
        let mut out = vec![0f32; b * g.ho * g.wo * cols];
        out.par_chunks_mut(cols).enumerate().for_each(|(row, dst)| {
            let bi = row / (g.ho * g.wo);
            let (oy, ox) = ((row / g.wo) % g.ho, row % g.wo);
            for ci in 0..g.c {
                let img = &x[(bi * g.c + ci) * g.h * g.w..(bi * g.c + ci + 1) * g.h * g.w];
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        if let Some((y, xx)) = g.source(oy, ox, ky, kx) {
                            dst[ci * g.k * g.k + ky * g.k + kx] = img[y * g.w + xx];
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, g.ho * g.wo, cols))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, c, h, w) = arg.dims4()?;
        let g = Geometry::new(c, h, w, self.k, self.stride, self.padding)?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let cols = c * g.k * g.k;
        let mut dx = vec![0f32; b * c * h * w];
        // Each (batch, channel) image gathers the column entries that read from it.
        dx.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(plane, img)| {
                let (bi, ci) = (plane / c, plane % c);
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let row = &gs[((bi * g.ho + oy) * g.wo + ox) * cols..][..cols];
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                if let Some((y, xx)) = g.source(oy, ox, ky, kx) {
                                    img[y * w + xx] += row[ci * g.k * g.k + ky * g.k + kx];
                                }
                            }
                        }
                    }
                }
            });
        Ok(Some(Tensor::from_vec(dx, (b, c, h, w), arg.device())?))
    }
}

/// Conv2d of `x` [B, C, H, W] with a square `weight` [Cout, C/groups, k, k]; `groups` is 1 or C (depthwise).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    let (cout, cin_g, k, k2) = weight.dims4()?;
    if k != k2 {
        candle_core::bail!("conv2d: only square kernels, got {k}x{k2}");
    }
    let cols = x.contiguous()?.apply_op1(Im2Col { k, stride, padding })?; // [B, P, C·k·k]
    let p = cols.dim(1)?;
    let (h, w) = (x.dim(2)?, x.dim(3)?);
    let ho = (h + 2 * padding - k) / stride + 1;
    let wo = (w + 2 * padding - k) / stride + 1;
    let y = if groups == 1 {
        if cin_g != c {
            candle_core::bail!("conv2d: weight expects {cin_g} input channels, input has {c}");
        }
        // One 2-D matmul over all positions of the batch, so the weight's gradient is one matmul too.
        let wt = weight.reshape((cout, c * k * k))?.t()?; // [C·k·k, Cout]
        cols.reshape((b * p, c * k * k))?
            .matmul(&wt)?
            .reshape((b, p, cout))?
            .transpose(1, 2)? // [B, Cout, P]
    } else if groups == c && cin_g == 1 && cout == c {
        let cols = cols.reshape((b * p, c * k * k))?;
        let wk = weight.reshape(c * k * k)?;
        crate::channel::mul_channel_scale(&cols, &wk, 1)?
            .reshape((b, p, c, k * k))?
            .sum(3)?
            .transpose(1, 2)? // [B, C, P]
    } else {
        candle_core::bail!("conv2d: groups must be 1 or the channel count, got {groups}");
    };
    let y = y.reshape((b, cout, ho, wo))?;
    match bias {
        Some(bias) => crate::channel::add_channel_bias(&y, bias, 1),
        None => Ok(y),
    }
}

/// A Conv2d layer with PyTorch's parameter names (`weight`, `bias`) and initialisation bounds.
pub struct Conv2dLayer {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
}

impl Conv2dLayer {
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let fan_in = cin / groups * k * k;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((cout, cin / groups, k, k), "weight", init)?,
            bias: vb.get_with_hints(cout, "bias", init)?,
            stride,
            padding,
            groups,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.stride,
            self.padding,
            self.groups,
        )
    }

    /// Whether this layer halves the input.
    pub fn strided(&self) -> bool {
        self.stride > 1
    }
}
