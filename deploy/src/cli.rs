//! The deploy commands — `run`, `bench`, `bench-bridge`, `sim-arm` — and the
//! sampler options they share: one implementation, linked by the full
//! `diffbc` binary and by the burn-free `diffbc-deploy`.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use diffbc_runtime::SamplerConfig;
use std::path::PathBuf;

pub use diffbc_runtime::DEFAULT_KDE_BANDWIDTH;

#[derive(Args, Debug)]
pub struct SimArmArgs {
    /// The arm task's world (obstacle, start pose from --seed); `none` = the plain arm.
    #[arg(long, value_enum, default_value = "arm")]
    pub task: SimTaskArg,
    /// Episode seed (start pose).
    #[arg(long, default_value_t = diffbc_tasks::arm::eval::EVAL_SEED_BASE)]
    pub seed: u64,
    /// Device seconds per wall-clock second (a host must scale its rate by the same factor; at most 1000).
    #[arg(long, default_value = "1", value_parser = diffbc_bridge::checked::flag::time_scale, allow_hyphen_values = true)]
    pub time_scale: f64,
    /// Stable path for hosts to open (a symlink to the pty slave). Must not
    /// exist, or be a symlink into /dev (a stale link); anything else is refused.
    #[arg(long, default_value = "/tmp/diffbc-arm")]
    pub link: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = diffbc_bridge::checked::flag::seconds, allow_hyphen_values = true)]
    pub seconds: Option<std::time::Duration>,
    /// Emulate a servo arm instead (so101-follower, koch-leader, …): its
    /// servos on a pty speaking the real Feetech or Dynamixel protocol, at
    /// mid-turn, torque off; prints the pty's path (`--link` is not used).
    #[arg(long)]
    pub servos: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Exported policy folder.
    pub model: PathBuf,
    /// Serial port (e.g. /dev/ttyACM0, or the path `diffbc sim-arm` printed).
    #[arg(long)]
    pub port: String,
    /// Baud rate (ignored by pseudo-terminals).
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
    /// Control rate (Hz, 1–500); default: the rate the policy was trained at
    /// (manifest `deployment.control_hz`). Another rate needs `--force`.
    #[arg(long, value_parser = diffbc_bridge::checked::flag::rate_hz, allow_hyphen_values = true)]
    pub rate: Option<f64>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = diffbc_bridge::checked::flag::seconds, allow_hyphen_values = true)]
    pub seconds: Option<std::time::Duration>,
    /// Largest change of a joint target per tick relative to the measured
    /// position (rad, > 0); default: the largest the demonstrations show
    /// (manifest `deployment.max_step`), else 0.2. A tighter bound than the
    /// demonstrations' clips moves the policy learned and needs `--force`.
    #[arg(long, value_parser = diffbc_bridge::checked::flag::max_step, allow_hyphen_values = true)]
    pub max_step: Option<f32>,
    /// Run at a rate or step bound that contradicts the manifest.
    #[arg(long)]
    pub force: bool,
    /// Engine (native allocates nothing at steady state; tract, tract-cuda, ort-cpu, ort-cuda[:N], …).
    #[arg(long, default_value = "native")]
    pub engine: diffbc_runtime::EngineChoice,
    /// Noise seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Task whose host-side state the policy observes: `arm` supplies the arm
    /// task's `task.done[i]` channels (computed from the measured joint
    /// positions); `none` = the policy observes the arm only. Default: the
    /// manifest's `provenance.task` when the policy observes that task's
    /// state, else `none`.
    #[arg(long, value_enum)]
    pub task: Option<SimTaskArg>,
    /// Also write the run's figures (the device's own count of the commands
    /// included) as one JSON record here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Deployment settings (JSON: `LoopSettings`'s fields, all optional):
    /// timeouts, the controller's deadline, reconnect back-off, the log's
    /// size, velocity limits. Flags below override the file.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// No telemetry for this long (ms): stop the arm.
    #[arg(long)]
    pub telemetry_timeout_ms: Option<u64>,
    /// Fraction of the period the policy may take before the tick counts as
    /// missed (and the last safe command is held), in (0, 1).
    #[arg(long)]
    pub deadline_fraction: Option<f64>,
    /// A live status line on stderr once a second (ticks, rate, misses,
    /// clamps, refusals, worst jitter); default: when stderr is a terminal.
    #[arg(long)]
    pub status: bool,
    /// A servo-bus arm instead of a diffbc-protocol device: the preset
    /// (so101-follower, so100-follower, koch-follower, …); needs
    /// `--calibration`.
    #[arg(long, requires = "calibration")]
    pub arm: Option<String>,
    /// The arm's calibration file (`diffbc calibrate` writes it; a LeRobot
    /// calibration file of the same arm works as it is).
    #[arg(long, requires = "arm")]
    pub calibration: Option<PathBuf>,
    /// Steer a policy trained with modes (`diffbc modes --steer`).
    #[command(flatten)]
    pub steering: SteeringArgs,
    /// Sampler (default: the manifest's).
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// Steering of a policy trained with `mode[k]` channels: modes as `K`,
/// `K,J,…` (a set: one of them) and `:WEIGHT` (weight 1 = condition on it;
/// more pushes further).
#[derive(Args, Debug, Default, Clone)]
pub struct SteeringArgs {
    /// Act like mode K (`K` or `K:WEIGHT`, default weight 1), or like one of
    /// a set of modes (`K,J:WEIGHT`; policies trained with mode sets).
    #[arg(long = "mode", value_parser = parse_mode)]
    pub towards: Option<(Vec<usize>, f32)>,
    /// Stay away from mode K (`K`, `K:WEIGHT`, `K,J:WEIGHT`); repeat for several.
    #[arg(long = "avoid-mode", value_parser = parse_mode)]
    pub away: Vec<(Vec<usize>, f32)>,
    /// How to stay away: `exclusion` conditions on every other mode (the
    /// multi-hot complement; policies trained with mode sets, their
    /// default), `guidance` pushes the sampler away from the mode's noise
    /// prediction (negative guidance; the default, and only way, for
    /// policies trained on one-hot modes). With exclusion the weight is
    /// `--mode`'s, else the largest `--avoid-mode` weight.
    #[arg(long = "avoid-by", value_enum, requires = "away")]
    pub avoid_by: Option<AvoidBy>,
}

