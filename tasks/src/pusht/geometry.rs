//! The T's shape and the coverage of one T pose by another.
//!
//! The T is two rectangles that meet along an edge without overlapping, so the
//! area shared by two T poses is the sum over the four pairs of rectangles of
//! their (convex) intersection, clipped with Sutherland–Hodgman.

/// The T's two rectangles in its own frame, corners counter-clockwise:
/// the bar (120×30, y 0…30) and the stem (30×90, y 30…120).
pub const T_PARTS: [[[f32; 2]; 4]; 2] = [
    [[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [-60.0, 30.0]],
    [[-15.0, 30.0], [15.0, 30.0], [15.0, 120.0], [-15.0, 120.0]],
];

/// Area of the T: 120·30 + 30·90.
pub const T_AREA: f32 = 6300.0;

/// The corners of part `k` of a T at `pose` (x, y, angle) in world units.
pub fn part_corners(pose: [f32; 3], k: usize) -> [[f32; 2]; 4] {
    let (s, c) = pose[2].sin_cos();
    T_PARTS[k].map(|[x, y]| [pose[0] + c * x - s * y, pose[1] + s * x + c * y])
}

fn cross(o: [f32; 2], a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Area of a simple polygon (absolute value of the shoelace sum).
pub fn polygon_area(points: &[[f32; 2]]) -> f32 {
    let n = points.len();
    let mut twice = 0.0;
    for i in 0..n {
        let (a, b) = (points[i], points[(i + 1) % n]);
        twice += a[0] * b[1] - b[0] * a[1];
    }
    0.5 * twice.abs()
}

/// Area shared by two convex quadrilaterals with counter-clockwise corners.
/// The clipped polygon has at most 8 corners; no allocation.
pub fn convex_overlap(subject: &[[f32; 2]; 4], clip: &[[f32; 2]; 4]) -> f32 {
    let mut poly = [[0.0f32; 2]; 8];
    let mut n = 4;
    poly[..4].copy_from_slice(subject);
    for e in 0..4 {
        let (a, b) = (clip[e], clip[(e + 1) % 4]);
        let mut out = [[0.0f32; 2]; 8];
        let mut m = 0;
        for i in 0..n {
            let (p, q) = (poly[i], poly[(i + 1) % n]);
            let (dp, dq) = (cross(a, b, p), cross(a, b, q));
            let (p_in, q_in) = (dp >= 0.0, dq >= 0.0);
            if p_in && m < 8 {
                out[m] = p;
                m += 1;
            }
            if p_in != q_in && m < 8 {
                let t = dp / (dp - dq);
                out[m] = [p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])];
                m += 1;
            }
        }
        if m < 3 {
            return 0.0;
        }
        poly = out;
        n = m;
    }
    polygon_area(&poly[..n])
}

/// Fraction of the goal T's area covered by the block T, in [0, 1].
pub fn coverage(block: [f32; 3], goal: [f32; 3]) -> f32 {
    let mut shared = 0.0;
    for i in 0..2 {
        let b = part_corners(block, i);
        for j in 0..2 {
            shared += convex_overlap(&b, &part_corners(goal, j));
        }
    }
    (shared / T_AREA).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::{FRAC_PI_2, FRAC_PI_4};

    #[test]
    fn the_parts_make_the_t_area() {
        let a: f32 = (0..2)
            .map(|k| polygon_area(&part_corners([10.0, 20.0, 0.7], k)))
            .sum();
        assert!((a - T_AREA).abs() < 0.05, "{a}");
    }

    #[test]
    fn known_overlaps() {
        let goal = [256.0, 256.0, FRAC_PI_4];
        assert!((coverage(goal, goal) - 1.0).abs() < 1e-4);
        // Shifted 10 px along the bar (angle 0): the bar loses 10·30, the
        // stem 10·90 → (6300 − 1200) / 6300.
        let c = coverage([10.0, 0.0, 0.0], [0.0, 0.0, 0.0]);
        assert!((c - 5100.0 / 6300.0).abs() < 1e-4, "{c}");
        // Shifted 20 px along the stem: bar overlap 120·10 plus the stem's
        // 30·70 plus the moved bar over the stem's top 30·20 → 3900 / 6300.
        let c = coverage([0.0, 20.0, 0.0], [0.0, 0.0, 0.0]);
        assert!((c - 3900.0 / 6300.0).abs() < 1e-4, "{c}");
        // Far apart.
        assert_eq!(coverage([0.0, 0.0, 0.0], [300.0, 300.0, 0.0]), 0.0);
        // Rotated a quarter turn about the origin: the bars overlap in a
        // 30×30 square at the origin side, the stems in nothing: 900 minus
        // what lies outside — check symmetry instead of a hand figure.
        let a = coverage([0.0, 0.0, FRAC_PI_2], [0.0, 0.0, 0.0]);
        let b = coverage([0.0, 0.0, 0.0], [0.0, 0.0, FRAC_PI_2]);
        assert!((a - b).abs() < 1e-5 && a > 0.0 && a < 0.5, "{a} {b}");
    }

    #[test]
    fn a_full_turn_is_the_same_pose() {
        let goal = [256.0, 256.0, FRAC_PI_4];
        let c = coverage([256.0, 256.0, FRAC_PI_4 + std::f32::consts::TAU], goal);
        assert!((c - 1.0).abs() < 1e-4, "{c}");
    }
}
