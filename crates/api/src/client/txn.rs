//! Interactive transactions, and the helper that re-runs one after a retryable conflict.
//!
//! On a cluster a transaction lives on the node that began it (decision 0016): a step sent
//! to another node (through a load balancer) is answered 421 `misdirected_request` with
//! the step's URL on the owner, where nothing was done. A [`Transaction`] sends that step
//! again there, once, and its later steps go there directly.

use std::sync::Mutex;

use hyper::Method;

use super::http::{Answer, Call, Retry, Transport, decode};
use super::{Client, ClientError, KeyRange, ReadOptions, TXN_STREAM};
use crate::paths::{self, Query};
use crate::problem::ProblemCode;
use crate::txns::{BeginBody, Begun, Committed, IncrementBody, PutBody, Row, Rows};

/// An open transaction on the server. Reads see its snapshot; writes are buffered until
/// [`Transaction::commit`]. A `serialization_failure` from any call ends it: run it again
/// whole ([`Client::transaction`] does).
#[derive(Debug)]
pub struct Transaction {
    client: Client,
    begun: Begun,
    /// The commit's `Idempotency-Key`, chosen at begin: a commit retried after a lost
    /// answer returns the commit it made instead of failing.
    request_id: String,
    /// Where its steps go once a step was answered 421 `misdirected_request`: the node
    /// that owns it (`None`: where the client sends everything).
    owner: Mutex<Option<Transport>>,
}

impl Client {
    /// Begins a transaction. It sends the session's token of the commit stream, so a node
    /// that has not applied this client's earlier commits catches up before it picks the
    /// snapshot (read your writes across the nodes of a cluster).
    ///
    /// # Errors
    /// `too_many_transactions` (after the retries of 429); `snapshot_ahead` when the node
    /// does not catch up with the session within the server's token wait.
    pub async fn begin(&self, options: &BeginBody) -> Result<Transaction, ClientError> {
        let read = ReadOptions::default();
        let q = self.with_token(Query::new(), TXN_STREAM, &read);
        let mut call = Call::new(Method::POST, paths::txns() + &q.finish()).json(options)?;
        call.server_wait_ms = Self::server_wait(&read);
        let begun: Begun = self.call(call).await?;
        Ok(Transaction {
            client: self.clone(),
            begun,
            request_id: self.new_request_id(),
            owner: Mutex::new(None),
        })
    }

    /// Runs `body` in a transaction and commits it; on a retryable conflict
    /// (`serialization_failure`, `transaction_too_old`) aborts and runs it again from the
    /// start, with jittered backoff, up to [`super::ClientConfig::transaction_attempts_max`]
    /// times. `body` may run several times: it must have no effect outside the transaction.
    ///
    /// # Errors
    /// The last conflict when the attempts run out; any other error at once (an unknown
    /// commit outcome included: the commit's request id lets a later retry find out).
    pub async fn transaction<T>(
        &self,
        options: &BeginBody,
        mut body: impl AsyncFnMut(&Transaction) -> Result<T, ClientError>,
    ) -> Result<(T, Committed), ClientError> {
        self.retry_transaction(async || {
            let txn = self.begin(options).await?;
            match body(&txn).await {
                Ok(value) => txn.commit().await.map(|c| (value, c)),
                Err(e) => {
                    let _ = txn.abort().await;
                    Err(e)
                }
            }
        })
        .await
    }