/// How `--avoid-mode` keeps a policy away from a mode.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvoidBy {
    /// Condition on the other modes (a set).
    Exclusion,
    /// Negative guidance: ε₀ − w (ε_j − ε₀).
    Guidance,
}

/// `K`, `K,J,…`, each optionally `:WEIGHT`, a finite weight ≥ 0.
fn parse_mode(s: &str) -> Result<(Vec<usize>, f32), String> {
    let (ks, w) = s.split_once(':').unwrap_or((s, "1"));
    let ks = ks
        .split(',')
        .map(|k| {
            k.trim().parse::<usize>().map_err(|_| {
                format!(
                    "{s:?}: a mode must be a number K (as in mode[K]), several separated by ','"
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let w = w
        .parse::<f32>()
        .ok()
        .filter(|w| w.is_finite() && *w >= 0.0)
        .ok_or_else(|| format!("{s:?}: the weight after ':' must be a number ≥ 0"))?;
    Ok((ks, w))
}

fn mode_list(ks: &[usize]) -> String {
    ks.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl SteeringArgs {
    /// How `--avoid-mode` works for a policy whose modes are read as
    /// `input`: as asked, else exclusion for set policies and guidance for
    /// one-hot ones.
    fn avoid_by(&self, input: diffbc_runtime::manifest::ModeInput) -> AvoidBy {
        self.avoid_by.unwrap_or(match input {
            diffbc_runtime::manifest::ModeInput::Set => AvoidBy::Exclusion,
            diffbc_runtime::manifest::ModeInput::OneHot => AvoidBy::Guidance,
        })
    }

    /// The flags as they act on a policy whose modes are read as `input`:
    /// "towards mode 0 (w = 1), away from mode 2 (w = 1) by exclusion".
    pub fn label(&self, input: diffbc_runtime::manifest::ModeInput) -> String {
        let by = match self.avoid_by(input) {
            AvoidBy::Exclusion => " by exclusion",
            AvoidBy::Guidance => " by guidance",
        };
        self.towards
            .iter()
            .map(|(k, w)| format!("towards mode {} (w = {w})", mode_list(k)))
            .chain(
                self.away
                    .iter()
                    .map(|(k, w)| format!("away from mode {} (w = {w}){by}", mode_list(k))),
            )
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The steering for a policy with `modes` mode channels read as `input`
    /// (`None` when no flag was given). A mode past the policy's, a `--mode`
    /// set or an exclusion for a policy trained on one-hot modes (an
    /// `--avoid-mode` set is avoided mode by mode there), or any flag for a
    /// policy without modes, is an error naming what the policy has.
    pub fn steering(
        &self,
        modes: usize,
        input: diffbc_runtime::manifest::ModeInput,
    ) -> Result<Option<diffbc_runtime::Steering>> {
        use diffbc_runtime::Steering;
        use diffbc_runtime::manifest::ModeInput;
        if self.towards.is_none() && self.away.is_empty() {
            return Ok(None);
        }
        if modes == 0 {
            bail!(
                "--mode / --avoid-mode: this policy has no mode[k] observation channels (train one with `diffbc modes --steer`)"
            );
        }
        let sets = input == ModeInput::Set;
        let check = |ks: &[usize], flag: &str| -> Result<()> {
            if let Some(k) = ks.iter().find(|&&k| k >= modes) {
                bail!(
                    "mode {k}: this policy has modes 0..{modes} (mode[0] to mode[{}])",
                    modes - 1
                );
            }
            if ks.len() > 1 && !sets && flag == "--mode" {
                bail!(
                    "--mode {}: this policy was trained on one mode at a time (conventions.mode_input one_hot); a set of modes needs a policy trained with mode sets (`diffbc modes --steer --mode-sets`)",
                    mode_list(ks)
                );
            }
            Ok(())
        };
        if let Some((ks, _)) = &self.towards {
            check(ks, "--mode")?;
        }
        for (ks, _) in &self.away {
            check(ks, "--avoid-mode")?;
        }
        if self.avoid_by(input) == AvoidBy::Exclusion && !self.away.is_empty() {
            if !sets {
                bail!(
                    "--avoid-by exclusion: this policy was trained on one mode at a time (conventions.mode_input one_hot); use --avoid-by guidance, or train with mode sets (`diffbc modes --steer --mode-sets`)"
                );
            }
            let avoid: Vec<usize> = self.away.iter().flat_map(|(k, _)| k.clone()).collect();
            let (from, weight) = match &self.towards {
                Some((ks, w)) => (ks.clone(), *w),
                None => (
                    (0..modes).collect(),
                    self.away.iter().map(|(_, w)| *w).fold(0.0, f32::max),
                ),
            };
            let rest: Vec<usize> = from.into_iter().filter(|k| !avoid.contains(k)).collect();
            if rest.is_empty() {
                bail!(
                    "--avoid-mode {}: no mode is left to act like",
                    mode_list(&avoid)
                );
            }
            return Ok(Some(Steering::towards_set(modes, &rest, weight)));
        }
        let set = |ks: &[usize]| Steering::towards_set(modes, ks, 1.0).towards;
        let (towards, weight) = match &self.towards {
            Some((ks, w)) => (set(ks), *w),
            None => (Vec::new(), 1.0),
        };
        // Away by guidance: from a set as one input where the policy was
        // trained on sets, else from each of its modes.
        let away = self
            .away
            .iter()
            .flat_map(|(ks, w)| {
                if sets {
                    vec![(set(ks), *w)]
                } else {
                    ks.iter().map(|&k| (set(&[k]), *w)).collect()
                }
            })
            .collect();
        Ok(Some(Steering {
            towards,
            weight,
            away,
        }))
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Exported policy folder, e.g. models/bench-sieve.
    pub model: PathBuf,
    /// Engines to measure (tract, tract-cuda, native, ort-cpu, ort-cuda[:N], ort-tensorrt[:N]);
    /// repeat for several. Default: native, tract, and ort-cpu when built with `--features ort`.
    #[arg(long = "engine")]
    pub engines: Vec<diffbc_runtime::EngineChoice>,
    /// Thread counts; repeat for several. Default: 1 and all cores.
    #[arg(long = "threads")]
    pub threads: Vec<usize>,
    /// Timed seconds per row.
    #[arg(long, default_value = "1", value_parser = diffbc_bridge::checked::flag::seconds, allow_hyphen_values = true)]
    pub seconds: std::time::Duration,
    /// Fewest timed actions per row.
    #[arg(long, default_value_t = 20)]
    pub min_iterations: usize,
    /// Also write the table as JSON records here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Weight formats to measure; repeat for several. Default: every format
    /// (f32, f16, int8) for an f32 folder — the reduced ones written from its
    /// graphs into a temporary folder — and the folder's own format otherwise.
    #[arg(long = "weights", value_enum)]
    pub weights: Vec<WeightsArg>,
    /// Samplers (default: DDPM, Diffusion-X, KDE, DDIM).
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// How the exported graphs store their matrix weights.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsArg {
    /// 32-bit floats (the trained values).
    F32,
    /// Half precision, f32 accumulation.
    F16,
    /// Symmetric int8 with one f32 scale per output channel, f32 accumulation.
    Int8,
}

impl From<WeightsArg> for diffbc_runtime::WeightFormat {
    fn from(w: WeightsArg) -> Self {
        match w {
            WeightsArg::F32 => Self::F32,
            WeightsArg::F16 => Self::F16,
            WeightsArg::Int8 => Self::Int8,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimTaskArg {
    /// The arm task: five targets around an obstacle.
    Arm,
    /// The plain arm: no obstacle, start at 0.
    None,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKindArg {
    /// Plain DDPM over T steps.
    Ddpm,
    /// DDPM then M extra noiseless steps at τ = 1.
    DiffusionX,
    /// N candidates, keep the densest under a Gaussian KDE.
    Kde,
    /// Deterministic DDIM over S steps.
    Ddim,
}

#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    /// Sampler(s) to use; repeat for several.
    #[arg(long = "sampler", value_enum)]
    pub samplers: Vec<SamplerKindArg>,
    /// Diffusion-X extra steps M (default 8; on the arm task 2, plus an M = 8 row).
    #[arg(long)]
    pub extra_steps: Option<usize>,
    /// KDE candidates N (default 50; 10 on the arm task, where KDE runs every control tick).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// KDE bandwidth (normalised action units).
    #[arg(long, default_value_t = DEFAULT_KDE_BANDWIDTH)]
    pub bandwidth: f32,
    /// DDIM steps S.
    #[arg(long, default_value_t = 10)]
    pub ddim_steps: usize,
    /// Diffusion-X steps after DDIM (0 = plain DDIM).
    #[arg(long, default_value_t = 0)]
    pub ddim_extra_steps: usize,
    /// Classifier-free guidance weight w.
    #[arg(long, default_value_t = 0.0)]
    pub guidance: f32,
}

impl SamplerArgs {
    pub fn configs(&self, default: &[SamplerKindArg]) -> Vec<SamplerConfig> {
        let candidates = self.candidates.unwrap_or(50);
        let kinds = if self.samplers.is_empty() {
            default
        } else {
            &self.samplers
        };
        kinds
            .iter()
            .map(|k| {
                match k {
                    SamplerKindArg::Ddpm => SamplerConfig::ddpm(),
                    SamplerKindArg::DiffusionX => {
                        SamplerConfig::diffusion_x(self.extra_steps.unwrap_or(8))
                    }
                    SamplerKindArg::Kde => SamplerConfig::kde(candidates, self.bandwidth),
                    SamplerKindArg::Ddim => SamplerConfig {
                        extra_steps: self.ddim_extra_steps,
                        ..SamplerConfig::ddim(self.ddim_steps)
                    },
                }
                .with_guidance(self.guidance)
            })
            .collect()
    }
}

/// A flag set by Ctrl-C (SIGINT) or SIGTERM.
pub fn interrupt_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("installing the Ctrl-C handler")?;
    }
    Ok(flag)
}

pub fn sim_arm(a: SimArmArgs) -> Result<()> {
    use std::sync::atomic::Ordering;
    let stop = interrupt_flag()?;
    if let Some(name) = &a.servos {
        return sim_servo_arm(name, a.seconds, &stop);
    }
    let mut config = match a.task {
        SimTaskArg::Arm => diffbc_tasks::arm::ArmTask::default().sim_config(a.seed),
        SimTaskArg::None => diffbc_emulator::SimConfig::default_arm(),
    };
    config.time_scale = a.time_scale;
    let sim = diffbc_emulator::spawn_pty(config.clone(), &a.link)
        .with_context(|| format!("opening a pseudo-terminal at {}", a.link.display()))?;
    println!("{}", sim.path.display());
    tracing::info!(
        joints = config.joints(),
        obstacles = config.obstacles.len(),
        "emulated arm ready at {} (Ctrl-C to stop)",
        sim.path.display()
    );
    let start = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) && a.seconds.is_none_or(|s| start.elapsed() < s) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let received = sim.shared.commands_total();
    let faults = sim
        .shared
        .faults
        .lock()
        .map(|f| {
            f.iter()
                .map(|f| format!("{:?}", f.code))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    sim.shutdown();
    println!("commands received: {received}; faults: {faults:?}");
    Ok(())
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// The arm preset (so101-follower, so101-leader, so100-…, koch-follower, koch-leader).
    #[arg(long)]
    pub arm: String,
    /// The servo bus's serial port (the USB adapter: /dev/ttyACM0, /dev/ttyUSB0).
    #[arg(long)]
    pub port: String,
    /// Baud rate of the bus.
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
    /// Where to write the calibration (JSON, LeRobot's fields); default
    /// `calibration/<arm>/<id>.json`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The arm's name, for the default file name (one file per physical arm).
    #[arg(long, default_value = "default")]
    pub id: String,
}

/// A person at a terminal: prompts on stderr, Enter on stdin.
struct Terminal {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    waiting: bool,
    shown: std::time::Instant,
}

impl diffbc_servo::calibrate::Operator for Terminal {
    fn ready(&mut self, message: &str) -> std::io::Result<()> {
        eprintln!("{message}");
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "stdin closed before Enter",
            ));
        }
        Ok(())
    }

    fn say(&mut self, message: &str) {
        eprintln!("{message}");
    }

    fn sweeping(&mut self, low: &[i32], high: &[i32]) -> bool {
        use std::sync::atomic::Ordering;
        if !self.waiting {
            // Enter ends the sweep: read it on its own thread.
            self.waiting = true;
            let done = self.done.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                done.store(true, Ordering::Relaxed);
            });
        }
        if self.shown.elapsed() > std::time::Duration::from_millis(500) {
            self.shown = std::time::Instant::now();
            let ranges: Vec<String> = low
                .iter()
                .zip(high)
                .map(|(l, h)| format!("{l}..{h}"))
                .collect();
            eprint!("\rranges (ticks): {}   ", ranges.join("  "));
        }
        !self.done.load(Ordering::Relaxed)
    }
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    let arm = diffbc_servo::arm::ArmPreset::named(&a.arm).map_err(anyhow::Error::msg)?;
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("calibration")
            .join(arm.name)
            .join(format!("{}.json", a.id))
    });
    let mut bus = diffbc_servo::open_bus(
        arm.family,
        &a.port,
        a.baud,
        std::time::Duration::from_millis(50),
    )?;
    let mut operator = Terminal {
        done: std::sync::Arc::default(),
        waiting: false,
        shown: std::time::Instant::now(),
    };
    let cal = diffbc_servo::calibrate::calibrate(
        &mut bus,
        arm,
        &mut operator,
        std::time::Duration::from_millis(20),
    )?;
    eprintln!();
    cal.save(&out)?;
    for (name, m) in &cal.motors {
        println!(
            "{name}: id {} homing_offset {} range {}..{}",
            m.id, m.homing_offset, m.range_min, m.range_max
        );
    }
    println!("calibration written to {}", out.display());
    Ok(())
}

fn show_status(a: &RunArgs) -> bool {
    use std::io::IsTerminal;
    a.status || std::io::stderr().is_terminal()
}

/// Run `f` with a [`diffbc_bridge::LiveStats`] it publishes into; when
/// `show`, a thread prints them as one status line on stderr once a second
/// (the control loop itself never prints).
fn with_status_line<R>(show: bool, f: impl FnOnce(&diffbc_bridge::LiveStats) -> R) -> R {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let live = diffbc_bridge::LiveStats::default();
    if !show {
        return f(&live);
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let start = std::time::Instant::now();
            let mut shown = 0;
            while !done.load(Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let seconds = start.elapsed().as_secs();
                if seconds == shown || done.load(Relaxed) {
                    continue;
                }
                shown = seconds;
                let ticks = live.ticks.load(Relaxed);
                eprint!(
                    "\rrun: {ticks} ticks, {:.1} Hz, {} missed, {} clamped, {} refused, jitter max {} µs   ",
                    ticks as f64 / start.elapsed().as_secs_f64(),
                    live.missed.load(Relaxed),
                    live.clamped.load(Relaxed),
                    live.rejected.load(Relaxed),
                    live.jitter_max_us.load(Relaxed),
                );
            }
            if shown > 0 {
                eprintln!();
            }
        });
        let r = f(&live);
        done.store(true, Relaxed);
        r
    })
}

