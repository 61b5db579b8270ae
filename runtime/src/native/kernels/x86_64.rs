//! x86-64 matrix kernels: AVX2 + FMA (8 lanes) and AVX-512F (16 lanes), for
//! f32, f16 and int8 weights (f32 accumulation in every case).
//!
//! The weights are packed once at load into column panels
//! ([`super::pack_panels`]): panel `p` holds the `PANEL` outputs starting at
//! `p · PANEL` as `k` rows of `PANEL` values, so one step of the inner loop
//! reads one contiguous row of the panel. A tile of `R` input rows × one
//! panel keeps `R × V` vector accumulators in registers (AVX-512: 6 × 4 of
//! 16 lanes, AVX2: 6 × 2 of 8 lanes); each step loads the panel's row once,
//! widens it to f32 (a plain load for f32, `vcvtph2ps` for f16, `vpmovsxbd` +
//! `vcvtdq2ps` for int8), and for every input row broadcasts `x[r, i]` and
//! adds `x[r, i] · w[i, j]` to each accumulator with one fused multiply-add.
//! Every output is therefore the same chain, `acc = fma(x[r, i], w[i, j],
//! acc)` for `i = 0, 1, …, k − 1` from zero, whatever tile computes it: a row's
//! result does not depend on the batch it is in. The epilogue applies the
//! int8 scale and the bias in the order [`super::finish`] does (multiply,
//! then add) while the tile is still in registers.
//!
//! Every function here is compiled with the features it names enabled and is
//! reachable only through [`gemm`], [`gemm_f16`], [`gemm_i8`] and their
//! 16-lane twins, which check that the CPU has them (f16 weights also need
//! F16C, which every AVX2 CPU has; without it they run the portable kernel
//! on the panels' [`super::unpack_panels`]).

use super::portable::Weight;
use std::arch::x86_64::*;

/// Input rows per tile (both widths).
const MR: usize = 6;
/// Inputs per block of k when several rows pass over a panel: 128 rows of a
/// 64-output panel are 32 KiB of f32 weights (AVX-512), which stay in a
/// 48 KiB L1 while each row tile passes over them.
const KC: usize = 128;
/// Columns per panel, AVX2: 2 vectors of 8.
pub(super) const PANEL_256: usize = 16;
/// Columns per panel, AVX-512: 4 vectors of 16.
pub(super) const PANEL_512: usize = 64;

