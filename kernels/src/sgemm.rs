//! f32 matrix products for inference: the right operand packed into 32-column panels (once, for weights), an
//! AVX-512 or AVX2+FMA register-tiled micro-kernel chosen at run time, and row blocks spread over rayon's threads.

use rayon::prelude::*;

/// Width of a packed panel (two AVX-512 registers of 16 lanes).
pub const NR: usize = 32;

/// The right operand B [k, n] of C = A·B (with an optional bias over the n columns), stored as ⌈n/32⌉
/// panels of k rows × 32 columns, zero-padded, so that the micro-kernel reads it sequentially.
#[derive(Clone, Debug, Default)]
pub struct PackedB {
    k: usize,
    n: usize,
    data: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl PackedB {
    /// Packs B[i, j] = `f(i, j)` for i < k, j < n.
    pub fn from_fn(k: usize, n: usize, f: impl Fn(usize, usize) -> f32) -> Self {
        let mut p = Self::default();
        p.fill(k, n, f);
        p
    }

    /// B = Wᵀ for W [n, k] whose row j starts at `w[j * stride]`: the weight of a linear layer, or the keys of
    /// an attention head.
    pub fn from_transposed(w: &[f32], n: usize, k: usize, stride: usize) -> Self {
        let mut p = Self::default();
        p.fill_transposed(w, n, k, stride);
        p
    }

    /// Repacks in place (keeping the allocation) as [`PackedB::from_fn`]; drops the bias.
    pub fn fill(&mut self, k: usize, n: usize, f: impl Fn(usize, usize) -> f32) {
        self.reset(k, n);
        if k == 0 {
            return;
        }
        for (panel, dst) in self.data.chunks_mut(k * NR).enumerate() {
            for i in 0..k {
                for jj in 0..NR.min(n - panel * NR) {
                    dst[i * NR + jj] = f(i, panel * NR + jj);
                }
            }
        }
    }

    /// Repacks in place as [`PackedB::from_transposed`]; drops the bias.
    pub fn fill_transposed(&mut self, w: &[f32], n: usize, k: usize, stride: usize) {
        assert!(
            n == 0 || k == 0 || w.len() >= (n - 1) * stride + k,
            "PackedB: W too short"
        );
        self.reset(k, n);
        for (panel, dst) in self.data.chunks_mut(k * NR).enumerate() {
            for jj in 0..NR.min(n - panel * NR) {
                let row = &w[(panel * NR + jj) * stride..][..k];
                for (i, &v) in row.iter().enumerate() {
                    dst[i * NR + jj] = v;
                }
            }
        }
    }

    /// Repacks in place with B [k, n] row-major, row i at `b[i * stride]` (the values of an attention head).
    pub fn fill_rows(&mut self, b: &[f32], k: usize, n: usize, stride: usize) {
        assert!(
            n == 0 || k == 0 || b.len() >= (k - 1) * stride + n,
            "PackedB: B too short"
        );
        self.reset(k, n);
        for (panel, dst) in self.data.chunks_mut(k * NR).enumerate() {
            let width = NR.min(n - panel * NR);
            for i in 0..k {
                dst[i * NR..i * NR + width].copy_from_slice(&b[i * stride + panel * NR..][..width]);
            }
        }
    }

    /// Adds a bias over the n output columns (C = A·B + bias).
    pub fn with_bias(mut self, bias: &[f32]) -> Self {
        assert_eq!(bias.len(), self.n, "PackedB: bias length");
        let mut padded = vec![0f32; self.panels() * NR];
        padded[..self.n].copy_from_slice(bias);
        self.bias = Some(padded);
        self
    }

    fn reset(&mut self, k: usize, n: usize) {
        self.k = k;
        self.n = n;
        self.bias = None;
        self.data.clear();
        self.data.resize(n.div_ceil(NR) * k * NR, 0.0);
    }

    /// Rows of B (the inner dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B (the output width).
    pub fn n(&self) -> usize {
        self.n
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

/// The widest vector instruction set this CPU runs, detected once: the GEMM's micro-kernel and the
/// inference path's row operations (`mezcla_models::vector_math`) both dispatch on it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// AVX-512F, else AVX2 with FMA, else the portable code.
    pub fn detect() -> Self {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }

    /// Rows of A per micro-kernel call: as many as the register file holds accumulators for.
    fn rows(self) -> usize {
        match self {
            Isa::Avx512 => 12,
            Isa::Avx2 => 3,
            Isa::Portable => 4,
        }
    }
}

/// The name of the micro-kernel this machine uses (for benchmarks and logs).
pub fn kernel_name() -> &'static str {
    match Isa::detect() {
        Isa::Avx512 => "avx512f 12x32",
        Isa::Avx2 => "avx2+fma 3x32",
        Isa::Portable => "portable 4x32",
    }
}

/// C = A·B (+ B's bias) (+ C itself when `accumulate`), for A [m, b.k()] with row i at `a[i * lda]` and C
/// [m, b.n()] with row i at `c[i * ldc]`; columns of C beyond b.n() are left alone. With `parallel`, blocks
/// of rows run on rayon's threads.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    a: &[f32],
    lda: usize,
    m: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    gemm_on(Isa::detect(), a, lda, m, b, c, ldc, accumulate, parallel)
}

