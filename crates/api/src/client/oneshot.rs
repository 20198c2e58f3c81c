//! Transactions in one round trip: reads at one snapshot (`POST /v1/kv/read`), a whole
//! transaction as one request (`POST /v1/commits`) built with [`Commit`], and
//! [`Client::commit_retrying`], which reads, commits with the reads declared, and does both
//! again after a retryable conflict — under one request id for the logical commit.

use hyper::Method;

use super::http::Call;
use super::{Client, ClientError, ReadOptions, TXN_STREAM};
use crate::paths::{self, Query};
use crate::txns::{
    CommitBody, Committed, Isolation, RangeSpec, ReadAnswer, ReadBody, ReadKey, WriteSpec,
};

/// A one-shot commit request under construction: what was read (at which snapshot, which
/// versions, which ranges), the keys locked, and the writes with their conditions. Without
/// an isolation level it commits `serializable`; without a snapshot, at the newest durable
/// commit (right for a transaction that read nothing).
///
/// ```
/// use logbook_api::client::Commit;
/// use serde_json::json;
/// let commit = Commit::new()
///     .put("user/ada", &json!({"seats": 2}))
///     .increment("seats/booked", 2)
///     .delete_if_version("hold/ada", 7);
/// assert_eq!(commit.body().writes.len(), 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Commit {
    body: CommitBody,
}

impl Commit {
    /// An empty request (`serializable`, newest snapshot).
    pub fn new() -> Self {
        Commit::default()
    }

    /// The wire body as built.
    pub fn body(&self) -> &CommitBody {
        &self.body
    }

    /// The isolation level.
    #[must_use]
    pub fn isolation(mut self, level: Isolation) -> Self {
        self.body.isolation = Some(level);
        self
    }

    /// The snapshot the reads were made at (a `_txn` offset: the commits below it).
    #[must_use]
    pub fn snapshot(mut self, snapshot: u64) -> Self {
        self.body.snapshot = Some(snapshot);
        self
    }

    /// Declares a key as read at the snapshot with `version` (`None`: it was absent).
    #[must_use]
    pub fn read(mut self, key: impl Into<String>, version: Option<u64>) -> Self {
        self.body.reads.push(ReadKey {
            key: key.into(),
            version,
        });
        self
    }

    /// Declares a range as read, up to `next` where a limit cut it (`limit` is dropped: a
    /// commit carries where the read stopped, not how much it asked for).
    #[must_use]
    pub fn range(mut self, mut range: RangeSpec, next: Option<String>) -> Self {
        range.limit = None;
        range.next = next;
        self.body.ranges.push(range);
        self
    }

    /// Declares everything `answer` returned for `asked`: its snapshot, each key with the
    /// version seen, each range as far as it was read.
    #[must_use]
    pub fn reads_from(mut self, asked: &ReadBody, answer: &ReadAnswer) -> Self {
        self.body.snapshot = Some(answer.snapshot);
        for key in &answer.keys {
            self = self.read(key.key.clone(), key.version);
        }
        for (range, page) in asked.ranges.iter().zip(&answer.ranges) {
            self = self.range(range.clone(), page.next.clone());
        }
        self
    }

    /// Locks a key: it conflicts like a write (read for update).
    #[must_use]
    pub fn lock(mut self, key: impl Into<String>) -> Self {
        self.body.locks.push(key.into());
        self
    }

