//! x86-64 matrix kernel: AVX2 + FMA, 8 lanes.
//!
//! Every function here is compiled with `avx2,fma` enabled and is reachable
//! only through [`gemm`], which checks that the CPU has both features.

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

/// `R` rows × `C` weight rows; `xs`/`ws` are whole rows of length k.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn tile<const R: usize, const C: usize>(xs: [&[f32]; R], ws: [&[f32]; C]) -> [[f32; C]; R] {
    let k = xs[0].len();
    let chunks = k / 8;
    let mut xc: [&[[f32; 8]]; R] = [&[]; R];
    for r in 0..R {
        xc[r] = &xs[r].as_chunks::<8>().0[..chunks];
    }
    let mut wc: [&[[f32; 8]]; C] = [&[]; C];
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
            let w = load(&wc[j][c]);
            for r in 0..R {
                acc[r][j] = _mm256_fmadd_ps(xv[r], w, acc[r][j]);
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for j in 0..C {
            let mut s = hsum(acc[r][j]);
            for i in chunks * 8..k {
                s = xs[r][i].mul_add(ws[j][i], s);
            }
            out[r][j] = s;
        }
    }
    out
}

#[target_feature(enable = "avx2,fma")]
fn dot(x: &[f32], w: &[f32]) -> f32 {
    let (xc, xt) = x.as_chunks::<8>();
    let (wc, wt) = w.as_chunks::<8>();
    let mut acc = _mm256_setzero_ps();
    for (a, b) in xc.iter().zip(wc) {
        acc = _mm256_fmadd_ps(load(a), load(b), acc);
    }
    let mut s = hsum(acc);
    for (a, b) in xt.iter().zip(wt) {
        s = a.mul_add(*b, s);
    }
    s
}

#[target_feature(enable = "avx2,fma")]
fn gemm_inner(x: &[f32], w_t: &[f32], bias: Option<&[f32]>, y: &mut [f32], k: usize, n: usize) {
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
            let o = tile::<2, 4>([row(r), row(r + 1)], ws);
            y[r * n + j..r * n + j + 4].copy_from_slice(&o[0]);
            y[(r + 1) * n + j..(r + 1) * n + j + 4].copy_from_slice(&o[1]);
        }
    }
    for r in 0..pairs {
        for jj in full4..n {
            y[r * n + jj] = dot(row(r), wrow(jj));
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
            let o = tile::<1, 8>([row(r)], ws);
            y[r * n + j..r * n + j + 8].copy_from_slice(&o[0]);
        }
        for jj in full8..n {
            y[r * n + jj] = dot(row(r), wrow(jj));
        }
    }
    if let Some(b) = bias {
        for yr in y.chunks_exact_mut(n) {
            for (o, &bb) in yr.iter_mut().zip(b) {
                *o += bb;
            }
        }
    }
}

/// Whether this CPU has what the kernel needs (a cached load after the
/// first call).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
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
    if !available() {
        return super::portable::gemm(x, w_t, bias, y, k, n);
    }
    // SAFETY: AVX2 and FMA were found on this CPU just above; every memory
    // access inside is a bounds-checked slice.
    unsafe { gemm_inner(x, w_t, bias, y, k, n) }
}
