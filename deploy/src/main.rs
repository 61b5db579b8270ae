//! `diffbc-deploy`: what runs on the computer next to an arm — drive it with
//! an exported policy, benchmark the engines and the control loop, emulate
//! the arm, evaluate arm policies closed loop. No burn, no rapier, no
//! training crates (`cargo tree -p diffbc-deploy`).

/// Counting allocations costs an atomic add per allocation: only builds that
/// measure (`bench`'s allocs/act column) install it.
#[cfg(feature = "count-allocations")]
#[global_allocator]
static ALLOCATOR: diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "diffbc-deploy",
    version,
    about = "Run exported diffbc policies on an arm (no training stack)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Drive an arm (real or emulated) with an exported policy over a serial port.
    Run(diffbc_deploy::RunArgs),
    /// Latency and throughput of an exported policy per engine × sampler × threads.
    Bench(diffbc_deploy::BenchArgs),
    /// The serial control loop's timing (jitter, missed deadlines, delivery) against its targets.
    BenchBridge(diffbc_deploy::bridge_bench::BenchBridgeArgs),
    /// The emulated arm firmware on a pseudo-terminal (prints the path to open).
    SimArm(diffbc_deploy::SimArmArgs),
    /// Calibrate a servo-bus arm (SO-100/SO-101, Koch): centre it, sweep every joint.
    Calibrate(diffbc_deploy::cli::CalibrateArgs),
    /// Exported arm policies closed loop on the arm task (in-process, and
    /// through the bridge with --bridge-episodes).
    Eval(diffbc_deploy::eval::EvalArgs),
    /// Check that engines reproduce exported policies' golden outputs and episodes.
    Verify(diffbc_deploy::verify::VerifyArgs),
}

fn main() -> std::process::ExitCode {
    diffbc_deploy::keep_nvidia_libraries_at_f32();
    diffbc_deploy::init_tracing();
    diffbc_deploy::exit(dispatch(Cli::parse().command))
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run(a) => diffbc_deploy::cli::run(a),
        Command::Bench(a) => diffbc_deploy::cli::bench(a),
        Command::BenchBridge(a) => diffbc_deploy::bridge_bench::run(&a),
        Command::SimArm(a) => diffbc_deploy::cli::sim_arm(a),
        Command::Calibrate(a) => diffbc_deploy::cli::calibrate(a),
        Command::Verify(a) => diffbc_deploy::verify::run(&a),
        Command::Eval(a) => {
            print!("{}", diffbc_deploy::eval::run(&a)?);
            Ok(())
        }
    }
}
