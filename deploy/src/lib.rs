//! The deploy side of diffbc as a library: the commands that run exported
//! policies next to an arm (`run`, `bench`, `bench-bridge`, `sim-arm`, the arm
//! task's closed-loop `eval`) and their options. The full `diffbc` binary and
//! the burn-free `diffbc-deploy` binary both call these; nothing here links
//! burn, rapier or `diffbc-train` (`cargo tree -p diffbc-deploy` shows it).

pub mod bench;
pub mod bridge_bench;
pub mod cli;
pub mod eval;

pub use cli::{
    BenchArgs, RunArgs, SamplerArgs, SamplerKindArg, SimArmArgs, SimTaskArg, interrupt_flag,
};

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