    /// Declares the transaction read-only (no writes or locks; certified on its reads).
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.body.read_only = Some(true);
        self
    }

    /// A write as given (see [`WriteSpec`]): one per key.
    #[must_use]
    pub fn write(mut self, write: WriteSpec) -> Self {
        self.body.writes.push(write);
        self
    }

    /// Puts `value`.
    #[must_use]
    pub fn put(self, key: impl Into<String>, value: &serde_json::Value) -> Self {
        self.write(WriteSpec::put(key, crate::streams::raw(value)))
    }

    /// Puts `value` only if the key is at `version` at commit (else `version_mismatch`).
    #[must_use]
    pub fn put_if_version(
        self,
        key: impl Into<String>,
        value: &serde_json::Value,
        version: u64,
    ) -> Self {
        let mut w = WriteSpec::put(key, crate::streams::raw(value));
        w.if_version = Some(version);
        self.write(w)
    }

    /// Puts `value` only if the key is absent at commit (else `key_exists`).
    #[must_use]
    pub fn put_if_absent(self, key: impl Into<String>, value: &serde_json::Value) -> Self {
        let mut w = WriteSpec::put(key, crate::streams::raw(value));
        w.if_absent = Some(true);
        self.write(w)
    }

    /// Deletes a key.
    #[must_use]
    pub fn delete(self, key: impl Into<String>) -> Self {
        self.write(WriteSpec::delete(key))
    }

    /// Deletes a key only if it is at `version` at commit (else `version_mismatch`).
    #[must_use]
    pub fn delete_if_version(self, key: impl Into<String>, version: u64) -> Self {
        let mut w = WriteSpec::delete(key);
        w.if_version = Some(version);
        self.write(w)
    }

    /// Adds `by` to the key's integer value at commit (absent counts as 0); increments of
    /// one key by concurrent transactions do not conflict.
    #[must_use]
    pub fn increment(self, key: impl Into<String>, by: i64) -> Self {
        self.write(WriteSpec::increment(key, by))
    }
}

impl From<Commit> for CommitBody {
    fn from(c: Commit) -> Self {
        c.body
    }
}

impl Client {
    /// Reads keys and ranges at one snapshot (the newest, or `read.snapshot` within the
    /// server's snapshot window). Nothing is held on the server afterwards.
    ///
    /// An answer has a byte budget ([`crate::limits::KV_READ_ANSWER_BYTES_MAX`]): a range
    /// it cut (`next` with fewer rows than the range's `limit`) is read on from `next` at
    /// the same snapshot, so each range comes back as its `limit` would have it — `next`
    /// set only where the limit cut it.
    ///
    /// # Errors
    /// `snapshot_too_old` (read again at a newer snapshot), `unprocessable_request` naming
    /// the field (a snapshot ahead of the log), `answer_too_large` (the keys' values pass
    /// the budget: ask for fewer), `invalid_request`.
    pub async fn kv_read(&self, read: &ReadBody) -> Result<ReadAnswer, ClientError> {
        let mut answer = self.kv_read_once(read).await?;
        loop {
            let cut = budget_cut(&read.ranges, &answer);
            if cut.is_empty() {
                return Ok(answer);
            }
            let more = ReadBody {
                keys: Vec::new(),
                ranges: cut.iter().map(|c| c.resume.clone()).collect(),
                snapshot: Some(answer.snapshot),
            };
            let page = self.kv_read_once(&more).await?;
            for (c, rows) in cut.iter().zip(page.ranges) {
                let range = &mut answer.ranges[c.index];
                range.rows.extend(rows.rows);
                range.next = rows.next;
            }
        }
    }

    /// One `POST /v1/kv/read`, as the server answers it. A read at the newest snapshot
    /// carries the session's `_txn` entry (the snapshot then includes the session's
    /// commits); one at a named snapshot reads exactly that. The answer's snapshot joins
    /// the session.
    async fn kv_read_once(&self, read: &ReadBody) -> Result<ReadAnswer, ClientError> {
        let opts = ReadOptions::default();
        let q = match read.snapshot {
            None => self.with_token(Query::new(), TXN_STREAM, &opts),
            Some(_) => Query::new(),
        };
        let mut call = Call::new(Method::POST, paths::kv_read() + &q.finish()).json(read)?;
        call.write = false;
        call.server_wait_ms = Client::server_wait(&opts);
        let answer: ReadAnswer = self.call(call).await?;
        self.observe(answer.token.as_deref());
        Ok(answer)
    }

