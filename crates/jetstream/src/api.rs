//! JetStream API requests with the failures a caller can act on told apart.
//!
//! The client library folds "no responders", timeouts and the server's JetStream errors into
//! one error per call; here each request returns the server's error code where it gave one, so
//! [`classify`] can say which failures are retryable (a stream leader election, a cluster not
//! ready yet) and which are not.

use async_nats::jetstream::Context;
use async_nats::jetstream::context::RequestErrorKind;
use async_nats::jetstream::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::JetStreamError;

/// JetStream error codes (`err_code`) that mean "not now": no leader, cluster not ready or
/// not enough peers up. Nothing was changed; the request may be retried.
const RETRYABLE_CODES: [u64; 5] = [
    10004, // cluster incomplete
    10005, // no suitable peers (some servers down)
    10006, // cluster not active
    10008, // JetStream cluster not available (no meta leader)
    10009, // not the leader
];
/// `err_code` of "stream not found".
pub(crate) const STREAM_NOT_FOUND: u64 = 10059;
/// `err_code` of "no message found" (a message get beyond the stream's range).
pub(crate) const NO_MESSAGE_FOUND: u64 = 10037;
/// `err_code` of "stream name already in use with a different configuration".
pub(crate) const STREAM_NAME_EXIST: u64 = 10058;

/// Why a JetStream API request failed.
#[derive(Debug)]
pub(crate) enum ApiFailure {
    /// No server answered: no responders (no JetStream for the subject right now) or timeout.
    Transport(String),
    /// The server answered with an error.
    JetStream {
        /// `code` (HTTP-like status).
        status: u64,
        /// `err_code`.
        code: u64,
        /// `description`.
        detail: String,
    },
}

impl ApiFailure {
    pub(crate) fn code(&self) -> Option<u64> {
        match self {
            ApiFailure::JetStream { code, .. } => Some(*code),
            ApiFailure::Transport(_) => None,
        }
    }
}

/// Sends `payload` to the JetStream API `subject` (without the `$JS.API.` prefix).
pub(crate) async fn request<T: DeserializeOwned>(
    js: &Context,
    subject: String,
    payload: &(impl Serialize + ?Sized),
) -> Result<T, ApiFailure> {
    let response: Response<T> = js.request(subject, payload).await.map_err(|err| {
        let why = match err.kind() {
            RequestErrorKind::NoResponders => "no responders".to_string(),
            RequestErrorKind::TimedOut => "request timed out".to_string(),
            _ => err.to_string(),
        };
        ApiFailure::Transport(why)
    })?;
    match response {
        Response::Ok(value) => Ok(value),
        Response::Err { error } => Err(ApiFailure::JetStream {
            status: error.code() as u64,
            code: error.error_code().0,
            detail: error.to_string(),
        }),
    }
}

impl ApiFailure {
    /// Whether this failure says "not now" (see [`classify`]): nothing was changed, and the
    /// same request may be answered later.
    pub(crate) fn is_retryable(&self, stream_exists: bool) -> bool {
        match self {
            ApiFailure::Transport(_) => true,
            ApiFailure::JetStream { status, code, .. } => {
                *status == 503
                    || RETRYABLE_CODES.contains(code)
                    || (stream_exists && *code == STREAM_NOT_FOUND)
            }
        }
    }
}

/// The error a failed request on `stream` is reported as. Transport failures and the codes of
/// an election or a cluster not ready are [`JetStreamError::Unavailable`]; so is "stream not
/// found" when `stream_exists` (the caller knows it created the stream: during a leader
/// election a server may answer so).
pub(crate) fn classify(stream: &str, failure: ApiFailure, stream_exists: bool) -> JetStreamError {
    let retryable = failure.is_retryable(stream_exists);
    match failure {
        ApiFailure::Transport(why) => JetStreamError::Unavailable {
            stream: stream.to_string(),
            why,
        },
        ApiFailure::JetStream { code, detail, .. } if retryable => JetStreamError::Unavailable {
            stream: stream.to_string(),
            why: format!("{detail} (code {code})"),
        },
        ApiFailure::JetStream { code, detail, .. } => JetStreamError::Api {
            stream: stream.to_string(),
            code,
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(status: u64, code: u64) -> ApiFailure {
        ApiFailure::JetStream {
            status,
            code,
            detail: "x".into(),
        }
    }

    #[test]
    fn election_and_not_ready_are_retryable() {
        for failure in [
            ApiFailure::Transport("no responders".into()),
            js(503, 10008),
            js(500, 10009),
            js(500, 10005),
        ] {
            assert!(classify("S", failure, false).is_retryable());
        }
    }

    #[test]
    fn stream_not_found_is_retryable_only_for_a_stream_known_to_exist() {
        assert!(classify("S", js(404, STREAM_NOT_FOUND), true).is_retryable());
        assert!(!classify("S", js(404, STREAM_NOT_FOUND), false).is_retryable());
    }

    #[test]
    fn other_errors_keep_their_code() {
        match classify("S", js(400, 10052), false) {
            JetStreamError::Api { code, .. } => assert_eq!(code, 10052),
            other => panic!("unexpected {other:?}"),
        }
    }
}
