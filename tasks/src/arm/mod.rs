//! The main job's task: the emulated arm visits targets in a human-like way.
//!
//! Modelled on the paper's kitchen protocol: the arm's world has
//! [`ArmTask::sites`] targets (joint configurations, like switches to flip)
//! around a fixed obstacle that the arm must not touch; each demonstration
//! visits [`ArmTask::goal`] of them, choosing the next one uniformly among
//! those not yet done, so every order is about equally frequent, and passes
//! the obstacle on either side when it is in the way (two ways of doing the
//! same reach: averaging them drives into the obstacle). The scripted demonstrator moves like a person: its own speed per
//! episode, minimum-jerk reaches with a bowed path, hesitations, pauses at
//! each target, a reaction delay, and a smooth tremor correlated across the
//! joints. It runs the same firmware logic as `diffbc sim-arm`
//! ([`diffbc_emulator::SimArm`]) through the bridge's own control loop,
//! observes through the same telemetry → frame mapping as the
//! deployed controller ([`ObsLayout`]) and its commands pass the same
//! [`diffbc_bridge::SafetyLayer`], so a recorded row is exactly what a policy sees and what
//! the bridge would send.
//!
//! Which targets are done is the task's business, not the arm's:
//! [`TaskState`] computes it on the host from the measured joint positions
//! (the policy's `task.done[i]` channels, a [`HostSource`]), on every path.

// Joint-indexed arithmetic over several arrays at once reads clearer with an index.
#![allow(clippy::needless_range_loop)]

#[cfg(feature = "train")]
pub mod demos;
pub mod eval;
#[cfg(feature = "train")]
pub mod modes;
#[cfg(feature = "train")]
pub mod report;

use crate::error::Result;
use crate::{invalid, require};
use diffbc_bridge::{Controller, LoopConfig, SimClock};
use diffbc_control::{HostSource, ObsLayout};
use diffbc_emulator::{SimConfig, StepLink};
use diffbc_protocol::Telemetry;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Joints of the task's arm.
pub const JOINTS: usize = 4;

/// Most targets a task may have.
pub const MAX_SITES: usize = 8;

/// How the scripted demonstrator behaves (ranges are sampled uniformly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemonstratorConfig {
    /// Operator speed for a whole episode (rad/s along the path), min and max.
    pub speed: [f32; 2],
    /// Per-reach variation of the speed (factor range).
    pub speed_jitter: [f32; 2],
    /// Standard deviation of the path's sideways bow, as a fraction of the reach length.
    pub bow: f32,
    /// Probability that a reach has a hesitation (the hand stops mid-way).
    pub hesitate_probability: f64,
    /// Hesitation length (s).
    pub hesitate_seconds: [f32; 2],
    /// Where along the reach a hesitation happens (fraction of the path).
    pub hesitate_at: [f32; 2],
    /// Pause at a target after it registers (s).
    pub dwell_seconds: [f32; 2],
    /// Reaction time at the start of an episode (s).
    pub react_seconds: [f32; 2],
    /// Tremor: stationary standard deviation of the command noise (rad).
    pub tremor: f32,
    /// Tremor: mean reversion rate (1/s); lower is smoother.
    pub tremor_rate: f32,
    /// Tremor: correlation between joints.
    pub tremor_correlation: f32,
}

impl Default for DemonstratorConfig {
    fn default() -> Self {
        Self {
            speed: [0.7, 1.2],
            speed_jitter: [0.85, 1.15],
            bow: 0.12,
            hesitate_probability: 0.25,
            hesitate_seconds: [0.2, 0.6],
            hesitate_at: [0.25, 0.65],
            dwell_seconds: [0.1, 0.6],
            react_seconds: [0.0, 0.5],
            tremor: 0.015,
            tremor_rate: 4.0,
            tremor_correlation: 0.5,
        }
    }
}

/// The task: world, episode rules, control rate and the demonstrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmTask {
    /// Targets in the world (≤ [`MAX_SITES`], one observation channel each).
    pub sites: usize,
    /// Targets an episode must reach (all targets = success).
    pub goal: usize,
    /// Control rate (Hz) in device time.
    pub control_hz: f64,
    /// Episode time limit (s of device time).
    pub max_seconds: f64,
    /// A target registers within this distance (rad, max over joints).
    pub tolerance: f32,
    /// Safety layer: largest target change per tick from the measured position (rad).
    pub max_step: f32,
    /// Spread of the start pose around [`ArmTask::home`] (rad, standard deviation).
    pub start_spread: f32,
    /// The start pose (joints 0–1; the others start at 0).
    pub home: [f32; 2],
    /// Radius of the obstacle at the centre of the joint 0–1 plane (0 = none).
    pub obstacle_radius: f32,
    /// Clearance the demonstrator keeps from the obstacle (rad).
    pub clearance: f32,
    /// Probability that the demonstrator passes a blocking obstacle on the
    /// side that needs the smaller detour.
    pub near_side_probability: f64,
    /// The scripted demonstrator.
    pub demonstrator: DemonstratorConfig,
    /// Operators with habits of their own, one drawn per demonstration
    /// (uniformly, from the episode's seed). Empty: one operator, who picks
    /// a side by `near_side_probability`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<Operator>,
}

