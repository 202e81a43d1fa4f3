//! AdamW with saveable state, learning-rate schedules (Noam, cosine) and global-norm gradient clipping.

use std::collections::HashMap;

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Linear warm-up to `lr`, then decay with the inverse square root of the step (peak at `warmup_steps`).
    Noam,
    /// Linear warm-up to `lr`, then a half cosine down to `min_lr` at `max_steps`.
    Cosine,
}

/// The learning rate at `step` (1-based).
pub fn learning_rate(
    schedule: Schedule,
    lr: f64,
    min_lr: f64,
    warmup: u64,
    max_steps: u64,
    step: u64,
) -> f64 {
    let s = step.max(1) as f64;
    let w = warmup.max(1) as f64;
    match schedule {
        Schedule::Noam => lr * (s / w).min((w / s).sqrt()),
        Schedule::Cosine => {
            if s <= w {
                lr * s / w
            } else {
                let progress = ((s - w) / (max_steps as f64 - w).max(1.0)).min(1.0);
                min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// AdamW (decoupled weight decay) over named variables, with state that saves and loads by name.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    /// Optimises `vars` (sorted by name for a stable order).
    pub fn new(
        mut vars: Vec<(String, Var)>,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars
            .iter()
            .map(|(_, v)| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<_>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            beta1,
            beta2,
            eps: 1e-8,
            weight_decay,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One update with `grads` (by variable name); variables without a gradient are left alone.
    pub fn update(&mut self, grads: &HashMap<String, Tensor>, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(name) else { continue };
            let g = g.detach();
            let m = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?.detach();
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?.detach();
            let step = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let theta = var.as_tensor().detach();
            let next = ((theta * (1.0 - lr * self.weight_decay))? - (step * lr)?)?;
            var.set(&next)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores the moments saved by [`AdamW::state`] and the step count.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            match (
                state.get(&format!("m.{name}")),
                state.get(&format!("v.{name}")),
            ) {
                (Some(m), Some(v)) if m.dims() == var.dims() && v.dims() == var.dims() => {
                    self.m[i] = m.clone();
                    self.v[i] = v.clone();
                }
                _ => bail!("the optimizer state has no matching moments for {name}"),
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Scales the gradients so that their global L2 norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.values() {
        total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedules_warm_up_and_decay() {
        let noam = |s| learning_rate(Schedule::Noam, 1e-3, 0.0, 100, 1000, s);
        assert!((noam(50) - 5e-4).abs() < 1e-12);
        assert!((noam(100) - 1e-3).abs() < 1e-12);
        assert!((noam(400) - 5e-4).abs() < 1e-12);
        let cos = |s| learning_rate(Schedule::Cosine, 1e-3, 1e-5, 100, 1100, s);
        assert!((cos(100) - 1e-3).abs() < 1e-12);
        assert!((cos(600) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-12);
        assert!((cos(1100) - 1e-5).abs() < 1e-12);
        assert!((cos(5000) - 1e-5).abs() < 1e-12);
    }

    #[test]
    fn adamw_matches_the_closed_form_first_steps() {
        // With a constant gradient g, Adam's bias-corrected step is lr * g / (|g| + eps) = lr * sign(g).
        let var = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], 0.9, 0.98, 0.1).unwrap();
        let grads = HashMap::from([(
            "w".to_string(),
            Tensor::new(&[0.5f32, -3.0], &Device::Cpu).unwrap(),
        )]);
        opt.update(&grads, 0.01).unwrap();
        let w = var.as_tensor().to_vec1::<f32>().unwrap();
        // theta * (1 - lr * wd) - lr * sign(g)
        assert!((w[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6, "{w:?}");
        assert!((w[1] - (-2.0 * (1.0 - 0.001) + 0.01)).abs() < 1e-6, "{w:?}");
        let state = opt.state();
        let mut other = AdamW::new(vec![("w".into(), var.clone())], 0.9, 0.98, 0.1).unwrap();
        other.load_state(&state, 1).unwrap();
        assert_eq!(other.step, 1);
        assert!(other.load_state(&HashMap::new(), 1).is_err());
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut grads = HashMap::from([
            (
                "a".to_string(),
                Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
            ),
            (
                "b".to_string(),
                Tensor::new(&[4.0f32], &Device::Cpu).unwrap(),
            ),
        ]);
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let a = grads["a"].to_vec1::<f32>().unwrap()[0];
        assert!((a - 0.6).abs() < 1e-4, "{a}");
    }
}
