//! Closed-loop evaluation on the arm task: seeded episodes in-process and
//! through the serial bridge against the emulated arm on a pty; task
//! completion, the distribution of task orders against the demonstrations',
//! an action-distribution distance, and the bridge's timing.

use super::{ArmTask, Driver, EpisodeResult, JOINTS, Progress, run_episode};
use crate::error::{Context, Result};
use crate::invalid;
use crate::metrics::{Directions, entropy_at, entropy_bits, sliced_w1};
use diffbc_bridge::{Bridge, LoopConfig, RunStats};
use diffbc_control::PolicyController;
use diffbc_emulator::spawn_pty;
use diffbc_protocol::Telemetry;
use diffbc_runtime::{Policy, SamplerConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seeds of evaluation episodes start here (demonstrations use small seeds).
pub const EVAL_SEED_BASE: u64 = 1_000_000;

/// Where an episode ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPath {
    /// The demonstrations themselves (reference row).
    Demonstrations,
    /// Firmware logic stepped in this process.
    InProcess,
    /// Serial bridge ↔ pty ↔ emulated arm firmware.
    Bridge,
}

/// Bridge timing over a set of episodes (wall clock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeTiming {
    /// Device seconds per wall second.
    pub time_scale: f64,
    /// Control rate on the wire (Hz, wall clock).
    pub wire_rate_hz: f64,
    /// Ticks run.
    pub ticks: u64,
    /// Ticks whose action missed the deadline (last safe command resent).
    pub missed_deadlines: u64,
    /// Tick start jitter, 99th percentile (µs).
    pub jitter_p99_us: u64,
    /// Largest tick start jitter (µs).
    pub jitter_max_us: u64,
    /// Command → acknowledging telemetry, median (µs; quantised to the tick).
    pub ack_p50_us: u64,
    /// Targets clamped by the per-tick step limit.
    pub clamped_step: u64,
    /// Bad frames received.
    pub frames_bad: u64,
    /// Episodes ended by a device fault other than a collision (the
    /// firmware's watchdog after the host stalled): counted as failures.
    pub episodes_faulted: usize,
}

/// One row of the table (one method × sampler × path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmRecord {
    /// `diffusion`, `mse` or `demonstrator`.
    pub method: String,
    /// Sampler label (`-` for regression and the demonstrations).
    pub sampler: String,
    /// Where the episodes ran.
    pub path: RolloutPath,
    /// Episodes.
    pub episodes: usize,
    /// Mean number of distinct targets reached per episode.
    pub tasks_completed_mean: f64,
    /// Share of episodes that reached all `goal` targets.
    pub all_targets_rate: f64,
    /// Share of episodes that ended touching the obstacle.
    pub collision_rate: f64,
    /// Entropy (bits) of the distribution of task orders (Miller–Madow corrected).
    pub order_entropy: f64,
    /// The same for the demonstrations, estimated at this row's number of
    /// episodes (mean over seeded random subsets of that size), so both
    /// estimates carry the same small-sample bias.
    pub demo_order_entropy: f64,
    /// Share of episodes whose first target is the most common first target.
    pub first_task_top_share: f64,
    /// Share of the least common first target (0 = a target never comes first).
    pub first_task_min_share: f64,
    /// How often each target came first (shares, by target).
    pub first_task_shares: Vec<f64>,
    /// Sliced Wasserstein-1 distance between the commands sent and the
    /// demonstrations' commands (rad; the demonstrations' split-half value is the floor).
    pub action_w1: f64,
    /// Decisions per second of the policy in this evaluation (in-process only).
    pub decisions_per_second: Option<f64>,
    /// Bridge timing (bridge rows only).
    pub timing: Option<BridgeTiming>,
    /// Bridge rows: the in-process figures on exactly the same seeds.
    pub in_process_same_seeds: Option<SameSeeds>,
}

