//! A blocking client of the HTTP API (v1, docs/DESIGN.md) for the CLI commands that talk to a
//! running `logbook serve`.
//!
//! One [`Client`] wraps `logbook-api`'s blocking client (its connection pool, transport and
//! errors); paths come from `logbook_api::paths`. Every call returns the decoded JSON body of
//! a 2xx answer, or an [`ApiProblem`] carrying the server's RFC 9457 problem document (stable
//! `code`, `detail`, offending `field`), so commands can print what the server said and
//! scripts can match on the code. A server that cannot be reached gives an error that says
//! how to start one.
//!
//! A command makes one attempt (no retries): it reports what happened, and a script that
//! retries passes the same `--request-id`. Bulk import retries itself ([`Client::try_post_json`]).

use std::fmt;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use logbook_api::client::blocking::{Client as Blocking, Subscription};
use logbook_api::client::{
    ClientConfig, ClientError, ClientOptions, RawRequest, RetryPolicy, Subscribe,
    SubscriptionEvent, Verb,
};
use logbook_api::paths::Query;
use logbook_api::problem::{Problem, ProblemCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where the server is: every client command takes this.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server: `http://HOST:PORT`, `https://HOST:PORT` or just `HOST:PORT` (plain
    /// HTTP; `logbook serve` listens on 127.0.0.1:7700 by default).
    #[arg(long, env = "LOGBOOK_SERVER", default_value = "http://127.0.0.1:7700",
          value_parser = parse_server)]
    pub server: String,
    /// Longest wait for one answer, ms (connect, send, receive). Requests that ask the server
    /// to wait (`--timeout-ms` of view reads and switches, `tail --follow`) get that wait on top.
    #[arg(long, env = "LOGBOOK_CLIENT_TIMEOUT_MS", default_value_t = 60_000)]
    pub client_timeout_ms: u64,
    /// The bearer token to send (`lb_…`; prefer the environment variable: a flag is visible
    /// to other users in the process list). Without it the admin token of a local server is
    /// read from `--data-dir`'s admin.token, if there is one. (`--token` of view reads is a
    /// consistency token, not this.)
    #[arg(
        id = "auth_token",
        long = "auth-token",
        env = "LOGBOOK_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The data directory of a server on this machine: without a token, the CLI uses the
    /// admin token the server wrote to its admin.token (like a .pgpass). (Both arguments
    /// have ids of their own: view reads have a `token` argument of their own.)
    #[arg(
        id = "token_data_dir",
        long = "data-dir",
        env = "LOGBOOK_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: std::path::PathBuf,
    /// For an https:// server: the CA certificate file (PEM) its certificate is checked
    /// against, instead of the system's roots — e.g. the cert.pem of `logbook tls
    /// self-signed`.
    #[arg(long = "ca-cert", env = "LOGBOOK_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl ServerArgs {
    /// The arguments of a client of `server` with the token in `data_dir`'s admin.token.
    pub fn local(server: String, data_dir: &std::path::Path) -> ServerArgs {
        ServerArgs {
            server,
            client_timeout_ms: 60_000,
            token: None,
            data_dir: data_dir.to_path_buf(),
            ca_cert: None,
        }
    }

    /// The CA certificates of `--ca-cert`, read, if given.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn ca_cert_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.ca_cert
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .with_context(|| format!("reading the CA certificate {}", path.display()))
            })
            .transpose()
    }

    /// The token to send: `--auth-token` / `LOGBOOK_TOKEN`, else the admin token file of
    /// `--data-dir` if it exists, else none.
    ///
    /// # Errors
    /// The admin token file exists but cannot be read.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        admin_token(&self.data_dir)
    }
}

/// The admin token a server wrote to `data_dir` on first start (`admin.token`), if there
/// is one.
///
/// # Errors
/// The file exists but cannot be read.
pub fn admin_token(data_dir: &std::path::Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(logbook_server::auth::tokens::ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read the admin token file {}: {e}; give a token with --auth-token or \
             LOGBOOK_TOKEN",
            path.display()
        )),
    }
}

