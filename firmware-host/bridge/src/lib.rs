//! Host side of the arm link.
//!
//! - [`bridge`]: open a serial port, handshake, and run the fixed-rate
//!   control loop (telemetry → controller on its own thread → safety layer →
//!   command), with reconnection, a telemetry watchdog and stop-on-exit.
//! - [`safety`]: joint limits and a per-tick step bound; NaN is never sent.
//! - [`sim`]: the emulated arm firmware (PD servos, limits, watchdog, a task
//!   world) on a pseudo-terminal, speaking the same `diffbc-protocol` frames.
//! - [`checked`]: the one validation of every number that reaches the
//!   safety layer, the loop's timing or a `Duration` (flags, config, handshake).
//! - [`ring`]: bounded logs (last N items plus a total count).
//! - [`policy`]: a `diffbc_runtime::Policy` as a [`bridge::Controller`].

pub mod bridge;
pub mod checked;
pub mod policy;
pub mod ring;
pub mod safety;
pub mod sim;
pub mod stats;

pub use bridge::{Bridge, BridgeError, Controller, LoopConfig, Reconnect, RunReport, Sweep};
pub use checked::ValueError;
pub use ring::Ring;
pub use safety::SafetyLayer;
pub use sim::{Obstacle, SimConfig, SimHandle, spawn_pty};
pub use stats::{Histogram, RunStats};
