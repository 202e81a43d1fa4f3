//! Element types of the CPU kernels and their vectorisable row primitives (fast exp, log-sum-exp).

/// A floating-point element the CPU kernels read logits as and write gradients in.
pub trait Elem: Copy + Send + Sync + PartialOrd + 'static {
    /// Widens to f64.
    fn to_f64(self) -> f64;
    /// Narrows from f64 (rounding).
    fn from_f64(v: f64) -> Self;
    /// The row's log-sum-exp as `(m, s)` with `ln(sum_k exp(x_k)) = m + s`, `m` the row maximum
    /// (kept separately so that `x_k - m` can be formed exactly in the element type).
    fn row_logsumexp(x: &[Self]) -> (Self, f64);
    /// `out_k = exp((x_k - shift) + offset) * mul`; `offset = -inf` or `mul = 0` give zeros.
    fn row_exp_affine(x: &[Self], shift: Self, offset: f64, mul: f64, out: &mut [Self]);
    /// Clamps every element of `out` to `[-c, c]` (NaN is kept).
    fn row_clamp(out: &mut [Self], c: f64);
    /// A row of zeros.
    fn zero() -> Self;
}

impl Elem for f64 {
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
    fn row_logsumexp(x: &[f64]) -> (f64, f64) {
        let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if x.iter().any(|v| v.is_nan()) {
            return (f64::NAN, 0.0);
        }
        if m.is_infinite() {
            return (m, 0.0);
        }
        let s: f64 = x.iter().map(|&v| (v - m).exp()).sum();
        (m, s.ln())
    }
    fn row_exp_affine(x: &[f64], shift: f64, offset: f64, mul: f64, out: &mut [f64]) {
        if offset == f64::NEG_INFINITY || mul == 0.0 {
            out.iter_mut().for_each(|o| *o = 0.0);
            return;
        }
        for (o, &v) in out.iter_mut().zip(x) {
            *o = ((v - shift) + offset).exp() * mul;
        }
    }
    fn row_clamp(out: &mut [f64], c: f64) {
        for o in out.iter_mut() {
            if *o > c {
                *o = c;
            } else if *o < -c {
                *o = -c;
            }
        }
    }
    fn zero() -> Self {
        0.0
    }
}

impl Elem for f32 {
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn row_logsumexp(x: &[f32]) -> (f32, f64) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { lse_f32_avx2(x) };
        }
        lse_f32_body(x)
    }
    fn row_exp_affine(x: &[f32], shift: f32, offset: f64, mul: f64, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { exp_affine_f32_avx2(x, shift, offset, mul, out) };
        }
        exp_affine_f32_body(x, shift, offset, mul, out)
    }
    fn row_clamp(out: &mut [f32], c: f64) {
        let c = c as f32;
        for o in out.iter_mut() {
            // written as selects so that it vectorises and keeps NaN
            let v = *o;
            let v = if v > c { c } else { v };
            *o = if v < -c { -c } else { v };
        }
    }
    fn zero() -> Self {
        0.0
    }
}

const LANES: usize = 8;

/// `exp(x)` for f32 with about 1 ulp of error (Cephes' polynomial), written without branches or
/// library calls so that loops over it vectorise. `exp(-inf) = 0`, `exp(+inf) = inf`, NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting rounds to an integer
    let xc = x.clamp(-87.336_55, 88.376_26);
    let big = xc * LOG2E + ROUND;
    let n = big - ROUND;
    // the integer n sits in the low mantissa bits of `big`: build 2^n from bits, no float-to-int
    // conversion (which would not vectorise)
    let ni = big.to_bits().wrapping_sub(ROUND.to_bits());
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    let v = y * scale;
    let v = if x < -87.336_55 { 0.0 } else { v };
    let v = if x > 88.722_83 { f32::INFINITY } else { v };
    if x.is_nan() {
        x
    } else {
        v
    }
}

#[inline(always)]
fn lse_f32_body(x: &[f32]) -> (f32, f64) {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut nan = false;
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for i in 0..LANES {
            let v = ch[i];
            nan |= v.is_nan();
            mx[i] = if v > mx[i] { v } else { mx[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in rest {
        nan |= v.is_nan();
        m = if v > m { v } else { m };
    }
    for v in mx {
        m = if v > m { v } else { m };
    }
    if nan {
        return (f32::NAN, 0.0);
    }
    if m.is_infinite() {
        return (m, 0.0);
    }
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    for ch in chunks {
        for i in 0..LANES {
            acc[i] += exp_f32(ch[i] - m);
        }
    }
    let mut s = 0f64;
    for &v in rest {
        s += exp_f32(v - m) as f64;
    }
    for a in acc {
        s += a as f64;
    }
    (m, s.ln())
}

#[inline(always)]
fn exp_affine_f32_body(x: &[f32], shift: f32, offset: f64, mul: f64, out: &mut [f32]) {
    if offset == f64::NEG_INFINITY || mul == 0.0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    // `x - shift` (shift = the row maximum) is formed exactly enough in f32; `offset` is a small
    // log-domain correction (minus the log of the row's sum of exponentials, plus a log-occupancy).
    let off = offset as f32;
    let mul = mul as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp_f32((v - shift) + off) * mul;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lse_f32_avx2(x: &[f32]) -> (f32, f64) {
    lse_f32_body(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_affine_f32_avx2(x: &[f32], shift: f32, offset: f64, mul: f64, out: &mut [f32]) {
    exp_affine_f32_body(x, shift, offset, mul, out)
}

/// `ln(exp(a) + exp(b))` in f64, exact for infinite arguments.
#[inline]
pub fn lse2(a: f64, b: f64) -> f64 {
    let (m, n) = if a > b { (a, b) } else { (b, a) };
    if n == f64::NEG_INFINITY {
        return m;
    }
    m + (n - m).exp().ln_1p()
}

/// `ln(exp(a) + exp(b) + exp(c))` in f64 (the scalar reference for the vectorised rows).
#[cfg(test)]
#[inline]
pub fn lse3(a: f64, b: f64, c: f64) -> f64 {
    let m = a.max(b).max(c);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp() + (c - m).exp()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_matches_std_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_7;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn row_logsumexp_f32_agrees_with_f64() {
        let x: Vec<f32> = (0..1037)
            .map(|i| ((i * 7919) % 113) as f32 * 0.37 - 20.0)
            .collect();
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (m, s) = f32::row_logsumexp(&x);
        let a = m as f64 + s;
        let (m, s) = f64::row_logsumexp(&x64);
        let b = m + s;
        assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        assert_eq!(
            f32::row_logsumexp(&[f32::NEG_INFINITY; 9]).0,
            f32::NEG_INFINITY
        );
        assert!(f32::row_logsumexp(&[0.0, f32::NAN, 1.0]).0.is_nan());
        let mut out = vec![0f32; x.len()];
        let (m, s) = f32::row_logsumexp(&x);
        f32::row_exp_affine(&x, m, -s, 1.0, &mut out);
        let total: f64 = out.iter().map(|&v| v as f64).sum();
        assert!((total - 1.0).abs() < 1e-6, "softmax sums to {total}");
    }

    #[test]
    fn lse_helpers() {
        let n = f64::NEG_INFINITY;
        assert_eq!(lse2(n, n), n);
        assert_eq!(lse3(n, n, n), n);
        assert!((lse2(0.0, 0.0) - 2f64.ln()).abs() < 1e-15);
        assert!((lse3(1.0, n, 1.0) - (1.0 + 2f64.ln())).abs() < 1e-15);
    }
}
