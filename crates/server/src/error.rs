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
use serde::{Deserialize, Serialize};

/// The `Content-Type` of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An API error: turns into a problem+json response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Short, fixed summary of the code.
    pub title: &'static str,
    /// What happened, with the values involved.
    pub detail: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
    /// For transaction errors: whether re-running the whole transaction may succeed.
    pub retryable: Option<bool>,
    /// Seconds after which a retry makes sense (sent as `Retry-After`).
    pub retry_after_s: Option<u32>,
}

/// The problem document, as sent (and as clients decode it).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
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
}

impl ApiError {
    /// An error with a status, a code, a title and a detail.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            title,
            detail: detail.into(),
            field: None,
            retryable: None,
            retry_after_s: None,
        }
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
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request",
            detail,
        )
        .field(field)
    }

    /// 400 `invalid_json`: a body that is not JSON of the expected shape.
    pub fn invalid_json(field: Option<String>, detail: impl Into<String>) -> Self {
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "Request body is not valid JSON of the expected shape",
            detail,
        );
        e.field = field;
        e
    }

    /// 413 `payload_too_large`: the body exceeds [`crate::limits::BODY_BYTES_MAX`].
    pub fn payload_too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request body too large",
            format!(
                "the request body exceeds the limit of {} bytes; nothing was written",
                crate::limits::BODY_BYTES_MAX
            ),
        )
    }

    /// 503 `not_ready`: the data directory is still being opened (or recovery failed).
    pub fn not_ready(detail: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "Not ready",
            detail,
        )
        .retry_after(1)
    }

    /// 500 `internal_error` (a bug or a lost task; logged).
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            detail,
        )
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("urn:logbook:problem:{}", self.code),
            code: self.code.to_string(),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
            retryable: self.retryable,
        }
    }

    /// Maps a log error. `record_field(i)` names record `i` of the request (for a batch
    /// `records[i]`, for a single record the empty string).
    pub fn from_log(e: LogError, record_field: impl Fn(usize) -> String) -> Self {
        use StatusCode as S;
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
        let (status, code, title, field): (S, &'static str, &'static str, Option<String>) = match &e
        {
            LogError::RecordTooLarge { index, .. } => (
                S::PAYLOAD_TOO_LARGE,
                "record_too_large",
                "Record too large",
                Some(join(*index, "value")),
            ),
            LogError::KeyTooLarge { index, .. } => (
                S::PAYLOAD_TOO_LARGE,
                "key_too_large",
                "Key too large",
                Some(join(*index, "key")),
            ),
            LogError::TooManyHeaders { index, .. } => (
                S::PAYLOAD_TOO_LARGE,
                "too_many_headers",
                "Too many record headers",
                Some(join(*index, "headers")),
            ),
            LogError::HeaderTooLarge { index, .. } => (
                S::PAYLOAD_TOO_LARGE,
                "header_too_large",
                "Record header too large",
                Some(join(*index, "headers")),
            ),
            LogError::EmptyBatch => (
                S::BAD_REQUEST,
                "empty_batch",
                "No records",
                Some("records".into()),
            ),
            LogError::BatchTooManyRecords { .. } => (
                S::PAYLOAD_TOO_LARGE,
                "batch_too_many_records",
                "Too many records in one request",
                Some("records".into()),
            ),
            LogError::BatchTooLarge { .. } => (
                S::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                "Batch too large",
                Some("records".into()),
            ),
            LogError::TimestampOutOfRange { index, .. } => (
                S::BAD_REQUEST,
                "timestamp_out_of_range",
                "Timestamp out of range",
                Some(join(*index, "timestamp_ms")),
            ),
            LogError::InvalidRequestId { .. } => (
                S::BAD_REQUEST,
                "invalid_request_id",
                "Invalid request id",
                Some("Idempotency-Key".into()),
            ),
            LogError::RequestIdConflict { .. } => (
                S::CONFLICT,
                "request_id_conflict",
                "Request id already used for a different request",
                Some("Idempotency-Key".into()),
            ),
            LogError::ReservedHeader { index, name } => (
                S::BAD_REQUEST,
                "reserved_header",
                "Reserved record header",
                Some(join(*index, &format!("headers.{name}"))),
            ),
            LogError::InvalidTraceparent { .. } => (
                S::BAD_REQUEST,
                "invalid_traceparent",
                "Invalid traceparent",
                Some("traceparent".into()),
            ),
            LogError::InvalidStreamName { .. } => (
                S::BAD_REQUEST,
                "invalid_stream_name",
                "Invalid stream name",
                Some("stream".into()),
            ),
            LogError::InvalidConfig { field, .. } => (
                S::BAD_REQUEST,
                "invalid_stream_config",
                "Invalid stream settings",
                Some((*field).to_string()),
            ),
            LogError::TooManyStreams { .. } => {
                (S::CONFLICT, "too_many_streams", "Too many streams", None)
            }
            LogError::StreamExists { .. } => (
                S::CONFLICT,
                "stream_exists",
                "Stream exists with other settings",
                Some("stream".into()),
            ),
            LogError::UnknownStream { .. } => (
                S::NOT_FOUND,
                "unknown_stream",
                "Unknown stream",
                Some("stream".into()),
            ),
            LogError::UnknownPartition { .. } => (
                S::NOT_FOUND,
                "unknown_partition",
                "Unknown partition",
                Some("partition".into()),
            ),
            LogError::OffsetOutOfRange { .. } => (
                S::BAD_REQUEST,
                "offset_out_of_range",
                "Offset out of range",
                Some("from".into()),
            ),
            LogError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(28) =>
            {
                (S::INSUFFICIENT_STORAGE, "disk_full", "Disk full", None)
            }
            LogError::Io { .. } => (S::INTERNAL_SERVER_ERROR, "io_error", "I/O error", None),
            LogError::Corrupt { .. } | LogError::UnsupportedFormat { .. } => (
                S::INTERNAL_SERVER_ERROR,
                "corrupt",
                "Data on disk is damaged",
                None,
            ),
            LogError::Poisoned { .. } => (
                S::SERVICE_UNAVAILABLE,
                "partition_poisoned",
                "Partition refuses writes after a storage failure",
                None,
            ),
            LogError::Locked { .. }
            | LogError::NoDataDirectory { .. }
            | LogError::NotADirectory { .. } => (
                S::SERVICE_UNAVAILABLE,
                "data_directory_unavailable",
                "Data directory unavailable",
                None,
            ),
            LogError::Closed => (
                S::SERVICE_UNAVAILABLE,
                "closed",
                "The server is shutting down",
                None,
            ),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, code, "log error");
        }
        let mut out = ApiError::new(status, code, title, detail);
        out.field = field;
        out
    }
}

