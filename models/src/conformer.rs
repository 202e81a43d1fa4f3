//! NeMo's ConformerEncoder in candle: conv subsampling, relative-position attention, convolution module, macaron FFs.
//!
//! Parameter names follow NeMo's state dict (`encoder.pre_encode.conv.0.weight`, `encoder.layers.N.self_attn.…`),
//! so a NeMo checkpoint loads by name alone.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::channel::{add_channel_bias, Linear};

use crate::conv2d::Conv2dLayer;

use crate::depthwise::DepthwiseConv1dLayer;
use serde::{Deserialize, Serialize};

use crate::layers::{dropout, softmax_last, BatchNorm1d, LayerNorm, Pointwise};

/// How the input frames are subsampled before the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subsampling {
    /// Conv2d(3×3, stride 2) + ReLU per halving (NeMo `striding`).
    Striding,
    /// Conv2d then depthwise + pointwise Conv2d per further halving (NeMo `dw_striding`, FastConformer).
    DwStriding,
}

/// Normalisation inside the convolution module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvNorm {
    BatchNorm,
    LayerNorm,
}

fn default_neg1() -> i64 {
    -1
}
fn default_4() -> usize {
    4
}
fn default_true() -> bool {
    true
}
fn default_pos_len() -> usize {
    5000
}
fn default_kernel() -> usize {
    31
}
fn default_dropout() -> f64 {
    0.1
}
fn default_subsampling() -> Subsampling {
    Subsampling::Striding
}
fn default_conv_norm() -> ConvNorm {
    ConvNorm::BatchNorm
}

/// The encoder's configuration, with NeMo's `ConformerEncoder` argument names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConformerConfig {
    pub feat_in: usize,
    pub n_layers: usize,
    pub d_model: usize,
    /// Output projection size; -1 (or d_model) for none.
    #[serde(default = "default_neg1")]
    pub feat_out: i64,
    #[serde(default = "default_subsampling")]
    pub subsampling: Subsampling,
    #[serde(default = "default_4")]
    pub subsampling_factor: usize,
    /// -1: d_model.
    #[serde(default = "default_neg1")]
    pub subsampling_conv_channels: i64,
    #[serde(default = "default_4")]
    pub ff_expansion_factor: usize,
    #[serde(default = "default_4")]
    pub n_heads: usize,
    #[serde(default = "default_true")]
    pub xscaling: bool,
    #[serde(default = "default_true")]
    pub untie_biases: bool,
    #[serde(default = "default_pos_len")]
    pub pos_emb_max_len: usize,
    #[serde(default = "default_kernel")]
    pub conv_kernel_size: usize,
    #[serde(default = "default_conv_norm")]
    pub conv_norm_type: ConvNorm,
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    #[serde(default = "default_dropout")]
    pub dropout_pre_encoder: f64,
    #[serde(default = "default_dropout")]
    pub dropout_emb: f64,
    #[serde(default)]
    pub dropout_att: f64,
}

impl ConformerConfig {
    /// A named size: `tiny` (tests), `small` (CPU training, about 13 M parameters with the CTC head),
    /// `medium`, `large` (NeMo Conformer-CTC Large shapes).
    pub fn preset(name: &str, feat_in: usize) -> Option<Self> {
        let (d_model, n_heads, n_layers, kernel) = match name {
            "tiny" => (64, 4, 2, 15),
            "small" => (176, 4, 16, 31),
            "medium" => (256, 4, 18, 31),
            "large" => (512, 8, 18, 31),
            _ => return None,
        };
        Some(Self {
            feat_in,
            n_layers,
            d_model,
            feat_out: -1,
            subsampling: Subsampling::Striding,
            subsampling_factor: 4,
            subsampling_conv_channels: -1,
            ff_expansion_factor: 4,
            n_heads,
            xscaling: true,
            untie_biases: true,
            pos_emb_max_len: 5000,
            conv_kernel_size: kernel,
            conv_norm_type: ConvNorm::BatchNorm,
            dropout: 0.1,
            dropout_pre_encoder: 0.1,
            dropout_emb: if name == "large" { 0.0 } else { 0.1 },
            dropout_att: 0.1,
        })
    }

