//! The training loss: CTC on the encoder output plus NeMo's intermediate CTC losses (`interctc`) on chosen layers.
//!
//! InterCTC (Lee & Watanabe, 2021; NeMo's `InterCTCMixin`) sends the outputs of some encoder layers through the
//! same CTC head and adds their CTC losses: `total = (1 − Σ wᵢ) · final + Σ wᵢ · interᵢ`. The lower layers
//! then get a short gradient path to the loss, which is what lets deep encoders leave the all-blank plateau
//! early in training.

use anyhow::{bail, Result};
use candle_core::Tensor;
use mezcla_kernels::{ctc_loss, CtcOptions};
use mezcla_models::conformer::ConformerEncoder;
use mezcla_models::ctc::CtcHead;
use serde::{Deserialize, Serialize};

/// NeMo's `interctc` block: a loss weight per captured layer (0-based layer indices).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterCtcConfig {
    /// Weights of the intermediate losses; the final loss gets 1 minus their sum.
    #[serde(default)]
    pub loss_weights: Vec<f64>,
    /// The layers whose outputs get a CTC loss, 0-based (NeMo's `apply_at_layers`).
    #[serde(default)]
    pub apply_at_layers: Vec<usize>,
}

impl InterCtcConfig {
    /// Checks the block against an encoder of `n_layers` layers: NeMo's checks (as many weights as layers, the
    /// weights summing to less than 1), plus positive weights, layers that exist, and no layer listed twice.
    pub fn validate(&self, n_layers: usize) -> std::result::Result<(), String> {
        if self.loss_weights.len() != self.apply_at_layers.len() {
            return Err(format!(
                "interctc: loss_weights has {} entries but apply_at_layers has {}",
                self.loss_weights.len(),
                self.apply_at_layers.len()
            ));
        }
        if let Some(w) = self
            .loss_weights
            .iter()
            .find(|w| !(w.is_finite() && **w > 0.0))
        {
            return Err(format!("interctc: loss weights must be positive, got {w}"));
        }
        if self.main_weight() <= 0.0 {
            return Err(format!(
                "interctc: the loss weights sum to {}; they must sum to less than 1 (the rest weights the final loss)",
                self.loss_weights.iter().sum::<f64>()
            ));
        }
        if let Some(l) = self.apply_at_layers.iter().find(|&&l| l >= n_layers) {
            return Err(format!(
                "interctc: apply_at_layers has {l}, but the encoder's layers are 0 to {}",
                n_layers.saturating_sub(1)
            ));
        }
        let mut seen = self.apply_at_layers.clone();
        seen.sort_unstable();
        if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("interctc: layer {} is listed twice", w[0]));
        }
        Ok(())
    }

    /// Whether any intermediate loss is configured.
    pub fn enabled(&self) -> bool {
        !self.loss_weights.is_empty()
    }

    /// The weight of the final CTC loss: 1 minus the intermediate weights.
    pub fn main_weight(&self) -> f64 {
        1.0 - self.loss_weights.iter().sum::<f64>()
    }
}

/// The losses of one batch (scalars, reduced as `opts` says).
pub struct CtcLosses {
    /// What is optimised: the weighted sum (the final loss alone without `interctc`).
    pub total: Tensor,
    /// The CTC loss of the encoder output, unweighted.
    pub final_loss: Tensor,
    /// (layer, unweighted CTC loss of that layer's output), in the config's order.
    pub intermediate: Vec<(usize, Tensor)>,
    /// The encoder's output lengths.
    pub lengths: Vec<usize>,
}

/// Runs the encoder and the CTC head on `features` [B, feat_in, T] and returns the CTC losses against
/// `targets` (padded [B, S]) with their lengths.
#[allow(clippy::too_many_arguments)]
pub fn ctc_losses(
    encoder: &ConformerEncoder,
    head: &CtcHead,
    features: &Tensor,
    lengths: &[usize],
    targets: &Tensor,
    target_lengths: &[usize],
    interctc: &InterCtcConfig,
    opts: &CtcOptions,
    train: bool,
) -> Result<CtcLosses> {
    if let Err(e) = interctc.validate(encoder.cfg.n_layers) {
        bail!(e);
    }
    let (encoded, out_lengths, captured) =
        encoder.forward_capturing(features, lengths, train, &interctc.apply_at_layers)?;
    let device = features.device();
    let in_lens = Tensor::from_vec(
        out_lengths.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        out_lengths.len(),
        device,
    )?;
    let tgt_lens = Tensor::from_vec(
        target_lengths.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        target_lengths.len(),
        device,
    )?;
    let loss_of = |x: &Tensor| -> Result<Tensor> {
        Ok(ctc_loss(
            &head.logits(x)?,
            targets,
            &in_lens,
            &tgt_lens,
            opts,
        )?)
    };
    let final_loss = loss_of(&encoded)?;
    if !interctc.enabled() {
        return Ok(CtcLosses {
            total: final_loss.clone(),
            final_loss,
            intermediate: Vec::new(),
            lengths: out_lengths,
        });
    }
    let mut total = (&final_loss * interctc.main_weight())?;
    let mut intermediate = Vec::with_capacity(captured.len());
    for ((&layer, &weight), x) in interctc
        .apply_at_layers
        .iter()
        .zip(&interctc.loss_weights)
        .zip(&captured)
    {
        let loss = loss_of(x)?;
        total = (total + (&loss * weight)?)?;
        intermediate.push((layer, loss));
    }
    Ok(CtcLosses {
        total,
        final_loss,
        intermediate,
        lengths: out_lengths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(weights: &[f64], layers: &[usize]) -> InterCtcConfig {
        InterCtcConfig {
            loss_weights: weights.to_vec(),
            apply_at_layers: layers.to_vec(),
        }
    }

    #[test]
    fn the_final_loss_gets_the_rest_of_the_weight() {
        assert_eq!(InterCtcConfig::default().main_weight(), 1.0);
        assert!(!InterCtcConfig::default().enabled());
        assert!((cfg(&[0.1, 0.3], &[3, 7]).main_weight() - 0.6).abs() < 1e-12);
        assert_eq!(cfg(&[0.1, 0.3], &[3, 7]).validate(8), Ok(()));
    }

    #[test]
    fn bad_blocks_are_errors() {
        for (c, needle) in [
            (
                cfg(&[0.3], &[]),
                "loss_weights has 1 entries but apply_at_layers has 0",
            ),
            (cfg(&[0.6, 0.4], &[1, 2]), "sum to 1"),
            (cfg(&[0.0], &[1]), "must be positive"),
            (cfg(&[0.3], &[8]), "apply_at_layers has 8"),
            (cfg(&[0.1, 0.2], &[2, 2]), "layer 2 is listed twice"),
        ] {
            let err = c.validate(8).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