/// The tile, epilogue and whole-product functions for one vector width and
/// weight type.
macro_rules! kernel {
    (
        $features:literal, $lanes:literal, $vec:ty, $zero:ident, $fma:ident, $set1:ident,
        $loadf:ident, $storef:ident, $add:ident, $mul:ident,
        $t:ty, $load:ident, $tile:ident, $reload:ident, $store:ident, $run:ident,
        $products:ident, $v:tt, $group:literal, $kc:expr
    ) => {
        /// `R` input rows (`x`, row stride `ldx`) × `G` panels (`w[g]`, row
        /// stride `ldw`) of `V` vectors each: `acc` plus the products of the
        /// next `kc` inputs, one fused multiply-add per input in order.
        ///
        /// # Safety
        /// `x` must hold `R` rows of `kc` readable f32s `ldx` apart and every
        /// `w[g]` must hold `kc · ldw` readable weights with `V · lanes ≤ ldw`.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn $tile<const R: usize, const G: usize, const V: usize>(
            x: *const f32,
            ldx: usize,
            kc: usize,
            w: [*const $t; G],
            ldw: usize,
            mut acc: [[[$vec; V]; G]; R],
        ) -> [[[$vec; V]; G]; R] {
            for i in 0..kc {
                let mut wv = [[$zero(); V]; G];
                for g in 0..G {
                    for v in 0..V {
                        // SAFETY: i < kc and v·lanes + lanes ≤ ldw, so the
                        // lanes read lie in w[g]'s kc · ldw values.
                        wv[g][v] = unsafe { $load(w[g].add(i * ldw + v * $lanes)) };
                    }
                }
                for r in 0..R {
                    // SAFETY: r < R and i < kc: inside x's rows.
                    let xb = $set1(unsafe { *x.add(r * ldx + i) });
                    for g in 0..G {
                        for v in 0..V {
                            acc[r][g][v] = $fma(xb, wv[g][v], acc[r][g][v]);
                        }
                    }
                }
            }
            acc
        }

        /// A tile's partial sums as [`$store`] left them in `y` (without
        /// scale or bias).
        #[target_feature(enable = $features)]
        #[inline]
        fn $reload<const R: usize, const G: usize, const V: usize>(
            y: &[f32],
            r0: usize,
            j0: usize,
            n: usize,
        ) -> [[[$vec; V]; G]; R] {
            let mut acc = [[[$zero(); V]; G]; R];
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let yr = &y[(r0 + r) * n..(r0 + r + 1) * n];
                for g in 0..G {
                    for v in 0..V {
                        let j = j0 + (g * V + v) * $lanes;
                        if j >= n {
                            break;
                        }
                        acc_r[g][v] = match yr[j..].first_chunk::<$lanes>() {
                            Some(part) => $loadf(part),
                            None => {
                                let mut tmp = [0.0f32; $lanes];
                                tmp[..n - j].copy_from_slice(&yr[j..]);
                                $loadf(&tmp)
                            }
                        };
                    }
                }
            }
            acc
        }

        /// Write a tile's sums into `y` (rows `r0..`, row stride `n`; vector
        /// `v` of panel `g` holds outputs `j0 + (g · V + v) · lanes ..`),
        /// times the int8 scale and plus the bias, as [`super::finish`] would;
        /// outputs at `n` and beyond (a last panel's padding) are dropped.
        #[target_feature(enable = $features)]
        #[inline]
        fn $store<const R: usize, const G: usize, const V: usize>(
            acc: [[[$vec; V]; G]; R],
            y: &mut [f32],
            r0: usize,
            j0: usize,
            n: usize,
            scale: Option<&[f32]>,
            bias: Option<&[f32]>,
        ) {
            for (r, acc_r) in acc.iter().enumerate() {
                let yr = &mut y[(r0 + r) * n..(r0 + r + 1) * n];
                for g in 0..G {
                    for v in 0..V {
                        let j = j0 + (g * V + v) * $lanes;
                        if j >= n {
                            break;
                        }
                        let mut a = acc_r[g][v];
                        // A whole vector of outputs: scale and bias as vectors.
                        if let Some(out) = yr[j..].first_chunk_mut::<$lanes>() {
                            if let Some(s) = scale.and_then(|s| s[j..].first_chunk::<$lanes>()) {
                                a = $mul(a, $loadf(s));
                            }
                            if let Some(b) = bias.and_then(|b| b[j..].first_chunk::<$lanes>()) {
                                a = $add(a, $loadf(b));
                            }
                            $storef(out, a);
                            continue;
                        }
                        // The last outputs of a padded panel, one by one.
                        let mut tmp = [0.0f32; $lanes];
                        $storef(&mut tmp, a);
                        for (c, &t) in tmp[..n - j].iter().enumerate() {
                            let mut o = t;
                            if let Some(s) = scale {
                                o *= s[j + c];
                            }
                            if let Some(b) = bias {
                                o += b[j + c];
                            }
                            yr[j + c] = o;
                        }
                    }
                }
            }
        }

        /// One tile over inputs `i0 .. i0 + kc`: from zero when `i0 = 0`,
        /// else from the partial sums in `y`; the partial sums back into
        /// `y`, or with the epilogue when the block is the last.
        ///
        /// # Safety
        /// As [`$tile`], with `x` the start of row `r0` of the input (row
        /// stride `ldx`) and `w` the panels' starts.
        #[target_feature(enable = $features)]
        #[inline]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $run<const R: usize, const G: usize, const V: usize>(
            x: *const f32,
            ldx: usize,
            (i0, kc): (usize, usize),
            w: [*const $t; G],
            ldw: usize,
            y: &mut [f32],
            (r0, j0, n): (usize, usize, usize),
            scale: Option<&[f32]>,
            bias: Option<&[f32]>,
        ) {
            let acc = if i0 == 0 {
                [[[$zero(); V]; G]; R]
            } else {
                $reload::<R, G, V>(y, r0, j0, n)
            };
            // SAFETY: row r0's inputs i0.. and the panels' rows i0..: the
            // caller's promise for the block.
            let acc = unsafe {
                $tile::<R, G, V>(x.add(i0), ldx, kc, w.map(|p| p.add(i0 * ldw)), ldw, acc)
            };
            if i0 + kc == ldx {
                $store::<R, G, V>(acc, y, r0, j0, n, scale, bias);
            } else {
                $store::<R, G, V>(acc, y, r0, j0, n, None, None);
            }
        }

        /// `y[r, j] = (Σ_i x[r, i] · w[i, j]) (· scale[j]) (+ bias[j])` over
        /// weights packed in panels of `V · lanes` columns.
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        fn $products(
            x: &[f32],
            w: &[$t],
            scale: Option<&[f32]>,
            bias: Option<&[f32]>,
            y: &mut [f32],
            k: usize,
            n: usize,
        ) {
            const PANEL: usize = $v * $lanes;
            let rows = x.len() / k;
            assert_eq!(w.len(), super::packed_len(k, n, PANEL, $lanes), "packed weight size");
            assert!(y.len() >= rows * n && scale.is_none_or(|s| s.len() >= n));
            assert!(bias.is_none_or(|b| b.len() >= n));
            let block = $kc;
            // Inputs every row shares from the start (KDE's candidates share
            // the observation's embedding), in whole blocks.
            let shared = super::shared_prefix(x, k, rows) / block * block;
            let (mut j0, mut off) = (0, 0);
            while j0 < n {
                let vecs = (n - j0).min(PANEL).div_ceil($lanes);
                let ldw = vecs * $lanes;
                // One row (a control loop's batch 1): `$group` full panels at
                // once, so that enough independent sums are in flight; each
                // weight is read once, so no blocking of k.
                if rows == 1 && j0 + $group * PANEL <= n {
                    let mut ws = [w.as_ptr(); $group];
                    for (g, p) in ws.iter_mut().enumerate() {
                        // SAFETY: full panels g of this group lie within w
                        // (w.len() was checked against the packed size).
                        *p = unsafe { w.as_ptr().add(off + g * k * PANEL) };
                    }
                    // SAFETY: x holds k values (one row); each panel k · PANEL.
                    unsafe {
                        $run::<1, $group, $v>(x.as_ptr(), k, (0, k), ws, PANEL, y, (0, j0, n), scale, bias)
                    };
                    j0 += $group * PANEL;
                    off += $group * k * PANEL;
                    continue;
                }
                // SAFETY: off + k · ldw ≤ w.len() for this panel.
                let wp = [unsafe { w.as_ptr().add(off) }];
                // Blocks of `block` inputs: the panel's block stays in L1
                // while every row tile passes over it.
                for i0 in (0..k).step_by(block) {
                    let kc = (k - i0).min(block);
                    if i0 + kc <= shared {
                        // Every row has these inputs: row 0's sums are every
                        // row's (the same chain of the same values), handed
                        // to the others before the first block that differs.
                        // SAFETY: row 0 of x, block i0..i0 + kc; the panel
                        // holds k · ldw weights.
                        unsafe {
                            kernel!(@dispatch $v, $run, 1, vecs,
                                (x.as_ptr(), k, (i0, kc), wp, ldw, &mut *y, (0, j0, n), scale, bias))
                        };
                        if i0 + kc == k || i0 + kc + block > shared {
                            let cols = (n - j0).min(PANEL);
                            let (first, rest) = y.split_at_mut(n);
                            for yr in rest.chunks_exact_mut(n).take(rows - 1) {
                                yr[j0..j0 + cols].copy_from_slice(&first[j0..j0 + cols]);
                            }
                        }
                        continue;
                    }
                    let mut r0 = 0;
                    while r0 < rows {
                        let rr = (rows - r0).min(MR);
                        // SAFETY: rows r0..r0 + rr of x exist (rr ≤ rows − r0).
                        let xp = unsafe { x.as_ptr().add(r0 * k) };
                        // SAFETY: rr rows of k inputs from xp, block i0..i0 + kc
                        // within them; the panel holds k · ldw weights, ldw =
                        // vecs · lanes.
                        unsafe {
                            kernel!(@dispatch $v, $run, rr, vecs,
                                (xp, k, (i0, kc), wp, ldw, &mut *y, (r0, j0, n), scale, bias))
                        };
                        r0 += rr;
                    }
                }
                j0 += PANEL;
                off += k * ldw;
            }
        }
    };
    (@dispatch 4, $run:ident, $rr:expr, $vecs:expr, $args:tt) => {
        dispatch!($run, $rr, $vecs, $args; [1, 2, 3, 4, 5, 6]; [1, 2, 3, 4])
    };
    (@dispatch 2, $run:ident, $rr:expr, $vecs:expr, $args:tt) => {
        dispatch!($run, $rr, $vecs, $args; [1, 2, 3, 4, 5, 6]; [1, 2])
    };
}