/// `diffbc sim-arm --servos PRESET`: an emulated servo arm on a pty until
/// Ctrl-C (or `seconds`).
fn sim_servo_arm(
    name: &str,
    seconds: Option<std::time::Duration>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    use diffbc_servo::Family;
    use diffbc_servo::emulated::{EmuBus, EmuServo};
    let arm = diffbc_servo::arm::ArmPreset::named(name).map_err(anyhow::Error::msg)?;
    let model = match arm.family {
        Family::Feetech => diffbc_servo::feetech::STS3215_MODEL,
        Family::Dynamixel => diffbc_servo::dynamixel::MODEL_XL330_M288,
    };
    let servos = arm
        .ids()
        .map(|id| EmuServo::new(id, model, 2047.0))
        .collect();
    let bus = match arm.family {
        Family::Feetech => EmuBus::spawn(diffbc_servo::feetech::FeetechDevice::new(), servos),
        Family::Dynamixel => EmuBus::spawn(diffbc_servo::dynamixel::DynamixelDevice::new(), servos),
    }
    .context("opening a pseudo-terminal for the emulated servos")?;
    println!("{}", bus.path);
    tracing::info!(
        arm = arm.name,
        "emulated {} servos at {} (Ctrl-C to stop)",
        arm.family.name(),
        bus.path
    );
    let start = std::time::Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && seconds.is_none_or(|s| start.elapsed() < s)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let goal_writes = bus.lock().goal_writes.len();
    bus.shutdown();
    println!("goal writes received: {goal_writes}");
    Ok(())
}

