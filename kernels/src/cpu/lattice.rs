//! Vectorisable f64 kernels for the CTC lattice rows: exp, ln and three-way log-sum-exp over slices.

const NEG_INF: f64 = f64::NEG_INFINITY;

/// `exp(x)` in f64 to about 1 ulp, without branches or library calls (vectorises).
/// `exp(-inf) = 0`, `exp(+inf) = inf`, NaN stays NaN.
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let xc = x.clamp(-708.0, 709.0);
    let big = xc * LOG2E + ROUND;
    let n = big - ROUND;
    let ni = big.to_bits().wrapping_sub(ROUND.to_bits());
    let r = xc - n * LN2_HI - n * LN2_LO;
    // Taylor series to degree 12: truncation below 2e-16 for |r| <= ln2 / 2
    let mut p = 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let scale = f64::from_bits(ni.wrapping_add(1023) << 52);
    let v = p * scale;
    let v = if x < -708.0 { 0.0 } else { v };
    let v = if x > 709.78 { f64::INFINITY } else { v };
    if x.is_nan() {
        x
    } else {
        v
    }
}

/// `ln(y)` in f64 for normal `y >= 0` to about 1 ulp (vectorises); `ln(0) = -inf`.
#[inline(always)]
pub fn ln_f64(y: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const MANT: u64 = 0x000f_ffff_ffff_ffff;
    const ONE: u64 = 0x3ff0_0000_0000_0000;
    const TWO52: f64 = 4_503_599_627_370_496.0;
    let bits = y.to_bits();
    // biased exponent as an exact f64 without an int-to-float conversion
    let e = f64::from_bits(0x4330_0000_0000_0000 | (bits >> 52)) - TWO52 - 1023.0;
    let m = f64::from_bits((bits & MANT) | ONE);
    let big = m > std::f64::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = if big { e + 1.0 } else { e };
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let mut p = 1.0 / 19.0;
    p = p * z2 + 1.0 / 17.0;
    p = p * z2 + 1.0 / 15.0;
    p = p * z2 + 1.0 / 13.0;
    p = p * z2 + 1.0 / 11.0;
    p = p * z2 + 1.0 / 9.0;
    p = p * z2 + 1.0 / 7.0;
    p = p * z2 + 1.0 / 5.0;
    p = p * z2 + 1.0 / 3.0;
    p = p * z2 + 1.0;
    let lnm = 2.0 * z * p;
    let v = e * LN2_HI + (e * LN2_LO + lnm);
    let v = if y == 0.0 { NEG_INF } else { v };
    if y.is_nan() || y == f64::INFINITY {
        y
    } else {
        v
    }
}

/// `ln(exp(a) + exp(b) + exp(c))`, vectorisable; `-inf` when all three are `-inf`.
#[inline(always)]
fn lse3v(a: f64, b: f64, c: f64) -> f64 {
    let m = if a > b { a } else { b };
    let m = if c > m { c } else { m };
    let valid = m > NEG_INF;
    let mm = if valid { m } else { 0.0 };
    let s = exp_f64(a - mm) + exp_f64(b - mm) + exp_f64(c - mm);
    let r = mm + ln_f64(s);
    if valid {
        r
    } else {
        NEG_INF
    }
}

#[inline(always)]
fn lse3_rows_body(
    c0: &[f64],
    c1: &[f64],
    c2: &[f64],
    c2_add: &[f64],
    add: Option<&[f64]>,
    out: &mut [f64],
) {
    let n = out.len();
    let (c0, c1, c2, c2_add) = (&c0[..n], &c1[..n], &c2[..n], &c2_add[..n]);
    match add {
        Some(add) => {
            let add = &add[..n];
            for i in 0..n {
                out[i] = lse3v(c0[i], c1[i], c2[i] + c2_add[i]) + add[i];
            }
        }
        None => {
            for i in 0..n {
                out[i] = lse3v(c0[i], c1[i], c2[i] + c2_add[i]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lse3_rows_avx2(
    c0: &[f64],
    c1: &[f64],
    c2: &[f64],
    c2_add: &[f64],
    add: Option<&[f64]>,
    out: &mut [f64],
) {
    lse3_rows_body(c0, c1, c2, c2_add, add, out)
}

/// `out[i] = lse(c0[i], c1[i], c2[i] + c2_add[i]) (+ add[i])` over equal-length slices.
pub fn lse3_rows(
    c0: &[f64],
    c1: &[f64],
    c2: &[f64],
    c2_add: &[f64],
    add: Option<&[f64]>,
    out: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { lse3_rows_avx2(c0, c1, c2, c2_add, add, out) };
    }
    lse3_rows_body(c0, c1, c2, c2_add, add, out)
}

#[inline(always)]
fn exp_sum_body(a: &[f64], b: &[f64], c: f64, out: &mut [f64]) {
    let n = out.len();
    let (a, b) = (&a[..n], &b[..n]);
    for i in 0..n {
        out[i] = exp_f64(a[i] + b[i] + c);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_sum_avx2(a: &[f64], b: &[f64], c: f64, out: &mut [f64]) {
    exp_sum_body(a, b, c, out)
}

/// `out[i] = exp(a[i] + b[i] + c)`.
pub fn exp_sum(a: &[f64], b: &[f64], c: f64, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { exp_sum_avx2(a, b, c, out) };
    }
    exp_sum_body(a, b, c, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_ln_match_std() {
        let mut worst_e = 0f64;
        let mut worst_l = 0f64;
        let mut x = -707.0f64;
        while x < 709.0 {
            let want = x.exp();
            worst_e = worst_e.max(((exp_f64(x) - want) / want).abs());
            x += 0.0137;
        }
        let mut y = 1e-300f64;
        while y < 1e300 {
            let want = y.ln();
            let got = ln_f64(y);
            worst_l = worst_l.max((got - want).abs() / want.abs().max(1e-300));
            y *= 1.0173;
        }
        for y in [1.0, 1.5, 2.0, 3.0, 1.0 + 1e-12, 2.999_999] {
            worst_l = worst_l.max((ln_f64(y) - y.ln()).abs() / y.ln().abs().max(1e-300));
        }
        assert!(worst_e < 1e-15, "exp relative error {worst_e:.2e}");
        assert!(worst_l < 1e-15, "ln relative error {worst_l:.2e}");
        assert_eq!(exp_f64(NEG_INF), 0.0);
        assert_eq!(exp_f64(f64::INFINITY), f64::INFINITY);
        assert!(exp_f64(f64::NAN).is_nan());
        assert_eq!(ln_f64(0.0), NEG_INF);
        assert_eq!(ln_f64(1.0), 0.0);
    }

    #[test]
    fn lse3_rows_matches_scalar() {
        let a = [0.0, NEG_INF, -3.0, 5.0, NEG_INF];
        let b = [1.0, NEG_INF, -700.0, 5.0, 2.0];
        let c = [-1.0, NEG_INF, NEG_INF, 5.0, NEG_INF];
        let z = [0.0; 5];
        let mut out = [0.0; 5];
        lse3_rows(&a, &b, &c, &z, None, &mut out);
        for i in 0..5 {
            let want = super::super::elem::lse3(a[i], b[i], c[i]);
            assert!(
                (out[i] == want) || (out[i] - want).abs() < 1e-14 * want.abs().max(1.0),
                "{i}: {} vs {want}",
                out[i]
            );
        }
    }
}