/// One operator's habit: which side of a blocking obstacle they pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// What the tables call them.
    pub name: String,
    /// Probability of passing a blocking obstacle on the left (the path
    /// bulging left of the straight line, the obstacle on its right), on
    /// every blocked reach; the right otherwise.
    pub left: f64,
}

impl Default for ArmTask {
    fn default() -> Self {
        Self {
            sites: 5,
            goal: 4,
            control_hz: 10.0,
            max_seconds: 25.0,
            tolerance: 0.1,
            max_step: 0.6,
            start_spread: 0.05,
            home: [0.0, -1.0],
            obstacle_radius: 0.45,
            clearance: 0.35,
            near_side_probability: 0.5,
            demonstrator: DemonstratorConfig::default(),
            operators: Vec::new(),
        }
    }
}

/// One episode's outcome.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EpisodeResult {
    /// Targets in the order they were first reached.
    pub order: Vec<u8>,
    /// Commands sent, `[ticks, JOINTS]`.
    pub actions: Vec<f32>,
    /// Control ticks run.
    pub ticks: usize,
    /// The episode ended in a collision with the obstacle.
    pub collided: bool,
}

impl ArmTask {
    /// The default task demonstrated by two operators, half the episodes
    /// each: one always passes a blocking obstacle on the left, the other
    /// always on the right (the styles `diffbc modes --scope episode` finds
    /// without labels and steers between).
    pub fn two_operators() -> Self {
        Self {
            operators: vec![
                Operator {
                    name: "passes left".into(),
                    left: 1.0,
                },
                Operator {
                    name: "passes right".into(),
                    left: 0.0,
                },
            ],
            ..Self::default()
        }
    }

    /// Check the values; errors name the field.
    pub fn validate(&self) -> Result<()> {
        require!(
            (1..=MAX_SITES).contains(&self.sites),
            "task field sites: {} is outside 1..=8",
            self.sites
        );
        require!(
            (1..=self.sites).contains(&self.goal),
            "task field goal: {} is outside 1..=sites",
            self.goal
        );
        require!(
            self.control_hz.is_finite() && self.control_hz >= 1.0 && self.control_hz <= 100.0,
            "task field control_hz: {} is outside 1..=100",
            self.control_hz
        );
        require!(
            self.max_seconds.is_finite() && self.max_seconds > 0.0,
            "task field max_seconds must be positive"
        );
        require!(
            self.tolerance > 0.0 && self.max_step > 0.0,
            "task fields tolerance and max_step must be positive"
        );
        require!(
            self.operators.len() < usize::from(u8::MAX),
            "task field operators: {} operators, at most 254",
            self.operators.len()
        );
        for (i, o) in self.operators.iter().enumerate() {
            require!(
                (0.0..=1.0).contains(&o.left),
                "task field operators[{i}].left: {} is not a probability",
                o.left
            );
        }
        Ok(())
    }

    /// Target `i`'s joint configuration: evenly spaced on a circle in joints
    /// 0–1, with joints 2–3 varying so every pair differs in all joints.
    /// Straight paths between targets pass no other target.
    pub fn site(&self, i: usize) -> [f32; JOINTS] {
        let th = std::f32::consts::TAU * i as f32 / self.sites as f32 + std::f32::consts::FRAC_PI_2;
        [
            1.3 * th.cos(),
            1.3 * th.sin(),
            0.6 * (2.0 * th).sin(),
            0.5 * (th + 0.7).cos(),
        ]
    }

    /// Observation frame length: positions, velocities, one done flag per target.
    pub fn frame_len(&self) -> usize {
        2 * JOINTS + self.sites
    }

    /// The telemetry + [`TaskState`] → frame mapping (the deployed
    /// controller's, built from the same channel sources the demonstrations
    /// record).
    pub fn layout(&self) -> Result<ObsLayout> {
        let channels: Vec<diffbc_runtime::manifest::ObservationChannel> = self
            .obs_names()
            .into_iter()
            .zip(self.obs_sources())
            .map(
                |(name, source)| diffbc_runtime::manifest::ObservationChannel {
                    name,
                    unit: String::new(),
                    source,
                    shape: Vec::new(),
                    min: 0.0,
                    max: 0.0,
                },
            )
            .collect();
        let state = self.state(Arc::default());
        ObsLayout::from_channels(&channels, JOINTS, Some(&state as &dyn HostSource))
            .map_err(crate::TaskError::Invalid)
    }

