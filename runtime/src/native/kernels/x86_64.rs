//! x86-64 matrix kernels: AVX2 + FMA (8 lanes) and AVX-512F (16 lanes), for
//! f32, f16 and int8 weights (f32 accumulation in every case).
//!
//! Every function here is compiled with the features it names enabled and is
//! reachable only through [`gemm`], [`gemm_f16`] and [`gemm_i8`], which check
//! that the CPU has them (f16 weights also need F16C, which every AVX2 CPU
//! has; without it they run the portable kernel). The three share one tile
//! structure, written once by `kernel!` and instantiated per vector width and
//! weight type with the load that widens a vector of weights to f32 lanes: a
//! plain load for f32, `vcvtph2ps` for f16, `vpmovsxbd` + `vcvtdq2ps` for
//! int8.

use std::arch::x86_64::*;

/// Sum of the 8 lanes.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma")]
fn load(v: &[f32; 8]) -> __m256 {
    // SAFETY: `v` is 8 readable f32s; loadu has no alignment requirement.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn load_f16(v: &[half::f16; 8]) -> __m256 {
    // SAFETY: `v` is 8 readable f16s (16 bytes; `half::f16` is a transparent
    // u16); loadu has no alignment requirement.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().cast::<__m128i>())) }
}

#[target_feature(enable = "avx2,fma")]
fn load_i8(v: &[i8; 8]) -> __m256 {
    // SAFETY: `v` is 8 readable bytes; loadl reads exactly 8, unaligned.
    let q = unsafe { _mm_loadl_epi64(v.as_ptr().cast::<__m128i>()) };
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))
}

/// The tile, one-output and whole-product functions for one weight type.
macro_rules! kernel {
    (
        $features:literal, $lanes:literal, $vec:ty, $zero:ident, $fma:ident, $hsum:ident,
        $xload:ident, $t:ty, $load:ident, $widen:expr, $tile:ident, $dot:ident, $products:ident
    ) => {
        /// `R` rows × `C` weight rows; `xs`/`ws` are whole rows of length k.
        #[target_feature(enable = $features)]
        #[inline]
        fn $tile<const R: usize, const C: usize>(xs: [&[f32]; R], ws: [&[$t]; C]) -> [[f32; C]; R] {
            let k = xs[0].len();
            let chunks = k / $lanes;
            let mut xc: [&[[f32; $lanes]]; R] = [&[]; R];
            for r in 0..R {
                xc[r] = &xs[r].as_chunks::<$lanes>().0[..chunks];
            }
            let mut wc: [&[[$t; $lanes]]; C] = [&[]; C];
            for j in 0..C {
                wc[j] = &ws[j].as_chunks::<$lanes>().0[..chunks];
            }
            let mut acc: [[$vec; C]; R] = [[$zero(); C]; R];
            for c in 0..chunks {
                let mut xv: [$vec; R] = [$zero(); R];
                for r in 0..R {
                    xv[r] = $xload(&xc[r][c]);
                }
                for j in 0..C {
                    let w = $load(&wc[j][c]);
                    for r in 0..R {
                        acc[r][j] = $fma(xv[r], w, acc[r][j]);
                    }
                }
            }
            let widen = $widen;
            let mut out = [[0.0f32; C]; R];
            for r in 0..R {
                for j in 0..C {
                    let mut s = $hsum(acc[r][j]);
                    for i in chunks * $lanes..k {
                        s = xs[r][i].mul_add(widen(ws[j][i]), s);
                    }
                    out[r][j] = s;
                }
            }
            out
        }

        /// One output: the same operations as one entry of the tile.
        #[target_feature(enable = $features)]
        fn $dot(x: &[f32], w: &[$t]) -> f32 {
            let (xc, xt) = x.as_chunks::<$lanes>();
            let (wc, wt) = w.as_chunks::<$lanes>();
            let mut acc = $zero();
            for (a, b) in xc.iter().zip(wc) {
                acc = $fma($xload(a), $load(b), acc);
            }
            let widen = $widen;
            let mut s = $hsum(acc);
            for (a, b) in xt.iter().zip(wt) {
                s = a.mul_add(widen(*b), s);
            }
            s
        }

        /// `y[r, j] = Σ_i x[r, i] · w_t[j, i]`.
        #[target_feature(enable = $features)]
        fn $products(x: &[f32], w_t: &[$t], y: &mut [f32], k: usize, n: usize) {
            let rows = x.len() / k;
            let row = |r: usize| &x[r * k..(r + 1) * k];
            let wrow = |j: usize| &w_t[j * k..(j + 1) * k];
            // Pairs of rows share each weight load. The block of 4 weight rows
            // is the outer loop, so with many rows (KDE) it stays in L1 while
            // every row pair passes over it. Each output is the same sequence of
            // operations whichever tile computes it, so results do not depend on
            // the batch size.
            let pairs = rows / 2 * 2;
            let full4 = n / 4 * 4;
            for j in (0..full4).step_by(4) {
                let ws = [wrow(j), wrow(j + 1), wrow(j + 2), wrow(j + 3)];
                for r in (0..pairs).step_by(2) {
                    let o = $tile::<2, 4>([row(r), row(r + 1)], ws);
                    y[r * n + j..r * n + j + 4].copy_from_slice(&o[0]);
                    y[(r + 1) * n + j..(r + 1) * n + j + 4].copy_from_slice(&o[1]);
                }
            }
            for r in 0..pairs {
                for jj in full4..n {
                    y[r * n + jj] = $dot(row(r), wrow(jj));
                }
            }
            if pairs < rows {
                let r = pairs;
                let full8 = n / 8 * 8;
                for j in (0..full8).step_by(8) {
                    let ws = [
                        wrow(j),
                        wrow(j + 1),
                        wrow(j + 2),
                        wrow(j + 3),
                        wrow(j + 4),
                        wrow(j + 5),
                        wrow(j + 6),
                        wrow(j + 7),
                    ];
                    let o = $tile::<1, 8>([row(r)], ws);
                    y[r * n + j..r * n + j + 8].copy_from_slice(&o[0]);
                }
                for jj in full8..n {
                    y[r * n + jj] = $dot(row(r), wrow(jj));
                }
            }
        }
    };
}