/// `$run::<R, 1, V>$args` for the runtime `R = $rr` (up to [`MR`]) and
/// `V = $vecs` (up to the panel's vectors).
macro_rules! dispatch {
    ($run:ident, $rr:expr, $vecs:expr, $args:tt; [$($r:literal),*]; $vs:tt) => {
        match $rr {
            $($r => dispatch!(@vecs $run, $r, $vecs, $args; $vs),)*
            _ => unreachable!("at most {MR} rows per tile"),
        }
    };
    (@vecs $run:ident, $r:literal, $vecs:expr, $args:tt; [$($v:literal),*]) => {
        match $vecs {
            $($v => $run::<$r, 1, $v> $args,)*
            _ => unreachable!("more vectors than a panel has"),
        }
    };
}

// AVX2 + FMA: 8 lanes, panels of 16 columns, four panels at once for one row.

#[target_feature(enable = "avx2,fma")]
fn zero() -> __m256 {
    _mm256_setzero_ps()
}

#[target_feature(enable = "avx2,fma")]
fn fma(x: __m256, w: __m256, acc: __m256) -> __m256 {
    _mm256_fmadd_ps(x, w, acc)
}

#[target_feature(enable = "avx2,fma")]
fn set1(v: f32) -> __m256 {
    _mm256_set1_ps(v)
}

