//! Errors on the wire: the RFC 9457 problem document and its stable codes.
//!
//! Every error answer of the API is `application/problem+json` with a stable `code` (the
//! contract clients match on). Each code has exactly one HTTP status and one title, both
//! fixed here ([`ProblemCode::status`], [`ProblemCode::title`]); the `detail` says what
//! happened with the values involved, and `field` names the request field at fault.
//!
//! ```
//! use logbook_api::{Problem, ProblemCode};
//! let p: Problem = serde_json::from_str(r#"{"type": "urn:logbook:problem:serialization_failure",
//!     "code": "serialization_failure", "title": "Serialization failure: retry the whole transaction",
//!     "status": 409, "detail": "write-write conflict on key \"a\"", "retryable": true}"#).unwrap();
//! assert_eq!(p.known_code(), Some(ProblemCode::SerializationFailure));
//! assert_eq!(ProblemCode::SerializationFailure.status(), 409);
//! ```

use serde::{Deserialize, Serialize};

/// The `Content-Type` of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The prefix of a problem's `type`: `urn:logbook:problem:<code>`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:logbook:problem:";

/// The problem document, as sent (and as clients decode it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// `urn:logbook:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Stable error code, e.g. `serialization_failure`.
    pub code: String,
    /// Short summary of the code.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened.
    pub detail: String,
    /// The offending request field: a JSON path in the body, a query parameter, a path
    /// segment or a header name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Transactions: whether re-running the whole transaction may succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// `misdirected_request`: the URL the request belongs at (the same path and query on
    /// the node that owns the transaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The schema registry's routes (`/v1/schema-registry/…`): Confluent Schema Registry's
    /// `error_code` (e.g. 40401 subject not found, 409 incompatible, 42201 invalid schema),
    /// so Confluent's clients report the error as they would Confluent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// With `error_code`: Confluent's `message` member, the same text as `detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Problem {
    /// The document for `code`: its type, title and status, with `detail`.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Problem {
            type_: format!("{PROBLEM_TYPE_PREFIX}{}", code.as_str()),
            code: code.as_str().to_string(),
            title: code.title().to_string(),
            status: code.status(),
            detail: detail.into(),
            field: None,
            retryable: None,
            location: None,
            error_code: None,
            message: None,
        }
    }

    /// The code, if this version of the crate knows it (a newer server may send others).
    pub fn known_code(&self) -> Option<ProblemCode> {
        self.code.parse().ok()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.detail)?;
        if let Some(field) = &self.field {
            write!(f, " [field: {field}]")?;
        }
        Ok(())
    }
}

/// A code this crate does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown problem code {0:?}")]
pub struct UnknownCode(pub String);

macro_rules! problem_codes {
    ($($(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal, $title:literal),)*) => {
        /// Every stable error code of the API, each with its one HTTP status and title.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ProblemCode {
            $($(#[$doc])* $variant,)*
        }

        impl ProblemCode {
            /// Every code, in the order declared.
            pub const ALL: &'static [ProblemCode] = &[$(ProblemCode::$variant,)*];

            /// The code as sent, e.g. `"serialization_failure"`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ProblemCode::$variant => $code,)* }
            }

            /// The HTTP status every answer with this code has.
            pub const fn status(self) -> u16 {
                match self { $(ProblemCode::$variant => $status,)* }
            }

            /// The fixed, short summary of the code.
            pub const fn title(self) -> &'static str {
                match self { $(ProblemCode::$variant => $title,)* }
            }
        }

        impl std::str::FromStr for ProblemCode {
            type Err = UnknownCode;
            fn from_str(s: &str) -> Result<Self, UnknownCode> {
                match s {
                    $($code => Ok(ProblemCode::$variant),)*
                    other => Err(UnknownCode(other.to_string())),
                }
            }
        }
    };
}