    /// Checks the combinations the encoder supports, naming the offending key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.d_model == 0 || self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(format!(
                "encoder.d_model ({}) must be a positive multiple of encoder.n_heads ({})",
                self.d_model, self.n_heads
            ));
        }
        if !self.subsampling_factor.is_power_of_two() || self.subsampling_factor < 2 {
            return Err(format!(
                "encoder.subsampling_factor must be a power of two ≥ 2, got {}",
                self.subsampling_factor
            ));
        }
        if self.conv_kernel_size.is_multiple_of(2) {
            return Err(format!(
                "encoder.conv_kernel_size must be odd, got {}",
                self.conv_kernel_size
            ));
        }
        if self.feat_in == 0 || self.n_layers == 0 {
            return Err("encoder.feat_in and encoder.n_layers must be positive".into());
        }
        Ok(())
    }

    fn conv_channels(&self) -> usize {
        if self.subsampling_conv_channels > 0 {
            self.subsampling_conv_channels as usize
        } else {
            self.d_model
        }
    }

    /// Output width of the encoder.
    pub fn output_dim(&self) -> usize {
        if self.feat_out > 0 {
            self.feat_out as usize
        } else {
            self.d_model
        }
    }

    /// Number of halvings of the time axis.
    fn stages(&self) -> usize {
        self.subsampling_factor.trailing_zeros() as usize
    }

    /// Frames after subsampling for `len` input frames (NeMo's calc_length for kernel 3, stride 2, padding 1).
    pub fn output_length(&self, len: usize) -> usize {
        (0..self.stages()).fold(len, |l, _| if l == 0 { 0 } else { (l - 1) / 2 + 1 })
    }
}

/// Zeroes time frames at or beyond each sequence's length; `x` is [B, C, T, F].
fn mask_time_4d(x: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    let (b, _, t, _) = x.dims4()?;
    let mask = time_mask(lengths, b, t, x.device())?.reshape((b, 1, t, 1))?;
    x.broadcast_mul(&mask)
}

/// A [B, T] f32 tensor: 1 for valid frames, 0 for padding.
pub fn time_mask(lengths: &[usize], b: usize, t: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; b * t];
    for (i, &l) in lengths.iter().enumerate() {
        for v in &mut m[i * t..i * t + l.min(t)] {
            *v = 1.0;
        }
    }
    Tensor::from_vec(m, (b, t), device)
}

enum SubLayer {
    Conv(Conv2dLayer),
    Relu,
}

/// `encoder.pre_encode`: the Conv2d stack over (time, features) and the linear `out`.
pub struct ConvSubsampling {
    layers: Vec<SubLayer>,
    out: Linear,
}

impl ConvSubsampling {
    pub fn new(cfg: &ConformerConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.conv_channels();
        let vbc = vb.pp("conv");
        let mut layers = Vec::new();
        let mut idx = 0;
        let mut freq = cfg.feat_in;
        match cfg.subsampling {
            Subsampling::Striding => {
                for s in 0..cfg.stages() {
                    let cin = if s == 0 { 1 } else { c };
                    layers.push(SubLayer::Conv(Conv2dLayer::new(
                        cin,
                        c,
                        3,
                        2,
                        1,
                        1,
                        vbc.pp(idx),
                    )?));
                    layers.push(SubLayer::Relu);
                    idx += 2;
                    freq = (freq - 1) / 2 + 1;
                }
            }
            Subsampling::DwStriding => {
                layers.push(SubLayer::Conv(Conv2dLayer::new(
                    1,
                    c,
                    3,
                    2,
                    1,
                    1,
                    vbc.pp(0),
                )?));
                layers.push(SubLayer::Relu);
                idx = 2;
                freq = (freq - 1) / 2 + 1;
                for _ in 1..cfg.stages() {
                    layers.push(SubLayer::Conv(Conv2dLayer::new(
                        c,
                        c,
                        3,
                        2,
                        1,
                        c,
                        vbc.pp(idx),
                    )?));
                    layers.push(SubLayer::Conv(Conv2dLayer::new(
                        c,
                        c,
                        1,
                        1,
                        0,
                        1,
                        vbc.pp(idx + 1),
                    )?));
                    layers.push(SubLayer::Relu);
                    idx += 3;
                    freq = (freq - 1) / 2 + 1;
                }
            }
        }
        let out = Linear::new(c * freq, cfg.d_model, true, vb.pp("out"))?;
        Ok(Self { layers, out })
    }

