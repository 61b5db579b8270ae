//! x86-64 matrix kernels: AVX2 + FMA, 8 lanes, for f32, f16 and int8
//! weights (f32 accumulation in every case).
//!
//! Every function here is compiled with the features it names enabled and is
//! reachable only through [`gemm`], [`gemm_f16`] and [`gemm_i8`], which check
//! that the CPU has them (f16 weights also need F16C, which every AVX2 CPU
//! has; without it they run the portable kernel). The three share one tile
//! structure, written once by `kernel!` and instantiated per weight type with
//! the load that widens 8 weights to 8 f32 lanes: a plain load for f32,
//! `vcvtph2ps` for f16, `vpmovsxbd` + `vcvtdq2ps` for int8.

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
    ($features:literal, $t:ty, $load:ident, $widen:expr, $tile:ident, $dot:ident, $products:ident) => {
        /// `R` rows × `C` weight rows; `xs`/`ws` are whole rows of length k.
        #[target_feature(enable = $features)]
        #[inline]
        fn $tile<const R: usize, const C: usize>(xs: [&[f32]; R], ws: [&[$t]; C]) -> [[f32; C]; R] {
            let k = xs[0].len();
            let chunks = k / 8;
            let mut xc: [&[[f32; 8]]; R] = [&[]; R];
            for r in 0..R {
                xc[r] = &xs[r].as_chunks::<8>().0[..chunks];
            }
            let mut wc: [&[[$t; 8]]; C] = [&[]; C];
            for j in 0..C {
                wc[j] = &ws[j].as_chunks::<8>().0[..chunks];
            }
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            for c in 0..chunks {
                let mut xv = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    xv[r] = load(&xc[r][c]);
                }
                for j in 0..C {
                    let w = $load(&wc[j][c]);
                    for r in 0..R {
                        acc[r][j] = _mm256_fmadd_ps(xv[r], w, acc[r][j]);
                    }
                }
            }
            let widen = $widen;
            let mut out = [[0.0f32; C]; R];
            for r in 0..R {
                for j in 0..C {
                    let mut s = hsum(acc[r][j]);
                    for i in chunks * 8..k {
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
            let (xc, xt) = x.as_chunks::<8>();
            let (wc, wt) = w.as_chunks::<8>();
            let mut acc = _mm256_setzero_ps();
            for (a, b) in xc.iter().zip(wc) {
                acc = _mm256_fmadd_ps(load(a), $load(b), acc);
            }
            let widen = $widen;
            let mut s = hsum(acc);
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

kernel!("avx2,fma", f32, load, |w: f32| w, tile, dot, products);
kernel!(
    "avx2,fma,f16c",
    half::f16,
    load_f16,
    |w: half::f16| w.to_f32(),
    tile_f16,
    dot_f16,
    products_f16
);
kernel!(
    "avx2,fma",
    i8,
    load_i8,
    |w: i8| f32::from(w),
    tile_i8,
    dot_i8,
    products_i8
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
