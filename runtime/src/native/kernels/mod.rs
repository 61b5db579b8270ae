//! The native engine's matrix kernel, one module per instruction set (as
//! tract-linalg arranges its kernels): [`portable`] runs anywhere,
//! [`x86_64`] uses AVX2 + FMA, [`aarch64`] uses NEON. [`Kernel::detect`]
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

use std::fmt;

/// A matrix kernel of the native engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Plain Rust that the compiler vectorises for the target's baseline.
    Portable,
    /// x86-64 with AVX2 and FMA: 8 lanes, fused multiply-add.
    Avx2Fma,
    /// aarch64 NEON (Advanced SIMD): 2 × 4 lanes, fused multiply-add.
    Neon,
}

impl Kernel {
    /// Every kernel, whether or not this CPU has it.
    pub const ALL: [Kernel; 3] = [Kernel::Portable, Kernel::Avx2Fma, Kernel::Neon];

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        if Self::Avx2Fma.is_available() {
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

    /// A short name for logs and tables: `portable`, `avx2+fma`, `neon`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2Fma => "avx2+fma",
            Self::Neon => "neon",
        }
    }

    /// `y[r, j] = Σ_i x[r, i] · w_t[j, i] (+ b[j])` for every row `r` of
    /// `x` (`x` is `[rows, k]`, `w_t` is the weight transposed, `[n, k]`,
    /// `y` is `[rows, n]`, all row-major; `rows = x.len() / k`). A kernel
    /// this CPU lacks, which [`Kernel::detect`] and [`Kernel::available`]
    /// never return, runs the portable one.
    pub(crate) fn gemm(
        self,
        x: &[f32],
        w_t: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        k: usize,
        n: usize,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => x86_64::gemm(x, w_t, bias, y, k, n),
            #[cfg(target_arch = "aarch64")]
            Self::Neon => aarch64::gemm(x, w_t, bias, y, k, n),
            #[allow(unreachable_patterns)]
            _ => portable::gemm(x, w_t, bias, y, k, n),
        }
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
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            assert_eq!(k, Kernel::Avx2Fma);
        } else {
            assert_eq!(k, Kernel::Portable);
        }
        assert_eq!(k.name(), k.to_string());
        let names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["portable", "avx2+fma", "neon"]);
        assert_eq!(Kernel::available().next(), Some(Kernel::Portable));
    }

    #[test]
    fn gemm_matches_naive_for_every_shape_and_kernel() {
        let mut next = stream(1);
        for (rows, k, n) in [(1, 1, 1), (1, 17, 5), (3, 33, 9), (2, 8, 4), (5, 522, 13)] {
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
    /// odd and even row counts), with and without a bias.
    #[test]
    fn every_kernel_agrees_with_the_portable_one() {
        let mut next = stream(7);
        let ks = [
            1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 23, 31, 32, 33, 64, 100, 128, 522,
        ];
        let ns = [1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 17, 33];
        let mut compared = 0usize;
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
                            }
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert!(compared >= 7 * ks.len() * ns.len() * 2);
    }

    /// A row gives the same bits alone as in a batch of any size.
    #[test]
    fn results_do_not_depend_on_the_batch_size() {
        let mut next = stream(11);
        for (k, n) in [(1, 1), (9, 7), (33, 13), (64, 32), (17, 9)] {
            let rows = 7;
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
}
