//! The arm task on the training side (feature `train`): recording the
//! seeded demonstrator's episodes into the trainer's `Episodes` (with their
//! channels), and reading task orders back from them.

// Joint-indexed arithmetic over several arrays at once reads clearer with an index.
#![allow(clippy::needless_range_loop)]

use super::*;

use crate::error::Result;
use crate::require;
use diffbc_train::episodes::Episodes;
use indicatif::{ProgressBar, ProgressStyle};

/// Units, sources, targets and control rate of the demonstrations of `task`.
pub fn channel_hints(task: &ArmTask) -> diffbc_train::interface::ChannelHints {
    let mut obs_units = vec!["rad".to_string(); JOINTS];
    obs_units.extend(std::iter::repeat_n("rad/s".to_string(), JOINTS));
    obs_units.extend(std::iter::repeat_n("1".to_string(), task.sites));
    diffbc_train::interface::ChannelHints {
        obs_units,
        obs_sources: task.obs_sources(),
        action_units: vec!["rad".into(); JOINTS],
        action_targets: (0..JOINTS)
            .map(|j| format!("joint.position[{j}]"))
            .collect(),
        control_hz: Some(task.control_hz),
    }
}

/// Generate `episodes` demonstrations with seeds `seed, seed+1, …`.
pub fn generate(task: &ArmTask, episodes: usize, seed: u64, progress: bool) -> Result<Episodes> {
    Ok(generate_with_truth(task, episodes, seed, progress)?.0)
}