#[target_feature(enable = "avx2,fma")]
fn add(a: __m256, b: __m256) -> __m256 {
    _mm256_add_ps(a, b)
}

#[target_feature(enable = "avx2,fma")]
fn mul(a: __m256, b: __m256) -> __m256 {
    _mm256_mul_ps(a, b)
}

#[target_feature(enable = "avx2,fma")]
fn loadf(v: &[f32; 8]) -> __m256 {
    // SAFETY: `v` is 8 readable f32s; loadu has no alignment requirement.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

#[target_feature(enable = "avx2,fma")]
fn storef(out: &mut [f32; 8], v: __m256) {
    // SAFETY: `out` is 8 writable f32s; storeu has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}

/// # Safety
/// `p` points to 8 readable f32s.
#[target_feature(enable = "avx2,fma")]
unsafe fn load(p: *const f32) -> __m256 {
    // SAFETY: the caller's promise; loadu has no alignment requirement.
    unsafe { _mm256_loadu_ps(p) }
}

/// # Safety
/// `p` points to 8 readable f16s.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16(p: *const half::f16) -> __m256 {
    // SAFETY: the caller's promise (16 bytes; `half::f16` is a transparent
    // u16); loadu has no alignment requirement.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) }
}

/// # Safety
/// `p` points to 8 readable bytes.
#[target_feature(enable = "avx2,fma")]
unsafe fn load_i8(p: *const i8) -> __m256 {
    // SAFETY: the caller's promise; loadl reads exactly 8 bytes, unaligned.
    let q = unsafe { _mm_loadl_epi64(p.cast::<__m128i>()) };
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))
}

kernel!(
    "avx2,fma", 8, __m256, zero, fma, set1, loadf, storef, add, mul, f32, load, tile, reload,
    store, run, products, 2, 4, KC
);
kernel!(
    "avx2,fma,f16c",
    8,
    __m256,
    zero,
    fma,
    set1,
    loadf,
    storef,
    add,
    mul,
    half::f16,
    load_f16,
    tile_f16,
    reload_f16,
    store_f16,
    run_f16,
    products_f16,
    2,
    4,
    KC
);
kernel!(
    "avx2,fma",
    8,
    __m256,
    zero,
    fma,
    set1,
    loadf,
    storef,
    add,
    mul,
    i8,
    load_i8,
    tile_i8,
    reload_i8,
    store_i8,
    run_i8,
    products_i8,
    2,
    4,
    KC
);

