//! Request plumbing shared by the handlers: a JSON body extractor whose errors name the
//! field, the request-tracking headers, and the hop to a blocking thread.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use logbook_log::RequestId;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::{ApiError, ProblemCode};
use crate::serde_words::{api_words, json_path};

/// A JSON body. Unlike `axum::Json`, a bad body answers problem+json naming the field
/// (`records[2].value`), and an oversized one 413 `payload_too_large`. An empty body
/// deserializes from `{}`, so bodies whose fields are all optional may be left out.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        parse_json(if bytes.is_empty() { b"{}" } else { &bytes }).map(JsonBody)
    }
}

/// The body's bytes (within the edge's limit).
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else {
            ApiError::invalid_json(None, format!("cannot read the body: {r}"))
        }
    })
}

/// A JSON body that must be sent: an empty body is 400 `body_required` rather than "every
/// field at its default" — for requests where a missing body can only be a client's
/// mistake (a commit sent without its transaction).
#[derive(Debug)]
pub struct RequiredJsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for RequiredJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                ProblemCode::BodyRequired,
                "this request needs a JSON body (an empty transaction is `{}`); none was sent",
            ));
        }
        parse_json(&bytes).map(RequiredJsonBody)
    }
}

/// Deserializes a JSON object that is I-JSON ([`crate::ijson`]); errors name the field (a
/// JSON path) that failed, in the API's words (`serde_words.rs`).
///
/// # Errors
/// 400 `invalid_json`; 400 `not_i_json` for JSON that is not I-JSON.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let not_i_json = |e: crate::ijson::NotIJson| {
        let path = e.path();
        ApiError::new(ProblemCode::NotIJson, e.to_string()).field(path)
    };
    match parse_shape(bytes) {
        Ok(parsed) => {
            crate::ijson::check(bytes).map_err(not_i_json)?;
            Ok(parsed)
        }
        // The I-JSON check comes first, as if it ran before the shape: a duplicate member
        // the shape refuses without a path (serde's "duplicate field") is named by it. It
        // walks only well-formed JSON, and runs here only on a refusal, so a good body is
        // walked once.
        Err(shape) if well_formed(bytes) => match crate::ijson::check(bytes) {
            Err(e) => Err(not_i_json(e)),
            Ok(()) => Err(shape),
        },
        Err(shape) => Err(shape),
    }
}

/// The UTF-8 encoding of U+FEFF, the byte order mark.
const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];
/// The byte order marks UTF-16 text starts with (big- and little-endian).
const UTF16_BOMS: [&[u8]; 2] = [&[0xFE, 0xFF], &[0xFF, 0xFE]];

/// Whether `bytes` is one JSON value (whatever its shape).
fn well_formed(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// [`parse_json`]'s shape: the object and its fields.
fn parse_shape<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.starts_with(UTF8_BOM) {
        return Err(ApiError::invalid_json(
            None,
            "the request body starts with a UTF-8 byte order mark (EF BB BF), which JSON sent \
             over a network must not have (RFC 8259, section 8.1); send the body without it",
        ));
    }
    if UTF16_BOMS.iter().any(|bom| bytes.starts_with(bom)) {
        return Err(ApiError::invalid_json(
            None,
            "the request body starts with a UTF-16 byte order mark: JSON sent over a network \
             must be UTF-8 (RFC 8259, section 8.1); send it as UTF-8, without a byte order mark",
        ));
    }
    // serde accepts an array for a struct (its fields in order); the API takes objects only.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if let Some(b) = first
        && *b != b'{'
    {
        let detail = match b {
            b'[' => "the request body must be a JSON object, not an array",
            b'"' => "the request body must be a JSON object, not a string",
            b'n' => "the request body must be a JSON object, not null",
            b't' | b'f' => "the request body must be a JSON object, not a boolean",
            b'-' | b'0'..=b'9' => "the request body must be a JSON object, not a number",
            _ => "the request body is not JSON: it must be a JSON object",
        };
        return Err(ApiError::invalid_json(None, detail));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut *de);
    match result {
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(ApiError::invalid_json(None, format!("{e}"))),
        },
        Err(e) => {
            let inner = e.inner().to_string();
            let mut path = json_path(&e.path().to_string(), &inner);
            // serde reports a missing member at the object that lacks it: name the member.
            if let Some(rest) = inner.strip_prefix("missing field `")
                && let Some(name) = rest.split('`').next()
            {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
            }
            let inner = api_words(&inner);
            let detail = if path.is_empty() {
                inner
            } else {
                format!("{path}: {inner}")
            };
            Err(ApiError::invalid_json(
                (!path.is_empty()).then_some(path),
                detail,
            ))
        }
    }
}

