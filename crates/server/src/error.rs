//! Errors as RFC 9457 problem documents (`application/problem+json`).
//!
//! Every error the API returns has a stable `code` (the contract clients match on), a
//! `title` (fixed per code), the HTTP `status`, a `detail` that says what happened with the
//! numbers involved, and — where one request field is at fault — `field`, its path in the
//! request (`records[3].value`, a query parameter, a path segment or a header name).
//!
//! ```json
//! {"type": "urn:logbook:problem:request_id_conflict", "code": "request_id_conflict",
//!  "title": "Request id already used for a different request", "status": 409,
//!  "detail": "request id \"a1\" was already used ...", "field": "Idempotency-Key"}
//! ```
//!
//! The mapping from library errors lives here too: [`ApiError::from_log`] for
//! [`LogError`], `From<TxnError>` and `From<ViewError>` (a bad view spec is 400
//! `invalid_view_spec` with `field` the member's dotted path, e.g. `aggregates.n.fn`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logbook_log::LogError;
use logbook_txn::TxnError;
use logbook_views::ViewError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use ProblemCode as C;
pub use logbook_api::problem::{PROBLEM_JSON, Problem, ProblemCode};

/// An API error: turns into a problem+json response. Its status and title are its code's
/// ([`ProblemCode::status`], [`ProblemCode::title`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Stable code.
    pub code: ProblemCode,
    /// What happened, with the values involved.
    pub detail: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
    /// For transaction errors: whether re-running the whole transaction may succeed.
    pub retryable: Option<bool>,
    /// Seconds after which a retry makes sense (sent as `Retry-After`).
    pub retry_after_s: Option<u32>,
    /// Where the request belongs (`misdirected_request`): the problem's `location` member.
    pub location: Option<String>,
    /// Confluent Schema Registry's `error_code` (the schema registry's routes): sent with
    /// `message` (the detail) as extension members, which Confluent's clients read.
    pub error_code: Option<u32>,
}