/// `--server` as a base URL: a bare `HOST:PORT` gets `http://`; other schemes than
/// `http://` and `https://` are refused here rather than failing later with an obscure
/// transport error.
pub fn parse_server(text: &str) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() {
        return Err(
            "the server address is empty; give HOST:PORT, http://HOST:PORT or https://HOST:PORT"
                .into(),
        );
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(text.to_owned());
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "{text}: scheme {scheme:?} is not supported; give HOST:PORT, http://HOST:PORT or \
             https://HOST:PORT"
        ));
    }
    Ok(format!("http://{text}"))
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

impl From<u32> for CountOf {
    fn from(n: u32) -> Self {
        CountOf::N(u64::from(n))
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

impl ApiProblem {
    /// Whether the server's code is one of `codes` (a code this CLI does not know is none
    /// of them).
    pub fn is_any(&self, codes: &[ProblemCode]) -> bool {
        self.problem
            .known_code()
            .is_some_and(|code| codes.contains(&code))
    }
}

/// A successful answer: status and body — the decoded JSON (`null` when the body is empty),
/// or, from the `*_as` calls, the `logbook_api` type the route answers.
#[derive(Debug)]
pub struct Answer<T = Value> {
    /// HTTP status (2xx).
    pub status: u16,
    /// The body.
    pub body: T,
}

/// The empty JSON object `{}`: the body of a request that takes no parameters (an abort, a
/// commit of an interactive transaction).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Empty {}

/// A blocking HTTP client of one Logbook server.
#[derive(Clone)]
pub struct Client {
    inner: Blocking,
    base: String,
    /// `--client-timeout-ms`, for the timeout message.
    timeout_ms: u64,
}

/// The base URL of `--server` (already checked by clap; this also covers callers that fill
/// [`ServerArgs`] themselves).
fn base_of(server: &str) -> String {
    parse_server(server).unwrap_or_else(|_| server.trim_end_matches('/').to_owned())
}

/// `name=value` pairs as a query string (`""` or `?a=1&b=2`), each value percent-encoded.
fn query_of(query: &[(&str, String)]) -> String {
    query
        .iter()
        .fold(Query::new(), |q, (name, value)| q.push(name, value))
        .finish()
}

impl Client {
    /// A client of the server at `args.server`. Makes no request yet.
    ///
    /// # Errors
    /// An address the client cannot use, no runtime for it, an unreadable token file.
    pub fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let timeout_ms = args.client_timeout_ms.max(1);
        let base = base_of(&args.server);
        let config = ClientConfig {
            request_timeout_ms: timeout_ms,
            retry: RetryPolicy::none(),
            ..ClientConfig::default()
        };
        let token = args.token()?;
        let ca_cert_pem = args.ca_cert_pem()?;
        let options = ClientOptions {
            config,
            bearer_token: token,
            ca_cert_pem,
        };
        let inner = Blocking::with_options(&base, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            inner,
            base,
            timeout_ms,
        })
    }

