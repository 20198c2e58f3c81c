//! A typed Rust client of API v1 (feature `client`, on by default): async on tokio, with a
//! small blocking wrapper ([`blocking::Client`]).
//!
//! * **Exactly-once writes.** Every logical write gets an `Idempotency-Key` (a fresh request
//!   id, or the caller's) that every retry carries, so a retry of a write that landed returns
//!   the original outcome (`duplicate: true`) instead of writing twice.
//! * **Retries** of connection errors, timeouts, 429 and 503 with jittered exponential
//!   backoff, honouring `Retry-After` ([`RetryPolicy`]).
//! * **Unknown outcomes** are [`ClientError::Unknown`], never a failure: the write may or may
//!   not have been applied.
//! * **A session** ([`Session`]): read-your-writes and monotonic reads by default; a read can
//!   opt out with [`Consistency::Any`].
//! * **The push tail** ([`Client::subscribe`]): a stream's records as typed events as they
//!   are appended, resumed from the last event's cursor after a drop, the node's
//!   `wait_ms_max` or a broken connection ([`Subscription`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), logbook_api::client::ClientError> {
//! use logbook_api::client::{Client, ReadOptions};
//! use logbook_api::streams::{CreateStream, RecordIn};
//! use serde_json::json;
//!
//! let client = Client::new("127.0.0.1:7700")?;
//! client.create_stream("orders", &CreateStream::default()).await?;
//! client.create_view("orders_by_id", &json!({"source": "orders", "kind": "table"})).await?;
//! client.append("orders", RecordIn::new(json!({"total": 12})).key("o-1")).await?;
//! // Read your write: the read waits until the view has applied the append.
//! let row = client.get_row("orders_by_id", "o-1", &ReadOptions::default()).await?;
//! assert_eq!(row.map(|r| r.value["total"].clone()), Some(json!(12)));
//! # Ok(()) }
//! ```

pub mod blocking;
mod error;
mod http;
mod oneshot;
mod raw;
pub mod retry;
pub mod session;
mod subscription;
pub mod tls;
mod txn;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use serde::de::DeserializeOwned;

pub use error::ClientError;
pub use oneshot::Commit;
pub use raw::{RawAnswer, RawRequest, Verb};
pub use retry::RetryPolicy;
pub use session::Session;
pub use subscription::{EVENT_BYTES_MAX, StartAt, Subscribe, Subscription, SubscriptionEvent};
pub use txn::Transaction;

use self::http::{Call, Retry, Transport, decode};
use self::retry::Jitter;
use crate::groups::{
    CommitOffsets, GroupInfo, GroupList, GroupReset, Heartbeat, JoinGroup, MemberAssignment,
    OffsetsCommitted, ResetGroup,
};
use crate::ops::Health;
use crate::paths::{self, Query};
use crate::problem::ProblemCode;
use crate::streams::{
    AppendBody, AppendMany, AppendOne, CreateStream, OffsetsAtTime, RecordIn, RecordsOut,
    Retention, StreamInfo, StreamList,
};
use crate::txns::{Row, Rows};
use crate::views::{
    RebuildBody, Rebuilt, SwitchBody, ViewDetail, ViewList, ViewOut, ViewRow, ViewRows,
};

/// The commit stream: the key-value table is derived from it.
pub const TXN_STREAM: &str = "_txn";

/// Settings of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientConfig {
    /// Longest wait for one attempt's answer, ms (default 30,000), connecting included; a
    /// wait the server is asked for (a long poll, a token wait) is added to it.
    pub request_timeout_ms: u64,
    /// Retries of one request.
    pub retry: RetryPolicy,
    /// Attempts of a whole transaction by [`Client::transaction`] (default 10).
    pub transaction_attempts_max: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout_ms: 30_000,
            retry: RetryPolicy::default(),
            transaction_attempts_max: 10,
        }
    }
}

