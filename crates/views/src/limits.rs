//! Every limit of the views crate, in one place.
//!
//! Each limit that input can hit has a named error in [`crate::ViewError`]. The relations
//! between limits are checked at compile time at the bottom of this file.

/// Most views in one data directory.
pub const VIEWS_MAX: usize = 64;
/// Most versions of one view at once: the current one, one kept for rollback, one rebuilding.
pub const VERSIONS_PER_VIEW_MAX: usize = 3;
/// Most processor threads over all views (one per view version and source partition).
pub const PROCESSORS_MAX: usize = 1024;
/// Longest view name in bytes (`[A-Za-z0-9._-]`, not starting with `.`).
pub const VIEW_NAME_BYTES_MAX: usize = 128;
/// Largest view spec, bytes of JSON.
pub const SPEC_BYTES_MAX: usize = 64 * 1024;
/// Most fields in one list of a spec (`fields`, `on`, `group_by`).
pub const SPEC_FIELDS_MAX: usize = 32;
/// Most aggregates in one aggregate view.
pub const AGGREGATES_MAX: usize = 32;
/// Most nodes in a filter tree (comparisons plus `and`/`or`/`not`).
pub const FILTER_NODES_MAX: usize = 256;
/// Deepest nesting of a filter tree.
pub const FILTER_DEPTH_MAX: usize = 16;
/// Longest field path in bytes (`a.b.c`).
pub const FIELD_PATH_BYTES_MAX: usize = 256;
/// Most segments in a field path.
pub const FIELD_PATH_SEGMENTS_MAX: usize = 16;
/// Longest group key (aggregate) or index value key, bytes after escaping. A record whose
/// key would be longer is not applied to the view (deterministically, live and rebuilt
/// alike) and is counted in the version's `skipped_records`.
pub const ROW_KEY_BYTES_MAX: usize = 4 * 1024;
/// Most records a processor applies in one atomic commit of the state store.
pub const APPLY_BATCH_RECORDS: usize = 4096;
/// Most bytes of keys and values a processor reads from the log for one commit.
pub const APPLY_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes of keys and values in the batches kept for one source partition (see
/// [`crate::batch`]; their parsed members take about as much again). A batch is dropped
/// once every view of the stream has passed it, or, beyond this, oldest first.
pub const SHARED_BATCH_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Decoded group partials and multiset counts a processor keeps between batches
/// ([`crate::apply::StateCache`]; it is the only writer of those keys). Cleared when exceeded.
pub const STATE_CACHE_ENTRIES_MAX: usize = 200_000;
/// Default longest time between a processor's checkpoints while it has changes, ms (bounds
/// what a restart replays; see [`crate::state`]).
pub const CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// First wait before retrying a failed checkpoint (e.g. a full disk), ms; doubles per
/// failure in a row up to [`CHECKPOINT_RETRY_MAX_MS`].
pub const CHECKPOINT_RETRY_MIN_MS: u64 = 50;
/// Longest wait between attempts of a failing checkpoint, ms.
pub const CHECKPOINT_RETRY_MAX_MS: u64 = 5_000;
/// While checkpoints fail, a processor keeps applying until its pending delta reaches this
/// many times `checkpoint_bytes`, then pauses until a checkpoint succeeds (bounded memory).
pub const CHECKPOINT_PENDING_FACTOR: usize = 4;
/// Default bytes of changes after which a processor checkpoints at once (bounds the memory
/// of the pending delta).
pub const CHECKPOINT_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of one checkpoint chunk in the store (a checkpoint is one or more chunks).
pub const CHECKPOINT_CHUNK_BYTES: usize = 1024 * 1024;
/// Deltas since the last full image may grow to twice its size, and at least to this,
/// before a checkpoint writes a full image instead (bounds store size and restart time).
pub const COMPACT_MIN_BYTES: usize = 64 * 1024 * 1024;
/// Default most bytes of state one processor holds in memory (keys, values, ~64 bytes of
/// bookkeeping per entry); beyond it the processor stops with `StateTooLarge`.
pub const PARTITION_STATE_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// Largest `limit` of one scan, rows (index views: primary keys).
pub const READ_LIMIT_MAX: usize = 10_000;
/// Default `limit` of a scan.
pub const READ_LIMIT_DEFAULT: usize = 100;
/// Most keys in one multi-key read.
pub const READ_KEYS_MAX: usize = 1_000;
/// Longest wait of a read for its consistency token, ms.
pub const READ_TIMEOUT_MS_MAX: u64 = 60_000;
/// Longest a read waits for the version it is routed to to reach the offsets the view has
/// already shown (monotonic reads across a switch or a rollout), ms.
pub const READ_FLOOR_WAIT_MS: u64 = 5_000;
/// Largest consistency token, bytes of its URL-safe text (the API contract's limit: one
/// stream's entry at the most partitions always fits).
pub const TOKEN_BYTES_MAX: usize = logbook_api::limits::TOKEN_BYTES_MAX;
/// Longest a `switch` waits for the target version to catch up with the current one, ms.
pub const SWITCH_WAIT_MS_MAX: u64 = 60_000;

const _: () = assert!(READ_LIMIT_DEFAULT <= READ_LIMIT_MAX);
const _: () = assert!(READ_KEYS_MAX <= READ_LIMIT_MAX);
const _: () = assert!(
    VERSIONS_PER_VIEW_MAX >= 2,
    "a rebuild needs a second version"
);
const _: () = assert!(
    VIEWS_MAX * VERSIONS_PER_VIEW_MAX * 4 <= PROCESSORS_MAX,
    "every view may rebuild over a 4-partition stream"
);
const _: () = assert!(
    ROW_KEY_BYTES_MAX < 60 * 1024,
    "fjall keys are at most 64 KiB"
);
const _: () = assert!(FIELD_PATH_BYTES_MAX <= SPEC_BYTES_MAX);
const _: () = assert!(CHECKPOINT_CHUNK_BYTES <= CHECKPOINT_BYTES);
const _: () = assert!(
    CHECKPOINT_CHUNK_BYTES < u32::MAX as usize / 2,
    "chunk entries carry u32 lengths"
);

/// Rows that differ an audit reports (the first ones, in key order).
pub const AUDIT_DIFFERENCES_MAX: usize = 3;
/// Rounds an audit's recomputation chases the live version without holding it, before the
/// last catch-up under the hold (each round has only what arrived during the one before).
pub const AUDIT_CATCH_UP_ROUNDS: usize = 3;

/// Derived streams per node (decision 0031).
pub const DERIVED_STREAMS_MAX: usize = 64;
/// Longest derived stream name, bytes: its request ids must fit
/// [`logbook_log::dedup::REQUEST_ID_BYTES_MAX`] with a generation, a partition, an input
/// range and a group in them.
pub const DERIVED_NAME_BYTES_MAX: usize = 48;
/// Input records of one derived stream batch (one request per target partition).
pub const DERIVED_BATCH_RECORDS: usize = 512;
/// Input bytes (keys and values) one derived stream batch reads, about.
pub const DERIVED_BATCH_BYTES: usize = 4 * 1024 * 1024;

const _: () = assert!(
    // "dv:" name ":" generation ":" partition ":" from "-" to ":" group
    3 + DERIVED_NAME_BYTES_MAX + 1 + 20 + 1 + 3 + 1 + 20 + 1 + 20 + 1 + 3
        <= logbook_log::dedup::REQUEST_ID_BYTES_MAX,
    "a derived stream's request ids fit the log's limit"
);
/// Bytes of state a stateful derived stream holds in memory per source partition (a
/// uniqueness constraint's values and their winners' keys, a ledger's accounts); past it
/// the processor stops with `StateTooLarge`.
pub const DERIVED_STATE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Longest transfer id a ledger copies into its outputs, bytes of JSON (a longer one is
/// rejected), so that two outputs per request stay within one log batch.
pub const LEDGER_ID_BYTES_MAX: usize = 256;

const _: () = assert!(
    // A ledger emits at most two records per input, each an id, three account keys and a
    // few numbers and member names.
    DERIVED_BATCH_RECORDS * 2 * (LEDGER_ID_BYTES_MAX + 3 * ROW_KEY_BYTES_MAX + 256)
        <= logbook_log::limits::BATCH_BYTES_MAX as usize,
    "a ledger batch's outputs to one partition fit one log batch"
);
const _: () = assert!(
    ROW_KEY_BYTES_MAX <= logbook_log::limits::KEY_BYTES_MAX as usize,
    "an account a ledger accepts is a key the log accepts"
);

const _: () = assert!(
    // Outputs may grow over inputs by a projection's member names and a new key per record,
    // and an outcome by its constrained value (the input key) and its winner's key.
    DERIVED_BATCH_BYTES
        + DERIVED_BATCH_RECORDS
            * (SPEC_FIELDS_MAX * FIELD_PATH_BYTES_MAX + 3 * ROW_KEY_BYTES_MAX + 256)
        <= logbook_log::limits::BATCH_BYTES_MAX as usize,
    "a derived batch's outputs to one partition fit one log batch"
);
