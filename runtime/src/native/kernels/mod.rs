//! The native engine's matrix kernel, one module per instruction set (as
//! tract-linalg arranges its kernels): [`portable`] runs anywhere,
//! [`x86_64`] uses AVX2 + FMA or AVX-512F, [`aarch64`] uses NEON. [`Kernel::detect`]
//! picks the best one this CPU has, once, when a graph is loaded.
//!
//! Every kernel computes each output as the same sequence of operations
//! whichever row tile computes it, so a row's result does not depend on the
//! batch it is in (the tests check this bit for bit). Kernels differ from
//! one another by rounding only (fused multiply-adds, lane order).

#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
mod aarch64;
mod portable;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86_64;

pub(crate) use portable::Weight;
use std::fmt;

/// A matrix kernel of the native engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Plain Rust that the compiler vectorises for the target's baseline.
    Portable,
    /// x86-64 with AVX2 and FMA: 8 lanes, fused multiply-add.
    Avx2Fma,
    /// x86-64 with AVX-512F (and AVX2, FMA): 16 lanes, fused multiply-add.
    Avx512,
    /// aarch64 NEON (Advanced SIMD): 2 × 4 lanes, fused multiply-add.
    Neon,
}

impl Kernel {
    /// Every kernel, whether or not this CPU has it.
    pub const ALL: [Kernel; 4] = [
        Kernel::Portable,
        Kernel::Avx2Fma,
        Kernel::Avx512,
        Kernel::Neon,
    ];

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        if Self::Avx512.is_available() {
            Self::Avx512
        } else if Self::Avx2Fma.is_available() {
            Self::Avx2Fma
        } else if Self::Neon.is_available() {
            Self::Neon
        } else {
            Self::Portable
        }
    }

    /// Whether this CPU (and this build's architecture) runs the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => x86_64::available(),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => x86_64::available_512(),
            #[cfg(target_arch = "aarch64")]
            Self::Neon => aarch64::available(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The kernels this CPU runs, the portable one first.
    pub fn available() -> impl Iterator<Item = Kernel> {
        Self::ALL.into_iter().filter(|k| k.is_available())
    }

    /// A short name for logs and tables: `portable`, `avx2+fma`, `avx512f`,
    /// `neon`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2Fma => "avx2+fma",
            Self::Avx512 => "avx512f",
            Self::Neon => "neon",
        }
    }

    /// Columns per panel and lanes per vector when the kernel reads its
    /// weights packed in column panels ([`pack_panels`]); `None` when it
    /// reads them as `[n, k]` rows (the transposed weight as it is). This
    /// depends on the kernel and the build's architecture only, never on the
    /// CPU, so a packed weight means one thing for a kernel everywhere.
    fn panels(self) -> Option<(usize, usize)> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => Some((x86_64::PANEL_256, 8)),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => Some((x86_64::PANEL_512, 16)),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// A weight, transposed (`[n, k]`, row-major), laid out the way this
    /// kernel reads it: done once at load, and the only form
    /// [`Kernel::gemm_matrix`] takes.
    pub(crate) fn pack<W: Weight>(self, w_t: &[W], k: usize, n: usize) -> Vec<W> {
        assert_eq!(w_t.len(), k * n, "a [{n}, {k}] weight");
        match self.panels() {
            Some((panel, lanes)) => pack_panels(w_t, k, n, panel, lanes),
            None => w_t.to_vec(),
        }
    }

    /// `y[r, j] = Σ_i x[r, i] · w[i, j] (+ b[j])` for every row `r` of `x`
    /// (`x` is `[rows, k]`, `y` is `[rows, n]`, row-major; `rows = x.len() /
    /// k`), `w` as [`Kernel::pack`] laid it out. A kernel this CPU lacks,
    /// which [`Kernel::detect`] and [`Kernel::available`] never return, runs
    /// the portable one.
    fn gemm_packed(
        self,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        k: usize,
        n: usize,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => x86_64::gemm(x, w, bias, y, k, n),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => x86_64::gemm512(x, w, bias, y, k, n),
            #[cfg(target_arch = "aarch64")]
            Self::Neon => aarch64::gemm(x, w, bias, y, k, n),
            #[allow(unreachable_patterns)]
            _ => portable::gemm(x, w, bias, y, k, n),
        }
    }
}

