//! Small building blocks that pick a fused kernel at inference and a differentiable path in training.

use candle_core::{ModuleT, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::channel::{add_channel_bias, mul_channel_scale};

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
            // candle's composed layer norm, with the affine part as channel ops (fast gradients).
            let last = x.rank() - 1;
            let mean = x.mean_keepdim(D::Minus1)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            add_channel_bias(
                &mul_channel_scale(&normed, &self.weight, last)?,
                &self.bias,
                last,
            )
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

thread_local! {
    static DROPOUT_RNG: std::cell::RefCell<rand_chacha::ChaCha8Rng> =
        std::cell::RefCell::new(rand::SeedableRng::seed_from_u64(0));
}

/// Seeds this thread's dropout masks, so that a training step can be replayed exactly (e.g. after a resume).
pub fn seed_dropout(seed: u64) {
    DROPOUT_RNG.with(|r| *r.borrow_mut() = rand::SeedableRng::seed_from_u64(seed));
}

/// Dropout with probability `p` in training (inverted scaling, masks from [`seed_dropout`]'s generator),
/// identity otherwise.
pub fn dropout(x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
    if !(train && p > 0.0) {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    let n = x.elem_count();
    let scale = 1.0 / (1.0 - p);
    let mask: Vec<f32> = DROPOUT_RNG.with(|r| {
        let mut r = r.borrow_mut();
        (0..n)
            .map(|_| {
                if rand::Rng::random::<f32>(&mut *r) < p {
                    0.0
                } else {
                    scale
                }
            })
            .collect()
    });
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// A kernel-1 Conv1d (`weight` [Cout, Cin, 1], `bias` [Cout], PyTorch's names) computed as a matmul over
/// channels; candle's conv1d backward gives wrong weight gradients, this one has exact ones.
pub struct Pointwise {
    weight: Tensor,
    bias: Tensor,
}

impl Pointwise {
    pub fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / (cin as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((cout, cin, 1), "weight", init)?,
            bias: vb.get_with_hints(cout, "bias", init)?,
        })
    }

    /// [B, Cin, T] → [B, Cout, T].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_channels_last(&x.transpose(1, 2)?)?
            .transpose(1, 2)?
            .contiguous()
    }

    /// [B, T, Cin] → [B, T, Cout] (channels last): one 2-D matmul over all positions.
    pub fn forward_channels_last(&self, x: &Tensor) -> Result<Tensor> {
        let (cout, cin, _) = self.weight.dims3()?;
        let (b, t, _) = x.dims3()?;
        let w = self.weight.reshape((cout, cin))?.t()?;
        let y = x.contiguous()?.reshape((b * t, cin))?.matmul(&w)?;
        add_channel_bias(&y, &self.bias, 1)?.reshape((b, t, cout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn dropout_is_seeded_and_keeps_the_expectation() {
        let x = Tensor::ones((100, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
        seed_dropout(5);
        let a = dropout(&x, 0.3, true).unwrap();
        seed_dropout(5);
        let b = dropout(&x, 0.3, true).unwrap();
        let (va, vb) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(va, vb);
        let zeros = va.iter().filter(|v| **v == 0.0).count() as f64 / va.len() as f64;
        assert!((zeros - 0.3).abs() < 0.02, "{zeros}");
        let mean = va.iter().sum::<f32>() / va.len() as f32;
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        assert_eq!(
            dropout(&x, 0.3, false)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            10000.0
        );
    }
}
