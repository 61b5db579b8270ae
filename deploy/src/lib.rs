//! The deploy side of diffbc as a library: the commands that run exported
//! policies next to an arm (`run`, `bench`, `bench-bridge`, `sim-arm`, the arm
//! task's closed-loop `eval`, `verify`) and their options. The full `diffbc` binary and
//! the burn-free `diffbc-deploy` binary both call these; nothing here links
//! burn, rapier or `diffbc-train` (`cargo tree -p diffbc-deploy` shows it).

pub mod bench;
pub mod bridge_bench;
pub mod cli;
pub mod eval;
pub mod verify;

pub use cli::{
    BenchArgs, RunArgs, SamplerArgs, SamplerKindArg, SimArmArgs, SimTaskArg, interrupt_flag,
};

/// A run ended by Ctrl-C (or SIGTERM) after the arm was stopped: exit code
/// [`EXIT_INTERRUPTED`].
#[derive(Debug, thiserror::Error)]
#[error("interrupted: the arm was stopped")]
pub struct Interrupted;

/// A run ended by a fault the arm reported: exit code [`EXIT_DEVICE_FAULT`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeviceFaulted(pub String);

/// Exit codes of both binaries: 0 done, 1 an error, 2 bad arguments
/// (clap), 3 the arm reported a fault, 130 interrupted (Ctrl-C).
pub const EXIT_DEVICE_FAULT: u8 = 3;
/// See [`EXIT_DEVICE_FAULT`].
pub const EXIT_INTERRUPTED: u8 = 130;

/// The process's exit for a command's result: errors print as `Error: …`
/// (with their causes) on stderr, and the code says what kind of end it was.
pub fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            std::process::ExitCode::from(if e.is::<Interrupted>() {
                EXIT_INTERRUPTED
            } else if e.is::<DeviceFaulted>() {
                EXIT_DEVICE_FAULT
            } else {
                1
            })
        }
    }
}

/// The environment variable with which NVIDIA's libraries allow (1) or
/// forbid (0) TF32 tensor-core arithmetic for f32 work.
pub const TF32_VARIABLE: &str = "NVIDIA_TF32_OVERRIDE";

/// Keep NVIDIA's libraries at f32 unless the user chose otherwise. cuDNN
/// (and cuBLAS, when asked) run f32 convolutions and products in TF32 on
/// Ampere and newer GPUs: on an H200 that put tract-cuda's claw encoder
/// 3.0e-4 off the trainer's golden outputs, and 1.9e-6 with TF32 off. An
/// exported graph is an f32 contract (golden outputs within 1e-4), so both
/// binaries set `NVIDIA_TF32_OVERRIDE=0` when it is unset; setting it to 1
/// allows TF32. Call first in `main`, before any thread is started.
#[allow(unsafe_code)]
pub fn keep_nvidia_libraries_at_f32() {
    if std::env::var_os(TF32_VARIABLE).is_none() {
        // SAFETY: called first in `main`, while the process has one thread,
        // so nothing reads the environment concurrently.
        unsafe { std::env::set_var(TF32_VARIABLE, "0") };
    }
}

/// Log to stderr, `RUST_LOG` or `info` (both binaries).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
