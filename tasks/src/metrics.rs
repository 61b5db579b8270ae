//! The statistics every task's evaluation shares: the sliced Wasserstein-1
//! distance between action distributions (claw samples against the true
//! distribution, arm actions against the demonstrations) and the entropy of
//! discrete outcomes (the arm's task orders).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::collections::HashMap;

/// Which directions the point sets are projected on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directions {
    /// `count` directions evenly spaced over half a turn (angle k·π/count):
    /// exact and seed-free, for 2-D actions.
    Even(usize),
    /// `count` directions drawn uniformly on the sphere from `seed`, for any
    /// dimension.
    Random {
        /// How many.
        count: usize,
        /// Their seed.
        seed: u64,
    },
}

/// Largest number of quantiles compared per direction.
pub const MAX_QUANTILES: usize = 4096;

/// Sliced Wasserstein-1 distance between two point sets `[n, dim]`
/// (row-major), averaged over `directions`. Sets of different sizes are
/// compared through `min(n_a, n_b, MAX_QUANTILES)` quantiles; equal sets
/// below that size pair their sorted projections one to one. NaN when a set
/// is empty, `dim` is 0, or `Even` directions are asked for in other than two
/// dimensions.
pub fn sliced_w1(a: &[f32], b: &[f32], dim: usize, directions: Directions) -> f64 {
    if dim == 0 {
        return f64::NAN;
    }
    let (na, nb) = (a.len() / dim, b.len() / dim);
    if na == 0 || nb == 0 {
        return f64::NAN;
    }
    let (count, mut rng) = match directions {
        Directions::Even(count) if dim == 2 => (count, None),
        Directions::Even(_) => return f64::NAN,
        Directions::Random { count, seed } => (count, Some(ChaCha8Rng::seed_from_u64(seed))),
    };
    if count == 0 {
        return f64::NAN;
    }
    let m = na.min(nb).min(MAX_QUANTILES);
    let mut pa = vec![0.0f64; na];
    let mut pb = vec![0.0f64; nb];
    let mut d = vec![0.0f64; dim];
    let mut total = 0.0;
    for k in 0..count {
        match rng.as_mut() {
            None => {
                let th = std::f64::consts::PI * k as f64 / count as f64;
                d[0] = th.cos();
                d[1] = th.sin();
            }
            Some(rng) => {
                d.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
                let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                d.iter_mut().for_each(|v| *v /= norm);
            }
        }
        let project = |x: &[f32], out: &mut [f64]| {
            for (o, row) in out.iter_mut().zip(x.chunks_exact(dim)) {
                *o = row.iter().zip(&d).map(|(v, w)| f64::from(*v) * w).sum();
            }
            out.sort_by(f64::total_cmp);
        };
        project(a, &mut pa);
        project(b, &mut pb);
        let q = |s: &[f64], k: usize| s[((k as f64 + 0.5) * s.len() as f64 / m as f64) as usize];
        total += (0..m).map(|k| (q(&pa, k) - q(&pb, k)).abs()).sum::<f64>() / m as f64;
    }
    total / count as f64
}

/// Entropy of a sample of discrete outcomes, in bits, with the Miller–Madow
/// bias correction `(m − 1) / 2N` (m = distinct outcomes seen).
pub fn entropy_bits<T: std::hash::Hash + Eq>(outcomes: &[T]) -> f64 {
    let n = outcomes.len();
    if n == 0 {
        return 0.0;
    }
    let mut counts: HashMap<&T, usize> = HashMap::new();
    for o in outcomes {
        *counts.entry(o).or_default() += 1;
    }
    let nf = n as f64;
    // Summed in a fixed order (the map's order changes from run to run, and
    // with it the last digits of the sum).
    let mut sorted: Vec<usize> = counts.values().copied().collect();
    sorted.sort_unstable();
    let h: f64 = sorted
        .iter()
        .map(|&c| {
            let p = c as f64 / nf;
            -p * p.ln()
        })
        .sum();
    (h + (counts.len() as f64 - 1.0) / (2.0 * nf)) / std::f64::consts::LN_2
}