/// In-process figures on the bridge's seeds, and how often the two paths
/// ended an episode the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SameSeeds {
    /// All-targets rate in-process over the bridge's seeds.
    pub all_targets_rate: f64,
    /// Mean targets reached in-process over the bridge's seeds.
    pub tasks_completed_mean: f64,
    /// Share of seeds whose episode succeeded (all targets) on both paths or failed on both.
    pub same_outcome_share: f64,
}

/// Projections of the action distance: 64 directions seeded 7.
const ACTION_W1_DIRECTIONS: Directions = Directions::Random { count: 64, seed: 7 };

/// Figures over a set of episodes.
pub fn summarise(
    task: &ArmTask,
    method: &str,
    sampler: &str,
    path: RolloutPath,
    results: &[EpisodeResult],
    demo_orders: &[Vec<u8>],
    demo_actions: &[f32],
) -> ArmRecord {
    let n = results.len().max(1) as f64;
    let orders: Vec<Vec<u8>> = results
        .iter()
        .map(|r| r.order.iter().take(task.goal).copied().collect())
        .collect();
    let mut first = vec![0usize; task.sites];
    for o in &orders {
        if let Some(&f) = o.first() {
            first[f as usize] += 1;
        }
    }
    let shares: Vec<f64> = first.iter().map(|&c| c as f64 / n).collect();
    let actions: Vec<f32> = results
        .iter()
        .flat_map(|r| r.actions.iter().copied())
        .collect();
    ArmRecord {
        method: method.into(),
        sampler: sampler.into(),
        path,
        episodes: results.len(),
        tasks_completed_mean: orders.iter().map(|o| o.len() as f64).sum::<f64>() / n,
        all_targets_rate: orders.iter().filter(|o| o.len() >= task.goal).count() as f64 / n,
        collision_rate: results.iter().filter(|r| r.collided).count() as f64 / n,
        order_entropy: entropy_bits(&orders),
        demo_order_entropy: entropy_at(demo_orders, results.len()),
        first_task_top_share: shares.iter().copied().fold(0.0, f64::max),
        first_task_min_share: shares.iter().copied().fold(1.0, f64::min),
        first_task_shares: shares,
        action_w1: sliced_w1(&actions, demo_actions, JOINTS, ACTION_W1_DIRECTIONS),
        decisions_per_second: None,
        timing: None,
        in_process_same_seeds: None,
    }
}

/// A runtime [`Policy`] as an in-process driver.
struct PolicyDriver<'a> {
    policy: &'a mut Policy,
    /// The policy's frame: the task's, then its `mode[k]` channels (set by
    /// its steering) when it was trained with modes.
    frame: Vec<f32>,
}

impl<'a> PolicyDriver<'a> {
    fn new(policy: &'a mut Policy) -> Self {
        let frame = vec![0.0; policy.frame_len()];
        Self { policy, frame }
    }
}

impl Driver for PolicyDriver<'_> {
    fn reset(&mut self, seed: u64) {
        self.policy.reseed(seed);
        self.policy.reset();
    }

    fn act(&mut self, _t: &Telemetry, frame: &[f32], out: &mut [f32]) -> Result<()> {
        let a = if self.frame.len() == frame.len() {
            self.policy.act(frame)?
        } else {
            // Only the trailing mode channels differ (checked at load).
            self.frame[..frame.len()].copy_from_slice(frame);
            self.policy.act(&self.frame)?
        };
        out.copy_from_slice(a);
        Ok(())
    }
}

