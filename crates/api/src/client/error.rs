//! The client's errors: what the server said, what could not be learned, and bad input.

use crate::problem::{Problem, ProblemCode};

/// An error of a client call.
///
/// * [`ClientError::Problem`]: the server answered with a problem document — it decided.
/// * [`ClientError::Unknown`]: a write was sent and no answer after every retry says what
///   became of it (none came, the server answered `outcome_unknown`, or it refused a retry
///   with 429 / 503 after an earlier attempt may have been applied) — it may or may not
///   have been applied. Never a failure: send it again with the same request id (the client
///   did so already), or look.
/// * [`ClientError::Unreachable`]: no attempt reached the server, so nothing was applied.
/// * [`ClientError::Tls`]: the TLS handshake failed (an untrusted certificate, a server not
///   speaking TLS), so nothing was sent; retrying cannot help.
/// * [`ClientError::Transport`]: a read got no answer (nothing changes either way).
/// * [`ClientError::Answer`]: an answer that is not what API v1 sends (not a Logbook server?).
/// * [`ClientError::InvalidArgument`]: refused before anything was sent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered an error.
    #[error("{problem}")]
    Problem {
        /// The problem document.
        problem: Box<Problem>,
        /// `Retry-After`, seconds, if the server sent one.
        retry_after_s: Option<u64>,
    },
    /// A write's outcome could not be learned.
    #[error(
        "outcome unknown: {operation} was sent {attempts} time(s) without an answer that \
         settles it ({}); it may or may not have been applied: {last}",
        request_id.as_ref().map_or("without a request id".to_string(), |id| format!("request id {id:?}"))
    )]
    Unknown {
        /// What was being done, e.g. `POST /v1/streams/orders/records`.
        operation: String,
        /// The request id every attempt carried, if the write had one.
        request_id: Option<String>,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's outcome: a transport error, or the problem it was answered.
        last: String,
        /// The problem the last attempt was answered (`server_busy`, `rate_limited`,
        /// `outcome_unknown`), if it got one.
        problem: Option<Box<Problem>>,
    },
    /// No attempt reached the server.
    #[error("cannot reach the server at {server} after {attempts} attempt(s): {last}")]
    Unreachable {
        /// The server's address.
        server: String,
        /// Attempts made.
        attempts: u32,
        /// The last connection error.
        last: String,
    },
    /// The TLS handshake with an `https://` server failed; nothing was sent.
    #[error("TLS with {server} failed: {detail}")]
    Tls {
        /// The server's base URL.
        server: String,
        /// Why, in words, with rustls' error.
        detail: String,
    },
    /// A read got no answer.
    #[error("no answer to {operation} after {attempts} attempt(s): {last}")]
    Transport {
        /// What was being done.
        operation: String,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        last: String,
    },
    /// The answer is not what API v1 sends.
    #[error("unexpected answer to {operation} (HTTP {status}): {detail}")]
    Answer {
        /// What was being done.
        operation: String,
        /// The HTTP status.
        status: u16,
        /// What is wrong with it.
        detail: String,
    },
    /// An argument was refused before anything was sent.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The argument.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// The stable code of a problem answer, if this is one the crate knows.
    pub fn code(&self) -> Option<ProblemCode> {
        match self {
            ClientError::Problem { problem, .. } => problem.known_code(),
            _ => None,
        }
    }

    /// The problem document, if the server answered one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ClientError::Problem { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// True when the outcome of a write is unknown.
    pub fn is_unknown(&self) -> bool {
        matches!(self, ClientError::Unknown { .. })
    }

    /// True when re-running the whole transaction may succeed (`serialization_failure`,
    /// `transaction_too_old`, `snapshot_too_old`, or a problem marked `retryable`).
    pub fn is_retryable_transaction(&self) -> bool {
        match self {
            ClientError::Problem { problem, .. } => {
                problem.retryable == Some(true)
                    || matches!(
                        problem.known_code(),
                        Some(
                            ProblemCode::SerializationFailure
                                | ProblemCode::TransactionTooOld
                                | ProblemCode::SnapshotTooOld
                        )
                    )
            }
            _ => false,
        }
    }
}