/// [`entropy_bits`] of `n`-element subsets of `outcomes`: the mean over 64
/// seeded random subsets (all of them when `n` is at least their number).
pub fn entropy_at<T: std::hash::Hash + Eq + Clone>(outcomes: &[T], n: usize) -> f64 {
    if n == 0 || n >= outcomes.len() {
        return entropy_bits(outcomes);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut idx: Vec<usize> = (0..outcomes.len()).collect();
    let reps = 64;
    (0..reps)
        .map(|_| {
            // Partial Fisher–Yates: the first n indices are a uniform subset.
            for i in 0..n {
                let j = rng.random_range(i..idx.len());
                idx.swap(i, j);
            }
            let subset: Vec<T> = idx[..n].iter().map(|&i| outcomes[i].clone()).collect();
            entropy_bits(&subset)
        })
        .sum::<f64>()
        / reps as f64
}

/// How well one labelling of a sample predicts another (codes against
/// ground truth): counts, mutual information, entropy and purity.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    /// Mutual information I(codes; truth) in bits (plug-in estimate).
    pub mutual_information: f64,
    /// Entropy H(truth) in bits (plug-in, so that I ≤ H).
    pub truth_entropy: f64,
    /// Share of the sample whose truth is its code's most common truth.
    pub purity: f64,
}

impl Agreement {
    /// I / H(truth): the share of the truth's uncertainty the codes remove.
    pub fn explained(&self) -> f64 {
        if self.truth_entropy > 0.0 {
            self.mutual_information / self.truth_entropy
        } else {
            0.0
        }
    }
}