/// Element-wise work (activations, norms, concatenations) that
/// [`Kernel::run_vectorised`] compiles for a kernel's instruction set. `run`
/// must be `#[inline(always)]`, and so must everything it calls whose loops
/// should be widened.
pub(crate) trait Loops {
    fn run(self);
}

impl Kernel {
    /// Run `job` compiled for this kernel's instruction set (AVX-512F or
    /// AVX2 + FMA: the compiler vectorises its loops 16 or 8 lanes wide
    /// instead of the build's baseline); the same operations in the same
    /// order, so the same results. Other kernels run it as built.
    pub(crate) fn run_vectorised(self, job: impl Loops) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => x86_64::run_vectorised(job),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => x86_64::run_vectorised512(job),
            #[allow(unreachable_patterns)]
            _ => job.run(),
        }
    }
}

impl Kernel {
    /// The sum of `data`, read with this kernel's widest loads into enough
    /// independent sums to keep the loads busy: a streaming read, the
    /// fastest this core takes in those bytes (`bench` compares the
    /// policy's weight traffic with it).
    pub(crate) fn read_sum(self, data: &[f32]) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => x86_64::read_sum(data),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => x86_64::read_sum512(data),
            #[allow(unreachable_patterns)]
            _ => portable::read_sum(data),
        }
    }
}

/// `w_t` (`[n, k]`) as column panels: panel `p` holds outputs `p · panel ..`
/// as `k` rows of its width — `panel`, or for the last panel its outputs
/// rounded up to a multiple of `lanes`, the extra columns zero. Reading one
/// step of `k` for a panel's outputs is then one contiguous row.
pub(super) fn pack_panels<W: Weight>(
    w_t: &[W],
    k: usize,
    n: usize,
    panel: usize,
    lanes: usize,
) -> Vec<W> {
    let mut out = Vec::with_capacity(packed_len(k, n, panel, lanes));
    for j0 in (0..n).step_by(panel) {
        let cols = (n - j0).min(panel);
        let width = cols.div_ceil(lanes) * lanes;
        for i in 0..k {
            for c in 0..width {
                out.push(if c < cols {
                    w_t[(j0 + c) * k + i]
                } else {
                    W::ZERO
                });
            }
        }
    }
    out
}

/// The inverse of [`pack_panels`]: `[n, k]` rows again.
// Used by the x86-64 kernels (and the tests) only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn unpack_panels<W: Weight>(
    w: &[W],
    k: usize,
    n: usize,
    panel: usize,
    lanes: usize,
) -> Vec<W> {
    let mut w_t = vec![W::ZERO; k * n];
    let mut off = 0;
    for j0 in (0..n).step_by(panel) {
        let cols = (n - j0).min(panel);
        let width = cols.div_ceil(lanes) * lanes;
        for i in 0..k {
            for c in 0..cols {
                w_t[(j0 + c) * k + i] = w[off + i * width + c];
            }
        }
        off += k * width;
    }
    w_t
}

/// How many leading inputs all `rows` rows of `x` (`[rows, k]`) have in
/// common, bit for bit (so that a product over them is the same for every
/// row); 0 for fewer than two rows.
// Used by the x86-64 kernels (and the tests) only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn shared_prefix(x: &[f32], k: usize, rows: usize) -> usize {
    if rows < 2 || k == 0 {
        return 0;
    }
    let first = &x[..k];
    let mut shared = k;
    for row in x.chunks_exact(k).take(rows).skip(1) {
        shared = first[..shared]
            .iter()
            .zip(row)
            .position(|(a, b)| a.to_bits() != b.to_bits())
            .unwrap_or(shared);
        if shared == 0 {
            break;
        }
    }
    shared
}

/// Values [`pack_panels`] writes for a `[n, k]` weight.
pub(super) fn packed_len(k: usize, n: usize, panel: usize, lanes: usize) -> usize {
    let full = n / panel;
    let last = (n - full * panel).div_ceil(lanes) * lanes;
    k * (full * panel + last)
}

