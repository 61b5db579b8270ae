//! Teleoperation recording (`diffbc record`): a person moves a leader arm
//! (torque off); each tick the follower is commanded to the leader's
//! position through the control loop — the same safety layer, statistics
//! and stops as a policy's run — and the tick is recorded: observation =
//! the follower's measured positions then velocities, action = the leader's
//! positions (what the person asked for, before the safety layer), as a
//! policy trained on it will be asked to produce.

use crate::link::{ServoArm, ServoLink};
use crate::{Bus, BusError};
use diffbc_bridge::{Controller, LoopConfig, WallClock};
use diffbc_protocol::{Handshake, Telemetry};
use std::sync::atomic::AtomicBool;

/// One recorded episode, row-major: `observations` has `2 × joints`
/// values per tick (positions, then velocities), `actions` `joints`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Episode {
    /// Follower positions (rad) then velocities (rad/s), per tick.
    pub observations: Vec<f32>,
    /// Leader positions (rad), per tick.
    pub actions: Vec<f32>,
}

impl Episode {
    /// Ticks recorded.
    pub fn ticks(&self, joints: usize) -> usize {
        self.actions.len() / joints.max(1)
    }
}

/// What to do after an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep it and record the next.
    Keep,
    /// Discard it and record it again.
    Redo,
    /// Keep it and stop.
    Stop,
}

/// The person recording: asked before and after each episode.
pub trait Director {
    /// Before episode `index` (0-based): return once ready to start.
    fn before(&mut self, index: usize) -> std::io::Result<()>;
    /// After episode `index` (`ticks` recorded).
    fn after(&mut self, index: usize, ticks: usize) -> std::io::Result<Next>;
}

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The arms do not match.
    #[error("the leader has {leader} joints, the follower {follower}")]
    Joints {
        /// Leader joints.
        leader: usize,
        /// Follower joints.
        follower: usize,
    },
    /// A bus failed between episodes.
    #[error("{0}")]
    Bus(#[from] BusError),
    /// The person could not be asked.
    #[error("{0}")]
    Director(#[from] std::io::Error),
    /// An episode's run ended with an error (the follower's torque is off).
    #[error("episode {index}: {message}")]
    Run {
        /// The episode.
        index: usize,
        /// The loop's error.
        message: String,
    },
}

/// The loop's controller during teleoperation: reads the leader, records.
struct Mirror<'a, L: Bus> {
    leader: &'a mut ServoArm<L>,
    episode: Episode,
    joints: usize,
}

impl<L: Bus> Controller for Mirror<'_, L> {
    fn start(&mut self, h: &Handshake) -> Result<(), String> {
        if h.joints.len() != self.leader.len() {
            return Err(format!(
                "the leader has {} joints, the follower {}",
                self.leader.len(),
                h.joints.len()
            ));
        }
        self.joints = h.joints.len();
        Ok(())
    }

    fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        self.leader.read().map_err(|e| format!("leader: {e}"))?;
        self.leader.positions(action);
        self.episode.observations.extend_from_slice(&t.positions);
        self.episode.observations.extend_from_slice(&t.velocities);
        self.episode.actions.extend_from_slice(action);
        Ok(())
    }
}

/// Record up to `episodes` episodes of `seconds` each at `config.rate_hz`
/// (the loop's settings otherwise), the follower mirroring the leader.
/// Between episodes the follower's torque is off (every run ends with a
/// stop); it holds again where it is when the next starts. `stop` (Ctrl-C)
/// ends the recording: the episode in progress is discarded, the ones kept
/// are returned.
pub fn record<F: Bus, L: Bus>(
    follower: &mut ServoLink<F>,
    leader: &mut ServoArm<L>,
    config: &LoopConfig,
    episodes: usize,
    director: &mut dyn Director,
    stop: &AtomicBool,
) -> Result<Vec<Episode>, RecordError> {
    if leader.len() != follower.arm().len() {
        return Err(RecordError::Joints {
            leader: leader.len(),
            follower: follower.arm().len(),
        });
    }
    leader.set_torque(false)?;
    let joints = leader.len();
    let per_episode = config
        .duration
        .map_or(0, |d| (d.as_secs_f64() * config.rate_hz) as usize + 8);
    let mut kept = Vec::new();
    while kept.len() < episodes && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let index = kept.len();
        director.before(index)?;
        follower.rearm()?;
        let mut mirror = Mirror {
            leader,
            episode: Episode {
                observations: Vec::with_capacity(per_episode * 2 * joints),
                actions: Vec::with_capacity(per_episode * joints),
            },
            joints,
        };
        let report = diffbc_bridge::control::run(
            follower,
            &mut WallClock::start(),
            &mut mirror,
            config,
            stop,
        );
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("recording stopped: episode {index} discarded");
            break;
        }
        if let Err(message) = report.outcome {
            return Err(RecordError::Run { index, message });
        }
        let episode = mirror.episode;
        let ticks = episode.ticks(mirror.joints);
        match director.after(index, ticks)? {
            Next::Keep => kept.push(episode),
            Next::Redo => {}
            Next::Stop => {
                kept.push(episode);
                break;
            }
        }
    }
    Ok(kept)
}