#[allow(clippy::too_many_arguments)]
fn gemm_on(
    isa: Isa,
    a: &[f32],
    lda: usize,
    m: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    check_operands(a.len(), lda, m, k, c.len(), ldc, n);
    let mr = isa.rows();
    let c = &mut c[..extent(m, ldc, n)];
    let block = |(blk, cb): (usize, &mut [f32])| {
        let row0 = blk * mr;
        let rows = mr.min(m - row0);
        // SAFETY: the bounds of A and C were checked above.
        unsafe {
            row_block(
                isa,
                &a[row0 * lda..],
                lda,
                rows,
                b,
                0..b.panels(),
                cb,
                ldc,
                accumulate,
            )
        };
    };
    if parallel && m > mr {
        c.par_chunks_mut(mr * ldc).enumerate().for_each(block);
    } else {
        c.chunks_mut(mr * ldc).enumerate().for_each(block);
    }
}

/// (rows − 1)·stride + width: the length a matrix of `rows` rows at `stride` spans, panicking on overflow.
fn extent(rows: usize, stride: usize, width: usize) -> usize {
    (rows - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(width))
        .expect("gemm: matrix extent overflows usize")
}

/// The checks that make the micro-kernels' pointer arithmetic stay inside A and C (m, n ≥ 1).
fn check_operands(
    a_len: usize,
    lda: usize,
    m: usize,
    k: usize,
    c_len: usize,
    ldc: usize,
    n: usize,
) {
    assert!(lda >= k && ldc >= n, "gemm: row strides too small");
    assert!(a_len >= extent(m, lda, k), "gemm: A too short");
    assert!(c_len >= extent(m, ldc, n), "gemm: C too short");
}

/// Like [`gemm`] (one thread, no accumulation), but each block of rows r0..r0+rows computes only the columns
/// `band(r0, rows)` (a range; rounded out to whole panels): for products of which a banded part is used, such
/// as the relative-position scores of attention.
pub fn gemm_banded(
    a: &[f32],
    lda: usize,
    m: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    band: impl Fn(usize, usize) -> std::ops::Range<usize>,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    check_operands(a.len(), lda, m, k, c.len(), ldc, n);
    let isa = Isa::detect();
    let mr = isa.rows();
    let c = &mut c[..extent(m, ldc, n)];
    for (blk, cb) in c.chunks_mut(mr * ldc).enumerate() {
        let row0 = blk * mr;
        let rows = mr.min(m - row0);
        let cols = band(row0, rows);
        let panels = cols.start.min(n) / NR..cols.end.min(n).div_ceil(NR);
        // SAFETY: the bounds of A and C were checked above.
        unsafe { row_block(isa, &a[row0 * lda..], lda, rows, b, panels, cb, ldc, false) };
    }
}