// AVX-512F: 16 lanes, panels of 64 columns, two panels at once for one row.

#[target_feature(enable = "avx512f,avx2,fma")]
fn zero16() -> __m512 {
    _mm512_setzero_ps()
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn fma16(x: __m512, w: __m512, acc: __m512) -> __m512 {
    _mm512_fmadd_ps(x, w, acc)
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn set1_16(v: f32) -> __m512 {
    _mm512_set1_ps(v)
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn add16(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(a, b)
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn mul16(a: __m512, b: __m512) -> __m512 {
    _mm512_mul_ps(a, b)
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn loadf16(v: &[f32; 16]) -> __m512 {
    // SAFETY: `v` is 16 readable f32s; loadu has no alignment requirement.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn storef16(out: &mut [f32; 16], v: __m512) {
    // SAFETY: `out` is 16 writable f32s; storeu has no alignment requirement.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
}

/// # Safety
/// `p` points to 16 readable f32s.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn load16(p: *const f32) -> __m512 {
    // SAFETY: the caller's promise; loadu has no alignment requirement.
    unsafe { _mm512_loadu_ps(p) }
}

/// # Safety
/// `p` points to 16 readable f16s.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn load16_f16(p: *const half::f16) -> __m512 {
    // SAFETY: the caller's promise (32 bytes); loadu is unaligned.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast::<__m256i>())) }
}

/// # Safety
/// `p` points to 16 readable bytes.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn load16_i8(p: *const i8) -> __m512 {
    // SAFETY: the caller's promise; loadu is unaligned.
    let q = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q))
}

kernel!(
    "avx512f,avx2,fma",
    16,
    __m512,
    zero16,
    fma16,
    set1_16,
    loadf16,
    storef16,
    add16,
    mul16,
    f32,
    load16,
    tile16,
    reload16,
    store16,
    run16,
    products16,
    4,
    2,
    KC
);
kernel!(
    "avx512f,avx2,fma",
    16,
    __m512,
    zero16,
    fma16,
    set1_16,
    loadf16,
    storef16,
    add16,
    mul16,
    half::f16,
    load16_f16,
    tile16_f16,
    reload16_f16,
    store16_f16,
    run16_f16,
    products16_f16,
    4,
    2,
    KC
);
kernel!(
    "avx512f,avx2,fma",
    16,
    __m512,
    zero16,
    fma16,
    set1_16,
    loadf16,
    storef16,
    add16,
    mul16,
    i8,
    load16_i8,
    tile16_i8,
    reload16_i8,
    store16_i8,
    run16_i8,
    products16_i8,
    4,
    2,
    KC
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

/// Whether this CPU runs the AVX-512 kernels (AVX-512F besides AVX2 + FMA).
pub(super) fn available_512() -> bool {
    available() && std::arch::is_x86_feature_detected!("avx512f")
}

/// The portable kernel on panel-packed weights, for a CPU that lacks the
/// features (which `Kernel::detect` never picks these kernels for).
#[allow(clippy::too_many_arguments)]
fn fallback<W: Weight>(
    x: &[f32],
    w: &[W],
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
    panel: usize,
    lanes: usize,
) {
    let w_t = super::unpack_panels(w, k, n, panel, lanes);
    super::portable::products(x, &w_t, y, k, n);
    super::finish(y, scale, bias, n);
}

/// `y[r, j] = Σ_i x[r, i] · w[i, j] (+ b[j])` on 8 lanes, `w` packed in
/// panels of [`PANEL_256`]; see [`super::Kernel::gemm_packed`].
pub(super) fn gemm(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], k: usize, n: usize) {
    if !available() || k == 0 {
        return fallback(x, w, None, bias, y, k, n, PANEL_256, 8);
    }
    // SAFETY: AVX2 and FMA were found on this CPU just above.
    unsafe { products(x, w, None, bias, y, k, n) };
}

/// [`gemm`] with f16 weights.
pub(super) fn gemm_f16(
    x: &[f32],
    w: &[half::f16],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    if !available_f16() || k == 0 {
        return fallback(x, w, None, bias, y, k, n, PANEL_256, 8);
    }
    // SAFETY: AVX2, FMA and F16C were found on this CPU just above.
    unsafe { products_f16(x, w, None, bias, y, k, n) };
}

