//! CTC forward (alpha) and backward (beta, gradient) on the CPU, in log space, parallel over the batch.

use super::elem::Elem;
use super::lattice::{exp_sum, lse3_rows};
use crate::batch::CtcBatch;
use crate::options::CtcInput;
use rayon::prelude::*;

const NEG_INF: f64 = f64::NEG_INFINITY;

/// What the forward pass keeps for the backward pass: small next to the input (`T x (2L+3)` log
/// alphas per sample, two numbers per frame for the fused log-softmax).
#[derive(Debug)]
pub(crate) struct CtcSaved<E> {
    /// Per sample, log alpha rows of stride `2L+3` (two leading `-inf` pads, then states
    /// `0..2L+1`), alpha including the emission at `t`.
    alpha: Vec<Vec<f64>>,
    /// Per `(b, t)` the row maximum of the logits (logits input only).
    shift: Vec<E>,
    /// Per `(b, t)` `ln(sum exp(x - shift))` (logits input only).
    lnsum: Vec<f64>,
    /// Per sample log-likelihood `ln p(y | x)`.
    pub log_lik: Vec<f64>,
}

/// One sample's extended label sequence `blank, l1, blank, ..., blank`, the additive skip mask
/// (`0` where the transition `s-2 -> s` is allowed, `-inf` elsewhere) and the distinct classes.
struct Extended {
    ext: Vec<usize>,
    skip_add: Vec<f64>,
    classes: Vec<usize>,
}

impl Extended {
    fn new(labels: &[u32], blank: usize) -> Self {
        let w = 2 * labels.len() + 1;
        let mut ext = Vec::with_capacity(w);
        // two trailing pads so that `skip_add[s + 2]` is always in range
        let mut skip_add = vec![NEG_INF; w + 2];
        for s in 0..w {
            if s % 2 == 0 {
                ext.push(blank);
            } else {
                let l = labels[s / 2] as usize;
                ext.push(l);
                if s >= 3 && labels[s / 2 - 1] as usize != l {
                    skip_add[s] = 0.0;
                }
            }
        }
        let mut classes = ext.clone();
        classes.sort_unstable();
        classes.dedup();
        Extended {
            ext,
            skip_add,
            classes,
        }
    }
}

/// States `lo..hi` that are reachable at frame `t` and can still finish by frame `tb - 1`.
#[inline]
fn window(t: usize, tb: usize, w: usize) -> (usize, usize) {
    let lo = w.saturating_sub(2 * (tb - t));
    let hi = (2 * t + 2).min(w);
    (lo, hi.max(lo))
}

