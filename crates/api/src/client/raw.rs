//! Requests given as their parts, for programs that pass the server's JSON through as text:
//! the CLI sends documents as the user wrote them (so the server names where a malformed one
//! is wrong) and prints answers as the server sent them. Paths come from [`crate::paths`];
//! the transport, retries and errors are the typed client's.

use hyper::Method;

use super::http::{Call, Retry};
use super::{Client, ClientError};

/// The HTTP method of a [`RawRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `GET`.
    Get,
    /// `PUT`.
    Put,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
}

impl Verb {
    fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Put => Method::PUT,
            Verb::Post => Method::POST,
            Verb::Delete => Method::DELETE,
        }
    }
}

/// One request of API v1 as its parts. Retried as the typed calls are: reads, `PUT`,
/// `DELETE` and writes with a request id whatever happened; other `POST`s only when nothing
/// reached the server or it answered 429 / 503.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The method.
    pub verb: Verb,
    /// Path and query, from [`crate::paths`] and [`crate::paths::Query`].
    pub path: String,
    /// A JSON body, sent as is.
    pub body: Option<Vec<u8>>,
    /// The `Idempotency-Key` (request id) of a write.
    pub request_id: Option<String>,
    /// A W3C `traceparent` header.
    pub traceparent: Option<String>,
    /// How long the server was asked to wait (long poll, token wait, switch), ms: added to
    /// the client's timeout for this request.
    pub server_wait_ms: u64,
    /// The node id of a cluster node forwarding the request (header
    /// `logbook-forwarded-by`): the receiving node does not forward it again.
    pub forwarded_by: Option<String>,
    /// An `Authorization` header value sent instead of the client's bearer token (a cluster
    /// node forwarding its caller's credentials).
    pub authorization: Option<String>,
}

impl RawRequest {
    /// `verb path` without a body.
    pub fn new(verb: Verb, path: String) -> Self {
        RawRequest {
            verb,
            path,
            body: None,
            request_id: None,
            traceparent: None,
            server_wait_ms: 0,
            forwarded_by: None,
            authorization: None,
        }
    }

    /// The same request with a JSON body (text, sent as is).
    #[must_use]
    pub fn body(mut self, json: impl Into<Vec<u8>>) -> Self {
        self.body = Some(json.into());
        self
    }

    /// The same request with a body serialized from `value`.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] if `value` does not serialize.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ClientError::InvalidArgument {
            field: "body",
            reason: e.to_string(),
        })?;
        Ok(self.body(bytes))
    }

    /// The same request with a request id (`Idempotency-Key`), if there is one.
    #[must_use]
    pub fn request_id(mut self, id: Option<&str>) -> Self {
        self.request_id = id.map(str::to_string);
        self
    }

    /// The same request with a `traceparent`, if there is one.
    #[must_use]
    pub fn traceparent(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent.map(str::to_string);
        self
    }

    /// The same request, marked as forwarded by the cluster node `node_id`, if given.
    #[must_use]
    pub fn forwarded_by(mut self, node_id: Option<&str>) -> Self {
        self.forwarded_by = node_id.map(str::to_string);
        self
    }

    /// The same request with the caller's `Authorization` value, if given, instead of the
    /// client's own.
    #[must_use]
    pub fn authorization(mut self, value: Option<&str>) -> Self {
        self.authorization = value.map(str::to_string);
        self
    }

    /// The same request, telling the client the server was asked to wait `ms`.
    #[must_use]
    pub fn server_wait_ms(mut self, ms: u64) -> Self {
        self.server_wait_ms = ms;
        self
    }

    fn call(self) -> Call {
        let mut call = Call::new(self.verb.method(), self.path);
        call.retry = if self.verb == Verb::Post && self.request_id.is_none() {
            Retry::IfNotSent
        } else {
            Retry::Always
        };
        call.body = self.body;
        call.request_id = self.request_id;
        call.traceparent = self.traceparent;
        call.server_wait_ms = self.server_wait_ms;
        call.forwarded_by = self.forwarded_by;
        call.authorization = self.authorization;
        call
    }
}

/// A 2xx answer: its status and body bytes (empty for 204).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer {
    /// HTTP status.
    pub status: u16,
    /// The body as sent.
    pub body: Vec<u8>,
}

impl Client {
    /// Sends a request given as its parts; a 2xx answer is returned as sent.
    ///
    /// # Errors
    /// [`ClientError::Problem`] for an error answer with a problem document,
    /// [`ClientError::Answer`] for one without; the transport errors as for typed calls.
    pub async fn send_raw(&self, request: RawRequest) -> Result<RawAnswer, ClientError> {
        let call = request.call();
        let answer = self.inner.transport.send(&call, &self.inner.rng).await?;
        Ok(RawAnswer {
            status: answer.status,
            body: answer.body.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_posts_without_a_request_id_are_kept_from_resending() {
        let post = RawRequest::new(Verb::Post, "/v1/views/v/rebuild".into()).body("{}");
        assert_eq!(post.clone().call().retry, Retry::IfNotSent);
        let keyed = post.request_id(Some("r-1"));
        let call = keyed.call();
        assert_eq!(call.retry, Retry::Always);
        assert_eq!(call.request_id.as_deref(), Some("r-1"));
        for verb in [Verb::Get, Verb::Put, Verb::Delete] {
            assert_eq!(
                RawRequest::new(verb, "/v1/x".into()).call().retry,
                Retry::Always
            );
        }
    }

    #[test]
    fn the_parts_reach_the_call_as_given() {
        let call = RawRequest::new(Verb::Get, "/v1/streams/s/records?wait_ms=5".into())
            .traceparent(Some(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ))
            .server_wait_ms(5)
            .call();
        assert_eq!(call.method, Method::GET);
        assert_eq!(call.path, "/v1/streams/s/records?wait_ms=5");
        assert_eq!(call.server_wait_ms, 5);
        assert!(call.traceparent.is_some_and(|t| t.starts_with("00-0af7")));
        assert!(call.body.is_none());
    }
}