    /// `x`: [B, T, F] → ([B, T', d_model], lengths'), masking padded frames between layers as NeMo does.
    pub fn forward(&self, x: &Tensor, lengths: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        let mut lengths = lengths.to_vec();
        let mut x = mask_time_4d(&x.unsqueeze(1)?, &lengths)?;
        let mut layers = self.layers.iter().peekable();
        while let Some(layer) = layers.next() {
            x = match layer {
                SubLayer::Conv(conv) => {
                    if conv.strided() {
                        for l in &mut lengths {
                            *l = if *l == 0 { 0 } else { (*l - 1) / 2 + 1 };
                        }
                    }
                    if matches!(layers.peek(), Some(SubLayer::Relu)) {
                        // Convolution, mask and ReLU in one op.
                        layers.next();
                        conv.forward_relu_masked(&x, &lengths)?
                    } else {
                        mask_time_4d(&conv.forward(&x)?, &lengths)?
                    }
                }
                SubLayer::Relu => x.relu()?,
            };
        }
        let (b, c, t, f) = x.dims4()?;
        let x = x.transpose(1, 2)?.reshape((b, t, c * f))?;
        Ok((x.apply(&self.out)?, lengths))
    }
}

/// Sinusoidal relative positions T-1 … -(T-1), as NeMo's RelPositionalEncoding: [1, 2T-1, d].
pub fn relative_positions(t: usize, d: usize, device: &Device) -> Result<Tensor> {
    let n = 2 * t - 1;
    let mut pe = vec![0f32; n * d];
    for row in 0..n {
        let pos = (t as f64 - 1.0) - row as f64;
        for i in (0..d).step_by(2) {
            let div = (-(i as f64) * (10000f64).ln() / d as f64).exp();
            // NeMo computes the table in float32.
            let angle = (pos as f32) * (div as f32);
            pe[row * d + i] = angle.sin();
            if i + 1 < d {
                pe[row * d + i + 1] = angle.cos();
            }
        }
    }
    Tensor::from_vec(pe, (1, n, d), device)
}

/// `self_attn`: multi-head attention with relative positions and the pos_bias_u / pos_bias_v terms.
pub struct RelPositionMultiHeadAttention {
    linear_q: Linear,
    linear_k: Linear,
    linear_v: Linear,
    linear_out: Linear,
    linear_pos: Linear,
    pos_bias_u: Tensor,
    pos_bias_v: Tensor,
    heads: usize,
    d_k: usize,
    dropout_att: f32,
}

impl RelPositionMultiHeadAttention {
    /// `biases`: the shared (u, v) pair when `untie_biases` is false; otherwise each layer has its own.
    pub fn new(
        cfg: &ConformerConfig,
        vb: VarBuilder,
        shared: Option<(Tensor, Tensor)>,
    ) -> Result<Self> {
        let d = cfg.d_model;
        let h = cfg.n_heads;
        let (pos_bias_u, pos_bias_v) = match shared {
            Some(pair) => pair,
            None => (
                vb.get_with_hints((h, d / h), "pos_bias_u", candle_nn::Init::Const(0.0))?,
                vb.get_with_hints((h, d / h), "pos_bias_v", candle_nn::Init::Const(0.0))?,
            ),
        };
        Ok(Self {
            linear_q: Linear::new(d, d, true, vb.pp("linear_q"))?,
            linear_k: Linear::new(d, d, true, vb.pp("linear_k"))?,
            linear_v: Linear::new(d, d, true, vb.pp("linear_v"))?,
            linear_out: Linear::new(d, d, true, vb.pp("linear_out"))?,
            linear_pos: Linear::new(d, d, false, vb.pp("linear_pos"))?,
            pos_bias_u,
            pos_bias_v,
            heads: h,
            d_k: d / h,
            dropout_att: cfg.dropout_att as f32,
        })
    }