impl ApiError {
    /// An error with a code and a detail.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            field: None,
            retryable: None,
            retry_after_s: None,
            location: None,
            error_code: None,
        }
    }

    /// The HTTP status of the code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Names the offending field.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds a `Retry-After` in seconds.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// 400 `invalid_request` naming a field.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::new(C::InvalidRequest, detail).field(field)
    }

    /// 400 `invalid_json`: a body that is not JSON of the expected shape.
    pub fn invalid_json(field: Option<String>, detail: impl Into<String>) -> Self {
        let mut e = ApiError::new(C::InvalidJson, detail);
        e.field = field;
        e
    }

    /// 413 `payload_too_large`: the body exceeds [`crate::limits::BODY_BYTES_MAX`].
    pub fn payload_too_large() -> Self {
        ApiError::new(
            C::PayloadTooLarge,
            format!(
                "the request body exceeds the limit of {} bytes; nothing was written",
                crate::limits::BODY_BYTES_MAX
            ),
        )
    }

    /// 414 `uri_too_long`: the request target (path and query) exceeds
    /// [`crate::limits::URI_BYTES_MAX`] (`bytes`: its length, or a lower bound).
    pub fn uri_too_long(bytes: usize) -> Self {
        ApiError::new(
            C::UriTooLong,
            format!(
                "the request target (path and query) is {bytes} bytes or more; the limit is {} \
                 (a key in the URL is at most 4096 bytes); nothing was done",
                crate::limits::URI_BYTES_MAX
            ),
        )
    }

    /// 503 `not_ready`: the data directory is still being opened (or recovery failed).
    pub fn not_ready(detail: impl Into<String>) -> Self {
        ApiError::new(C::NotReady, detail).retry_after(1)
    }

    /// 500 `internal_error` (a bug or a lost task; logged).
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError::new(C::InternalError, detail)
    }

    /// 500 `internal_error` for an answer's consistency token that cannot be made. A
    /// one-stream token always fits the limit (`logbook_api::limits::TOKEN_BYTES_MAX`), so
    /// this is a bug; the answer is refused rather than sent without its token, which
    /// would silently lose the client's session guarantees.
    pub fn token(e: &logbook_api::token::TokenError) -> Self {
        ApiError::internal(format!("cannot make the answer's consistency token: {e}"))
    }

    /// 400 `invalid_view_spec` for a spec found at `prefix` of the body (`""`: the body is
    /// the spec; `"spec"`: a rebuild's member), naming the field as a JSON path in the body
    /// and the reason in the API's words.
    pub fn view_spec(prefix: &str, field: &str, reason: &str) -> Self {
        let field = crate::serde_words::json_path(field, reason);
        let field = match (prefix.is_empty(), field.is_empty()) {
            (_, true) => prefix.to_string(),
            (true, false) => field,
            (false, false) => format!("{prefix}.{field}"),
        };
        let reason = crate::serde_words::api_words(reason);
        let detail = if field.is_empty() {
            format!("invalid view spec: {reason}")
        } else {
            format!("invalid view spec: {field}: {reason}")
        };
        let mut e = ApiError::new(C::InvalidViewSpec, detail);
        e.field = (!field.is_empty()).then_some(field);
        e
    }

    /// Maps a personal-data error (decision 0030). `record_field(i)` names record `i` of the
    /// request, as for [`ApiError::from_log`].
    pub fn from_privacy(
        e: crate::privacy::PrivacyError,
        i: usize,
        record_field: impl Fn(usize) -> String,
    ) -> Self {
        use crate::privacy::PrivacyError as P;
        let detail = e.to_string();
        match e {
            P::InvalidSubject { pointer, .. } => {
                let base = record_field(i);
                let at = if base.is_empty() {
                    format!("value{pointer}")
                } else {
                    format!("{base}.value{pointer}")
                };
                ApiError::new(
                    C::InvalidDataSubject,
                    format!("{detail}; nothing was written"),
                )
                .field(at)
            }
            P::InvalidDeclaration { field, .. } => {
                ApiError::new(C::InvalidStreamConfig, detail).field(field)
            }
            P::NoKeyStore => ApiError::new(C::InvalidStreamConfig, detail).field("personal_data"),
            P::Log(e) => ApiError::from_log(e, |_| String::new()),
            P::Poisoned { .. } => ApiError::new(C::PartitionPoisoned, detail),
            P::Io { .. } => ApiError::new(C::IoError, detail),
            P::Corrupt { .. } => ApiError::new(C::Corrupt, detail),
            P::TooManyKeys { .. }
            | P::MasterKey { .. }
            | P::WrongMasterKey { .. }
            | P::Missing(_)
            | P::Random(_)
            | P::Cipher(_) => ApiError::internal(detail),
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        let mut p = Problem::new(self.code, self.detail.clone());
        p.field = self.field.clone();
        p.retryable = self.retryable;
        p.location = self.location.clone();
        if let Some(code) = self.error_code {
            p.error_code = Some(code);
            p.message = Some(self.detail.clone());
        }
        p
    }

    /// Maps a log error. `record_field(i)` names record `i` of the request (for a batch
    /// `records[i]`, for a single record the empty string).
    pub fn from_log(e: LogError, record_field: impl Fn(usize) -> String) -> Self {
        let join = |i: usize, rest: &str| {
            let base = record_field(i);
            if base.is_empty() {
                rest.to_string()
            } else if rest.is_empty() {
                base
            } else {
                format!("{base}.{rest}")
            }
        };
        let detail = e.to_string();
        let (code, field): (ProblemCode, Option<String>) = match &e {
            LogError::RecordTooLarge { index, .. } => {
                (C::RecordTooLarge, Some(join(*index, "value")))
            }
            LogError::KeyTooLarge { index, .. } => (C::KeyTooLarge, Some(join(*index, "key"))),
            LogError::TooManyHeaders { index, .. } => {
                (C::TooManyHeaders, Some(join(*index, "headers")))
            }
            LogError::HeaderTooLarge { index, .. } => {
                (C::HeaderTooLarge, Some(join(*index, "headers")))
            }
            LogError::EmptyBatch => (C::EmptyBatch, Some("records".into())),
            LogError::BatchTooManyRecords { .. } => {
                (C::BatchTooManyRecords, Some("records".into()))
            }
            LogError::BatchTooLarge { .. } => (C::BatchTooLarge, Some("records".into())),
            LogError::TimestampOutOfRange { index, .. } => {
                (C::TimestampOutOfRange, Some(join(*index, "timestamp_ms")))
            }
            LogError::InvalidRequestId { .. } => {
                (C::InvalidRequestId, Some("Idempotency-Key".into()))
            }
            LogError::RequestIdConflict { .. } => {
                (C::RequestIdConflict, Some("Idempotency-Key".into()))
            }
            LogError::ReservedHeader { index, name } => (
                C::ReservedHeader,
                Some(join(*index, &format!("headers.{name}"))),
            ),
            LogError::InvalidTraceparent { .. } => {
                (C::InvalidTraceparent, Some("traceparent".into()))
            }
            LogError::InvalidStreamName { .. } => (C::InvalidStreamName, Some("stream".into())),
            LogError::InvalidConfig { field, .. } => {
                (C::InvalidStreamConfig, Some((*field).to_string()))
            }
            LogError::TooManyStreams { .. } => (C::TooManyStreams, None),
            LogError::StreamExists { .. } => (C::StreamExists, Some("stream".into())),
            LogError::UnknownStream { .. } => (C::UnknownStream, Some("stream".into())),
            LogError::UnknownPartition { .. } => (C::UnknownPartition, Some("partition".into())),
            LogError::OffsetOutOfRange { .. } => (C::OffsetOutOfRange, Some("from".into())),
            LogError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(28) =>
            {
                (C::DiskFull, None)
            }
            LogError::Io { .. } => (C::IoError, None),
            LogError::Corrupt { .. } | LogError::UnsupportedFormat { .. } => (C::Corrupt, None),
            LogError::Poisoned { .. } => (C::PartitionPoisoned, None),
            LogError::Locked { .. }
            | LogError::NoDataDirectory { .. }
            | LogError::NotADirectory { .. } => (C::DataDirectoryUnavailable, None),
            LogError::Closed => (C::Closed, None),
            // No route appends under a precondition; the transaction store does, and says
            // so in its own error. Reaching here is a bug of ours.
            LogError::EndOffsetMismatch { .. } => (C::InternalError, None),
            // The replicated log's (cluster mode).
            LogError::Unavailable { .. } => (C::LogUnavailable, None),
            LogError::OutcomeUnknown { .. } => (C::OutcomeUnknown, None),
            LogError::Unsupported { .. } => (C::NotSupportedInCluster, None),
            LogError::Backend { .. } => (C::LogBackendFailed, None),
        };
        if code.status() >= 500 {
            tracing::error!(error = %e, code = code.as_str(), "log error");
        }
        let mut out = ApiError::new(code, detail);
        out.field = field;
        if code == C::LogUnavailable {
            out.retryable = Some(true);
            out.retry_after_s = Some(1);
        }
        out
    }

    /// This error, retryable as `cause` is: a transaction that ended for `cause` may
    /// succeed when run again exactly when `cause` says so.
    pub fn retryable_as(mut self, cause: &ApiError) -> Self {
        self.retryable = Some(cause.retryable == Some(true));
        self
    }

    /// 501 `not_supported_in_cluster`: `what` is not available on a cluster node yet.
    pub fn not_supported_in_cluster(what: &str) -> Self {
        ApiError::new(
            C::NotSupportedInCluster,
            format!(
                "{what} is not available on a node of a cluster yet (it comes with the \
                 cluster's certifier); use a single node for it"
            ),
        )
    }
}