/// `diffbc run --arm`: the policy drives a servo-bus arm through the same
/// control loop; torque is disabled on every way out.
fn run_servo_arm(
    a: &RunArgs,
    controller: &mut diffbc_control::PolicyController,
    config: &diffbc_bridge::LoopConfig,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let (Some(name), Some(cal_path)) = (&a.arm, &a.calibration) else {
        bail!("--arm needs --calibration");
    };
    let arm = diffbc_servo::arm::ArmPreset::named(name).map_err(anyhow::Error::msg)?;
    let cal = diffbc_servo::calibration::Calibration::load(cal_path)?;
    let bus = diffbc_servo::open_bus(
        arm.family,
        &a.port,
        a.baud,
        std::time::Duration::from_millis(20),
    )?;
    let mut link = diffbc_servo::ServoLink::connect(
        bus,
        &a.port,
        arm,
        &cal,
        &cal_path.display().to_string(),
        500,
    )?;
    let report = with_status_line(show_status(a), |live| {
        diffbc_bridge::control::run_live(
            &mut link,
            &mut diffbc_bridge::WallClock::start(),
            controller,
            config,
            stop,
            live,
        )
    });
    let bus_stats = diffbc_servo::Bus::stats(link.arm().bus());
    let rtt = link.round_trips().clone();
    drop(link);
    print!("{}", report.stats.markdown());
    println!(
        "servo bus: {} status packets, {} timeouts, {} corrupt, {} servo errors; SYNC_READ round trip per tick p50 / p99 / max {} / {} / {} µs",
        bus_stats.status_received,
        bus_stats.timeouts,
        bus_stats.corrupt,
        bus_stats.servo_errors,
        rtt.quantile_us(0.5),
        rtt.quantile_us(0.99),
        rtt.max_us()
    );
    if let Some(t) = &report.last_telemetry {
        println!("last positions (rad): {:?}", t.positions);
    }
    if let Some(path) = &a.json {
        let record = RunRecord::new(&a.port, config.rate_hz, &report);
        std::fs::write(path, serde_json::to_string_pretty(&record)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    run_end(&report, stop)
}

pub fn run(a: RunArgs) -> Result<()> {
    let stop = interrupt_flag()?;
    let sampler = (!a.sampler.samplers.is_empty()).then(|| a.sampler.configs(&[])[0]);
    let mut policy = diffbc_runtime::Policy::load_with(
        &a.model,
        &diffbc_runtime::PolicyOptions {
            engine: a.engine,
            sampler,
            seed: a.seed,
            ..Default::default()
        },
    )?;
    // Before any port is opened: a steering the policy cannot take is refused.
    if let Some(steering) = a.steering.steering(policy.modes(), policy.mode_input())? {
        println!("the policy's modes: {}", policy.mode_names().join("; "));
        println!(
            "steering: towards {:?} at {}, away from {:?}",
            steering.towards, steering.weight, steering.away
        );
        policy.set_steering(Some(steering))?;
    }
    tracing::info!(
        "policy {} on {} with {}",
        a.model.display(),
        policy.engine_name(),
        policy.sampler_config().label()
    );
    let (rate_hz, max_step) =
        run_settings(&policy.manifest().deployment, a.rate, a.max_step, a.force)?;
    println!(
        "control at {rate_hz} Hz, joint targets at most {max_step} from the measured positions{}",
        if a.rate.is_none() {
            " (rate from the manifest)"
        } else {
            ""
        }
    );
    let task_state = policy
        .manifest()
        .channels
        .observation
        .iter()
        .find(|c| c.source.starts_with("task.done["))
        .cloned();
    let task = match (a.task, &task_state) {
        (Some(t), _) => t,
        (None, Some(_)) if policy.manifest().provenance.task == "arm" => {
            println!("task: arm (the policy observes its state; from the manifest's provenance)");
            SimTaskArg::Arm
        }
        (None, _) => SimTaskArg::None,
    };
    if task == SimTaskArg::None
        && let Some(c) = &task_state
    {
        bail!(
            "the policy observes {} (source {}), the arm task's state, which the task computes on the host from the measured joint positions: pass --task arm",
            c.name,
            c.source
        );
    }
    let mut controller = diffbc_control::PolicyController::new(policy);
    if task == SimTaskArg::Arm {
        let task = diffbc_tasks::arm::ArmTask::default();
        controller.set_host_source(Box::new(task.state(std::sync::Arc::default())));
    }
    let mut settings = match &a.settings {
        Some(path) => LoopSettings::load(path)?,
        None => LoopSettings::default(),
    };
    settings.telemetry_timeout_ms = a.telemetry_timeout_ms.or(settings.telemetry_timeout_ms);
    settings.deadline_fraction = a.deadline_fraction.or(settings.deadline_fraction);
    let config = settings.apply(diffbc_bridge::LoopConfig {
        rate_hz,
        duration: a.seconds,
        max_step,
        ..Default::default()
    });
    if let Err(e) = config.validate() {
        match &a.settings {
            Some(p) => bail!("deployment settings ({} and flags): {e}", p.display()),
            None => bail!("deployment settings: {e}"),
        }
    }
    if a.arm.is_some() {
        // Near people: the step is also bounded by each joint's speed limit
        // at this rate.
        let config = diffbc_bridge::LoopConfig {
            velocity_limits: settings.velocity_limits.unwrap_or(true),
            ..config
        };
        return run_servo_arm(&a, &mut controller, &config, &stop);
    }
    let mut bridge = diffbc_bridge::Bridge::connect(&a.port, a.baud, config.handshake_timeout)?;
    let report = with_status_line(show_status(&a), |live| {
        bridge.run_live(&mut controller, &config, &stop, live)
    });
    print!("{}", report.stats.markdown());
    if let Some(t) = &report.last_telemetry {
        println!(
            "last positions: {:?}; velocities: {:?}",
            t.positions, t.velocities
        );
    }
    match &report.delivery {
        Some(d) => println!("{d}"),
        None => {
            println!("delivery: not confirmed (no telemetry from the device after the stop frame)")
        }
    }
    if let Some(path) = &a.json {
        let record = RunRecord::new(&a.port, rate_hz, &report);
        let text = serde_json::to_string_pretty(&record)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    run_end(&report, &stop)?;
    if let Some(d) = report.delivery.filter(|d| !d.complete_in_order()) {
        bail!("the link lost or reordered commands: {d}");
    }
    Ok(())
}

/// How a run ended, as the error kinds `diffbc_deploy::exit` maps to exit
/// codes: a fault the arm reported, Ctrl-C, or another error.
fn run_end(report: &diffbc_bridge::RunReport, stop: &std::sync::atomic::AtomicBool) -> Result<()> {
    match &report.outcome {
        Err(e) if report.device_fault.is_some() => Err(crate::DeviceFaulted(e.clone()).into()),
        Err(e) => Err(anyhow::Error::msg(e.clone())),
        Ok(()) if stop.load(std::sync::atomic::Ordering::Relaxed) => Err(crate::Interrupted.into()),
        Ok(()) => Ok(()),
    }
}

/// `diffbc run --settings FILE`: the control loop's deployment settings as
/// JSON, every field optional (the loop's defaults otherwise); unknown
/// fields are refused, naming them.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopSettings {
    /// No telemetry for this long (ms): stop.
    pub telemetry_timeout_ms: Option<u64>,
    /// Fraction of the period the controller may take, in (0, 1).
    pub deadline_fraction: Option<f64>,
    /// Handshake timeout (ms).
    pub handshake_timeout_ms: Option<u64>,
    /// Reconnect: first back-off (ms).
    pub reconnect_initial_ms: Option<u64>,
    /// Reconnect: largest back-off (ms).
    pub reconnect_max_ms: Option<u64>,
    /// Reconnect: give up after (ms).
    pub reconnect_give_up_ms: Option<u64>,
    /// Commands kept in the run's log (the newest; all are counted).
    pub log_capacity: Option<usize>,
    /// Bound each joint's step by its speed limit at the control rate.
    pub velocity_limits: Option<bool>,
}

impl LoopSettings {
    /// Read a settings file (errors name the file, line and field).
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// `config` with these settings where they are given.
    pub fn apply(&self, mut config: diffbc_bridge::LoopConfig) -> diffbc_bridge::LoopConfig {
        let ms = std::time::Duration::from_millis;
        if let Some(v) = self.telemetry_timeout_ms {
            config.telemetry_timeout = ms(v);
        }
        if let Some(v) = self.deadline_fraction {
            config.deadline_fraction = v;
        }
        if let Some(v) = self.handshake_timeout_ms {
            config.handshake_timeout = ms(v);
        }
        if let Some(v) = self.reconnect_initial_ms {
            config.reconnect.initial = ms(v);
        }
        if let Some(v) = self.reconnect_max_ms {
            config.reconnect.max = ms(v);
        }
        if let Some(v) = self.reconnect_give_up_ms {
            config.reconnect.give_up_after = ms(v);
        }
        if let Some(v) = self.log_capacity {
            config.log_capacity = v;
        }
        if let Some(v) = self.velocity_limits {
            config.velocity_limits = v;
        }
        config
    }
}

/// `diffbc run --json`: one run's figures, the device's count included.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    /// The port.
    pub port: String,
    /// Control rate (Hz).
    pub rate_hz: f64,
    /// Ticks run.
    pub ticks: u64,
    /// Ticks whose action missed its deadline (last safe command held).
    pub missed_deadlines: u64,
    /// Actions the safety layer refused (never sent).
    pub rejected_actions: u64,
    /// Commands written.
    pub sent: u64,
    /// Frames decoded from the device.
    pub frames_received: u64,
    /// Frames from the device that failed to decode.
    pub frames_bad: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// Tick lateness p50 / p99 / max (µs).
    pub jitter_us: [u64; 3],
    /// The device's own count, read after the stop frame (None: not confirmed).
    pub delivery: Option<DeliveryRecord>,
    /// The last measured positions (rad).
    pub last_positions: Option<Vec<f32>>,
    /// `ok`, or the error that ended the run.
    pub outcome: String,
}

/// [`diffbc_bridge::Delivery`] as JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRecord {
    /// Commands sent since the last handshake.
    pub sent: u32,
    /// Command frames the device received.
    pub device_commands: u32,
    /// Sequence numbers the device saw jumped over.
    pub device_skipped: u32,
    /// Commands the device dropped as older than one it had.
    pub device_stale: u32,
    /// Frames the device's decoder dropped.
    pub device_bad_frames: u32,
    /// The last command sent.
    pub last_sent_seq: u32,
    /// The last command the device applied.
    pub last_applied_seq: u32,
    /// Every command arrived, in order.
    pub complete_in_order: bool,
}

