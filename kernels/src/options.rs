//! Options shared by the loss kernels: reductions, blank id, input kind, regularisers.

/// How per-sample losses are combined (the same four choices for CTC and RNN-T).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// One loss per sample, shape `(B,)`.
    None,
    /// Sum over the batch.
    Sum,
    /// PyTorch's `mean`: each loss divided by its target length (clamped to at least 1), then the
    /// batch mean.
    #[default]
    Mean,
    /// Plain batch mean (NeMo's `mean_batch`, torchaudio's `mean`).
    MeanBatch,
}

impl Reduction {
    /// The weight of sample `b`'s loss in the reduced loss (for `None`, the weight in their sum).
    pub fn weight(self, target_len: usize, batch: usize) -> f64 {
        match self {
            Reduction::None | Reduction::Sum => 1.0,
            Reduction::MeanBatch => 1.0 / batch as f64,
            Reduction::Mean => 1.0 / (batch as f64 * target_len.max(1) as f64),
        }
    }

    /// Parses `none`, `sum`, `mean`, `mean_batch`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Reduction::None),
            "sum" => Some(Reduction::Sum),
            "mean" => Some(Reduction::Mean),
            "mean_batch" => Some(Reduction::MeanBatch),
            _ => None,
        }
    }
}

/// What the CTC input holds along its last axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CtcInput {
    /// Unnormalised logits; the log-softmax is fused into the kernel (gradient w.r.t. the logits).
    #[default]
    Logits,
    /// Log-probabilities (e.g. a `log_softmax` output). The gradient returned is the exact gradient
    /// with respect to this input, `-occupancy`; PyTorch instead returns `exp(lp) - occupancy`,
    /// which differs by a term that the upstream log-softmax's backward cancels, so gradients
    /// w.r.t. the logits agree with PyTorch's.
    LogProbs,
}

/// Options of [`crate::ctc_loss`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CtcOptions {
    /// Blank id; `None` means the last class `C - 1` (NeMo's convention).
    pub blank: Option<usize>,
    /// Reduction of the per-sample losses.
    pub reduction: Reduction,
    /// Replace infinite losses (impossible alignments) and their gradients by zero.
    pub zero_infinity: bool,
    /// Logits (log-softmax fused) or log-probabilities.
    pub input: CtcInput,
}

/// Options of [`crate::rnnt_loss`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RnntOptions {
    /// Blank id; `None` means the last class `C - 1`.
    pub blank: Option<usize>,
    /// Reduction of the per-sample losses.
    pub reduction: Reduction,
    /// Clamp each sample's gradient w.r.t. the logits to `[-clamp, clamp]` (torchaudio's `clamp`);
    /// `None` (or a value `<= 0`) disables it.
    pub clamp: Option<f32>,
    /// FastEmit regularisation weight lambda (arXiv 2010.11148), `0` disables it. As in NeMo, the
    /// reported loss is `(1 + lambda) * NLL` and the gradients of the label emissions are scaled by
    /// `1 + lambda` before the log-softmax (FastEmit's eq. 10).
    pub fastemit_lambda: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduction_parse_and_weights() {
        assert_eq!(Reduction::parse("mean_batch"), Some(Reduction::MeanBatch));
        assert_eq!(Reduction::parse("none"), Some(Reduction::None));
        assert_eq!(Reduction::parse("sum"), Some(Reduction::Sum));
        assert_eq!(Reduction::parse("mean"), Some(Reduction::Mean));
        assert_eq!(Reduction::parse("avg"), None);
        assert_eq!(Reduction::Mean.weight(0, 4), 0.25);
        assert_eq!(Reduction::Mean.weight(5, 4), 0.05);
        assert_eq!(Reduction::MeanBatch.weight(5, 4), 0.25);
        assert_eq!(Reduction::Sum.weight(5, 4), 1.0);
    }
}
