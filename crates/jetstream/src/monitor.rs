//! Reads the HTTP monitoring endpoints of nats-server (`/varz`, `/healthz`) and etcd
//! (`/health`): plain `http://host:port` URLs on a trusted network, so a minimal HTTP/1.0 GET
//! is enough and no HTTP client is linked for it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{JetStreamError, Result};

/// Largest answer read, in bytes (`/varz` of a busy server is a few KiB).
const RESPONSE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// GETs `path` from `base_url` (`http://host:port`) and parses the body as JSON.
///
/// # Errors
/// [`JetStreamError::Monitor`] naming the URL: not `http://`, unreachable, no answer within
/// `timeout`, a status other than 200, or a body that is not JSON.
pub async fn get_json(base_url: &str, path: &str, timeout: Duration) -> Result<serde_json::Value> {
    let url = format!("{}{path}", base_url.trim_end_matches('/'));
    let fail = |detail: String| JetStreamError::Monitor {
        url: url.clone(),
        detail,
    };
    let authority = base_url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| fail("not an http://host:port URL".into()))?;
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream
            .take(RESPONSE_BYTES_MAX)
            .read_to_end(&mut response)
            .await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {} ms", timeout.as_millis())))?
        .map_err(|e| fail(e.to_string()))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fail("answer without an HTTP header".into()))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let first = head.lines().next().unwrap_or("");
        return Err(fail(format!("answered {first:?}")));
    }
    serde_json::from_slice(&response[split + 4..]).map_err(|e| fail(format!("body: {e}")))
}