    /// Subscribes to `stream`'s records as they are appended (the push tail); its errors,
    /// and those of each event, are worded as every command's.
    ///
    /// # Errors
    /// The server's problem (`unknown_stream`, a bad partition or offset), no server.
    pub fn subscribe(&self, stream: &str, options: &Subscribe) -> anyhow::Result<Follow<'_>> {
        let path = logbook_api::paths::record_events(stream);
        let subscription = self
            .inner
            .subscribe(stream, options)
            .map_err(|e| self.error("GET", &path, e, Sent::default()))?;
        Ok(Follow {
            client: self,
            path,
            subscription,
        })
    }

    /// A fresh request id (`Idempotency-Key`) for a logical write.
    pub fn new_request_id(&self) -> String {
        self.inner.as_async().new_request_id()
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
        let request = RawRequest::new(Verb::Get, format!("{path}{}", query_of(query)));
        Ok(self.send(request.server_wait_ms(wait_ms))?.body)
    }

    /// `GET path` with query parameters; the answer as the api type `T` (a field the CLI
    /// renders that the answer lacks is an error naming it, never a `null` printed).
    pub fn get_as<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        self.get_waiting_as(path, query, 0)
    }

    /// [`Client::get_waiting`], the answer as the api type `T`.
    pub fn get_waiting_as<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        wait_ms: u64,
    ) -> anyhow::Result<T> {
        let request = RawRequest::new(Verb::Get, format!("{path}{}", query_of(query)));
        Ok(self.send_as(request.server_wait_ms(wait_ms))?.body)
    }

    /// `GET path` of a text document (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let request = self.checked(RawRequest::new(Verb::Get, path.to_owned()))?;
        let answer = self
            .inner
            .send_raw(request)
            .map_err(|e| self.error("GET", path, e, Sent::default()))?;
        String::from_utf8(answer.body)
            .with_context(|| format!("GET {}{path}: the answer is not UTF-8 text", self.base))
    }

    /// `PUT path` with a JSON body (an api request type, or a JSON value).
    pub fn put(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Answer> {
        self.send(RawRequest::new(Verb::Put, path.to_owned()).body(encode(path, body)?))
    }

    /// `PUT path` with a JSON body; the answer as the api type `T`.
    pub fn put_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<Answer<T>> {
        self.send_as(RawRequest::new(Verb::Put, path.to_owned()).body(encode(path, body)?))
    }

    /// `PUT path` with a body given as JSON text, sent as it is: the server parses it, so a
    /// malformed document is refused with the server's `invalid_json` naming where.
    /// The answer as the api type `T`.
    pub fn put_raw<T: DeserializeOwned>(
        &self,
        path: &str,
        json_text: &str,
    ) -> anyhow::Result<Answer<T>> {
        self.send_as(RawRequest::new(Verb::Put, path.to_owned()).body(json_text))
    }

    /// `POST path` with a JSON body (an api request type, or a JSON value) and extra headers
    /// (`Idempotency-Key`, `traceparent`).
    pub fn post(
        &self,
        path: &str,
        body: &impl Serialize,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        self.post_waiting(path, body, headers, 0)
    }

    /// `POST path` of a request that asks the server to wait up to `wait_ms` (e.g. a switch
    /// waiting for a version to catch up); see [`Client::get_waiting`].
    pub fn post_waiting(
        &self,
        path: &str,
        body: &impl Serialize,
        headers: &[(&str, &str)],
        wait_ms: u64,
    ) -> anyhow::Result<Answer> {
        let request = RawRequest::new(Verb::Post, path.to_owned())
            .body(encode(path, body)?)
            .server_wait_ms(wait_ms);
        self.send(with_headers(request, headers)?)
    }

    /// [`Client::post_waiting`], the answer as the api type `T`.
    pub fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        headers: &[(&str, &str)],
        wait_ms: u64,
    ) -> anyhow::Result<Answer<T>> {
        let request = RawRequest::new(Verb::Post, path.to_owned())
            .body(encode(path, body)?)
            .server_wait_ms(wait_ms);
        self.send_as(with_headers(request, headers)?)
    }

    /// A one-shot commit under `request_id` (`POST /v1/commits`); with `retry`, committed
    /// again under the same id after an answer marked retryable (for a commit that pins no
    /// snapshot: each attempt takes the newest).
    pub fn commit(
        &self,
        request_id: &str,
        commit: &logbook_api::client::Commit,
        retry: bool,
    ) -> anyhow::Result<logbook_api::txns::Committed> {
        let done = if retry {
            self.inner.commit_with_id_retrying(request_id, commit)
        } else {
            self.inner.commit_with_id(request_id, commit)
        };
        let sent = Sent {
            wait_ms: 0,
            body_bytes: serde_json::to_vec(commit.body()).map_or(0, |b| b.len()),
        };
        done.map_err(|e| self.error("POST", &logbook_api::paths::commits(), e, sent))
    }

    /// Keys and ranges at one snapshot (`POST /v1/kv/read`), each range read on past the
    /// answer's byte budget up to its limit.
    pub fn kv_read(
        &self,
        read: &logbook_api::txns::ReadBody,
    ) -> anyhow::Result<logbook_api::txns::ReadAnswer> {
        self.inner.kv_read(read).map_err(|e| {
            let body_bytes = serde_json::to_vec(read).map_or(0, |b| b.len());
            let sent = Sent {
                wait_ms: 0,
                body_bytes,
            };
            self.error("POST", &logbook_api::paths::kv_read(), e, sent)
        })
    }

    /// `DELETE path` with query parameters.
    pub fn delete(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Answer> {
        self.send(RawRequest::new(
            Verb::Delete,
            format!("{path}{}", query_of(query)),
        ))
    }

    /// `DELETE path`; the answer as the api type `T`.
    pub fn delete_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Ok(self
            .send_as(RawRequest::new(Verb::Delete, path.to_owned()))?
            .body)
    }

    /// Sends `request` once; a 2xx answer's JSON body.
    fn send(&self, request: RawRequest) -> anyhow::Result<Answer> {
        let (method, path) = (verb_name(request.verb), request.path.clone());
        let (status, bytes) = self.send_once(request)?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{method} {path}: the answer is not JSON"))?
        };
        Ok(Answer { status, body })
    }

    /// Sends `request` once; a 2xx answer's body as the api type `T`.
    fn send_as<T: DeserializeOwned>(&self, request: RawRequest) -> anyhow::Result<Answer<T>> {
        let (method, path) = (verb_name(request.verb), request.path.clone());
        let (status, bytes) = self.send_once(request)?;
        let body = decode_as(method, &path, &bytes)?;
        Ok(Answer { status, body })
    }

    /// Sends `request` once; a 2xx answer's status and body bytes.
    fn send_once(&self, request: RawRequest) -> anyhow::Result<(u16, Vec<u8>)> {
        let method = verb_name(request.verb);
        let path = request.path.clone();
        let sent = Sent {
            wait_ms: request.server_wait_ms,
            body_bytes: request.body.as_ref().map_or(0, Vec::len),
        };
        let request = self.checked(request)?;
        let answer = self
            .inner
            .send_raw(request)
            .map_err(|e| self.error(method, &path, e, sent))?;
        Ok((answer.status, answer.body))
    }

    /// `request` if its path names something. A path with an empty name
    /// (`/v1/streams//records`) would reach no route and come back as a puzzling 404: refused
    /// here instead. An empty key is a key like any other (`/v1/kv/`).
    fn checked(&self, request: RawRequest) -> anyhow::Result<RawRequest> {
        let path = &request.path;
        let route = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = route.split('/').collect();
        if (1..segments.len()).any(|i| segments[i].is_empty() && !is_key_segment(&segments, i)) {
            anyhow::bail!("{path}: a stream, view or transaction name is empty");
        }
        Ok(request)
    }

    /// What a failed request means, in words: the server's problem as an [`ApiProblem`];
    /// otherwise which server, and what to do.
    fn error(&self, method: &str, path: &str, error: ClientError, sent: Sent) -> anyhow::Error {
        let at = format!("{method} {}{path}", self.base);
        let wait_ms = sent.wait_ms;
        match error {
            ClientError::Problem { problem, .. } => ApiProblem {
                status: problem.status,
                problem: *problem,
            }
            .into(),
            ClientError::Answer { status, detail, .. } => {
                anyhow::anyhow!("{at} answered {status}: {detail}")
            }
            ClientError::Tls { detail, .. } => anyhow::anyhow!(
                "{at}: TLS failed: {detail} (--ca-cert / LOGBOOK_CA_CERT names the CA file to \
                 trust; `logbook tls self-signed` prints which)"
            ),
            ClientError::Unreachable { last, .. } => anyhow::anyhow!(
                "{at}: {last}; is `logbook serve` (or `logbook quickstart`) running there? \
                 (--server / LOGBOOK_SERVER)"
            ),
            ClientError::Transport { ref last, .. } | ClientError::Unknown { ref last, .. }
                if last.starts_with("no answer within") =>
            {
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
                let unknown = if error.is_unknown() {
                    format!(
                        " (the outcome is unknown: the server may have acted on it{})",
                        rerun_hint(&error)
                    )
                } else {
                    String::new()
                };
                anyhow::anyhow!(
                    "{at}: no complete answer within {waited}{unknown}; raise \
                     --client-timeout-ms (or LOGBOOK_CLIENT_TIMEOUT_MS) if the server is just slow"
                )
            }
            // Answered, but not settled (busy after an attempt that may have been applied,
            // or `outcome_unknown`): the same request id learns the outcome.
            ClientError::Unknown {
                problem: Some(_), ..
            } => anyhow::anyhow!("{at}: {error}{}", rerun_hint(&error)),
            ClientError::Unknown { .. } => anyhow::anyhow!(unknown_outcome(&at, &error, sent)),
            other => anyhow::anyhow!("{at}: {other}"),
        }
    }
}