impl From<TxnError> for ApiError {
    fn from(e: TxnError) -> Self {
        use StatusCode as S;
        if let TxnError::Log(inner) = e {
            let mut out = ApiError::from_log(inner, |_| String::new());
            out.retryable = Some(false);
            return out;
        }
        let retryable = e.is_retryable();
        let code = e.code();
        let (status, title, field): (S, &'static str, Option<&str>) = match &e {
            TxnError::Log(_) => return ApiError::internal("log error mapped twice"),
            TxnError::SerializationFailure { .. } => (
                S::CONFLICT,
                "Serialization failure: retry the whole transaction",
                None,
            ),
            TxnError::TransactionTooOld { .. } => (
                S::CONFLICT,
                "Transaction too old: retry the whole transaction",
                None,
            ),
            TxnError::VersionMismatch { .. } => {
                (S::CONFLICT, "Version mismatch", Some("if_version"))
            }
            TxnError::KeyExists { .. } => (S::CONFLICT, "Key exists", Some("if_absent")),
            TxnError::NotAnInteger { .. } => (S::CONFLICT, "Value is not an integer", None),
            TxnError::IncrementOverflow { .. } => (S::CONFLICT, "Increment overflows", Some("by")),
            TxnError::KeyTooLarge { .. } => (S::BAD_REQUEST, "Invalid key", Some("key")),
            TxnError::ValueTooLarge { .. } => {
                (S::PAYLOAD_TOO_LARGE, "Value too large", Some("value"))
            }
            TxnError::TooMany { .. } => (S::PAYLOAD_TOO_LARGE, "Transaction too large", None),
            TxnError::ReadOnly => (S::BAD_REQUEST, "Transaction is read-only", None),
            TxnError::InvalidOperation { .. } => (S::BAD_REQUEST, "Invalid operation", None),
            TxnError::RequestIdConflict { .. } => (
                S::CONFLICT,
                "Request id already used for a different request",
                Some("Idempotency-Key"),
            ),
            TxnError::TooManyOpenTransactions { .. } => {
                (S::TOO_MANY_REQUESTS, "Too many open transactions", None)
            }
            TxnError::Closed => (S::GONE, "Transaction is closed", Some("txn")),
            TxnError::Poisoned => (
                S::SERVICE_UNAVAILABLE,
                "Transaction store refuses work after a failed commit",
                None,
            ),
            TxnError::CommitStream { .. } | TxnError::Corrupt { .. } => {
                (S::INTERNAL_SERVER_ERROR, "Commit stream is damaged", None)
            }
        };
        if status.is_server_error() {
            tracing::error!(error = %e, code, "transaction error");
        }
        let mut out = ApiError::new(status, code, title, e.to_string());
        out.field = field.map(str::to_string);
        out.retryable = Some(retryable);
        if status == S::TOO_MANY_REQUESTS {
            out.retry_after_s = Some(1);
        }
        out
    }
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        use StatusCode as S;
        if let ViewError::Log(inner) = e {
            return ApiError::from_log(inner, |_| String::new());
        }
        let detail = e.to_string();
        let (status, code, title, field): (S, &'static str, &'static str, Option<String>) = match &e
        {
            ViewError::Log(_) => return ApiError::internal("log error mapped twice"),
            ViewError::UnknownKind { .. } => (
                S::BAD_REQUEST,
                "invalid_view_spec",
                "Invalid view spec",
                Some("kind".into()),
            ),
            ViewError::InvalidSpec { field, .. } => (
                S::BAD_REQUEST,
                "invalid_view_spec",
                "Invalid view spec",
                Some(field.clone()),
            ),
            ViewError::UnknownStream { .. } => (
                S::BAD_REQUEST,
                "invalid_view_spec",
                "Invalid view spec",
                Some("source".into()),
            ),
            ViewError::InvalidViewName { .. } => (
                S::BAD_REQUEST,
                "invalid_view_name",
                "Invalid view name",
                Some("view".into()),
            ),
            ViewError::ViewExists { .. } => (
                S::CONFLICT,
                "view_exists",
                "View exists with another spec",
                Some("view".into()),
            ),
            ViewError::TooManyViews { .. } => {
                (S::CONFLICT, "too_many_views", "Too many views", None)
            }
            ViewError::TooManyVersions { .. } => (
                S::CONFLICT,
                "too_many_versions",
                "Too many versions of the view",
                None,
            ),
            ViewError::TooManyProcessors { .. } => (
                S::CONFLICT,
                "too_many_processors",
                "Too many view processors",
                None,
            ),
            ViewError::UnknownView { .. } => (
                S::NOT_FOUND,
                "unknown_view",
                "Unknown view",
                Some("view".into()),
            ),
            ViewError::UnknownVersion { reason, .. } if *reason == "no such version" => (
                S::NOT_FOUND,
                "unknown_version",
                "Unknown view version",
                Some("version".into()),
            ),
            ViewError::UnknownVersion { .. } => (
                S::CONFLICT,
                "version_unavailable",
                "View version cannot be used this way",
                Some("version".into()),
            ),
            ViewError::InvalidToken { .. } | ViewError::TokenTooLarge { .. } => (
                S::BAD_REQUEST,
                "invalid_token",
                "Invalid consistency token",
                Some("token".into()),
            ),
            ViewError::TokenIncarnation { .. } => (
                S::CONFLICT,
                "token_incarnation",
                "Token of another incarnation",
                Some("token".into()),
            ),
            ViewError::InvalidRead { parameter, .. } => (
                S::BAD_REQUEST,
                "invalid_request",
                "Invalid request",
                Some((*parameter).to_string()),
            ),
            ViewError::ConsistencyTimeout { .. } => (
                S::GATEWAY_TIMEOUT,
                "consistency_timeout",
                "The view did not reach the consistency token in time",
                Some("token".into()),
            ),
            ViewError::NotCaughtUp { .. } => (
                S::CONFLICT,
                "not_caught_up",
                "The target version has not caught up",
                Some("version".into()),
            ),
            ViewError::StateTooLarge { .. } => (
                S::INSUFFICIENT_STORAGE,
                "view_state_too_large",
                "View state exceeds its memory limit",
                None,
            ),
            ViewError::Store { .. } => (
                S::INTERNAL_SERVER_ERROR,
                "view_store_error",
                "View state store failed",
                None,
            ),
            ViewError::Corrupt { .. } => (
                S::INTERNAL_SERVER_ERROR,
                "corrupt",
                "Data on disk is damaged",
                None,
            ),
            ViewError::Closed => (
                S::SERVICE_UNAVAILABLE,
                "closed",
                "The server is shutting down",
                None,
            ),
        };
        if status.is_server_error() && status != S::GATEWAY_TIMEOUT {
            tracing::error!(error = %e, code, "view error");
        }
        let mut out = ApiError::new(status, code, title, detail);
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
        let mut resp = (self.status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

/// The code of an error response, left in the response's extensions for logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

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
        assert_eq!((e.status.as_u16(), e.code), (409, "request_id_conflict"));
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
            (e.status.as_u16(), e.code, e.retryable),
            (409, "serialization_failure", Some(true))
        );
        let e = ApiError::from(TxnError::RequestIdConflict {
            request_id: "c-1".into(),
            offset: 0,
        });
        assert_eq!(
            (e.status.as_u16(), e.code, e.retryable, e.field.as_deref()),
            (
                409,
                "request_id_conflict",
                Some(false),
                Some("Idempotency-Key")
            )
        );
        let e = ApiError::from(TxnError::Log(LogError::Closed));
        assert_eq!((e.status.as_u16(), e.code), (503, "closed"));
        let p = serde_json::to_value(ApiError::payload_too_large().problem()).unwrap();
        assert_eq!(p["type"], "urn:logbook:problem:payload_too_large");
        assert_eq!(p["status"], 413);
        let e = ApiError::from(ViewError::InvalidSpec {
            field: "aggregates.n.fn".into(),
            reason: "unknown variant".into(),
        });
        assert_eq!(
            (e.status.as_u16(), e.code, e.field.as_deref()),
            (400, "invalid_view_spec", Some("aggregates.n.fn"))
        );
        let e = ApiError::from(ViewError::UnknownView { name: "v".into() });
        assert_eq!((e.status.as_u16(), e.code), (404, "unknown_view"));
    }
}