/// Everything a [`Client`] is made with: its settings, credentials and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Timeouts and retries.
    pub config: ClientConfig,
    /// A bearer token's secret (`lb_…`), sent with every request as `Authorization:
    /// Bearer <token>`.
    pub bearer_token: Option<String>,
    /// For an `https://` server: the CA certificates (PEM) to trust instead of the system's
    /// roots — a private CA, or the certificate `logbook tls self-signed` made. Ignored for
    /// `http://`.
    pub ca_cert_pem: Option<Vec<u8>>,
}

/// Which consistency token a read sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Consistency {
    /// The session's entry for the read's source (read-your-writes, monotonic reads).
    #[default]
    Session,
    /// No token: whatever the server has applied now (opting out of the session).
    Any,
    /// This token, as is.
    Token(String),
}

/// How a view or key-value read is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The token sent (default: the session's).
    pub consistency: Consistency,
    /// Longest server-side wait for the token, ms (server default 5,000; at most 60,000).
    pub timeout_ms: Option<u64>,
}

impl ReadOptions {
    /// A read without a token (opting out of the session's guarantees).
    pub fn any() -> Self {
        ReadOptions {
            consistency: Consistency::Any,
            timeout_ms: None,
        }
    }
}

/// A range of keys: a prefix, or `start` (inclusive) and/or `end` (exclusive); at most
/// `limit` rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    /// Keys starting with this.
    pub prefix: Option<String>,
    /// First key (inclusive); a page's `next` continues here.
    pub start: Option<String>,
    /// Keys below this.
    pub end: Option<String>,
    /// Most rows (server default 100).
    pub limit: Option<usize>,
}

impl KeyRange {
    fn query(&self) -> Query {
        Query::new()
            .push_opt("prefix", self.prefix.as_deref())
            .push_opt("start", self.start.as_deref())
            .push_opt("end", self.end.as_deref())
            .push_opt("limit", self.limit)
    }
}

/// Where a record read starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadRecords {
    /// The partition (needed when the stream has several).
    pub partition: Option<u32>,
    /// First offset (default: the first retained).
    pub from: Option<u64>,
    /// Most records, 1..=1000 (server default 100).
    pub limit: Option<usize>,
    /// Long poll: wait up to this long (≤ 30,000 ms) for a record when there is none yet.
    pub wait_ms: Option<u64>,
}

/// A client of one Logbook server. Cheap to clone: clones share the connection pool and the
/// session.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    config: ClientConfig,
    session: Mutex<Session>,
    /// View → its source stream, learnt once per view.
    sources: Mutex<HashMap<String, String>>,
    rng: Mutex<Jitter>,
}

/// `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT` (plain HTTP) as whether it is TLS
/// and `HOST:PORT`; other schemes and paths are refused.
fn authority(server: &str) -> Result<(bool, String), ClientError> {
    let bad = |reason: &str| ClientError::InvalidArgument {
        field: "server",
        reason: format!("{server:?}: {reason}"),
    };
    let text = server.trim();
    let lower = text.to_ascii_lowercase();
    let (tls, rest) = if lower.starts_with("http://") {
        (false, &text[7..])
    } else if lower.starts_with("https://") {
        (true, &text[8..])
    } else if lower.contains("://") {
        return Err(bad("the scheme must be http:// or https://"));
    } else {
        (false, text)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err(bad("give HOST:PORT, http://HOST:PORT or https://HOST:PORT"));
    }
    Ok((tls, rest.to_string()))
}

impl Client {
    /// A client of the server at `server` (`HOST:PORT`, `http://HOST:PORT`, or
    /// `https://HOST:PORT` trusting the system's roots) with the default [`ClientConfig`].
    /// Connects lazily; must be used inside a tokio runtime.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for an address that is not `HOST:PORT`.
    pub fn new(server: &str) -> Result<Client, ClientError> {
        Client::with_config(server, ClientConfig::default())
    }