#[target_feature(enable = "avx2,fma")]
fn zero() -> __m256 {
    _mm256_setzero_ps()
}

#[target_feature(enable = "avx2,fma")]
fn fma(x: __m256, w: __m256, acc: __m256) -> __m256 {
    _mm256_fmadd_ps(x, w, acc)
}

kernel!(
    "avx2,fma",
    8,
    __m256,
    zero,
    fma,
    hsum,
    load,
    f32,
    load,
    |w: f32| w,
    tile,
    dot,
    products
);
kernel!(
    "avx2,fma,f16c",
    8,
    __m256,
    zero,
    fma,
    hsum,
    load,
    half::f16,
    load_f16,
    |w: half::f16| w.to_f32(),
    tile_f16,
    dot_f16,
    products_f16
);
kernel!(
    "avx2,fma",
    8,
    __m256,
    zero,
    fma,
    hsum,
    load,
    i8,
    load_i8,
    |w: i8| f32::from(w),
    tile_i8,
    dot_i8,
    products_i8
);

// AVX-512: the same tiles, 16 lanes.

/// Sum of the 16 lanes: the two halves added, then [`hsum`].
#[target_feature(enable = "avx512f,avx2,fma")]
fn hsum16(v: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    hsum(_mm256_add_ps(lo, hi))
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn zero16() -> __m512 {
    _mm512_setzero_ps()
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn fma16(x: __m512, w: __m512, acc: __m512) -> __m512 {
    _mm512_fmadd_ps(x, w, acc)
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn load16(v: &[f32; 16]) -> __m512 {
    // SAFETY: `v` is 16 readable f32s; loadu has no alignment requirement.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn load16_f16(v: &[half::f16; 16]) -> __m512 {
    // SAFETY: `v` is 16 readable f16s (32 bytes); loadu is unaligned.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(v.as_ptr().cast::<__m256i>())) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn load16_i8(v: &[i8; 16]) -> __m512 {
    // SAFETY: `v` is 16 readable bytes; loadu is unaligned.
    let q = unsafe { _mm_loadu_si128(v.as_ptr().cast::<__m128i>()) };
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q))
}

kernel!(
    "avx512f,avx2,fma",
    16,
    __m512,
    zero16,
    fma16,
    hsum16,
    load16,
    f32,
    load16,
    |w: f32| w,
    tile16,
    dot16,
    products16
);
kernel!(
    "avx512f,avx2,fma",
    16,
    __m512,
    zero16,
    fma16,
    hsum16,
    load16,
    half::f16,
    load16_f16,
    |w: half::f16| w.to_f32(),
    tile16_f16,
    dot16_f16,
    products16_f16
);
kernel!(
    "avx512f,avx2,fma",
    16,
    __m512,
    zero16,
    fma16,
    hsum16,
    load16,
    i8,
    load16_i8,
    |w: i8| f32::from(w),
    tile16_i8,
    dot16_i8,
    products16_i8
);

/// Whether this CPU has what the kernel needs (a cached load after the
/// first call).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether this CPU also converts f16 in hardware (F16C).
fn available_f16() -> bool {
    available() && std::arch::is_x86_feature_detected!("f16c")
}

/// `y[r, j] = Σ_i x[r, i] · w_t[j, i] (+ b[j])`; see [`super::Kernel::gemm`].
/// On a CPU without AVX2 and FMA (which `Kernel::detect` never picks this
/// kernel for) it runs the portable kernel instead.
pub(super) fn gemm(
    x: &[f32],
    w_t: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    if !available() || k == 0 {
        return super::portable::gemm(x, w_t, bias, y, k, n);
    }
    // SAFETY: AVX2 and FMA were found on this CPU just above; every memory
    // access inside is a bounds-checked slice or a load from a fixed-size array.
    unsafe { products(x, w_t, y, k, n) };
    super::finish(y, None, bias, n);
}

/// [`gemm`] with f16 weights; see [`super::Kernel::gemm_f16`].
pub(super) fn gemm_f16(
    x: &[f32],
    w_t: &[half::f16],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    if !available_f16() || k == 0 {
        return super::portable::gemm_f16(x, w_t, bias, y, k, n);
    }
    // SAFETY: AVX2, FMA and F16C were found on this CPU just above; every
    // memory access inside is a bounds-checked slice or a load from a
    // fixed-size array.
    unsafe { products_f16(x, w_t, y, k, n) };
    super::finish(y, None, bias, n);
}

/// [`gemm`] with int8 weights; see [`super::Kernel::gemm_i8`].
pub(super) fn gemm_i8(
    x: &[f32],
    q: &[i8],
    scale: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    if !available() || k == 0 {
        return super::portable::gemm_i8(x, q, scale, bias, y, k, n);
    }
    // SAFETY: AVX2 and FMA were found on this CPU just above; every memory
    // access inside is a bounds-checked slice or a load from a fixed-size array.
    unsafe { products_i8(x, q, y, k, n) };
    super::finish(y, Some(scale), bias, n);
}

/// Whether this CPU runs the AVX-512 kernels (AVX-512F besides AVX2 + FMA).
pub(super) fn available_512() -> bool {
    available() && std::arch::is_x86_feature_detected!("avx512f")
}

/// [`gemm`] on 16 lanes; see [`super::Kernel::gemm`]. Without AVX-512F
/// (which `Kernel::detect` never picks this kernel for) it runs the AVX2 one.
pub(super) fn gemm512(
    x: &[f32],
    w_t: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    if !available_512() || k == 0 {
        return gemm(x, w_t, bias, y, k, n);
    }
    // SAFETY: AVX-512F, AVX2 and FMA were found on this CPU just above; every
    // memory access inside is a bounds-checked slice or a load from a
    // fixed-size array.
    unsafe { products16(x, w_t, y, k, n) };
    super::finish(y, None, bias, n);
}

/// [`gemm_f16`] on 16 lanes (AVX-512F converts f16 itself).
pub(super) fn gemm512_f16(
    x: &[f32],
    w_t: &[half::f16],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    if !available_512() || k == 0 {
        return gemm_f16(x, w_t, bias, y, k, n);
    }
    // SAFETY: as in `gemm512`.
    unsafe { products16_f16(x, w_t, y, k, n) };
    super::finish(y, None, bias, n);
}

/// [`gemm_i8`] on 16 lanes.
pub(super) fn gemm512_i8(
    x: &[f32],
    q: &[i8],
    scale: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    if !available_512() || k == 0 {
        return gemm_i8(x, q, scale, bias, y, k, n);
    }
    // SAFETY: as in `gemm512`.
    unsafe { products16_i8(x, q, y, k, n) };
    super::finish(y, Some(scale), bias, n);
}