    /// `x`: [B, T, d]; `pos_emb`: [1, 2T-1, d]; `att_mask`: [B, T, T] with 1 where attention is allowed.
    pub fn forward(
        &self,
        x: &Tensor,
        pos_emb: &Tensor,
        att_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (h, dk) = (self.heads, self.d_k);
        let split = |y: Tensor| y.reshape((b, t, h, dk));
        let q = split(x.apply(&self.linear_q)?)?; // [B, T, h, dk]
        let k = split(x.apply(&self.linear_k)?)?
            .transpose(1, 2)?
            .contiguous()?; // [B, h, T, dk]
        let v = split(x.apply(&self.linear_v)?)?
            .transpose(1, 2)?
            .contiguous()?;
        let p = pos_emb
            .apply(&self.linear_pos)?
            .reshape((1, 2 * t - 1, h, dk))?
            .transpose(1, 2)?
            .contiguous()?; // [1, h, 2T-1, dk]
                            // q + pos_bias as one [B·T, d] + [d] channel bias (a fast gradient for the biases).
        let with_bias = |bias: &Tensor| -> Result<Tensor> {
            add_channel_bias(&q.reshape((b * t, d))?, &bias.reshape(d)?, 1)?
                .reshape((b, t, h, dk))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q_u = with_bias(&self.pos_bias_u)?;
        let q_v = with_bias(&self.pos_bias_v)?;
        let ac = q_u.matmul(&k.transpose(2, 3)?.contiguous()?)?; // [B, h, T, T]
        let p_t = p
            .transpose(2, 3)?
            .contiguous()?
            .broadcast_as((b, h, dk, 2 * t - 1))?
            .contiguous()?;
        let bd = rel_shift(&q_v.matmul(&p_t)?)?; // [B, h, T, T]
        let scores = ((ac + bd)? / (dk as f64).sqrt())?;
        // Disallowed positions: -10000 before the softmax, 0 after it (NeMo's INF_VAL and masked_fill).
        let allowed = att_mask.unsqueeze(1)?.broadcast_as((b, h, t, t))?;
        let neg = ((allowed.ones_like()? - &allowed)? * -10000.0)?;
        let scores = (scores.broadcast_mul(&allowed)? + neg)?;
        let attn = (softmax_last(&scores, train)? * &allowed)?;
        let attn = dropout(&attn, self.dropout_att, train)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        out.apply(&self.linear_out)
    }
}

/// Transformer-XL's relative shift: out[.., i, j] = x[.., i, T-1-i+j] for x of width 2T-1.
fn rel_shift(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, n) = x.dims4()?;
    let padded = x.pad_with_zeros(D::Minus1, 1, 0)?; // [B, h, T, n+1]
    let shifted = padded
        .reshape((b, h, n + 1, t))?
        .narrow(2, 1, n)?
        .contiguous()?
        .reshape((b, h, t, n))?;
    shifted.narrow(3, 0, t)?.contiguous()
}

/// `feed_forwardN`: Linear(d, 4d) → Swish → dropout → Linear(4d, d).
pub struct FeedForward {
    linear1: Linear,
    linear2: Linear,
    dropout: f32,
}