/// [`generate`], with the demonstrator's ground truth: per episode, one
/// [`TickTruth`] per recorded row.
pub fn generate_with_truth(
    task: &ArmTask,
    episodes: usize,
    seed: u64,
    progress: bool,
) -> Result<(Episodes, Vec<Vec<TickTruth>>)> {
    task.validate()?;
    require!(episodes > 0, "--episodes must be at least 1");
    let mut out = Episodes::new(task.frame_len(), JOINTS);
    out.obs_names = task.obs_names();
    out.action_names = (0..JOINTS).map(|j| format!("joint.target[{j}]")).collect();
    out.hints = channel_hints(task);
    let mut demo = Demonstrator::new(task);
    let bar = if progress {
        ProgressBar::new(episodes as u64).with_style(
            ProgressStyle::with_template("demos {bar:30} {pos}/{len} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };
    let mut incomplete = 0;
    let mut dropped = Vec::new();
    let mut truth = Vec::with_capacity(episodes);
    let mut e = 0u64;
    while out.len() < episodes {
        let s = seed.wrapping_add(e);
        e += 1;
        require!(
            e <= 2 * episodes as u64 + 10,
            "the demonstrator failed too often ({} of {e} episodes collided): check the task's clearance",
            dropped.len()
        );
        let mut rows = Vec::new();
        let r = run_episode(task, s, &mut demo, Some(&mut rows))?;
        if r.collided {
            // A demonstration that hit the obstacle is discarded, as a
            // curated data set would.
            dropped.push(s);
            continue;
        }
        if r.order.len() < task.goal {
            incomplete += 1;
        }
        let obs: Vec<f32> = rows.iter().flat_map(|(f, _)| f.iter().copied()).collect();
        let act: Vec<f32> = rows.iter().flat_map(|(_, a)| a.iter().copied()).collect();
        out.push_episode(&obs, &act)?;
        let mut t = demo.truth();
        require!(
            t.len() >= rows.len(),
            "the demonstrator logged {} ticks for {} recorded rows",
            t.len(),
            rows.len()
        );
        t.truncate(rows.len());
        truth.push(t);
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.source = serde_json::json!({
        "generator": "diffbc demos --task arm",
        "seed": seed,
        "episodes": episodes,
        "incomplete": incomplete,
        "dropped_collisions": dropped,
        "task": task,
    });
    Ok((out, truth))
}

/// Task orders of recorded episodes, read from the done flags in the
/// observations (so it works for any data set in the task's layout). A
/// recording ends on the tick the last target registers, before its flag is
/// observed, so an episode that is one target short of the goal gets the
/// not-yet-done target nearest its last command appended.
pub fn orders_from_episodes(task: &ArmTask, data: &Episodes) -> Vec<Vec<u8>> {
    let base = 2 * JOINTS;
    (0..data.len())
        .map(|e| {
            let mut order = Vec::new();
            let mut prev = vec![false; task.sites];
            let rows = data.episode(e);
            for i in rows.clone() {
                let row = data.obs_row(i);
                for s in 0..task.sites {
                    let now = row[base + s] > 0.5;
                    if now && !prev[s] {
                        order.push(s as u8);
                    }
                    prev[s] = now;
                }
            }
            if order.len() + 1 == task.goal
                && let Some(last) = rows.last()
            {
                let a = data.action_row(last);
                let nearest = (0..task.sites)
                    .filter(|s| !prev[*s])
                    .map(|s| {
                        let d: f32 = task.site(s).iter().zip(a).map(|(x, y)| (x - y).abs()).sum();
                        (s, d)
                    })
                    .min_by(|x, y| x.1.total_cmp(&y.1));
                if let Some((s, d)) = nearest
                    && d < 4.0 * task.tolerance * JOINTS as f32
                {
                    order.push(s as u8);
                }
            }
            order
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffbc_protocol::Telemetry;

    #[test]
    fn sites_are_far_apart_and_within_limits() {
        let t = ArmTask::default();
        for i in 0..t.sites {
            for j in 0..t.sites {
                if i != j {
                    let d = t
                        .site(i)
                        .iter()
                        .zip(t.site(j))
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    assert!(d > 0.5, "sites {i} and {j} are {d} apart");
                }
            }
            assert!(t.site(i).iter().all(|v| v.abs() < 2.0));
        }
    }

    #[test]
    fn demonstrations_are_seeded_complete_and_varied() {
        let t = ArmTask::default();
        let a = generate(&t, 40, 3, false).expect("demos");
        let b = generate(&t, 40, 3, false).expect("demos");
        assert_eq!(a, b, "same seed, same data");
        let orders = orders_from_episodes(&t, &a);
        assert!(orders.iter().all(|o| o.len() == t.goal), "{orders:?}");
        // Many distinct orders, every site first at least once.
        let distinct: std::collections::HashSet<_> = orders.iter().collect();
        assert!(distinct.len() > 30, "{} distinct orders", distinct.len());
        for s in 0..t.sites as u8 {
            assert!(orders.iter().any(|o| o[0] == s), "site {s} never first");
        }
        // Human-like: episode lengths and speeds vary.
        let lens: Vec<usize> = (0..a.len()).map(|e| a.episode(e).len()).collect();
        let (lo, hi) = (lens.iter().min().copied(), lens.iter().max().copied());
        assert!(
            hi.unwrap_or(0) as f64 > 1.3 * lo.unwrap_or(0) as f64,
            "{lens:?}"
        );
        let c = generate(&t, 40, 4, false).expect("demos");
        assert_ne!(a.actions, c.actions, "another seed, other data");
        // No recorded position touches the obstacle.
        let ob = t.obstacle().expect("obstacle");
        for i in 0..a.steps() {
            assert!(!ob.touches(a.obs_row(i)), "row {i} touches the obstacle");
        }
    }

    /// Drives straight to the next target in index order: the average of
    /// passing the obstacle left and right.
    struct Straight {
        task: ArmTask,
    }

    impl Driver for Straight {
        fn reset(&mut self, _seed: u64) {}
        fn act(&mut self, t: &Telemetry, frame: &[f32], out: &mut [f32]) -> Result<()> {
            let next = (0..self.task.sites)
                .find(|&i| frame[2 * JOINTS + i] < 0.5)
                .unwrap_or(0);
            let site = self.task.site(next);
            for j in 0..JOINTS {
                out[j] = t.positions[j] + (site[j] - t.positions[j]).clamp(-0.3, 0.3);
            }
            Ok(())
        }
    }

    #[test]
    fn the_obstacle_stops_a_straight_path_and_the_demonstrator_goes_around_both_ways() {
        let t = ArmTask::default();
        // Target 0 is straight across the obstacle from home.
        let r = run_episode(&t, 1, &mut Straight { task: t.clone() }, None).expect("run");
        assert!(r.collided, "{r:?}");
        assert!(r.order.is_empty());
        // Demonstrations whose first target is 0 pass the obstacle on both sides.
        let demos = generate(&t, 120, 0, false).expect("demos");
        let orders = orders_from_episodes(&t, &demos);
        let (mut left, mut right) = (0, 0);
        for (e, o) in orders.iter().enumerate() {
            if o[0] != 0 {
                continue;
            }
            // Joint 0 at the moment joint 1 crosses 0 (beside the obstacle).
            if let Some(i) = demos.episode(e).find(|&i| demos.obs_row(i)[1] > 0.0) {
                if demos.obs_row(i)[0] < 0.0 {
                    left += 1;
                } else {
                    right += 1;
                }
            }
        }
        assert!(left >= 3 && right >= 3, "left {left}, right {right}");
    }
}
