//! Request plumbing shared by the handlers: a JSON body extractor whose errors name the
//! field, the request-tracking headers, and the hop to a blocking thread.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use logbook_log::RequestId;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::ApiError;

/// A JSON body. Unlike `axum::Json`, a bad body answers problem+json naming the field
/// (`records[2].value`), and an oversized one 413 `payload_too_large`. An empty body
/// deserializes from `{}`, so bodies whose fields are all optional may be left out.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::invalid_json(None, format!("cannot read the body: {r}"))
            }
        })?;
        parse_json(if bytes.is_empty() { b"{}" } else { &bytes }).map(JsonBody)
    }
}

/// Deserializes JSON; errors name the field (a JSON path) that failed.
///
/// # Errors
/// 400 `invalid_json`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut *de);
    match result {
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(ApiError::invalid_json(None, format!("{e}"))),
        },
        Err(e) => {
            let inner = e.inner().to_string();
            let mut path = e.path().to_string();
            if path == "." {
                path.clear();
            }
            // serde reports a missing field at the object that lacks it: name the field.
            if let Some(rest) = inner.strip_prefix("missing field `")
                && let Some(name) = rest.split('`').next()
            {
                path = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
            }
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

/// The request-tracking headers of a write: `Idempotency-Key` and `traceparent`.
#[derive(Debug, Clone, Default)]
pub struct Tracking {
    /// The request id, validated.
    pub request_id: Option<RequestId>,
    /// The W3C trace context, validated.
    pub traceparent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Tracking {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let text = |name: &'static str| -> Result<Option<String>, ApiError> {
            match parts.headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
                    ApiError::invalid(name, format!("header {name} is not printable ASCII"))
                }),
            }
        };
        let request_id = text("idempotency-key")?
            .map(RequestId::new)
            .transpose()
            .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
        let traceparent = text("traceparent")?;
        if let Some(tp) = &traceparent {
            logbook_log::dedup::validate_traceparent(tp)
                .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
        }
        Ok(Tracking {
            request_id,
            traceparent,
        })
    }
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
}
