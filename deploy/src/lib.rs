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
