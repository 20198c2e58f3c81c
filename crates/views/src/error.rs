//! The views crate's one error type.

use std::collections::BTreeMap;

/// Everything the views crate can fail with, grouped by what a caller can do:
///
/// * **bad input** (`UnknownKind`, `InvalidSpec`, `InvalidViewName`, `UnknownStream`,
///   `ViewExists`, `TooManyViews`, `TooManyVersions`, `TooManyProcessors`, `UnknownView`,
///   `UnknownVersion`, `InvalidToken`, `TokenTooLarge`, `TokenIncarnation`, `InvalidRead`,
///   `DerivedStreamExists`, `UnknownDerivedStream`, `TooManyDerivedStreams`):
///   nothing was changed; fix the request;
/// * **wait** (`ConsistencyTimeout`, `NotCaughtUp`): retry later (`is_retryable()`);
/// * **storage and state** (`StateTooLarge`, `Store`, `Corrupt`, `Log`, `Closed`).
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// `kind` is not one of `table`, `index`, `aggregate`.
    #[error(
        "invalid view spec: field `kind`: unknown kind {kind:?}; expected table, index or aggregate"
    )]
    UnknownKind {
        /// The kind given.
        kind: String,
    },
    /// A spec field is missing, of the wrong type, unknown, or out of its limits.
    #[error("invalid view spec: field `{field}`: {reason}")]
    InvalidSpec {
        /// Dotted path of the offending field in the spec (`aggregates.avg_delay.fn`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A view name that is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid view name {name:?}: {reason}")]
    InvalidViewName {
        /// The name given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The spec's `source` names a stream that does not exist.
    #[error("invalid view spec: field `source`: unknown stream {stream:?}")]
    UnknownStream {
        /// The stream named.
        stream: String,
    },
    /// A view of this name exists already.
    #[error("a view named {name:?} exists already")]
    ViewExists {
        /// The name.
        name: String,
    },
    /// [`crate::limits::VIEWS_MAX`] views exist already.
    #[error("too many views: the limit is {max}")]
    TooManyViews {
        /// The limit.
        max: usize,
    },
    /// [`crate::limits::VERSIONS_PER_VIEW_MAX`] versions of the view exist already.
    #[error("view {view:?} has {max} versions already; drop one first")]
    TooManyVersions {
        /// The view.
        view: String,
        /// The limit.
        max: usize,
    },
    /// Starting the processors would pass [`crate::limits::PROCESSORS_MAX`].
    #[error("too many processors: {wanted} wanted, the limit is {max}")]
    TooManyProcessors {
        /// Processors there would be.
        wanted: usize,
        /// The limit.
        max: usize,
    },
    /// No view of this name.
    #[error("unknown view {name:?}")]
    UnknownView {
        /// The name.
        name: String,
    },
    /// The view has no such version (or it may not be used this way, e.g. dropping the current one).
    #[error("view {view:?}: version {version}: {reason}")]
    UnknownVersion {
        /// The view.
        view: String,
        /// The version.
        version: u64,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A consistency token that does not decode.
    #[error("invalid consistency token: {reason}")]
    InvalidToken {
        /// What is wrong.
        reason: String,
    },
    /// A token longer than [`crate::limits::TOKEN_BYTES_MAX`] would be made.
    #[error("consistency token would be {bytes} bytes; the limit is {max}")]
    TokenTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The token and the view name different incarnations of the view's source stream (it
    /// was dropped and created again): either the view was built on the dropped one (the
    /// token is newer), or the token's write was in the dropped one (the token is older).
    #[error("{}", token_incarnation_text(view, stream, *token, *built_on))]
    TokenIncarnation {
        /// The view.
        view: String,
        /// The source stream.
        stream: String,
        /// Incarnation in the token.
        token: u64,
        /// The incarnation the view was built on.
        built_on: u64,
    },
    /// A read's parameters are out of their limits or inconsistent.
    #[error("invalid read: parameter `{parameter}`: {reason}")]
    InvalidRead {
        /// The parameter (`limit`, `keys`, `timeout_ms`, `after`...).
        parameter: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The view did not apply the token's offsets within `timeout_ms`.
    #[error(
        "view {view:?} did not reach the consistency token within {timeout_ms} ms (applied {applied:?}, wanted {wanted:?})"
    )]
    ConsistencyTimeout {
        /// The view.
        view: String,
        /// The bound waited.
        timeout_ms: u64,
        /// Applied offsets (partition → next offset) when giving up.
        applied: BTreeMap<u32, u64>,
        /// Offsets the token asked for.
        wanted: BTreeMap<u32, u64>,
    },
    /// A switch target did not catch up with the current version in time.
    #[error("view {view:?}: version {version} is {behind} records behind the current version")]
    NotCaughtUp {
        /// The view.
        view: String,
        /// The target version.
        version: u64,
        /// Records behind, summed over partitions.
        behind: u64,
    },
    /// A processor's in-memory state would exceed its limit (`ViewsConfig::state_bytes_max`):
    /// the processor stops; the version keeps serving what it has.
    #[error(
        "view {view:?}: version {version}: partition {partition}: state would hold {bytes} bytes in memory; the limit is {max}"
    )]
    StateTooLarge {
        /// The view.
        view: String,
        /// The version.
        version: u64,
        /// The source partition.
        partition: u32,
        /// Bytes it would hold.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The state store failed.
    #[error("view state store: {op}: {reason}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The store's message.
        reason: String,
    },
    /// Stored view state that does not decode.
    #[error("view state is damaged: {what}: {reason}")]
    Corrupt {
        /// Which state.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A derived stream of this name exists already with another spec.
    #[error("a derived stream named {name:?} exists already with another spec")]
    DerivedStreamExists {
        /// The name.
        name: String,
    },
    /// No derived stream of this name.
    #[error("unknown derived stream {name:?}")]
    UnknownDerivedStream {
        /// The name.
        name: String,
    },
    /// [`crate::limits::DERIVED_STREAMS_MAX`] derived streams exist already.
    #[error("too many derived streams: the limit is {max}")]
    TooManyDerivedStreams {
        /// The limit.
        max: usize,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] logbook_log::LogError),
    /// The views engine was closed.
    #[error("the views engine is closed")]
    Closed,
}

