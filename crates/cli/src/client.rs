//! A blocking client of the HTTP API (v1, docs/DESIGN.md) for the CLI commands that talk to a
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
    /// The server: `http://HOST:PORT` or just `HOST:PORT` (`logbook serve` listens on
    /// 127.0.0.1:7700 by default). Plain HTTP only: this client does not speak TLS.
    #[arg(long, env = "LOGBOOK_SERVER", default_value = "http://127.0.0.1:7700",
          value_parser = parse_server)]
    pub server: String,
    /// Longest wait for one answer, ms (connect, send, receive). Requests that ask the server
    /// to wait (`--timeout-ms` of view reads and switches, `tail --follow`) get that wait on top.
    #[arg(long, env = "LOGBOOK_CLIENT_TIMEOUT_MS", default_value_t = 60_000)]
    pub client_timeout_ms: u64,
}

/// `--server` as a base URL: a bare `HOST:PORT` gets `http://`; `https://` is refused here
/// rather than failing later with an obscure transport error.
pub fn parse_server(text: &str) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() {
        return Err("the server address is empty; give HOST:PORT or http://HOST:PORT".into());
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(format!(
            "{text}: TLS is not supported by this client; give the server's plain http:// \
             address (or put a TLS-terminating proxy's http side in front of it)"
        ));
    }
    if lower.starts_with("http://") {
        return Ok(text.to_owned());
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "{text}: scheme {scheme:?} is not supported; give HOST:PORT or http://HOST:PORT"
        ));
    }
    Ok(format!("http://{text}"))
}

/// Largest answer body read, in bytes (1 GiB). ureq's own default stops at 10 MB, which a
/// `view scan --limit 10000` of 2 KB rows already exceeds; the server bounds its answers by
/// row and record counts, not bytes, so this is only a guard against a runaway answer.
const ANSWER_BYTES_MAX: u64 = 1 << 30;