    /// A client with these settings.
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn with_config(server: &str, config: ClientConfig) -> Result<Client, ClientError> {
        Client::with_bearer(server, config, None)
    }

    /// A client that sends `token` (a bearer token's secret, `lb_…`) with every request as
    /// `Authorization: Bearer <token>`.
    ///
    /// # Errors
    /// As [`Client::new`]; [`ClientError::InvalidArgument`] naming `token` when it cannot be
    /// a header value.
    pub fn with_bearer(
        server: &str,
        config: ClientConfig,
        token: Option<&str>,
    ) -> Result<Client, ClientError> {
        let options = ClientOptions {
            config,
            bearer_token: token.map(str::to_string),
            ca_cert_pem: None,
        };
        Client::with_options(server, &options)
    }

    /// A client made with all its [`ClientOptions`]; an `https://` server's certificate is
    /// checked against `ca_cert_pem`, else the system's roots.
    ///
    /// # Errors
    /// As [`Client::with_bearer`]; [`ClientError::InvalidArgument`] naming `ca_cert` for a
    /// CA file without a usable certificate (see [`tls::client_config`]).
    pub fn with_options(server: &str, options: &ClientOptions) -> Result<Client, ClientError> {
        let config = options.config;
        let (https, authority) = authority(server)?;
        let tls = if https {
            Some(tls::client_config(options.ca_cert_pem.as_deref())?)
        } else {
            None
        };
        let mut transport = Transport::new(
            authority,
            tls,
            Duration::from_millis(config.request_timeout_ms),
            config.retry,
        )?;
        if let Some(token) = options.bearer_token.as_deref() {
            let mut value = hyper::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::InvalidArgument {
                    field: "token",
                    reason: "a token is printable ASCII (lb_ and 32 hex digits)".into(),
                })?;
            value.set_sensitive(true);
            transport.authorization = Some(value);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                config,
                session: Mutex::new(Session::new()),
                sources: Mutex::new(HashMap::new()),
                rng: Mutex::new(Jitter::from_entropy()),
            }),
        })
    }

    /// The server's `HOST:PORT`.
    pub fn server(&self) -> &str {
        &self.inner.transport.authority
    }

    /// The server's base URL, `http://HOST:PORT` or `https://HOST:PORT`.
    pub fn base_url(&self) -> String {
        self.inner.transport.base_url()
    }

    /// A copy of the session (the positions seen so far).
    pub fn session(&self) -> Session {
        self.inner
            .session
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// A fresh request id for a logical write.
    pub fn new_request_id(&self) -> String {
        self.inner.rng.lock().map_or_else(
            |_| Jitter::from_entropy().request_id(),
            |mut r| r.request_id(),
        )
    }

    async fn call<T: DeserializeOwned>(&self, call: Call) -> Result<T, ClientError> {
        let answer = self.inner.transport.send(&call, &self.inner.rng).await?;
        decode(&call, &answer)
    }

    async fn call_empty(&self, call: Call) -> Result<(), ClientError> {
        self.inner
            .transport
            .send(&call, &self.inner.rng)
            .await
            .map(|_| ())
    }

    /// Merges an answer's token into the session (a malformed one is ignored: the answer
    /// stands, the session just does not move).
    fn observe(&self, token: Option<&str>) {
        if let (Some(t), Ok(mut s)) = (token, self.inner.session.lock()) {
            let _ = s.observe(t);
        }
    }

    /// `q` with the read's `token` and `timeout_ms`.
    fn with_token(&self, q: Query, source: &str, opts: &ReadOptions) -> Query {
        let token = match &opts.consistency {
            Consistency::Session => self
                .inner
                .session
                .lock()
                .ok()
                .and_then(|s| s.token_for(source)),
            Consistency::Any => None,
            Consistency::Token(t) => Some(t.clone()),
        };
        q.push_opt("token", token)
            .push_opt("timeout_ms", opts.timeout_ms)
    }

    fn server_wait(opts: &ReadOptions) -> u64 {
        opts.timeout_ms
            .unwrap_or(crate::limits::VIEW_READ_TIMEOUT_MS_DEFAULT)
    }

    // ---- operations ----

    /// `GET /v1/health`: liveness and readiness (a 503 while opening is an error with code
    /// `not_ready`... after the retries: use a [`RetryPolicy::none`] client to probe).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Call::new(Method::GET, paths::health())).await
    }

    // ---- streams ----

    /// Creates a stream (or confirms one with the same settings).
    ///
    /// # Errors
    /// `stream_exists` (other settings), `invalid_stream_name`, `invalid_stream_config`.
    pub async fn create_stream(
        &self,
        stream: &str,
        settings: &CreateStream,
    ) -> Result<StreamInfo, ClientError> {
        self.call(Call::new(Method::PUT, paths::stream(stream)).json(settings)?)
            .await
    }

    /// Replaces a stream's retention and applies it (segments beyond it are deleted before
    /// the answer); the answer shows the stream with what retention left.
    ///
    /// # Errors
    /// `unknown_stream`, `invalid_stream_config` (a limit of 0), `reserved_stream`.
    pub async fn set_retention(
        &self,
        stream: &str,
        retention: &Retention,
    ) -> Result<StreamInfo, ClientError> {
        self.call(Call::new(Method::PUT, paths::stream_retention(stream)).json(retention)?)
            .await
    }

    /// Every stream.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_streams(&self) -> Result<StreamList, ClientError> {
        self.call(Call::new(Method::GET, paths::streams())).await
    }

    /// One stream's settings and extent.
    ///
    /// # Errors
    /// `unknown_stream`.
    pub async fn stream(&self, stream: &str) -> Result<StreamInfo, ClientError> {
        self.call(Call::new(Method::GET, paths::stream(stream)))
            .await
    }

    /// Drops a stream and its records.
    ///
    /// # Errors
    /// `unknown_stream`, `reserved_stream`.
    pub async fn drop_stream(&self, stream: &str) -> Result<(), ClientError> {
        self.call_empty(Call::new(Method::DELETE, paths::stream(stream)))
            .await
    }

    // ---- records ----

    /// Appends one record, exactly once (a fresh request id, carried by every retry).
    ///
    /// # Errors
    /// [`ClientError::Unknown`] if no attempt was answered; problems such as
    /// `record_too_large` naming the field.
    pub async fn append(&self, stream: &str, record: RecordIn) -> Result<AppendOne, ClientError> {
        let id = self.new_request_id();
        self.append_with_id(stream, &id, record).await
    }

    /// Appends one record with the caller's request id (use the same id to retry later).
    ///
    /// # Errors
    /// As [`Client::append`]; `request_id_conflict` if the id was used for another body.
    pub async fn append_with_id(
        &self,
        stream: &str,
        request_id: &str,
        record: RecordIn,
    ) -> Result<AppendOne, ClientError> {
        let mut call =
            Call::new(Method::POST, paths::records(stream)).json(&AppendBody::one(record))?;
        call.request_id = Some(request_id.to_string());
        let one: AppendOne = self.call(call).await?;
        self.observe(one.token.as_deref());
        Ok(one)
    }

    /// Appends a batch atomically per partition, exactly once (a fresh request id).
    ///
    /// # Errors
    /// As [`Client::append`]; `batch_too_many_records` past
    /// [`crate::limits::BATCH_RECORDS_MAX`].
    pub async fn append_batch(
        &self,
        stream: &str,
        records: Vec<RecordIn>,
    ) -> Result<AppendMany, ClientError> {
        let id = self.new_request_id();
        self.append_batch_with_id(stream, &id, records).await
    }

    /// Appends a batch with the caller's request id.
    ///
    /// # Errors
    /// As [`Client::append_batch`].
    pub async fn append_batch_with_id(
        &self,
        stream: &str,
        request_id: &str,
        records: Vec<RecordIn>,
    ) -> Result<AppendMany, ClientError> {
        let mut call =
            Call::new(Method::POST, paths::records(stream)).json(&AppendBody::batch(records))?;
        call.request_id = Some(request_id.to_string());
        let many: AppendMany = self.call(call).await?;
        self.observe(many.token.as_deref());
        Ok(many)
    }

    /// Reads records of one partition from an offset; with `wait_ms`, a long poll (tail):
    /// the answer comes when a record arrives or the wait ends (then `records` is empty and
    /// `next` is where to poll again).
    ///
    /// # Errors
    /// `unknown_stream`, `unknown_partition`, `offset_out_of_range`, `invalid_request`.
    pub async fn read(&self, stream: &str, at: &ReadRecords) -> Result<RecordsOut, ClientError> {
        let q = Query::new()
            .push_opt("partition", at.partition)
            .push_opt("from", at.from)
            .push_opt("limit", at.limit)
            .push_opt("wait_ms", at.wait_ms);
        let mut call = Call::new(Method::GET, paths::records(stream) + &q.finish());
        call.server_wait_ms = at.wait_ms.unwrap_or(0);
        self.call(call).await
    }

    /// Per partition, the first record at or after `timestamp_ms` (ms since the Unix
    /// epoch), or the partition's end when none is: where to start reading to see the
    /// stream from that time on.
    ///
    /// # Errors
    /// `unknown_stream`.
    pub async fn offsets_at_time(
        &self,
        stream: &str,
        timestamp_ms: i64,
    ) -> Result<OffsetsAtTime, ClientError> {
        let q = Query::new().push("timestamp_ms", timestamp_ms);
        self.call(Call::new(
            Method::GET,
            paths::stream_offsets(stream) + &q.finish(),
        ))
        .await
    }

    // ---- consumer groups ----

    /// Joins `group` as `member` (or rejoins after a restart); the member's partitions.
    ///
    /// # Errors
    /// `unknown_stream`, `group_stream_mismatch`, `invalid_request` naming the field.
    pub async fn join_group(
        &self,
        group: &str,
        body: &JoinGroup,
    ) -> Result<MemberAssignment, ClientError> {
        self.call(Call::new(Method::POST, paths::group_members(group)).json(body)?)
            .await
    }

    /// A member's heartbeat, giving up `released` partitions; its assignment now.
    ///
    /// # Errors
    /// `member_fenced` (join again), `partition_not_assigned`, `unknown_group`.
    pub async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        body: &Heartbeat,
    ) -> Result<MemberAssignment, ClientError> {
        self.call(Call::new(Method::POST, paths::group_heartbeat(group, member)).json(body)?)
            .await
    }

    /// Commits processed offsets under the caller's request id (a retry with the same id
    /// answers `duplicate` and changes nothing).
    ///
    /// # Errors
    /// `member_fenced`, `partition_not_assigned`, `offset_behind_commit`,
    /// `request_id_conflict`; [`ClientError::Unknown`] if no attempt was answered.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member: &str,
        request_id: &str,
        body: &CommitOffsets,
    ) -> Result<OffsetsCommitted, ClientError> {
        let mut call = Call::new(Method::POST, paths::group_commit(group, member)).json(body)?;
        call.request_id = Some(request_id.to_string());
        self.call(call).await
    }

    /// A member leaves its group.
    ///
    /// # Errors
    /// `member_fenced`, `unknown_group`.
    pub async fn leave_group(
        &self,
        group: &str,
        member: &str,
        epoch: u64,
    ) -> Result<(), ClientError> {
        let q = Query::new().push("epoch", epoch);
        self.call_empty(Call::new(
            Method::DELETE,
            paths::group_member(group, member) + &q.finish(),
        ))
        .await
    }

    /// Every consumer group.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_groups(&self) -> Result<GroupList, ClientError> {
        self.call(Call::new(Method::GET, paths::groups())).await
    }

    /// One group: members, assignments, committed offsets and lag.
    ///
    /// # Errors
    /// `unknown_group`.
    pub async fn group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        self.call(Call::new(Method::GET, paths::group(group))).await
    }

    /// Resets a group without members (or, with `dry_run`, says what that would do).
    ///
    /// # Errors
    /// `group_active`, `unknown_group`, `invalid_request` naming the field.
    pub async fn reset_group(
        &self,
        group: &str,
        body: &ResetGroup,
    ) -> Result<GroupReset, ClientError> {
        self.call(Call::new(Method::POST, paths::group_reset(group)).json(body)?)
            .await
    }

    /// Deletes a group without members: its committed offsets go, its name is free.
    ///
    /// # Errors
    /// `group_active`, `unknown_group`.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        self.call_empty(Call::new(Method::DELETE, paths::group(group)))
            .await
    }

    // ---- views ----

    /// Creates a view from a spec (JSON, as the server documents it); remembers its source
    /// for the session.
    ///
    /// # Errors
    /// `invalid_view_spec` naming the spec's field, `view_exists`.
    pub async fn create_view(
        &self,
        view: &str,
        spec: &serde_json::Value,
    ) -> Result<ViewOut, ClientError> {
        let out: ViewOut = self
            .call(Call::new(Method::PUT, paths::view(view)).json(spec)?)
            .await?;
        self.remember_source(view, &out.spec);
        Ok(out)
    }

    /// Every view.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_views(&self) -> Result<ViewList, ClientError> {
        self.call(Call::new(Method::GET, paths::views())).await
    }

    /// A view and the status of its versions (with `digest`, also a full scan's digest).
    ///
    /// # Errors
    /// `unknown_view`.
    pub async fn view_status(&self, view: &str, digest: bool) -> Result<ViewDetail, ClientError> {
        let q = Query::new().push_opt("digest", digest.then_some(true));
        let detail: ViewDetail = self
            .call(Call::new(Method::GET, paths::view(view) + &q.finish()))
            .await?;
        self.remember_source(view, &detail.spec);
        Ok(detail)
    }

    /// Drops a view, or only one (non-current) version of it.
    ///
    /// # Errors
    /// `unknown_view`, `unknown_version`, `version_unavailable`.
    pub async fn drop_view(&self, view: &str, version: Option<u64>) -> Result<(), ClientError> {
        let q = Query::new().push_opt("version", version);
        self.call_empty(Call::new(Method::DELETE, paths::view(view) + &q.finish()))
            .await
    }

    /// Starts rebuilding a view into a new version (with a new spec, or the current one's).
    /// Not retried once sent: a second rebuild would start a second version.
    ///
    /// # Errors
    /// `invalid_view_spec` (as `spec.<field>`), `too_many_versions`;
    /// [`ClientError::Unknown`] if it was sent without an answer.
    pub async fn rebuild_view(
        &self,
        view: &str,
        spec: Option<serde_json::Value>,
    ) -> Result<Rebuilt, ClientError> {
        let mut call =
            Call::new(Method::POST, paths::view_rebuild(view)).json(&RebuildBody { spec })?;
        call.retry = Retry::IfNotSent;
        self.call(call).await
    }

    /// Makes a version serve all reads (`percent` 100 or none) or a share of them.
    ///
    /// # Errors
    /// `not_caught_up` (retry later), `unknown_version`.
    pub async fn switch_view(
        &self,
        view: &str,
        switch: &SwitchBody,
    ) -> Result<ViewOut, ClientError> {
        let mut call = Call::new(Method::POST, paths::view_switch(view)).json(switch)?;
        call.server_wait_ms = switch
            .timeout_ms
            .unwrap_or(crate::limits::VIEW_SWITCH_TIMEOUT_MS_DEFAULT);
        self.call(call).await
    }

    /// One row of a view (`None`: no such row), reading at least the session's positions in
    /// the view's source (see [`ReadOptions`]).
    ///
    /// # Errors
    /// `consistency_timeout` if the view did not apply the token in time; `unknown_view`.
    pub async fn get_row(
        &self,
        view: &str,
        key: &str,
        opts: &ReadOptions,
    ) -> Result<Option<ViewRow>, ClientError> {
        let source = self.source_of(view, opts).await?;
        let q = self.with_token(Query::new(), &source, opts);
        let mut call = Call::new(Method::GET, paths::view_row(view, key) + &q.finish());
        call.server_wait_ms = Client::server_wait(opts);
        match self.call::<ViewRow>(call).await {
            Ok(row) => {
                self.observe(row.token.as_deref());
                Ok(Some(row))
            }
            Err(e) if e.code() == Some(ProblemCode::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Rows of a view in key order (a page: continue from `next`).
    ///
    /// # Errors
    /// As [`Client::get_row`].
    pub async fn scan_view(
        &self,
        view: &str,
        range: &KeyRange,
        opts: &ReadOptions,
    ) -> Result<ViewRows, ClientError> {
        let source = self.source_of(view, opts).await?;
        let q = self.with_token(range.query(), &source, opts);
        let mut call = Call::new(Method::GET, paths::view_rows(view) + &q.finish());
        call.server_wait_ms = Client::server_wait(opts);
        let rows: ViewRows = self.call(call).await?;
        self.observe(rows.token.as_deref());
        Ok(rows)
    }

    fn remember_source(&self, view: &str, spec: &serde_json::Value) {
        if let (Some(source), Ok(mut m)) = (spec["source"].as_str(), self.inner.sources.lock()) {
            m.insert(view.to_string(), source.to_string());
        }
    }

    /// The view's source stream (asked once per view; not needed without a session token).
    async fn source_of(&self, view: &str, opts: &ReadOptions) -> Result<String, ClientError> {
        if opts.consistency != Consistency::Session {
            return Ok(String::new());
        }
        let known = self
            .inner
            .sources
            .lock()
            .ok()
            .and_then(|m| m.get(view).cloned());
        if let Some(s) = known {
            return Ok(s);
        }
        let detail = self.view_status(view, false).await?;
        Ok(detail.spec["source"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    // ---- key-value reads outside transactions ----

    /// The latest committed value of a key (`None`: absent), at least as new as the
    /// session's commits and reads.
    ///
    /// # Errors
    /// `token_incarnation`, `invalid_token`.
    pub async fn kv_get(&self, key: &str, opts: &ReadOptions) -> Result<Option<Row>, ClientError> {
        let q = self.with_token(Query::new(), TXN_STREAM, opts);
        let call = Call::new(Method::GET, paths::kv_key(key) + &q.finish());
        match self.call::<Row>(call).await {
            Ok(row) => {
                self.observe(row.token.as_deref());
                Ok(Some(row))
            }
            Err(e) if e.code() == Some(ProblemCode::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The latest committed rows of a range.
    ///
    /// # Errors
    /// As [`Client::kv_get`].
    pub async fn kv_scan(&self, range: &KeyRange, opts: &ReadOptions) -> Result<Rows, ClientError> {
        let q = self.with_token(range.query(), TXN_STREAM, opts);
        let rows: Rows = self
            .call(Call::new(Method::GET, paths::kv() + &q.finish()))
            .await?;
        self.observe(rows.token.as_deref());
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            authority("127.0.0.1:7700").unwrap(),
            (false, "127.0.0.1:7700".into())
        );
        assert_eq!(authority(" http://h:1/ ").unwrap(), (false, "h:1".into()));
        assert_eq!(authority("HTTP://h:1").unwrap(), (false, "h:1".into()));
        assert_eq!(authority("https://h:1").unwrap(), (true, "h:1".into()));
        for bad in ["ftp://h", "", "http://", "https://", "h:1/v1", "a b:1"] {
            assert!(
                matches!(
                    authority(bad),
                    Err(ClientError::InvalidArgument {
                        field: "server",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