    /// Commits a whole transaction in one request, exactly once (a fresh request id carried
    /// by every retry of the request). Its token joins the session.
    ///
    /// # Errors
    /// `serialization_failure`, `snapshot_too_old` (read and commit again:
    /// [`Client::commit_retrying`]), `version_mismatch`, `key_exists`,
    /// `unprocessable_request` naming the field; [`ClientError::Unknown`] if no attempt was
    /// answered.
    pub async fn commit(&self, commit: &Commit) -> Result<Committed, ClientError> {
        let id = self.new_request_id();
        self.commit_with_id(&id, commit).await
    }

    /// Commits with the caller's request id: a commit retried with the id of one that
    /// committed returns that commit (`duplicate: true`); after one that aborted it is
    /// certified afresh.
    ///
    /// # Errors
    /// As [`Client::commit`].
    pub async fn commit_with_id(
        &self,
        request_id: &str,
        commit: &Commit,
    ) -> Result<Committed, ClientError> {
        let mut call = Call::new(Method::POST, paths::commits()).json(commit.body())?;
        call.request_id = Some(request_id.to_string());
        let committed: Committed = self.call(call).await?;
        self.observe(committed.token.as_deref());
        Ok(committed)
    }

    /// [`Client::commit_with_id`], committed again under the same request id after an
    /// answer marked `retryable` (`serialization_failure`, `snapshot_ahead`, …) with
    /// jittered backoff, up to [`super::ClientConfig::transaction_attempts_max`] attempts:
    /// an attempt the server refused left nothing behind, so its id is free for the next.
    /// For a commit that declares no snapshot (the server takes its newest for each
    /// attempt); one that declares reads at a snapshot meets the same conflict again —
    /// read again instead ([`Client::commit_retrying`]).
    ///
    /// # Errors
    /// As [`Client::commit`]; the last refusal when the attempts run out.
    pub async fn commit_with_id_retrying(
        &self,
        request_id: &str,
        commit: &Commit,
    ) -> Result<Committed, ClientError> {
        self.retry_transaction(async || self.commit_with_id(request_id, commit).await)
            .await
    }

    /// A read-modify-write in two round trips, again until it commits: reads `read` at one
    /// snapshot, asks `build` for the writes, commits them with everything read declared
    /// ([`Commit::reads_from`]), and on a retryable conflict (`serialization_failure`,
    /// `snapshot_too_old`) reads and commits again with jittered backoff, up to
    /// [`super::ClientConfig::transaction_attempts_max`] attempts. `build` may run several
    /// times.
    ///
    /// Each commit attempt carries its own request id (`Idempotency-Key`), resent unchanged
    /// while the attempt's answer is lost; a new one is taken only after the server answered
    /// that the attempt aborted. So an attempt that committed is never applied twice, and
    /// one whose outcome stays unknown ends the call as [`ClientError::Unknown`] (naming its
    /// request id) instead of being run again.
    ///
    /// # Errors
    /// The last conflict when the attempts run out; [`ClientError::Unknown`] when a commit
    /// attempt got no answer; `build`'s error or any other at once.
    pub async fn commit_retrying(
        &self,
        read: &ReadBody,
        mut build: impl FnMut(&ReadAnswer) -> Result<Commit, ClientError>,
    ) -> Result<Committed, ClientError> {
        self.retry_transaction(async || {
            let answer = self.kv_read(read).await?;
            let commit = build(&answer)?.reads_from(read, &answer);
            self.commit(&commit).await
        })
        .await
    }
}

/// A range of a read that the answer's byte budget cut, and how to read on.
struct Cut {
    /// Its place in the request and the answer.
    index: usize,
    /// The rest of it: from its `next`, for the rows its limit still allows.
    resume: RangeSpec,
}

