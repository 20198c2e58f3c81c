//! Guards against what a web page can make a browser send to a server on the user's
//! machine or network:
//!
//! * **Blind cross-site posts.** A page can `POST` a form or `text/plain` body anywhere
//!   without a CORS preflight. Every request body here must declare `application/json` or
//!   `application/*+json` (e.g. a schema registry's `application/vnd.schemaregistry.v1+json`),
//!   which a page can only send after a preflight — and the server answers no preflight (no
//!   CORS headers at all), so the browser never sends it. Else 415
//!   `unsupported_media_type`, before any handler runs: nothing changes.
//! * **DNS rebinding.** A page on `evil.example` re-resolved to `127.0.0.1` reaches the
//!   server with `Host: evil.example`. The host part of `Host` must be one of the configured
//!   names ([`crate::ServerConfig::allowed_hosts`] plus `localhost`, `127.0.0.1`, `[::1]`
//!   and the listen host); else 421 `host_not_allowed`. A request without `Host` (not from a
//!   browser: browsers always send it) passes. `/v1/health` is not checked: load balancers
//!   probe it by address and it reveals nothing.

use axum::http::HeaderValue;

use crate::error::{ApiError, ProblemCode};

/// Host names every server answers for besides the configured ones and its listen host.
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// The host names a server answers for (lowercase, without port); `*` allows any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// The loopback names, the host of `listen` (unless a wildcard address) and `extra`.
    pub fn new(listen: &str, extra: &[String]) -> AllowedHosts {
        let mut names: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
        let listen_host = host_part(listen);
        if !matches!(listen_host.as_str(), "0.0.0.0" | "[::]" | "") {
            names.push(listen_host);
        }
        names.extend(extra.iter().map(|h| host_part(h)));
        names.sort();
        names.dedup();
        AllowedHosts(names)
    }

    /// Whether `host` (a `Host` header value: name or address, with or without a port)
    /// is allowed.
    pub fn allows(&self, host: &str) -> bool {
        // The names are lowercase: comparing without case is comparing with `host_part`,
        // without a copy per request.
        let host = host_of(host);
        self.0
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(host))
    }
}

/// The host part of `HOST[:PORT]` or `[V6]:PORT`, lowercase, without a trailing dot.
fn host_part(value: &str) -> String {
    host_of(value).to_ascii_lowercase()
}

/// The host part of `HOST[:PORT]` or `[V6]:PORT` as given, without a trailing dot.
fn host_of(value: &str) -> &str {
    let value = value.trim();
    let host = if value.starts_with('[') {
        value.find(']').map_or(value, |end| &value[..=end])
    } else {
        match value.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
            _ => value,
        }
    };
    host.trim_end_matches('.')
}

/// Checks `Host` against `allowed` (see the module docs).
///
/// # Errors
/// 421 `host_not_allowed` naming the header and the way to allow the host.
pub fn check_host(host: Option<&HeaderValue>, allowed: &AllowedHosts) -> Result<(), ApiError> {
    let Some(value) = host else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    if allowed.allows(text) {
        return Ok(());
    }
    Err(ApiError::new(
        ProblemCode::HostNotAllowed,
        format!(
            "this server does not answer for host {:?}; allow it with --allowed-host or \
             allowed_hosts in the configuration",
            text.chars().take(256).collect::<String>()
        ),
    )
    .field("Host"))
}

/// Checks that a request with a body (`has_body`: `Content-Length` is not 0 or
/// `Transfer-Encoding` is present) declares a JSON media type in `content_type`, its
/// `Content-Type` (see the module docs).
///
/// # Errors
/// 415 `unsupported_media_type` naming `Content-Type`.
pub fn check_content_type(
    has_body: bool,
    content_type: Option<&HeaderValue>,
) -> Result<(), ApiError> {
    if !has_body {
        return Ok(());
    }
    let declared = content_type.map(|v| v.to_str().unwrap_or("?"));
    if declared.is_some_and(is_json_media_type) {
        return Ok(());
    }
    let said = match declared {
        Some(t) => format!("declares {:?}", t.chars().take(128).collect::<String>()),
        None => "has no Content-Type".to_string(),
    };
    Err(ApiError::new(
        ProblemCode::UnsupportedMediaType,
        format!(
            "the request body {said}; send it as Content-Type: application/json (or \
             application/*+json)"
        ),
    )
    .field("Content-Type"))
}

/// `application/json` or `application/<anything>+json`, parameters (`; charset=utf-8`)
/// allowed, case-insensitive.
fn is_json_media_type(value: &str) -> bool {
    // Compared without case rather than lowercased: no copy per request.
    const TYPE: &str = "application/";
    const SUFFIX: &[u8] = b"+json";
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some(sub) = essence
        .get(..TYPE.len())
        .filter(|t| t.eq_ignore_ascii_case(TYPE))
        .map(|_| &essence[TYPE.len()..])
    else {
        return false;
    };
    sub.eq_ignore_ascii_case("json")
        || (sub.len() > SUFFIX.len()
            && sub.as_bytes()[sub.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
            && !sub.contains(['/', ' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_compare_without_port_and_case() {
        let a = AllowedHosts::new("0.0.0.0:7700", &["Logbook.Internal".to_string()]);
        for ok in [
            "localhost:7700",
            "LOCALHOST",
            "127.0.0.1:1",
            "[::1]:7700",
            "logbook.internal.",
            "logbook.internal:80",
        ] {
            assert!(a.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7700",
            "0.0.0.0:7700",
            "[::2]:1",
            "",
        ] {
            assert!(!a.allows(bad), "{bad}");
        }
        assert!(AllowedHosts::new("10.0.0.5:7700", &[]).allows("10.0.0.5:7700"));
        assert!(AllowedHosts::new("x:1", &["*".to_string()]).allows("anything"));
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.schemaregistry.v1+json",
            "application/problem+json",
            "APPLICATION/VND.X+JSON ; q=1",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/+json",
            "application/jsonx",
            "application/vnd.x+JSONx",
            "Application/",
            "applicatio",
            "text/json",
            "",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }
}
