//! The edge: what every request passes before and after its handler — the URI and
//! header-size limits (for heads the head guard, [`crate::head`], let through; an answer
//! over them closes the connection), the declared body size (`Content-Length`), the
//! `Host` and body media type ([`crate::browser`]), credentials and scopes
//! ([`crate::auth`]), the body read whole against its deadline ([`crate::body`]), the
//! in-flight request limit (or the long-poll budget, for a request that may wait) and the
//! principal's quotas ([`crate::quota`]), the request's `tracing` span (carrying its request id and
//! traceparent) and its latency in the metrics. Body size is limited by `DefaultBodyLimit`
//! on the router and by the body's read; connections by the accept loop
//! ([`crate::server`], [`crate::admission`]).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::config::AuthMode;
use crate::error::{ApiError, ErrorCode, ProblemCode};
use crate::head::Tracker;
use crate::limits;
use crate::state::AppState;
use logbook_api::paths::route;

/// Routes that answer even when the server is saturated (probes and scrapes), and the only
/// ones a probe connection serves.
pub(crate) const UNLIMITED_ROUTES: &[&str] = &[route::HEALTH, route::METRICS];

/// The edge middleware (see the module docs).
pub async fn edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // The matched route is shared text (an `Arc<str>` inside): no copy per request.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    let head = EdgeHeaders::scan(req.headers());
    // A header the request lacks is not recorded at all: the span's fields are formatted
    // into text when it is created (~1,400 instructions a field), on every request.
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        request_id = head.request_id.and_then(log_text).map(tracing::field::display),
        traceparent = head.traceparent.and_then(log_text).map(tracing::field::display),
    );
    // The head's checks log nothing, so they need not run inside the span.
    let refused = refuse_head(&state, route, &req, &head);
    let started = Instant::now();
    let response = async {
        if let Some(response) = refused {
            return response;
        }
        // A probe connection (crate::admission) serves health checks and scrapes only; any
        // other request hears why the connection was not a full one.
        let conn = req.extensions().get::<Arc<Tracker>>().cloned();
        if let Some(refusal) = conn.as_ref().and_then(|c| c.probe_only())
            && !UNLIMITED_ROUTES.contains(&route)
        {
            return closing(refusal.clone());
        }
        // Who the request acts as, and whether that covers the route (crate::auth): refused
        // before any handler, so nothing changes.
        let req = match authorize(&state, req, route).await {
            Ok(req) => req,
            Err(e) => {
                let mut response = e.into_response();
                if response.status() == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        axum::http::header::WWW_AUTHENTICATE,
                        axum::http::HeaderValue::from_static(crate::auth::CHALLENGE),
                    );
                }
                return response;
            }
        };
        // An interactive transaction's step sent to a node it does not live on: 421, naming
        // where it belongs, before any handler (nothing changes).
        if let Err(e) = check_owner(&state, route, req.uri()).await {
            return e.into_response();
        }
        if let Err(e) = check_principal(&state, route, &req) {
            return e.into_response();
        }
        if let Err(e) = check_clock(&state, route, &method) {
            return e.into_response();
        }
        // The body is read whole before the request takes a slot (crate::body): a slow body
        // holds its connection, not the server.
        let req = if req.body().is_end_stream() {
            req
        } else {
            let (parts, body) = req.into_parts();
            match crate::body::read(body, state.body_deadline()).await {
                Ok(bytes) => Request::from_parts(parts, Body::from(bytes)),
                Err(e) => return closing(e),
            }
        };
        let held = if UNLIMITED_ROUTES.contains(&route) {
            None
        } else {
            match take_slot(&state, &req, conn.as_deref()) {
                Ok(held) => Some(held),
                Err(refused) => return refused.into_response(),
            }
        };
        let response = next.run(req).await;
        drop(held);
        let status = response.status();
        let code = response.extensions().get::<ErrorCode>().map_or("", |c| c.0);
        let elapsed_us = started.elapsed().as_micros() as u64;
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(status = status.as_u16(), code, elapsed_us, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), code, elapsed_us, "request done");
        }
        response
    }
    .instrument(span)
    .await;
    let m = state.metrics();
    m.http_duration
        .with_label_values(&[method.as_str(), route])
        .observe(started.elapsed().as_secs_f64());
    m.http_responses
        .with_label_values(&[method.as_str(), route, response.status().as_str()])
        .inc();
    response
}

