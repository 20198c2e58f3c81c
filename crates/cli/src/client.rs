//! A blocking client of the HTTP API (v1, DESIGN.md) for the CLI commands that talk to a
//! running `logbook serve`.
//!
//! One [`Client`] keeps one connection pool (ureq agent) to one server. Every call returns
//! the decoded JSON body of a 2xx answer, or an [`ApiProblem`] carrying the server's RFC 9457
//! problem document (stable `code`, `detail`, offending `field`), so commands can print what
//! the server said and scripts can match on the code. A server that cannot be reached gives
//! an error that says how to start one.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use logbook_server::error::Problem;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Where the server is: every client command takes this.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server's base URL (`logbook serve` listens on 127.0.0.1:7700 by default).
    #[arg(long, env = "LOGBOOK_SERVER", default_value = "http://127.0.0.1:7700")]
    pub server: String,
    /// Longest wait for one answer, ms (connect, send, receive).
    #[arg(long, env = "LOGBOOK_CLIENT_TIMEOUT_MS", default_value_t = 60_000)]
    pub client_timeout_ms: u64,
}

/// The characters left as they are in a path segment: RFC 3986 unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment (a stream, view or key name), so `a/b|c` stays one segment.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// An error answer of the server: its problem document and HTTP status.
#[derive(Debug)]
pub struct ApiProblem {
    /// HTTP status.
    pub status: u16,
    /// The problem document (`code` is the stable part).
    pub problem: Problem,
}

