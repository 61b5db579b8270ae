//! The portable matrix kernel: plain Rust in 8-lane chunks that the compiler
//! vectorises for whatever the target's baseline is (SSE2 on x86-64, NEON on
//! aarch64). Every CPU can run it; it is also the reference the other kernels
//! are tested against.

const LANES: usize = 8;
/// Outputs computed together (each weight row is loaded once per row tile).
const COLS: usize = 4;

/// Dot products of `R` input rows with `COLS` weight rows, 8 lanes wide.
#[inline(always)]
fn tile<const R: usize>(xs: [&[f32]; R], ws: [&[f32]; COLS], k: usize) -> [[f32; COLS]; R] {
    let mut acc = [[[0.0f32; LANES]; COLS]; R];
    let xc: [&[[f32; LANES]]; R] = xs.map(|x| x.as_chunks::<LANES>().0);
    let wc: [&[[f32; LANES]]; COLS] = ws.map(|w| w.as_chunks::<LANES>().0);
    let chunks = k / LANES;
    for c in 0..chunks {
        for r in 0..R {
            let xv = &xc[r][c];
            for j in 0..COLS {
                let wv = &wc[j][c];
                for l in 0..LANES {
                    acc[r][j][l] += xv[l] * wv[l];
                }
            }
        }
    }
    let mut out = [[0.0f32; COLS]; R];
    for r in 0..R {
        for j in 0..COLS {
            let mut s = acc[r][j].iter().sum::<f32>();
            for i in chunks * LANES..k {
                s += xs[r][i] * ws[j][i];
            }
            out[r][j] = s;
        }
    }
    out
}

#[inline(always)]
fn dot(x: &[f32], w: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (xc, xt) = x.as_chunks::<LANES>();
    let (wc, wt) = w.as_chunks::<LANES>();
    for (xv, wv) in xc.iter().zip(wc) {
        for l in 0..LANES {
            acc[l] += xv[l] * wv[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (a, b) in xt.iter().zip(wt) {
        s += a * b;
    }
    s
}

/// `y[r, j] = Σ_i x[r, i] · w_t[j, i] (+ b[j])`; see [`super::Kernel::gemm`].
#[inline(always)]
pub(super) fn gemm(
    x: &[f32],
    w_t: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    let rows = x.len() / k.max(1);
    let row = |r: usize| &x[r * k..(r + 1) * k];
    let wrow = |j: usize| &w_t[j * k..(j + 1) * k];
    let full = n / COLS * COLS;
    let mut r = 0;
    while r < rows {
        let take = if rows - r >= 2 { 2 } else { 1 };
        let mut j = 0;
        while j < full {
            let ws = [wrow(j), wrow(j + 1), wrow(j + 2), wrow(j + 3)];
            if take == 2 {
                let o = tile::<2>([row(r), row(r + 1)], ws, k);
                for (rr, vals) in o.iter().enumerate() {
                    y[(r + rr) * n + j..(r + rr) * n + j + COLS].copy_from_slice(vals);
                }
            } else {
                let o = tile::<1>([row(r)], ws, k);
                y[r * n + j..r * n + j + COLS].copy_from_slice(&o[0]);
            }
            j += COLS;
        }
        for rr in r..r + take {
            for jj in full..n {
                y[rr * n + jj] = dot(row(rr), wrow(jj));
            }
        }
        r += take;
    }
    if let Some(b) = bias {
        for yr in y.chunks_exact_mut(n) {
            for (o, &bb) in yr.iter_mut().zip(b) {
                *o += bb;
            }
        }
    }
}