impl From<TxnError> for ApiError {
    fn from(e: TxnError) -> Self {
        if let TxnError::Log(inner) = e {
            let mut out = ApiError::from_log(inner, |_| String::new());
            // `log_unavailable` says retryable itself; no other log failure is.
            out.retryable.get_or_insert(false);
            return out;
        }
        let retryable = e.is_retryable();
        let (code, field): (ProblemCode, Option<&str>) = match &e {
            TxnError::Log(_) => return ApiError::internal("log error mapped twice"),
            TxnError::SerializationFailure { .. } => (C::SerializationFailure, None),
            TxnError::TransactionTooOld { .. } => (C::TransactionTooOld, None),
            TxnError::SnapshotTooOld { .. } => (C::SnapshotTooOld, Some("snapshot")),
            TxnError::CertifierShareFull { .. } => (C::CertifierShareFull, None),
            TxnError::CertifierFull { .. } => (C::CertifierFull, None),
            TxnError::InvalidRequest { field, .. } => (C::UnprocessableRequest, Some(*field)),
            TxnError::AnswerTooLarge { field, .. } => (C::AnswerTooLarge, Some(*field)),
            TxnError::VersionMismatch { .. } => (C::VersionMismatch, Some("if_version")),
            TxnError::KeyExists { .. } => (C::KeyExists, Some("if_absent")),
            TxnError::NotAnInteger { .. } => (C::NotAnInteger, None),
            TxnError::IncrementOverflow { .. } => (C::IncrementOverflow, Some("by")),
            TxnError::KeyTooLarge { .. } => (C::KeyTooLarge, Some("key")),
            TxnError::ValueTooLarge { .. } => (C::ValueTooLarge, Some("value")),
            TxnError::TooMany { .. } => (C::TransactionTooLarge, None),
            TxnError::ReadOnly => (C::ReadOnlyTransaction, None),
            TxnError::InvalidOperation { .. } => (C::InvalidOperation, None),
            TxnError::RequestIdConflict { .. } => (C::RequestIdConflict, Some("Idempotency-Key")),
            TxnError::TooManyOpenTransactions { .. } => (C::TooManyTransactions, None),
            TxnError::Closed => (C::TransactionClosed, Some("txn")),
            TxnError::Poisoned => (C::StorePoisoned, None),
            TxnError::NotLeader | TxnError::Fenced { .. } => (C::LeaderUnavailable, None),
            TxnError::SnapshotAhead { .. } => (C::SnapshotAhead, Some("snapshot")),
            TxnError::CommitStream { .. } => (C::CommitStream, None),
            TxnError::Corrupt { .. } => (C::Corrupt, None),
        };
        debug_assert_eq!(code.as_str(), e.code(), "the wire code is the library's");
        if code.status() >= 500 {
            tracing::error!(error = %e, code = code.as_str(), "transaction error");
        }
        let mut out = ApiError::new(code, e.to_string());
        out.field = match &e {
            TxnError::AnswerTooLarge { field, index, .. } => Some(format!("{field}[{index}]")),
            _ => field.map(str::to_string),
        };
        out.retryable = Some(retryable);
        if matches!(
            code,
            C::TooManyTransactions
                | C::LeaderUnavailable
                | C::SnapshotAhead
                | C::CertifierShareFull
                | C::CertifierFull
        ) {
            out.retry_after_s = Some(1);
        }
        out
    }
}