impl FeedForward {
    pub fn new(cfg: &ConformerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let inner = d * cfg.ff_expansion_factor;
        Ok(Self {
            linear1: Linear::new(d, inner, true, vb.pp("linear1"))?,
            linear2: Linear::new(inner, d, true, vb.pp("linear2"))?,
            dropout: cfg.dropout as f32,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = candle_nn::ops::silu(&x.apply(&self.linear1)?)?;
        dropout(&y, self.dropout, train)?.apply(&self.linear2)
    }
}

enum ConvNormLayer {
    Batch(BatchNorm1d),
    Layer(LayerNorm),
}

/// `conv`: pointwise Conv1d(d, 2d) → GLU → mask → depthwise Conv1d(k) → norm → Swish → pointwise Conv1d(d, d).
pub struct ConvModule {
    pointwise_conv1: Pointwise,
    depthwise_conv: DepthwiseConv1dLayer,
    norm: ConvNormLayer,
    pointwise_conv2: Pointwise,
}

impl ConvModule {
    pub fn new(cfg: &ConformerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let k = cfg.conv_kernel_size;
        let norm = match cfg.conv_norm_type {
            ConvNorm::BatchNorm => ConvNormLayer::Batch(BatchNorm1d::new(d, vb.pp("batch_norm"))?),
            ConvNorm::LayerNorm => {
                ConvNormLayer::Layer(LayerNorm::new(d, 1e-5, vb.pp("batch_norm"))?)
            }
        };
        Ok(Self {
            pointwise_conv1: Pointwise::new(d, 2 * d, vb.pp("pointwise_conv1"))?,
            depthwise_conv: DepthwiseConv1dLayer::new(d, k, vb.pp("depthwise_conv"))?,
            norm,
            pointwise_conv2: Pointwise::new(d, d, vb.pp("pointwise_conv2"))?,
        })
    }

    /// `x`: [B, T, d]; `valid`: [B, T] (1 valid, 0 padding).
    pub fn forward(&self, x: &Tensor, valid: &Tensor, train: bool) -> Result<Tensor> {
        // The pointwise convolutions and the GLU run channels-last ([B, T, C]), the depthwise one and the norm
        // channels-first.
        let y = self.pointwise_conv1.forward_channels_last(x)?; // [B, T, 2d]
        let d = y.dim(2)? / 2;
        let y = (y.narrow(2, 0, d)? * candle_nn::ops::sigmoid(&y.narrow(2, d, d)?)?)?;
        let y = y.broadcast_mul(&valid.unsqueeze(2)?)?;
        let y = self
            .depthwise_conv
            .forward(&y.transpose(1, 2)?.contiguous()?)?; // [B, d, T]
        let y = match &self.norm {
            ConvNormLayer::Batch(bn) => bn.forward(&y, train)?,
            ConvNormLayer::Layer(ln) => ln
                .forward(&y.transpose(1, 2)?.contiguous()?, train)?
                .transpose(1, 2)?
                .contiguous()?,
        };
        let y = candle_nn::ops::silu(&y)?.transpose(1, 2)?;
        self.pointwise_conv2.forward_channels_last(&y)
    }
}

/// `layers.N`: ½FF → MHSA → Conv → ½FF → LayerNorm, each with a residual.
pub struct ConformerLayer {
    norm_feed_forward1: LayerNorm,
    feed_forward1: FeedForward,
    norm_conv: LayerNorm,
    conv: ConvModule,
    norm_self_att: LayerNorm,
    self_attn: RelPositionMultiHeadAttention,
    norm_feed_forward2: LayerNorm,
    feed_forward2: FeedForward,
    norm_out: LayerNorm,
    dropout: f32,
}

impl ConformerLayer {
    pub fn new(
        cfg: &ConformerConfig,
        vb: VarBuilder,
        shared: Option<(Tensor, Tensor)>,
    ) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            norm_feed_forward1: LayerNorm::new(d, 1e-5, vb.pp("norm_feed_forward1"))?,
            feed_forward1: FeedForward::new(cfg, vb.pp("feed_forward1"))?,
            norm_conv: LayerNorm::new(d, 1e-5, vb.pp("norm_conv"))?,
            conv: ConvModule::new(cfg, vb.pp("conv"))?,
            norm_self_att: LayerNorm::new(d, 1e-5, vb.pp("norm_self_att"))?,
            self_attn: RelPositionMultiHeadAttention::new(cfg, vb.pp("self_attn"), shared)?,
            norm_feed_forward2: LayerNorm::new(d, 1e-5, vb.pp("norm_feed_forward2"))?,
            feed_forward2: FeedForward::new(cfg, vb.pp("feed_forward2"))?,
            norm_out: LayerNorm::new(d, 1e-5, vb.pp("norm_out"))?,
            dropout: cfg.dropout as f32,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        pos_emb: &Tensor,
        att_mask: &Tensor,
        valid: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let p = self.dropout;
        let y = self
            .feed_forward1
            .forward(&self.norm_feed_forward1.forward(x, train)?, train)?;
        let r = (x + (dropout(&y, p, train)? * 0.5)?)?;
        let y = self.self_attn.forward(
            &self.norm_self_att.forward(&r, train)?,
            pos_emb,
            att_mask,
            train,
        )?;
        let r = (r + dropout(&y, p, train)?)?;
        let y = self
            .conv
            .forward(&self.norm_conv.forward(&r, train)?, valid, train)?;
        let r = (r + dropout(&y, p, train)?)?;
        let y = self
            .feed_forward2
            .forward(&self.norm_feed_forward2.forward(&r, train)?, train)?;
        let r = (r + (dropout(&y, p, train)? * 0.5)?)?;
        self.norm_out.forward(&r, train)
    }
}

/// The whole encoder: features [B, feat_in, T] → encoded [B, d, T'] with lengths.
pub struct ConformerEncoder {
    pub cfg: ConformerConfig,
    pre_encode: ConvSubsampling,
    layers: Vec<ConformerLayer>,
    out_proj: Option<Linear>,
}

impl ConformerEncoder {
    /// Builds the encoder under `vb` (NeMo's prefix is `encoder`).
    pub fn new(cfg: &ConformerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let shared = if cfg.untie_biases {
            None
        } else {
            // NeMo keeps one pair, registered on the encoder and visible under every layer's name too.
            let h = cfg.n_heads;
            let dk = cfg.d_model / h;
            let vbl = vb.pp("layers").pp(0).pp("self_attn");
            Some((
                vbl.get_with_hints((h, dk), "pos_bias_u", candle_nn::Init::Const(0.0))?,
                vbl.get_with_hints((h, dk), "pos_bias_v", candle_nn::Init::Const(0.0))?,
            ))
        };
        let layers = (0..cfg.n_layers)
            .map(|i| ConformerLayer::new(cfg, vb.pp("layers").pp(i), shared.clone()))
            .collect::<Result<Vec<_>>>()?;
        let out_proj = if cfg.feat_out > 0 && cfg.feat_out as usize != cfg.d_model {
            Some(Linear::new(
                cfg.d_model,
                cfg.feat_out as usize,
                true,
                vb.pp("out_proj"),
            )?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            pre_encode: ConvSubsampling::new(cfg, vb.pp("pre_encode"))?,
            layers,
            out_proj,
        })
    }