impl From<&diffbc_bridge::Delivery> for DeliveryRecord {
    fn from(d: &diffbc_bridge::Delivery) -> Self {
        Self {
            sent: d.sent,
            device_commands: d.device.commands,
            device_skipped: d.device.skipped,
            device_stale: d.device.stale,
            device_bad_frames: d.device.bad_frames,
            last_sent_seq: d.last_sent_seq,
            last_applied_seq: d.last_applied_seq,
            complete_in_order: d.complete_in_order(),
        }
    }
}

impl RunRecord {
    fn new(port: &str, rate_hz: f64, report: &diffbc_bridge::RunReport) -> Self {
        let s = &report.stats;
        Self {
            port: port.into(),
            rate_hz,
            ticks: s.ticks,
            missed_deadlines: s.missed_deadlines,
            rejected_actions: s.rejected_actions,
            sent: s.frames_sent,
            frames_received: s.frames_received,
            frames_bad: s.frames_bad,
            reconnects: s.reconnects,
            jitter_us: [
                s.jitter.quantile_us(0.5),
                s.jitter.quantile_us(0.99),
                s.jitter.max_us(),
            ],
            delivery: report.delivery.as_ref().map(DeliveryRecord::from),
            last_positions: report.last_telemetry.as_ref().map(|t| t.positions.to_vec()),
            outcome: match &report.outcome {
                Ok(()) => "ok".into(),
                Err(e) => e.clone(),
            },
        }
    }
}