/// The answer refusing a request's head, if a check refuses it (before any handler: nothing
/// changes): the URI and header sizes (an answer that closes the connection, as the head
/// guard's does), a declared body over the limit, and what a web page could make a browser
/// send ([`crate::browser`]).
fn refuse_head(
    state: &AppState,
    route: &str,
    req: &Request,
    head: &EdgeHeaders<'_>,
) -> Option<Response> {
    let uri_bytes = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_bytes > limits::URI_BYTES_MAX {
        return Some(closing(ApiError::uri_too_long(uri_bytes)));
    }
    if head.bytes > limits::HEADER_BYTES_MAX {
        return Some(closing(ApiError::new(
            ProblemCode::HeadersTooLarge,
            format!(
                "request headers total {} bytes; the limit is {}",
                head.bytes,
                limits::HEADER_BYTES_MAX
            ),
        )));
    }
    let declared = head
        .content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits::BODY_BYTES_MAX as u64) {
        return Some(ApiError::payload_too_large().into_response());
    }
    let browser = if route == route::HEALTH {
        Ok(())
    } else {
        crate::browser::check_host(head.host, state.allowed_hosts())
    };
    browser
        .and_then(|()| crate::browser::check_content_type(head.has_body(), head.content_type))
        .and_then(|()| head.check_content_encoding())
        .err()
        .map(IntoResponse::into_response)
}

/// What a request holds while its handler runs: a slot of `requests_max` or, for a long
/// poll, of `long_polls_max`; and one of its principal's `requests_per_principal_max`.
struct Held {
    _slot: OwnedSemaphorePermit,
    _charge: crate::quota::Charge,
}

/// Why a request got no slot: the answer, and whether it closes the connection (a
/// connection over its principal's quota).
enum NoSlot {
    Answer(ApiError),
    Closing(ApiError),
}

impl NoSlot {
    fn into_response(self) -> Response {
        match self {
            NoSlot::Answer(e) => e.into_response(),
            NoSlot::Closing(e) => closing(e),
        }
    }
}

/// Takes what `req` holds while it runs ([`Held`]), charging its principal — its token, or
/// the connection's client address — also for the connection it came over.
fn take_slot(state: &AppState, req: &Request, conn: Option<&Tracker>) -> Result<Held, NoSlot> {
    let principal = req.extensions().get::<Arc<crate::auth::Principal>>();
    let key = crate::quota::request_key(principal.map(|p| &**p), conn.and_then(Tracker::peer_key));
    if let Some(conn) = conn {
        conn.charge_principal(&key, state.principal_connections())
            .map_err(NoSlot::Closing)?;
    }
    let charge = state
        .principal_requests()
        .charge(&key)
        .map_err(NoSlot::Answer)?;
    let long_poll = is_long_poll(req.uri().query());
    let pool = if long_poll {
        state.long_polls()
    } else {
        state.requests()
    };
    let slot = pool.clone().try_acquire_owned().map_err(|_| {
        let config = state.config();
        NoSlot::Answer(if long_poll {
            ApiError::new(
                ProblemCode::LongPollBudgetExhausted,
                format!(
                    "{} long polls are waiting, the limit (long_polls_max); retry shortly",
                    config.long_polls_max
                ),
            )
            .retry_after(1)
        } else {
            ApiError::new(
                ProblemCode::ServerBusy,
                format!(
                    "{} requests are in flight, the limit; retry shortly",
                    config.requests_max
                ),
            )
            .retry_after(1)
        })
    })?;
    Ok(Held {
        _slot: slot,
        _charge: charge,
    })
}