/// A weight matrix as [`Kernel::pack`] laid it out for the kernel that
/// reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Matrix<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// IEEE half-precision values.
    F16(&'a [half::f16]),
    /// `w[i, j] = q[i, j] · scale[j]` (`scale` is not packed: one per output).
    Int8 { q: &'a [i8], scale: &'a [f32] },
}

/// `y[r, j] = y[r, j] · scale[j] + b[j]` (each part when present), row by
/// row; every kernel ends with this, so they differ in the sums only.
fn finish(y: &mut [f32], scale: Option<&[f32]>, bias: Option<&[f32]>, n: usize) {
    if n == 0 {
        return;
    }
    match (scale, bias) {
        (None, None) => {}
        (None, Some(b)) => {
            for yr in y.chunks_exact_mut(n) {
                for (o, &bb) in yr.iter_mut().zip(b) {
                    *o += bb;
                }
            }
        }
        (Some(s), None) => {
            for yr in y.chunks_exact_mut(n) {
                for (o, &ss) in yr.iter_mut().zip(s) {
                    *o *= ss;
                }
            }
        }
        (Some(s), Some(b)) => {
            for yr in y.chunks_exact_mut(n) {
                for ((o, &ss), &bb) in yr.iter_mut().zip(s).zip(b) {
                    *o = *o * ss + bb;
                }
            }
        }
    }
}

impl Kernel {
    /// [`Kernel::gemm_packed`] with f16 weights, widened to f32 in the
    /// kernel and accumulated in f32 (AVX2 + FMA with F16C, AVX-512F; NEON
    /// and the portable kernel widen in plain Rust).
    fn gemm_packed_f16(
        self,
        x: &[f32],
        w: &[half::f16],
        bias: Option<&[f32]>,
        y: &mut [f32],
        k: usize,
        n: usize,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => x86_64::gemm_f16(x, w, bias, y, k, n),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => x86_64::gemm512_f16(x, w, bias, y, k, n),
            #[allow(unreachable_patterns)]
            _ => portable::gemm_f16(x, w, bias, y, k, n),
        }
    }

    /// [`Kernel::gemm_packed`] with symmetric int8 weights and one scale per
    /// output: `y[r, j] = scale[j] · Σ_i x[r, i] · q[i, j] (+ b[j])`, the sum
    /// in f32.
    #[allow(clippy::too_many_arguments)]
    fn gemm_packed_i8(
        self,
        x: &[f32],
        q: &[i8],
        scale: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        k: usize,
        n: usize,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => x86_64::gemm_i8(x, q, scale, bias, y, k, n),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => x86_64::gemm512_i8(x, q, scale, bias, y, k, n),
            #[allow(unreachable_patterns)]
            _ => portable::gemm_i8(x, q, scale, bias, y, k, n),
        }
    }

    /// The product with a weight in any precision, packed by
    /// [`Kernel::pack`] for this kernel.
    pub(crate) fn gemm_matrix(
        self,
        x: &[f32],
        w: Matrix<'_>,
        bias: Option<&[f32]>,
        y: &mut [f32],
        k: usize,
        n: usize,
    ) {
        match w {
            Matrix::F32(w) => self.gemm_packed(x, w, bias, y, k, n),
            Matrix::F16(w) => self.gemm_packed_f16(x, w, bias, y, k, n),
            Matrix::Int8 { q, scale } => self.gemm_packed_i8(x, q, scale, bias, y, k, n),
        }
    }
}

/// The products on unpacked (`[n, k]`) weights, packed on every call: for
/// tests, which compare kernels on the same matrices.
#[cfg(test)]
impl Kernel {
    pub(crate) fn gemm(
        self,
        x: &[f32],
        w_t: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        k: usize,
        n: usize,
    ) {
        self.gemm_packed(x, &self.pack(w_t, k, n), bias, y, k, n);
    }

