//! RNN-T forward (alpha) and backward (beta, gradient) on the CPU over the T x (U+1) lattice, with
//! the log-softmax fused: parallel over the batch and over the lattice's frames.

use super::elem::{lse2, Elem};
use crate::batch::RnntBatch;
use rayon::prelude::*;

const NEG_INF: f64 = f64::NEG_INFINITY;

/// Per-sample lattice state kept from the forward pass, `T_b x (U_b + 1)` numbers each: nothing
/// of the logits' size.
#[derive(Debug)]
pub(crate) struct RnntSample<E> {
    /// Row maximum of the logits at each cell.
    shift: Vec<E>,
    /// `ln(sum exp(x - shift))` at each cell.
    lnsum: Vec<f64>,
    /// Log-probability of blank at each cell.
    lpb: Vec<f64>,
    /// Log-probability of the next label at each cell (`-inf` on the last column).
    lpe: Vec<f64>,
    /// Log alpha (prefix probability before emitting at the cell).
    alpha: Vec<f64>,
    /// `ln p(y | x)`.
    pub log_lik: f64,
}

/// Forward pass: per-sample negative log-likelihoods and the lattice state.
pub(crate) fn forward<E: Elem>(x: &[E], batch: &RnntBatch) -> Vec<RnntSample<E>> {
    let (t, u1, c) = (batch.t, batch.u1, batch.c);
    debug_assert_eq!(x.len(), batch.b * t * u1 * c);
    (0..batch.b)
        .into_par_iter()
        .map(|i| {
            let tb = batch.logit_lengths[i];
            let y = &batch.targets[i];
            let w = y.len() + 1;
            let n = tb * w;
            let mut shift = vec![E::zero(); n];
            let mut lnsum = vec![0f64; n];
            let mut lpb = vec![0f64; n];
            let mut lpe = vec![NEG_INF; n];
            shift
                .par_chunks_mut(w)
                .zip(lnsum.par_chunks_mut(w))
                .zip(lpb.par_chunks_mut(w).zip(lpe.par_chunks_mut(w)))
                .enumerate()
                .for_each(|(tt, ((sh, ls), (pb, pe)))| {
                    for u in 0..w {
                        let off = ((i * t + tt) * u1 + u) * c;
                        let row = &x[off..off + c];
                        let (m, s) = E::row_logsumexp(row);
                        sh[u] = m;
                        ls[u] = s;
                        let mf = m.to_f64();
                        pb[u] = (row[batch.blank].to_f64() - mf) - s;
                        if u + 1 < w {
                            pe[u] = (row[y[u] as usize].to_f64() - mf) - s;
                        }
                    }
                });
            let mut alpha = vec![NEG_INF; n];
            alpha[0] = 0.0;
            for tt in 0..tb {
                for u in 0..w {
                    if tt == 0 && u == 0 {
                        continue;
                    }
                    let from_t = if tt > 0 {
                        alpha[(tt - 1) * w + u] + lpb[(tt - 1) * w + u]
                    } else {
                        NEG_INF
                    };
                    let from_u = if u > 0 {
                        alpha[tt * w + u - 1] + lpe[tt * w + u - 1]
                    } else {
                        NEG_INF
                    };
                    alpha[tt * w + u] = lse2(from_t, from_u);
                }
            }
            let log_lik = alpha[n - 1] + lpb[n - 1];
            RnntSample {
                shift,
                lnsum,
                lpb,
                lpe,
                alpha,
                log_lik,
            }
        })
        .collect()
}

/// Backward pass: writes into `out` (`(B, T, U+1, C)`) the gradient of `sum_b weight_b * loss_b`
/// w.r.t. the logits, with FastEmit (`lambda`) and the per-sample clamp applied as torchaudio /
/// NeMo do; cells outside a sample's lattice get zeros.
pub(crate) fn backward<E: Elem>(
    x: &[E],
    batch: &RnntBatch,
    saved: &[RnntSample<E>],
    weights: &[f64],
    lambda: f64,
    clamp: Option<f64>,
    out: &mut [E],
) {
    let (t, u1, c) = (batch.t, batch.u1, batch.c);
    let blank = batch.blank;
    out.par_chunks_mut(t * u1 * c)
        .enumerate()
        .for_each(|(i, slab)| {
            let st = &saved[i];
            let tb = batch.logit_lengths[i];
            let y = &batch.targets[i];
            let w = y.len() + 1;
            let wgt = weights[i];
            let ll = st.log_lik;
            // log beta: probability of the rest including the emission at the cell
            let mut beta = vec![NEG_INF; tb * w];
            for tt in (0..tb).rev() {
                for u in (0..w).rev() {
                    let k = tt * w + u;
                    beta[k] = if tt == tb - 1 && u == w - 1 {
                        st.lpb[k]
                    } else {
                        let down = if tt + 1 < tb {
                            beta[k + w] + st.lpb[k]
                        } else {
                            NEG_INF
                        };
                        let right = if u + 1 < w {
                            beta[k + 1] + st.lpe[k]
                        } else {
                            NEG_INF
                        };
                        lse2(down, right)
                    };
                }
            }
            slab[tb * u1 * c..].iter_mut().for_each(|v| *v = E::zero());
            let cl = clamp.map(|v| v * wgt.abs());
            slab[..tb * u1 * c]
                .par_chunks_mut(u1 * c)
                .enumerate()
                .for_each(|(tt, frame)| {
                    frame[w * c..].iter_mut().for_each(|v| *v = E::zero());
                    for u in 0..w {
                        let k = tt * w + u;
                        let a = st.alpha[k];
                        // occupancies of the blank and the emission leaving this cell
                        let gb = if tt + 1 < tb {
                            (a + st.lpb[k] + beta[k + w] - ll).exp()
                        } else if u == w - 1 {
                            (a + st.lpb[k] - ll).exp()
                        } else {
                            0.0
                        };
                        let ge = if u + 1 < w {
                            (a + st.lpe[k] + beta[k + 1] - ll).exp()
                        } else {
                            0.0
                        };
                        let total = gb + (1.0 + lambda) * ge;
                        let off = ((i * t + tt) * u1 + u) * c;
                        let row = &x[off..off + c];
                        let orow = &mut frame[u * c..(u + 1) * c];
                        E::row_exp_affine(row, st.shift[k], total.ln() - st.lnsum[k], wgt, orow);
                        let fix = |g: f64| {
                            let g = match clamp {
                                Some(cv) => g.clamp(-cv, cv),
                                None => g,
                            };
                            E::from_f64(g * wgt)
                        };
                        orow[blank] = fix(st.lpb[k].exp() * total - gb);
                        if u + 1 < w {
                            let l = y[u] as usize;
                            orow[l] = fix(st.lpe[k].exp() * total - (1.0 + lambda) * ge);
                        }
                        if let Some(cv) = cl {
                            E::row_clamp(orow, cv);
                        }
                    }
                });
        });
}