/// Reads a whole answer body as text, up to [`ANSWER_BYTES_MAX`].
fn read_answer(response: &mut ureq::http::Response<ureq::Body>) -> Result<String, ureq::Error> {
    response
        .body_mut()
        .with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_to_string()
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

/// `n` and a noun in the number it takes: `1 row`, `2 rows` (`count(n, "row", "rows")`).
/// A JSON value that is not a number prints as it is.
pub fn count(n: impl Into<CountOf>, one: &str, many: &str) -> String {
    match n.into() {
        CountOf::N(1) => format!("1 {one}"),
        CountOf::N(n) => format!("{n} {many}"),
        CountOf::Text(t) => format!("{t} {many}"),
    }
}

/// What [`count`] counts: a number, or a JSON value from an answer.
#[derive(Debug)]
pub enum CountOf {
    /// A number.
    N(u64),
    /// Something else, shown as is.
    Text(String),
}

impl From<usize> for CountOf {
    fn from(n: usize) -> Self {
        CountOf::N(n as u64)
    }
}

impl From<u64> for CountOf {
    fn from(n: u64) -> Self {
        CountOf::N(n)
    }
}

impl From<&serde_json::Value> for CountOf {
    fn from(v: &serde_json::Value) -> Self {
        v.as_u64()
            .map_or_else(|| CountOf::Text(v.to_string()), CountOf::N)
    }
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
    /// `--client-timeout-ms`, for the timeout message and for requests that wait on the server.
    timeout_ms: u64,
}

/// The base URL of `--server` (already checked by clap; this also covers callers that fill
/// [`ServerArgs`] themselves).
fn base_of(server: &str) -> String {
    parse_server(server).unwrap_or_else(|_| server.trim_end_matches('/').to_owned())
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
            base: base_of(&args.server),
            timeout_ms: args.client_timeout_ms.max(1),
        }
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` with query parameters; the body of a 2xx answer.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.get_waiting(path, query, 0)
    }

    /// `GET path` of a request that asks the server to wait up to `wait_ms` (a long poll, a
    /// token wait): the client waits that long on top of `--client-timeout-ms`, so a wait
    /// the user asked for never ends as a client timeout.
    pub fn get_waiting(
        &self,
        path: &str,
        query: &[(&str, String)],
        wait_ms: u64,
    ) -> anyhow::Result<Value> {
        let mut request = self.agent.get(self.url(path)?);
        for (name, value) in query {
            request = request.query(*name, value);
        }
        let result = if wait_ms > 0 {
            request
                .config()
                .timeout_global(Some(Duration::from_millis(self.timeout_ms + wait_ms)))
                .build()
                .call()
        } else {
            request.call()
        };
        Ok(self.finish_waiting("GET", path, result, wait_ms)?.body)
    }

    /// `GET path` of a text document (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let result = self.agent.get(self.url(path)?).call();
        let mut response = self.connected("GET", path, result)?;
        let status = response.status().as_u16();
        let text = read_answer(&mut response)
            .with_context(|| format!("reading the answer to GET {}{path}", self.base))?;
        if !(200..300).contains(&status) {
            anyhow::bail!(
                "GET {}{path} answered {status}: {}{}",
                self.base,
                text.trim(),
                not_logbook_hint(status, &text)
            );
        }
        Ok(text)
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        let result = self.agent.put(self.url(path)?).send_json(body);
        self.finish("PUT", path, result)
    }

    /// `PUT path` with a body given as JSON text, sent as it is: the server parses it, so a
    /// malformed document is refused with the server's `invalid_json` naming where.
    pub fn put_raw(&self, path: &str, json_text: &str) -> anyhow::Result<Answer> {
        let result = self
            .agent
            .put(self.url(path)?)
            .header("content-type", "application/json")
            .send(json_text);
        self.finish("PUT", path, result)
    }

    /// `POST path` with a body given as JSON text, and extra headers.
    pub fn post_raw(
        &self,
        path: &str,
        json_text: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut request = self
            .agent
            .post(self.url(path)?)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.finish("POST", path, request.send(json_text))
    }

    /// `POST path` with a JSON body and extra headers (`Idempotency-Key`, `traceparent`).
    pub fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        self.post_waiting(path, body, headers, 0)
    }

    /// `POST path` of a request that asks the server to wait up to `wait_ms` (e.g. a switch
    /// waiting for a version to catch up); see [`Client::get_waiting`].
    pub fn post_waiting(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
        wait_ms: u64,
    ) -> anyhow::Result<Answer> {
        let mut request = self.agent.post(self.url(path)?);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let result = if wait_ms > 0 {
            request
                .config()
                .timeout_global(Some(Duration::from_millis(self.timeout_ms + wait_ms)))
                .build()
                .send_json(body)
        } else {
            request.send_json(body)
        };
        self.finish_waiting("POST", path, result, wait_ms)
    }

    /// `DELETE path` with query parameters.
    pub fn delete(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Answer> {
        let mut request = self.agent.delete(self.url(path)?);
        for (name, value) in query {
            request = request.query(*name, value);
        }
        self.finish("DELETE", path, request.call())
    }

    /// The URL of `path`. A path with an empty segment (`/v1/streams//records`) would reach
    /// no route and come back as a puzzling 404: refused here instead.
    fn url(&self, path: &str) -> anyhow::Result<String> {
        let route = path.split('?').next().unwrap_or(path);
        if route.split('/').skip(1).any(str::is_empty) {
            anyhow::bail!(
                "{path}: a stream, view or key name is empty; names and keys must be non-empty"
            );
        }
        Ok(format!("{}{path}", self.base))
    }

    /// Turns a transport failure into an error that says which server and how to start one.
    fn connected(
        &self,
        method: &str,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        self.connected_waiting(method, path, result, 0)
    }

    /// [`Client::connected`] for a request that also waited `wait_ms` on the server.
    fn connected_waiting(
        &self,
        method: &str,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        wait_ms: u64,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        result.map_err(|error| self.transport_error(method, path, &error, wait_ms))
    }

    /// What a transport failure means, in words: which server, and what to do.
    fn transport_error(
        &self,
        method: &str,
        path: &str,
        error: &ureq::Error,
        wait_ms: u64,
    ) -> anyhow::Error {
        let at = format!("{method} {}{path}", self.base);
        match error {
            ureq::Error::Timeout(_) => {
                let waited = if wait_ms > 0 {
                    format!(
                        "{} ms (the {wait_ms} ms the server was asked to wait, plus \
                         --client-timeout-ms {})",
                        self.timeout_ms + wait_ms,
                        self.timeout_ms
                    )
                } else {
                    format!("--client-timeout-ms {} ms", self.timeout_ms)
                };
                anyhow::anyhow!(
                    "{at}: no complete answer within {waited}; raise --client-timeout-ms \
                     (or LOGBOOK_CLIENT_TIMEOUT_MS) if the server is just slow"
                )
            }
            // The server stopped reading an upload: most often it refused the body (413)
            // and closed the connection, so the answer is lost with it.
            ureq::Error::Io(io)
                if method != "GET"
                    && matches!(
                        io.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) =>
            {
                anyhow::anyhow!(
                    "{at}: the server closed the request before answering ({error}); body too \
                     large? (the server takes at most {} MiB per request)",
                    logbook_server::limits::BODY_BYTES_MAX >> 20
                )
            }
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                anyhow::anyhow!(
                    "{at}: {error}; is `logbook serve` (or `logbook quickstart`) running there? \
                     (--server / LOGBOOK_SERVER)"
                )
            }
            _ => anyhow::anyhow!("{at}: {error}"),
        }
    }

    fn finish(
        &self,
        method: &str,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Answer> {
        self.finish_waiting(method, path, result, 0)
    }

    fn finish_waiting(
        &self,
        method: &str,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        wait_ms: u64,
    ) -> anyhow::Result<Answer> {
        let mut response = self.connected_waiting(method, path, result, wait_ms)?;
        let status = response.status().as_u16();
        let text = read_answer(&mut response).map_err(|error| {
            let cause = self.transport_error(method, path, &error, wait_ms);
            cause.context(format!(
                "reading the answer to {method} {}{path}",
                self.base
            ))
        })?;
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
            Err(_) => anyhow::bail!(
                "{method} {}{path} answered {status}: {}{}",
                self.base,
                text.trim(),
                not_logbook_hint(status, &text)
            ),
        }
    }
}

/// For an error answer that is no problem document: a hint that the address may not be a
/// Logbook server at all (every error of ours has a JSON body).
fn not_logbook_hint(status: u16, text: &str) -> &'static str {
    if text.trim().is_empty() || status == 404 {
        " (not a Logbook problem document: is this a Logbook server? check --server / \
         LOGBOOK_SERVER)"
    } else {
        ""
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
            base: base_of(&args.server),
            timeout_ms: args.client_timeout_ms.max(1),
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
        let url = self.url(path).map_err(|error| Failure {
            retry_after: None,
            transient: false,
            error,
        })?;
        let mut request = self
            .agent
            .post(url)
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
        let text = match read_answer(&mut response) {
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
    fn server_addresses_take_a_bare_host_port_and_refuse_tls() {
        assert_eq!(
            parse_server("127.0.0.1:7700").as_deref(),
            Ok("http://127.0.0.1:7700")
        );
        assert_eq!(
            parse_server("http://db1:7700/").as_deref(),
            Ok("http://db1:7700")
        );
        let tls = parse_server("https://db1:7700").err().unwrap_or_default();
        assert!(tls.contains("TLS is not supported"), "{tls}");
        assert!(parse_server("ftp://x").is_err());
        assert!(parse_server("").is_err());
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
