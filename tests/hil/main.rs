//! Hardware-in-the-loop tests, in their own test binary: they run on the
//! wall clock against devices with watchdogs (the emulated arm, the
//! firmware in QEMU with its 250 ms watchdog, emulated servo buses), so they
//! run after the training-heavy tests of `it` rather than beside them (cargo
//! runs test binaries one after another), and one at a time among
//! themselves (`hil::one_at_a_time`).

mod hil;
mod qemu;
mod servo;
// The shared helpers of the `it` binary (running `diffbc`, configs); not
// every one is used here.
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;