/// What to do about an unknown outcome: send it again under the same request id, which
/// applies it at most once and answers what became of it.
fn rerun_hint(error: &ClientError) -> String {
    match error {
        ClientError::Unknown {
            request_id: Some(id),
            ..
        } => format!(
            "; run it again with --request-id {id} to learn the outcome (with the same \
             request id it is applied at most once)"
        ),
        _ => String::new(),
    }
}

/// The words of a write whose answer never came. Only a body over the server's limit is
/// said to be the likely cause: the server refused it (413) and closed the connection, so
/// the answer was lost with it.
fn unknown_outcome(at: &str, error: &ClientError, sent: Sent) -> String {
    let max = logbook_api::limits::BODY_BYTES_MAX;
    if sent.body_bytes > max {
        format!(
            "{at}: {error}{}; the body is {} bytes and the server takes at most {} MiB per \
             request: it refused it before answering",
            rerun_hint(error),
            sent.body_bytes,
            max >> 20
        )
    } else {
        format!(
            "{at}: {error}{}; the connection closed before the answer came",
            rerun_hint(error)
        )
    }
}

/// Most connections in a row a [`Follow`] makes before a failed one ends it.
pub const FOLLOW_ATTEMPTS_MAX: u32 = 10;

/// A subscription of [`Client::subscribe`].
pub struct Follow<'a> {
    client: &'a Client,
    path: String,
    subscription: Subscription,
}