    /// Control ticks per episode at most.
    pub fn max_ticks(&self) -> usize {
        (self.max_seconds * self.control_hz).round() as usize
    }

    /// Start pose of the episode with this seed.
    pub fn start_pose(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_57A7);
        (0..JOINTS)
            .map(|j| {
                let base = if j < 2 { self.home[j] } else { 0.0 };
                base + self.start_spread * rng.sample::<f32, _>(StandardNormal)
            })
            .collect()
    }

    /// The obstacle, if any.
    pub fn obstacle(&self) -> Option<diffbc_emulator::Obstacle> {
        (self.obstacle_radius > 0.0).then_some(diffbc_emulator::Obstacle {
            center: [0.0, 0.0],
            radius: self.obstacle_radius,
        })
    }

    /// The task's state on the host, reporting into `progress`.
    pub fn state(&self, progress: Arc<Progress>) -> TaskState {
        TaskState {
            sites: (0..self.sites).map(|i| self.site(i)).collect(),
            tolerance: self.tolerance,
            goal: self.goal,
            keys: (0..self.sites).map(|i| format!("task.done[{i}]")).collect(),
            reached: 0,
            progress,
        }
    }

    /// The emulated arm for the episode with this seed (start pose, obstacle).
    pub fn sim_config(&self, seed: u64) -> SimConfig {
        let mut c = SimConfig::default_arm();
        c.initial = self.start_pose(seed);
        c.obstacles = self.obstacle().into_iter().collect();
        // A 10 Hz loop sends a command every 100 ms; a late tick on a busy
        // host must not trip the firmware.
        c.watchdog = Duration::from_secs(1);
        c
    }

    /// Observation channel names (the `.demos` header): what the deployed
    /// controller reads from telemetry, then the done flags the task computes
    /// on the host (see [`ArmTask::obs_sources`]).
    pub fn obs_names(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..JOINTS)
            .map(|j| format!("joint.position[{j}]"))
            .collect();
        v.extend((0..JOINTS).map(|j| format!("joint.velocity[{j}]")));
        v.extend((0..self.sites).map(|i| format!("task.done[{i}]")));
        v
    }

    /// Where each observation value comes from at run time.
    pub fn obs_sources(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..JOINTS)
            .map(|j| format!("joint.position[{j}]"))
            .collect();
        v.extend((0..JOINTS).map(|j| format!("joint.velocity[{j}]")));
        v.extend((0..self.sites).map(|i| format!("task.done[{i}]")));
        v
    }
}

/// What an episode achieved so far, shared between the task's
/// [`TaskState`] (on the controller's thread) and whoever runs the episode.
#[derive(Debug, Default)]
pub struct Progress {
    /// Raised once the goal is reached (or the driver has finished): the
    /// run's stop flag, so the loop ends before sending another command.
    pub done: AtomicBool,
    order: Mutex<Vec<u8>>,
}

impl Progress {
    /// Targets in the order they were first reached.
    pub fn order(&self) -> Vec<u8> {
        self.order
            .lock()
            .map_or_else(|e| e.into_inner().clone(), |o| o.clone())
    }
}

/// The arm task's state on the host: which targets the arm has reached,
/// from its measured joint positions. A target registers on the first tick
/// whose telemetry has every joint within [`ArmTask::tolerance`] of it, and
/// stays done. A [`HostSource`] for the policy's `task.done[i]` channels (1
/// when done, else 0); once [`ArmTask::goal`] targets are done it raises
/// [`Progress::done`].
#[derive(Debug)]
pub struct TaskState {
    sites: Vec<[f32; JOINTS]>,
    tolerance: f32,
    goal: usize,
    keys: Vec<String>,
    /// Bit i: target i reached.
    reached: u32,
    progress: Arc<Progress>,
}

impl TaskState {
    /// Where this state reports.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }
}

impl HostSource for TaskState {
    fn keys(&self) -> &[String] {
        &self.keys
    }

    fn reset(&mut self) {
        self.reached = 0;
        self.progress.done.store(false, Ordering::Relaxed);
        let mut order = self
            .progress
            .order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        order.clear();
        // Room for every target, so `read` never allocates.
        order.reserve(self.sites.len());
    }