/// [`Agreement`] of `codes` with `truth` (same length; summed in a fixed order).
pub fn agreement<A: Ord + Copy, B: Ord + Copy>(codes: &[A], truth: &[B]) -> Agreement {
    use std::collections::BTreeMap;
    let n = codes.len().min(truth.len());
    if n == 0 {
        return Agreement {
            mutual_information: 0.0,
            truth_entropy: 0.0,
            purity: 0.0,
        };
    }
    let mut joint: BTreeMap<(A, B), usize> = BTreeMap::new();
    let mut by_code: BTreeMap<A, usize> = BTreeMap::new();
    let mut by_truth: BTreeMap<B, usize> = BTreeMap::new();
    for (&a, &b) in codes.iter().zip(truth).take(n) {
        *joint.entry((a, b)).or_default() += 1;
        *by_code.entry(a).or_default() += 1;
        *by_truth.entry(b).or_default() += 1;
    }
    let nf = n as f64;
    let mut mi = 0.0;
    for (&(a, b), &c) in &joint {
        let p = c as f64 / nf;
        let pa = by_code[&a] as f64 / nf;
        let pb = by_truth[&b] as f64 / nf;
        mi += p * (p / (pa * pb)).log2();
    }
    let h = by_truth
        .values()
        .map(|&c| {
            let p = c as f64 / nf;
            -p * p.log2()
        })
        .sum();
    let mut best: BTreeMap<A, usize> = BTreeMap::new();
    for (&(a, _), &c) in &joint {
        let e = best.entry(a).or_default();
        *e = (*e).max(c);
    }
    Agreement {
        mutual_information: mi.max(0.0),
        truth_entropy: h,
        purity: best.values().sum::<usize>() as f64 / nf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_of_codes_with_truth() {
        // A relabelling of the truth explains all of it.
        let truth = [0u8, 0, 1, 1, 2, 2, 2, 2];
        let codes = [5u8, 5, 3, 3, 4, 4, 4, 4];
        let a = agreement(&codes, &truth);
        assert!((a.mutual_information - 1.5).abs() < 1e-12, "{a:?}");
        assert!((a.truth_entropy - 1.5).abs() < 1e-12);
        assert_eq!(a.purity, 1.0);
        assert!((a.explained() - 1.0).abs() < 1e-12);
        // Independent codes explain nothing; purity is the majority share.
        let codes = [0u8, 1, 0, 1, 0, 1, 0, 1];
        let a = agreement(&codes, &truth);
        assert!(a.mutual_information.abs() < 1e-12, "{a:?}");
        assert_eq!(a.purity, 0.5);
        // One code splitting a class in two: half a bit of 1.5 lost.
        let codes = [0u8, 0, 0, 0, 2, 2, 2, 2];
        let a = agreement(&codes, &truth);
        assert!((a.mutual_information - 1.0).abs() < 1e-12, "{a:?}");
        assert_eq!(a.purity, 0.75);
    }

    #[test]
    fn a_shift_by_d_along_one_axis_is_d_times_the_mean_absolute_cosine() {
        // Projected on angle θ a shift by (s, 0) moves every point by s·cos θ,
        // so the distance is s · mean |cos θ| over the directions: with 4
        // even directions (0, 45, 90, 135°) that is s · (1 + 2·√½) / 4.
        let a: Vec<f32> = (0..300)
            .flat_map(|i| [(i % 17) as f32 * 0.01, (i % 5) as f32 * 0.1])
            .collect();
        let b: Vec<f32> = a
            .chunks_exact(2)
            .flat_map(|p| [p[0] + 0.25, p[1]])
            .collect();
        let w = sliced_w1(&a, &b, 2, Directions::Even(4));
        let want = 0.25 * (1.0 + 2.0 * std::f64::consts::FRAC_1_SQRT_2) / 4.0;
        assert!((w - want).abs() < 1e-6, "{w} vs {want}");
        assert!(sliced_w1(&a, &a, 2, Directions::Even(16)) < 1e-12);
        // Random directions in 4-D: a shift of length s moves every
        // projection by s·|cos| — between 0 and s, and the same seed gives
        // the same value.
        let c: Vec<f32> = (0..400).map(|i| ((i * 7919) % 101) as f32 * 0.01).collect();
        let e: Vec<f32> = c
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 4 == 0 { v + 0.5 } else { *v })
            .collect();
        let r = Directions::Random { count: 64, seed: 3 };
        let w = sliced_w1(&c, &e, 4, r);
        assert!(w > 0.05 && w < 0.5, "{w}");
        assert_eq!(w, sliced_w1(&c, &e, 4, r));
        assert!(sliced_w1(&c, &c, 4, r) < 1e-12);
    }

    #[test]
    fn sets_of_different_sizes_compare_by_quantiles_and_bad_input_is_nan() {
        // The same uniform grid at two resolutions is nearly the same distribution.
        let fine: Vec<f32> = (0..1000).flat_map(|i| [i as f32 / 1000.0, 0.0]).collect();
        let coarse: Vec<f32> = (0..100)
            .flat_map(|i| [(i as f32 + 0.5) / 100.0, 0.0])
            .collect();
        assert!(sliced_w1(&fine, &coarse, 2, Directions::Even(8)) < 0.005);
        assert!(sliced_w1(&[], &coarse, 2, Directions::Even(8)).is_nan());
        assert!(sliced_w1(&fine, &coarse, 0, Directions::Even(8)).is_nan());
        assert!(sliced_w1(&fine[..999], &coarse[..99], 3, Directions::Even(8)).is_nan());
    }
    #[test]
    fn entropy_of_uniform_and_constant_outcomes() {
        let c = vec![1u8; 100];
        assert!(entropy_bits(&c).abs() < 1e-12);
        let u: Vec<u8> = (0..400).map(|i| (i % 4) as u8).collect();
        let h = entropy_bits(&u);
        assert!((h - 2.0).abs() < 0.01, "{h}");
    }

    #[test]
    fn entropy_is_the_same_to_the_last_bit_every_time() {
        // Many outcomes with unequal counts: a sum in hash-map order (a new
        // order per map) differs in the last digits from call to call.
        let outcomes: Vec<u32> = (0..3000u32).map(|i| (i * i) % 997).collect();
        let first = entropy_bits(&outcomes);
        for _ in 0..50 {
            assert_eq!(entropy_bits(&outcomes).to_bits(), first.to_bits());
        }
    }

    #[test]
    fn subset_entropy_matches_a_fresh_sample_of_that_size() {
        // 120 equally likely outcomes: 200 draws vs 50-element subsets of them.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let many: Vec<u32> = (0..2000).map(|_| rng.random_range(0..120)).collect();
        let fresh: f64 = (0..40)
            .map(|k| entropy_bits(&many[k * 50..(k + 1) * 50]))
            .sum::<f64>()
            / 40.0;
        let sub = entropy_at(&many[..200], 50);
        assert!((sub - fresh).abs() < 0.1, "{sub} vs {fresh}");
        assert!(
            entropy_bits(&many[..200]) > sub + 0.3,
            "the full set is less biased"
        );
        assert_eq!(entropy_at(&many[..10], 50), entropy_bits(&many[..10]));
    }
}
