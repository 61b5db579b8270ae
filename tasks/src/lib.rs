//! Task worlds that run exported policies without the training stack: no
//! burn, no rapier, no `diffbc-train` here, so the deploy binary and an edge
//! board can link them.
//!
//! - [`arm`]: the emulated arm's multi-target task — the world (targets, an
//!   obstacle, the firmware's dynamics), the seeded human-like demonstrator,
//!   the episode runner that drives the same `SimArm`, `ObsLayout` and
//!   `SafetyLayer` as the bridge, and the closed-loop evaluation.
//! - [`pool`]: splitting seeded episodes over threads.

pub mod arm;
pub mod pool;