    /// `features`: [B, feat_in, T]; returns ([B, d_out, T'], lengths').
    pub fn forward(
        &self,
        features: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<(Tensor, Vec<usize>)> {
        let (x, lengths, _) = self.forward_capturing(features, lengths, train, &[])?;
        Ok((x, lengths))
    }

    /// [`Self::forward`], also returning the outputs of the layers in `capture` (0-based, as NeMo's
    /// `interctc.apply_at_layers`), each through the output projection like the final output: [B, d_out, T'].
    pub fn forward_capturing(
        &self,
        features: &Tensor,
        lengths: &[usize],
        train: bool,
        capture: &[usize],
    ) -> Result<(Tensor, Vec<usize>, Vec<Tensor>)> {
        if let Some(&bad) = capture.iter().find(|&&l| l >= self.layers.len()) {
            candle_core::bail!(
                "cannot capture layer {bad}: the encoder has {} layers (0-based indices)",
                self.layers.len()
            );
        }
        let project = |x: &Tensor| -> Result<Tensor> {
            let x = match &self.out_proj {
                Some(p) => x.apply(p)?,
                None => x.clone(),
            };
            x.transpose(1, 2)?.contiguous()
        };
        let mut captured = vec![None; capture.len()];
        let x = features.transpose(1, 2)?.contiguous()?;
        let (x, lengths) = self.pre_encode.forward(&x, lengths)?;
        let (b, t, d) = x.dims3()?;
        let x = if self.cfg.xscaling {
            (x * (d as f64).sqrt())?
        } else {
            x
        };
        let pos_emb = relative_positions(t, d, x.device())?;
        let x = dropout(&x, self.cfg.dropout_pre_encoder as f32, train)?;
        let pos_emb = dropout(&pos_emb, self.cfg.dropout_emb as f32, train)?;
        let valid = time_mask(&lengths, b, t, x.device())?;
        let att_mask = valid.unsqueeze(2)?.broadcast_mul(&valid.unsqueeze(1)?)?; // [B, T, T]
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &pos_emb, &att_mask, &valid, train)?;
            for (slot, _) in captured.iter_mut().zip(capture).filter(|(_, &at)| at == i) {
                *slot = Some(project(&x)?);
            }
        }
        let captured = captured.into_iter().flatten().collect();
        Ok((project(&x)?, lengths, captured))
    }

