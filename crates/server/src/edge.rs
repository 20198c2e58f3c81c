//! The edge: what every request passes before and after its handler — the URI and
//! header-size limits (for heads the head guard, [`crate::head`], let through; an answer
//! over them closes the connection), the declared body size (`Content-Length`), the
//! `Host` and body media type ([`crate::browser`]), credentials and scopes
//! ([`crate::auth`]), the
//! in-flight request limit, the request's `tracing` span (carrying its request id and
//! traceparent) and its latency in the metrics. Body size is limited by `DefaultBodyLimit`
//! on the router; connections by the accept loop ([`crate::server`]).

use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::config::AuthMode;
use crate::error::{ApiError, ErrorCode, ProblemCode};
use crate::limits;
use crate::state::AppState;

/// Routes that answer even when the server is saturated (probes and scrapes).
pub(crate) const UNLIMITED_ROUTES: &[&str] = &["/v1/health", "/metrics"];

/// The edge middleware (see the module docs).
pub async fn edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // The matched route is shared text (an `Arc<str>` inside): no copy per request.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    let (request_id, traceparent) = (
        header_text(&req, &crate::extract::IDEMPOTENCY_KEY),
        header_text(&req, &crate::extract::TRACEPARENT),
    );
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        request_id = %request_id,
        traceparent = %traceparent,
    );
    let started = Instant::now();
    let response = async {
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        let uri_bytes = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        // A head over the limits ends the connection, as one the head guard refuses does.
        if uri_bytes > limits::URI_BYTES_MAX {
            return closing(crate::error::ApiError::uri_too_long(uri_bytes));
        }
        if header_bytes > limits::HEADER_BYTES_MAX {
            return closing(ApiError::new(
                ProblemCode::HeadersTooLarge,
                format!(
                    "request headers total {header_bytes} bytes; the limit is {}",
                    limits::HEADER_BYTES_MAX
                ),
            ));
        }
        // A declared body over the limit is refused before it is read.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits::BODY_BYTES_MAX as u64) {
            return ApiError::payload_too_large().into_response();
        }
        // What a web page could make a browser send (crate::browser): refused before any
        // handler, so nothing changes.
        if route != "/v1/health"
            && let Err(e) = crate::browser::check_host(req.headers(), state.allowed_hosts())
        {
            return e.into_response();
        }
        if let Err(e) = crate::browser::check_content_type(req.headers()) {
            return e.into_response();
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
        if let Err(e) = crate::api::txns::check_owner(&state, route, req.uri()).await {
            return e.into_response();
        }
        let permit = if UNLIMITED_ROUTES.contains(&route) {
            None
        } else {
            match state.requests().clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    return ApiError::new(
                        ProblemCode::ServerBusy,
                        format!(
                            "{} requests are in flight, the limit; retry shortly",
                            state.config().requests_max
                        ),
                    )
                    .retry_after(1)
                    .into_response();
                }
            }
        };
        let response = next.run(req).await;
        drop(permit);
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
    let params: Vec<(String, String)> = RawPathParams::from_request_parts(&mut parts, state)
        .await
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
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

/// A request header as text for logs (at most 128 characters; empty if absent or not text).
fn header_text(req: &Request, name: &axum::http::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect())
        .unwrap_or_default()
}