    pub(crate) fn gemm_f16(
        self,
        x: &[f32],
        w_t: &[half::f16],
        bias: Option<&[f32]>,
        y: &mut [f32],
        k: usize,
        n: usize,
    ) {
        self.gemm_packed_f16(x, &self.pack(w_t, k, n), bias, y, k, n);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm_i8(
        self,
        x: &[f32],
        q: &[i8],
        scale: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        k: usize,
        n: usize,
    ) {
        self.gemm_packed_i8(x, &self.pack(q, k, n), scale, bias, y, k, n);
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded stream of values in [-0.5, 0.5).
    fn stream(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    #[test]
    fn the_selected_kernel_is_the_best_this_cpu_has() {
        let k = Kernel::detect();
        println!("native matrix kernel on this CPU: {k}");
        assert!(k.is_available());
        #[cfg(target_arch = "aarch64")]
        assert_eq!(k, Kernel::Neon);
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
                assert_eq!(k, Kernel::Avx512);
            } else if avx2 {
                assert_eq!(k, Kernel::Avx2Fma);
            } else {
                assert_eq!(k, Kernel::Portable);
            }
        }
        assert_eq!(k.name(), k.to_string());
        let names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["portable", "avx2+fma", "avx512f", "neon"]);
        assert_eq!(Kernel::available().next(), Some(Kernel::Portable));
    }

    #[test]
    fn gemm_matches_naive_for_every_shape_and_kernel() {
        let mut next = stream(1);
        for (rows, k, n) in [
            (1, 1, 1),
            (1, 17, 5),
            (3, 33, 9),
            (2, 8, 4),
            (5, 522, 13),
            (1, 40, 200),
            (13, 100, 150),
        ] {
            let x: Vec<f32> = (0..rows * k).map(|_| next()).collect();
            let w_t: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            let mut want = vec![0.0f32; rows * n];
            for r in 0..rows {
                for j in 0..n {
                    want[r * n + j] =
                        b[j] + (0..k).map(|i| x[r * k + i] * w_t[j * k + i]).sum::<f32>();
                }
            }
            for kernel in Kernel::available() {
                let mut y = vec![0.0f32; rows * n];
                kernel.gemm(&x, &w_t, Some(&b), &mut y, k, n);
                for (a, e) in y.iter().zip(&want) {
                    assert!(
                        (a - e).abs() < 1e-4,
                        "{kernel}: rows {rows} k {k} n {n}: {a} vs {e}"
                    );
                }
            }
        }
    }

