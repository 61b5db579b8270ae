//! Host side of the arm link.
//!
//! - [`control`]: the fixed-rate control loop, written once over a [`Link`]
//!   and a [`Clock`] (telemetry → controller on its own thread → safety
//!   layer → command), with a telemetry watchdog and stop-on-exit; `tick`
//!   is the workspace's one control tick.
//! - [`bridge`]: the serial [`Link`]: open a port, handshake, reconnect.
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
pub mod control;
pub mod ring;
pub mod safety;
pub mod stats;

pub use bridge::{Bridge, BridgeError};
pub use checked::ValueError;
pub use control::{
    Clock, Controller, Link, LiveStats, LoggedCommand, LoopConfig, Reconnect, RunReport, SimClock,
    Sweep, WallClock,
};
pub use ring::Ring;
pub use safety::SafetyLayer;
pub use stats::{Delivery, Histogram, RunStats};
