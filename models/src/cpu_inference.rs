//! The Conformer encoder and CTC head forward pass for CPU inference, without candle: weights packed once for
//! `mezcla_kernels::sgemm`, activations channels-last, batch norm folded into the depthwise convolution, the
//! ½ feed-forward factor and xscaling folded into weights, residuals accumulated by the products themselves.
//! One utterance at a time at its own length: NeMo's masked batch gives the same valid frames.

use candle_core::{DType, Result};
use candle_nn::VarBuilder;
use mezcla_kernels::sgemm::{gemm, gemm_banded, PackedB};
use rayon::prelude::*;

use crate::conformer::{ConformerConfig, ConvNorm, Subsampling};
use crate::vector_math as vm;

/// Element-wise work is split into chunks of this many values across rayon's threads.
const CHUNK: usize = 8192;

fn tensor(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Vec<f32>> {
    vb.get(shape.to_vec(), name)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// A linear layer `name` (weight [cout, cin], PyTorch's layout; a kernel-1 conv's [cout, cin, 1] too), with
/// its weight and bias multiplied by `scale`.
fn linear(
    vb: &VarBuilder,
    cin: usize,
    cout: usize,
    bias: bool,
    kernel_dim: bool,
    scale: f32,
) -> Result<PackedB> {
    let shape: Vec<usize> = if kernel_dim {
        vec![cout, cin, 1]
    } else {
        vec![cout, cin]
    };
    let w: Vec<f32> = tensor(vb, &shape, "weight")?
        .into_iter()
        .map(|v| v * scale)
        .collect();
    let packed = PackedB::from_transposed(&w, cout, cin, cin);
    Ok(if bias {
        let b: Vec<f32> = tensor(vb, &[cout], "bias")?
            .into_iter()
            .map(|v| v * scale)
            .collect();
        packed.with_bias(&b)
    } else {
        packed
    })
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Norm {
    fn new(vb: &VarBuilder, d: usize) -> Result<Self> {
        Ok(Self {
            weight: tensor(vb, &[d], "weight")?,
            bias: tensor(vb, &[d], "bias")?,
        })
    }
}

fn relu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            *v = v.max(0.0);
        }
    });
}

