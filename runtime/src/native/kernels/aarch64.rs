//! aarch64 matrix kernel: NEON (Advanced SIMD). Each output is a dot product
//! of an input row with a row of `w_t`, taken 8 values at a time as two
//! 4-lane vectors with fused multiply-adds, the same shape of computation as
//! the AVX2 kernel (two accumulators per output keep two FMA pipes busy).
//!
//! Every function here is compiled with `neon` enabled and is reachable only
//! through [`gemm`], which checks that the CPU has it. NEON is part of the
//! `aarch64-unknown-linux-gnu` baseline, so that check is a constant there.

use std::arch::aarch64::*;

/// Values per step: two 4-lane vectors.
const STEP: usize = 8;

/// Lanes 0..4 and 4..8 of one 8-value step.
type Pair = float32x4x2_t;

#[target_feature(enable = "neon")]
fn load(v: &[f32; STEP]) -> Pair {
    // SAFETY: `v` is 8 readable, contiguous f32s; ld1 needs only the
    // alignment of an f32, which a `&[f32; 8]` has.
    unsafe { vld1q_f32_x2(v.as_ptr()) }
}

#[target_feature(enable = "neon")]
fn zero() -> Pair {
    float32x4x2_t(vdupq_n_f32(0.0), vdupq_n_f32(0.0))
}

/// `acc + x · w`, lane by lane, fused.
#[target_feature(enable = "neon")]
fn fma(acc: Pair, x: Pair, w: Pair) -> Pair {
    float32x4x2_t(vfmaq_f32(acc.0, x.0, w.0), vfmaq_f32(acc.1, x.1, w.1))
}

/// Sum of the 8 lanes.
#[target_feature(enable = "neon")]
fn hsum(v: Pair) -> f32 {
    vaddvq_f32(vaddq_f32(v.0, v.1))
}

/// `R` rows × `C` weight rows; `xs`/`ws` are whole rows of length k.
#[target_feature(enable = "neon")]
#[inline]
fn tile<const R: usize, const C: usize>(xs: [&[f32]; R], ws: [&[f32]; C]) -> [[f32; C]; R] {
    let k = xs[0].len();
    let chunks = k / STEP;
    let mut xc: [&[[f32; STEP]]; R] = [&[]; R];
    for r in 0..R {
        xc[r] = &xs[r].as_chunks::<STEP>().0[..chunks];
    }
    let mut wc: [&[[f32; STEP]]; C] = [&[]; C];
    for j in 0..C {
        wc[j] = &ws[j].as_chunks::<STEP>().0[..chunks];
    }
    let mut acc = [[zero(); C]; R];
    for c in 0..chunks {
        let mut xv = [zero(); R];
        for r in 0..R {
            xv[r] = load(&xc[r][c]);
        }
        for j in 0..C {
            let w = load(&wc[j][c]);
            for r in 0..R {
                acc[r][j] = fma(acc[r][j], xv[r], w);
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for j in 0..C {
            let mut s = hsum(acc[r][j]);
            for i in chunks * STEP..k {
                s = xs[r][i].mul_add(ws[j][i], s);
            }
            out[r][j] = s;
        }
    }
    out
}

/// One output: the same operations as one entry of [`tile`].
#[target_feature(enable = "neon")]
fn dot(x: &[f32], w: &[f32]) -> f32 {
    let (xc, xt) = x.as_chunks::<STEP>();
    let (wc, wt) = w.as_chunks::<STEP>();
    let mut acc = zero();
    for (a, b) in xc.iter().zip(wc) {
        acc = fma(acc, load(a), load(b));
    }
    let mut s = hsum(acc);
    for (a, b) in xt.iter().zip(wt) {
        s = a.mul_add(*b, s);
    }
    s
}

#[target_feature(enable = "neon")]
fn gemm_inner(x: &[f32], w_t: &[f32], bias: Option<&[f32]>, y: &mut [f32], k: usize, n: usize) {
    let rows = x.len() / k.max(1);
    let row = |r: usize| &x[r * k..(r + 1) * k];
    let wrow = |j: usize| &w_t[j * k..(j + 1) * k];
    // As in the AVX2 kernel: pairs of rows share each weight load, the block
    // of 4 weight rows is the outer loop (it stays in L1 while every row
    // pair passes over it), and an odd last row takes 8 weight rows at a
    // time. 2 × 4 (or 1 × 8) outputs × 2 vectors = 16 accumulators, half of
    // NEON's 32 registers, leaving room for the loads.
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

/// Whether this CPU has NEON (always, on this target's baseline).
pub(super) fn available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// `y[r, j] = Σ_i x[r, i] · w_t[j, i] (+ b[j])`; see [`super::Kernel::gemm`].
/// On a CPU without NEON (which `Kernel::detect` never picks this kernel
/// for) it runs the portable kernel instead.
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
    // SAFETY: NEON was found on this CPU just above; every memory access
    // inside is a bounds-checked slice or a load from a `&[f32; 8]`.
    unsafe { gemm_inner(x, w_t, bias, y, k, n) }
}
