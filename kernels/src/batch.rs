//! Host-side validation of targets and lengths into the per-sample description the kernels use.

use crate::error::LossError;
use candle_core::{DType, Tensor};

/// A validated CTC batch: dimensions, blank, per-sample input lengths and label sequences.
#[derive(Debug, Clone)]
pub(crate) struct CtcBatch {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub blank: usize,
    pub input_lengths: Vec<usize>,
    pub targets: Vec<Vec<u32>>,
}

/// A validated RNN-T batch: dimensions (`u1 = U + 1`), blank, logit lengths and label sequences.
#[derive(Debug, Clone)]
pub(crate) struct RnntBatch {
    pub b: usize,
    pub t: usize,
    pub u1: usize,
    pub c: usize,
    pub blank: usize,
    pub logit_lengths: Vec<usize>,
    pub targets: Vec<Vec<u32>>,
}

/// Integer values of a host or device tensor, with its shape.
pub(crate) fn int_values(
    t: &Tensor,
    loss: &'static str,
    what: &'static str,
) -> Result<(Vec<i64>, Vec<usize>), LossError> {
    let dims = t.dims().to_vec();
    let wrap = |e: candle_core::Error| LossError::Shape {
        loss,
        msg: format!("cannot read {what}: {e}"),
    };
    let flat = t.flatten_all().map_err(wrap)?;
    let v: Vec<i64> = match t.dtype() {
        DType::I64 => flat.to_vec1::<i64>().map_err(wrap)?,
        DType::I32 => flat
            .to_vec1::<i32>()
            .map_err(wrap)?
            .into_iter()
            .map(i64::from)
            .collect(),
        DType::I16 => flat
            .to_vec1::<i16>()
            .map_err(wrap)?
            .into_iter()
            .map(i64::from)
            .collect(),
        DType::U32 => flat
            .to_vec1::<u32>()
            .map_err(wrap)?
            .into_iter()
            .map(i64::from)
            .collect(),
        DType::U8 => flat
            .to_vec1::<u8>()
            .map_err(wrap)?
            .into_iter()
            .map(i64::from)
            .collect(),
        other => {
            return Err(LossError::DType {
                loss,
                what,
                dtype: format!("{other:?}"),
                expected: "an integer dtype (i64, i32, i16, u32, u8)",
            })
        }
    };
    Ok((v, dims))
}

fn resolve_blank(blank: Option<usize>, c: usize, loss: &'static str) -> Result<usize, LossError> {
    let blank = blank.unwrap_or(c.saturating_sub(1));
    if blank >= c {
        return Err(LossError::Option {
            loss,
            msg: format!("blank id {blank} is not below the number of classes {c}"),
        });
    }
    Ok(blank)
}

fn lengths(
    v: &[i64],
    dims: &[usize],
    b: usize,
    max: usize,
    loss: &'static str,
    what: &'static str,
    min: i64,
) -> Result<Vec<usize>, LossError> {
    if dims != [b] {
        return Err(LossError::Shape {
            loss,
            msg: format!("{what} must have shape ({b},), got {dims:?}"),
        });
    }
    v.iter()
        .enumerate()
        .map(|(i, &l)| {
            if l < min || l > max as i64 {
                Err(LossError::Length {
                    loss,
                    msg: format!("{what}[{i}] = {l} is outside {min}..={max}"),
                })
            } else {
                Ok(l as usize)
            }
        })
        .collect()
}

/// Splits padded `(B, S)` or concatenated `(sum of lengths,)` targets into per-sample labels,
/// checking every used id is a class and not the blank.
fn split_targets(
    targets: &[i64],
    tdims: &[usize],
    target_lengths: &[usize],
    c: usize,
    blank: usize,
    loss: &'static str,
    allow_concat: bool,
) -> Result<Vec<Vec<u32>>, LossError> {
    let b = target_lengths.len();
    let mut starts = Vec::with_capacity(b);
    match tdims {
        [tb, s] => {
            if *tb != b {
                return Err(LossError::Shape {
                    loss,
                    msg: format!("targets have {tb} rows, the batch has {b}"),
                });
            }
            for (i, &l) in target_lengths.iter().enumerate() {
                if l > *s {
                    return Err(LossError::Length {
                        loss,
                        msg: format!(
                            "target_lengths[{i}] = {l} exceeds the padded target length {s}"
                        ),
                    });
                }
                starts.push(i * s);
            }
        }
        [n] if allow_concat => {
            let total: usize = target_lengths.iter().sum();
            if total != *n {
                return Err(LossError::Shape {
                    loss,
                    msg: format!(
                        "concatenated targets have {n} ids but target_lengths sum to {total}"
                    ),
                });
            }
            let mut acc = 0;
            for &l in target_lengths {
                starts.push(acc);
                acc += l;
            }
        }
        _ => {
            return Err(LossError::Shape {
                loss,
                msg: format!(
                    "targets must be (B, S){}, got {tdims:?}",
                    if allow_concat {
                        " or concatenated (sum of target_lengths,)"
                    } else {
                        ""
                    }
                ),
            })
        }
    }
    let mut out = Vec::with_capacity(b);
    for (i, (&start, &l)) in starts.iter().zip(target_lengths).enumerate() {
        let mut seq = Vec::with_capacity(l);
        for (j, &id) in targets[start..start + l].iter().enumerate() {
            if id < 0 || id >= c as i64 {
                return Err(LossError::Target {
                    loss,
                    msg: format!("sample {i}, position {j}: id {id} is outside 0..{c}"),
                });
            }
            if id as usize == blank {
                return Err(LossError::Target {
                    loss,
                    msg: format!("sample {i}, position {j}: id {id} is the blank id"),
                });
            }
            seq.push(id as u32);
        }
        out.push(seq);
    }
    Ok(out)
}

