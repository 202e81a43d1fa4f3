//! Vectorisable f32 row operations for the CPU inference path (exp, Swish, GLU, softmax, layer norm), each
//! compiled for AVX-512, AVX2 and the baseline and chosen at run time; and the greedy decoders' argmax.

/// Defines `pub fn NAME(args)` whose body is compiled three times (AVX-512F, AVX2+FMA, baseline), the
/// widest one this CPU runs being called. The body must be plain safe code.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn medium($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match mezcla_kernels::sgemm::Isa::detect() {
                    // SAFETY: `Isa::detect` reports only features this CPU has.
                    mezcla_kernels::sgemm::Isa::Avx512 => return unsafe { wide($($arg),*) },
                    mezcla_kernels::sgemm::Isa::Avx2 => return unsafe { medium($($arg),*) },
                    mezcla_kernels::sgemm::Isa::Portable => {}
                }
            }
            body($($arg),*)
        }
    };
}

const LANES: usize = 16;

/// e^x to about 1 ulp for x in [-87, 88] (clamped outside), without branches so that loops vectorise:
/// x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r by its degree-6 Taylor polynomial, 2^n from the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and the rest (Cody and Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // The integer n sits in the low mantissa bits of `shifted`: a bit cast, no float-to-int conversion.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits(n_bits.wrapping_add(127) << 23) * p
}

/// Index of the largest value, the first of equal maxima (as `torch.argmax`); 0 for an empty row.
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

multiversion! {
    /// x ← x·σ(x).
    pub fn swish(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v /= 1.0 + exp(-*v);
        }
    }
}

multiversion! {
    /// out[c] = ab[c]·σ(ab[d + c]) for one row (d = out.len()): the GLU over channels.
    pub fn glu(out: &mut [f32], ab: &[f32]) {
        let (a, b) = ab.split_at(out.len());
        for ((o, &x), &g) in out.iter_mut().zip(a).zip(b) {
            *o = x / (1.0 + exp(-g));
        }
    }
}

multiversion! {
    /// row ← softmax((row + add)·scale), `add` as long as `row`.
    pub fn softmax_of_sum(row: &mut [f32], add: &[f32], scale: f32) {
        for (v, &a) in row.iter_mut().zip(add) {
            *v = (*v + a) * scale;
        }
        let m = max(row);
        for v in row.iter_mut() {
            *v = exp(*v - m);
        }
        let inv = 1.0 / sum(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

multiversion! {
    /// row ← log_softmax(row).
    pub fn log_softmax(row: &mut [f32]) {
        let m = max(row);
        let mut e = [0f32; LANES];
        let mut total = 0f32;
        for chunk in row.chunks(LANES) {
            for (t, &v) in e.iter_mut().zip(chunk) {
                *t = exp(v - m);
            }
            total += sum(&e[..chunk.len()]);
        }
        let lse = m + total.ln();
        for v in row.iter_mut() {
            *v -= lse;
        }
    }
}

/// Mean and 1/√(variance + 1e-5) of a row (two passes, lane-parallel sums).
#[inline(always)]
fn moments(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let mut sq = [0f32; LANES];
    let mut var = 0f32;
    for chunk in x.chunks(LANES) {
        for (s, &v) in sq.iter_mut().zip(chunk) {
            *s = (v - mean) * (v - mean);
        }
        var += sum(&sq[..chunk.len()]);
    }
    (mean, 1.0 / (var / n + 1e-5).sqrt())
}

multiversion! {
    /// out = LayerNorm(x)·w + b (eps 1e-5) for one row; `out` may not alias `x` (see [`layer_norm_in_place`]).
    pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
        let (mean, inv) = moments(x);
        for (((o, &v), &wi), &bi) in out.iter_mut().zip(x).zip(w).zip(b) {
            *o = (v - mean) * inv * wi + bi;
        }
    }
}

multiversion! {
    /// x = LayerNorm(x)·w + b (eps 1e-5) for one row, in place.
    pub fn layer_norm_in_place(x: &mut [f32], w: &[f32], b: &[f32]) {
        let (mean, inv) = moments(x);
        for ((v, &wi), &bi) in x.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * wi + bi;
        }
    }
}

multiversion! {
    /// out += w ⊙ x (element-wise), the inner step of the depthwise convolutions.
    pub fn mul_add(out: &mut [f32], w: &[f32], x: &[f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(w).zip(x) {
            *o += a * b;
        }
    }
}

multiversion! {
    /// out += s·w (a scalar times a vector).
    pub fn scaled_add(out: &mut [f32], s: f32, w: &[f32]) {
        for (o, &a) in out.iter_mut().zip(w) {
            *o += s * a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_standard_library() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "relative error {worst:e}");
        assert!(exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn row_operations_match_their_definitions() {
        let x: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 / 3.0 - 4.0)
            .collect();
        // Swish and GLU.
        let mut s = x.clone();
        swish(&mut s);
        for (g, &v) in s.iter().zip(&x) {
            let want = v as f64 / (1.0 + (-v as f64).exp());
            assert!((*g as f64 - want).abs() < 1e-6, "{g} vs {want}");
        }
        let mut g = vec![0f32; 18];
        glu(&mut g, &x[..36]);
        for c in 0..18 {
            let want = x[c] as f64 / (1.0 + (-x[18 + c] as f64).exp());
            assert!((g[c] as f64 - want).abs() < 1e-6);
        }
        // Softmax of a sum and log-softmax.
        let add: Vec<f32> = x.iter().map(|v| v * 0.5).collect();
        let mut p = x.clone();
        softmax_of_sum(&mut p, &add, 0.7);
        let z: Vec<f64> = x.iter().map(|&v| (v as f64 * 1.5) * 0.7).collect();
        let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
        for (pi, zi) in p.iter().zip(&z) {
            assert!((*pi as f64 - (zi - lse).exp()).abs() < 1e-6);
        }
        let mut l = x.clone();
        log_softmax(&mut l);
        let lse = x.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        for (li, &v) in l.iter().zip(&x) {
            assert!((*li as f64 - (v as f64 - lse)).abs() < 1e-5);
        }
        // Layer norm, out of place and in place.
        let w: Vec<f32> = (0..37).map(|i| 0.5 + i as f32 / 37.0).collect();
        let b: Vec<f32> = (0..37).map(|i| i as f32 / 10.0 - 1.0).collect();
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / 37.0;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 37.0;
        let mut out = vec![0f32; 37];
        layer_norm(&x, &w, &b, &mut out);
        let mut inplace = x.clone();
        layer_norm_in_place(&mut inplace, &w, &b);
        for i in 0..37 {
            let want = (x[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64 + b[i] as f64;
            assert!((out[i] as f64 - want).abs() < 1e-5, "{} vs {want}", out[i]);
            assert_eq!(out[i], inplace[i]);
        }
    }
}