    fn read(&mut self, t: &Telemetry, out: &mut [f32]) -> Result<(), String> {
        if t.positions.len() < JOINTS {
            return Err(format!(
                "the arm task needs {JOINTS} joint positions, telemetry has {}",
                t.positions.len()
            ));
        }
        let mut order = self
            .progress
            .order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, (site, v)) in self.sites.iter().zip(out.iter_mut()).enumerate() {
            let bit = 1u32 << i;
            if self.reached & bit == 0 {
                let d = site
                    .iter()
                    .zip(&t.positions)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                if d <= self.tolerance {
                    self.reached |= bit;
                    order.push(i as u8);
                }
            }
            *v = if self.reached & bit != 0 { 1.0 } else { 0.0 };
        }
        if order.len() >= self.goal {
            self.progress.done.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Something that picks the next command from what the arm reports.
pub trait Driver: Send {
    /// Start of an episode.
    fn reset(&mut self, seed: u64);
    /// The command for this tick; `frame` is the observation frame.
    fn act(&mut self, t: &Telemetry, frame: &[f32], out: &mut [f32]) -> Result<()>;
    /// Whether the driver has finished (the demonstrator stops when done).
    fn finished(&self) -> bool {
        false
    }
}

/// A [`Driver`] as the control loop's [`Controller`]: builds the
/// observation frame with the task's [`ObsLayout`] (telemetry plus the
/// task's [`TaskState`]), keeps each frame when recording, and raises the
/// run's stop flag ([`Progress::done`]) once the driver has finished, so the
/// run ends at the next tick.
struct Driven<'a> {
    driver: &'a mut dyn Driver,
    layout: ObsLayout,
    state: TaskState,
    host: Vec<f32>,
    frame: Vec<f32>,
    frames: Option<Vec<Vec<f32>>>,
}

impl Controller for Driven<'_> {
    fn start(&mut self, _handshake: &diffbc_protocol::Handshake) -> Result<(), String> {
        self.state.reset();
        Ok(())
    }

    fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        self.state.read(t, &mut self.host)?;
        self.layout.write(t, &self.host, &mut self.frame);
        self.driver
            .act(t, &self.frame, action)
            .map_err(|e| format!("{e:#}"))?;
        if let Some(frames) = self.frames.as_mut() {
            frames.push(self.frame.clone());
        }
        if self.driver.finished() {
            self.state.progress().done.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Run one episode in-process: the bridge's control loop
/// ([`diffbc_bridge::control::run`], the same tick as on the wire) over the
/// emulated arm stepped in memory ([`StepLink`], physics at 1 kHz device
/// time) on a simulated clock, the driver called at the control rate, its
/// command passed through the safety layer. The episode ends at
/// [`ArmTask::max_seconds`], at a fault (a collision), or when the task's
/// [`TaskState`] reports the goal reached or the driver has finished (then
/// without sending that tick's command). `record` receives every
/// (frame, command) row.
pub fn run_episode(
    task: &ArmTask,
    seed: u64,
    driver: &mut dyn Driver,
    record: Option<&mut Vec<(Vec<f32>, [f32; JOINTS])>>,
) -> Result<EpisodeResult> {
    let mut link = StepLink::new(task.sim_config(seed));
    let layout = task.layout()?;
    let period = Duration::from_secs_f64(1.0 / task.control_hz);
    let ticks = u32::try_from(task.max_ticks()).map_err(|_| {
        crate::TaskError::invalid(format!(
            "{} ticks per episode is too many",
            task.max_ticks()
        ))
    })?;
    let config = LoopConfig {
        rate_hz: task.control_hz,
        // At most `max_ticks` commands: the loop ends at the tick due then.
        duration: Some(period * ticks),
        max_step: task.max_step,
        log_capacity: task.max_ticks() + 1,
        ..LoopConfig::default()
    };
    driver.reset(seed);
    let progress = Arc::new(Progress::default());
    let mut controller = Driven {
        driver,
        host: vec![0.0; layout.host_len()],
        frame: vec![0.0; layout.len()],
        layout,
        state: task.state(progress.clone()),
        frames: record.is_some().then(Vec::new),
    };
    let report = diffbc_bridge::control::run(
        &mut link,
        &mut SimClock::new(),
        &mut controller,
        &config,
        &progress.done,
    );
    let collided = link.arm().fault().is_some();
    if let Err(e) = &report.outcome
        && !collided
    {
        invalid!("{e}");
    }
    let mut result = EpisodeResult {
        order: progress.order(),
        actions: Vec::with_capacity(report.log.len() * JOINTS),
        ticks: report.log.len(),
        collided,
    };
    for c in report.log.iter() {
        result.actions.extend_from_slice(&c.command.targets);
    }
    if let (Some(rows), Some(mut frames)) = (record, controller.frames) {
        // The tick that ended the run observed a frame but sent nothing.
        frames.truncate(report.log.len());
        require!(
            frames.len() == report.log.len(),
            "{} frames observed but {} commands sent",
            frames.len(),
            report.log.len()
        );
        for (frame, c) in frames.into_iter().zip(report.log.iter()) {
            let mut cmd = [0.0f32; JOINTS];
            cmd.copy_from_slice(&c.command.targets[..JOINTS]);
            rows.push((frame, cmd));
        }
    }
    Ok(result)
}

/// Minimum-jerk position profile on [0, 1].
fn min_jerk(u: f32) -> f32 {
    let u = u.clamp(0.0, 1.0);
    u * u * u * (10.0 - 15.0 * u + 6.0 * u * u)
}

/// One planned reach.
#[derive(Debug, Clone)]
struct Reach {
    site: usize,
    side: Side,
    from: [f32; JOINTS],
    to: [f32; JOINTS],
    bow: [f32; JOINTS],
    start: f64,
    duration: f64,
    hesitation: Option<(f64, f64)>,
}

impl Reach {
    /// Commanded point at time `t`.
    fn at(&self, t: f64) -> [f32; JOINTS] {
        let mut e = t - self.start;
        if let Some((at, len)) = self.hesitation {
            let th = at * self.duration;
            if e > th {
                e = (e - len).max(th);
            }
        }
        let s = min_jerk((e / self.duration) as f32);
        let arc = (std::f32::consts::PI * s).sin();
        let mut p = [0.0; JOINTS];
        for j in 0..JOINTS {
            p[j] = self.from[j] + (self.to[j] - self.from[j]) * s + self.bow[j] * arc;
        }
        p
    }

    fn end(&self) -> f64 {
        self.start + self.duration + self.hesitation.map_or(0.0, |h| h.1)
    }
}

#[derive(Debug, Clone)]
enum Phase {
    React { until: f64 },
    Move(Reach),
    Dwell { until: f64, site: usize },
    Done,
}

/// The seeded human-like demonstrator (see the module docs).
#[derive(Debug, Clone)]
pub struct Demonstrator {
    task: ArmTask,
    rng: ChaCha8Rng,
    speed: f32,
    phase: Phase,
    hold: [f32; JOINTS],
    tremor: [f32; JOINTS],
    visited: Vec<usize>,
    tick: usize,
    truth: Vec<TickTruth>,
    /// This episode's operator (an index into [`ArmTask::operators`]).
    operator: Option<usize>,
}

/// Which side of the obstacle a reach passes, seen in the direction of
/// travel in the joint 0–1 plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The obstacle was not in the way.
    Clear,
    /// The path bulges to the left of the straight line (the obstacle on its right).
    Left,
    /// The path bulges to the right (the obstacle on its left).
    Right,
}

/// Within this distance (rad, joints 0–1) of a target, a path is taken to
/// have arrived there, for [`reach_sides`].
const ARRIVED: f32 = 0.25;

/// The side of the obstacle each reach of a path passed, for reaches whose
/// straight line crosses the obstacle (`None` for the others): the path
/// must go around, and the side is where its point nearest the obstacle's
/// centre lies, seen in the direction of travel (the demonstrator's
/// [`Side`]). `path` is points in the joint 0–1 plane — the start, then
/// one per tick (commands or positions) — and `order` the targets reached,
/// in order; a reach ends where the path first comes within 0.25 rad of its
/// target. Works for any driver, so a policy's episodes are judged as the
/// demonstrations are.
pub fn reach_sides(task: &ArmTask, path: &[[f32; 2]], order: &[u8]) -> Vec<Option<Side>> {
    let Some(ob) = task.obstacle() else {
        return vec![None; order.len()];
    };
    let c = ob.center;
    let mut out = Vec::with_capacity(order.len());
    let mut start = 0;
    for &target in order {
        let site = task.site(usize::from(target));
        let Some(end) = (start..path.len())
            .find(|&i| (path[i][0] - site[0]).hypot(path[i][1] - site[1]) < ARRIVED)
        else {
            break;
        };
        let from = path[start];
        let (dx, dy) = (site[0] - from[0], site[1] - from[1]);
        let len2 = (dx * dx + dy * dy).max(1e-9);
        // The chord's point nearest the centre.
        let t = (((c[0] - from[0]) * dx + (c[1] - from[1]) * dy) / len2).clamp(0.0, 1.0);
        let chord = (from[0] + t * dx - c[0]).hypot(from[1] + t * dy - c[1]);
        out.push((chord < ob.radius).then(|| {
            let p = path[start..=end]
                .iter()
                .min_by(|a, b| {
                    let da = (a[0] - c[0]).hypot(a[1] - c[1]);
                    let db = (b[0] - c[0]).hypot(b[1] - c[1]);
                    da.total_cmp(&db)
                })
                .copied()
                .unwrap_or(from);
            if dx * (p[1] - c[1]) - dy * (p[0] - c[0]) > 0.0 {
                Side::Left
            } else {
                Side::Right
            }
        }));
        start = end;
    }
    out
}

/// [`reach_sides`] of an episode run from `seed`: its start pose, then the
/// commands it sent.
pub fn episode_sides(task: &ArmTask, seed: u64, r: &EpisodeResult) -> Vec<Option<Side>> {
    let start = task.start_pose(seed);
    let path: Vec<[f32; 2]> = std::iter::once([start[0], start[1]])
        .chain(r.actions.chunks_exact(JOINTS).map(|q| [q[0], q[1]]))
        .collect();
    reach_sides(task, &path, &r.order)
}

/// What the demonstrator was doing at one tick: ground truth that only the
/// seeded demonstrator knows (a learner never sees it; the modes study
/// scores its unsupervised codes against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickTruth {
    /// The target of the reach under way, or of the next reach while
    /// reacting or dwelling (the last target once no reach follows).
    pub heading: u8,
    /// The side of the obstacle that reach passes.
    pub side: Side,
    /// The episode's operator (index into [`ArmTask::operators`]), or
    /// `u8::MAX` for a task without operators.
    pub operator: u8,
}

