//! A blocking wrapper of the async [`super::Client`], for programs without an async runtime
//! (the CLI): each call runs on the calling thread, while the client's private tokio runtime
//! (one worker thread) drives the connections, so many threads can share one client.
//!
//! Do not call it from inside an async runtime (tokio panics on a nested `block_on`); use the
//! async client there.
//!
//! ```no_run
//! # fn demo() -> Result<(), logbook_api::client::ClientError> {
//! use logbook_api::client::blocking::Client;
//! use logbook_api::streams::RecordIn;
//! let client = Client::new("127.0.0.1:7700")?;
//! let at = client.append("orders", RecordIn::new(serde_json::json!({"total": 3})))?;
//! println!("appended at {}:{}", at.partition, at.offset);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use tokio::runtime::Runtime;

use super::{
    ClientConfig, ClientError, ClientOptions, Commit, KeyRange, RawAnswer, RawRequest, ReadOptions,
    ReadRecords, Subscribe, SubscriptionEvent,
};
use crate::groups::{
    CommitOffsets, GroupInfo, GroupList, GroupReset, Heartbeat, JoinGroup, MemberAssignment,
    OffsetsCommitted, ResetGroup,
};
use crate::ops::Health;
use crate::streams::{
    AppendMany, AppendOne, CreateStream, EventCursor, OffsetsAtTime, RecordIn, RecordsOut,
    Retention, StreamInfo, StreamList,
};
use crate::txns::{BeginBody, Committed, PutBody, ReadAnswer, ReadBody, Row, Rows};
use crate::views::{Rebuilt, SwitchBody, ViewDetail, ViewList, ViewOut, ViewRow, ViewRows};

/// A blocking client of one Logbook server (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    rt: Arc<Runtime>,
    inner: super::Client,
}