    /// Number of parameters of an encoder with this configuration.
    pub fn num_parameters(vars: &candle_nn::VarMap) -> usize {
        vars.all_vars().iter().map(|v| v.elem_count()).sum()
    }
}

/// Default dtype of the models.
pub const DTYPE: DType = DType::F32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctc::CtcHead;

    fn count(name: &str, vocab: usize) -> usize {
        let cfg = ConformerConfig::preset(name, 80).unwrap();
        let vars = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DTYPE, &Device::Cpu);
        ConformerEncoder::new(&cfg, vb.pp("encoder")).unwrap();
        CtcHead::new(cfg.output_dim(), vocab, vb.pp("decoder")).unwrap();
        ConformerEncoder::num_parameters(&vars)
    }

    #[test]
    fn presets_have_the_documented_sizes() {
        let small = count("small", 256);
        assert!((5_000_000..=15_000_000).contains(&small), "small: {small}");
        let tiny = count("tiny", 64);
        assert!(tiny < 1_000_000, "tiny: {tiny}");
        let large = ConformerConfig::preset("large", 80).unwrap();
        assert_eq!((large.d_model, large.n_heads, large.n_layers), (512, 8, 18));
        assert!(ConformerConfig::preset("huge", 80).is_none());
    }

    #[test]
    fn output_lengths_follow_nemo_calc_length() {
        let mut cfg = ConformerConfig::preset("tiny", 80).unwrap();
        // floor((L - 1) / 2 + 1) per stage.
        assert_eq!(cfg.output_length(1000), 250);
        assert_eq!(cfg.output_length(1001), 251);
        assert_eq!(cfg.output_length(7), 2);
        cfg.subsampling_factor = 8;
        assert_eq!(cfg.output_length(1001), 126);
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let mut cfg = ConformerConfig::preset("tiny", 80).unwrap();
        cfg.n_heads = 3;
        assert!(cfg.validate().unwrap_err().contains("encoder.n_heads"));
        let mut cfg = ConformerConfig::preset("tiny", 80).unwrap();
        cfg.subsampling_factor = 6;
        assert!(cfg
            .validate()
            .unwrap_err()
            .contains("encoder.subsampling_factor"));
        let mut cfg = ConformerConfig::preset("tiny", 80).unwrap();
        cfg.conv_kernel_size = 4;
        assert!(cfg
            .validate()
            .unwrap_err()
            .contains("encoder.conv_kernel_size"));
    }

    #[test]
    fn training_mode_has_gradients_for_every_parameter() {
        let cfg = ConformerConfig::preset("tiny", 16).unwrap();
        let vars = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DTYPE, &Device::Cpu);
        let enc = ConformerEncoder::new(&cfg, vb.pp("encoder")).unwrap();
        let head = CtcHead::new(cfg.output_dim(), 10, vb.pp("decoder")).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 16, 40), &Device::Cpu).unwrap();
        let (y, _) = enc.forward(&x, &[40, 30], true).unwrap();
        let loss = head
            .log_probs(&y)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let data = vars.data().lock().unwrap();
        for (name, var) in data.iter() {
            if name.contains("running_") {
                continue;
            }
            assert!(
                grads.get(var.as_tensor()).is_some(),
                "no gradient for {name}"
            );
        }
    }
}
