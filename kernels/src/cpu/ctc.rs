//! CTC forward (alpha) and backward (beta, gradient) on the CPU, in log space, parallel over the batch.

use super::elem::{lse2, lse3, Elem};
use crate::batch::CtcBatch;
use crate::options::CtcInput;
use rayon::prelude::*;

const NEG_INF: f64 = f64::NEG_INFINITY;

/// What the forward pass keeps for the backward pass: small next to the input (`T x (2L+1)` log
/// alphas per sample, two numbers per frame for the fused log-softmax).
#[derive(Debug)]
pub(crate) struct CtcSaved<E> {
    /// Per sample, log alpha row-major `(T_b, 2L+1)`, alpha including the emission at `t`.
    alpha: Vec<Vec<f64>>,
    /// Per `(b, t)` the row maximum of the logits (logits input only).
    shift: Vec<E>,
    /// Per `(b, t)` `ln(sum exp(x - shift))` (logits input only).
    lnsum: Vec<f64>,
    /// Per sample log-likelihood `ln p(y | x)`.
    pub log_lik: Vec<f64>,
}

/// The extended label sequence `blank, l1, blank, l2, ..., blank` and where skips are allowed.
fn extended(labels: &[u32], blank: usize) -> (Vec<usize>, Vec<bool>) {
    let w = 2 * labels.len() + 1;
    let mut ext = Vec::with_capacity(w);
    let mut skip = Vec::with_capacity(w);
    for s in 0..w {
        if s % 2 == 0 {
            ext.push(blank);
            skip.push(false);
        } else {
            let l = labels[s / 2] as usize;
            ext.push(l);
            skip.push(s >= 3 && labels[s / 2 - 1] as usize != l);
        }
    }
    (ext, skip)
}

/// Log-probability of class `c` in row `row` (`x` already the row's slice).
#[inline]
fn lp_of<E: Elem>(row: &[E], c: usize, input: CtcInput, shift: E, lnsum: f64) -> f64 {
    match input {
        CtcInput::LogProbs => row[c].to_f64(),
        CtcInput::Logits => (row[c].to_f64() - shift.to_f64()) - lnsum,
    }
}

/// Forward pass: per-sample negative log-likelihoods (`+inf` for impossible alignments) and the
/// state for [`backward`]. `x` is the contiguous `(B, T, C)` input.
pub(crate) fn forward<E: Elem>(
    x: &[E],
    batch: &CtcBatch,
    input: CtcInput,
    keep: bool,
) -> (Vec<f64>, CtcSaved<E>) {
    let (b, t, c) = (batch.b, batch.t, batch.c);
    debug_assert_eq!(x.len(), b * t * c);
    let (shift, lnsum) = match input {
        CtcInput::Logits => row_lse(x, batch),
        CtcInput::LogProbs => (Vec::new(), Vec::new()),
    };
    let per: Vec<(Vec<f64>, f64)> = (0..b)
        .into_par_iter()
        .map(|i| {
            let tb = batch.input_lengths[i];
            let (ext, skip) = extended(&batch.targets[i], batch.blank);
            let w = ext.len();
            if tb == 0 {
                let ll = if w == 1 { 0.0 } else { NEG_INF };
                return (Vec::new(), ll);
            }
            let mut alpha = vec![NEG_INF; tb * w];
            let row = |tt: usize| &x[(i * t + tt) * c..(i * t + tt + 1) * c];
            let srow = |tt: usize| -> (E, f64) {
                match input {
                    CtcInput::Logits => (shift[i * t + tt], lnsum[i * t + tt]),
                    CtcInput::LogProbs => (E::zero(), 0.0),
                }
            };
            {
                let (sh, ls) = srow(0);
                let r = row(0);
                alpha[0] = lp_of(r, ext[0], input, sh, ls);
                if w > 1 {
                    alpha[1] = lp_of(r, ext[1], input, sh, ls);
                }
            }
            for tt in 1..tb {
                let (sh, ls) = srow(tt);
                let r = row(tt);
                let (prev, cur) = alpha.split_at_mut(tt * w);
                let prev = &prev[(tt - 1) * w..];
                let cur = &mut cur[..w];
                // states that can still finish: s >= w - 2 * (tb - tt); reachable: s <= 2 * tt + 1
                let lo = (w as isize - 2 * (tb - tt) as isize).max(0) as usize;
                let hi = (2 * tt + 2).min(w);
                for s in lo..hi {
                    let a = prev[s];
                    let b1 = if s >= 1 { prev[s - 1] } else { NEG_INF };
                    let acc = if skip[s] {
                        lse3(a, b1, prev[s - 2])
                    } else {
                        lse2(a, b1)
                    };
                    cur[s] = if acc == NEG_INF {
                        NEG_INF
                    } else {
                        acc + lp_of(r, ext[s], input, sh, ls)
                    };
                }
            }
            let last = &alpha[(tb - 1) * w..];
            let ll = if w > 1 {
                lse2(last[w - 1], last[w - 2])
            } else {
                last[0]
            };
            (if keep { alpha } else { Vec::new() }, ll)
        })
        .collect();
    let mut alpha = Vec::with_capacity(b);
    let mut log_lik = Vec::with_capacity(b);
    for (a, ll) in per {
        alpha.push(a);
        log_lik.push(ll);
    }
    let nll = log_lik.iter().map(|&ll| -ll).collect();
    (
        nll,
        CtcSaved {
            alpha,
            shift: if keep { shift } else { Vec::new() },
            lnsum: if keep { lnsum } else { Vec::new() },
            log_lik,
        },
    )
}