impl Follow<'_> {
    /// The next event (connecting again from the last event's id when the last connection
    /// ended). A lost connection, or a server that cannot be reached (restarting), is tried
    /// again after the default policy's backoff (doubling to 5 s), up to
    /// [`FOLLOW_ATTEMPTS_MAX`] connections in a row (about 16 s), with a note on stderr: a
    /// follow outlives a server restart, resuming where it was.
    ///
    /// # Errors
    /// As [`Client::subscribe`]; an `error` event's problem; the last of
    /// [`FOLLOW_ATTEMPTS_MAX`] failed connections in a row.
    pub fn next_event(&mut self) -> anyhow::Result<SubscriptionEvent> {
        let policy = RetryPolicy {
            attempts_max: FOLLOW_ATTEMPTS_MAX,
            ..RetryPolicy::default()
        };
        let mut failed = 0;
        loop {
            match self.subscription.next_event() {
                Err(e @ (ClientError::Transport { .. } | ClientError::Unreachable { .. }))
                    if failed + 1 < policy.attempts_max =>
                {
                    failed += 1;
                    eprintln!("# {e}; connecting again");
                    std::thread::sleep(policy.backoff(failed, rand::random::<f64>(), None));
                }
                answer => {
                    return answer
                        .map_err(|e| self.client.error("GET", &self.path, e, Sent::default()));
                }
            }
        }
    }

    /// Where the subscription stands: the id of the last event received (see
    /// [`Subscription::cursor`]).
    pub fn cursor(&self) -> Option<&logbook_api::streams::EventCursor> {
        self.subscription.cursor()
    }
}

