//! The interpreter's element-wise and convolution kernels: what a [`Step`]
//! computes once its buffers are laid out (matrix products are in
//! [`super::kernels`]). Everything here is `#[inline(always)]` down to the
//! loops, so that [`Kernel::run_vectorised`] compiles them for the graph's
//! instruction set (AVX-512F: 16 lanes) rather than the build's baseline.
//! The operations and their order are the same at any width, so the
//! results are the same bits.

use super::*;

/// The right-hand operand of an elementwise step.
pub(super) enum Rhs<'a> {
    /// Same shape as the left.
    Row(&'a [f32]),
    /// One value for every element.
    Scalar(f32),
    /// One row of constants repeated over the left's rows.
    Broadcast(&'a [f32]),
}

/// `y = a ∘ b` (or `b ∘ a` when `swapped`). The operator is matched once per
/// step, not per element, so each loop below is a plain vectorisable map.
#[inline(always)]
pub(super) fn binary(op: Binary, swapped: bool, y: &mut [f32], a: &[f32], b: Rhs<'_>) {
    match (op, swapped) {
        (Binary::Add, _) => map2(y, a, b, |p, q| p + q),
        (Binary::Mul, _) => map2(y, a, b, |p, q| p * q),
        (Binary::Sub, false) => map2(y, a, b, |p, q| p - q),
        (Binary::Sub, true) => map2(y, a, b, |p, q| q - p),
        (Binary::Div, false) => map2(y, a, b, |p, q| p / q),
        (Binary::Div, true) => map2(y, a, b, |p, q| q / p),
    }
}

#[inline(always)]
fn map2(y: &mut [f32], a: &[f32], b: Rhs<'_>, f: impl Fn(f32, f32) -> f32) {
    match b {
        Rhs::Row(b) => {
            for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
                *o = f(p, q);
            }
        }
        Rhs::Scalar(q) => {
            for (o, &p) in y.iter_mut().zip(a) {
                *o = f(p, q);
            }
        }
        Rhs::Broadcast(c) => {
            let w = c.len();
            for (yr, ar) in y.chunks_exact_mut(w).zip(a.chunks_exact(w)) {
                for ((o, &p), &q) in yr.iter_mut().zip(ar).zip(c) {
                    *o = f(p, q);
                }
            }
        }
    }
}

#[inline(always)]
pub(super) fn unary(op: Unary, x: &[f32], y: &mut [f32]) {
    match op {
        Unary::LeakyRelu(a) => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = if v >= 0.0 { v } else { a * v };
            }
        }
        Unary::Relu => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.max(0.0);
            }
        }
        Unary::Erf => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = erf(v);
            }
        }
        Unary::Sin => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.sin();
            }
        }
        Unary::Cos => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.cos();
            }
        }
        Unary::Tanh => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.tanh();
            }
        }
        Unary::Sigmoid => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = 1.0 / (1.0 + (-v).exp());
            }
        }
    }
}

/// erf by Abramowitz & Stegun 7.1.28: `1 − (1 + a₁|x| + … + a₆|x|⁶)⁻¹⁶`,
/// odd in x; absolute error below 2e-6 in f32 (3e-7 in exact arithmetic).
/// No branch and no libm call, so the loop over a buffer vectorises (libm's
/// `erff` was a sixth of a KDE decision on the arm policy).
#[inline(always)]
fn erf(x: f32) -> f32 {
    const A: [f32; 6] = [
        0.070_523_08,
        0.042_282_01,
        0.009_270_527,
        0.000_152_014_3,
        0.000_276_567_2,
        0.000_043_063_8,
    ];
    let z = x.abs();
    let p = 1.0 + z * (A[0] + z * (A[1] + z * (A[2] + z * (A[3] + z * (A[4] + z * A[5])))));
    let p2 = p * p;
    let p4 = p2 * p2;
    let p8 = p4 * p4;
    (1.0 - 1.0 / (p8 * p8)).copysign(x)
}

