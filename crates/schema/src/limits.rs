//! The registry's limits, each with its unit.

/// Bytes of one schema's text.
pub const SCHEMA_BYTES_MAX: usize = 1 << 20;
/// Bytes of a subject's name.
pub const SUBJECT_BYTES_MAX: usize = 255;
/// Distinct schemas (global ids) in a registry.
pub const SCHEMAS_MAX: u32 = 100_000;
/// Versions one subject holds at once (soft-deleted ones included).
pub const VERSIONS_PER_SUBJECT_MAX: usize = 10_000;

const _: () = assert!(SUBJECT_BYTES_MAX < SCHEMA_BYTES_MAX);
const _: () = assert!(VERSIONS_PER_SUBJECT_MAX as u64 <= SCHEMAS_MAX as u64);
