//! `diffbc bench-bridge`: the fixed-rate loop's timing over a serial link,
//! measured against its targets (tick jitter p99 ≤ 1 ms, no missed
//! deadline). Timing is a property of the host, so it is measured here and
//! printed as a table, never asserted by a test (`tests/hil/hil.rs` asserts
//! what holds on any host: every command arrives, in order).

use anyhow::{Context, Result, bail};
use clap::Args;
use diffbc_bridge::{Bridge, Controller, LoopConfig, RunReport, Sweep};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Tick jitter p99 target (µs).
pub const JITTER_P99_TARGET_US: u64 = 1_000;

/// `diffbc bench-bridge` arguments.
#[derive(Args, Debug)]
pub struct BenchBridgeArgs {
    /// Exported policy to run in the loop (default: the bridge's reference
    /// sweep, which costs microseconds, so the figures are the loop's own).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Engine for `--model`.
    #[arg(long, default_value = "native")]
    engine: diffbc_runtime::EngineChoice,
    /// Serial port of a real arm (default: the emulated arm on a pseudo-terminal).
    /// The sweep moves every joint through its range: you are asked to
    /// confirm first, unless `--yes`.
    #[arg(long)]
    port: Option<String>,
    /// With `--port`: move the arm without asking.
    #[arg(long)]
    yes: bool,
    /// Baud rate (ignored by pseudo-terminals).
    #[arg(long, default_value_t = 1_000_000)]
    baud: u32,
    /// The emulated arm's world: `arm` (the arm task, for policies trained on it) or `none`.
    #[arg(long, value_enum, default_value = "none")]
    task: crate::cli::SimTaskArg,
    /// The emulated arm's command watchdog (ms; default: the arm's own, 250).
    #[arg(long)]
    watchdog_ms: Option<u64>,
    /// Control rate (Hz, 1–500).
    #[arg(long, default_value = "100", value_parser = diffbc_bridge::checked::flag::rate_hz, allow_hyphen_values = true)]
    rate: f64,
    /// Measured seconds (positive, at most a year).
    #[arg(long, default_value = "10", value_parser = diffbc_bridge::checked::flag::seconds, allow_hyphen_values = true)]
    seconds: Duration,
    /// Noise seed for `--model`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the figures as one JSON record here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeBenchRecord {
    /// `sweep`, or the policy folder.
    pub controller: String,
    /// The port (the pty's stable link for the emulated arm).
    pub port: String,
    /// Whether the device was the emulated arm.
    pub emulated: bool,
    /// Control rate (Hz).
    pub rate_hz: f64,
    /// Measured seconds.
    pub seconds: f64,
    /// Ticks run.
    pub ticks: u64,
    /// Ticks whose action missed its deadline.
    pub missed_deadlines: u64,
    /// Tick lateness p50 (µs).
    pub jitter_p50_us: u64,
    /// Tick lateness p99 (µs).
    pub jitter_p99_us: u64,
    /// Largest tick lateness (µs).
    pub jitter_max_us: u64,
    /// Command → acknowledging telemetry p50 (µs; telemetry read once per tick).
    pub ack_p50_us: u64,
    /// Same, p99.
    pub ack_p99_us: u64,
    /// Commands sent.
    pub sent: u64,
    /// Logged commands the emulated arm received, equal and in order, from
    /// the first (None on a real port).
    pub received_in_order: Option<u64>,
    /// Telemetry frames that failed to decode.
    pub frames_bad: u64,
    /// The device's own count of the commands, read after the stop (any
    /// device speaking protocol 4; None if it sent no telemetry then).
    pub delivery: Option<crate::cli::DeliveryRecord>,
    /// The host's timer alone (the loop's sleep + spin, no I/O), same rate
    /// and length, measured just before: lateness p99 (µs).
    pub timer_p99_us: u64,
    /// Same, largest (µs).
    pub timer_max_us: u64,
}

impl BridgeBenchRecord {
    fn new(
        a: &BenchBridgeArgs,
        port: &str,
        report: &RunReport,
        received: Option<u64>,
        timer: &diffbc_bridge::Histogram,
    ) -> Self {
        let s = &report.stats;
        Self {
            controller: a
                .model
                .as_ref()
                .map_or_else(|| "sweep".into(), |m| m.display().to_string()),
            port: port.into(),
            emulated: a.port.is_none(),
            rate_hz: a.rate,
            seconds: a.seconds.as_secs_f64(),
            ticks: s.ticks,
            missed_deadlines: s.missed_deadlines,
            jitter_p50_us: s.jitter.quantile_us(0.5),
            jitter_p99_us: s.jitter.quantile_us(0.99),
            jitter_max_us: s.jitter.max_us(),
            ack_p50_us: s.rtt.quantile_us(0.5),
            ack_p99_us: s.rtt.quantile_us(0.99),
            sent: s.frames_sent,
            received_in_order: received,
            frames_bad: s.frames_bad,
            delivery: report
                .delivery
                .as_ref()
                .map(crate::cli::DeliveryRecord::from),
            timer_p99_us: timer.quantile_us(0.99),
            timer_max_us: timer.max_us(),
        }
    }