/// Whether a request may wait on the server: a record read with a non-zero `wait_ms`, or a
/// read that waits for a consistency `token`. Such requests take a slot of the long-poll
/// budget instead of the request limit, so waiting readers cannot starve other routes.
/// (The push tail has its own budget, [`limits::SUBSCRIPTIONS_MAX`].)
fn is_long_poll(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| match pair.split_once('=') {
            Some(("wait_ms", v)) => !v.is_empty() && v.bytes().any(|b| b != b'0'),
            Some(("token", v)) => !v.is_empty(),
            _ => false,
        })
    })
}

/// Authenticates and authorizes `req` for `route` unless authentication is off or the route
/// is open; the principal goes into the request's extensions for the handler.
async fn authorize(state: &AppState, req: Request, route: &str) -> Result<Request, ApiError> {
    if state.config().auth == AuthMode::Off || crate::auth::OPEN_ROUTES.contains(&route) {
        return Ok(req);
    }
    let Some(tokens) = state.tokens() else {
        return Err(ApiError::not_ready(
            "the server is opening its data directory; retry shortly",
        ));
    };
    let principal =
        crate::auth::authenticate(tokens, req.headers(), crate::auth::tokens::now_ms()).await?;
    let (mut parts, body) = req.into_parts();
    // A segment that is not UTF-8 once decoded is refused as the handler would refuse it
    // (400 `invalid_path_segment`), whatever the scopes: it names nothing to authorize.
    let params =
        match crate::extract::Path::<Vec<(String, String)>>::from_request_parts(&mut parts, state)
            .await
        {
            Ok(crate::extract::Path(params)) => params,
            Err(e) if e.code == crate::error::ProblemCode::InvalidPathSegment => return Err(e),
            Err(_) => Vec::new(), // a route without parameters
        };
    let needs = crate::auth::route_needs(route, &parts.method, &params, &parts.uri);
    crate::auth::authorize(&principal, &needs)?;
    parts.extensions.insert(principal);
    Ok(Request::from_parts(parts, body))
}

/// The problem as an answer that closes the connection.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// A header's value as text for logs: its first 128 bytes (visible ASCII, so characters);
/// `None` if not text.
fn log_text(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    Some(text.get(..128).unwrap_or(text))
}

/// The headers the edge reads, found in one pass over the request's headers (each
/// `HeaderMap::get` hashes its name: six of them cost more than the pass). A repeated
/// header's first value is the one kept, as `get` would return.
#[derive(Debug, Default)]
struct EdgeHeaders<'r> {
    /// Bytes of every header's name and value.
    bytes: usize,
    host: Option<&'r HeaderValue>,
    content_length: Option<&'r HeaderValue>,
    content_type: Option<&'r HeaderValue>,
    /// Every `Content-Encoding` value that is not `identity` (the first one kept).
    content_encoding: Option<&'r HeaderValue>,
    transfer_encoding: bool,
    request_id: Option<&'r HeaderValue>,
    traceparent: Option<&'r HeaderValue>,
}