/// A registry error: its code, with Confluent's `error_code` and `message` beside it.
impl From<logbook_schema::SchemaError> for ApiError {
    fn from(e: logbook_schema::SchemaError) -> Self {
        use logbook_schema::SchemaError as S;
        let code = match &e {
            S::SubjectNotFound { .. } => C::SubjectNotFound,
            S::VersionNotFound { .. } => C::SchemaVersionNotFound,
            S::SchemaNotFound { .. } => C::SchemaNotFound,
            S::SubjectSoftDeleted { .. } => C::SubjectSoftDeleted,
            S::SubjectNotSoftDeleted { .. } => C::SubjectNotSoftDeleted,
            S::VersionSoftDeleted { .. } => C::SchemaVersionSoftDeleted,
            S::VersionNotSoftDeleted { .. } => C::SchemaVersionNotSoftDeleted,
            S::SubjectConfigNotFound { .. } => C::SubjectLevelNotFound,
            S::Incompatible { .. } => C::SchemaIncompatible,
            S::InvalidSchema { .. } => C::InvalidSchema,
            S::InvalidVersion { .. } => C::InvalidSchemaVersion,
            S::InvalidCompatibilityLevel { .. } => C::InvalidCompatibilityLevel,
            S::InvalidSubject { .. } | S::NotPermitted { .. } => C::SchemaOperationNotPermitted,
            S::BadRecord { .. } => C::SchemaRegistryDamaged,
        };
        let mut out = ApiError::new(code, e.to_string());
        out.error_code = Some(e.error_code());
        out
    }
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        if let ViewError::Log(inner) = e {
            return ApiError::from_log(inner, |_| String::new());
        }
        let detail = e.to_string();
        let (code, field): (ProblemCode, Option<String>) = match &e {
            ViewError::Log(_) => return ApiError::internal("log error mapped twice"),
            ViewError::UnknownKind { .. } => (C::InvalidViewSpec, Some("kind".into())),
            ViewError::InvalidSpec { field, reason } => {
                return ApiError::view_spec("", field, reason);
            }
            ViewError::UnknownStream { .. } => (C::InvalidViewSpec, Some("source".into())),
            ViewError::InvalidViewName { .. } => (C::InvalidViewName, Some("view".into())),
            ViewError::ViewExists { .. } => (C::ViewExists, Some("view".into())),
            ViewError::TooManyViews { .. } => (C::TooManyViews, None),
            ViewError::TooManyVersions { .. } => (C::TooManyVersions, None),
            ViewError::TooManyProcessors { .. } => (C::TooManyProcessors, None),
            ViewError::UnknownView { .. } => (C::UnknownView, Some("view".into())),
            ViewError::UnknownVersion { reason, .. } if *reason == "no such version" => {
                (C::UnknownVersion, Some("version".into()))
            }
            ViewError::UnknownVersion { .. } => (C::VersionUnavailable, Some("version".into())),
            ViewError::InvalidToken { .. } | ViewError::TokenTooLarge { .. } => {
                (C::InvalidToken, Some("token".into()))
            }
            ViewError::TokenIncarnation { .. } => (C::TokenIncarnation, Some("token".into())),
            ViewError::InvalidRead { parameter, .. } => {
                (C::InvalidRequest, Some((*parameter).to_string()))
            }
            ViewError::ConsistencyTimeout { .. } => (C::ConsistencyTimeout, Some("token".into())),
            ViewError::NotCaughtUp { .. } => (C::NotCaughtUp, Some("version".into())),
            ViewError::StateTooLarge { .. } => (C::ViewStateTooLarge, None),
            ViewError::Store { .. } => (C::ViewStoreError, None),
            ViewError::Corrupt { .. } => (C::Corrupt, None),
            ViewError::Closed => (C::Closed, None),
            ViewError::DerivedStreamExists { .. } => (C::DerivedStreamExists, Some("name".into())),
            ViewError::UnknownDerivedStream { .. } => {
                (C::UnknownDerivedStream, Some("name".into()))
            }
            ViewError::TooManyDerivedStreams { .. } => (C::TooManyDerivedStreams, None),
        };
        if code.status() >= 500 && code != C::ConsistencyTimeout {
            tracing::error!(error = %e, code = code.as_str(), "view error");
        }
        let mut out = ApiError::new(code, detail);
        out.field = field;
        if e.is_retryable() {
            out.retryable = Some(true);
            out.retry_after_s = Some(1);
        }
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (self.status(), body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp.extensions_mut().insert(ErrorCode(self.code.as_str()));
        resp
    }
}