/// What a request sent, for the words of its failure.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    /// How long the server was asked to wait, ms (0: not at all).
    wait_ms: u64,
    /// The body's bytes (0: none).
    body_bytes: usize,
}

/// A request body as JSON text.
fn encode(path: &str, body: &impl Serialize) -> anyhow::Result<String> {
    serde_json::to_string(body).with_context(|| format!("encoding the body for {path}"))
}

/// The last segment of `T`'s path (`StreamInfo`), for messages.
fn type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// `GET`, `PUT`, ... for messages.
fn verb_name(verb: Verb) -> &'static str {
    match verb {
        Verb::Get => "GET",
        Verb::Put => "PUT",
        Verb::Post => "POST",
        Verb::Delete => "DELETE",
    }
}

/// A 2xx answer's body as the api type `T`; an error names the request and the type.
fn decode_as<T: DeserializeOwned>(method: &str, path: &str, bytes: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).with_context(|| {
        format!(
            "{method} {path}: the answer is not the {} this CLI reads (a server of another \
             version?)",
            type_name::<T>()
        )
    })
}

/// `request` with the headers a command sends: `Idempotency-Key` and `traceparent`.
fn with_headers(request: RawRequest, headers: &[(&str, &str)]) -> anyhow::Result<RawRequest> {
    let mut request = request;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("idempotency-key") {
            request = request.request_id(Some(value));
        } else if name.eq_ignore_ascii_case("traceparent") {
            request = request.traceparent(Some(value));
        } else {
            anyhow::bail!("header {name}: the client sends only Idempotency-Key and traceparent");
        }
    }
    Ok(request)
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
    /// One attempt of `POST path` with a body that is already JSON text, and extra headers.
    /// Unlike [`Client::post`], the error says whether a retry may help ([`Failure`]);
    /// retrying is the caller's choice (safe with an `Idempotency-Key`).
    /// A 2xx answer's body is decoded as the api type `T`.
    pub fn try_post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        json: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Answer<T>, Failure> {
        let fail = |error: anyhow::Error| Failure {
            retry_after: None,
            transient: false,
            error,
        };
        let request = RawRequest::new(Verb::Post, path.to_owned()).body(json.to_vec());
        let request = with_headers(request, headers)
            .and_then(|r| self.checked(r))
            .map_err(fail)?;
        match self.inner.send_raw(request) {
            Ok(answer) => {
                let body = decode_as("POST", path, &answer.body).map_err(fail)?;
                Ok(Answer {
                    status: answer.status,
                    body,
                })
            }
            Err(error) => {
                let (transient, retry_after) = match &error {
                    ClientError::Problem {
                        problem,
                        retry_after_s,
                    } => (
                        problem.status == 429 || problem.status == 503,
                        retry_after_s.map(Duration::from_secs),
                    ),
                    ClientError::Answer { status, .. } => (*status == 429 || *status == 503, None),
                    ClientError::Unreachable { .. }
                    | ClientError::Transport { .. }
                    | ClientError::Unknown { .. } => (true, None),
                    _ => (false, None),
                };
                Err(Failure {
                    retry_after,
                    transient,
                    error: self.error(
                        "POST",
                        path,
                        error,
                        Sent {
                            wait_ms: 0,
                            body_bytes: json.len(),
                        },
                    ),
                })
            }
        }
    }
}

/// The problem behind an error of [`Client`], if the server answered with one.
pub fn problem_of(error: &anyhow::Error) -> Option<&ApiProblem> {
    error.downcast_ref::<ApiProblem>()
}

