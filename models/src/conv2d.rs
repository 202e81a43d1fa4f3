//! Conv2d for the subsampling stack, each with its backward: direct kernels for the depthwise and one-input-channel convolutions (with a fused bias, time mask and ReLU for the first layer), one batched matmul for 1x1, im2col and one matmul for the rest.
//!
//! candle's own conv2d backward gives wrongly shaped gradients for strided convolutions whose input size is
//! not a multiple of the stride, and its grouped convolution has no backward; this path has neither problem.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
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

/// A convolution in which every output channel reads one input plane: depthwise (output channel `c` reads
/// input channel `c`) or from a single input channel (every output channel reads channel 0). x [B, C, H, W],
/// weight [Cout, 1, k, k] → [B, Cout, Ho, Wo], computed plane by plane with no column buffer.
///
/// Each input plane is first zero-padded and split by column phase (`x mod stride`), so that every kernel tap
/// reads a contiguous run of a row: `padded[y][ox·stride + kx]` is `phases[kx mod stride][y][ox + kx / stride]`.
struct PlaneConv {
    k: usize,
    stride: usize,
    padding: usize,
}

/// Sizes of the padded, phase-split planes.
#[derive(Debug, Clone, Copy)]
struct Phased {
    /// Padded height.
    hp: usize,
    /// Width of one phase.
    wq: usize,
}

impl Phased {
    fn new(g: &Geometry) -> Self {
        Self {
            hp: g.h + 2 * g.padding,
            wq: (g.w + 2 * g.padding).div_ceil(g.stride),
        }
    }

    fn plane_len(&self, g: &Geometry) -> usize {
        g.stride * self.hp * self.wq
    }

    /// The run of `len` values that tap (ky, kx) reads for output row `oy`.
    #[inline]
    fn run<'a>(
        &self,
        g: &Geometry,
        plane: &'a [f32],
        oy: usize,
        ky: usize,
        kx: usize,
        len: usize,
    ) -> &'a [f32] {
        let row = (kx % g.stride) * self.hp + oy * g.stride + ky;
        &plane[row * self.wq + kx / g.stride..][..len]
    }

    /// Pads and phase-splits `planes` planes of `x` ([planes, H, W]).
    fn split(&self, g: &Geometry, x: &[f32], planes: usize) -> Vec<f32> {
        let len = self.plane_len(g);
        let mut out = vec![0f32; planes * len];
        out.par_chunks_mut(len)
            .enumerate()
            .for_each(|(plane, dst)| {
                let src = &x[plane * g.h * g.w..][..g.h * g.w];
                for y in 0..g.h {
                    let line = &src[y * g.w..][..g.w];
                    for (phase, first, col) in self.phases(g) {
                        let row = &mut dst[(phase * self.hp + y + g.padding) * self.wq + col..];
                        for (d, &v) in row.iter_mut().zip(line[first..].iter().step_by(g.stride)) {
                            *d = v;
                        }
                    }
                }
            });
        out
    }

    /// The inverse of `split` for gradients: reads the unpadded values of one phase-split plane.
    fn fold(&self, g: &Geometry, phased: &[f32], img: &mut [f32]) {
        for y in 0..g.h {
            let line = &mut img[y * g.w..][..g.w];
            for (phase, first, col) in self.phases(g) {
                let row = &phased[(phase * self.hp + y + g.padding) * self.wq + col..];
                for (v, &p) in line[first..].iter_mut().step_by(g.stride).zip(row) {
                    *v = p;
                }
            }
        }
    }

    /// For each column phase: (phase, the first input column in it, that column's place in the phase's row).
    fn phases(&self, g: &Geometry) -> impl Iterator<Item = (usize, usize, usize)> {
        let (s, p, w) = (g.stride, g.padding, g.w);
        (0..s)
            .map(move |phase| {
                let first = (phase + s - p % s) % s;
                (phase, first, (first + p) / s)
            })
            .filter(move |&(_, first, _)| first < w)
    }
}

impl PlaneConv {
    fn geometry(&self, x: &Layout, w: &Layout) -> Result<(usize, usize, Geometry)> {
        let (b, c, h, wd) = x.shape().dims4()?;
        let (cout, one, k, k2) = w.shape().dims4()?;
        if one != 1 || k != self.k || k2 != self.k || !(c == cout || c == 1) {
            candle_core::bail!(
                "plane conv: weight {:?} does not fit input {:?}",
                w.shape(),
                x.shape()
            );
        }
        Ok((
            b,
            cout,
            Geometry::new(c, h, wd, k, self.stride, self.padding)?,
        ))
    }

    /// The input plane that output channel `co` reads.
    #[inline]
    fn source_plane(g: &Geometry, co: usize) -> usize {
        if g.c == 1 {
            0
        } else {
            co
        }
    }
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, e))) => Ok(&v[a..e]),
        _ => candle_core::bail!("plane conv needs a contiguous f32 {what}"),
    }
}

