//! Emulated devices for tests, evaluation and development without hardware.
//!
//! - [`arm`]: [`SimArm`], the arm firmware's state machine
//!   ([`diffbc_firmware`], `no_std`) driving emulated servos in a world with
//!   obstacles, time passed in.
//! - [`pty`]: [`spawn_pty`] runs it on a pseudo-terminal against the wall
//!   clock, with fault injection ([`Faults`]) and what it saw ([`SimShared`]).
//! - [`link`]: [`StepLink`], the same arm stepped in process as a
//!   [`diffbc_bridge::Link`], for the bridge's control loop on a simulated
//!   clock (the arm task's in-process episodes).
//!
//! The shipped host loop (`diffbc-bridge`) does not depend on this crate.

pub mod arm;
pub mod link;
pub mod pty;

pub use arm::{DEFAULT_COMMAND_LOG, Obstacle, SimArm, SimConfig};
pub use link::StepLink;
pub use pty::{Faults, SimHandle, SimShared, spawn_pty};