    /// The figures against their targets, as Markdown.
    pub fn markdown(&self) -> String {
        let met = |ok: bool| if ok { "met" } else { "not met" };
        let mut out = format!(
            "{} at {} Hz for {} s on {} ({}):\n\n| figure | measured | target | |\n|---|---|---|---|\n",
            self.controller,
            self.rate_hz,
            self.seconds,
            self.port,
            if self.emulated {
                "emulated arm"
            } else {
                "real port"
            }
        );
        out += &format!(
            "| tick jitter p50 / p99 / max | {} / {} / {} µs | p99 ≤ {JITTER_P99_TARGET_US} µs | {} |\n",
            self.jitter_p50_us,
            self.jitter_p99_us,
            self.jitter_max_us,
            met(self.jitter_p99_us <= JITTER_P99_TARGET_US)
        );
        out += &format!(
            "| the host's timer alone (same schedule, no I/O) p99 / max | {} / {} µs | — | |\n",
            self.timer_p99_us, self.timer_max_us
        );
        out += &format!(
            "| missed deadlines | {} of {} ticks | 0 | {} |\n",
            self.missed_deadlines,
            self.ticks,
            met(self.missed_deadlines == 0)
        );
        if let Some(r) = self.received_in_order {
            out += &format!(
                "| commands received, in order | {r} of {} | all | {} |\n",
                self.sent,
                met(r == self.sent)
            );
        }
        if let Some(d) = &self.delivery {
            out += &format!(
                "| commands the device counted (skipped / stale) | {} of {} ({} / {}) | all (0 / 0) | {} |\n",
                d.device_commands,
                d.sent,
                d.device_skipped,
                d.device_stale,
                met(d.complete_in_order)
            );
        }
        out += &format!(
            "| ack latency p50 / p99 (read once per tick) | {} / {} µs | — | |\n| bad telemetry frames | {} | 0 | {} |\n",
            self.ack_p50_us,
            self.ack_p99_us,
            self.frames_bad,
            met(self.frames_bad == 0)
        );
        out
    }
}

/// Ask the person at the arm before a sweep moves it: `yes` on stdin.
fn confirm(port: &str) -> Result<()> {
    eprintln!(
        "bench-bridge will move the arm at {port} through its joint range for the measured time. Clear the arm's reach, then type yes (or pass --yes):"
    );
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the confirmation from stdin")?;
    if line.trim() != "yes" {
        bail!(
            "not confirmed ({:?}): nothing moved; pass --yes to skip the question",
            line.trim()
        );
    }
    Ok(())
}

/// Run the benchmark and print its table.
pub fn run(a: &BenchBridgeArgs) -> Result<()> {
    // Both logs hold the whole run, so delivery is checked command by command.
    let ticks = (a.seconds.as_secs_f64() * a.rate).min(f64::from(1u32 << 22)) as usize + 64;
    let stop = crate::cli::interrupt_flag()?;
    let dir = tempfile::tempdir().context("temporary folder for the pty link")?;
    let (port, sim) = match &a.port {
        Some(port) => {
            if !a.yes {
                confirm(port)?;
            }
            (port.clone(), None)
        }
        None => {
            let mut config = match a.task {
                crate::cli::SimTaskArg::Arm => diffbc_tasks::arm::ArmTask::default()
                    .sim_config(diffbc_tasks::arm::eval::EVAL_SEED_BASE),
                crate::cli::SimTaskArg::None => diffbc_emulator::SimConfig::default_arm(),
            };
            config.command_log = ticks;
            if let Some(ms) = a.watchdog_ms {
                config.watchdog = Duration::from_millis(ms);
            }
            let link = dir.path().join("arm");
            let sim = diffbc_emulator::spawn_pty(config, &link)
                .context("opening a pseudo-terminal for the emulated arm")?;
            (sim.path.display().to_string(), Some(sim))
        }
    };
    let mut controller: Box<dyn Controller> = match &a.model {
        None => Box::new(Sweep::default()),
        Some(model) => {
            let policy = diffbc_runtime::Policy::load_with(
                model,
                &diffbc_runtime::PolicyOptions {
                    engine: a.engine,
                    seed: a.seed,
                    ..Default::default()
                },
            )?;
            Box::new(diffbc_control::PolicyController::new(policy))
        }
    };
    let config = LoopConfig {
        rate_hz: a.rate,
        duration: Some(a.seconds),
        log_capacity: ticks,
        ..LoopConfig::default()
    };
    tracing::info!(
        "timing the host's timer alone for {} s",
        a.seconds.as_secs_f64()
    );
    let timer = diffbc_bridge::control::timer_jitter(a.rate, a.seconds);
    let mut bridge = Bridge::connect(&port, a.baud, config.handshake_timeout)?;
    let report = bridge.run(&mut controller, &config, &stop);
    drop(bridge);
    print!("{}", report.stats.markdown());
    // Delivery is checked however the run ended (a fault ends it early).
    let received = sim.as_ref().map(|sim| {
        let got = sim.commands_when(report.log.total(), Duration::from_secs(5));
        // Count the logged commands the arm received equal and in order.
        report
            .log
            .iter()
            .zip(&got)
            .take_while(|(l, g)| l.command == **g)
            .count() as u64
    });
    let record = BridgeBenchRecord::new(a, &port, &report, received, &timer);
    println!();
    print!("{}", record.markdown());
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&record)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(sim) = sim {
        sim.shutdown();
    }
    if let Err(e) = &report.outcome {
        bail!("the run ended early after {} ticks: {e}", record.ticks);
    }
    if record.received_in_order.is_some_and(|r| r != record.sent) {
        bail!(
            "the emulated arm received {} of the {} logged commands equal and in order",
            record.received_in_order.unwrap_or(0),
            record.sent
        );
    }
    if let Some(d) = record.delivery.as_ref().filter(|d| !d.complete_in_order) {
        bail!(
            "the device counted {} of the {} commands sent ({} skipped, {} stale)",
            d.device_commands,
            d.sent,
            d.device_skipped,
            d.device_stale
        );
    }
    Ok(())
}