impl PlaneConv {
    /// The convolution of `x` by `wt`, then, when `epilogue` gives the bias and the valid output rows
    /// (time frames) of each batch item, `max(y + bias, 0)` on those rows and 0 on the others.
    fn forward_planes(
        &self,
        x: (&[f32], &Layout),
        wt: (&[f32], &Layout),
        epilogue: Option<(&[f32], &[usize])>,
    ) -> Result<(Vec<f32>, Shape)> {
        let (b, cout, g) = self.geometry(x.1, wt.1)?;
        let (x, wt) = (x.0, wt.0);
        let ph = Phased::new(&g);
        let phased = ph.split(&g, x, b * g.c);
        let (k, plane_len, plane_out) = (g.k, ph.plane_len(&g), g.ho * g.wo);
        let mut out = vec![0f32; b * cout * plane_out];
        out.par_chunks_mut(plane_out)
            .enumerate()
            .for_each(|(plane, dst)| {
                let (bi, co) = (plane / cout, plane % cout);
                let src =
                    &phased[(bi * g.c + Self::source_plane(&g, co)) * plane_len..][..plane_len];
                let taps = &wt[co * k * k..][..k * k];
                for (oy, row) in dst.chunks_exact_mut(g.wo).enumerate() {
                    if let Some((_, valid)) = epilogue {
                        if oy >= valid[bi] {
                            continue; // stays 0
                        }
                    }
                    for ky in 0..k {
                        for kx in 0..k {
                            let tap = taps[ky * k + kx];
                            let run = ph.run(&g, src, oy, ky, kx, g.wo);
                            for (o, &v) in row.iter_mut().zip(run) {
                                *o += tap * v;
                            }
                        }
                    }
                    if let Some((bias, _)) = epilogue {
                        let bias = bias[co];
                        for o in row.iter_mut() {
                            *o = (*o + bias).max(0.0);
                        }
                    }
                }
            });
        Ok((out, Shape::from((b, cout, g.ho, g.wo))))
    }

    /// The gradients w.r.t. the input (only if `x` needs one) and the weight, for the upstream gradient `gs`
    /// of the convolution's output.
    fn backward_planes(
        &self,
        x: &Tensor,
        weight: &Tensor,
        gs: &[f32],
    ) -> Result<(Option<Tensor>, Tensor)> {
        let (b, cout, g) = self.geometry(x.layout(), weight.layout())?;
        let ph = Phased::new(&g);
        let (k, plane_len, plane_out) = (g.k, ph.plane_len(&g), g.ho * g.wo);
        let ws = weight.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let phased = ph.split(
            &g,
            &x.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
            b * g.c,
        );
        // Weight gradient: one output channel per task, summed over the batch.
        let mut dw = vec![0f32; cout * k * k];
        dw.par_chunks_mut(k * k).enumerate().for_each(|(co, taps)| {
            for bi in 0..b {
                let src =
                    &phased[(bi * g.c + Self::source_plane(&g, co)) * plane_len..][..plane_len];
                let up = &gs[(bi * cout + co) * plane_out..][..plane_out];
                for (oy, row) in up.chunks_exact(g.wo).enumerate() {
                    for ky in 0..k {
                        for kx in 0..k {
                            let run = ph.run(&g, src, oy, ky, kx, g.wo);
                            taps[ky * k + kx] +=
                                row.iter().zip(run).map(|(a, b)| a * b).sum::<f32>();
                        }
                    }
                }
            }
        });
        let dw = Tensor::from_vec(dw, weight.shape(), weight.device())?;
        // Input gradient, only when something upstream needs it (not for the features).
        if !x.track_op() {
            return Ok((None, dw));
        }
        let mut dx = vec![0f32; b * g.c * g.h * g.w];
        dx.par_chunks_mut(g.h * g.w)
            .enumerate()
            .for_each(|(plane, img)| {
                let (bi, ci) = (plane / g.c, plane % g.c);
                let mut acc = vec![0f32; plane_len];
                // Depthwise: the one output channel of this plane; one input channel: all of them.
                let channels = if g.c == 1 { 0..cout } else { ci..ci + 1 };
                for co in channels {
                    let up = &gs[(bi * cout + co) * plane_out..][..plane_out];
                    let taps = &ws[co * k * k..][..k * k];
                    for (oy, row) in up.chunks_exact(g.wo).enumerate() {
                        for ky in 0..k {
                            for kx in 0..k {
                                let tap = taps[ky * k + kx];
                                let at = ((kx % g.stride) * ph.hp + oy * g.stride + ky) * ph.wq
                                    + kx / g.stride;
                                for (a, &v) in acc[at..at + g.wo].iter_mut().zip(row) {
                                    *a += tap * v;
                                }
                            }
                        }
                    }
                }
                ph.fold(&g, &acc, img);
            });
        Ok((Some(Tensor::from_vec(dx, x.shape(), x.device())?), dw))
    }
}