/// A progress bar over `len` episodes labelled `label`.
pub fn bar(len: usize, label: String) -> ProgressBar {
    ProgressBar::new(len as u64)
        .with_style(
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed}<{eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
        .with_message(label)
}

/// Episodes `EVAL_SEED_BASE + i` for `i` in `0..episodes`, in-process, on
/// `threads` workers of the shared pool that each load the exported policy
/// in `dir` (with `sampler`, or the manifest's when `None`). Every episode reseeds the policy from its own seed, so the
/// results — returned in seed order — do not depend on `threads`. The
/// decision rate is ticks over the workers' summed busy time: what one core
/// sustains, not the pool's throughput.
pub fn rollouts_in_process(
    task: &ArmTask,
    dir: &Path,
    sampler: Option<SamplerConfig>,
    episodes: usize,
    threads: usize,
    pb: &ProgressBar,
) -> Result<(Vec<EpisodeResult>, f64)> {
    rollouts_steered(task, dir, sampler, None, episodes, threads, pb)
}

/// [`rollouts_in_process`] with the policy steered (a policy trained with
/// `mode[k]` channels after the task's frame; see `diffbc modes`).
pub fn rollouts_steered(
    task: &ArmTask,
    dir: &Path,
    sampler: Option<SamplerConfig>,
    steering: Option<&diffbc_runtime::Steering>,
    episodes: usize,
    threads: usize,
    pb: &ProgressBar,
) -> Result<(Vec<EpisodeResult>, f64)> {
    let load = || -> Result<Policy> {
        let mut policy = Policy::load(dir, diffbc_runtime::EngineChoice::Native)
            .context_with(|| format!("loading {}", dir.display()))?;
        if let Some(cfg) = sampler {
            policy.set_sampler(cfg)?;
        }
        if policy.frame_len() != task.frame_len() + policy.modes() {
            invalid!(
                "{}: the policy reads {}-value frames ({} mode channels); the arm task's frames have {}",
                dir.display(),
                policy.frame_len(),
                policy.modes(),
                task.frame_len()
            );
        }
        policy.set_steering(steering.cloned())?;
        Ok(policy)
    };
    let jobs =
        crate::pool::longest_first_with(&vec![1.0; episodes], threads, load, |policy, e| {
            let seed = EVAL_SEED_BASE + e as u64;
            let t0 = Instant::now();
            let r = run_episode(task, seed, &mut PolicyDriver::new(policy), None)
                .context_with(|| format!("episode with seed {seed}"))?;
            pb.inc(1);
            Ok((r, t0.elapsed().as_secs_f64()))
        })?;
    let ticks: usize = jobs.iter().map(|(r, _)| r.ticks).sum();
    let busy: f64 = jobs.iter().map(|(_, secs)| secs).sum();
    let out = jobs.into_iter().map(|(r, _)| r).collect();
    pb.finish_and_clear();
    Ok((out, ticks as f64 / f64::max(busy, 1e-9)))
}

/// The same episodes through the serial bridge: for each, an emulated arm
/// firmware on a fresh pty (start pose from the seed, device clock running
/// `time_scale` times faster than the wall clock), `Bridge` connecting to it
/// and the policy running on the bridge's controller thread at
/// `control_hz × time_scale` wall-clock Hz — so the dynamics per tick are the
/// same as in-process.
pub fn rollouts_bridge(
    task: &ArmTask,
    controller: &mut PolicyController,
    episodes: usize,
    time_scale: f64,
    label: &str,
    progress: bool,
) -> Result<(Vec<EpisodeResult>, BridgeTiming)> {
    diffbc_bridge::checked::time_scale("--time-scale", time_scale)?;
    let dir = tempfile::tempdir().context("creating a folder for the pty links")?;
    let pb = if progress {
        bar(episodes, label.to_string())
    } else {
        ProgressBar::hidden()
    };
    let mut out = Vec::with_capacity(episodes);
    let mut stats = RunStats::new();
    let mut faulted = 0;
    let wire_rate = task.control_hz * time_scale;
    for e in 0..episodes {
        let seed = EVAL_SEED_BASE + e as u64;
        let mut sim_config = task.sim_config(seed);
        sim_config.time_scale = time_scale;
        let link = dir.path().join(format!("arm-{e}"));
        let sim = spawn_pty(sim_config, &link)
            .context_with(|| format!("opening the emulated arm at {}", link.display()))?;
        let loop_config = LoopConfig {
            rate_hz: wire_rate,
            duration: Some(diffbc_bridge::checked::seconds(
                "the episode's wall-clock length",
                task.max_seconds / time_scale,
            )?),
            max_step: task.max_step,
            telemetry_timeout: Duration::from_millis(500),
            ..LoopConfig::default()
        };
        controller.policy_mut().reseed(seed);
        // The task's state on the host: the policy's done flags, and the
        // run's stop flag once the goal is reached.
        let progress = Arc::new(Progress::default());
        controller.set_host_source(Box::new(task.state(progress.clone())));
        let path = link.to_string_lossy().into_owned();
        let mut bridge = Bridge::connect(&path, 1_000_000, loop_config.handshake_timeout)
            .context_with(|| format!("connecting to {path}"))?;
        let report = bridge.run(controller, &loop_config, &progress.done);
        drop(bridge);
        let order = progress.order();
        let collided = sim.shared.faults.lock().is_ok_and(|f| {
            f.iter()
                .any(|f| f.code == diffbc_protocol::FaultCode::Collision)
        });
        let device_fault = sim
            .shared
            .faults
            .lock()
            .map(|f| {
                f.iter()
                    .any(|f| f.code != diffbc_protocol::FaultCode::Collision)
            })
            .unwrap_or(false);
        sim.shutdown();
        // A collision ends the episode (the arm latched a fault). Any other
        // device fault (the firmware's watchdog when the host stalled) also
        // ends it as a failure and is counted; a host-side error is an error.
        if let Err(e) = &report.outcome {
            if device_fault && !collided {
                faulted += 1;
                tracing::warn!("bridge episode with seed {seed} ended in a device fault: {e}");
            } else if !collided {
                invalid!("bridge episode with seed {seed}: {e}");
            }
        }
        let actions: Vec<f32> = report
            .log
            .iter()
            .flat_map(|c| c.command.targets.iter().copied())
            .collect();
        stats.merge(&report.stats);
        out.push(EpisodeResult {
            order,
            ticks: report.log.len(),
            actions,
            collided,
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    let timing = BridgeTiming {
        time_scale,
        wire_rate_hz: wire_rate,
        ticks: stats.ticks,
        missed_deadlines: stats.missed_deadlines,
        jitter_p99_us: stats.jitter.quantile_us(0.99),
        jitter_max_us: stats.jitter.max_us(),
        ack_p50_us: stats.rtt.quantile_us(0.5),
        clamped_step: stats.clamped_step,
        frames_bad: stats.frames_bad,
        episodes_faulted: faulted,
    };
    Ok((out, timing))
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalPlan {
    /// Samplers for diffusion policies (in-process).
    pub samplers: Vec<SamplerConfig>,
    /// In-process episodes per policy × sampler.
    pub episodes: usize,
    /// Bridge episodes per policy (first sampler that is Diffusion-X, else the first); 0 = off.
    pub bridge_episodes: usize,
    /// Device seconds per wall second on the bridge.
    pub time_scale: f64,
    /// Draw progress bars.
    pub progress: bool,
    /// In-process workers (each loads its own copy of the policy); the
    /// results do not depend on it.
    pub threads: usize,
    /// Steering for policies trained with `mode[k]` channels (every policy
    /// evaluated takes it; `None`: unsteered).
    pub steering: Option<diffbc_runtime::Steering>,
}

impl EvalPlan {
    /// In-process episodes only, on every core, with progress bars.
    pub fn in_process(samplers: Vec<SamplerConfig>, episodes: usize) -> Self {
        Self {
            samplers,
            episodes,
            bridge_episodes: 0,
            time_scale: 1.0,
            progress: true,
            threads: crate::pool::default_threads(),
            steering: None,
        }
    }
}

/// The demonstrations' reference row: their own figures, and as
/// `action_w1` the distance between two halves of them (the floor).
pub fn demo_record(task: &ArmTask, demo_orders: &[Vec<u8>], demo_actions: &[f32]) -> ArmRecord {
    let results: Vec<EpisodeResult> = demo_orders
        .iter()
        .map(|o| EpisodeResult {
            order: o.clone(),
            ..Default::default()
        })
        .collect();
    let mut r = summarise(
        task,
        "demonstrator",
        "-",
        RolloutPath::Demonstrations,
        &results,
        demo_orders,
        demo_actions,
    );
    let rows = demo_actions.len() / JOINTS;
    let half = rows / 2 * JOINTS;
    r.action_w1 = sliced_w1(
        &demo_actions[..half],
        &demo_actions[half..],
        JOINTS,
        ACTION_W1_DIRECTIONS,
    );
    r
}

/// Commands of the first episodes of each in-process row, for figures.
pub type SamplePaths = Vec<(String, Vec<Vec<f32>>)>;

/// Evaluate exported policies (folders with a manifest).
pub fn evaluate(
    task: &ArmTask,
    models: &[(String, &Path)],
    plan: &EvalPlan,
    demo_orders: &[Vec<u8>],
    demo_actions: &[f32],
) -> Result<(Vec<ArmRecord>, SamplePaths)> {
    let mut records = vec![demo_record(task, demo_orders, demo_actions)];
    let mut paths = Vec::new();
    let done = |r: &EpisodeResult| r.order.len() >= task.goal;
    for (method, dir) in models {
        let mut policy = Policy::load(dir, diffbc_runtime::EngineChoice::Native)
            .context_with(|| format!("loading {}", dir.display()))?;
        if policy.frame_len() != task.frame_len() + policy.modes() || policy.action_dim() != JOINTS
        {
            invalid!(
                "{}: the policy reads {}-value frames ({} mode channels) and writes {} values; the arm task has {}-value frames and {JOINTS} joints",
                dir.display(),
                policy.frame_len(),
                policy.modes(),
                policy.action_dim(),
                task.frame_len()
            );
        }
        policy
            .set_steering(plan.steering.clone())
            .context_with(|| format!("steering {}", dir.display()))?;
        let regressor = policy.is_direct();
        let samplers: Vec<Option<SamplerConfig>> = if regressor {
            vec![None]
        } else {
            plan.samplers.iter().copied().map(Some).collect()
        };
        let mut by_sampler: HashMap<String, Vec<EpisodeResult>> = HashMap::new();
        for s in &samplers {
            if let Some(cfg) = s {
                policy.set_sampler(*cfg)?;
            }
            let label = policy.decision_label();
            let pb = if plan.progress {
                bar(plan.episodes, format!("{method} {label}"))
            } else {
                ProgressBar::hidden()
            };
            let (results, dps) = rollouts_steered(
                task,
                dir,
                *s,
                plan.steering.as_ref(),
                plan.episodes,
                plan.threads,
                &pb,
            )?;
            let mut r = summarise(
                task,
                method,
                &label,
                RolloutPath::InProcess,
                &results,
                demo_orders,
                demo_actions,
            );
            r.decisions_per_second = Some(dps);
            paths.push((
                if regressor {
                    method.clone()
                } else {
                    format!("{method} {label}")
                },
                results.iter().take(6).map(|e| e.actions.clone()).collect(),
            ));
            by_sampler.insert(label.clone(), results);
            tracing::info!(
                method = %method, sampler = %label,
                all_targets = r.all_targets_rate, tasks = r.tasks_completed_mean,
                entropy = r.order_entropy, "in-process"
            );
            records.push(r);
        }
        if plan.bridge_episodes > 0 {
            let bridge_sampler = plan
                .samplers
                .iter()
                .copied()
                .find(|c| c.label().starts_with("diffusion-x"))
                .or(plan.samplers.first().copied());
            if !regressor && let Some(cfg) = bridge_sampler {
                policy.set_sampler(cfg)?;
            }
            let label = policy.decision_label();
            let mut controller = PolicyController::new(policy);
            let (results, timing) = rollouts_bridge(
                task,
                &mut controller,
                plan.bridge_episodes,
                plan.time_scale,
                &format!("{method} {label} bridge"),
                plan.progress,
            )?;
            let mut r = summarise(
                task,
                method,
                &label,
                RolloutPath::Bridge,
                &results,
                demo_orders,
                demo_actions,
            );
            r.timing = Some(timing);
            if let Some(ip) = by_sampler.get(&label) {
                let n = results.len().min(ip.len());
                if n > 0 {
                    let ip = &ip[..n];
                    let nf = n as f64;
                    r.in_process_same_seeds = Some(SameSeeds {
                        all_targets_rate: ip.iter().filter(|e| done(e)).count() as f64 / nf,
                        tasks_completed_mean: ip
                            .iter()
                            .map(|e| e.order.len().min(task.goal) as f64)
                            .sum::<f64>()
                            / nf,
                        same_outcome_share: ip
                            .iter()
                            .zip(&results)
                            .filter(|(a, b)| done(a) == done(b))
                            .count() as f64
                            / nf,
                    });
                }
            }
            tracing::info!(
                method = %method, sampler = %label,
                all_targets = r.all_targets_rate, tasks = r.tasks_completed_mean, "bridge"
            );
            records.push(r);
        }
    }
    Ok((records, paths))
}

/// The Markdown table.
pub fn markdown_table(records: &[ArmRecord]) -> String {
    let mut s = String::from(
        "| method | sampler | path | episodes | tasks done (mean) | all targets | collisions | order entropy (bits) | demo entropy (same n) | top first-task share | min first-task share | action W1 (rad) | decisions/s |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in records {
        let path = match r.path {
            RolloutPath::Demonstrations => "demos",
            RolloutPath::InProcess => "in-process",
            RolloutPath::Bridge => "bridge",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.3} | {:.3} | {:.2} | {:.2} | {:.3} | {:.3} | {:.4} | {} |\n",
            r.method,
            r.sampler,
            path,
            r.episodes,
            r.tasks_completed_mean,
            r.all_targets_rate,
            r.collision_rate,
            r.order_entropy,
            r.demo_order_entropy,
            r.first_task_top_share,
            r.first_task_min_share,
            r.action_w1,
            r.decisions_per_second
                .map_or("-".to_string(), |d| format!("{d:.0}"))
        ));
    }
    s
}

/// The bridge timing table.
pub fn timing_table(records: &[ArmRecord]) -> String {
    let mut s = String::from(
        "| method | sampler | time scale | wire rate (Hz) | ticks | missed deadlines | jitter p99 (µs) | jitter max (µs) | ack p50 (µs) | step clamps | bad frames | episodes ended by a device fault |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in records {
        if let Some(t) = &r.timing {
            s.push_str(&format!(
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.method,
                r.sampler,
                t.time_scale,
                t.wire_rate_hz,
                t.ticks,
                t.missed_deadlines,
                t.jitter_p99_us,
                t.jitter_max_us,
                t.ack_p50_us,
                t.clamped_step,
                t.frames_bad,
                t.episodes_faulted
            ));
        }
    }
    s
}

/// Whether two completion rates over `n1`, `n2` episodes agree within
/// noise: |p1 − p2| ≤ 3 standard errors of the difference (+1 episode).
pub fn rates_agree(p1: f64, n1: usize, p2: f64, n2: usize) -> bool {
    let p = (p1 * n1 as f64 + p2 * n2 as f64) / (n1 + n2).max(1) as f64;
    let se = (p * (1.0 - p) * (1.0 / n1.max(1) as f64 + 1.0 / n2.max(1) as f64)).sqrt();
    (p1 - p2).abs() <= 3.0 * se + 1.0 / n1.min(n2).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_agreement_allows_noise_but_not_a_gap() {
        assert!(rates_agree(0.8, 100, 0.75, 30));
        assert!(!rates_agree(0.9, 100, 0.3, 30));
    }
}