/// [`gemm`] with int8 weights and one scale per output.
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
        return fallback(x, q, Some(scale), bias, y, k, n, PANEL_256, 8);
    }
    // SAFETY: AVX2 and FMA were found on this CPU just above.
    unsafe { products_i8(x, q, Some(scale), bias, y, k, n) };
}

/// [`gemm`] on 16 lanes, `w` packed in panels of [`PANEL_512`].
pub(super) fn gemm512(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    if !available_512() || k == 0 {
        return fallback(x, w, None, bias, y, k, n, PANEL_512, 16);
    }
    // SAFETY: AVX-512F, AVX2 and FMA were found on this CPU just above.
    unsafe { products16(x, w, None, bias, y, k, n) };
}

/// [`gemm_f16`] on 16 lanes (AVX-512F converts f16 itself).
pub(super) fn gemm512_f16(
    x: &[f32],
    w: &[half::f16],
    bias: Option<&[f32]>,
    y: &mut [f32],
    k: usize,
    n: usize,
) {
    if !available_512() || k == 0 {
        return fallback(x, w, None, bias, y, k, n, PANEL_512, 16);
    }
    // SAFETY: as in `gemm512`.
    unsafe { products16_f16(x, w, None, bias, y, k, n) };
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
        return fallback(x, q, Some(scale), bias, y, k, n, PANEL_512, 16);
    }
    // SAFETY: as in `gemm512`.
    unsafe { products16_i8(x, q, Some(scale), bias, y, k, n) };
}

/// The sum of `data` in 8 independent vectors of `$lanes`; one function per
/// vector width.
macro_rules! read_sum {
    ($features:literal, $lanes:tt, $zero:ident, $add:ident, $loadf:ident, $storef:ident, $name:ident, $inner:ident) => {
        #[target_feature(enable = $features)]
        fn $inner(data: &[f32]) -> f32 {
            let (chunks, tail) = data.as_chunks::<{ 8 * $lanes }>();
            let mut acc = [$zero(); 8];
            for c in chunks {
                for (a, v) in acc.iter_mut().zip(c.as_chunks::<$lanes>().0) {
                    *a = $add(*a, $loadf(v));
                }
            }
            let mut total = 0.0f32;
            for a in acc {
                let mut lanes = [0.0f32; $lanes];
                $storef(&mut lanes, a);
                total += lanes.iter().sum::<f32>();
            }
            total + tail.iter().sum::<f32>()
        }

        /// See [`super::Kernel::read_sum`]; the portable sum on a CPU
        /// without the features.
        pub(super) fn $name(data: &[f32]) -> f32 {
            if !read_sum!(@available $lanes) {
                return super::portable::read_sum(data);
            }
            // SAFETY: the features were found on this CPU just above.
            unsafe { $inner(data) }
        }
    };
    (@available 8) => {
        available()
    };
    (@available 16) => {
        available_512()
    };
}

read_sum!(
    "avx2,fma",
    8,
    zero,
    add,
    loadf,
    storef,
    read_sum,
    read_sum_avx2
);
read_sum!(
    "avx512f,avx2,fma",
    16,
    zero16,
    add16,
    loadf16,
    storef16,
    read_sum512,
    read_sum_avx512
);

#[target_feature(enable = "avx2,fma")]
fn loops_avx2(job: impl super::Loops) {
    job.run();
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn loops_avx512(job: impl super::Loops) {
    job.run();
}

/// See [`super::Kernel::run_vectorised`]: the job compiled for AVX2 + FMA, or
/// as built on a CPU without them.
pub(super) fn run_vectorised(job: impl super::Loops) {
    if !available() {
        return job.run();
    }
    // SAFETY: AVX2 and FMA were found on this CPU just above.
    unsafe { loops_avx2(job) }
}

/// [`run_vectorised`] for AVX-512F.
pub(super) fn run_vectorised512(job: impl super::Loops) {
    if !available_512() {
        return run_vectorised(job);
    }
    // SAFETY: AVX-512F, AVX2 and FMA were found on this CPU just above.
    unsafe { loops_avx512(job) }
}