impl CtcBatch {
    /// Validates a CTC batch for an input of dims `(B, T, C)`.
    pub fn new(
        input_dims: &[usize],
        targets: (&[i64], &[usize]),
        input_lengths: (&[i64], &[usize]),
        target_lengths: (&[i64], &[usize]),
        blank: Option<usize>,
    ) -> Result<Self, LossError> {
        const L: &str = "ctc_loss";
        let &[b, t, c] = input_dims else {
            return Err(LossError::Shape {
                loss: L,
                msg: format!("input must be (B, T, C), got {input_dims:?}"),
            });
        };
        if c == 0 {
            return Err(LossError::Shape {
                loss: L,
                msg: "input has no classes (C = 0)".into(),
            });
        }
        let blank = resolve_blank(blank, c, L)?;
        let input_lengths = lengths(
            input_lengths.0,
            input_lengths.1,
            b,
            t,
            L,
            "input_lengths",
            0,
        )?;
        let tl = lengths(
            target_lengths.0,
            target_lengths.1,
            b,
            usize::MAX >> 1,
            L,
            "target_lengths",
            0,
        )?;
        let targets = split_targets(targets.0, targets.1, &tl, c, blank, L, true)?;
        Ok(CtcBatch {
            b,
            t,
            c,
            blank,
            input_lengths,
            targets,
        })
    }

    /// Validates from candle tensors.
    pub fn from_tensors(
        input_dims: &[usize],
        targets: &Tensor,
        input_lengths: &Tensor,
        target_lengths: &Tensor,
        blank: Option<usize>,
    ) -> Result<Self, LossError> {
        const L: &str = "ctc_loss";
        let tg = int_values(targets, L, "targets")?;
        let il = int_values(input_lengths, L, "input_lengths")?;
        let tl = int_values(target_lengths, L, "target_lengths")?;
        Self::new(
            input_dims,
            (&tg.0, &tg.1),
            (&il.0, &il.1),
            (&tl.0, &tl.1),
            blank,
        )
    }

    pub fn target_lengths(&self) -> Vec<usize> {
        self.targets.iter().map(Vec::len).collect()
    }
}

impl RnntBatch {
    /// Validates an RNN-T batch for logits of dims `(B, T, U + 1, C)`.
    pub fn new(
        logits_dims: &[usize],
        targets: (&[i64], &[usize]),
        logit_lengths: (&[i64], &[usize]),
        target_lengths: (&[i64], &[usize]),
        blank: Option<usize>,
    ) -> Result<Self, LossError> {
        const L: &str = "rnnt_loss";
        let &[b, t, u1, c] = logits_dims else {
            return Err(LossError::Shape {
                loss: L,
                msg: format!("logits must be (B, T, U + 1, C), got {logits_dims:?}"),
            });
        };
        if c == 0 || u1 == 0 {
            return Err(LossError::Shape {
                loss: L,
                msg: format!("logits must have C >= 1 and U + 1 >= 1, got {logits_dims:?}"),
            });
        }
        let blank = resolve_blank(blank, c, L)?;
        // Every RNN-T alignment ends with a blank at the last frame, so a sample needs a frame.
        let logit_lengths = lengths(
            logit_lengths.0,
            logit_lengths.1,
            b,
            t,
            L,
            "logit_lengths",
            1,
        )?;
        let tl = lengths(
            target_lengths.0,
            target_lengths.1,
            b,
            u1 - 1,
            L,
            "target_lengths",
            0,
        )?;
        let targets = split_targets(targets.0, targets.1, &tl, c, blank, L, false)?;
        Ok(RnntBatch {
            b,
            t,
            u1,
            c,
            blank,
            logit_lengths,
            targets,
        })
    }

    /// Validates from candle tensors.
    pub fn from_tensors(
        logits_dims: &[usize],
        targets: &Tensor,
        logit_lengths: &Tensor,
        target_lengths: &Tensor,
        blank: Option<usize>,
    ) -> Result<Self, LossError> {
        const L: &str = "rnnt_loss";
        let tg = int_values(targets, L, "targets")?;
        let il = int_values(logit_lengths, L, "logit_lengths")?;
        let tl = int_values(target_lengths, L, "target_lengths")?;
        Self::new(
            logits_dims,
            (&tg.0, &tg.1),
            (&il.0, &il.1),
            (&tl.0, &tl.1),
            blank,
        )
    }

    pub fn target_lengths(&self) -> Vec<usize> {
        self.targets.iter().map(Vec::len).collect()
    }
}