impl<'r> EdgeHeaders<'r> {
    fn scan(headers: &'r HeaderMap) -> EdgeHeaders<'r> {
        let mut h = EdgeHeaders::default();
        for (name, value) in headers {
            h.bytes += name.as_str().len() + value.len();
            let slot = if name == header::HOST {
                &mut h.host
            } else if name == header::CONTENT_LENGTH {
                &mut h.content_length
            } else if name == header::CONTENT_TYPE {
                &mut h.content_type
            } else if name == header::TRANSFER_ENCODING {
                h.transfer_encoding = true;
                continue;
            } else if name == header::CONTENT_ENCODING {
                if is_identity(value) {
                    continue;
                }
                &mut h.content_encoding
            } else if name == crate::extract::IDEMPOTENCY_KEY {
                &mut h.request_id
            } else if name == crate::extract::TRACEPARENT {
                &mut h.traceparent
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        h
    }

    /// Checks that a body is not content-coded: every JSON route takes its body as is, so
    /// a body labelled `gzip` would be read as the bytes it is not (RFC 9110 §8.4: a server
    /// answers 415 to a coding it does not support). Only `identity` passes.
    ///
    /// # Errors
    /// 415 `unsupported_media_type` naming `Content-Encoding`.
    fn check_content_encoding(&self) -> Result<(), ApiError> {
        let Some(coding) = self.content_encoding.filter(|_| self.has_body()) else {
            return Ok(());
        };
        let said = coding.to_str().unwrap_or("?");
        Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            format!(
                "the request body declares Content-Encoding {:?}; this server takes bodies \
                 without a content coding (identity): send the JSON uncompressed",
                said.chars().take(128).collect::<String>()
            ),
        )
        .field("Content-Encoding"))
    }

    /// Whether the request has a body: `Content-Length` other than 0, or
    /// `Transfer-Encoding`.
    fn has_body(&self) -> bool {
        self.transfer_encoding || self.content_length.is_some_and(|v| v.as_bytes() != b"0")
    }
}

/// Whether a `Content-Encoding` value names no coding: `identity` (any case), or a list of
/// only that, or empty.
fn is_identity(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
    })
}

/// With authentication on, an interactive transaction belongs to the principal that began
/// it: a handle is not a capability (it travels in URLs, logs and proxies), so another
/// principal's request on it — open or ended — is answered 404 `unknown_transaction`, as
/// for a handle that never existed: neither its reads, its `incremented` values, its
/// commit's offset nor its existence leak ([`crate::state::TxnRegistry::hidden_from`]).
fn check_principal(state: &AppState, route: &str, req: &Request) -> Result<(), ApiError> {
    if !route.starts_with(route::TXN_PREFIX) {
        return Ok(());
    }
    let Some(principal) = req.extensions().get::<Arc<crate::auth::Principal>>() else {
        return Ok(());
    };
    // `/v1/txns/<handle>/...`, decoded as the handlers' path extractor decodes it: a handle
    // with a percent-encoded character is the same handle (review r14f F1).
    let Some(raw) = req.uri().path().split('/').nth(3) else {
        return Ok(());
    };
    let handle = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    if state
        .txns()
        .hidden_from(&handle, &principal.quota_key, &principal.name)
    {
        return Err(crate::state::unknown_txn(&handle));
    }
    Ok(())
}

/// A write on a cluster node whose clock is off the cluster's median beyond
/// `max_clock_offset_ms` (`peers.rs`): 503 `not_ready` naming the offset, before any
/// handler (nothing changes). Reads are served; a write waits for a node whose clock
/// agrees with the others', since the timestamps it would stamp are not to be trusted.
///
/// # Errors
/// 503 `not_ready` while the clock is off.
fn check_clock(state: &AppState, route: &str, method: &axum::http::Method) -> Result<(), ApiError> {
    let read = *method == axum::http::Method::GET
        || *method == axum::http::Method::HEAD
        || route == route::KV_READ;
    if read || !route.starts_with(route::V1_PREFIX) || route == route::HEALTH {
        return Ok(());
    }
    match state.clock_fault() {
        None => Ok(()),
        Some(why) => Err(ApiError::not_ready(format!(
            "{why}; this node takes no writes until its clock is back within the bound \
             (nothing was done: send the request to another node)"
        ))),
    }
}