impl ViewError {
    /// Whether the same request may succeed later unchanged (a wait that ran out).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ViewError::ConsistencyTimeout { .. } | ViewError::NotCaughtUp { .. }
        )
    }

    /// Shorthand for [`ViewError::InvalidSpec`].
    pub(crate) fn spec(field: impl Into<String>, reason: impl Into<String>) -> ViewError {
        ViewError::InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`ViewError::Corrupt`].
    pub(crate) fn corrupt(what: &'static str, reason: impl Into<String>) -> ViewError {
        ViewError::Corrupt {
            what,
            reason: reason.into(),
        }
    }
}

/// Result with [`ViewError`].
pub type Result<T, E = ViewError> = std::result::Result<T, E>;

/// The message of [`ViewError::TokenIncarnation`]: which side is stale and how to recover.
/// Incarnation ids grow with creation time, so the larger one is the newer stream.
fn token_incarnation_text(view: &str, stream: &str, token: u64, built_on: u64) -> String {
    if token > built_on {
        format!(
            "view {view:?} was built on incarnation {built_on} of stream {stream:?}, which was \
             dropped; the token names the stream's new incarnation {token}. Drop the view and \
             create it again to read the new stream"
        )
    } else {
        format!(
            "the token names incarnation {token} of stream {stream:?}, which was dropped; view \
             {view:?} reads incarnation {built_on}, which does not hold that write. Read \
             without the token, or with a token of a write to the current stream"
        )
    }
}