thread_local! {
    /// Each thread's buffers for its rows in the row-parallel steps.
    static ROW_BUFFERS: std::cell::RefCell<[Vec<f32>; 2]> =
        const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// Rows per task of a row-parallel step: one task per thread (measured 7 % faster than two), in whole
/// micro-kernel blocks of 12 rows. A step runs a module's row-wise operations (norm, products, activation)
/// back to back on its rows, so that the threads meet once per step rather than once per operation.
fn rows_per_task(t: usize) -> usize {
    let tasks = rayon::current_num_threads();
    t.div_ceil(tasks).div_ceil(12).max(1) * 12
}

/// Runs `f(rows of x, first row, this thread's two buffers)` over blocks of rows of `x` [t, d] in parallel.
/// `f` holds the thread's buffers while it runs, so it must not itself use rayon (its products run with
/// `parallel` false): a task stolen meanwhile on the same thread would find them borrowed.
fn for_row_blocks(
    x: &mut [f32],
    d: usize,
    t: usize,
    f: impl Fn(&mut [f32], usize, &mut [Vec<f32>; 2]) + Sync,
) {
    let rows = rows_per_task(t);
    x[..t * d]
        .par_chunks_mut(rows * d)
        .enumerate()
        .for_each(|(i, xc)| ROW_BUFFERS.with(|b| f(xc, i * rows, &mut b.borrow_mut())));
}

fn layer_norm_rows(x: &[f32], norm: &Norm, out: &mut [f32]) {
    let d = norm.weight.len();
    for (o, r) in out.chunks_mut(d).zip(x.chunks(d)) {
        vm::layer_norm(r, &norm.weight, &norm.bias, o);
    }
}

struct FeedForward {
    norm: Norm,
    linear1: PackedB,
    /// With the ½ residual factor folded in.
    linear2: PackedB,
}

impl FeedForward {
    fn new(vb: &VarBuilder, norm: &str, ff: &str, d: usize, inner: usize) -> Result<Self> {
        Ok(Self {
            norm: Norm::new(&vb.pp(norm), d)?,
            linear1: linear(&vb.pp(ff).pp("linear1"), d, inner, true, false, 1.0)?,
            linear2: linear(&vb.pp(ff).pp("linear2"), inner, d, true, false, 0.5)?,
        })
    }

    /// x += ½ FF(LN(x)), then `after` (the layer's closing norm) on the same rows if given.
    fn residual(&self, x: &mut [f32], t: usize, after: Option<&Norm>) {
        let (d, inner) = (self.linear1.k(), self.linear1.n());
        for_row_blocks(x, d, t, |xc, _, [normed, wide]| {
            let n = xc.len() / d;
            normed.resize(n * d, 0.0);
            layer_norm_rows(xc, &self.norm, normed);
            wide.resize(n * inner, 0.0);
            gemm(normed, d, n, &self.linear1, wide, inner, false, false);
            vm::swish(wide);
            gemm(wide, inner, n, &self.linear2, xc, d, true, false);
            if let Some(norm) = after {
                for r in xc.chunks_mut(d) {
                    vm::layer_norm_in_place(r, &norm.weight, &norm.bias);
                }
            }
        });
    }
}

struct Attention {
    norm: Norm,
    /// q, k and v in one product: d → 3d.
    qkv: PackedB,
    pos: PackedB,
    out: PackedB,
    /// [heads · dk] each.
    bias_u: Vec<f32>,
    bias_v: Vec<f32>,
    heads: usize,
}

/// One attention head's buffers.
#[derive(Default)]
struct HeadScratch {
    q_u: Vec<f32>,
    q_v: Vec<f32>,
    keys: PackedB,
    positions: PackedB,
    values: PackedB,
    scores: Vec<f32>,
    bd: Vec<f32>,
    context: Vec<f32>,
}

impl Attention {
    /// `tied`: where the shared pos_bias_u / pos_bias_v are, when `untie_biases` is false.
    fn new(vb: &VarBuilder, cfg: &ConformerConfig, tied: &VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let h = cfg.n_heads;
        let att = vb.pp("self_attn");
        let mut w = Vec::with_capacity(3 * d * d);
        let mut b = Vec::with_capacity(3 * d);
        for name in ["linear_q", "linear_k", "linear_v"] {
            w.extend(tensor(&att.pp(name), &[d, d], "weight")?);
            b.extend(tensor(&att.pp(name), &[d], "bias")?);
        }
        let biases = if cfg.untie_biases { &att } else { tied };
        Ok(Self {
            norm: Norm::new(&vb.pp("norm_self_att"), d)?,
            qkv: PackedB::from_transposed(&w, 3 * d, d, d).with_bias(&b),
            pos: linear(&att.pp("linear_pos"), d, d, false, false, 1.0)?,
            out: linear(&att.pp("linear_out"), d, d, true, false, 1.0)?,
            bias_u: tensor(biases, &[h, d / h], "pos_bias_u")?,
            bias_v: tensor(biases, &[h, d / h], "pos_bias_v")?,
            heads: h,
        })
    }

    /// x += MHSA(LN(x)) with relative positions `pos` [2T-1, d].
    fn residual(&self, x: &mut [f32], t: usize, pos: &[f32], s: &mut Scratch) {
        let d = self.qkv.k();
        let (h, dk) = (self.heads, d / self.heads);
        s.wide.resize(t * 3 * d, 0.0);
        let rows = rows_per_task(t);
        s.wide[..t * 3 * d]
            .par_chunks_mut(rows * 3 * d)
            .zip(x[..t * d].par_chunks(rows * d))
            .for_each(|(qkv, xc)| {
                ROW_BUFFERS.with(|b| {
                    let normed = &mut b.borrow_mut()[0];
                    let n = xc.len() / d;
                    normed.resize(n * d, 0.0);
                    layer_norm_rows(xc, &self.norm, normed);
                    gemm(normed, d, n, &self.qkv, qkv, 3 * d, false, false);
                })
            });
        let np = 2 * t - 1;
        s.pos.resize(np * d, 0.0);
        gemm(pos, d, np, &self.pos, &mut s.pos, d, false, true);
        let qkv = &s.wide;
        let p = &s.pos;
        let scale = 1.0 / (dk as f32).sqrt();
        s.heads.resize_with(h, HeadScratch::default);
        s.heads.par_iter_mut().enumerate().for_each(|(head, hs)| {
            let col = head * dk;
            hs.q_u.resize(t * dk, 0.0);
            hs.q_v.resize(t * dk, 0.0);
            let (u, v) = (&self.bias_u[col..col + dk], &self.bias_v[col..col + dk]);
            for i in 0..t {
                let q = &qkv[i * 3 * d + col..][..dk];
                for (((qu, qv), &x), (&bu, &bv)) in hs.q_u[i * dk..(i + 1) * dk]
                    .iter_mut()
                    .zip(&mut hs.q_v[i * dk..(i + 1) * dk])
                    .zip(q)
                    .zip(u.iter().zip(v))
                {
                    *qu = x + bu;
                    *qv = x + bv;
                }
            }
            hs.keys.fill_transposed(&qkv[d + col..], t, dk, 3 * d);
            hs.positions.fill_transposed(&p[col..], np, dk, d);
            hs.values.fill_rows(&qkv[2 * d + col..], t, dk, 3 * d);
            hs.scores.resize(t * t, 0.0);
            hs.bd.resize(t * np, 0.0);
            gemm(&hs.q_u, dk, t, &hs.keys, &mut hs.scores, t, false, false);
            // Query i uses positions t-1-i .. 2t-1-i only: each block of rows computes its band.
            gemm_banded(&hs.q_v, dk, t, &hs.positions, &mut hs.bd, np, |r0, rows| {
                t - r0 - rows..np - r0
            });
            for i in 0..t {
                // Transformer-XL's shift: query i against key j uses relative position row T-1-i+j.
                let bd = &hs.bd[i * np + (t - 1 - i)..][..t];
                vm::softmax_of_sum(&mut hs.scores[i * t..(i + 1) * t], bd, scale);
            }
            hs.context.resize(t * dk, 0.0);
            gemm(
                &hs.scores,
                t,
                t,
                &hs.values,
                &mut hs.context,
                dk,
                false,
                false,
            );
        });
        s.normed.resize(t * d, 0.0);
        for (head, hs) in s.heads.iter().enumerate() {
            for i in 0..t {
                s.normed[i * d + head * dk..][..dk].copy_from_slice(&hs.context[i * dk..][..dk]);
            }
        }
        gemm(&s.normed, d, t, &self.out, x, d, true, true);
    }
}

enum ConvNormW {
    /// Folded into the depthwise weights.
    Batch,
    Layer(Norm),
}

struct ConvModule {
    norm: Norm,
    pointwise1: PackedB,
    /// [k, d]: tap-major, so that a tap is one pass over the channels.
    depthwise: Vec<f32>,
    depthwise_bias: Vec<f32>,
    kernel: usize,
    conv_norm: ConvNormW,
    pointwise2: PackedB,
}

impl ConvModule {
    fn new(vb: &VarBuilder, cfg: &ConformerConfig) -> Result<Self> {
        let d = cfg.d_model;
        let k = cfg.conv_kernel_size;
        let conv = vb.pp("conv");
        let w = tensor(&conv.pp("depthwise_conv"), &[d, 1, k], "weight")?;
        let b = tensor(&conv.pp("depthwise_conv"), &[d], "bias")?;
        let (scale, shift, conv_norm) = match cfg.conv_norm_type {
            ConvNorm::BatchNorm => {
                let bn = conv.pp("batch_norm");
                let gamma = tensor(&bn, &[d], "weight")?;
                let beta = tensor(&bn, &[d], "bias")?;
                let mean = tensor(&bn, &[d], "running_mean")?;
                let var = tensor(&bn, &[d], "running_var")?;
                let scale: Vec<f32> = (0..d).map(|c| gamma[c] / (var[c] + 1e-5).sqrt()).collect();
                let shift: Vec<f32> = (0..d).map(|c| beta[c] - mean[c] * scale[c]).collect();
                (scale, shift, ConvNormW::Batch)
            }
            ConvNorm::LayerNorm => (
                vec![1.0; d],
                vec![0.0; d],
                ConvNormW::Layer(Norm::new(&conv.pp("batch_norm"), d)?),
            ),
        };
        let mut depthwise = vec![0f32; k * d];
        for c in 0..d {
            for j in 0..k {
                depthwise[j * d + c] = w[c * k + j] * scale[c];
            }
        }
        let depthwise_bias = (0..d).map(|c| b[c] * scale[c] + shift[c]).collect();
        Ok(Self {
            norm: Norm::new(&vb.pp("norm_conv"), d)?,
            pointwise1: linear(&conv.pp("pointwise_conv1"), d, 2 * d, true, true, 1.0)?,
            depthwise,
            depthwise_bias,
            kernel: k,
            conv_norm,
            pointwise2: linear(&conv.pp("pointwise_conv2"), d, d, true, true, 1.0)?,
        })
    }

    /// x += Conv(LN(x)).
    fn residual(&self, x: &mut [f32], t: usize, s: &mut Scratch) {
        let d = self.norm.weight.len();
        let rows = rows_per_task(t);
        // LN, the first pointwise product and the GLU, row by row, into `normed`.
        s.normed.resize(t * d, 0.0);
        s.normed[..t * d]
            .par_chunks_mut(rows * d)
            .zip(x[..t * d].par_chunks(rows * d))
            .for_each(|(g, xc)| {
                ROW_BUFFERS.with(|b| {
                    let [normed, wide] = &mut *b.borrow_mut();
                    let n = xc.len() / d;
                    normed.resize(n * d, 0.0);
                    layer_norm_rows(xc, &self.norm, normed);
                    wide.resize(n * 2 * d, 0.0);
                    gemm(normed, d, n, &self.pointwise1, wide, 2 * d, false, false);
                    for (gr, ab) in g.chunks_mut(d).zip(wide.chunks(2 * d)) {
                        vm::glu(gr, ab);
                    }
                })
            });
        // The depthwise convolution over time ("same" padding, batch norm folded in), the norm, Swish and the
        // second pointwise product, for each block of output rows.
        let pad = (self.kernel - 1) / 2;
        let glu = &s.normed;
        for_row_blocks(x, d, t, |xc, row0, [y, _]| {
            let n = xc.len() / d;
            y.resize(n * d, 0.0);
            for (r, out) in y.chunks_mut(d).enumerate() {
                let i = row0 + r;
                out.copy_from_slice(&self.depthwise_bias);
                let lo = pad.saturating_sub(i);
                let hi = (t + pad - i).min(self.kernel);
                for j in lo..hi {
                    let src = &glu[(i + j - pad) * d..][..d];
                    vm::mul_add(out, &self.depthwise[j * d..][..d], src);
                }
                if let ConvNormW::Layer(norm) = &self.conv_norm {
                    vm::layer_norm_in_place(out, &norm.weight, &norm.bias);
                }
            }
            vm::swish(y);
            gemm(y, d, n, &self.pointwise2, xc, d, true, false);
        });
    }
}

struct Layer {
    ff1: FeedForward,
    attention: Attention,
    conv: ConvModule,
    ff2: FeedForward,
    norm_out: Norm,
}

/// The input index that output `o` reads at tap `k` of a 3-tap, stride-2, padding-1 convolution over `len`
/// positions, if it is inside.
fn tap_source(o: usize, k: usize, len: usize) -> Option<usize> {
    (2 * o + k).checked_sub(1).filter(|&i| i < len)
}

/// A 3×3 stride-2 convolution stage of the subsampling, channels-last.
enum SubStage {
    /// The first convolution (one input channel): weight [9 taps, C] with its bias; followed by ReLU.
    First { weight: PackedB },
    /// A full convolution C → C: one [C, C] weight per tap (ky·3 + kx), bias [C]; followed by ReLU.
    Full { taps: Vec<PackedB>, bias: Vec<f32> },
    /// dw_striding: depthwise 3×3 (weight [9, C], bias [C]), then a pointwise product and ReLU.
    Depthwise {
        weight: Vec<f32>,
        bias: Vec<f32>,
        pointwise: PackedB,
    },
}

/// Reusable buffers of one forward pass.
#[derive(Default)]
struct Scratch {
    normed: Vec<f32>,
    wide: Vec<f32>,
    pos: Vec<f32>,
    heads: Vec<HeadScratch>,
}

/// A Conformer encoder, with its CTC head if it has one, ready for fast CPU inference (f32, eval mode).
pub struct CpuConformer {
    cfg: ConformerConfig,
    channels: usize,
    stages: Vec<SubStage>,
    /// pre_encode.out with xscaling folded in: input [F' · C] in (f, c) order.
    sub_out: PackedB,
    layers: Vec<Layer>,
    out_proj: Option<PackedB>,
    head: Option<PackedB>,
}

impl CpuConformer {
    /// Packs the weights of an encoder (under `encoder.`) and, given a vocabulary size, its CTC head (under
    /// `decoder.`) as NeMo names them; `vb` is the model's root. Without a CTC head only [`Self::encode`] runs.
    pub fn new(cfg: &ConformerConfig, vocab_size: Option<usize>, vb: &VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let enc = vb.pp("encoder");
        let d = cfg.d_model;
        let c = if cfg.subsampling_conv_channels > 0 {
            cfg.subsampling_conv_channels as usize
        } else {
            d
        };
        let n_stages = cfg.subsampling_factor.trailing_zeros() as usize;
        let conv = enc.pp("pre_encode").pp("conv");
        let taps = |w: &[f32], ch: usize| -> Vec<f32> {
            // [ch, 1, 3, 3] → [9, ch]
            let mut t = vec![0f32; 9 * ch];
            for o in 0..ch {
                for k in 0..9 {
                    t[k * ch + o] = w[o * 9 + k];
                }
            }
            t
        };
        let first = tensor(&conv.pp(0), &[c, 1, 3, 3], "weight")?;
        let mut stages = vec![SubStage::First {
            weight: PackedB::from_fn(9, c, |tap, o| first[o * 9 + tap]).with_bias(&tensor(
                &conv.pp(0),
                &[c],
                "bias",
            )?),
        }];
        let mut freq = (cfg.feat_in - 1) / 2 + 1;
        for s in 1..n_stages {
            match cfg.subsampling {
                Subsampling::Striding => {
                    let v = conv.pp(2 * s);
                    let w = tensor(&v, &[c, c, 3, 3], "weight")?;
                    let b = tensor(&v, &[c], "bias")?;
                    let taps = (0..9)
                        .map(|tap| PackedB::from_fn(c, c, |ci, o| w[(o * c + ci) * 9 + tap]))
                        .collect();
                    stages.push(SubStage::Full { taps, bias: b });
                }
                Subsampling::DwStriding => {
                    let idx = 2 + 3 * (s - 1);
                    stages.push(SubStage::Depthwise {
                        weight: taps(&tensor(&conv.pp(idx), &[c, 1, 3, 3], "weight")?, c),
                        bias: tensor(&conv.pp(idx), &[c], "bias")?,
                        pointwise: {
                            let v = conv.pp(idx + 1);
                            let w = tensor(&v, &[c, c, 1, 1], "weight")?;
                            let b = tensor(&v, &[c], "bias")?;
                            PackedB::from_transposed(&w, c, c, c).with_bias(&b)
                        },
                    });
                }
            }
            freq = (freq - 1) / 2 + 1;
        }
        let xscale = if cfg.xscaling { (d as f32).sqrt() } else { 1.0 };
        let out = enc.pp("pre_encode").pp("out");
        let w = tensor(&out, &[d, c * freq], "weight")?;
        let b: Vec<f32> = tensor(&out, &[d], "bias")?
            .into_iter()
            .map(|v| v * xscale)
            .collect();
        // NeMo flattens [C, F'] as c·F' + f; the activations here are (f, c).
        let sub_out = PackedB::from_fn(c * freq, d, |row, o| {
            let (f, ch) = (row / c, row % c);
            w[o * c * freq + ch * freq + f] * xscale
        })
        .with_bias(&b);
        let inner = d * cfg.ff_expansion_factor;
        // NeMo stores tied biases once; every layer reads layer 0's.
        let tied = enc.pp("layers").pp(0).pp("self_attn");
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let l = enc.pp("layers").pp(i);
                Ok(Layer {
                    ff1: FeedForward::new(&l, "norm_feed_forward1", "feed_forward1", d, inner)?,
                    attention: Attention::new(&l, cfg, &tied)?,
                    conv: ConvModule::new(&l, cfg)?,
                    ff2: FeedForward::new(&l, "norm_feed_forward2", "feed_forward2", d, inner)?,
                    norm_out: Norm::new(&l.pp("norm_out"), d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let out_dim = cfg.output_dim();
        let out_proj = if out_dim != d {
            Some(linear(&enc.pp("out_proj"), d, out_dim, true, false, 1.0)?)
        } else {
            None
        };
        let head = vocab_size
            .map(|v| {
                linear(
                    &vb.pp("decoder").pp("decoder_layers").pp(0),
                    out_dim,
                    v + 1,
                    true,
                    true,
                    1.0,
                )
            })
            .transpose()?;
        Ok(Self {
            cfg: cfg.clone(),
            channels: c,
            stages,
            sub_out,
            layers,
            out_proj,
            head,
        })
    }

    /// Output classes of the CTC head (vocabulary + blank); 0 without one.
    pub fn classes(&self) -> usize {
        self.head.as_ref().map_or(0, PackedB::n)
    }

    /// Width of the encoder output.
    pub fn output_dim(&self) -> usize {
        self.cfg.output_dim()
    }

    /// CTC log-probabilities [T', classes] (row-major) of one utterance's features `features` [feat_in, stride]
    /// (the front-end's layout), of which the first `frames` columns are used. Returns (log-probs, T').
    pub fn log_probs(
        &self,
        features: &[f32],
        stride: usize,
        frames: usize,
    ) -> Result<(Vec<f32>, usize)> {
        let Some(head) = &self.head else {
            candle_core::bail!("cpu inference: the model has no CTC head");
        };
        let (x, t) = self.encode(features, stride, frames)?;
        let v = head.n();
        let mut logits = vec![0f32; t * v];
        gemm(&x, self.output_dim(), t, head, &mut logits, v, false, true);
        logits
            .par_chunks_mut(v)
            .with_min_len(8)
            .for_each(vm::log_softmax);
        Ok((logits, t))
    }

    /// The encoder output [T', output_dim] (time-major) of one utterance's features, laid out as for
    /// [`Self::log_probs`]. Returns (output, T').
    pub fn encode(
        &self,
        features: &[f32],
        stride: usize,
        frames: usize,
    ) -> Result<(Vec<f32>, usize)> {
        let f = self.cfg.feat_in;
        if features.len() < f * stride || frames > stride {
            candle_core::bail!(
                "cpu inference: {} feature values do not hold {f} × {stride}",
                features.len()
            );
        }
        if frames == 0 {
            return Ok((Vec::new(), 0));
        }
        // Time-major [T, F].
        let mut x = vec![0f32; frames * f];
        for (m, row) in features.chunks(stride).take(f).enumerate() {
            for (t, &v) in row[..frames].iter().enumerate() {
                x[t * f + m] = v;
            }
        }
        let (x, t) = self.subsample(&x, frames, f);
        let d = self.cfg.d_model;
        let mut x = x;
        let pos = crate::conformer::relative_positions(t, d, &candle_core::Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut s = Scratch::default();
        for layer in &self.layers {
            layer.ff1.residual(&mut x, t, None);
            layer.attention.residual(&mut x, t, &pos, &mut s);
            layer.conv.residual(&mut x, t, &mut s);
            layer.ff2.residual(&mut x, t, Some(&layer.norm_out));
        }
        let x = match &self.out_proj {
            Some(p) => {
                let mut y = vec![0f32; t * p.n()];
                gemm(&x, d, t, p, &mut y, p.n(), false, true);
                y
            }
            None => x,
        };
        Ok((x, t))
    }

    /// The subsampling stack: [T, F] → ([T', d] with xscaling, T').
    fn subsample(&self, x: &[f32], t: usize, f: usize) -> (Vec<f32>, usize) {
        let c = self.channels;
        let half = |n: usize| (n - 1) / 2 + 1;
        let (mut h, mut w) = (t, f);
        let mut cur: Vec<f32> = Vec::new();
        for stage in &self.stages {
            let (ho, wo) = (half(h), half(w));
            let mut next = vec![0f32; ho * wo * c];
            match stage {
                SubStage::First { weight } => {
                    // One input channel: the 9 taps of every output position (zero outside), then one
                    // product with the [9, C] weight and its bias.
                    let mut cols = vec![0f32; ho * wo * 9];
                    cols.par_chunks_mut(wo * 9)
                        .enumerate()
                        .for_each(|(oy, row)| {
                            for (ox, dst) in row.chunks_mut(9).enumerate() {
                                for ky in 0..3 {
                                    let Some(iy) = tap_source(oy, ky, h) else {
                                        continue;
                                    };
                                    for kx in 0..3 {
                                        if let Some(ix) = tap_source(ox, kx, w) {
                                            dst[ky * 3 + kx] = x[iy * w + ix];
                                        }
                                    }
                                }
                            }
                        });
                    gemm(&cols, 9, ho * wo, weight, &mut next, c, false, true);
                    relu_in_place(&mut next);
                }
                SubStage::Full { taps, bias } => {
                    // An implicit GEMM: for each output row and tap, the input positions it reads are one
                    // input row at a stride of two positions (2c floats), so each tap is one product
                    // accumulated into the output row, with no im2col copy.
                    let cur = &cur;
                    next.par_chunks_mut(wo * c)
                        .enumerate()
                        .for_each(|(oy, out)| {
                            for o in out.chunks_mut(c) {
                                o.copy_from_slice(bias);
                            }
                            for ky in 0..3 {
                                let Some(iy) = tap_source(oy, ky, h) else {
                                    continue;
                                };
                                for kx in 0..3 {
                                    // Output columns whose input column 2·ox + kx − 1 lies in [0, w).
                                    let lo = usize::from(kx == 0);
                                    let Some(hi) = w.checked_sub(kx).map(|r| (wo - 1).min(r / 2))
                                    else {
                                        continue;
                                    };
                                    if hi < lo {
                                        continue;
                                    }
                                    let ix = 2 * lo + kx - 1;
                                    gemm(
                                        &cur[(iy * w + ix) * c..],
                                        2 * c,
                                        hi - lo + 1,
                                        &taps[ky * 3 + kx],
                                        &mut out[lo * c..],
                                        c,
                                        true,
                                        false,
                                    );
                                }
                            }
                        });
                    relu_in_place(&mut next);
                }
                SubStage::Depthwise {
                    weight,
                    bias,
                    pointwise,
                } => {
                    let mut dw = vec![0f32; ho * wo * c];
                    dw.par_chunks_mut(wo * c).enumerate().for_each(|(oy, row)| {
                        for ox in 0..wo {
                            let out = &mut row[ox * c..(ox + 1) * c];
                            out.copy_from_slice(bias);
                            for ky in 0..3 {
                                let Some(iy) = tap_source(oy, ky, h) else {
                                    continue;
                                };
                                for kx in 0..3 {
                                    let Some(ix) = tap_source(ox, kx, w) else {
                                        continue;
                                    };
                                    let src = &cur[(iy * w + ix) * c..][..c];
                                    vm::mul_add(out, &weight[(ky * 3 + kx) * c..][..c], src);
                                }
                            }
                        }
                    });
                    gemm(&dw, c, ho * wo, pointwise, &mut next, c, false, true);
                    relu_in_place(&mut next);
                }
            }
            cur = next;
            h = ho;
            w = wo;
        }
        let d = self.cfg.d_model;
        let mut out = vec![0f32; h * d];
        gemm(&cur, w * c, h, &self.sub_out, &mut out, d, false, true);
        (out, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformer::ConformerEncoder;
    use crate::ctc::CtcHead;
    use candle_core::{Device, Tensor};
    use candle_nn::VarMap;

    /// The candle modules (checked against NeMo in tests/conformer_parity.rs) and this path on the same
    /// random weights, for shapes the NeMo fixtures do not have.
    fn compare(cfg: ConformerConfig, vocab: usize, lengths: &[usize]) {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let encoder = ConformerEncoder::new(&cfg, vb.pp("encoder")).unwrap();
        let head = CtcHead::new(cfg.output_dim(), vocab, vb.pp("decoder")).unwrap();
        for (name, var) in vars.data().lock().unwrap().iter() {
            let r = Tensor::randn(0f32, 0.3, var.shape(), &dev).unwrap();
            let value = if name.contains("running_var") {
                (r.abs().unwrap() + 0.5).unwrap()
            } else {
                r
            };
            var.set(&value).unwrap();
        }
        let fused = CpuConformer::new(&cfg, Some(vocab), &vb).unwrap();
        let t = *lengths.iter().max().unwrap();
        let features = Tensor::randn(0f32, 1.0, (lengths.len(), cfg.feat_in, t), &dev).unwrap();
        // Frames beyond each length are zero, as the front-end pads them.
        let mask: Vec<f32> = lengths
            .iter()
            .flat_map(|&l| {
                (0..cfg.feat_in).flat_map(move |_| (0..t).map(move |j| (j < l) as u8 as f32))
            })
            .collect();
        let mask = Tensor::from_vec(mask, features.shape(), &dev).unwrap();
        let features = (features * mask).unwrap();
        let (encoded, out_lengths) = encoder.forward(&features, lengths, false).unwrap();
        let want = head.log_probs(&encoded).unwrap().to_vec3::<f32>().unwrap();
        let rows = features.to_vec3::<f32>().unwrap();
        for (b, &l) in lengths.iter().enumerate() {
            let flat: Vec<f32> = rows[b].iter().flatten().copied().collect();
            let (got, frames) = fused.log_probs(&flat, t, l).unwrap();
            assert_eq!(frames, out_lengths[b], "{cfg:?}: frames of utterance {b}");
            for f in 0..frames {
                for c in 0..=vocab {
                    let d = (got[f * (vocab + 1) + c] - want[b][f][c]).abs();
                    assert!(d < 1e-4, "{cfg:?} utterance {b} frame {f} class {c}: {d}");
                }
            }
        }
    }

    fn config(feat_in: usize, subsampling: Subsampling, factor: usize) -> ConformerConfig {
        let mut cfg = ConformerConfig::preset("tiny", feat_in).unwrap();
        cfg.subsampling = subsampling;
        cfg.subsampling_factor = factor;
        cfg.subsampling_conv_channels = 8;
        cfg
    }

    #[test]
    fn the_fused_path_equals_the_candle_modules_on_edge_shapes() {
        // ×16 striding on 5 features: the frequency axis shrinks to 1 before the last stages.
        compare(config(5, Subsampling::Striding, 16), 7, &[70, 33, 16]);
        // ×2 dw_striding (one stage), an output projection, layer norm in the conv module, tied biases.
        let mut cfg = config(12, Subsampling::DwStriding, 2);
        cfg.feat_out = 24;
        cfg.conv_norm_type = ConvNorm::LayerNorm;
        cfg.untie_biases = false;
        compare(cfg, 5, &[9, 2, 1]);
        // One output frame, and more frames than a row block of the micro-kernel.
        compare(config(20, Subsampling::DwStriding, 8), 9, &[3, 203]);
    }
}