/// The code of an error response, left in the response's extensions for logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Writes one problem+json answer outside hyper (`status`: code and reason; `headers`: extra
/// header lines, each ending in CRLF) and closes the connection: the write side first, then
/// what the client still sends is read and dropped until it closes (at most 1 s and 1 MiB),
/// so the close does not reset the connection before the client has read the answer.
pub(crate) async fn answer_and_close(
    tcp: &mut (impl AsyncRead + AsyncWrite + Unpin),
    status: &str,
    headers: &str,
    error: ApiError,
) {
    let body = serde_json::to_string(&error.problem()).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {}\r\n{headers}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        PROBLEM_JSON,
        body.len()
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 8192];
        let mut read = 0usize;
        while read < 1024 * 1024 {
            let n = tcp.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            read += n;
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_keep_their_codes_and_fields() {
        let e = ApiError::from_log(
            LogError::RequestIdConflict {
                request_id: "a".into(),
                index: 0,
            },
            |i| format!("records[{i}]"),
        );
        assert_eq!(
            (e.status().as_u16(), e.code.as_str()),
            (409, "request_id_conflict")
        );
        let e = ApiError::from_log(
            LogError::KeyTooLarge {
                index: 3,
                bytes: 9000,
                max: 4096,
            },
            |i| format!("records[{i}]"),
        );
        assert_eq!(e.field.as_deref(), Some("records[3].key"));
        let e = ApiError::from_log(
            LogError::KeyTooLarge {
                index: 0,
                bytes: 9000,
                max: 4096,
            },
            |_| String::new(),
        );
        assert_eq!(e.field.as_deref(), Some("key"));
        let e = ApiError::from(TxnError::SerializationFailure {
            kind: logbook_txn::ConflictKind::WriteWrite,
            key: "k".into(),
            conflicting_offset: 4,
        });
        assert_eq!(
            (e.status().as_u16(), e.code.as_str(), e.retryable),
            (409, "serialization_failure", Some(true))
        );
        let e = ApiError::from(TxnError::RequestIdConflict {
            request_id: "c-1".into(),
            offset: Some(0),
        });
        assert_eq!(
            (
                e.status().as_u16(),
                e.code.as_str(),
                e.retryable,
                e.field.as_deref()
            ),
            (
                409,
                "request_id_conflict",
                Some(false),
                Some("Idempotency-Key")
            )
        );
        // One status per code: a transaction's key over the limit is 413, as an append's.
        let e = ApiError::from(TxnError::KeyTooLarge {
            bytes: 5000,
            max: 4096,
        });
        assert_eq!(
            (e.status().as_u16(), e.code.as_str(), e.field.as_deref()),
            (413, "key_too_large", Some("key"))
        );
        let e = ApiError::from(TxnError::Log(LogError::Closed));
        assert_eq!((e.status().as_u16(), e.code.as_str()), (503, "closed"));
        // A node behind a snapshot may serve the same request later: says so, and when.
        let e = ApiError::from(TxnError::SnapshotAhead {
            snapshot: 9,
            applied: 4,
        });
        assert_eq!(
            (e.status().as_u16(), e.code.as_str(), e.retryable),
            (422, "snapshot_ahead", Some(true))
        );
        assert_eq!(e.retry_after_s, Some(1));
        let p = serde_json::to_value(ApiError::payload_too_large().problem()).unwrap();
        assert_eq!(p["type"], "urn:logbook:problem:payload_too_large");
        assert_eq!(p["status"], 413);
        let e = ApiError::from(ViewError::InvalidSpec {
            field: "aggregates.n.fn".into(),
            reason: "unknown variant".into(),
        });
        assert_eq!(
            (e.status().as_u16(), e.code.as_str(), e.field.as_deref()),
            (400, "invalid_view_spec", Some("aggregates.n.fn"))
        );
        let e = ApiError::from(ViewError::UnknownView { name: "v".into() });
        assert_eq!(
            (e.status().as_u16(), e.code.as_str()),
            (404, "unknown_view")
        );
    }
}