/// Forwards blocking methods to the async client's methods of the same name.
macro_rules! forward {
    ($($(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)*) => {
        $(
            $(#[$doc])*
            ///
            /// # Errors
            /// As the async client's method of the same name.
            pub fn $name(&self $(, $arg: $ty)*) -> Result<$ret, ClientError> {
                self.rt.block_on(self.inner.$name($($arg),*))
            }
        )*
    };
}

impl Client {
    /// A client of `server` (`HOST:PORT` or `http://HOST:PORT`) with default settings.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for a bad address or when no runtime can be made.
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

    /// A client that sends `token` as `Authorization: Bearer <token>` with every request.
    ///
    /// # Errors
    /// As [`super::Client::with_bearer`].
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

    /// A client made with all its options (an `https://` server's CA among them).
    ///
    /// # Errors
    /// As [`super::Client::with_options`].
    pub fn with_options(server: &str, options: &ClientOptions) -> Result<Client, ClientError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("logbook-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::InvalidArgument {
                field: "runtime",
                reason: format!("cannot start a tokio runtime: {e}"),
            })?;
        let inner = super::Client::with_options(server, options)?;
        Ok(Client {
            rt: Arc::new(rt),
            inner,
        })
    }

    /// The async client underneath (sharing the session).
    pub fn as_async(&self) -> &super::Client {
        &self.inner
    }

    /// A copy of the session.
    pub fn session(&self) -> super::Session {
        self.inner.session()
    }

    forward! {
        /// `GET /v1/health`.
        fn health(&self) -> Health;
        /// Creates a stream.
        fn create_stream(&self, stream: &str, settings: &CreateStream) -> StreamInfo;
        /// Replaces a stream's retention.
        fn set_retention(&self, stream: &str, retention: &Retention) -> StreamInfo;
        /// Every stream.
        fn list_streams(&self) -> StreamList;
        /// One stream.
        fn stream(&self, stream: &str) -> StreamInfo;
        /// Drops a stream.
        fn drop_stream(&self, stream: &str) -> ();
        /// Appends one record exactly once.
        fn append(&self, stream: &str, record: RecordIn) -> AppendOne;
        /// Appends one record with the caller's request id.
        fn append_with_id(&self, stream: &str, request_id: &str, record: RecordIn) -> AppendOne;
        /// Appends a batch exactly once.
        fn append_batch(&self, stream: &str, records: Vec<RecordIn>) -> AppendMany;
        /// Appends a batch with the caller's request id.
        fn append_batch_with_id(&self, stream: &str, request_id: &str, records: Vec<RecordIn>) -> AppendMany;
        /// Reads (or long-polls) records of one partition.
        fn read(&self, stream: &str, at: &ReadRecords) -> RecordsOut;
        /// Per partition, the first record at or after a time.
        fn offsets_at_time(&self, stream: &str, timestamp_ms: i64) -> OffsetsAtTime;
        /// Joins a consumer group.
        fn join_group(&self, group: &str, body: &JoinGroup) -> MemberAssignment;
        /// A member's heartbeat.
        fn heartbeat(&self, group: &str, member: &str, body: &Heartbeat) -> MemberAssignment;
        /// Commits processed offsets under a request id.
        fn commit_offsets(&self, group: &str, member: &str, request_id: &str, body: &CommitOffsets) -> OffsetsCommitted;
        /// A member leaves its group.
        fn leave_group(&self, group: &str, member: &str, epoch: u64) -> ();
        /// Every consumer group.
        fn list_groups(&self) -> GroupList;
        /// One consumer group.
        fn group(&self, group: &str) -> GroupInfo;
        /// Resets a consumer group.
        fn reset_group(&self, group: &str, body: &ResetGroup) -> GroupReset;
        /// Deletes a consumer group without members.
        fn delete_group(&self, group: &str) -> ();
        /// Creates a view.
        fn create_view(&self, view: &str, spec: &serde_json::Value) -> ViewOut;
        /// Every view.
        fn list_views(&self) -> ViewList;
        /// A view's status.
        fn view_status(&self, view: &str, digest: bool) -> ViewDetail;
        /// Drops a view or one version.
        fn drop_view(&self, view: &str, version: Option<u64>) -> ();
        /// Starts a rebuild.
        fn rebuild_view(&self, view: &str, spec: Option<serde_json::Value>) -> Rebuilt;
        /// Switches or rolls out a version.
        fn switch_view(&self, view: &str, switch: &SwitchBody) -> ViewOut;
        /// One row of a view.
        fn get_row(&self, view: &str, key: &str, opts: &ReadOptions) -> Option<ViewRow>;
        /// Rows of a view.
        fn scan_view(&self, view: &str, range: &KeyRange, opts: &ReadOptions) -> ViewRows;
        /// A committed key.
        fn kv_get(&self, key: &str, opts: &ReadOptions) -> Option<Row>;
        /// Committed rows of a range.
        fn kv_scan(&self, range: &KeyRange, opts: &ReadOptions) -> Rows;
        /// A request given as its parts (see [`super::RawRequest`]).
        fn send_raw(&self, request: RawRequest) -> RawAnswer;
        /// Keys and ranges at one snapshot.
        fn kv_read(&self, read: &ReadBody) -> ReadAnswer;
        /// A whole transaction in one request, exactly once.
        fn commit(&self, commit: &Commit) -> Committed;
        /// A one-shot commit with the caller's request id.
        fn commit_with_id(&self, request_id: &str, commit: &Commit) -> Committed;
        /// A one-shot commit with the caller's request id, committed again under it after
        /// a retryable refusal.
        fn commit_with_id_retrying(&self, request_id: &str, commit: &Commit) -> Committed;
    }

    /// Reads, commits with the reads declared, and both again after a retryable conflict
    /// (see [`super::Client::commit_retrying`]). `build` runs inside the client's runtime:
    /// it must not call a blocking client.
    ///
    /// # Errors
    /// As [`super::Client::commit_retrying`].
    pub fn commit_retrying(
        &self,
        read: &ReadBody,
        build: impl FnMut(&ReadAnswer) -> Result<Commit, ClientError>,
    ) -> Result<Committed, ClientError> {
        self.rt.block_on(self.inner.commit_retrying(read, build))
    }

    /// Subscribes to a stream's records as they are appended (see
    /// [`super::Client::subscribe`]).
    ///
    /// # Errors
    /// As [`super::Client::subscribe`].
    pub fn subscribe(
        &self,
        stream: &str,
        options: &Subscribe,
    ) -> Result<Subscription, ClientError> {
        let inner = self.rt.block_on(self.inner.subscribe(stream, options))?;
        Ok(Subscription {
            rt: Arc::clone(&self.rt),
            inner,
        })
    }

    /// Begins a transaction.
    ///
    /// # Errors
    /// As [`super::Client::begin`].
    pub fn begin(&self, options: &BeginBody) -> Result<Transaction, ClientError> {
        let txn = self.rt.block_on(self.inner.begin(options))?;
        Ok(Transaction {
            rt: self.rt.clone(),
            txn,
        })
    }

    /// Runs `body` in a transaction and commits it, re-running it after a retryable conflict
    /// (as [`super::Client::transaction`]).
    ///
    /// # Errors
    /// As [`super::Client::transaction`].
    pub fn transaction<T>(
        &self,
        options: &BeginBody,
        mut body: impl FnMut(&Transaction) -> Result<T, ClientError>,
    ) -> Result<(T, Committed), ClientError> {
        let attempts_max = self.inner.inner.config.transaction_attempts_max.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let txn = self.begin(options)?;
            let outcome = match body(&txn) {
                Ok(value) => txn.commit().map(|c| (value, c)),
                Err(e) => {
                    let _ = txn.abort();
                    Err(e)
                }
            };
            match outcome {
                Err(e) if e.is_retryable_transaction() && attempt < attempts_max => {
                    let unit = self.inner.inner.rng.lock().map_or(0.5, |mut r| r.unit());
                    std::thread::sleep(self.inner.inner.config.retry.backoff(attempt, unit, None));
                }
                other => return other,
            }
        }
    }
}