/// Whether `error` is the server's answer with the problem code `code`.
pub fn is_problem(error: &anyhow::Error, code: ProblemCode) -> bool {
    problem_of(error).is_some_and(|p| p.is_any(&[code]))
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

/// Whether segment `i` of a path split on `/` is a key's (`/v1/kv/K`, `/v1/txns/T/kv/K`,
/// `/v1/views/V/rows/K`, and what follows them).
fn is_key_segment(segments: &[&str], i: usize) -> bool {
    match segments.get(1..3) {
        Some(["v1", "kv"]) => i == 3,
        Some(["v1", "txns"]) => i == 5 && segments.get(4) == Some(&"kv"),
        Some(["v1", "views"]) => i == 5 && segments.get(4) == Some(&"rows"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review r14b m2: an unknown outcome names its request id as text (not Rust's
    /// `Some("…")`) and blames the body's size only when it is over the limit.
    #[test]
    fn an_unknown_outcome_says_its_request_id_and_blames_only_a_body_too_large() {
        let unknown = |request_id: Option<&str>| ClientError::Unknown {
            operation: format!("POST {}", logbook_api::paths::commits()),
            request_id: request_id.map(str::to_string),
            attempts: 3,
            last: "connection reset".into(),
            problem: None,
        };
        let small = Sent {
            wait_ms: 0,
            body_bytes: 60,
        };
        let text = unknown_outcome("POST x", &unknown(Some("pay-1")), small);
        assert!(text.contains("request id \"pay-1\""), "{text}");
        assert!(
            !text.contains("Some(") && !text.contains("too large"),
            "{text}"
        );
        let text = unknown_outcome("POST x", &unknown(None), small);
        assert!(
            text.contains("without a request id") && !text.contains("None"),
            "{text}"
        );
        let big = Sent {
            wait_ms: 0,
            body_bytes: logbook_api::limits::BODY_BYTES_MAX + 1,
        };
        let text = unknown_outcome("POST x", &unknown(Some("pay-1")), big);
        assert!(text.contains("the server takes at most 16 MiB"), "{text}");
    }

    #[test]
    fn only_a_key_segment_may_be_empty() {
        use logbook_api::paths;
        let empty_ok = |path: &str| {
            let s: Vec<&str> = path.split('/').collect();
            (1..s.len()).all(|i| !s[i].is_empty() || is_key_segment(&s, i))
        };
        for ok in [
            paths::kv_key(""),
            paths::txn_key("t1", ""),
            paths::txn_increment("t1", ""),
            paths::view_row("v", ""),
        ] {
            assert!(empty_ok(&ok), "{ok}");
        }
        for bad in [
            paths::records(""),
            paths::txn_key("", "k"),
            paths::view_row("", "k"),
            paths::route::KV.replace("/kv", "//kv"),
        ] {
            assert!(!empty_ok(&bad), "{bad}");
        }
    }

    #[test]
    fn server_addresses_take_a_bare_host_port_and_https() {
        assert_eq!(
            parse_server("127.0.0.1:7700").as_deref(),
            Ok("http://127.0.0.1:7700")
        );
        assert_eq!(
            parse_server("http://db1:7700/").as_deref(),
            Ok("http://db1:7700")
        );
        assert_eq!(
            parse_server("https://db1:7700").as_deref(),
            Ok("https://db1:7700")
        );
        assert!(parse_server("ftp://x").is_err());
        assert!(parse_server("").is_err());
    }

    #[test]
    fn an_unreachable_server_says_how_to_start_one() {
        // Port 9 on localhost (discard) is closed on any machine that runs these tests.
        let client = Client::new(&ServerArgs {
            server: "http://127.0.0.1:9/".into(),
            client_timeout_ms: 2_000,
            token: None,
            data_dir: "/nonexistent".into(),
            ca_cert: None,
        })
        .unwrap();
        let error = client
            .get(&logbook_api::paths::health(), &[])
            .err()
            .map(|e| e.to_string());
        let text = error.unwrap_or_default();
        assert!(text.contains("http://127.0.0.1:9/v1/health"), "{text}");
        assert!(text.contains("logbook serve"), "{text}");
    }
}
