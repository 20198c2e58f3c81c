//! The `logbook` binary.
fn main() {}
