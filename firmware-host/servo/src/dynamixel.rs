//! Placeholder: filled in by the dynamixel protocol work.
