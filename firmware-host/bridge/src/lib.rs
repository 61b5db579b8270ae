//! Host side of the arm link.
//!
//! - [`bridge`]: open a serial port, handshake, and run the fixed-rate
//!   control loop (telemetry → controller on its own thread → safety layer →
//!   command), with reconnection, a telemetry watchdog and stop-on-exit.
//! - [`safety`]: joint limits and a per-tick step bound; NaN is never sent.
//! - [`checked`]: the one validation of every number that reaches the
//!   safety layer, the loop's timing or a `Duration` (flags, config, handshake).
//! - [`ring`]: bounded logs (last N items plus a total count).
//!
//! Portable and small on purpose: no runtime, no emulator. A policy becomes
//! a [`Controller`] in `diffbc-control`; the emulated arm lives in
//! `diffbc-emulator`.

pub mod bridge;
pub mod checked;
pub mod ring;
pub mod safety;
pub mod stats;

pub use bridge::{Bridge, BridgeError, Controller, LoopConfig, Reconnect, RunReport, Sweep};
pub use checked::ValueError;
pub use ring::Ring;
pub use safety::SafetyLayer;
pub use stats::{Histogram, RunStats};
