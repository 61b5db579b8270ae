//! The portable matrix kernel: plain Rust in 8-lane chunks that the compiler
//! vectorises for whatever the target's baseline is (SSE2 on x86-64, NEON on
//! aarch64). Every CPU can run it; it is also the reference the other kernels
//! are tested against. It is generic over the weight's storage ([`Weight`]):
//! an f16 or int8 weight is widened to f32 lane by lane and multiplied and
//! added exactly as an f32 weight would be.

/// A weight element the kernel widens to f32 (exactly: every f16 and every
/// i8 is an f32).
pub(crate) trait Weight: Copy {
    /// Zero in this storage (a packed panel's padding).
    const ZERO: Self;
    fn f32(self) -> f32;
}

impl Weight for f32 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
}

impl Weight for half::f16 {
    const ZERO: Self = half::f16::ZERO;
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
}

impl Weight for i8 {
    const ZERO: Self = 0;
    #[inline(always)]
    fn f32(self) -> f32 {
        f32::from(self)
    }
}

const LANES: usize = 8;
/// Outputs computed together (each weight row is loaded once per row tile).
const COLS: usize = 4;

/// Dot products of `R` input rows with `COLS` weight rows, 8 lanes wide.
#[inline(always)]
fn tile<const R: usize, W: Weight>(
    xs: [&[f32]; R],
    ws: [&[W]; COLS],
    k: usize,
) -> [[f32; COLS]; R] {
    let mut acc = [[[0.0f32; LANES]; COLS]; R];
    let xc: [&[[f32; LANES]]; R] = xs.map(|x| x.as_chunks::<LANES>().0);
    let wc: [&[[W; LANES]]; COLS] = ws.map(|w| w.as_chunks::<LANES>().0);
    let chunks = k / LANES;
    for c in 0..chunks {
        for r in 0..R {
            let xv = &xc[r][c];
            for j in 0..COLS {
                let wv = &wc[j][c];
                for l in 0..LANES {
                    acc[r][j][l] += xv[l] * wv[l].f32();
                }
            }
        }
    }
    let mut out = [[0.0f32; COLS]; R];
    for r in 0..R {
        for j in 0..COLS {
            let mut s = acc[r][j].iter().sum::<f32>();
            for i in chunks * LANES..k {
                s += xs[r][i] * ws[j][i].f32();
            }
            out[r][j] = s;
        }
    }
    out
}

#[inline(always)]
fn dot<W: Weight>(x: &[f32], w: &[W]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (xc, xt) = x.as_chunks::<LANES>();
    let (wc, wt) = w.as_chunks::<LANES>();
    for (xv, wv) in xc.iter().zip(wc) {
        for l in 0..LANES {
            acc[l] += xv[l] * wv[l].f32();
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (a, b) in xt.iter().zip(wt) {
        s += a * b.f32();
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
    products(x, w_t, y, k, n);
    super::finish(y, None, bias, n);
}

/// [`gemm`] with f16 weights (f32 accumulation).
pub(super) fn gemm_f16(
    x: &[f32],
    w_t: &[half::f16],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    products(x, w_t, y, k, n);
    super::finish(y, None, bias, n);
}

/// [`gemm`] with int8 weights: `y[r, j] = scale[j] · Σ_i x[r, i] · q[j, i]
/// (+ b[j])`, the sum in f32.
pub(super) fn gemm_i8(
    x: &[f32],
    q: &[i8],
    scale: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    products(x, q, y, k, n);
    super::finish(y, Some(scale), bias, n);
}

/// `y[r, j] = Σ_i x[r, i] · w_t[j, i]`.
#[inline(always)]
pub(super) fn products<W: Weight>(x: &[f32], w_t: &[W], y: &mut [f32], k: usize, n: usize) {
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
                let o = tile::<2, W>([row(r), row(r + 1)], ws, k);
                for (rr, vals) in o.iter().enumerate() {
                    y[(r + rr) * n + j..(r + rr) * n + j + COLS].copy_from_slice(vals);
                }
            } else {
                let o = tile::<1, W>([row(r)], ws, k);
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
}

/// The sum of `data` in 32 independent lanes; see [`super::Kernel::read_sum`].
pub(super) fn read_sum(data: &[f32]) -> f32 {
    let (chunks, tail) = data.as_chunks::<32>();
    let mut acc = [0.0f32; 32];
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}
