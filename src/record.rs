//! `diffbc record`: teleoperation demonstrations from a leader arm to a
//! follower arm ([`diffbc_servo::teleop`]), saved as a `.demos` file that
//! `diffbc train --task arm --data` reads unchanged.

use anyhow::{Context, Result, bail};
use clap::Args;
use diffbc_servo::arm::ArmPreset;
use diffbc_servo::calibration::Calibration;
use diffbc_servo::teleop::{Director, Next};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The leader's preset (so101-leader, koch-leader, …).
    #[arg(long)]
    pub leader: String,
    /// The leader's bus port.
    #[arg(long)]
    pub leader_port: String,
    /// The leader's calibration file.
    #[arg(long)]
    pub leader_calibration: PathBuf,
    /// The follower's preset (so101-follower, koch-follower, …).
    #[arg(long)]
    pub follower: String,
    /// The follower's bus port.
    #[arg(long)]
    pub follower_port: String,
    /// The follower's calibration file.
    #[arg(long)]
    pub follower_calibration: PathBuf,
    /// Baud rate of both buses.
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
    /// Control and recording rate (Hz).
    #[arg(long, default_value = "30", value_parser = diffbc_bridge::checked::flag::rate_hz, allow_hyphen_values = true)]
    pub rate: f64,
    /// Length of each episode (seconds).
    #[arg(long, default_value = "10", value_parser = diffbc_bridge::checked::flag::seconds, allow_hyphen_values = true)]
    pub seconds: Duration,
    /// Episodes to record.
    #[arg(long, default_value_t = 10)]
    pub episodes: usize,
    /// Largest change of a follower target per tick from its measured
    /// position (rad): the safety layer between the leader and the follower.
    #[arg(long, default_value = "0.2", value_parser = diffbc_bridge::checked::flag::max_step, allow_hyphen_values = true)]
    pub max_step: f32,
    /// The `.demos` file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// The person at the terminal: Enter starts an episode; after one, Enter
/// keeps it, `r` records it again, `q` keeps it and stops.
struct Terminal {
    episodes: usize,
    lines: std::io::Lines<std::io::StdinLock<'static>>,
}

impl Terminal {
    fn line(&mut self) -> std::io::Result<String> {
        match self.lines.next() {
            Some(l) => l,
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "stdin closed",
            )),
        }
    }
}

impl Director for Terminal {
    fn before(&mut self, index: usize) -> std::io::Result<()> {
        eprintln!(
            "episode {} of {}: press Enter to start (move the leader; Ctrl-C stops)",
            index + 1,
            self.episodes
        );
        self.line().map(|_| ())
    }

    fn after(&mut self, index: usize, ticks: usize) -> std::io::Result<Next> {
        eprintln!(
            "episode {} recorded ({ticks} ticks): Enter keeps it, r + Enter records it again, q + Enter keeps it and stops",
            index + 1
        );
        Ok(match self.line()?.trim() {
            "r" => Next::Redo,
            "q" => Next::Stop,
            _ => Next::Keep,
        })
    }
}

pub fn record(a: RecordArgs) -> Result<()> {
    if a.episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    let stop = diffbc_deploy::cli::interrupt_flag()?;
    let leader_arm = ArmPreset::named(&a.leader).map_err(anyhow::Error::msg)?;
    let follower_arm = ArmPreset::named(&a.follower).map_err(anyhow::Error::msg)?;
    let timeout = Duration::from_millis(20);
    let leader_cal = Calibration::load(&a.leader_calibration)?;
    let follower_cal = Calibration::load(&a.follower_calibration)?;
    let mut leader = diffbc_servo::ServoArm::open(
        diffbc_servo::open_bus(leader_arm.family, &a.leader_port, a.baud, timeout)?,
        &a.leader_port,
        leader_arm,
        &leader_cal,
        &a.leader_calibration.display().to_string(),
    )?;
    let mut follower = diffbc_servo::ServoLink::connect(
        diffbc_servo::open_bus(follower_arm.family, &a.follower_port, a.baud, timeout)?,
        &a.follower_port,
        follower_arm,
        &follower_cal,
        &a.follower_calibration.display().to_string(),
        500,
    )?;
    let config = diffbc_bridge::LoopConfig {
        rate_hz: a.rate,
        duration: Some(a.seconds),
        max_step: a.max_step,
        velocity_limits: true,
        ..Default::default()
    };
    let mut director = Terminal {
        episodes: a.episodes,
        lines: std::io::stdin().lock().lines(),
    };
    let kept = diffbc_servo::teleop::record(
        &mut follower,
        &mut leader,
        &config,
        a.episodes,
        &mut director,
        &stop,
    )?;
    drop(follower);
    drop(leader);
    if kept.is_empty() {
        bail!(
            "no episode recorded: nothing written to {}",
            a.out.display()
        );
    }
    let joints = follower_arm.motors.len();
    let mut demos = diffbc_train::episodes::Episodes::new(2 * joints, joints);
    demos.obs_names = follower_arm
        .motors
        .iter()
        .map(|m| format!("{}.pos", m.name))
        .chain(
            follower_arm
                .motors
                .iter()
                .map(|m| format!("{}.vel", m.name)),
        )
        .collect();
    demos.action_names = leader_arm
        .motors
        .iter()
        .map(|m| format!("{}.pos", m.name))
        .collect();
    let mut units = vec!["rad".to_string(); joints];
    units.extend(std::iter::repeat_n("rad/s".to_string(), joints));
    let mut sources: Vec<String> = (0..joints)
        .map(|j| format!("joint.position[{j}]"))
        .collect();
    sources.extend((0..joints).map(|j| format!("joint.velocity[{j}]")));
    demos.hints = diffbc_train::interface::ChannelHints {
        obs_units: units,
        obs_sources: sources,
        action_units: vec!["rad".into(); joints],
        action_targets: (0..joints)
            .map(|j| format!("joint.position[{j}]"))
            .collect(),
        control_hz: Some(a.rate),
    };
    for e in &kept {
        demos.push_episode(&e.observations, &e.actions)?;
    }
    demos.source = serde_json::json!({
        "generator": "diffbc record",
        "leader": leader_arm.name,
        "follower": follower_arm.name,
        "rate_hz": a.rate,
        "episodes": kept.len(),
    });
    demos
        .save(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{} episodes ({} ticks) written to {}",
        kept.len(),
        kept.iter().map(|e| e.ticks(joints)).sum::<usize>(),
        a.out.display()
    );
    Ok(())
}