/// Row maxima and log-sums of exponentials of every valid `(b, t)` row, in parallel over rows.
fn row_lse<E: Elem>(x: &[E], batch: &CtcBatch) -> (Vec<E>, Vec<f64>) {
    let (t, c) = (batch.t, batch.c);
    let mut shift = vec![E::zero(); batch.b * t];
    let mut lnsum = vec![0f64; batch.b * t];
    shift
        .par_iter_mut()
        .zip(lnsum.par_iter_mut())
        .enumerate()
        .with_min_len(16)
        .for_each(|(r, (sh, ls))| {
            if r % t < batch.input_lengths[r / t] {
                let (m, s) = E::row_logsumexp(&x[r * c..(r + 1) * c]);
                *sh = m;
                *ls = s;
            }
        });
    (shift, lnsum)
}

/// Backward pass: writes into `out` (`(B, T, C)`) the gradient of `sum_b weight_b * loss_b` with
/// respect to the input. Impossible alignments get zeros with `zero_infinity`, else NaN on their
/// valid frames (as PyTorch); padded frames get zeros.
pub(crate) fn backward<E: Elem>(
    x: &[E],
    batch: &CtcBatch,
    input: CtcInput,
    saved: &CtcSaved<E>,
    weights: &[f64],
    zero_infinity: bool,
    out: &mut [E],
) {
    let (t, c) = (batch.t, batch.c);
    out.par_chunks_mut(t * c).enumerate().for_each(|(i, slab)| {
        let tb = batch.input_lengths[i];
        let ll = saved.log_lik[i];
        let wgt = weights[i];
        slab[tb * c..].iter_mut().for_each(|v| *v = E::zero());
        if tb == 0 {
            return;
        }
        if ll == NEG_INF {
            let fill = if zero_infinity {
                E::zero()
            } else {
                E::from_f64(f64::NAN)
            };
            slab[..tb * c].iter_mut().for_each(|v| *v = fill);
            return;
        }
        let (ext, skip) = extended(&batch.targets[i], batch.blank);
        let w = ext.len();
        let alpha = &saved.alpha[i];
        let mut touched: Vec<usize> = ext.clone();
        touched.sort_unstable();
        touched.dedup();
        let mut acc = vec![0f64; c];
        // log beta excluding the emission at t; start: the last frame may end in either final state
        let mut beta = vec![NEG_INF; w + 2];
        beta[w - 1] = 0.0;
        if w > 1 {
            beta[w - 2] = 0.0;
        }
        let mut v = vec![NEG_INF; w + 2];
        for tt in (0..tb).rev() {
            let r = &x[(i * t + tt) * c..(i * t + tt + 1) * c];
            let (sh, ls) = match input {
                CtcInput::Logits => (saved.shift[i * t + tt], saved.lnsum[i * t + tt]),
                CtcInput::LogProbs => (E::zero(), 0.0),
            };
            let arow = &alpha[tt * w..(tt + 1) * w];
            for s in 0..w {
                let g = arow[s] + beta[s] - ll;
                if g > NEG_INF {
                    acc[ext[s]] += g.exp();
                }
            }
            let orow = &mut slab[tt * c..(tt + 1) * c];
            match input {
                CtcInput::Logits => {
                    E::row_exp_affine(r, sh, -ls, wgt, orow);
                    for &k in &touched {
                        let p = lp_of(r, k, input, sh, ls).exp();
                        orow[k] = E::from_f64((p - acc[k]) * wgt);
                        acc[k] = 0.0;
                    }
                }
                CtcInput::LogProbs => {
                    orow.iter_mut().for_each(|o| *o = E::zero());
                    for &k in &touched {
                        orow[k] = E::from_f64(-acc[k] * wgt);
                        acc[k] = 0.0;
                    }
                }
            }
            if tt == 0 {
                break;
            }
            // beta_{t-1}[s] = lse(v[s], v[s+1], v[s+2] if skip[s+2]) with v = beta_t + lp_t
            for s in 0..w {
                v[s] = if beta[s] == NEG_INF {
                    NEG_INF
                } else {
                    beta[s] + lp_of(r, ext[s], input, sh, ls)
                };
            }
            for s in 0..w {
                let a = v[s];
                let b1 = if s + 1 < w { v[s + 1] } else { NEG_INF };
                beta[s] = if s + 2 < w && skip[s + 2] {
                    lse3(a, b1, v[s + 2])
                } else {
                    lse2(a, b1)
                };
            }
        }
    });
}
