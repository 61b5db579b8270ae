//! K-means of the training actions for the K-means baselines: k-means++
//! seeding from a seeded ChaCha stream, then Lloyd iterations. Deterministic
//! for a seed; an empty cluster is re-seeded at the point farthest from its
//! centre.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A fitted clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Centres, row-major `[k, dim]`.
    pub centres: Vec<f32>,
    /// Mean squared distance of a point to its centre.
    pub inertia: f64,
}

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn nearest(point: &[f32], centres: &[f32], dim: usize) -> (usize, f32) {
    centres
        .chunks_exact(dim)
        .enumerate()
        .map(|(j, c)| (j, dist2(point, c)))
        .fold(
            (0, f32::INFINITY),
            |best, x| if x.1 < best.1 { x } else { best },
        )
}

/// Fit `k` centres to `points` (`[n, dim]`, row-major).
/// With fewer distinct points than `k`, some centres coincide.
pub fn fit(points: &[f32], dim: usize, k: usize, iterations: usize, seed: u64) -> KMeans {
    let n = points.len() / dim.max(1);
    if n == 0 || k == 0 {
        return KMeans {
            centres: vec![0.0; k * dim],
            inertia: 0.0,
        };
    }
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // k-means++: each new centre drawn with probability ∝ squared distance.
    let mut centres = Vec::with_capacity(k * dim);
    centres.extend_from_slice(row(rng.random_range(0..n)));
    let mut d2: Vec<f32> = (0..n).map(|i| dist2(row(i), &centres[..dim])).collect();
    for _ in 1..k {
        let total: f64 = d2.iter().map(|&d| d as f64).sum();
        let pick = if total > 0.0 {
            let mut u = rng.random::<f64>() * total;
            let mut chosen = n - 1;
            for (i, &d) in d2.iter().enumerate() {
                u -= d as f64;
                if u <= 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        } else {
            rng.random_range(0..n)
        };
        let start = centres.len();
        centres.extend_from_slice(row(pick));
        for (i, d) in d2.iter_mut().enumerate() {
            *d = d.min(dist2(row(i), &centres[start..start + dim]));
        }
    }
    let mut labels = vec![0usize; n];
    let mut sums = vec![0.0f64; k * dim];
    let mut counts = vec![0usize; k];
    for _ in 0..iterations {
        let mut changed = false;
        for (i, l) in labels.iter_mut().enumerate() {
            let (j, _) = nearest(row(i), &centres, dim);
            changed |= *l != j;
            *l = j;
        }
        sums.iter_mut().for_each(|s| *s = 0.0);
        counts.iter_mut().for_each(|c| *c = 0);
        for (i, &l) in labels.iter().enumerate() {
            counts[l] += 1;
            for (s, v) in sums[l * dim..(l + 1) * dim].iter_mut().zip(row(i)) {
                *s += *v as f64;
            }
        }
        for j in 0..k {
            if counts[j] > 0 {
                for d in 0..dim {
                    centres[j * dim + d] = (sums[j * dim + d] / counts[j] as f64) as f32;
                }
            } else {
                // Re-seed an empty cluster at the worst-served point.
                let far = (0..n)
                    .max_by(|&a, &b| {
                        let da = nearest(row(a), &centres, dim).1;
                        let db = nearest(row(b), &centres, dim).1;
                        da.total_cmp(&db)
                    })
                    .unwrap_or(0);
                centres[j * dim..(j + 1) * dim].copy_from_slice(row(far));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let inertia = (0..n)
        .map(|i| nearest(row(i), &centres, dim).1 as f64)
        .sum::<f64>()
        / n as f64;
    KMeans { centres, inertia }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn recovers_planted_centres() {
        let planted = [
            [-3.0f32, 0.0, 1.0],
            [2.0, 2.0, -1.0],
            [0.5, -2.5, 3.0],
            [4.0, -4.0, 0.0],
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let noise = Normal::new(0.0f32, 0.15).expect("normal");
        let mut points = Vec::new();
        for i in 0..2000 {
            for &c in &planted[i % planted.len()] {
                points.push(c + noise.sample(&mut rng));
            }
        }
        let fit = fit(&points, 3, 4, 100, 5);
        for p in &planted {
            let (_, d) = nearest(p, &fit.centres, 3);
            assert!(
                d.sqrt() < 0.05,
                "planted {p:?} is {} from the nearest centre",
                d.sqrt()
            );
        }
        // Inertia ≈ 3 · 0.15² for points drawn around the right centres.
        assert!((fit.inertia - 3.0 * 0.0225).abs() < 0.01, "{}", fit.inertia);
        assert_eq!(
            fit,
            super::fit(&points, 3, 4, 100, 5),
            "same seed, same centres"
        );
    }

    #[test]
    fn more_centres_than_points_and_no_points_do_not_panic() {
        let f = fit(&[1.0, 1.0, 2.0, 2.0], 2, 5, 10, 0);
        assert_eq!(f.centres.len(), 10);
        assert!(f.inertia < 1e-9);
        assert_eq!(fit(&[], 2, 3, 10, 0).centres, vec![0.0; 6]);
    }
}