impl Demonstrator {
    /// A demonstrator for `task`.
    pub fn new(task: &ArmTask) -> Self {
        Self {
            task: task.clone(),
            rng: ChaCha8Rng::seed_from_u64(0),
            speed: 1.0,
            phase: Phase::Done,
            hold: [0.0; JOINTS],
            tremor: [0.0; JOINTS],
            visited: Vec::new(),
            tick: 0,
            truth: Vec::new(),
            operator: None,
        }
    }

    /// Ground truth of the episode so far, one entry per [`Driver::act`]
    /// call (the last call of a run observed a frame that was not recorded).
    /// Ticks after the last reach head for its target; an episode with no
    /// reach at all has heading `u8::MAX`.
    pub fn truth(&self) -> Vec<TickTruth> {
        let mut out = self.truth.clone();
        let mut last = None;
        for t in &mut out {
            match (t.heading, last) {
                (u8::MAX, Some(h)) => t.heading = h,
                (u8::MAX, None) => {}
                (h, _) => last = Some(h),
            }
        }
        out
    }

    fn uniform(&mut self, r: [f32; 2]) -> f32 {
        if r[1] > r[0] {
            self.rng.random_range(r[0]..r[1])
        } else {
            r[0]
        }
    }

    fn plan(&mut self, from: [f32; JOINTS], now: f64) -> Phase {
        let left: Vec<usize> = (0..self.task.sites)
            .filter(|i| !self.visited.contains(i))
            .collect();
        if self.visited.len() >= self.task.goal || left.is_empty() {
            return Phase::Done;
        }
        let site = left[self.rng.random_range(0..left.len())];
        let to = self.task.site(site);
        let d: Vec<f32> = (0..JOINTS).map(|j| to[j] - from[j]).collect();
        let len = d.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-3);
        // A human bow: a random direction orthogonal to the reach.
        let mut b: Vec<f32> = (0..JOINTS)
            .map(|_| self.rng.sample::<f32, _>(StandardNormal))
            .collect();
        let along = b.iter().zip(&d).map(|(x, y)| x * y).sum::<f32>() / (len * len);
        for j in 0..JOINTS {
            b[j] -= along * d[j];
        }
        let bn = b.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
        let amp = self.task.demonstrator.bow * len * self.rng.sample::<f32, _>(StandardNormal);
        let mut bow = [0.0; JOINTS];
        for j in 0..JOINTS {
            bow[j] = b[j] / bn * amp;
        }
        let mut side = Side::Clear;
        if let Some((detour, s)) = self.detour(&from, &to, &bow) {
            bow = detour;
            side = s;
        }
        let jitter = self.uniform(self.task.demonstrator.speed_jitter);
        // Time follows the length of the bowed path, not of the chord.
        let mut path_len = 0.0f32;
        let mut prev = from;
        for k in 1..=32 {
            let s = k as f32 / 32.0;
            let arc = (std::f32::consts::PI * s).sin();
            let mut p = [0.0; JOINTS];
            for j in 0..JOINTS {
                p[j] = from[j] + (to[j] - from[j]) * s + bow[j] * arc;
            }
            path_len += (0..JOINTS)
                .map(|j| (p[j] - prev[j]).powi(2))
                .sum::<f32>()
                .sqrt();
            prev = p;
        }
        let duration = f64::from(path_len / (self.speed * jitter)).max(0.3);
        let hesitation = (self.rng.random::<f64>() < self.task.demonstrator.hesitate_probability)
            .then(|| {
                let at = self.uniform(self.task.demonstrator.hesitate_at);
                let len = self.uniform(self.task.demonstrator.hesitate_seconds);
                (f64::from(at), f64::from(len))
            });
        Phase::Move(Reach {
            site,
            side,
            from,
            to,
            bow,
            start: now,
            duration,
            hesitation,
        })
    }

    /// When the reach (with its bow) passes the obstacle closer than the
    /// clearance, a bow in the joint 0–1 plane that passes it on one side:
    /// the side needing the smaller detour with `near_side_probability`,
    /// else the other, each with a little extra margin that varies; and
    /// which side of the obstacle that is.
    fn detour(
        &mut self,
        from: &[f32; JOINTS],
        to: &[f32; JOINTS],
        bow: &[f32; JOINTS],
    ) -> Option<([f32; JOINTS], Side)> {
        let ob = self.task.obstacle()?;
        // The clearance, or less where a reach starts or ends closer (the
        // home pose), but never less than a little off the surface.
        let dist = |p: &[f32; JOINTS]| (p[0] - ob.center[0]).hypot(p[1] - ob.center[1]);
        let need = (ob.radius + self.task.clearance)
            .min(dist(from).min(dist(to)) - 0.01)
            .max(ob.radius + 0.05);
        let clear = |bow: &[f32; JOINTS]| {
            (0..=48).all(|k| {
                let s = min_jerk(k as f32 / 48.0);
                let arc = (std::f32::consts::PI * s).sin();
                let x = from[0] + (to[0] - from[0]) * s + bow[0] * arc - ob.center[0];
                let y = from[1] + (to[1] - from[1]) * s + bow[1] * arc - ob.center[1];
                x.hypot(y) >= need
            })
        };
        if clear(bow) {
            // An operator with a habit keeps it even where this reach's
            // random bow would clear the obstacle: only a reach whose
            // straight line clears it is left alone.
            let mut straight = *bow;
            straight[0] = 0.0;
            straight[1] = 0.0;
            if self.operator.is_none() || clear(&straight) {
                return None;
            }
        }
        let (dx, dy) = (to[0] - from[0], to[1] - from[1]);
        let l = dx.hypot(dy).max(1e-6);
        // Unit normal of the reach in the plane, pointing away from the obstacle.
        let (mut nx, mut ny) = (-dy / l, dx / l);
        let (mx, my) = (
            0.5 * (from[0] + to[0]) - ob.center[0],
            0.5 * (from[1] + to[1]) - ob.center[1],
        );
        if nx * mx + ny * my < 0.0 {
            nx = -nx;
            ny = -ny;
        }
        let smallest = |sign: f32| {
            (1..=60).map(|k| 0.05 * k as f32).find(|&a| {
                let mut b = [0.0; JOINTS];
                b[0] = sign * nx * a;
                b[1] = sign * ny * a;
                b[2..].copy_from_slice(&bow[2..]);
                clear(&b)
            })
        };
        let near = smallest(1.0);
        let far = smallest(-1.0);
        // The bow n·a bulges left of the direction of travel when n turns
        // counter-clockwise from it (see `side` below).
        let near_is_left = dx * ny - dy * nx > 0.0;
        let u = self.rng.random::<f64>();
        let near_side = match self.operator.and_then(|o| self.task.operators.get(o)) {
            Some(op) => (u < op.left) == near_is_left,
            None => u < self.task.near_side_probability,
        };
        let (sign, a) = match (near, far) {
            (Some(a), Some(b)) => {
                if near_side {
                    (1.0, a)
                } else {
                    (-1.0, b)
                }
            }
            (Some(a), None) => (1.0, a),
            (None, Some(b)) => (-1.0, b),
            (None, None) => return None,
        };
        let extra = self.uniform([0.0, 0.1]);
        let mut out = *bow;
        out[0] = sign * nx * (a + extra);
        out[1] = sign * ny * (a + extra);
        // The path bulges to the left of the direction of travel when the
        // bow turns counter-clockwise from it: the obstacle is on its right.
        let side = if dx * out[1] - dy * out[0] > 0.0 {
            Side::Left
        } else {
            Side::Right
        };
        Some((out, side))
    }

    /// Log this tick's truth. While reacting or dwelling the heading is not
    /// known yet: a placeholder that the next reach fills in (see
    /// [`Demonstrator::truth`]), the dwell's own target if none follows.
    fn log_truth(&mut self) {
        let operator = self.operator.map_or(u8::MAX, |o| o as u8);
        let current = match &self.phase {
            Phase::Move(r) => Some(TickTruth {
                heading: r.site as u8,
                side: r.side,
                operator,
            }),
            _ => None,
        };
        match current {
            Some(t) => {
                for past in self.truth.iter_mut().rev() {
                    if past.heading != u8::MAX {
                        break;
                    }
                    *past = t;
                }
                self.truth.push(t);
            }
            None => self.truth.push(TickTruth {
                heading: u8::MAX,
                side: Side::Clear,
                operator,
            }),
        }
    }

    /// Advance the correlated tremor by `dt`.
    fn tremor_step(&mut self, dt: f32) {
        let c = &self.task.demonstrator;
        let (theta, sigma, rho) = (
            c.tremor_rate,
            c.tremor,
            c.tremor_correlation.clamp(0.0, 1.0),
        );
        let common: f32 = self.rng.sample(StandardNormal);
        let scale = sigma * (2.0 * theta * dt).sqrt();
        for j in 0..JOINTS {
            let own: f32 = self.rng.sample(StandardNormal);
            let n = rho.sqrt() * common + (1.0 - rho).sqrt() * own;
            self.tremor[j] += -theta * self.tremor[j] * dt + scale * n;
        }
    }
}