/// Path parameters, percent-decoded. Unlike `axum::extract::Path`, a segment that is not
/// UTF-8 once decoded answers problem+json: 400 `invalid_path_segment`, `field` naming the
/// segment as the route template does (`key`, `stream`, ...).
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => match e.kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => Err(ApiError::new(
                    ProblemCode::InvalidPathSegment,
                    format!(
                        "the path segment {{{key}}} is not UTF-8 once percent-decoded; \
                         percent-encode the UTF-8 bytes of the text"
                    ),
                )
                .field(key.clone())),
                _ => Err(ApiError::new(ProblemCode::InvalidRequest, e.body_text())),
            },
            Err(e) => Err(ApiError::internal(format!(
                "path parameters unavailable: {}",
                e.body_text()
            ))),
        }
    }
}

/// The `Idempotency-Key` header: a write's request id.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The `traceparent` header (W3C trace context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request-tracking headers of a write: `Idempotency-Key` and `traceparent`, each at
/// most once (twice: 400 `invalid_request_id` / `invalid_traceparent`).
#[derive(Debug, Clone, Default)]
pub struct Tracking {
    /// The request id, validated.
    pub request_id: Option<RequestId>,
    /// The W3C trace context, validated.
    pub traceparent: Option<String>,
    /// The principal the request acts as (`None` with `--auth off`): a commit's request id
    /// is looked up among this principal's ids only.
    pub principal: Option<std::sync::Arc<crate::auth::Principal>>,
}

impl Tracking {
    /// The name of the principal the request acts as: the namespace of its commit request
    /// ids (`None` with `--auth off`: one namespace).
    pub fn principal_name(&self) -> Option<String> {
        self.principal.as_ref().map(|p| p.name.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tracking {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Looked up by `HeaderName` constants: a `&str` name is parsed on every lookup.
        // Every refusal of either header has its one code and names it as the API spells
        // it (`Idempotency-Key`, `traceparent`), whatever is wrong with it.
        let text = |name: &HeaderName| -> Result<Option<String>, ApiError> {
            let (code, spelled) = if *name == TRACEPARENT {
                (ProblemCode::InvalidTraceparent, "traceparent")
            } else {
                (ProblemCode::InvalidRequestId, "Idempotency-Key")
            };
            // Two of them would leave the server to pick one: which attempt a retry is (or
            // which trace it belongs to) must not be a guess.
            let sent = parts.headers.get_all(name).iter().count();
            if sent > 1 {
                return Err(ApiError::new(
                    code,
                    format!("the {spelled} header is sent {sent} times; send it once"),
                )
                .field(spelled));
            }
            match parts.headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
                    ApiError::new(code, format!("header {spelled} is not printable ASCII"))
                        .field(spelled)
                }),
            }
        };
        let request_id = text(&IDEMPOTENCY_KEY)?
            .map(RequestId::new)
            .transpose()
            .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
        let traceparent = text(&TRACEPARENT)?;
        if let Some(tp) = &traceparent {
            logbook_log::dedup::validate_traceparent(tp)
                .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
        }
        let principal = parts
            .extensions
            .get::<std::sync::Arc<crate::auth::Principal>>()
            .cloned();
        Ok(Tracking {
            request_id,
            traceparent,
            principal,
        })
    }
}