/// A blocking handle of an open transaction.
#[derive(Debug)]
pub struct Transaction {
    rt: Arc<Runtime>,
    txn: super::Transaction,
}

impl Transaction {
    /// Its handle on the server.
    pub fn id(&self) -> &str {
        self.txn.id()
    }

    /// The commit offset it reads at.
    pub fn snapshot(&self) -> u64 {
        self.txn.snapshot()
    }

    /// Reads a key at the snapshot.
    ///
    /// # Errors
    /// As [`super::Transaction::get`].
    pub fn get(&self, key: &str) -> Result<Option<Row>, ClientError> {
        self.rt.block_on(self.txn.get(key))
    }

    /// Reads a key for update.
    ///
    /// # Errors
    /// As [`super::Transaction::get_for_update`].
    pub fn get_for_update(&self, key: &str) -> Result<Option<Row>, ClientError> {
        self.rt.block_on(self.txn.get_for_update(key))
    }

    /// Scans a range at the snapshot.
    ///
    /// # Errors
    /// As [`super::Transaction::scan`].
    pub fn scan(&self, range: &KeyRange) -> Result<Rows, ClientError> {
        self.rt.block_on(self.txn.scan(range))
    }

    /// Buffers a conditional write.
    ///
    /// # Errors
    /// As [`super::Transaction::put_with`].
    pub fn put_with(&self, key: &str, put: &PutBody) -> Result<(), ClientError> {
        self.rt.block_on(self.txn.put_with(key, put))
    }

    /// Buffers a write.
    ///
    /// # Errors
    /// As [`super::Transaction::put`].
    pub fn put(&self, key: &str, value: serde_json::Value) -> Result<(), ClientError> {
        self.rt.block_on(self.txn.put(key, value))
    }

    /// Buffers a delete.
    ///
    /// # Errors
    /// As [`super::Transaction::delete`].
    pub fn delete(&self, key: &str, if_version: Option<u64>) -> Result<(), ClientError> {
        self.rt.block_on(self.txn.delete(key, if_version))
    }

    /// Buffers an increment.
    ///
    /// # Errors
    /// As [`super::Transaction::increment`].
    pub fn increment(&self, key: &str, by: i64) -> Result<(), ClientError> {
        self.rt.block_on(self.txn.increment(key, by))
    }

    /// Commits.
    ///
    /// # Errors
    /// As [`super::Transaction::commit`].
    pub fn commit(self) -> Result<Committed, ClientError> {
        self.rt.block_on(self.txn.commit())
    }

    /// Aborts.
    ///
    /// # Errors
    /// As [`super::Transaction::abort`].
    pub fn abort(self) -> Result<(), ClientError> {
        self.rt.block_on(self.txn.abort())
    }
}

/// A blocking [`super::Subscription`]: an endless iterator of its events (each call waits
/// for the next one).
#[derive(Debug)]
pub struct Subscription {
    rt: Arc<Runtime>,
    inner: super::Subscription,
}

impl Subscription {
    /// The next event (see [`super::Subscription::next_event`]).
    ///
    /// # Errors
    /// As [`super::Subscription::next_event`]; the subscription still stands after one.
    pub fn next_event(&mut self) -> Result<SubscriptionEvent, ClientError> {
        self.rt.block_on(self.inner.next_event())
    }

    /// The id of the last event received: where the subscription resumes.
    pub fn cursor(&self) -> Option<&EventCursor> {
        self.inner.cursor()
    }

    /// How many connections the subscription has made (the first included).
    pub fn connections(&self) -> u64 {
        self.inner.connections()
    }
}

impl Iterator for Subscription {
    type Item = Result<SubscriptionEvent, ClientError>;

    /// The next event; never `None`.
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_event())
    }
}
