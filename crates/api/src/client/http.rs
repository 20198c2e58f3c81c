//! One request to the server, with retries: the only place the client touches HTTP
//! (hyper-util's pooled HTTP/1.1 client, decision record 0008; `https://` through
//! hyper-rustls, decision record 0017).

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::error::ClientError;
use super::retry::{Jitter, RetryPolicy, parse_retry_after};
use crate::problem::{PROBLEM_JSON, Problem};

/// Largest answer body read, in bytes (1 GiB): the server bounds answers by rows and
/// records, so this only guards against a runaway answer.
pub const ANSWER_BYTES_MAX: usize = 1 << 30;

/// What a retry may do to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Safe to send again whatever happened (reads; PUT and DELETE; writes carrying an
    /// `Idempotency-Key`).
    Always,
    /// Sent again only when no attempt can have reached the server (a connection refused),
    /// or the server refused it with 429 / 503 (an increment, a rebuild).
    IfNotSent,
}

/// One logical request: every attempt sends the same method, path, body and request id.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    /// Path and query, e.g. `/v1/streams/orders/records?partition=0`.
    pub path: String,
    pub body: Option<Vec<u8>>,
    pub request_id: Option<String>,
    /// A W3C `traceparent` to send (the trace the request belongs to).
    pub traceparent: Option<String>,
    /// The forwarding cluster node's id (header `logbook-forwarded-by`).
    pub forwarded_by: Option<String>,
    /// An `Authorization` value for this call instead of the client's (a cluster node
    /// forwarding its caller's credentials).
    pub authorization: Option<String>,
    /// A wait the server was asked for (long poll, token wait), added to the timeout, ms.
    pub server_wait_ms: u64,
    pub retry: Retry,
    /// Whether it may change something (every method but `GET`, unless a `POST` only
    /// reads): an unanswered write is an unknown outcome, an unanswered read is not.
    pub write: bool,
    /// A subscription to server-sent events: sent with `Accept: text/event-stream`, and a
    /// 2xx answer's body is left open for the caller ([`Answer::open`]) instead of read
    /// whole. The timeout covers the answer's head only.
    pub events: bool,
    /// `Last-Event-ID`: where a resumed subscription starts.
    pub last_event_id: Option<String>,
}

impl Call {
    pub fn new(method: Method, path: String) -> Self {
        let retry = Retry::Always;
        let write = method != Method::GET;
        Call {
            method,
            path,
            body: None,
            request_id: None,
            traceparent: None,
            forwarded_by: None,
            authorization: None,
            server_wait_ms: 0,
            write,
            retry,
            events: false,
            last_event_id: None,
        }
    }

    pub fn json<T: serde::Serialize>(mut self, body: &T) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::InvalidArgument {
            field: "body",
            reason: e.to_string(),
        })?;
        self.body = Some(bytes);
        Ok(self)
    }

    pub(crate) fn operation(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        format!("{} {path}", self.method)
    }

    fn is_write(&self) -> bool {
        self.write
    }
}

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    /// The whole body (empty for an event stream).
    pub body: Bytes,
    /// The body still arriving, for a [`Call::events`] call.
    pub open: Option<Incoming>,
}

/// What one attempt got back.
struct Reply {
    status: StatusCode,
    /// `Retry-After`, seconds.
    retry_after_s: Option<u64>,
    /// The whole body, unless it is left [`Reply::open`].
    body: Bytes,
    /// The body of a 2xx answer to a [`Call::events`] call, still arriving.
    open: Option<Incoming>,
}

/// How one attempt ended without an answer.
struct Failed {
    /// The connection was never made: nothing reached the server.
    connect: bool,
    /// The TLS handshake failed (an untrusted certificate, a server not speaking TLS): no
    /// retry can help, and nothing reached the server.
    tls: bool,
    detail: String,
}

/// The connection pool to one server, and the retry policy.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    pool: Pool<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `host:port`.
    pub authority: String,
    /// `http` or `https`.
    scheme: &'static str,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// `Authorization: Bearer <token>` sent with every request, if a token was given.
    pub authorization: Option<hyper::header::HeaderValue>,
}