/// Runs a commit to its end, whatever happens to the request that asked for it.
///
/// `prepare` (certification and the append; it returns the wait for durability) runs on the
/// blocking pool: a retry of a request id whose original is still in flight waits there for
/// the original, and the original settles on an async worker — were the retries waiting on
/// workers, enough of them would hold every worker and the original could never settle. The
/// wait for durability runs in a task of its own, so a client that goes away cannot leave the
/// commit, and so its request id, unsettled.
///
/// # Errors
/// 500 `internal_error` if the commit's task panicked.
pub async fn commit_to_the_end<F>(
    prepare: impl FnOnce() -> F + Send + 'static,
) -> Result<F::Output, ApiError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = async move {
        let durable = blocking(prepare).await?;
        Ok(durable.await)
    };
    tokio::spawn(task.instrument(tracing::Span::current()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "commit task failed");
            ApiError::internal("a commit task failed; see the server log")
        })?
}

/// Runs a blocking library call (an append waiting for fsync, a commit) on tokio's blocking
/// pool, inside the request's span, so the async workers never block.
///
/// # Errors
/// 500 `internal_error` if the call panicked.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .instrument(tracing::Span::current())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "blocking task failed");
            ApiError::internal("a blocking task failed; see the server log")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(
        dead_code,
        reason = "only deserialized: the tests check which field an error names"
    )]
    struct Rec {
        key: Option<String>,
        value: serde_json::Value,
    }
    #[derive(Debug, serde::Deserialize)]
    #[expect(
        dead_code,
        reason = "only deserialized: the tests check which field an error names"
    )]
    struct Batch {
        records: Vec<Rec>,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<Batch>(br#"{"records": [{"value": 1}, {"key": 5, "value": 2}]}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[1].key"));
        let e = parse_json::<Batch>(br#"{"records": [{"key": "a"}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].value"));
        let e = parse_json::<Batch>(br#"{"records": [{"value": 1, "vale": 2}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].vale"));
        let e = parse_json::<Batch>(br#"{"records": [}"#).unwrap_err();
        assert_eq!(e.code, crate::error::ProblemCode::InvalidJson);
        assert!(parse_json::<Batch>(br#"{"records": []} x"#).is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(
        dead_code,
        reason = "only deserialized: the tests check which field an error names"
    )]
    struct Settings {
        partitions: Option<u32>,
        size: Option<u64>,
        level: Option<Level>,
        inner: Option<Rec>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Level {
        Low,
    }

    /// Issue 11: errors used Rust's type names ("expected struct CreateStream", "u32") and
    /// accepted an array for an object.
    #[test]
    fn errors_use_the_apis_words_and_json_paths() {
        let detail = |body: &str| {
            let e = parse_json::<Settings>(body.as_bytes()).unwrap_err();
            (e.field, e.detail)
        };
        for body in [r#"[]"#, r#"[1, 2]"#, r#""x""#, "5", "null"] {
            let (field, d) = detail(body);
            assert_eq!(field, None, "{body}");
            assert!(d.contains("must be a JSON object"), "{body}: {d}");
        }
        let cases = [
            (
                r#"{"partitions": "x"}"#,
                "partitions",
                "an integer from 0 to 4294967295",
            ),
            (r#"{"size": -1}"#, "size", "a non-negative integer"),
            (r#"{"inner": 5}"#, "inner", "expected an object"),
            (
                r#"{"inner": []}"#,
                "inner",
                "expected an object, got an array",
            ),
            (
                r#"{"inner": {"value": 1, "key": [1]}}"#,
                "inner.key",
                "array",
            ),
            (r#"{"level": "high"}"#, "level", "unknown value `high`"),
            (r#"{"level": {"low": 1}}"#, "level", "expected a string"),
            (r#"{"size": 1.5}"#, "size", "number `1.5`"),
        ];
        for (body, want_field, want) in cases {
            let (field, d) = detail(body);
            assert_eq!(field.as_deref(), Some(want_field), "{body}: {d}");
            assert!(d.contains(want), "{body}: {d}");
            for rust in [
                "struct", "u32", "u64", "i64", "sequence", " map", "variant", "?",
            ] {
                assert!(!d.contains(rust), "{body}: {d} names {rust:?}");
            }
        }
    }
}