/// The step bound `diffbc run` uses when neither flag nor manifest gives one.
pub const FALLBACK_MAX_STEP: f32 = 0.2;

/// `diffbc run`'s control rate and step bound: the flags, else the manifest's
/// deployment settings. A rate other than the trained one, or a step bound
/// tighter than the demonstrations', is refused unless `force`.
pub fn run_settings(
    d: &diffbc_runtime::manifest::Deployment,
    rate: Option<f64>,
    max_step: Option<f32>,
    force: bool,
) -> Result<(f64, f32)> {
    let rate_hz = match (rate, d.control_hz) {
        (Some(r), Some(trained)) if (r - trained).abs() > 1e-9 * trained && !force => bail!(
            "--rate {r} Hz contradicts the rate the policy was trained at ({trained} Hz, manifest deployment.control_hz): \
             its actions are tied to that rate; drop --rate, or pass --force to run at {r} Hz anyway"
        ),
        (Some(r), _) => r,
        (None, Some(trained)) => trained,
        (None, None) => {
            bail!("the manifest records no control rate (deployment.control_hz): pass --rate")
        }
    };
    let max_step = match (max_step, d.max_step) {
        (Some(s), Some(seen)) if s < seen && !force => bail!(
            "--max-step {s} is tighter than the demonstrations' largest step ({seen}, manifest deployment.max_step): \
             the safety layer would clip moves the policy learned; pass --force to run with it anyway"
        ),
        (Some(s), _) => s,
        (None, Some(seen)) if seen > 0.0 => seen,
        (None, _) => FALLBACK_MAX_STEP,
    };
    Ok((rate_hz, max_step))
}