/// C's rows [0, rows) (at stride ldc from `cb`) for B's panels `panels`, from A's rows at stride lda from `ab`.
///
/// Safety: `ab` holds `rows` rows of b.k() values at stride lda, and `cb` `rows` rows at stride ldc with at
/// least b.n() columns.
#[allow(clippy::too_many_arguments)]
unsafe fn row_block(
    isa: Isa,
    ab: &[f32],
    lda: usize,
    rows: usize,
    b: &PackedB,
    panels: std::ops::Range<usize>,
    cb: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let (k, n) = (b.k, b.n);
    for panel in panels {
        let cols = NR.min(n - panel * NR);
        let pb = &b.data[panel * k * NR..(panel + 1) * k * NR];
        let bias = b.bias.as_ref().map(|v| &v[panel * NR..(panel + 1) * NR]);
        tile(
            isa,
            rows,
            k,
            ab.as_ptr(),
            lda,
            pb.as_ptr(),
            bias,
            cb.as_mut_ptr().add(panel * NR),
            ldc,
            cols,
            accumulate,
        );
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    isa: Isa,
    rows: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    bias: Option<&[f32]>,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    let bias = bias.map_or(std::ptr::null(), |v| v.as_ptr());
    // `$f::<rows>(…)`, or `$f::<rows, half>(…)`, for the row counts listed.
    macro_rules! dispatch {
        ($f:ident, $($m:literal)*) => {
            match rows {
                $($m => $f::<$m>(k, a, lda, b, bias, c, ldc, cols, accumulate),)*
                _ => unreachable!("tile of {rows} rows"),
            }
        };
        ($f:ident [$half:literal], $($m:literal)*) => {
            match rows {
                $($m => $f::<$m, $half>(k, a, lda, b, bias, c, ldc, cols, accumulate),)*
                _ => unreachable!("tile of {rows} rows"),
            }
        };
    }
    match isa {
        // A panel's last columns, at most 16: one register per row.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if cols <= 16 => dispatch!(tile_avx512 [true], 1 2 3 4 5 6 7 8 9 10 11 12),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => dispatch!(tile_avx512 [false], 1 2 3 4 5 6 7 8 9 10 11 12),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => dispatch!(tile_avx2, 1 2 3),
        _ => dispatch!(tile_portable, 1 2 3 4),
    }
}

/// M rows × 32 columns with 2·M zmm accumulators (A's rows read in place: packing them measured no faster);
/// with HALF, the first 16 columns only.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<const M: usize, const HALF: bool>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let m0: __mmask16 = if cols >= 16 {
        0xffff
    } else {
        ((1u32 << cols) - 1) as __mmask16
    };
    let m1: __mmask16 = if cols >= 32 {
        0xffff
    } else if cols <= 16 {
        0
    } else {
        ((1u32 << (cols - 16)) - 1) as __mmask16
    };
    // Products first, then the bias, then C: PyTorch's order (x·Wᵀ + b, then the residual), which keeps the
    // low bits of the products when the bias or the residual is larger than they are.
    let mut acc = [[_mm512_setzero_ps(); 2]; M];
    for i in 0..k {
        let b0 = _mm512_loadu_ps(b.add(i * NR));
        if HALF {
            for (r, row) in acc.iter_mut().enumerate() {
                row[0] = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(r * lda + i)), b0, row[0]);
            }
        } else {
            let b1 = _mm512_loadu_ps(b.add(i * NR + 16));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * lda + i));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
    }
    if !bias.is_null() {
        let (b0, b1) = (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16)));
        for row in acc.iter_mut() {
            row[0] = _mm512_add_ps(row[0], b0);
            if !HALF {
                row[1] = _mm512_add_ps(row[1], b1);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let cr = c.add(r * ldc);
        let mut v0 = row[0];
        if accumulate {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), v0);
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        if !HALF {
            let mut v1 = row[1];
            if accumulate {
                v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr.add(16)), v1);
            }
            _mm512_mask_storeu_ps(cr.add(16), m1, v1);
        }
    }
}

/// The portable tile compiled with AVX2 and FMA enabled (the compiler vectorises its column loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const M: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    tile_body::<M, true>(k, a, lda, b, bias, c, ldc, cols, accumulate)
}