    /// Every available kernel against the portable one, on shapes around
    /// each kernel's lane count and tile sizes (k tails 0..8, n tails 0..8,
    /// odd and even row counts), with and without a bias. A SIMD kernel
    /// rounds differently somewhere (fused multiply-adds, its own lane
    /// order), so one that never differs in a bit is not running at all.
    #[test]
    fn every_kernel_agrees_with_the_portable_one() {
        let mut next = stream(7);
        let ks = [
            1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 23, 31, 32, 33, 64, 100, 128, 522,
        ];
        let ns = [1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 17, 33, 64, 65, 130, 200];
        let mut compared = 0usize;
        let mut differed = Vec::new();
        for rows in [1, 2, 3, 4, 5, 8, 9] {
            for &k in &ks {
                for &n in &ns {
                    let x: Vec<f32> = (0..rows * k).map(|_| next()).collect();
                    let w_t: Vec<f32> = (0..n * k).map(|_| next()).collect();
                    let b: Vec<f32> = (0..n).map(|_| next()).collect();
                    for bias in [None, Some(b.as_slice())] {
                        // Stale values in `y` must not leak into the result.
                        let mut want = vec![f32::NAN; rows * n];
                        Kernel::Portable.gemm(&x, &w_t, bias, &mut want, k, n);
                        for kernel in Kernel::available() {
                            let mut y = vec![f32::NAN; rows * n];
                            kernel.gemm(&x, &w_t, bias, &mut y, k, n);
                            for (i, (a, e)) in y.iter().zip(&want).enumerate() {
                                assert!(
                                    (a - e).abs() <= 1e-4 * e.abs().max(1.0),
                                    "{kernel}: rows {rows} k {k} n {n} bias {}: y[{}, {}] = {a}, \
                                     portable {e}",
                                    bias.is_some(),
                                    i / n,
                                    i % n
                                );
                                if a.to_bits() != e.to_bits() && !differed.contains(&kernel) {
                                    differed.push(kernel);
                                }
                            }
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert!(compared >= 7 * ks.len() * ns.len() * 2);
        for kernel in Kernel::available().filter(|&k| k != Kernel::Portable) {
            assert!(
                differed.contains(&kernel),
                "{kernel} gave the portable kernel's bits for every shape: is it dispatched?"
            );
        }
    }

    /// Shapes for the batch-size tests: n tails of every vector width, and n
    /// wide enough for the one-row path that runs several panels at once
    /// (AVX2: 4 × 16 outputs, AVX-512: 2 × 64).
    const BATCH_SHAPES: [(usize, usize); 9] = [
        (1, 1),
        (9, 7),
        (33, 13),
        (64, 32),
        (17, 9),
        (5, 64),
        (31, 130),
        (12, 200),
        (40, 257),
    ];

    /// A row gives the same bits alone as in a batch of any size (up to two
    /// full tiles of rows and a remainder).
    #[test]
    fn results_do_not_depend_on_the_batch_size() {
        let mut next = stream(11);
        for (k, n) in BATCH_SHAPES {
            let rows = 13;
            let x: Vec<f32> = (0..rows * k).map(|_| next()).collect();
            let w_t: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            for kernel in Kernel::available() {
                let mut alone = vec![0.0f32; rows * n];
                for r in 0..rows {
                    kernel.gemm(
                        &x[r * k..(r + 1) * k],
                        &w_t,
                        Some(&b),
                        &mut alone[r * n..(r + 1) * n],
                        k,
                        n,
                    );
                }
                for batch in 2..=rows {
                    let mut y = vec![0.0f32; batch * n];
                    kernel.gemm(&x[..batch * k], &w_t, Some(&b), &mut y, k, n);
                    for (a, e) in y.iter().zip(&alone) {
                        assert_eq!(
                            a.to_bits(),
                            e.to_bits(),
                            "{kernel}: k {k} n {n} batch {batch}"
                        );
                    }
                }
            }
        }
    }

    /// The f16 and int8 kernels: each available kernel against the portable
    /// one (within 1e-4, relative above 1), the portable one against the f32
    /// kernel on the widened weights (the same bits for f16; within 1e-5
    /// relative for int8, which scales once per output instead of once per
    /// weight), and the results against f32 on the original weights within
    /// the format's worst case: |Σ x·(w − ŵ)| ≤ Σ |x|·|w − ŵ|, with
    /// |w − ŵ| ≤ 2⁻¹¹|w| for f16 and ≤ scale/2 for int8.
    #[test]
    fn reduced_precision_kernels_agree_with_portable_and_with_f32_within_their_bound() {
        let mut next = stream(23);
        let mut compared = 0usize;
        for rows in [1, 2, 3, 5, 8] {
            for k in [1, 7, 8, 9, 16, 31, 33, 100, 522] {
                for n in [1, 3, 4, 5, 8, 9, 13, 17] {
                    let x: Vec<f32> = (0..rows * k).map(|_| 4.0 * next()).collect();
                    let w_t: Vec<f32> = (0..n * k).map(|_| next()).collect();
                    let b: Vec<f32> = (0..n).map(|_| next()).collect();
                    let h: Vec<half::f16> = w_t.iter().map(|&v| half::f16::from_f32(v)).collect();
                    let wide: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
                    let (q, scale) = crate::weights::quantize_int8(&w_t, n, k, 0);
                    let deq: Vec<f32> = q
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| f32::from(v) * scale[i / k])
                        .collect();
                    let mut exact = vec![0.0f32; rows * n];
                    Kernel::Portable.gemm(&x, &w_t, Some(&b), &mut exact, k, n);
                    let mut p16 = vec![f32::NAN; rows * n];
                    Kernel::Portable.gemm_f16(&x, &h, Some(&b), &mut p16, k, n);
                    let mut want16 = vec![0.0f32; rows * n];
                    Kernel::Portable.gemm(&x, &wide, Some(&b), &mut want16, k, n);
                    for (a, e) in p16.iter().zip(&want16) {
                        assert_eq!(a.to_bits(), e.to_bits(), "portable f16: k {k} n {n}");
                    }
                    let mut p8 = vec![f32::NAN; rows * n];
                    Kernel::Portable.gemm_i8(&x, &q, &scale, Some(&b), &mut p8, k, n);
                    let mut want8 = vec![0.0f32; rows * n];
                    Kernel::Portable.gemm(&x, &deq, Some(&b), &mut want8, k, n);
                    for (a, e) in p8.iter().zip(&want8) {
                        assert!(
                            (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                            "portable int8: rows {rows} k {k} n {n}: {a} vs {e}"
                        );
                    }
                    for r in 0..rows {
                        let xr = &x[r * k..(r + 1) * k];
                        let l1: f32 = xr.iter().map(|v| v.abs()).sum();
                        for j in 0..n {
                            let wj = &w_t[j * k..(j + 1) * k];
                            let bound16: f32 =
                                xr.iter().zip(wj).map(|(a, w)| (a * w).abs()).sum::<f32>() / 2048.0;
                            let (i, e) = (r * n + j, exact[r * n + j]);
                            assert!(
                                (p16[i] - e).abs() <= bound16 + 1e-5,
                                "f16 off f32 by {} > {bound16}",
                                (p16[i] - e).abs()
                            );
                            let bound8 = l1 * scale[j] / 2.0;
                            assert!(
                                (p8[i] - e).abs() <= bound8 + 1e-5,
                                "int8 off f32 by {} > {bound8}",
                                (p8[i] - e).abs()
                            );
                        }
                    }
                    for kernel in Kernel::available() {
                        let mut y16 = vec![f32::NAN; rows * n];
                        kernel.gemm_f16(&x, &h, Some(&b), &mut y16, k, n);
                        let mut y8 = vec![f32::NAN; rows * n];
                        kernel.gemm_i8(&x, &q, &scale, Some(&b), &mut y8, k, n);
                        for (what, got, want) in [("f16", &y16, &p16), ("int8", &y8, &p8)] {
                            for (a, e) in got.iter().zip(want.iter()) {
                                assert!(
                                    (a - e).abs() <= 1e-4 * e.abs().max(1.0),
                                    "{kernel} {what}: rows {rows} k {k} n {n}: {a}, portable {e}"
                                );
                            }
                        }
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared >= 5 * 9 * 8);
    }

    /// The f16 and int8 kernels give a row the same bits alone as in a batch.
    #[test]
    fn reduced_precision_results_do_not_depend_on_the_batch_size() {
        let mut next = stream(29);
        for (k, n) in BATCH_SHAPES {
            let rows = 13;
            let x: Vec<f32> = (0..rows * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let h: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            let (q, scale) = crate::weights::quantize_int8(&w, n, k, 0);
            for kernel in Kernel::available() {
                let (h, q) = (kernel.pack(&h, k, n), kernel.pack(&q, k, n));
                for (what, m) in [
                    ("f16", Matrix::F16(&h)),
                    (
                        "int8",
                        Matrix::Int8 {
                            q: &q,
                            scale: &scale,
                        },
                    ),
                ] {
                    let mut alone = vec![0.0f32; rows * n];
                    for r in 0..rows {
                        let (xr, yr) = (&x[r * k..(r + 1) * k], &mut alone[r * n..(r + 1) * n]);
                        kernel.gemm_matrix(xr, m, None, yr, k, n);
                    }
                    for batch in 2..=rows {
                        let mut y = vec![0.0f32; batch * n];
                        kernel.gemm_matrix(&x[..batch * k], m, None, &mut y, k, n);
                        for (a, e) in y.iter().zip(&alone) {
                            assert_eq!(a.to_bits(), e.to_bits(), "{kernel} {what}: batch {batch}");
                        }
                    }
                }
            }
        }
    }

    /// Packing keeps every weight and pads with zeros only: unpacking gives
    /// the matrix back, and the packed size is what the kernels check.
    #[test]
    fn panels_round_trip() {
        let mut next = stream(31);
        for (k, n) in [(1, 1), (3, 7), (5, 16), (7, 17), (2, 64), (9, 65), (4, 200)] {
            let w_t: Vec<f32> = (0..n * k).map(|_| next()).collect();
            for (panel, lanes) in [(16, 8), (64, 16)] {
                let packed = pack_panels(&w_t, k, n, panel, lanes);
                assert_eq!(packed.len(), packed_len(k, n, panel, lanes));
                assert_eq!(packed.len() % (k * lanes), 0);
                assert_eq!(unpack_panels(&packed, k, n, panel, lanes), w_t);
                let nonzero = packed.iter().filter(|v| **v != 0.0).count();
                assert_eq!(nonzero, w_t.iter().filter(|v| **v != 0.0).count());
            }
        }
        // The first panel's first row: outputs 0..16 at input 0.
        let (k, n) = (3, 20);
        let w_t: Vec<f32> = (0..n * k).map(|v| v as f32).collect();
        let packed = pack_panels(&w_t, k, n, 16, 8);
        let want: Vec<f32> = (0..16).map(|j| (j * k) as f32).collect();
        assert_eq!(packed[..16], want[..]);
        // The last panel: 4 outputs padded to 8.
        assert_eq!(packed[48..56], [48.0, 51.0, 54.0, 57.0, 0.0, 0.0, 0.0, 0.0]);
    }

    /// The streaming read sums every value, tails included, on every kernel.
    #[test]
    fn read_sum_sums_everything() {
        for len in [0, 1, 7, 16, 31, 128, 255, 1000, 4099] {
            let data: Vec<f32> = (0..len).map(|i| (i % 13) as f32 - 6.0).collect();
            let want: f32 = data.iter().sum();
            for kernel in Kernel::available() {
                assert_eq!(kernel.read_sum(&data), want, "{kernel}: {len} values");
            }
        }
    }

    /// Rows that share their first inputs (KDE's candidates share the
    /// embedding) give the same bits as each row alone — the shared part is
    /// computed once and handed to every row — and agree with the portable
    /// kernel; with every input shared too.
    #[test]
    fn rows_sharing_their_first_inputs_give_the_bits_of_each_row_alone() {
        let mut next = stream(37);
        for (k, n, shared) in [
            (300, 70, 260),
            (400, 130, 400),
            (129, 9, 128),
            (522, 64, 384),
        ] {
            let rows = 9;
            let head: Vec<f32> = (0..shared).map(|_| next()).collect();
            let mut x = Vec::new();
            for _ in 0..rows {
                x.extend_from_slice(&head);
                x.extend((shared..k).map(|_| next()));
            }
            assert_eq!(shared_prefix(&x, k, rows), shared.min(k));
            let w_t: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            let mut want = vec![0.0f32; rows * n];
            Kernel::Portable.gemm(&x, &w_t, Some(&b), &mut want, k, n);
            for kernel in Kernel::available() {
                let mut alone = vec![0.0f32; rows * n];
                for r in 0..rows {
                    let (xr, yr) = (&x[r * k..(r + 1) * k], &mut alone[r * n..(r + 1) * n]);
                    kernel.gemm(xr, &w_t, Some(&b), yr, k, n);
                }
                let mut y = vec![f32::NAN; rows * n];
                kernel.gemm(&x, &w_t, Some(&b), &mut y, k, n);
                for (i, (a, e)) in y.iter().zip(&alone).enumerate() {
                    assert_eq!(a.to_bits(), e.to_bits(), "{kernel}: k {k} n {n} y[{i}]");
                }
                for (a, e) in y.iter().zip(&want) {
                    assert!(
                        (a - e).abs() <= 1e-4 * e.abs().max(1.0),
                        "{kernel}: {a} vs {e}"
                    );
                }
            }
        }
        assert_eq!(shared_prefix(&[1.0, 2.0, 1.0, 3.0], 2, 2), 1);
        assert_eq!(
            shared_prefix(&[0.0, 2.0, -0.0, 2.0], 2, 2),
            0,
            "-0 is not 0 here"
        );
        assert_eq!(
            shared_prefix(&[1.0, 2.0], 2, 1),
            0,
            "one row shares nothing"
        );
    }
}