impl fmt::Display for ApiProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.problem.code, self.status, self.problem.detail
        )?;
        if let Some(field) = &self.problem.field {
            write!(f, " [field: {field}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiProblem {}

/// A successful answer: status and decoded body (`null` when the body is empty).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status (2xx).
    pub status: u16,
    /// The JSON body, or `null` for an empty one (204).
    pub body: Value,
}

/// A blocking HTTP client of one Logbook server.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    /// A client of the server at `args.server`. Makes no request yet.
    pub fn new(args: &ServerArgs) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(args.client_timeout_ms.max(1))))
            .build();
        Self {
            agent: config.into(),
            base: args.server.trim_end_matches('/').to_owned(),
        }
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` with query parameters; the body of a 2xx answer.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut request = self.agent.get(self.url(path));
        for (name, value) in query {
            request = request.query(*name, value);
        }
        Ok(self.finish("GET", path, request.call())?.body)
    }

    /// `GET path` of a text document (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let result = self.agent.get(self.url(path)).call();
        let mut response = self.connected("GET", path, result)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to GET {path}"))?;
        if !(200..300).contains(&status) {
            anyhow::bail!("GET {path} answered {status}: {text}");
        }
        Ok(text)
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        let result = self.agent.put(self.url(path)).send_json(body);
        self.finish("PUT", path, result)
    }

    /// `PUT path` with a body given as JSON text, sent as it is: the server parses it, so a
    /// malformed document is refused with the server's `invalid_json` naming where.
    pub fn put_raw(&self, path: &str, json_text: &str) -> anyhow::Result<Answer> {
        let result = self
            .agent
            .put(self.url(path))
            .header("content-type", "application/json")
            .send(json_text);
        self.finish("PUT", path, result)
    }

    /// `POST path` with a JSON body and extra headers (`Idempotency-Key`, `traceparent`).
    pub fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut request = self.agent.post(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.finish("POST", path, request.send_json(body))
    }

    /// `DELETE path` with query parameters.
    pub fn delete(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Answer> {
        let mut request = self.agent.delete(self.url(path));
        for (name, value) in query {
            request = request.query(*name, value);
        }
        self.finish("DELETE", path, request.call())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Turns a transport failure into an error that says which server and how to start one.
    fn connected(
        &self,
        method: &str,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        result.map_err(|error| {
            let hint = match error {
                ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                    "; is `logbook serve` (or `logbook quickstart`) running there? \
                     (--server / LOGBOOK_SERVER)"
                }
                _ => "",
            };
            anyhow::anyhow!("{method} {}{path}: {error}{hint}", self.base)
        })
    }

    fn finish(
        &self,
        method: &str,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Answer> {
        let mut response = self.connected(method, path, result)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        if (200..300).contains(&status) {
            let body = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text)
                    .with_context(|| format!("{method} {path}: the answer is not JSON"))?
            };
            return Ok(Answer { status, body });
        }
        match serde_json::from_str::<Problem>(&text) {
            Ok(problem) => Err(ApiProblem { status, problem }.into()),
            Err(_) => anyhow::bail!("{method} {path} answered {status}: {}", text.trim()),
        }
    }
}

/// Why one attempt of [`Client::try_post_json`] failed, told apart so a caller that retries
/// (bulk import) knows whether a retry can help. (When no answer came, the server may or may
/// not have acted on the request.)
#[derive(Debug)]
pub struct Failure {
    /// The server's `Retry-After`, when it sent one (seconds).
    pub retry_after: Option<Duration>,
    /// Whether the same request may succeed later: no answer because the connection failed,
    /// was reset or timed out, or an answer 429 / 503 (a limit that frees up).
    pub transient: bool,
    /// The error: an [`ApiProblem`] (see [`problem_of`]) when the server answered with one.
    pub error: anyhow::Error,
}

impl Client {
    /// A client that keeps up to `connections` idle connections to the server, for callers
    /// that keep that many requests in flight from as many threads (ureq's default keeps 3
    /// per host, so a fourth thread would open a new connection for every request).
    ///
    /// The timeout applies to each phase of a request (connect, send, receive) rather than to
    /// the whole call: with a whole-call timeout ureq resolves the host on a new thread for
    /// every request (so that the lookup can be timed out), which costs bulk import a third of
    /// its throughput.
    pub fn with_connections(args: &ServerArgs, connections: usize) -> Self {
        let timeout = Some(Duration::from_millis(args.client_timeout_ms.max(1)));
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(timeout)
            .timeout_send_request(timeout)
            .timeout_send_body(timeout)
            .timeout_recv_response(timeout)
            .timeout_recv_body(timeout)
            .max_idle_connections(connections.max(1))
            .max_idle_connections_per_host(connections.max(1))
            .build();
        Self {
            agent: config.into(),
            base: args.server.trim_end_matches('/').to_owned(),
        }
    }

    /// One attempt of `POST path` with a body that is already JSON text, and extra headers.
    /// Unlike [`Client::post`], the error says whether a retry may help ([`Failure`]);
    /// retrying is the caller's choice (safe with an `Idempotency-Key`).
    pub fn try_post_json(
        &self,
        path: &str,
        json: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Answer, Failure> {
        let mut request = self
            .agent
            .post(self.url(path))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = match request.send(json) {
            Ok(r) => r,
            Err(error) => {
                let transient = matches!(
                    error,
                    ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_)
                );
                return Err(Failure {
                    retry_after: None,
                    transient,
                    error: self
                        .connected("POST", path, Err(error))
                        .err()
                        .unwrap_or_else(|| anyhow::anyhow!("POST {path}: no answer")),
                });
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match response.body_mut().read_to_string() {
            Ok(text) => text,
            Err(error) => {
                // The answer was cut off: as if none came.
                return Err(Failure {
                    retry_after: None,
                    transient: true,
                    error: anyhow::anyhow!("POST {path}: reading the answer: {error}"),
                });
            }
        };
        if (200..300).contains(&status) {
            let body = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).map_err(|e| Failure {
                    retry_after: None,
                    transient: false,
                    error: anyhow::anyhow!("POST {path}: the answer is not JSON: {e}"),
                })?
            };
            return Ok(Answer { status, body });
        }
        let error = match serde_json::from_str::<Problem>(&text) {
            Ok(problem) => ApiProblem { status, problem }.into(),
            Err(_) => anyhow::anyhow!("POST {path} answered {status}: {}", text.trim()),
        };
        Err(Failure {
            retry_after,
            transient: status == 429 || status == 503,
            error,
        })
    }
}

/// The problem behind an error of [`Client`], if the server answered with one.
pub fn problem_of(error: &anyhow::Error) -> Option<&ApiProblem> {
    error.downcast_ref::<ApiProblem>()
}

/// Reads a JSON document given on the command line: the text itself, or `@FILE`.
pub fn json_arg(text: &str) -> anyhow::Result<String> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}")),
        None => Ok(text.to_owned()),
    }
}

/// Prints one JSON document on one line of stdout (the `--json` output of every command).
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string(value).context("encoding the output as JSON")?;
    // An error, not a panic, when stdout is a closed pipe (`| head`).
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_one_path_segment_and_round_trip() {
        assert_eq!(
            segment("2013-1-1|UA|1545|EWR"),
            "2013-1-1%7CUA%7C1545%7CEWR"
        );
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("plain-name_1.x~"), "plain-name_1.x~");
        let encoded = segment("ü/?#%");
        let decoded = percent_encoding::percent_decode_str(&encoded).decode_utf8();
        assert_eq!(decoded.ok().as_deref(), Some("ü/?#%"));
    }

    #[test]
    fn an_unreachable_server_says_how_to_start_one() {
        // Port 9 on localhost (discard) is closed on any machine that runs these tests.
        let client = Client::new(&ServerArgs {
            server: "http://127.0.0.1:9/".into(),
            client_timeout_ms: 2_000,
        });
        let error = client.get("/v1/health", &[]).err().map(|e| e.to_string());
        let text = error.unwrap_or_default();
        assert!(text.contains("http://127.0.0.1:9/v1/health"), "{text}");
        assert!(text.contains("logbook serve"), "{text}");
    }
}
