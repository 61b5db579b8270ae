//! Placeholder: filled in by the feetech protocol work.