/// The ranges of `answer` the byte budget cut: `next` set with fewer rows than asked (a
/// limit's cut leaves exactly `limit` rows).
fn budget_cut(asked: &[RangeSpec], answer: &ReadAnswer) -> Vec<Cut> {
    asked
        .iter()
        .zip(&answer.ranges)
        .enumerate()
        .filter_map(|(index, (range, page))| {
            let limit = range.limit.unwrap_or(crate::limits::SCAN_ROWS_DEFAULT);
            let next = page.next.clone().filter(|_| page.rows.len() < limit)?;
            let resume = RangeSpec {
                start: Some(next),
                limit: Some(limit - page.rows.len()),
                ..range.clone()
            };
            Some(Cut { index, resume })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::problem::{Problem, ProblemCode};
    use crate::txns::{KeyAt, Rows, WriteKind};

    #[test]
    fn the_builder_puts_each_part_where_the_wire_wants_it() {
        let c = Commit::new()
            .isolation(Isolation::Snapshot)
            .snapshot(9)
            .read("a", Some(3))
            .read("gone", None)
            .lock("l")
            .put_if_absent("n", &json!("x"))
            .put_if_version("a", &json!(1), 3)
            .delete_if_version("d", 4)
            .increment("c", -2);
        let wire = serde_json::to_value(c.body()).unwrap();
        assert_eq!(
            wire,
            json!({
                "isolation": "snapshot",
                "snapshot": 9,
                "reads": [{"key": "a", "version": 3}, {"key": "gone", "version": null}],
                "locks": ["l"],
                "writes": [
                    {"op": "put", "key": "n", "value": "x", "if_absent": true},
                    {"op": "put", "key": "a", "value": 1, "if_version": 3},
                    {"op": "delete", "key": "d", "if_version": 4},
                    {"op": "increment", "key": "c", "by": -2},
                ],
            })
        );
    }

    #[test]
    fn reads_from_declares_the_snapshot_the_versions_and_where_ranges_stopped() {
        let asked = ReadBody {
            keys: vec!["a".into(), "b".into()],
            ranges: vec![
                RangeSpec {
                    prefix: Some("p/".into()),
                    limit: Some(2),
                    ..RangeSpec::default()
                },
                RangeSpec {
                    start: Some("x".into()),
                    end: Some("y".into()),
                    ..RangeSpec::default()
                },
            ],
            snapshot: None,
        };
        let page = |next: Option<&str>| Rows {
            rows: Vec::new(),
            next: next.map(str::to_string),
            token: None,
        };
        let answer = ReadAnswer {
            snapshot: 41,
            keys: vec![
                KeyAt {
                    key: "a".into(),
                    value: Some(crate::streams::raw(&json!(1))),
                    version: Some(40),
                },
                KeyAt {
                    key: "b".into(),
                    value: None,
                    version: None,
                },
            ],
            ranges: vec![page(Some("p/3")), page(None)],
            token: None,
        };
        let c = Commit::new().increment("a", 1).reads_from(&asked, &answer);
        let b = c.body();
        assert_eq!(b.snapshot, Some(41));
        assert_eq!(
            b.reads,
            vec![
                ReadKey {
                    key: "a".into(),
                    version: Some(40)
                },
                ReadKey {
                    key: "b".into(),
                    version: None
                },
            ]
        );
        assert_eq!(b.ranges[0].prefix.as_deref(), Some("p/"));
        assert_eq!(b.ranges[0].limit, None, "a commit carries no limit");
        assert_eq!(b.ranges[0].next.as_deref(), Some("p/3"));
        assert_eq!(b.ranges[1].next, None);
        assert_eq!(b.writes[0].op, WriteKind::Increment);
    }

    /// One request as the scripted server saw it: path and `Idempotency-Key`.
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A scripted answer: status and body, or `None` to close the connection unanswered.
    type Scripted = Option<(u16, String)>;

    /// The answers still to give, in order.
    type Script = Arc<Mutex<VecDeque<Scripted>>>;

    /// A server answering the requests, in the order they come, with `script`'s answers
    /// (status, body); `None` closes the connection without answering (a lost answer).
    async fn scripted(script: Vec<Scripted>) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Seen = Arc::default();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve_connection(conn, script.clone(), log.clone()));
            }
        });
        (addr, seen)
    }

    async fn serve_connection(conn: TcpStream, script: Script, seen: Seen) {
        let mut conn = BufReader::new(conn);
        loop {
            let (mut head, mut line) = (Vec::new(), String::new());
            while line != "\r\n" {
                line.clear();
                if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(line.trim_end().to_ascii_lowercase());
            }
            let path = head[0].split(' ').nth(1).unwrap_or_default().to_string();
            let header = |name: &str| {
                head.iter()
                    .find_map(|h| h.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            let length = header("content-length:").map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; length];
            conn.read_exact(&mut body).await.unwrap();
            seen.lock()
                .unwrap()
                .push((path, header("idempotency-key:")));
            let next = script.lock().unwrap().pop_front().flatten();
            let Some((status, body)) = next else {
                return;
            };
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.get_mut().write_all(answer.as_bytes()).await.unwrap();
        }
    }

    fn client(addr: &str) -> Client {
        let config = crate::client::ClientConfig {
            retry: crate::client::RetryPolicy {
                attempts_max: 3,
                backoff_initial_ms: 1,
                backoff_max_ms: 2,
                ..crate::client::RetryPolicy::default()
            },
            ..crate::client::ClientConfig::default()
        };
        Client::with_config(addr, config).unwrap()
    }

    fn read_answer(value: i64) -> Scripted {
        let keys = json!([{"key": "a", "value": value, "version": 3}]);
        Some((
            200,
            json!({"snapshot": 4, "keys": keys, "ranges": []}).to_string(),
        ))
    }

    fn committed(offset: u64) -> Scripted {
        Some((
            200,
            json!({"offset": offset, "incremented": {}}).to_string(),
        ))
    }

    fn conflict() -> Scripted {
        let mut p = Problem::new(ProblemCode::SerializationFailure, "a later commit wrote a");
        p.retryable = Some(true);
        Some((409, serde_json::to_string(&p).unwrap()))
    }

    fn read_a() -> ReadBody {
        ReadBody {
            keys: vec!["a".into()],
            ..ReadBody::default()
        }
    }

    #[tokio::test]
    async fn commit_retrying_takes_a_new_request_id_only_after_a_known_abort() {
        // Attempt 1 aborts; attempt 2's answer is lost once, then arrives.
        let script = vec![
            read_answer(1),
            conflict(),
            read_answer(2),
            None,
            committed(9),
        ];
        let (addr, seen) = scripted(script).await;
        let mut values = Vec::new();
        let done = client(&addr)
            .commit_retrying(&read_a(), |answer| {
                let v: i64 = answer.keys[0]
                    .value
                    .as_ref()
                    .unwrap()
                    .get()
                    .parse()
                    .unwrap();
                values.push(v);
                Ok(Commit::new().put("a", &json!(v + 1)))
            })
            .await
            .unwrap();
        assert_eq!(done.offset, Some(9));
        assert_eq!(values, [1, 2], "read again after the conflict");
        let seen = seen.lock().unwrap().clone();
        let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
        let (read, commit) = ("/v1/kv/read", "/v1/commits");
        assert_eq!(paths, [read, commit, read, commit, commit]);
        let key = |i: usize| seen[i].1.clone().expect("a commit carries a request id");
        assert_ne!(key(1), key(3), "a new id after the known abort");
        assert_eq!(
            key(3),
            key(4),
            "the lost answer's attempt resent under its own id"
        );
    }

    #[tokio::test]
    async fn a_commit_without_an_answer_is_unknown_and_is_not_run_again() {
        let script = vec![read_answer(1), None, None, None, committed(9)];
        let (addr, seen) = scripted(script).await;
        let e = client(&addr)
            .commit_retrying(&read_a(), |_| Ok(Commit::new().put("a", &json!(2))))
            .await
            .unwrap_err();
        let ClientError::Unknown { request_id, .. } = &e else {
            panic!("not unknown: {e}");
        };
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.len(),
            4,
            "one read, three sends of one commit: {seen:?}"
        );
        assert!(seen[1..].iter().all(|(_, id)| id == request_id));
    }
}
