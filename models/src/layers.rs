//! Small building blocks that pick a fused kernel at inference and a differentiable path in training.

use candle_core::{ModuleT, Result, Tensor, D};
use candle_nn::VarBuilder;

/// LayerNorm over the last dimension with `weight` and `bias` (PyTorch's nn.LayerNorm).
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?,
            eps,
        })
    }

    /// The fused kernel has no backward, so training takes the composed path.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps as f32)
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

/// BatchNorm1d over channels of [B, C, T]: batch statistics (and running-stat updates) in training, running
/// statistics otherwise.
pub struct BatchNorm1d {
    inner: candle_nn::BatchNorm,
}

impl BatchNorm1d {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            inner: candle_nn::batch_norm(channels, candle_nn::BatchNormConfig::default(), vb)?,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.inner.forward_t(x, true)
        } else {
            self.inner.forward_t(x, false)
        }
    }
}

/// Softmax over the last dimension (the fused kernel at inference, the differentiable one in training).
pub fn softmax_last(x: &Tensor, train: bool) -> Result<Tensor> {
    if train {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// Dropout with probability `p` in training, identity otherwise.
pub fn dropout(x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
    if train && p > 0.0 {
        candle_nn::ops::dropout(x, p)
    } else {
        Ok(x.clone())
    }
}
