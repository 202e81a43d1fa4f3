//! RNN-T (transducer) inference as NeMo runs it: the prediction network (embedding + LSTM), the joint network
//! and greedy decoding with a cap on the tokens emitted per encoder frame.

use candle_core::{DType, Result};
use candle_nn::VarBuilder;
use mezcla_kernels::sgemm::{gemm, PackedB};
use serde::{Deserialize, Serialize};

use crate::vector_math as vm;

/// The joint network's activation (NeMo's `joint.jointnet.activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JointActivation {
    Relu,
    Tanh,
    Sigmoid,
}

/// The shapes and greedy-decoding settings of an RNN-T head (NeMo's `decoder`, `joint` and `decoding.greedy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransducerConfig {
    /// Width of the label embedding and of every LSTM layer (`decoder.prednet.pred_hidden`).
    pub pred_hidden: usize,
    /// LSTM layers of the prediction network (`decoder.prednet.pred_rnn_layers`).
    pub pred_rnn_layers: usize,
    /// Width of the joint network (`joint.jointnet.joint_hidden`).
    pub joint_hidden: usize,
    pub activation: JointActivation,
    /// At most this many tokens are emitted at one encoder frame before greedy decoding moves on
    /// (`decoding.greedy.max_symbols`); `None`: no limit.
    pub max_symbols: Option<usize>,
}

impl TransducerConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.pred_hidden == 0 || self.joint_hidden == 0 || self.pred_rnn_layers == 0 {
            return Err(
                "transducer: pred_hidden, joint_hidden and pred_rnn_layers must be positive".into(),
            );
        }
        if self.max_symbols == Some(0) {
            return Err("transducer: max_symbols must be positive (or absent for no limit)".into());
        }
        Ok(())
    }
}