/// `chosen`, or when empty every CPU engine of this build: native, tract
/// where built, and ONNX Runtime's CPU provider with `--features ort`.
pub fn engines_or_cpu_default(
    chosen: &[diffbc_runtime::EngineChoice],
) -> Vec<diffbc_runtime::EngineChoice> {
    use diffbc_runtime::{EngineChoice, ExecutionProvider};
    if !chosen.is_empty() {
        return chosen.to_vec();
    }
    let mut e = EngineChoice::pure_rust();
    if cfg!(feature = "ort") {
        e.push(EngineChoice::Ort(ExecutionProvider::Cpu));
    }
    e
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let engines = engines_or_cpu_default(&a.engines);
    let cores = diffbc_tasks::pool::default_threads();
    let mut threads = if a.threads.is_empty() {
        vec![1, cores]
    } else {
        a.threads.clone()
    };
    threads.dedup();
    let plan = crate::bench::BenchPlan {
        engines,
        weights: a.weights.iter().map(|&w| w.into()).collect(),
        threads,
        samplers: a.sampler.configs(&[
            SamplerKindArg::Ddpm,
            SamplerKindArg::DiffusionX,
            SamplerKindArg::Kde,
            SamplerKindArg::Ddim,
        ]),
        seconds: a.seconds,
        min_iterations: a.min_iterations.max(1),
        bandwidth_time: std::time::Duration::from_millis(400),
    };
    let peak1 =
        diffbc_runtime::native::kernel_peak_gflops(1, std::time::Duration::from_millis(300));
    let peak2 =
        diffbc_runtime::native::kernel_peak_gflops(2, std::time::Duration::from_millis(300));
    let records = crate::bench::run(&a.model, &plan)?;
    println!("# diffbc bench {} ({} cores)\n", a.model.display(), cores);
    print!("{}", crate::bench::markdown(&records, peak1));
    println!(
        "\nNative matrix kernel on this CPU: {}.",
        diffbc_runtime::native::Kernel::detect().name()
    );
    println!(
        "\nKernel ceiling on one core (native matrix kernel, L1-resident): {peak1:.1} GFLOP/s at batch 1, {peak2:.1} GFLOP/s at batch 2. \
         '% of batch-1 ceiling' divides GFLOP/s by the batch-1 figure × threads."
    );
    for r in records
        .iter()
        .filter(|r| r.threads == 1 && r.sampler == "diffusion-x(M=8)")
    {
        println!(
            "Diffusion-X (M=8), 1 thread, {} {}: {:.0} actions/s = {:.2}x the 250 actions/s target",
            r.engine,
            r.weights,
            r.actions_per_s,
            r.actions_per_s / 250.0
        );
    }
    let label = SamplerConfig::diffusion_x(8).label();
    for (w, ratio) in crate::bench::speedups(&records, &label) {
        println!("Diffusion-X (M=8), batch 1, 1 thread: native {w} / native f32 = {ratio:.2}x");
    }
    println!(
        "\nweight bytes/call: what one denoiser call reads, counted from the graph as the engine \
         holds its weights (native: matrix weights in their stored precision, int8 scales, biases \
         and norms in f32; tract: f32 for every format, widened at load; ONNX Runtime: f32 for \
         f32 and f16, whose Cast it folds at load, 8-bit for int8). weight GB/s: those bytes \
         (and the encoder's once) per decision × actions/s. read GB/s at that size: this core \
         streaming a buffer of that many bytes, measured in this run (best of repeated passes) — \
         the bound on weight GB/s for a call that reads each weight once; batch-1 rows near \
         100 % are bound by it, batched rows (KDE) reuse each weight across rows and are not."
    );
    if let Some(path) = &a.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&records)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod steering_tests {
    use super::*;

    #[test]
    fn mode_flags_parse_and_name_what_is_wrong() {
        assert_eq!(parse_mode("2"), Ok((vec![2], 1.0)));
        assert_eq!(parse_mode("0:3.5"), Ok((vec![0], 3.5)));
        assert_eq!(parse_mode("0,2:2"), Ok((vec![0, 2], 2.0)));
        assert!(parse_mode("x").expect_err("k").contains("mode[K]"));
        assert!(parse_mode("1,,2").expect_err("k").contains("mode[K]"));
        for bad in ["1:-1", "1:nan", "1:inf", "1:"] {
            assert!(parse_mode(bad).expect_err(bad).contains("weight"), "{bad}");
        }
    }

    #[test]
    fn steering_flags_become_mode_inputs() {
        use diffbc_runtime::manifest::ModeInput::{OneHot, Set};
        let none = SteeringArgs::default();
        assert!(none.steering(0, OneHot).expect("no flags").is_none());
        let a = SteeringArgs {
            towards: Some((vec![1], 2.0)),
            away: vec![(vec![0], 3.0), (vec![2], 1.0)],
            avoid_by: None,
        };
        // One-hot policies: negative guidance.
        let s = a.steering(3, OneHot).expect("steering").expect("some");
        assert_eq!(s.towards, [0.0, 1.0, 0.0]);
        assert_eq!(s.weight, 2.0);
        assert_eq!(
            s.away,
            [(vec![1.0, 0.0, 0.0], 3.0), (vec![0.0, 0.0, 1.0], 1.0)]
        );
        let only_away = SteeringArgs {
            towards: None,
            away: vec![(vec![0], 4.0)],
            avoid_by: None,
        };
        let s = only_away
            .steering(2, OneHot)
            .expect("steering")
            .expect("some");
        assert!(s.towards.is_empty());
        // Set policies: exclusion, the complement at the largest weight.
        let s = only_away.steering(3, Set).expect("steering").expect("some");
        assert_eq!((s.towards, s.weight), (vec![0.0, 1.0, 1.0], 4.0));
        assert!(s.away.is_empty());
        let s = a.steering(3, Set).expect("steering").expect("some");
        assert_eq!((s.towards, s.weight), (vec![0.0, 1.0, 0.0], 2.0));
        let by_guidance = SteeringArgs {
            avoid_by: Some(AvoidBy::Guidance),
            ..only_away.clone()
        };
        let s = by_guidance
            .steering(3, Set)
            .expect("steering")
            .expect("some");
        assert_eq!(s.away, [(vec![1.0, 0.0, 0.0], 4.0)]);
        let sets = SteeringArgs {
            towards: Some((vec![0, 2], 1.0)),
            ..Default::default()
        };
        let s = sets.steering(3, Set).expect("steering").expect("some");
        assert_eq!(s.towards, [1.0, 0.0, 1.0]);
        // What is refused.
        let e = sets
            .steering(3, OneHot)
            .expect_err("set of one-hot")
            .to_string();
        assert!(e.contains("mode sets") && e.contains("0,2"), "{e}");
        let by_exclusion = SteeringArgs {
            avoid_by: Some(AvoidBy::Exclusion),
            ..only_away.clone()
        };
        let e = by_exclusion
            .steering(3, OneHot)
            .expect_err("exclusion")
            .to_string();
        assert!(e.contains("--avoid-by guidance"), "{e}");
        // A one-hot policy avoids a set mode by mode; the label says how.
        let two = SteeringArgs {
            away: vec![(vec![0, 2], 2.0)],
            ..Default::default()
        };
        let s = two.steering(3, OneHot).expect("steering").expect("some");
        assert_eq!(
            s.away,
            [(vec![1.0, 0.0, 0.0], 2.0), (vec![0.0, 0.0, 1.0], 2.0)]
        );
        // The runtime's default way away is the flags' default way.
        for input in [OneHot, Set] {
            assert_eq!(
                two.steering(3, input).expect("steering"),
                Some(diffbc_runtime::Steering::away_from(3, &[0, 2], 2.0, input)),
                "{input:?}"
            );
        }
        assert_eq!(two.label(OneHot), "away from mode 0,2 (w = 2) by guidance");
        assert_eq!(two.label(Set), "away from mode 0,2 (w = 2) by exclusion");
        // Every mode is "any mode": the no-mode input.
        let every = SteeringArgs {
            towards: Some((vec![0, 1, 2], 1.0)),
            ..Default::default()
        };
        let s = every.steering(3, Set).expect("steering").expect("some");
        assert_eq!(s.towards, [0.0; 3]);
        let all = SteeringArgs {
            away: vec![(vec![0, 1], 1.0)],
            ..Default::default()
        };
        let e = all.steering(2, Set).expect_err("nothing left").to_string();
        assert!(e.contains("no mode is left"), "{e}");
        let e = a.steering(2, OneHot).expect_err("mode 2 of 2").to_string();
        assert!(e.contains("mode 2") && e.contains("0..2"), "{e}");
        let e = a.steering(0, OneHot).expect_err("no modes").to_string();
        assert!(e.contains("no mode[k] observation channels"), "{e}");
    }
}