/// Fills `lpg[s] = log p(ext[s] | frame)` for `s` in `lo..hi`.
#[inline]
fn gather<E: Elem>(
    row: &[E],
    ext: &[usize],
    input: CtcInput,
    shift: E,
    lnsum: f64,
    (lo, hi): (usize, usize),
    lpg: &mut [f64],
) {
    match input {
        CtcInput::LogProbs => {
            for s in lo..hi {
                lpg[s] = row[ext[s]].to_f64();
            }
        }
        CtcInput::Logits => {
            let sh = shift.to_f64();
            for s in lo..hi {
                lpg[s] = (row[ext[s]].to_f64() - sh) - lnsum;
            }
        }
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
    let frame = |i: usize, tt: usize| -> (&[E], E, f64) {
        let r = &x[(i * t + tt) * c..(i * t + tt + 1) * c];
        match input {
            CtcInput::Logits => (r, shift[i * t + tt], lnsum[i * t + tt]),
            CtcInput::LogProbs => (r, E::zero(), 0.0),
        }
    };
    let per: Vec<(Vec<f64>, f64)> = (0..b)
        .into_par_iter()
        .map(|i| {
            let tb = batch.input_lengths[i];
            let ex = Extended::new(&batch.targets[i], batch.blank);
            let w = ex.ext.len();
            if tb == 0 {
                return (Vec::new(), if w == 1 { 0.0 } else { NEG_INF });
            }
            if w > 2 * tb + 1 {
                // more labels than frames: no alignment at all
                return (Vec::new(), NEG_INF);
            }
            let ws = w + 2;
            let mut alpha = vec![NEG_INF; tb * ws];
            let mut lpg = vec![0f64; w];
            {
                let (r, sh, ls) = frame(i, 0);
                let win = (0, w.min(2));
                gather(r, &ex.ext, input, sh, ls, win, &mut lpg);
                alpha[2..2 + win.1].copy_from_slice(&lpg[..win.1]);
            }
            for tt in 1..tb {
                let (r, sh, ls) = frame(i, tt);
                let (lo, hi) = window(tt, tb, w);
                gather(r, &ex.ext, input, sh, ls, (lo, hi), &mut lpg);
                let (done, rest) = alpha.split_at_mut(tt * ws);
                let prev = &done[(tt - 1) * ws..];
                // padded index p = s + 2: prev[p] is state s, prev[p-1] is s-1, prev[p-2] is s-2
                lse3_rows(
                    &prev[lo + 2..hi + 2],
                    &prev[lo + 1..hi + 1],
                    &prev[lo..hi],
                    &ex.skip_add[lo..hi],
                    Some(&lpg[lo..hi]),
                    &mut rest[lo + 2..hi + 2],
                );
            }
            let last = &alpha[(tb - 1) * ws + 2..tb * ws];
            let ll = if w > 1 {
                super::elem::lse2(last[w - 1], last[w - 2])
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
        let ex = Extended::new(&batch.targets[i], batch.blank);
        let w = ex.ext.len();
        let ws = w + 2;
        let alpha = &saved.alpha[i];
        let mut acc = vec![0f64; c];
        let mut gam = vec![0f64; w];
        let mut lpg = vec![0f64; w];
        // log beta excluding the emission at t, two trailing -inf pads; the last frame may end in
        // either final state
        let mut beta = vec![NEG_INF; ws];
        let mut next = vec![NEG_INF; ws];
        let mut v = vec![NEG_INF; ws];
        beta[w - 1] = 0.0;
        if w > 1 {
            beta[w - 2] = 0.0;
        }
        for tt in (0..tb).rev() {
            let r = &x[(i * t + tt) * c..(i * t + tt + 1) * c];
            let (sh, ls) = match input {
                CtcInput::Logits => (saved.shift[i * t + tt], saved.lnsum[i * t + tt]),
                CtcInput::LogProbs => (E::zero(), 0.0),
            };
            let (lo, hi) = window(tt, tb, w);
            let arow = &alpha[tt * ws + 2..(tt + 1) * ws];
            exp_sum(&arow[lo..hi], &beta[lo..hi], -ll, &mut gam[lo..hi]);
            for s in lo..hi {
                acc[ex.ext[s]] += gam[s];
            }
            let orow = &mut slab[tt * c..(tt + 1) * c];
            match input {
                CtcInput::Logits => {
                    E::row_exp_affine(r, sh, -ls, wgt, orow);
                    let shf = sh.to_f64();
                    for &k in &ex.classes {
                        let p = ((r[k].to_f64() - shf) - ls).exp();
                        orow[k] = E::from_f64((p - acc[k]) * wgt);
                        acc[k] = 0.0;
                    }
                }
                CtcInput::LogProbs => {
                    orow.iter_mut().for_each(|o| *o = E::zero());
                    for &k in &ex.classes {
                        orow[k] = E::from_f64(-acc[k] * wgt);
                        acc[k] = 0.0;
                    }
                }
            }
            if tt == 0 {
                break;
            }
            // beta_{t-1}[s] = lse(v[s], v[s+1], v[s+2] if skip into s+2) with v = beta_t + lp_t
            gather(r, &ex.ext, input, sh, ls, (lo, hi), &mut lpg);
            v.iter_mut().for_each(|e| *e = NEG_INF);
            for s in lo..hi {
                v[s] = beta[s] + lpg[s];
            }
            let (plo, phi) = window(tt - 1, tb, w);
            next.iter_mut().for_each(|e| *e = NEG_INF);
            lse3_rows(
                &v[plo..phi],
                &v[plo + 1..phi + 1],
                &v[plo + 2..phi + 2],
                &ex.skip_add[plo + 2..phi + 2],
                None,
                &mut next[plo..phi],
            );
            std::mem::swap(&mut beta, &mut next);
        }
    });
}
