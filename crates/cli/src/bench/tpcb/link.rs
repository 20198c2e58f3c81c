//! A TPC-B client's way to the server: one keep-alive connection. In the failover phase
//! (`bench tpcb --failovers`, [`Ride`]) the client rides through the loss of a node as a
//! client with a node list would: a broken connection moves it to the next node, and a
//! request whose answer does not settle it (503, 504, 422 `snapshot_ahead`) is sent again —
//! a commit with the same `Idempotency-Key`, so it is applied once whatever became of the
//! first try.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Method;

use crate::bench::conn::Conn;
use crate::bench::stall::{Ack, Acks, since_us};

/// How long a riding client sends one request again before the benchmark gives up.
const RIDE_MAX: Duration = Duration::from_secs(120);
/// Pause between two tries of a request while riding.
const RIDE_PAUSE: Duration = Duration::from_millis(20);

/// What the riding clients share with the failover phase.
pub(super) struct Riding {
    /// Every acknowledged commit.
    pub(super) acks: Arc<Acks>,
    /// The phase's start (acknowledgments are µs since it).
    pub(super) start: Instant,
    /// Request ids are `RUN-CLIENT-N`.
    pub(super) run: String,
}

/// One riding client's part: the shared [`Riding`] and its next request id.
struct Ride {
    acks: Arc<Acks>,
    start: Instant,
    run: String,
    client: u32,
    next: u64,
}

/// A client's connection, riding or not.
pub(super) struct Link {
    addrs: Vec<SocketAddr>,
    /// The node connected to (an index into `addrs`).
    at: usize,
    token: Option<String>,
    conn: Option<Conn>,
    ride: Option<Ride>,
}

impl Link {
    /// Connects client `client` to `addrs[client % addrs.len()]`; riding when `riding` is
    /// given.
    ///
    /// # Errors
    /// The first connection fails.
    pub(super) async fn open(
        addrs: &[SocketAddr],
        client: usize,
        token: Option<&str>,
        riding: Option<&Riding>,
    ) -> anyhow::Result<Link> {
        let at = client % addrs.len().max(1);
        let addr = *addrs.get(at).context("no node to connect to")?;
        Ok(Link {
            addrs: addrs.to_vec(),
            at,
            token: token.map(str::to_string),
            conn: Some(Conn::open_as(addr, token).await?),
            ride: riding.map(|r| Ride {
                acks: r.acks.clone(),
                start: r.start,
                run: r.run.clone(),
                client: u32::try_from(client).unwrap_or(u32::MAX),
                next: 0,
            }),
        })
    }

    /// Sends one request; the status and the body.
    ///
    /// # Errors
    /// Not riding: the connection fails. Riding: no answer that settles the request came
    /// within two minutes.
    pub(super) async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send(method, path, body, None).await
    }

    /// Sends a commit (`POST path`). Riding: with a fresh `Idempotency-Key`, sent again
    /// with it until answered, and a 200 recorded as an acknowledgment from the first try's
    /// sending.
    ///
    /// # Errors
    /// As [`Link::call`].
    pub(super) async fn commit(
        &mut self,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let Some(ride) = &mut self.ride else {
            return self.send(Method::POST, path, body, None).await;
        };
        let key = format!("{}-{}-{}", ride.run, ride.client, ride.next);
        ride.next += 1;
        let sent_us = since_us(ride.start);
        let answer = self.send(Method::POST, path, body, Some(&key)).await?;
        if let (200, Some(ride)) = (answer.0, &self.ride) {
            ride.acks.record(Ack {
                client: ride.client,
                sent_us,
                acked_us: since_us(ride.start),
            });
        }
        Ok(answer)
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
        key: Option<&str>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        if self.ride.is_none() {
            let conn = self.conn.as_mut().context("the connection is closed")?;
            return conn.call_with(method, path, body, &headers).await;
        }
        let deadline = Instant::now() + RIDE_MAX;
        loop {
            if Instant::now() > deadline {
                bail!(
                    "{method} {path}: no answer that settles it within {RIDE_MAX:?}, on any node"
                );
            }
            if self.conn.is_none() {
                self.conn = Conn::open_as(self.addrs[self.at], self.token.as_deref())
                    .await
                    .ok();
            }
            if let Some(conn) = self.conn.as_mut() {
                let sent = conn.call_with(method.clone(), path, body.clone(), &headers);
                match tokio::time::timeout(RIDE_MAX, sent).await {
                    Ok(Ok((status, answer))) if !unsettled(status, &answer) => {
                        return Ok((status, answer));
                    }
                    // This node cannot serve it now (no leader it trusts, its store
                    // replaying `_txn`): another node may.
                    Ok(Ok((503, _))) => self.conn = None,
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => self.conn = None,
                }
            }
            if self.conn.is_none() {
                // The node is gone (killed, restarting) or answered 503: the next one.
                self.at = (self.at + 1) % self.addrs.len();
            }
            tokio::time::sleep(RIDE_PAUSE).await;
        }
    }
}

/// Whether an answer leaves the request to be sent again by a riding client: 503 (no
/// leader, a store opening or fenced), 504 (`outcome_unknown`: the same key learns it), 422
/// `snapshot_ahead` (a new leader still replaying).
fn unsettled(status: u16, body: &[u8]) -> bool {
    match status {
        503 | 504 => true,
        422 => serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|p| p["code"] == "snapshot_ahead"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rider_sends_again_only_what_the_failover_leaves_unsettled() {
        assert!(unsettled(503, br#"{"code":"leader_unavailable"}"#));
        assert!(unsettled(504, br#"{"code":"outcome_unknown"}"#));
        assert!(unsettled(422, br#"{"code":"snapshot_ahead"}"#));
        assert!(!unsettled(422, br#"{"code":"unprocessable_request"}"#));
        assert!(!unsettled(409, br#"{"code":"serialization_failure"}"#));
        assert!(!unsettled(200, b"{}"));
    }
}