#[allow(clippy::too_many_arguments)]
unsafe fn tile_portable<const M: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    tile_body::<M, false>(k, a, lda, b, bias, c, ldc, cols, accumulate)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body<const M: usize, const FMA: bool>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    let mut acc = [[0f32; NR]; M];
    for i in 0..k {
        let bi = std::slice::from_raw_parts(b.add(i * NR), NR);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = *a.add(r * lda + i);
            for (v, &bv) in row.iter_mut().zip(bi) {
                *v = if FMA {
                    av.mul_add(bv, *v)
                } else {
                    av * bv + *v
                };
            }
        }
    }
    let bias = (!bias.is_null()).then(|| std::slice::from_raw_parts(bias, NR));
    for (r, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate().take(cols) {
            let v = bias.map_or(v, |b| v + b[j]);
            let dst = c.add(r * ldc + j);
            *dst = if accumulate { *dst + v } else { v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every micro-kernel this machine can run.
    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
    }

    /// C = A·Wᵀ + bias in f64, one dot product at a time.
    fn reference(a: &[f32], m: usize, k: usize, w: &[f32], n: usize, bias: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = bias[j] as f64
                    + (0..k)
                        .map(|p| a[i * k + p] as f64 * w[j * k + p] as f64)
                        .sum::<f64>();
            }
        }
        c
    }

    #[test]
    fn products_match_a_dot_product_reference_for_every_edge_shape() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 7, 3),
            (12, 16, 32),
            (13, 33, 65),
            (37, 176, 44),
            (125, 64, 100),
        ] {
            let a = random(m * k, 1);
            let w = random(n * k, 2);
            let bias = random(n, 3);
            let want = reference(&a, m, k, &w, n, &bias);
            let packed = PackedB::from_transposed(&w, n, k, k).with_bias(&bias);
            for (isa, parallel) in isas().into_iter().flat_map(|i| [(i, false), (i, true)]) {
                // C has a wider row stride than n; the extra columns must stay untouched.
                let ldc = n + 3;
                let mut c = vec![7f32; m * ldc];
                gemm_on(isa, &a, k, m, &packed, &mut c, ldc, false, parallel);
                for i in 0..m {
                    for j in 0..ldc {
                        let got = c[i * ldc + j];
                        if j < n {
                            let d = (got as f64 - want[i * n + j]).abs();
                            assert!(
                                d < 1e-4 * (k as f64).sqrt(),
                                "{isa:?} {m}x{k}x{n} ({i},{j}): {d}"
                            );
                        } else {
                            assert_eq!(got, 7.0, "{isa:?} {m}x{k}x{n}: column {j} was written");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_banded_product_computes_each_row_block_s_band() {
        let (m, k, t) = (30, 11, 100);
        let n = 2 * t - 1;
        let a = random(m * k, 6);
        let w = random(n * k, 7);
        let want = reference(&a, m, k, &w, n, &vec![0.0; n]);
        let packed = PackedB::from_transposed(&w, n, k, k);
        let mut c = vec![f32::NAN; m * n];
        // Row i needs columns t-1-i .. 2t-1-i, as the relative-position scores do.
        gemm_banded(&a, k, m, &packed, &mut c, n, |r0, rows| {
            t - r0 - rows..2 * t - 1 - r0
        });
        for i in 0..m {
            for j in t - 1 - i..2 * t - 1 - i {
                let d = (c[i * n + j] as f64 - want[i * n + j]).abs();
                assert!(d < 1e-4, "({i},{j}): {}", c[i * n + j]);
            }
        }
        // Whole panels outside a block's band are skipped: row 0's band starts at column t - 12 or later.
        assert!(c[0].is_nan(), "row 0, column 0 was computed: {}", c[0]);
    }

    #[test]
    fn accumulation_adds_to_c_and_row_packing_equals_transposed_packing() {
        let (m, k, n) = (14, 9, 35);
        let a = random(m * k, 4);
        let w = random(n * k, 5);
        // B row-major [k, n] holding Wᵀ.
        let bt: Vec<f32> = (0..k * n).map(|x| w[(x % n) * k + x / n]).collect();
        let mut by_rows = PackedB::default();
        by_rows.fill_rows(&bt, k, n, n);
        let by_fn = PackedB::from_fn(k, n, |i, j| w[j * k + i]);
        let want = reference(&a, m, k, &w, n, &vec![0.0; n]);
        for (isa, packed) in isas()
            .into_iter()
            .flat_map(|i| [(i, &by_rows), (i, &by_fn)])
        {
            let mut c = vec![1f32; m * n];
            gemm_on(isa, &a, k, m, packed, &mut c, n, true, true);
            for (g, w) in c.iter().zip(&want) {
                assert!(
                    (*g as f64 - (w + 1.0)).abs() < 1e-4,
                    "{isa:?}: {g} vs {}",
                    w + 1.0
                );
            }
        }
    }
}
