//! A request id's claim on its stream, across partitions and nodes (review r13 F2).
//!
//! JetStream answers a duplicate `Nats-Msg-Id` per JetStream stream — per Logbook partition.
//! The same request id with another body whose records map to another partition (another
//! key) would therefore be stored beside the first, and nodes would then disagree on its
//! retries. A request id is per Logbook stream, so before the shares of a request on a stream
//! of several partitions are published, the request claims its id:
//!
//! ```text
//!  claim = one message to the claims' JetStream stream (`request-ids/`, one per cluster),
//!          Nats-Msg-Id = rc-<XXH3-128(stream, incarnation, request id)>,
//!          value = "<stream>\n<incarnation>\n<digest of share 0>"
//!    stored            → the id is this request's: publish its shares
//!    duplicate answer  → read the original claim back: the same value → a retry of this
//!                        request (its shares' own message ids make them exactly once);
//!                        another → 409 request_id_conflict, nothing published
//! ```
//!
//! Within the duplicate window JetStream stores one claim per id whoever sends it, so two
//! requests racing on two nodes cannot both win. Beyond the window this node's request-id
//! index (`request_ids`) holds every share of the stream older than the window — in every
//! partition — and finds the conflict there. Claims are kept twice the window (`max_age`),
//! then dropped by JetStream. A stream of one partition needs no claim: its shares' message
//! ids are already per stream.
//!
//! A claim whose request then failed before its shares were stored still holds the id for
//! the window: a different body under it is refused meanwhile (a retry of the same request
//! goes through).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use logbook_log::dedup::{DedupIndex, RequestId, RequestShare};
use logbook_log::format::encode_batch;
use logbook_log::{AppendCondition, LogError, Record, Result};

use super::partition::{JsPartition, Publish};
use super::runtime::Runtime;
use super::{BACKEND, log_error, now_ms};
use crate::naming::PartitionRef;
use crate::partition::{AppendOptions, JetStreamPartition, Message, PartitionState};
use crate::settings::PartitionSettings;

/// The name the claims' JetStream stream is derived from: no Logbook stream can have it
/// (`/` is not allowed in stream names), as the catalog's.
pub(crate) const CLAIMS_STREAM: &str = "request-ids/";

/// The claims' JetStream stream, shared by every stream of the backend.
#[derive(Debug)]
pub(crate) struct Claims {
    partition: JsPartition,
    /// Its duplicate window: how long a claim holds its id by itself.
    window: Duration,
}

impl Claims {
    /// The claims of the JetStream stream `inner` (in `state`), opened with `settings`.
    pub(crate) fn new(
        inner: JetStreamPartition,
        state: &PartitionState,
        runtime: Arc<Runtime>,
        window: Duration,
        retry: Duration,
    ) -> Claims {
        let never_closed = Arc::new(AtomicBool::new(false));
        Claims {
            partition: JsPartition::new(inner, state, runtime, never_closed, retry),
            window,
        }
    }

    /// The claims' settings for a backend whose streams use `settings`: the same replicas
    /// and duplicate window, messages kept twice the window.
    pub(crate) fn settings(settings: &PartitionSettings) -> PartitionSettings {
        PartitionSettings {
            max_age_ms: Some(settings.duplicate_window_ms.saturating_mul(2)),
            ..settings.clone()
        }
    }

    /// The reference of the claims' JetStream stream.
    pub(crate) fn reference() -> PartitionRef {
        PartitionRef::new(CLAIMS_STREAM, 0, 0)
    }

    /// How long a claim holds its id by itself.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Claims `request_id` on `stream` (of `incarnation`) for the request whose shares are
    /// `shares`; see the module docs.
    ///
    /// # Errors
    /// [`LogError::RequestIdConflict`] (counted by `index`) when another request holds the
    /// id; [`LogError::Unavailable`] / [`LogError::OutcomeUnknown`] from the publish (nothing
    /// of the request was published: retry).
    pub(crate) async fn claim(
        &self,
        stream: &str,
        incarnation: u64,
        request_id: &RequestId,
        shares: &[RequestShare],
        index: &DedupIndex,
    ) -> Result<()> {
        let Some(first) = shares.first() else {
            return Ok(());
        };
        let value = format!("{stream}\n{incarnation}\n{:016x}", first.digest());
        let batch = encode_batch(&[Record::new(value.clone())], now_ms())?;
        let options = AppendOptions {
            expected_last_sequence: None,
            message_id: Some(claim_id(stream, incarnation, request_id)),
        };
        let publisher: Publish = self.partition.publisher();
        let appended = publisher
            .send(
                &Message::from(batch),
                &options,
                AppendCondition::Always,
                None,
            )
            .await?;
        if !appended.duplicate {
            return Ok(());
        }
        let original = publisher
            .inner()
            .read_message(appended.sequence)
            .await
            .map_err(log_error)?
            .ok_or_else(|| LogError::Unavailable {
                backend: BACKEND,
                why: format!(
                    "claim {} (the original of this request id) is not readable yet",
                    appended.sequence
                ),
            })?;
        match original.first() {
            Some(claim) if claim.value == value.as_bytes() => Ok(()),
            _ => Err(index.refuse(request_id, shares, 0)),
        }
    }
}

/// The `Nats-Msg-Id` of a request id's claim on a stream incarnation: the same on every
/// node and retry; hashed, as a request id may hold characters a NATS header cannot.
fn claim_id(stream: &str, incarnation: u64, request_id: &RequestId) -> String {
    let mut bytes = Vec::with_capacity(stream.len() + request_id.as_str().len() + 16);
    bytes.extend_from_slice(&incarnation.to_le_bytes());
    bytes.extend_from_slice(&(stream.len() as u64).to_le_bytes());
    bytes.extend_from_slice(stream.as_bytes());
    bytes.extend_from_slice(request_id.as_str().as_bytes());
    format!("rc-{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_ids_are_per_stream_incarnation_and_id() {
        let id = RequestId::new("order 17").unwrap();
        let a = claim_id("orders", 5, &id);
        assert_eq!(a, claim_id("orders", 5, &id));
        assert_ne!(a, claim_id("orders", 6, &id), "another incarnation");
        assert_ne!(a, claim_id("orders2", 5, &id), "another stream");
        let other = RequestId::new("order 18").unwrap();
        assert_ne!(a, claim_id("orders", 5, &other));
        assert!(
            a.bytes().all(|b| b.is_ascii_graphic()) && a.len() == 3 + 32,
            "{a}"
        );
    }

    #[test]
    fn claims_keep_messages_twice_the_window() {
        let s = Claims::settings(&PartitionSettings::default());
        assert_eq!(s.max_age_ms, Some(2 * s.duplicate_window_ms));
        assert!(s.validate().is_ok());
    }
}