impl Driver for Demonstrator {
    fn reset(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
        self.speed = self.uniform(self.task.demonstrator.speed);
        let react = f64::from(self.uniform(self.task.demonstrator.react_seconds));
        self.phase = Phase::React { until: react };
        self.visited.clear();
        self.tremor = [0.0; JOINTS];
        self.tick = 0;
        self.hold = [f32::NAN; JOINTS];
        self.truth.clear();
        // Drawn last, so a task without operators keeps its episodes.
        self.operator = (!self.task.operators.is_empty())
            .then(|| self.rng.random_range(0..self.task.operators.len()));
    }

    fn act(&mut self, t: &Telemetry, frame: &[f32], out: &mut [f32]) -> Result<()> {
        let dt = 1.0 / self.task.control_hz;
        let now = self.tick as f64 * dt;
        self.tick += 1;
        if self.hold[0].is_nan() {
            for j in 0..JOINTS {
                self.hold[j] = t.positions[j];
            }
        }
        self.tremor_step(dt as f32);
        // The task's done flags follow positions and velocities in the frame.
        let reached = |i: usize| frame[2 * JOINTS + i] > 0.5;
        // Phase transitions (a human looks at the target's light).
        loop {
            let next = match &self.phase {
                Phase::React { until } if now >= *until => Some(self.plan(self.hold, now)),
                Phase::Move(r) if now >= r.end() && reached(r.site) => {
                    let site = r.site;
                    self.hold = r.to;
                    self.visited.push(site);
                    let dwell = f64::from(self.uniform(self.task.demonstrator.dwell_seconds));
                    Some(Phase::Dwell {
                        until: now + dwell,
                        site,
                    })
                }
                Phase::Dwell { until, .. } if now >= *until => Some(self.plan(self.hold, now)),
                _ => None,
            };
            match next {
                Some(p) => self.phase = p,
                None => break,
            }
        }
        self.log_truth();
        let base = match &self.phase {
            Phase::Move(r) => r.at(now),
            Phase::Dwell { site, .. } => self.task.site(*site),
            _ => self.hold,
        };
        for j in 0..JOINTS {
            out[j] = base[j] + self.tremor[j];
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffbc_protocol::Joints;

    fn at(q: [f32; JOINTS]) -> Telemetry {
        Telemetry {
            seq: 1,
            device_time_us: 0,
            last_command_seq: 0,
            positions: Joints::from_slice(&q).expect("4 joints"),
            velocities: Joints::from_slice(&[0.0; JOINTS]).expect("4 joints"),
            status: 0,
            link: Default::default(),
        }
    }

    #[test]
    fn task_state_comes_from_measured_positions_and_ends_the_run_at_the_goal() {
        let task = ArmTask {
            goal: 2,
            ..ArmTask::default()
        };
        let progress = Arc::new(Progress::default());
        let mut state = task.state(progress.clone());
        assert_eq!(state.keys()[4], "task.done[4]");
        state.reset();
        let mut flags = vec![0.0; task.sites];
        let mut near = task.site(3);
        near[2] += 0.9 * task.tolerance;
        state.read(&at(near), &mut flags).expect("read");
        assert_eq!(flags, [0.0, 0.0, 0.0, 1.0, 0.0], "within tolerance");
        // Just outside the tolerance on one joint: not reached; leaving a
        // reached target keeps it done.
        let mut far = task.site(1);
        far[0] += 1.1 * task.tolerance;
        state.read(&at(far), &mut flags).expect("read");
        assert_eq!(flags, [0.0, 0.0, 0.0, 1.0, 0.0]);
        assert!(!progress.done.load(Ordering::Relaxed));
        state.read(&at(task.site(1)), &mut flags).expect("read");
        assert_eq!(flags, [0.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(progress.order(), [3, 1]);
        assert!(progress.done.load(Ordering::Relaxed), "goal of 2 reached");
        // A new run starts from nothing.
        state.reset();
        state.read(&at([0.0; JOINTS]), &mut flags).expect("read");
        assert_eq!(flags, [0.0; 5]);
        assert!(progress.order().is_empty() && !progress.done.load(Ordering::Relaxed));
    }
}