/// On a cluster node, a request on an interactive transaction (a route under
/// `/v1/txns/{txn}`) whose handle names another node: 421 `misdirected_request` with
/// `location`, the same request's URL on that node, or 404 `unknown_transaction` when that
/// node is no longer registered (its open transactions ended with it). Anything else
/// passes, to be answered by its handler.
///
/// # Errors
/// As above; 503 `membership_unavailable` when the node list cannot be read.
pub(crate) async fn check_owner(
    state: &AppState,
    route: &str,
    uri: &axum::http::Uri,
) -> Result<(), ApiError> {
    let Some(me) = state.txns().node() else {
        return Ok(());
    };
    if !route.starts_with(route::TXN_PREFIX) {
        return Ok(());
    }
    // `/v1/txns/<handle>/...`: handles need no percent-encoding.
    let Some(handle) = uri.path().split('/').nth(3) else {
        return Ok(());
    };
    let Some(owner) = crate::state::handle_node(handle) else {
        return Ok(());
    };
    if owner == me {
        return Ok(());
    }
    let opened = state.opened()?;
    let Some(member) = opened.cluster.as_ref() else {
        return Ok(());
    };
    let nodes = member.nodes().await?;
    let Some(node) = nodes.iter().find(|n| n.node_id == owner) else {
        return Err(ApiError::new(
            ProblemCode::UnknownTransaction,
            format!(
                "transaction {handle} lived on node {owner}, which is not in the cluster now: \
                 its open transactions ended with it (nothing of them was committed unless its \
                 commit was answered)"
            ),
        )
        .field("txn"));
    };
    let at = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let mut e = ApiError::new(
        ProblemCode::MisdirectedRequest,
        format!(
            "transaction {handle} lives on node {owner}, which began it; send its requests \
             to {} (nothing was done here)",
            node.advertise_url
        ),
    )
    .field("txn");
    e.location = Some(format!("{}{at}", node.advertise_url.trim_end_matches('/')));
    Err(e)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderName;

    use super::*;

    /// The one pass finds what `HeaderMap::get` does, first values of repeated headers
    /// included, and counts every name and value.
    #[test]
    fn one_pass_finds_what_get_finds() {
        let mut map = HeaderMap::new();
        for (name, value) in [
            ("host", "a:1"),
            ("x-other", "1"),
            ("content-type", "application/json"),
            ("idempotency-key", "first"),
            ("idempotency-key", "second"),
            ("content-length", "12"),
            ("traceparent", "t"),
            ("host", "b:2"),
        ] {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let h = EdgeHeaders::scan(&map);
        for (found, name) in [
            (h.host, header::HOST),
            (h.content_length, header::CONTENT_LENGTH),
            (h.content_type, header::CONTENT_TYPE),
            (h.request_id, crate::extract::IDEMPOTENCY_KEY),
            (h.traceparent, crate::extract::TRACEPARENT),
        ] {
            assert_eq!(found, map.get(&name), "{name}");
        }
        let bytes: usize = map.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        assert_eq!(h.bytes, bytes);
        assert!(!h.transfer_encoding && h.has_body());
        map.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!EdgeHeaders::scan(&map).has_body());
        map.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(EdgeHeaders::scan(&map).has_body());
        assert_eq!(EdgeHeaders::scan(&HeaderMap::new()).bytes, 0);
    }

    #[test]
    fn log_text_is_the_first_128_characters() {
        let long = "k".repeat(300);
        let v = HeaderValue::from_str(&long).unwrap();
        assert_eq!(log_text(&v), Some(&long[..128]));
        assert_eq!(log_text(&HeaderValue::from_static("abc")), Some("abc"));
        assert_eq!(log_text(&HeaderValue::from_bytes(b"\xff").unwrap()), None);
    }

    #[test]
    fn long_polls_are_told_by_a_wait_or_a_token() {
        for (query, long) in [
            (None, false),
            (Some("partition=0&from=5"), false),
            (Some("partition=0&wait_ms=0"), false),
            (Some("partition=0&wait_ms=00"), false),
            (Some("partition=0&wait_ms=100"), true),
            (Some("token=abc&timeout_ms=10"), true),
            (Some("token="), false),
            (Some("not_a_token=x"), false),
        ] {
            assert_eq!(is_long_poll(query), long, "{query:?}");
        }
    }
}