    /// Runs `attempt` until it ends other than in a retryable conflict
    /// ([`ClientError::is_retryable_transaction`]) or
    /// [`super::ClientConfig::transaction_attempts_max`] attempts were made, with jittered
    /// backoff between them: the retry loop of [`Client::transaction`] and
    /// [`Client::commit_retrying`].
    pub(crate) async fn retry_transaction<T>(
        &self,
        mut attempt: impl AsyncFnMut() -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let attempts_max = self.inner.config.transaction_attempts_max.max(1);
        let mut made = 0;
        loop {
            made += 1;
            match attempt().await {
                Err(e) if e.is_retryable_transaction() && made < attempts_max => {
                    let unit = self.inner.rng.lock().map_or(0.5, |mut r| r.unit());
                    let wait = self.inner.config.retry.backoff(made, unit, None);
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

impl Transaction {
    /// Its handle on the server.
    pub fn id(&self) -> &str {
        &self.begun.txn
    }

    /// The commit offset it reads at.
    pub fn snapshot(&self) -> u64 {
        self.begun.snapshot
    }

    /// The request id its commit will carry.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Sends one of its steps where the transaction lives. A step answered 421
    /// `misdirected_request` (it reached another node of a cluster, which did nothing) is
    /// sent again, once, to the node the answer's `location` names, and so are all later
    /// steps. A `location` on another scheme than the client's is not followed (an
    /// `https://` client never sends its credentials over plain HTTP): the 421 is returned.
    async fn send(&self, call: Call) -> Result<Answer, ClientError> {
        let rng = &self.client.inner.rng;
        let owner = self.owner.lock().ok().and_then(|o| o.clone());
        let at = owner.as_ref().unwrap_or(&self.client.inner.transport);
        match at.send(&call, rng).await {
            Err(e) if e.code() == Some(ProblemCode::MisdirectedRequest) => {
                let location = e.problem().and_then(|p| p.location.as_deref());
                let Some(moved) = location.and_then(|l| at.moved_to(l)) else {
                    return Err(e);
                };
                if let Ok(mut owner) = self.owner.lock() {
                    *owner = Some(moved.clone());
                }
                moved.send(&call, rng).await
            }
            other => other,
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, call: Call) -> Result<T, ClientError> {
        let answer = self.send(call.clone()).await?;
        decode(&call, &answer)
    }

    async fn call_empty(&self, call: Call) -> Result<(), ClientError> {
        self.send(call).await.map(|_| ())
    }

    async fn read_key(&self, key: &str, for_update: bool) -> Result<Option<Row>, ClientError> {
        let q = Query::new().push_opt("for_update", for_update.then_some(true));
        let call = Call::new(Method::GET, paths::txn_key(self.id(), key) + &q.finish());
        match self.call::<Row>(call).await {
            Ok(row) => Ok(Some(row)),
            Err(e) if e.code() == Some(ProblemCode::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a key at the snapshot (`None`: absent; the read is recorded for SSI either way).
    ///
    /// # Errors
    /// `serialization_failure`, `unknown_transaction`, `transaction_expired`.
    pub async fn get(&self, key: &str) -> Result<Option<Row>, ClientError> {
        self.read_key(key, false).await
    }

    /// Reads a key and makes the read conflict like a write (no lost update).
    ///
    /// # Errors
    /// As [`Transaction::get`].
    pub async fn get_for_update(&self, key: &str) -> Result<Option<Row>, ClientError> {
        self.read_key(key, true).await
    }

    /// Scans a range at the snapshot (recorded for SSI: phantoms are caught).
    ///
    /// # Errors
    /// As [`Transaction::get`].
    pub async fn scan(&self, range: &KeyRange) -> Result<Rows, ClientError> {
        let call = Call::new(
            Method::GET,
            paths::txn_kv(self.id()) + &range.query().finish(),
        );
        self.call(call).await
    }

    /// Buffers a write (with `if_version` / `if_absent` conditions checked at commit).
    ///
    /// # Errors
    /// `value_too_large`, `key_too_large`, `read_only_transaction`.
    pub async fn put_with(&self, key: &str, put: &PutBody) -> Result<(), ClientError> {
        let call = Call::new(Method::PUT, paths::txn_key(self.id(), key)).json(put)?;
        self.call_empty(call).await
    }

    /// Buffers a write of `value`.
    ///
    /// # Errors
    /// As [`Transaction::put_with`].
    pub async fn put(&self, key: &str, value: serde_json::Value) -> Result<(), ClientError> {
        let put = PutBody {
            value: crate::streams::raw(&value),
            if_version: None,
            if_absent: None,
        };
        self.put_with(key, &put).await
    }

    /// Buffers a delete (only if the key is at `if_version` at commit, when given).
    ///
    /// # Errors
    /// As [`Transaction::put_with`].
    pub async fn delete(&self, key: &str, if_version: Option<u64>) -> Result<(), ClientError> {
        let q = Query::new().push_opt("if_version", if_version);
        let call = Call::new(Method::DELETE, paths::txn_key(self.id(), key) + &q.finish());
        self.call_empty(call).await
    }

    /// Adds `by` to a key's integer value at commit. Not sent twice: an increment whose
    /// answer was lost is [`ClientError::Unknown`] (abort and run the transaction again).
    ///
    /// # Errors
    /// `not_an_integer`, `increment_overflow` (at commit).
    pub async fn increment(&self, key: &str, by: i64) -> Result<(), ClientError> {
        let mut call = Call::new(Method::POST, paths::txn_increment(self.id(), key))
            .json(&IncrementBody { by })?;
        call.retry = Retry::IfNotSent;
        self.call_empty(call).await
    }

    /// Commits, with the transaction's request id (a retry after a lost answer returns the
    /// commit made, `duplicate: true`). The commit's token joins the session, so later
    /// key-value reads of this client see it.
    ///
    /// # Errors
    /// `serialization_failure` (run it again whole), `version_mismatch`, `key_exists`;
    /// [`ClientError::Unknown`] if no attempt was answered.
    pub async fn commit(self) -> Result<Committed, ClientError> {
        let mut call = Call::new(Method::POST, paths::txn_commit(self.id()));
        call.request_id = Some(self.request_id.clone());
        let committed: Committed = self.call(call).await?;
        self.client.observe(committed.token.as_deref());
        Ok(committed)
    }

    /// Aborts: nothing it wrote is applied.
    ///
    /// # Errors
    /// `unknown_transaction` (already ended).
    pub async fn abort(self) -> Result<(), ClientError> {
        let call = Call::new(Method::POST, paths::txn_abort(self.id()));
        self.call_empty(call).await
    }
}