impl Transport {
    /// A pool to `authority` (`host:port`), over TLS with `tls` when given.
    pub fn new(
        authority: String,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        request_timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, ClientError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(request_timeout));
        // The TLS connector below handles `https://` URIs; the TCP one must let them through.
        connector.enforce_http(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls = match tls {
            Some(config) => config,
            None => super::tls::plain_config()?,
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(std::sync::Arc::unwrap_or_clone(tls))
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let pool = Pool::builder(TokioExecutor::new()).build(connector);
        Ok(Transport {
            pool,
            authority,
            scheme,
            request_timeout,
            retry,
            authorization: None,
        })
    }

    /// `http://host:port` or `https://host:port`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The same pool, credentials and retries for the server of `url` (a `location` a
    /// server answered: `scheme://host:port/…`), if `url` has this transport's scheme.
    pub fn moved_to(&self, url: &str) -> Option<Transport> {
        let rest = url.strip_prefix(self.scheme)?.strip_prefix("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return None;
        }
        Some(Transport {
            authority: authority.to_string(),
            ..self.clone()
        })
    }

    /// Sends `call` until it is answered or the retries run out (see [`super::retry`]).
    ///
    /// Once an attempt of a write may have reached the server (its connection dropped after
    /// sending, or the server answered `504 outcome_unknown`), no later refusal can say it
    /// was not applied: a 429 / 503 as the last answer then ends as
    /// [`ClientError::Unknown`] carrying that problem, never as the problem alone.
    pub async fn send(
        &self,
        call: &Call,
        rng: &std::sync::Mutex<Jitter>,
    ) -> Result<Answer, ClientError> {
        let mut tried = Tried::default();
        let attempts_max = self.retry.attempts_max.max(1);
        let mut attempt = 0;
        while attempt < attempts_max {
            attempt += 1;
            let mut retry_after = None;
            match self.attempt(call).await {
                Ok(reply) => {
                    let status = reply.status;
                    let headers_retry_after = reply.retry_after_s;
                    let unknown = call.is_write() && is_outcome_unknown(status, &reply.body);
                    let busy = status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE;
                    if !busy && !unknown {
                        return answer(call, reply);
                    }
                    tried.reached |= unknown;
                    let refused = answer(call, reply);
                    let Err(refused) = refused else {
                        return refused;
                    };
                    let last_try =
                        attempt == attempts_max || (unknown && call.retry == Retry::IfNotSent);
                    if last_try && !(tried.reached && call.is_write()) {
                        return Err(refused);
                    }
                    tried.answered(refused);
                    if last_try {
                        break;
                    }
                    retry_after = headers_retry_after.map(Duration::from_secs);
                }
                Err(f) if f.tls => {
                    return Err(ClientError::Tls {
                        server: self.base_url(),
                        detail: f.detail,
                    });
                }
                Err(f) => {
                    tried.reached |= !f.connect;
                    tried.failed(f.detail);
                    if !f.connect && call.retry == Retry::IfNotSent {
                        break;
                    }
                }
            }
            if attempt < attempts_max {
                let unit = rng.lock().map_or(0.5, |mut r| r.unit());
                tokio::time::sleep(self.retry.backoff(attempt, unit, retry_after)).await;
            }
        }
        Err(self.exhausted(call, attempt, tried))
    }

    fn exhausted(&self, call: &Call, attempts: u32, tried: Tried) -> ClientError {
        let Tried {
            reached,
            last,
            problem,
        } = tried;
        if !reached {
            ClientError::Unreachable {
                server: self.authority.clone(),
                attempts,
                last,
            }
        } else if call.is_write() {
            ClientError::Unknown {
                operation: call.operation(),
                request_id: call.request_id.clone(),
                attempts,
                last,
                problem,
            }
        } else {
            ClientError::Transport {
                operation: call.operation(),
                attempts,
                last,
            }
        }
    }

    /// One attempt: the status, `Retry-After`, and the whole body (or, for a 2xx answer to
    /// an event stream, the body left open).
    async fn attempt(&self, call: &Call) -> Result<Reply, Failed> {
        let request = self.request(call)?;
        let timeout = self.request_timeout + Duration::from_millis(call.server_wait_ms);
        let exchange = async {
            let response = self.pool.request(request).await.map_err(|e| {
                match super::tls::tls_failure(&e) {
                    Some(detail) => Failed {
                        connect: true,
                        tls: true,
                        detail,
                    },
                    None => Failed {
                        connect: e.is_connect(),
                        tls: false,
                        detail: error_chain(&e),
                    },
                }
            })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
                .map(|d| d.as_secs());
            if call.events && status.is_success() {
                return Ok(Reply {
                    status,
                    retry_after_s: retry_after,
                    body: Bytes::new(),
                    open: Some(response.into_body()),
                });
            }
            let body = Limited::new(response.into_body(), ANSWER_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| Failed {
                    connect: false,
                    tls: false,
                    detail: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok(Reply {
                status,
                retry_after_s: retry_after,
                body,
                open: None,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failed {
                connect: false,
                tls: false,
                detail: format!("no answer within {} ms", timeout.as_millis()),
            }),
        }
    }

    fn request(&self, call: &Call) -> Result<Request<Full<Bytes>>, Failed> {
        let accept = if call.events {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut b = Request::builder()
            .method(call.method.clone())
            .uri(format!("{}://{}{}", self.scheme, self.authority, call.path))
            .header(hyper::header::ACCEPT, accept);
        if let Some(id) = &call.last_event_id {
            b = b.header("last-event-id", id.as_str());
        }
        if call.body.is_some() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(id) = &call.request_id {
            b = b.header("idempotency-key", id.as_str());
        }
        if let Some(node) = &call.forwarded_by {
            b = b.header(crate::paths::FORWARDED_BY_HEADER, node.as_str());
        }
        if let Some(tp) = &call.traceparent {
            b = b.header("traceparent", tp.as_str());
        }
        if let Some(auth) = &call.authorization {
            b = b.header(hyper::header::AUTHORIZATION, auth.as_str());
        } else if let Some(auth) = &self.authorization {
            b = b.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        let body = Full::new(Bytes::from(call.body.clone().unwrap_or_default()));
        b.body(body).map_err(|e| Failed {
            connect: true,
            tls: false,
            detail: format!("cannot build the request: {e}"),
        })
    }
}

/// What the attempts so far have learned.
#[derive(Debug, Default)]
struct Tried {
    /// Whether an attempt may have reached the server (sent without an answer, or answered
    /// `outcome_unknown`).
    reached: bool,
    /// The last attempt's outcome, in words.
    last: String,
    /// The last attempt's problem, when the server answered one.
    problem: Option<Box<Problem>>,
}

impl Tried {
    /// The last attempt got no answer.
    fn failed(&mut self, detail: String) {
        self.last = detail;
        self.problem = None;
    }

    /// The last attempt was refused (busy, or outcome unknown).
    fn answered(&mut self, refused: ClientError) {
        self.last = refused.to_string();
        self.problem = match refused {
            ClientError::Problem { problem, .. } => Some(problem),
            _ => None,
        };
    }
}

/// Whether an answer is the server's `504 outcome_unknown`: an append whose outcome it could
/// not learn, which the same request sent again resolves.
fn is_outcome_unknown(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::GATEWAY_TIMEOUT
        && serde_json::from_slice::<Problem>(body)
            .is_ok_and(|p| p.known_code() == Some(crate::problem::ProblemCode::OutcomeUnknown))
}

/// A 2xx answer, or the problem the server sent.
fn answer(call: &Call, reply: Reply) -> Result<Answer, ClientError> {
    let Reply {
        status,
        retry_after_s,
        body,
        open,
    } = reply;
    if status.is_success() {
        return Ok(Answer {
            status: status.as_u16(),
            body,
            open,
        });
    }
    match serde_json::from_slice::<Problem>(&body) {
        Ok(problem) => Err(ClientError::Problem {
            problem: Box::new(problem),
            retry_after_s,
        }),
        Err(_) => Err(ClientError::Answer {
            operation: call.operation(),
            status: status.as_u16(),
            detail: format!(
                "not a {PROBLEM_JSON} document (is this a Logbook server?): {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        }),
    }
}

/// An error with its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Decodes a 2xx body.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    call: &Call,
    answer: &Answer,
) -> Result<T, ClientError> {
    serde_json::from_slice(&answer.body).map_err(|e| ClientError::Answer {
        operation: call.operation(),
        status: answer.status,
        detail: format!("body does not decode: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_followed_on_the_same_scheme_only() {
        let plain = Transport::new(
            "127.0.0.1:7700".into(),
            None,
            Duration::from_secs(1),
            RetryPolicy::default(),
        )
        .unwrap();
        let moved = plain
            .moved_to("http://127.0.0.1:7702/v1/txns/t0.b/kv/k?for_update=true")
            .unwrap();
        assert_eq!(moved.base_url(), "http://127.0.0.1:7702");
        assert_eq!(plain.base_url(), "http://127.0.0.1:7700");
        // Never from an http:// client to https:// or back, nor to something not a server.
        assert!(plain.moved_to("https://127.0.0.1:7702/v1/txns").is_none());
        assert!(plain.moved_to("http://user@127.0.0.1:7702/").is_none());
        assert!(plain.moved_to("http:///v1/txns").is_none());
        assert!(plain.moved_to("/v1/txns").is_none());
    }
}