/// Layer norm over rows of `gamma.len()` values. The sums run in 16
/// interleaved lanes added up in a fixed order at the end, so the loops
/// vectorise (one add chain per element made a KDE call's norms latency
/// bound) and the result is the same on every instruction set.
#[inline(always)]
pub(super) fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
    let last = gamma.len();
    for (yr, xr) in y.chunks_exact_mut(last).zip(x.chunks_exact(last)) {
        let mean = lane_sum(xr, |v| v) / last as f32;
        let var = lane_sum(xr, |v| (v - mean) * (v - mean)) / last as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((o, &v), &gg), &bb) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
            *o = (v - mean) * inv * gg + bb;
        }
    }
}

/// `Σ f(x)` as 16 lane sums (element `i` into lane `i mod 16`), the lanes
/// then added in order, then the tail.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let (chunks, tail) = xs.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let mut s = 0.0f32;
    for a in acc {
        s += a;
    }
    for &v in tail {
        s += f(v);
    }
    s
}

#[inline(always)]
pub(super) fn conv(c: &ConvStep, x: &[f32], consts: &[Vec<f32>], y: &mut [f32], rows: usize) {
    let [ci, h, w] = c.input;
    let [oc, oh, ow] = c.output;
    let [kh, kw] = c.kernel;
    let [sh, sw] = c.stride;
    let [ph, pw] = c.pad;
    let weight = &consts[c.weight];
    let (in_len, out_len) = (ci * h * w, oc * oh * ow);
    for r in 0..rows * c.factor {
        let xr = &x[r * in_len..(r + 1) * in_len];
        let yr = &mut y[r * out_len..(r + 1) * out_len];
        for o in 0..oc {
            let b = c.bias.map_or(0.0, |b| consts[b][o]);
            let wo = &weight[o * ci * kh * kw..(o + 1) * ci * kh * kw];
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = b;
                    for ch in 0..ci {
                        for u in 0..kh {
                            let row = (i * sh + u) as isize - ph as isize;
                            if row < 0 || row as usize >= h {
                                continue;
                            }
                            let base = ch * h * w + row as usize * w;
                            let wk = &wo[(ch * kh + u) * kw..(ch * kh + u + 1) * kw];
                            for (v, &wv) in wk.iter().enumerate() {
                                let col = (j * sw + v) as isize - pw as isize;
                                if col >= 0 && (col as usize) < w {
                                    acc += xr[base + col as usize] * wv;
                                }
                            }
                        }
                    }
                    yr[(o * oh + i) * ow + j] = acc;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane sums are the sums (to rounding), and the norm is a norm:
    /// each row comes out with mean β and deviation γ.
    #[test]
    fn layer_norm_normalises_each_row() {
        for last in [1, 5, 16, 17, 40, 512] {
            let x: Vec<f32> = (0..3 * last)
                .map(|i| ((i * 37) % 23) as f32 * 0.5 - 3.0)
                .collect();
            let exact: f64 = x[..last].iter().map(|&v| f64::from(v)).sum();
            assert!((f64::from(lane_sum(&x[..last], |v| v)) - exact).abs() < 1e-3);
            let (gamma, beta) = (vec![2.0f32; last], vec![0.5f32; last]);
            let mut y = vec![f32::NAN; x.len()];
            layer_norm(&x, &gamma, &beta, 1e-5, &mut y);
            for (r, yr) in y.chunks_exact(last).enumerate() {
                let mean = yr.iter().sum::<f32>() / last as f32;
                assert!((mean - 0.5).abs() < 1e-4, "row {r} of {last}: mean {mean}");
                let xr = &x[r * last..(r + 1) * last];
                if xr.iter().any(|&v| v != xr[0]) {
                    let sd = (yr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
                        / last as f32)
                        .sqrt();
                    assert!((sd - 2.0).abs() < 1e-3, "row {r} of {last}: deviation {sd}");
                }
            }
        }
    }

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0.0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 2e-6, "largest |erf − erff| on [-8, 8]: {worst:e}");
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f32::NAN).is_nan());
    }
}
