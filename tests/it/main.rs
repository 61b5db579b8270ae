//! Integration tests of the `diffbc` command (one test binary for the whole
//! workspace). They read the claw scenes from `../shared/data/claw`.

mod arm;
mod bench;
mod claw;
mod hostile;
mod hostile_bridge;
mod lerobot;
mod manifest;
mod pusht;
mod report;
mod support;
mod verify;