impl CustomOp2 for PlaneConv {
    fn name(&self) -> &'static str {
        "plane-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "input")?;
        let wt = contiguous_f32(ws, wl, "weight")?;
        let (out, shape) = self.forward_planes((x, xl), (wt, wl), None)?;
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let (dx, dw) = self.backward_planes(x, weight, &gs)?;
        Ok((dx, Some(dw)))
    }
}

/// [`PlaneConv`] with a fused epilogue: bias, time mask and ReLU (the first layer of the subsampling stack),
/// `relu(conv(x) + bias)` on each batch item's first `valid[b]` output rows and 0 on the rest. One pass over
/// the largest activation of the model instead of four, forward and backward.
struct PlaneConvBiasRelu {
    conv: PlaneConv,
    valid: Vec<usize>,
}

impl CustomOp3 for PlaneConvBiasRelu {
    fn name(&self) -> &'static str {
        "plane-conv2d-bias-relu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "input")?;
        let wt = contiguous_f32(ws, wl, "weight")?;
        let bias = contiguous_f32(bs, bl, "bias")?;
        let (b, cout, _) = self.conv.geometry(xl, wl)?;
        if bias.len() != cout || self.valid.len() != b {
            candle_core::bail!(
                "plane conv: {} biases and {} lengths for {cout} channels and {b} items",
                bias.len(),
                self.valid.len()
            );
        }
        let (out, shape) =
            self.conv
                .forward_planes((x, xl), (wt, wl), Some((bias, &self.valid)))?;
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, cout, g) = self.conv.geometry(x.layout(), weight.layout())?;
        let plane_out = g.ho * g.wo;
        // Through the ReLU and the mask: the gradient flows where the output is positive.
        let mut gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let ys = res.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        gs.par_chunks_mut(plane_out)
            .zip(ys.par_chunks(plane_out))
            .for_each(|(gp, yp)| {
                for (gv, &yv) in gp.iter_mut().zip(yp) {
                    if yv <= 0.0 {
                        *gv = 0.0;
                    }
                }
            });
        let mut db = vec![0f32; cout];
        db.par_iter_mut().enumerate().for_each(|(co, d)| {
            *d = gs
                .chunks_exact(plane_out)
                .skip(co)
                .step_by(cout)
                .map(|p| p.iter().sum::<f32>())
                .sum();
        });
        let db = Tensor::from_vec(db, bias.shape(), bias.device())?;
        let (dx, dw) = self.conv.backward_planes(x, weight, &gs)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `relu(conv2d(x, weight) + bias)` with each batch item's output time frames (dim 2) from `valid[b]` on set
/// to 0, as NeMo's subsampling does after its first convolution (conv, mask, ReLU). A fused kernel for the
/// depthwise and one-input-channel convolutions; the composed ops otherwise.
pub fn conv2d_bias_relu_masked(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
    valid: &[usize],
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (cout, cin_g, k, k2) = weight.dims4()?;
    if k == k2 && cin_g == 1 && ((groups == c && cout == c) || (groups == 1 && c == 1)) {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            PlaneConvBiasRelu {
                conv: PlaneConv { k, stride, padding },
                valid: valid.to_vec(),
            },
        );
    }
    let y = conv2d(x, weight, Some(bias), stride, padding, groups)?;
    let (b, _, t, _) = y.dims4()?;
    let mask = crate::conformer::time_mask(valid, b, t, y.device())?.reshape((b, 1, t, 1))?;
    y.broadcast_mul(&mask)?.relu()
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
    // Depthwise, or one input channel: every output plane reads one input plane, so no column buffer.
    if cin_g == 1 && ((groups == c && cout == c) || (groups == 1 && c == 1)) {
        let y = x
            .contiguous()?
            .apply_op2(&weight.contiguous()?, PlaneConv { k, stride, padding })?;
        return match bias {
            Some(bias) => crate::channel::add_channel_bias(&y, bias, 1),
            None => Ok(y),
        };
    }
    // Pointwise: one batched matmul on the channels-first planes, no transposes.
    if k == 1 && stride == 1 && padding == 0 && groups == 1 && cin_g == c {
        let (h, w) = (x.dim(2)?, x.dim(3)?);
        let y = weight
            .reshape((cout, c))?
            .broadcast_left(b)?
            .matmul(&x.contiguous()?.reshape((b, c, h * w))?)?
            .reshape((b, cout, h, w))?;
        return match bias {
            Some(bias) => crate::channel::add_channel_bias(&y, bias, 1),
            None => Ok(y),
        };
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

    /// `relu(self.forward(x))` with each batch item's output frames from `valid[b]` on set to 0.
    pub fn forward_relu_masked(&self, x: &Tensor, valid: &[usize]) -> Result<Tensor> {
        conv2d_bias_relu_masked(
            x,
            &self.weight,
            &self.bias,
            self.stride,
            self.padding,
            self.groups,
            valid,
        )
    }

    /// Whether this layer halves the input.
    pub fn strided(&self) -> bool {
        self.stride > 1
    }
}