fn tensor(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Vec<f32>> {
    vb.get(shape.to_vec(), name)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// `weight` [cout, cin] and `bias` [cout] under `vb`, packed for products.
fn linear(vb: &VarBuilder, cin: usize, cout: usize) -> Result<PackedB> {
    let w = tensor(vb, &[cout, cin], "weight")?;
    let b = tensor(vb, &[cout], "bias")?;
    Ok(PackedB::from_transposed(&w, cout, cin, cin).with_bias(&b))
}

/// One LSTM layer in PyTorch's layout: gates i, f, g, o stacked in the rows of the weights.
struct LstmLayer {
    /// W_ih with b_ih + b_hh as its bias.
    input: PackedB,
    /// W_hh, no bias.
    hidden: PackedB,
}

/// The recurrent state of the prediction network: (h, c) of every layer.
#[derive(Clone)]
struct PredState {
    h: Vec<Vec<f32>>,
    c: Vec<Vec<f32>>,
}

/// A transducer head: prediction network and joint, weights under NeMo's names (`decoder.prediction.…`,
/// `joint.…`).
pub struct Transducer {
    cfg: TransducerConfig,
    /// Label embedding [rows, pred_hidden]; the blank has no row or a padding row, and is never embedded.
    embed: Vec<f32>,
    embed_rows: usize,
    lstm: Vec<LstmLayer>,
    enc: PackedB,
    pred: PackedB,
    out: PackedB,
    classes: usize,
}

/// What greedy decoding found: the tokens with their encoder frames and, when asked for, the joint's
/// log-probabilities at every step it evaluated.
#[derive(Debug, Clone, Default)]
pub struct TransducerPath {
    /// Emitted tokens (never the blank) and the encoder frame of each.
    pub tokens: Vec<(u32, usize)>,
    /// The encoder frame of each evaluated step (`log_probs` rows), in order.
    pub step_frames: Vec<usize>,
    /// Log-probabilities [steps, classes] of the joint at each step, if recorded.
    pub log_probs: Vec<f32>,
}

impl Transducer {
    /// Packs the weights of an RNN-T head; `vb` is the model's root, `enc_dim` the encoder output width and
    /// `vocab_size` the vocabulary without the blank (the joint has `vocab_size + 1` outputs, blank last).
    pub fn new(
        cfg: &TransducerConfig,
        enc_dim: usize,
        vocab_size: usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let h = cfg.pred_hidden;
        let pred = vb.pp("decoder").pp("prediction");
        // blank_as_pad: the blank has a (padding) row; otherwise there are only the vocabulary's rows.
        let embed_vb = pred.pp("embed");
        let embed_rows = if embed_vb.contains_tensor("weight")
            && embed_vb.get((vocab_size + 1, h), "weight").is_ok()
        {
            vocab_size + 1
        } else {
            vocab_size
        };
        let embed = tensor(&embed_vb, &[embed_rows, h], "weight")?;
        let rnn = pred.pp("dec_rnn").pp("lstm");
        let lstm = (0..cfg.pred_rnn_layers)
            .map(|l| {
                let w_ih = tensor(&rnn, &[4 * h, h], &format!("weight_ih_l{l}"))?;
                let w_hh = tensor(&rnn, &[4 * h, h], &format!("weight_hh_l{l}"))?;
                let b_ih = tensor(&rnn, &[4 * h], &format!("bias_ih_l{l}"))?;
                let b_hh = tensor(&rnn, &[4 * h], &format!("bias_hh_l{l}"))?;
                let bias: Vec<f32> = b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect();
                Ok(LstmLayer {
                    input: PackedB::from_transposed(&w_ih, 4 * h, h, h).with_bias(&bias),
                    hidden: PackedB::from_transposed(&w_hh, 4 * h, h, h),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if rnn.contains_tensor(&format!("weight_ih_l{}", cfg.pred_rnn_layers)) {
            candle_core::bail!(
                "decoder.prediction.dec_rnn.lstm has more than the {} layers of the config",
                cfg.pred_rnn_layers
            );
        }
        let joint = vb.pp("joint");
        let j = cfg.joint_hidden;
        // joint_net is [activation, dropout, linear] or, without dropout, [activation, linear].
        let net = joint.pp("joint_net");
        let out_vb = if net.pp(2).contains_tensor("weight") {
            net.pp(2)
        } else {
            net.pp(1)
        };
        let classes = vocab_size + 1;
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            embed_rows,
            lstm,
            enc: linear(&joint.pp("enc"), enc_dim, j)?,
            pred: linear(&joint.pp("pred"), h, j)?,
            out: linear(&out_vb, j, classes)?,
            classes,
        })
    }

    /// Output classes (vocabulary + blank).
    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn config(&self) -> &TransducerConfig {
        &self.cfg
    }

    /// One step of the prediction network: `label` None is the start (an all-zero input, as NeMo feeds
    /// it); returns the last layer's output and updates `state`.
    fn predict(&self, label: Option<u32>, state: &mut PredState) -> Vec<f32> {
        let h = self.cfg.pred_hidden;
        let mut x = match label {
            Some(id) => {
                let row = id as usize;
                debug_assert!(row < self.embed_rows);
                self.embed[row * h..(row + 1) * h].to_vec()
            }
            None => vec![0f32; h],
        };
        let mut gates = vec![0f32; 4 * h];
        for (l, layer) in self.lstm.iter().enumerate() {
            gemm(&x, h, 1, &layer.input, &mut gates, 4 * h, false, false);
            gemm(
                &state.h[l],
                h,
                1,
                &layer.hidden,
                &mut gates,
                4 * h,
                true,
                false,
            );
            let (c, out) = (&mut state.c[l], &mut state.h[l]);
            for k in 0..h {
                let i = sigmoid(gates[k]);
                let f = sigmoid(gates[h + k]);
                let g = gates[2 * h + k].tanh();
                let o = sigmoid(gates[3 * h + k]);
                c[k] = f * c[k] + i * g;
                out[k] = o * c[k].tanh();
            }
            x.copy_from_slice(out);
        }
        x
    }

    /// Greedy decoding of one utterance's encoder output `encoded` [frames, enc_dim] (time-major), as NeMo's
    /// greedy and greedy_batch strategies do: at each frame, tokens are emitted while the joint's best class is
    /// not the blank (at most `max_symbols`), the prediction network advancing after each; a blank moves to
    /// the next frame. With `record`, the log-probabilities of every evaluated step are kept.
    pub fn greedy(&self, encoded: &[f32], frames: usize, record: bool) -> Result<TransducerPath> {
        let d = self.enc.k();
        if encoded.len() < frames * d {
            candle_core::bail!(
                "transducer: {} encoder values do not hold {frames} × {d}",
                encoded.len()
            );
        }
        let j = self.cfg.joint_hidden;
        let blank = (self.classes - 1) as u32;
        let mut enc = vec![0f32; frames * j];
        gemm(encoded, d, frames, &self.enc, &mut enc, j, false, true);
        let layers = self.cfg.pred_rnn_layers;
        let h = self.cfg.pred_hidden;
        let mut state = PredState {
            h: vec![vec![0f32; h]; layers],
            c: vec![vec![0f32; h]; layers],
        };
        let mut pred = vec![0f32; j];
        let g = self.predict(None, &mut state);
        gemm(&g, h, 1, &self.pred, &mut pred, j, false, false);
        let mut hidden = vec![0f32; j];
        let mut logits = vec![0f32; self.classes];
        let mut path = TransducerPath::default();
        for t in 0..frames {
            let mut emitted = 0usize;
            loop {
                if emitted == RUNAWAY {
                    candle_core::bail!(
                        "transducer: {RUNAWAY} tokens at encoder frame {t} without a blank; the model sets no \
                         limit (decoding.greedy.max_symbols)"
                    );
                }
                for ((o, &e), &p) in hidden.iter_mut().zip(&enc[t * j..(t + 1) * j]).zip(&pred) {
                    *o = e + p;
                }
                match self.cfg.activation {
                    JointActivation::Relu => hidden.iter_mut().for_each(|v| *v = v.max(0.0)),
                    JointActivation::Tanh => hidden.iter_mut().for_each(|v| *v = v.tanh()),
                    JointActivation::Sigmoid => hidden.iter_mut().for_each(|v| *v = sigmoid(*v)),
                }
                gemm(
                    &hidden,
                    j,
                    1,
                    &self.out,
                    &mut logits,
                    self.classes,
                    false,
                    false,
                );
                let best = vm::argmax(&logits) as u32;
                if record {
                    let start = path.log_probs.len();
                    path.log_probs.extend_from_slice(&logits);
                    vm::log_softmax(&mut path.log_probs[start..]);
                    path.step_frames.push(t);
                }
                if best == blank {
                    break;
                }
                if best as usize >= self.embed_rows {
                    candle_core::bail!("transducer: class {best} has no embedding row");
                }
                path.tokens.push((best, t));
                emitted += 1;
                let g = self.predict(Some(best), &mut state);
                gemm(&g, h, 1, &self.pred, &mut pred, j, false, false);
                if self.cfg.max_symbols.is_some_and(|m| emitted >= m) {
                    break;
                }
            }
        }
        Ok(path)
    }
}

/// Without `max_symbols`, greedy decoding stops with an error rather than loop forever at one frame.
const RUNAWAY: usize = 10_000;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;

    /// A head whose joint ignores the prediction network: the emitted tokens are the encoder's choice.
    fn scripted(max_symbols: Option<usize>) -> Transducer {
        let (v, h, j, d) = (3usize, 2usize, 4usize, 4usize);
        let dev = Device::Cpu;
        let t = |data: Vec<f32>, shape: &[usize]| Tensor::from_vec(data, shape, &dev).unwrap();
        let mut m = HashMap::new();
        m.insert(
            "decoder.prediction.embed.weight".into(),
            t(vec![0.1; (v + 1) * h], &[v + 1, h]),
        );
        for (name, n) in [("weight_ih_l0", 4 * h * h), ("weight_hh_l0", 4 * h * h)] {
            m.insert(
                format!("decoder.prediction.dec_rnn.lstm.{name}"),
                t(vec![0.3; n], &[4 * h, h]),
            );
        }
        for name in ["bias_ih_l0", "bias_hh_l0"] {
            m.insert(
                format!("decoder.prediction.dec_rnn.lstm.{name}"),
                t(vec![0.0; 4 * h], &[4 * h]),
            );
        }
        // enc: identity; pred: zero; out: identity (4 classes = 3 tokens + blank).
        let eye: Vec<f32> = (0..j * d)
            .map(|i| if i / d == i % d { 1.0 } else { 0.0 })
            .collect();
        m.insert("joint.enc.weight".into(), t(eye.clone(), &[j, d]));
        m.insert("joint.enc.bias".into(), t(vec![0.0; j], &[j]));
        m.insert("joint.pred.weight".into(), t(vec![0.0; j * h], &[j, h]));
        m.insert("joint.pred.bias".into(), t(vec![0.0; j], &[j]));
        m.insert("joint.joint_net.1.weight".into(), t(eye, &[v + 1, j]));
        m.insert(
            "joint.joint_net.1.bias".into(),
            t(vec![0.0; v + 1], &[v + 1]),
        );
        let vb = VarBuilder::from_tensors(m, DType::F32, &dev);
        let cfg = TransducerConfig {
            pred_hidden: h,
            pred_rnn_layers: 1,
            joint_hidden: j,
            activation: JointActivation::Relu,
            max_symbols,
        };
        Transducer::new(&cfg, d, v, &vb).unwrap()
    }

    #[test]
    fn a_frame_whose_best_class_stays_a_token_emits_up_to_the_cap() {
        // Frame 0 prefers token 1, frame 1 the blank, frame 2 token 2.
        let enc = [0., 5., 0., 1., 0., 0., 0., 5., 0., 0., 5., 1.];
        let path = scripted(Some(2)).greedy(&enc, 3, true).unwrap();
        // The joint ignores the prediction network, so frames 0 and 2 each hit the cap of 2.
        assert_eq!(path.tokens, vec![(1, 0), (1, 0), (2, 2), (2, 2)]);
        assert_eq!(path.step_frames, vec![0, 0, 1, 2, 2]);
        assert_eq!(path.log_probs.len(), 5 * 4);
        let unlimited_then_capped = scripted(Some(3)).greedy(&enc, 3, false).unwrap();
        assert_eq!(unlimited_then_capped.tokens.len(), 6);
        assert!(unlimited_then_capped.log_probs.is_empty());
        // No cap, and a joint that never prefers the blank at frame 0: an error, not an endless loop.
        let e = scripted(None)
            .greedy(&enc, 3, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("frame 0") && e.contains("max_symbols"), "{e}");
    }
}
