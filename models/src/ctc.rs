//! The CTC head (NeMo's ConvASRDecoder): a kernel-1 Conv1d from the encoder width to vocabulary + blank.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::layers::Pointwise;

/// `decoder.decoder_layers.0`: Conv1d(feat_in, num_classes + 1, 1); the blank is the last class.
pub struct CtcHead {
    conv: Pointwise,
    pub num_classes_with_blank: usize,
}

impl CtcHead {
    /// `num_classes`: the vocabulary size V (without the blank); the head has V + 1 outputs.
    pub fn new(feat_in: usize, num_classes: usize, vb: VarBuilder) -> Result<Self> {
        let conv = Pointwise::new(feat_in, num_classes + 1, vb.pp("decoder_layers").pp(0))?;
        Ok(Self {
            conv,
            num_classes_with_blank: num_classes + 1,
        })
    }

    /// Encoder output [B, d, T] → logits [B, T, V+1].
    pub fn logits(&self, encoded: &Tensor) -> Result<Tensor> {
        self.conv
            .forward_channels_last(&encoded.transpose(1, 2)?)?
            .contiguous()
    }

    /// Encoder output [B, d, T] → log-probabilities [B, T, V+1].
    pub fn log_probs(&self, encoded: &Tensor) -> Result<Tensor> {
        candle_nn::ops::log_softmax(&self.logits(encoded)?, D::Minus1)
    }
}