problem_codes! {
    // Requests in general.
    /// A query parameter, path segment or header is malformed; `field` names it.
    InvalidRequest = ("invalid_request", 400, "Invalid request"),
    /// The body is not JSON of the expected shape; `field` is its JSON path.
    InvalidJson = ("invalid_json", 400, "Request body is not valid JSON of the expected shape"),
    /// The body is JSON, but not I-JSON (RFC 7493): a member name given twice in one object,
    /// an integer outside the 64-bit range, a number beyond a double, a lone surrogate, or a
    /// stored value nested deeper than [`crate::limits::JSON_DEPTH_MAX`]; `field` is the
    /// JSON path of the offending value. Nothing was done.
    NotIJson = ("not_i_json", 400, "Request body is not I-JSON (RFC 7493)"),
    /// A request that needs a body (`POST /v1/commits`) was sent without one.
    BodyRequired = ("body_required", 400, "Request body required"),
    /// The body exceeds [`crate::limits::BODY_BYTES_MAX`].
    PayloadTooLarge = ("payload_too_large", 413, "Request body too large"),
    /// The request headers exceed the server's limit.
    HeadersTooLarge = ("headers_too_large", 431, "Request headers too large"),
    /// The request target (path and query) exceeds the server's limit (16 KiB).
    UriTooLong = ("uri_too_long", 414, "Request URI too long"),
    /// The request head is not HTTP/1.1 the server can parse (a method, request target,
    /// version or header line that breaks the grammar of RFC 9112, a bad `Content-Length` or
    /// `Transfer-Encoding`); `field` names the part when it is known. Nothing was done; the
    /// connection is closed.
    MalformedRequest = ("malformed_request", 400, "Malformed request head"),
    /// A path segment is not UTF-8 once percent-decoded; `field` names the segment (`key`,
    /// `stream`, ...).
    InvalidPathSegment = ("invalid_path_segment", 400, "Invalid path segment"),
    /// A request body without `Content-Type: application/json` (or `application/*+json`);
    /// `field` is `Content-Type`. Closes blind cross-site form posts.
    UnsupportedMediaType = ("unsupported_media_type", 415, "Request body must be JSON"),
    /// The `Host` header names a host the server is not configured to answer for (DNS
    /// rebinding guard); `field` is `Host`.
    HostNotAllowed = ("host_not_allowed", 421, "Host not allowed"),
    /// No valid credentials: no token, an unknown, expired or revoked one. The answer carries
    /// `WWW-Authenticate`.
    Unauthenticated = ("unauthenticated", 401, "Authentication required"),
    /// The principal lacks the scope the request needs; `detail` names it.
    Forbidden = ("forbidden", 403, "Forbidden: a scope is missing"),
    /// No token with that id.
    UnknownToken = ("unknown_token", 404, "Unknown token"),
    /// The node holds the most tokens it keeps ([`crate::limits::TOKENS_MAX`]); revoked ones
    /// count too.
    TooManyTokens = ("too_many_tokens", 409, "Too many tokens"),
    /// Revoking the token would leave no live `admin` token (unrevoked and unexpired), and
    /// so no one able to make tokens again; `field` is `id`. Nothing was done: create
    /// another admin token first.
    LastAdminToken = ("last_admin_token", 409, "The last admin token"),
    /// No route matches the path.
    NoRoute = ("no_route", 404, "No such route"),
    /// The path does not take this method.
    MethodNotAllowed = ("method_not_allowed", 405, "Method not allowed"),
    /// The data directory is still being opened (recovery); retry after `Retry-After`.
    NotReady = ("not_ready", 503, "Not ready"),
    /// Too many requests in flight; retry after `Retry-After`.
    ServerBusy = ("server_busy", 503, "Server busy"),
    /// Too many connections; retry after `Retry-After`.
    TooManyConnections = ("too_many_connections", 503, "Too many connections"),
    /// The request body did not arrive in time: within `body_read_timeout_ms` plus one
    /// second per `body_rate_min_bytes_per_s` bytes received. Nothing was done; the
    /// connection is closed.
    BodyTimeout = ("body_timeout", 408, "Request body too slow"),
    /// The client's address holds as many connections as it may (`connections_per_client_max`);
    /// retry after `Retry-After`, or reuse an open connection.
    ConnectionQuotaExceeded = ("connection_quota_exceeded", 429, "Too many connections from this client"),
    /// The principal (its token, or its address with authentication off) has as many
    /// requests in flight (`requests_per_principal_max`) or connections
    /// (`connections_per_principal_max`) as it may; `detail` names the quota. Retry after
    /// `Retry-After`.
    PrincipalQuotaExceeded = ("principal_quota_exceeded", 429, "Quota of the principal exceeded"),
    /// The principal holds as many open interactive transactions as it may
    /// (`txns_per_principal_max`); commit or abort one, or retry after `Retry-After`.
    TransactionQuotaExceeded = ("transaction_quota_exceeded", 429, "Too many open transactions for this principal"),
    /// As many long polls (record reads with `wait_ms`, reads waiting for a consistency
    /// `token`) are waiting as the node allows (`long_polls_max`); retry after `Retry-After`.
    LongPollBudgetExhausted = ("long_poll_budget_exhausted", 429, "Too many long polls"),
    /// As many push-tail subscriptions (`GET /v1/streams/{stream}/records/events`) are open
    /// as the node allows (64); retry after `Retry-After`.
    SubscriptionBudgetExhausted = ("subscription_budget_exhausted", 429, "Too many push-tail subscriptions"),
    /// The server is shutting down.
    Closed = ("closed", 503, "The server is shutting down"),
    /// A bug or a lost task on the server (logged there).
    InternalError = ("internal_error", 500, "Internal error"),
    // Cluster mode.
    /// The route is not available on a node of a cluster yet (transactions and key-value
    /// reads come with the cluster's certifier).
    NotSupportedInCluster = ("not_supported_in_cluster", 501, "Not supported on a cluster node yet"),
    /// The replicated log (NATS JetStream) cannot take the request now (an election, no
    /// servers reachable); nothing was stored. Retry after `Retry-After`.
    LogUnavailable = ("log_unavailable", 503, "The replicated log is unavailable"),
    /// The replicated log did not answer whether an append was stored: it may or may not
    /// be. Retry with the same `Idempotency-Key`, or read the stream to find out.
    OutcomeUnknown = ("outcome_unknown", 504, "The outcome of the append is unknown"),
    /// The replicated log's engine failed the request (logged on the node).
    LogBackendFailed = ("log_backend_failed", 502, "The replicated log's engine failed"),
    /// etcd, where nodes register, cannot be reached: the node list is unknown now (the log
    /// and the views are not affected). Retry after `Retry-After`.
    MembershipUnavailable = ("membership_unavailable", 503, "Cluster membership unavailable"),
    // Streams and records.
    /// A record's value is over the log's limit.
    RecordTooLarge = ("record_too_large", 413, "Record too large"),
    /// A key is over its limit.
    KeyTooLarge = ("key_too_large", 413, "Key too large"),
    /// A record has too many headers.
    TooManyHeaders = ("too_many_headers", 413, "Too many record headers"),
    /// A record header is over its limit.
    HeaderTooLarge = ("header_too_large", 413, "Record header too large"),
    /// An append with no records.
    EmptyBatch = ("empty_batch", 400, "No records"),
    /// More records in one append than [`crate::limits::BATCH_RECORDS_MAX`].
    BatchTooManyRecords = ("batch_too_many_records", 413, "Too many records in one request"),
    /// One append's records are over the log's batch limit in bytes.
    BatchTooLarge = ("batch_too_large", 413, "Batch too large"),
    /// A record's `timestamp_ms` is too far from the server's clock.
    TimestampOutOfRange = ("timestamp_out_of_range", 400, "Timestamp out of range"),
    /// The `Idempotency-Key` is not 1..=128 printable ASCII bytes.
    InvalidRequestId = ("invalid_request_id", 400, "Invalid request id"),
    /// The `Idempotency-Key` was already used for a different request.
    RequestIdConflict = ("request_id_conflict", 409, "Request id already used for a different request"),
    /// A record header name is reserved for the log.
    ReservedHeader = ("reserved_header", 400, "Reserved record header"),
    /// The stream is internal (its name starts with `_`): it can be read, not written.
    ReservedStream = ("reserved_stream", 403, "Reserved stream"),
    /// The `traceparent` header is not W3C trace context.
    InvalidTraceparent = ("invalid_traceparent", 400, "Invalid traceparent"),
    /// A stream name outside `[A-Za-z0-9._-]{1,128}`.
    InvalidStreamName = ("invalid_stream_name", 400, "Invalid stream name"),
    /// Stream settings out of range; `field` names the setting.
    InvalidStreamConfig = ("invalid_stream_config", 400, "Invalid stream settings"),
    /// The node holds as many streams as it may.
    TooManyStreams = ("too_many_streams", 409, "Too many streams"),
    /// The stream's partitions would take the node over its partition budget
    /// (`partitions_max`, shown in `GET /v1/streams`); `field` is `partitions`.
    TooManyPartitions = ("too_many_partitions", 409, "Partition budget exhausted"),
    /// A record of a stream that declares personal data lacks its data subject at the
    /// declared pointer, or names one of the wrong shape (1..=64 bytes of
    /// `[A-Za-z0-9._:@-]`, or a non-negative integer); or a data subject id in a path has
    /// the wrong shape. `field` names where. Nothing was stored.
    InvalidDataSubject = ("invalid_data_subject", 400, "Invalid data subject"),
    /// The stream exists with other settings.
    StreamExists = ("stream_exists", 409, "Stream exists with other settings"),
    /// No such stream.
    UnknownStream = ("unknown_stream", 404, "Unknown stream"),
    /// No such partition in the stream.
    UnknownPartition = ("unknown_partition", 404, "Unknown partition"),
    /// A read from an offset outside the partition's retained range.
    OffsetOutOfRange = ("offset_out_of_range", 400, "Offset out of range"),
    /// The disk is full; nothing was written.
    DiskFull = ("disk_full", 507, "Disk full"),
    /// An I/O error on the server.
    IoError = ("io_error", 500, "I/O error"),
    /// Data on disk failed its checks.
    Corrupt = ("corrupt", 500, "Data on disk is damaged"),
    /// A partition refuses writes after a storage failure until the server reopens it.
    PartitionPoisoned = ("partition_poisoned", 503, "Partition refuses writes after a storage failure"),
    /// The data directory cannot be used (locked, missing).
    DataDirectoryUnavailable = ("data_directory_unavailable", 503, "Data directory unavailable"),
    // Transactions and key-value reads.
    /// The key has no value.
    KeyNotFound = ("key_not_found", 404, "Key not found"),
    /// No open transaction by that handle.
    UnknownTransaction = ("unknown_transaction", 404, "Unknown transaction"),
    /// The transaction was idle too long and was aborted.
    TransactionExpired = ("transaction_expired", 410, "Transaction expired"),
    /// The transaction has ended.
    TransactionClosed = ("transaction_closed", 410, "Transaction is closed"),
    /// The transaction already committed (a commit or abort after its commit, or racing
    /// it); `detail` names the commit's offset.
    TransactionCommitted = ("transaction_committed", 409, "Transaction already committed"),
    /// The transaction already ended without committing (aborted, or its commit failed).
    TransactionAborted = ("transaction_aborted", 409, "Transaction already aborted"),
    /// As many transactions are open as the server allows; retry after `Retry-After`.
    TooManyTransactions = ("too_many_transactions", 429, "Too many open transactions"),
    /// A conflict: retry the whole transaction.
    SerializationFailure = ("serialization_failure", 409, "Serialization failure: retry the whole transaction"),
    /// The snapshot is older than the certifier remembers: retry the whole transaction.
    TransactionTooOld = ("transaction_too_old", 409, "Transaction too old: retry the whole transaction"),
    /// The principal's share of the certifier's memory is full of its own commits that
    /// open transactions still need: nothing was written; retry the whole transaction after
    /// `Retry-After` (other principals are not affected).
    CertifierShareFull = ("certifier_share_full", 429, "Certifier memory share full: retry later"),
    /// The certifier's memory is full of commits that open transactions still need:
    /// nothing was written; retry the whole transaction after `Retry-After`.
    CertifierFull = ("certifier_full", 503, "Certifier memory full: retry later"),
    /// A one-shot read or commit names a snapshot behind the snapshot window: read again
    /// and commit again.
    SnapshotTooOld = ("snapshot_too_old", 409, "Snapshot too old: retry the whole transaction"),
    /// A one-shot read or commit that cannot hold against the log (a snapshot ahead of it,
    /// a declared version the key did not have, more keys or ranges than the limits);
    /// `field` names the part at fault.
    UnprocessableRequest = ("unprocessable_request", 422, "Request does not hold against the log"),
    /// A read at a snapshot (`POST /v1/kv/read`) whose answer would pass its byte budget
    /// ([`crate::limits::KV_READ_ANSWER_BYTES_MAX`]) where it cannot be cut: the values of
    /// its `keys`, or one row alone; `field` names the entry (`keys[7]`, `ranges[0]`).
    /// Nothing was read: ask for fewer keys at once.
    AnswerTooLarge = ("answer_too_large", 413, "Answer too large"),
    /// An `if_version` did not hold at commit.
    VersionMismatch = ("version_mismatch", 409, "Version mismatch"),
    /// An `if_absent` key exists at commit.
    KeyExists = ("key_exists", 409, "Key exists"),
    /// An increment of a value that is not a JSON integer.
    NotAnInteger = ("not_an_integer", 409, "Value is not an integer"),
    /// An increment would overflow `i64`.
    IncrementOverflow = ("increment_overflow", 409, "Increment overflows"),
    /// A value is over the transaction store's limit.
    ValueTooLarge = ("value_too_large", 413, "Value too large"),
    /// A transaction buffers more than it may.
    TransactionTooLarge = ("transaction_too_large", 413, "Transaction too large"),
    /// A write in a read-only transaction.
    ReadOnlyTransaction = ("read_only_transaction", 400, "Transaction is read-only"),
    /// An operation the transaction cannot take.
    InvalidOperation = ("invalid_operation", 400, "Invalid operation"),
    /// The transaction store refuses work after a failed commit until the server reopens it.
    StorePoisoned = ("store_poisoned", 503, "Transaction store refuses work after a failed commit"),
    /// On a cluster: this node has not applied the commit stream up to the request's
    /// snapshot within `timeout_ms` (a leader: within half a second); `retryable` with
    /// `Retry-After` — the same request passes once the node has caught up.
    SnapshotAhead = ("snapshot_ahead", 422, "Snapshot ahead of this node"),
    /// On a cluster: the node that certifies commits (the leader elected through etcd) is
    /// not known or just changed; nothing of the request was committed. Retry after
    /// `Retry-After`.
    LeaderUnavailable = ("leader_unavailable", 503, "The certifier's leader is unavailable"),
    /// On a cluster: the interactive transaction lives on another node (the one that began
    /// it, named in its handle); `location` is this request's URL on that node. Nothing
    /// was done; send the request there.
    MisdirectedRequest = ("misdirected_request", 421, "The transaction lives on another node"),
    /// The commit stream cannot be used.
    CommitStream = ("commit_stream", 500, "Commit stream is damaged"),
    // Consistency tokens and views.
    /// A consistency token that does not decode or is over its limit.
    InvalidToken = ("invalid_token", 400, "Invalid consistency token"),
    /// A token of a dropped and recreated stream.
    TokenIncarnation = ("token_incarnation", 409, "Token of another incarnation"),
    /// The view did not apply the token within `timeout_ms`; the outcome of the read is
    /// only late, retry it.
    ConsistencyTimeout = ("consistency_timeout", 504, "The view did not reach the consistency token in time"),
    /// A view spec that does not parse or check; `field` is its dotted path.
    InvalidViewSpec = ("invalid_view_spec", 400, "Invalid view spec"),
    /// A view name outside `[A-Za-z0-9._-]{1,128}`.
    InvalidViewName = ("invalid_view_name", 400, "Invalid view name"),
    /// The view exists with another spec.
    ViewExists = ("view_exists", 409, "View exists with another spec"),
    /// The node holds as many views as it may.
    TooManyViews = ("too_many_views", 409, "Too many views"),
    /// The view has as many versions as it may.
    TooManyVersions = ("too_many_versions", 409, "Too many versions of the view"),
    /// The node runs as many view processors as it may.
    TooManyProcessors = ("too_many_processors", 409, "Too many view processors"),
    /// No such view.
    UnknownView = ("unknown_view", 404, "Unknown view"),
    /// No such version of the view.
    UnknownVersion = ("unknown_version", 404, "Unknown view version"),
    /// The version cannot be used this way (e.g. dropping the current one).
    VersionUnavailable = ("version_unavailable", 409, "View version cannot be used this way"),
    /// The target version of a switch has not caught up; retry later.
    NotCaughtUp = ("not_caught_up", 409, "The target version has not caught up"),
    // Derived streams (decision 0031).
    /// A derived stream spec that does not parse or check (a cycle included); `field` is
    /// its dotted path.
    InvalidDerivedSpec = ("invalid_derived_spec", 400, "Invalid derived stream spec"),
    /// The derived stream exists with another spec.
    DerivedStreamExists = ("derived_stream_exists", 409, "Derived stream exists with another spec"),
    /// The node runs as many derived streams as it may.
    TooManyDerivedStreams = ("too_many_derived_streams", 409, "Too many derived streams"),
    /// No such derived stream.
    UnknownDerivedStream = ("unknown_derived_stream", 404, "Unknown derived stream"),
    /// A view's state exceeds its memory limit.
    ViewStateTooLarge = ("view_state_too_large", 507, "View state exceeds its memory limit"),
    /// The view state store failed.
    ViewStoreError = ("view_store_error", 500, "View state store failed"),
    // Consumer groups.
    /// No such consumer group.
    UnknownGroup = ("unknown_group", 404, "Unknown consumer group"),
    /// The member is not in the group under this epoch (it left, was removed after its
    /// session timed out, or joined again since): nothing was done; join again.
    MemberFenced = ("member_fenced", 409, "Member fenced: join again"),
    /// A commit names a partition the member does not own (now): nothing was committed.
    PartitionNotAssigned = ("partition_not_assigned", 409, "Partition not assigned to this member"),
    /// A commit would move a partition's committed offset back: nothing was committed.
    OffsetBehindCommit = ("offset_behind_commit", 409, "Offset behind the committed one"),
    /// The group has members: a reset or a delete needs a group nobody consumes.
    GroupActive = ("group_active", 409, "Group has members"),
    /// The group reads another stream than the join names.
    GroupStreamMismatch = ("group_stream_mismatch", 409, "Group reads another stream"),
    /// The node holds as many groups, or the group as many members, as allowed.
    TooManyGroups = ("too_many_groups", 409, "Too many consumer groups or members"),
    /// The principal (its token, or its address with authentication off) holds as many
    /// consumer groups made by its joins (`groups_per_principal_max`) or group members
    /// (`group_members_per_principal_max`) as it may; `detail` names the quota. A group is
    /// freed when it is deleted, a member when it leaves or its session times out: nothing
    /// frees one by waiting alone, so no `Retry-After`.
    GroupQuotaExceeded = ("group_quota_exceeded", 429, "Too many consumer groups or members for this principal"),
    // The schema registry (`/v1/schema-registry/…`): each answer also carries Confluent's
    // `error_code` and `message`.
    /// No such subject (or only a soft-deleted one); `error_code` 40401.
    SubjectNotFound = ("subject_not_found", 404, "Subject not found"),
    /// The subject has no such version (or it is soft-deleted); `error_code` 40402.
    SchemaVersionNotFound = ("schema_version_not_found", 404, "Schema version not found"),
    /// No schema has that id, or the schema is not registered under the subject;
    /// `error_code` 40403.
    SchemaNotFound = ("schema_not_found", 404, "Schema not found"),
    /// A soft delete of a subject already soft-deleted; `error_code` 40404.
    SubjectSoftDeleted = ("subject_soft_deleted", 404, "Subject already soft-deleted"),
    /// A permanent delete of a subject not soft-deleted first; `error_code` 40405.
    SubjectNotSoftDeleted = ("subject_not_soft_deleted", 404, "Subject not soft-deleted first"),
    /// A soft delete of a version already soft-deleted; `error_code` 40406.
    SchemaVersionSoftDeleted = ("schema_version_soft_deleted", 404, "Schema version already soft-deleted"),
    /// A permanent delete of a version not soft-deleted first; `error_code` 40407.
    SchemaVersionNotSoftDeleted = ("schema_version_not_soft_deleted", 404, "Schema version not soft-deleted first"),
    /// The subject has no compatibility level of its own; `error_code` 40408.
    SubjectLevelNotFound = ("subject_level_not_found", 404, "Subject has no compatibility level of its own"),
    /// The schema is incompatible with the subject's earlier ones under its level;
    /// `error_code` 409, `detail` says which version and field.
    SchemaIncompatible = ("schema_incompatible", 409, "Schema incompatible with an earlier version"),
    /// The schema does not parse as its type (or names references); `error_code` 42201.
    InvalidSchema = ("invalid_schema", 422, "Invalid schema"),
    /// A version that is not 1..=2^31-1, `latest` or -1; `error_code` 42202.
    InvalidSchemaVersion = ("invalid_schema_version", 422, "Invalid schema version"),
    /// A compatibility level not one of the seven; `error_code` 42203.
    InvalidCompatibilityLevel = ("invalid_compatibility_level", 422, "Invalid compatibility level"),
    /// A subject name the registry does not take, or an operation it does not support (a
    /// mode other than READWRITE, past its limits); `error_code` 42205.
    SchemaOperationNotPermitted = ("schema_operation_not_permitted", 422, "Schema registry operation not permitted"),
    /// A record of the registry's stream `_schemas` does not apply (damage); `error_code`
    /// 50001.
    SchemaRegistryDamaged = ("schema_registry_damaged", 500, "Schema registry state is damaged"),
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &code in ProblemCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(code.as_str().parse::<ProblemCode>(), Ok(code));
            assert!((400..600).contains(&code.status()), "{code}");
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
        assert_eq!(
            "no_such".parse::<ProblemCode>(),
            Err(UnknownCode("no_such".into()))
        );
    }

    #[test]
    fn a_problem_carries_its_codes_status_and_title() {
        let p = Problem::new(ProblemCode::KeyNotFound, "key \"a\" has no value");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:logbook:problem:key_not_found");
        assert_eq!(v["status"], 404);
        assert_eq!(v["title"], "Key not found");
        assert!(v.get("field").is_none());
        let back: Problem = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.known_code(), Some(ProblemCode::KeyNotFound));
    }
}
