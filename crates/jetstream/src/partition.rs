//! One Logbook partition on its JetStream stream: append, read, end offset.
//!
//! ```text
//!   append(batch) ──publish──▶ subject logbook.p.<hash> ──▶ stream LB_<hash> (R3, file)
//!        ◀── ack {seq, duplicate} ── after a majority of replicas have it
//!   read(offset) ──STREAM.MSG.GET {seq} (the stream leader)──▶ batch ──▶ records ≥ offset
//! ```
//!
//! Invariants: one message is one whole, checksummed Logbook batch of at most
//! [`MESSAGE_RECORDS_MAX`] records; a record's offset is fixed by its message's sequence and
//! its index ([`crate::offset`]); messages are never deleted or purged (`deny_delete`,
//! `deny_purge`). Reads go to the stream leader (the JetStream "message get" API), so a read
//! after an acknowledged append sees it; JetStream's direct get may answer from a replica that
//! lags and is not used.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::Info;
use bytes::Bytes;
use logbook_log::StoredRecord;
use logbook_log::format::{EncodedBatch, decode_batch};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use crate::api::{self, ApiFailure, NO_MESSAGE_FOUND};
use crate::error::{JetStreamError, Result};
use crate::limits::{self, MESSAGE_RECORDS_MAX};
use crate::naming::PartitionRef;
use crate::offset;
use crate::resend;

/// The pause before a publish or an API request is sent again after a refusal that may pass
/// (no responders, no leader), doubling up to [`RETRY_PAUSE_MAX`]; an election ends it early.
pub(crate) const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(20);
/// The longest such pause.
pub(crate) const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

/// One encoded Logbook batch as the payload of one NATS message. Its bytes are shared: a
/// publish retried under the same message id, and the connection's write queue, hold the
/// same bytes, never a copy. From an owned [`EncodedBatch`] without copying it; from a
/// borrowed one with one copy.
#[derive(Debug, Clone)]
pub struct Message {
    payload: Bytes,
    record_count: u32,
}

impl Message {
    /// Records in the batch.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Payload size in bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Never true: a batch has a header and at least one record.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

impl From<EncodedBatch> for Message {
    fn from(batch: EncodedBatch) -> Message {
        let record_count = batch.record_count();
        Message {
            payload: Bytes::from(batch.into_bytes()),
            record_count,
        }
    }
}

impl From<&EncodedBatch> for Message {
    fn from(batch: &EncodedBatch) -> Message {
        Message {
            payload: Bytes::copy_from_slice(batch.bytes()),
            record_count: batch.record_count(),
        }
    }
}

/// Options of one append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// Append only if the stream's last sequence is this (0: the stream is empty) — how a
    /// fenced single writer is enforced where the data is written. `None`: no precondition.
    pub expected_last_sequence: Option<u64>,
    /// `Nats-Msg-Id`: a publish retried with the same id within the stream's duplicate window
    /// is stored once and answered as a duplicate with the original's sequence. Non-empty, at
    /// most [`limits::MESSAGE_ID_BYTES_MAX`] bytes, printable ASCII without spaces.
    pub message_id: Option<String>,
}

/// An acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The message's stream sequence (the original's when `duplicate`).
    pub sequence: u64,
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// The partition's end offset just after this message: where the next message starts.
    pub next_offset: u64,
    /// The server recognised the message id of an earlier append and stored nothing. The
    /// original's body may differ from this batch (JetStream compares ids only): a caller
    /// that needs to know reads it back at `sequence`.
    pub duplicate: bool,
}

/// A partition's stream as JetStream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The stream's last sequence (0 when empty).
    pub last_sequence: u64,
    /// The stream's first sequence.
    pub first_sequence: u64,
    /// Messages (batches) stored.
    pub messages: u64,
    /// Bytes stored (JetStream's count: messages with their headers and subjects).
    pub bytes: u64,
    /// Server name of the stream's Raft leader, when it has one.
    pub leader: Option<String>,
    /// Replicas the stream is configured with.
    pub replicas: u32,
}

/// A Logbook partition stored in a JetStream stream. Cheap to clone; every method may be
/// called from many tasks at once.
#[derive(Clone)]
pub struct JetStreamPartition {
    client: async_nats::Client,
    js: Context,
    partition: PartitionRef,
    stream: String,
    subject: String,
    replicas: u32,
    /// Woken when the stream elects a leader or the connection is re-established: an
    /// acknowledgment awaited then will not come ([`crate::resend`]).
    resend: Arc<Notify>,
    /// The deadline of one request that has no deadline of its own.
    request_timeout: Duration,
}

impl std::fmt::Debug for JetStreamPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamPartition")
            .field("partition", &self.partition)
            .field("stream", &self.stream)
            .finish()
    }
}

/// The message-get API's answer.
#[derive(Deserialize)]
struct MessageGet {
    message: RawMessage,
}

#[derive(Deserialize)]
struct RawMessage {
    subject: String,
    seq: u64,
    #[serde(default)]
    data: String,
    /// The NATS header block, base64 (`NATS/1.0\r\nName: value\r\n…`).
    #[serde(default)]
    hdrs: Option<String>,
}

impl JetStreamPartition {
    pub(crate) fn new(
        client: async_nats::Client,
        js: Context,
        partition: PartitionRef,
        replicas: u32,
        resend: Arc<Notify>,
        request_timeout: Duration,
    ) -> Self {
        JetStreamPartition {
            client,
            js,
            stream: partition.jetstream_name(),
            subject: partition.subject(),
            partition,
            replicas,
            resend,
            request_timeout,
        }
    }

    /// The deadline of a request made now that has no deadline of its own: the
    /// connection's request timeout ([`crate::ConnectSettings::request_timeout_ms`]).
    pub(crate) fn default_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.request_timeout
    }

    /// A JetStream API request about this stream that changes nothing (its state, a message
    /// get), answered by the stream's leader, within `deadline` — the caller's. During an
    /// election nobody answers it; so it is sent again at once when the stream elects a
    /// leader or the connection comes back while it waits (the server it went to may be
    /// gone: [`crate::resend`]), and after a pause ([`RETRY_PAUSE_FIRST`] doubling to
    /// [`RETRY_PAUSE_MAX`]) while the answer is "not now" (no responders, no leader).
    ///
    /// # Errors
    /// The server's refusal; at the deadline, the last "not now" or
    /// [`ApiFailure::Transport`] (no answer in time) — both classify as
    /// [`JetStreamError::Unavailable`]: retry later.
    async fn leader_request<T, P>(
        &self,
        subject: String,
        payload: &P,
        deadline: tokio::time::Instant,
    ) -> Result<T, ApiFailure>
    where
        T: DeserializeOwned,
        P: Serialize + Sync + ?Sized,
    {
        let mut pause = RETRY_PAUSE_FIRST;
        loop {
            // Armed before the request leaves: an election while it waits is not missed.
            let mut elected = self.leader_changed();
            let answer = tokio::select! {
                answer = api::request(&self.js, subject.clone(), payload) => Some(answer),
                () = &mut elected => None,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ApiFailure::Transport(
                        "no answer from the stream's leader before the request's deadline \
                         (it may be electing one)"
                            .into(),
                    ));
                }
            };
            match answer {
                // A new leader: the request went to a server that will not answer; again now.
                None => pause = RETRY_PAUSE_FIRST,
                Some(Err(failure))
                    if failure.is_retryable(true) && tokio::time::Instant::now() < deadline =>
                {
                    let wake = (tokio::time::Instant::now() + pause).min(deadline);
                    tokio::select! {
                        () = tokio::time::sleep_until(wake) => {
                            pause = (pause * 2).min(RETRY_PAUSE_MAX);
                        }
                        () = &mut elected => pause = RETRY_PAUSE_FIRST,
                    }
                }
                Some(other) => return other,
            }
        }
    }

    /// Resolves at the next election of the stream's leader or re-establishment of the
    /// connection after this call: when an append waiting for an acknowledgment, or for its
    /// next attempt, should be sent again at once.
    pub(crate) fn leader_changed(&self) -> Pin<Box<OwnedNotified>> {
        resend::armed(&self.resend)
    }

    /// The Logbook partition.
    pub fn partition(&self) -> &PartitionRef {
        &self.partition
    }

    /// The JetStream stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// Replicas of the stream.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// The `max_payload` of the server the connection is on, in bytes: an encoded batch
    /// larger than this is refused ([`JetStreamError::BatchTooLarge`]).
    pub fn max_payload_bytes(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Appends one encoded batch as one JetStream message and waits for its acknowledgment
    /// (a majority of replicas have it; see [`crate::AckGuarantee`] for whether on disk).
    /// The batch's own `base_offset` field is not used: offsets come from the sequence.
    ///
    /// # Errors
    /// Nothing stored: [`JetStreamError::BatchTooManyRecords`],
    /// [`JetStreamError::BatchTooLarge`], [`JetStreamError::InvalidArgument`] (message id),
    /// [`JetStreamError::WrongLastSequence`], [`JetStreamError::Unavailable`] (retryable).
    /// Stored, but without offsets: [`JetStreamError::SequenceBeyondOffsets`].
    /// Outcome unknown: [`JetStreamError::OutcomeUnknown`] — retry with the same message id;
    /// also when a new leader of the stream was elected (or the connection re-established)
    /// while the acknowledgment was awaited, without waiting out the deadline: the one who
    /// was sent the message may be gone (the crate's `resend` module).
    pub async fn append(
        &self,
        batch: impl Into<Message>,
        options: &AppendOptions,
    ) -> Result<Appended> {
        self.send(batch, options).await?.acknowledged().await
    }

    /// The first half of [`Self::append`]: checks the batch and hands it to the connection,
    /// without waiting for the acknowledgment. Messages handed to one connection reach the
    /// stream in that order, so appends that each expect the sequence after the previous one
    /// can be pipelined: send the next once the previous is sent, then await each.
    ///
    /// # Errors
    /// As [`Self::append`]; those of [`SentAppend::acknowledged`] come from there.
    pub async fn send<'a>(
        &'a self,
        batch: impl Into<Message>,
        options: &'a AppendOptions,
    ) -> Result<SentAppend<'a>> {
        let batch = batch.into();
        if batch.record_count() > MESSAGE_RECORDS_MAX {
            return Err(JetStreamError::BatchTooManyRecords {
                count: batch.record_count(),
                max: MESSAGE_RECORDS_MAX,
            });
        }
        let max_payload = self.client.server_info().max_payload;
        if batch.len() > max_payload {
            return Err(JetStreamError::BatchTooLarge {
                bytes: batch.len(),
                max_payload,
            });
        }
        let bytes = batch.len();
        let mut publish = PublishMessage::build().payload(batch.payload);
        if let Some(id) = &options.message_id {
            check_message_id(id)?;
            publish = publish.message_id(id);
        }
        if let Some(last) = options.expected_last_sequence {
            publish = publish.expected_last_sequence(last);
        }
        // Armed before the message leaves: an election right after it is not missed.
        let leader_changed = self.leader_changed();
        let pending = self
            .js
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(|e| self.publish_error(PublishFailure::of(&e, false), bytes, options))?;
        Ok(SentAppend {
            partition: self,
            pending,
            leader_changed,
            bytes,
            options,
        })
    }

    /// An acknowledgment from the network, checked before the offset arithmetic asserts on it.
    fn appended(&self, ack: &PublishAck) -> Result<Appended> {
        // A clustered server stages a message id with sequence 0 while its original is being
        // replicated, and answers a second publish of that id as a duplicate of sequence 0:
        // the original's fate is not known yet, so it is retried like an election.
        if ack.sequence == 0 && ack.duplicate {
            return Err(JetStreamError::Unavailable {
                stream: self.stream.clone(),
                why: "the original of this message id is still being stored".into(),
            });
        }
        if ack.sequence == 0 {
            return Err(JetStreamError::Api {
                stream: self.stream.clone(),
                code: 0,
                detail: "acknowledged with sequence 0".into(),
            });
        }
        if ack.stream != self.stream {
            return Err(JetStreamError::Api {
                stream: self.stream.clone(),
                code: 0,
                detail: format!(
                    "acknowledged by stream {:?}: another stream captures subject {}",
                    ack.stream, self.subject
                ),
            });
        }
        let (Some(base_offset), Some(next_offset)) = (
            offset::offset_of(ack.sequence, 0),
            offset::end_offset(ack.sequence),
        ) else {
            return Err(self.beyond_offsets(ack.sequence));
        };
        Ok(Appended {
            sequence: ack.sequence,
            base_offset,
            next_offset,
            duplicate: ack.duplicate,
        })
    }

    fn publish_error(
        &self,
        failure: PublishFailure,
        bytes: usize,
        options: &AppendOptions,
    ) -> JetStreamError {
        let stream = self.stream.clone();
        let why = failure.detail;
        match failure.kind {
            PublishErrorKind::WrongLastSequence => JetStreamError::WrongLastSequence {
                stream,
                expected: options.expected_last_sequence.unwrap_or(0),
            },
            PublishErrorKind::MaxPayloadExceeded => JetStreamError::BatchTooLarge {
                bytes,
                max_payload: self.client.server_info().max_payload,
            },
            // "No responders": no server took the message (no stream leader right now).
            PublishErrorKind::StreamNotFound | PublishErrorKind::MaxAckPending => {
                JetStreamError::Unavailable { stream, why }
            }
            // Sent, or maybe sent, and no answer: the message may be stored.
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                JetStreamError::OutcomeUnknown { stream, why }
            }
            // The server answered with an error: stored nothing.
            _ => match failure.server_code {
                Some((status, code)) => api::classify(
                    &self.stream,
                    api::ApiFailure::JetStream {
                        status,
                        code,
                        detail: why,
                    },
                    true,
                ),
                None if failure.sent => JetStreamError::OutcomeUnknown { stream, why },
                None => JetStreamError::Unavailable { stream, why },
            },
        }
    }

    /// Reads up to `max_records` records with offsets ≥ `from_offset`, in offset order, from
    /// the stream leader. Returns fewer (possibly none) at the end of the partition. Each
    /// message is verified (CRC, version, shape) before any record of it is returned.
    ///
    /// # Errors
    /// [`JetStreamError::CorruptBatch`] naming the message; [`JetStreamError::Unavailable`]
    /// (retryable); [`JetStreamError::InvalidArgument`] for `max_records` 0;
    /// [`JetStreamError::SequenceBeyondOffsets`] for a message past the offset range.
    pub async fn read(&self, from_offset: u64, max_records: usize) -> Result<Vec<StoredRecord>> {
        self.read_bounded(from_offset, max_records, usize::MAX)
            .await
    }

    /// [`Self::read`] that also stops once the records returned hold `max_bytes` of keys and
    /// values (at least one record is returned if there is one): one message get per message,
    /// so a bound on bytes is a bound on round trips too.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub async fn read_bounded(
        &self,
        from_offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.read_ahead(from_offset, max_records, max_bytes, 0)
            .await
    }

    /// [`Self::read_bounded`] for a caller that knows the messages up to `known_last_sequence`
    /// are stored (0: none known): those are fetched [`limits::READ_AHEAD_MESSAGES`] at a time,
    /// their gets in flight together (the bounds may be passed by what the last such group
    /// fetched, which is dropped); the rest one by one, as [`Self::read_bounded`] does.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub async fn read_ahead(
        &self,
        from_offset: u64,
        max_records: usize,
        max_bytes: usize,
        known_last_sequence: u64,
    ) -> Result<Vec<StoredRecord>> {
        if max_records == 0 {
            return Err(JetStreamError::InvalidArgument {
                field: "max_records",
                why: "must be > 0".into(),
            });
        }
        let (mut sequence, mut skip) = offset::position_of(from_offset);
        let mut out: Vec<StoredRecord> = Vec::new();
        let mut bytes = 0usize;
        let mut ahead = std::collections::VecDeque::new();
        while out.len() < max_records && (out.is_empty() || bytes < max_bytes) {
            if ahead.is_empty() && sequence <= known_last_sequence {
                let last = known_last_sequence
                    .min(sequence + (limits::READ_AHEAD_MESSAGES as u64 - 1))
                    .min(sequence.saturating_add((max_records - out.len()) as u64 - 1));
                let gets = (sequence..=last).map(|s| self.get_message(s));
                ahead.extend(futures_util::future::try_join_all(gets).await?);
            }
            let records = match ahead.pop_front() {
                Some(Some(message)) => self.decode(message)?,
                // Gone (below the first sequence), or past the end: look one by one.
                Some(None) | None => {
                    ahead.clear();
                    match self.message_records(&mut sequence).await? {
                        Some(records) => records,
                        None => break,
                    }
                }
            };
            for record in records.into_iter().skip(skip as usize) {
                if out.len() == max_records || (!out.is_empty() && bytes >= max_bytes) {
                    break;
                }
                bytes += record.key.as_ref().map_or(0, Vec::len) + record.value.len();
                out.push(record);
            }
            skip = 0;
            sequence += 1;
        }
        Ok(out)
    }

    /// The records of the message at `*sequence`, or the first one after it when messages
    /// below the stream's first sequence are gone (`*sequence` moved there); `None` past the end.
    async fn message_records(&self, sequence: &mut u64) -> Result<Option<Vec<StoredRecord>>> {
        match self.get_message(*sequence).await? {
            Some(message) => self.decode(message).map(Some),
            None => {
                let state = self.state().await?;
                if *sequence < state.first_sequence && state.first_sequence <= state.last_sequence {
                    *sequence = state.first_sequence;
                    return Box::pin(self.message_records(sequence)).await;
                }
                Ok(None)
            }
        }
    }

    /// The records of the message at `sequence`, read from the stream leader and verified;
    /// `None` when there is no such message.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub async fn read_message(&self, sequence: u64) -> Result<Option<Vec<StoredRecord>>> {
        match self.get_message(sequence).await? {
            Some(message) => self.decode(message).map(Some),
            None => Ok(None),
        }
    }

    /// The first record whose timestamp is at or after `timestamp_ms` (ms since the Unix
    /// epoch), as `(offset, timestamp)`; `None` when no stored record is that recent (a reader
    /// then starts at the end). A binary search over the stream's sequences on each message's
    /// newest record timestamp: about log2(messages) + 1 message reads from the stream leader,
    /// no scan. Exact when the messages' timestamps rise with their sequences (timestamps
    /// assigned at append by nodes whose clocks agree); with timestamps a client chose, or
    /// clocks stepping back between nodes, it answers some message whose newest record reaches
    /// the time — records before it may be as recent (the single-node log keeps a running
    /// maximum in its index instead and answers exactly).
    ///
    /// # Errors
    /// As [`Self::read`].
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>> {
        let state = self.state().await?;
        // Search [lo, hi): every sequence below `lo` is older than the time; `hi` reaches it
        // or is past the last.
        let (mut lo, mut hi) = (state.first_sequence.max(1), state.last_sequence + 1);
        debug_assert!(lo <= hi, "first sequence past the last + 1: {state:?}");
        let mut found: Option<Vec<StoredRecord>> = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // A message retention removed meanwhile counts as older: it was before the first.
            let records = self.read_message(mid).await?.unwrap_or_default();
            if records.iter().any(|r| r.timestamp_ms >= timestamp_ms) {
                hi = mid;
                found = Some(records);
            } else {
                lo = mid + 1;
            }
        }
        // `found` holds the records of `hi` whenever the search moved it (else there is none).
        Ok(found.and_then(|records| {
            records
                .into_iter()
                .find(|r| r.timestamp_ms >= timestamp_ms)
                .map(|r| (r.offset, r.timestamp_ms))
        }))
    }

    /// The message at `sequence` from the stream leader; `None` when there is none. Within
    /// the connection's request timeout, sent again at an election ([`Self::leader_request`]).
    async fn get_message(&self, sequence: u64) -> Result<Option<RawMessage>> {
        let request = serde_json::json!({ "seq": sequence });
        let subject = format!("STREAM.MSG.GET.{}", self.stream);
        let got: Result<MessageGet, _> = self
            .leader_request(subject, &request, self.default_deadline())
            .await;
        match got {
            Ok(got) => Ok(Some(got.message)),
            Err(failure) if failure.code() == Some(NO_MESSAGE_FOUND) => Ok(None),
            Err(failure) => Err(api::classify(&self.stream, failure, true)),
        }
    }

    /// Resolves an append whose outcome is unknown ([`JetStreamError::OutcomeUnknown`]) by
    /// reading the tail back: the sequence of the first message after `after_sequence` that
    /// carries `message_id`, or `None` if no message up to the current end does — then the
    /// append was not stored (as long as no retry of it is still in flight). `after_sequence`
    /// is the last sequence seen before the first attempt (e.g.
    /// [`offset::last_sequence_at`] of the end offset then). One request per message read.
    ///
    /// # Errors
    /// [`JetStreamError::Unavailable`] (retryable), [`JetStreamError::CorruptBatch`] for a
    /// header block that is not base64.
    pub async fn find_message_id(
        &self,
        message_id: &str,
        after_sequence: u64,
    ) -> Result<Option<u64>> {
        let last = self.state().await?.last_sequence;
        for sequence in after_sequence.saturating_add(1)..=last {
            let Some(message) = self.get_message(sequence).await? else {
                continue;
            };
            if self.message_id_of(&message)?.as_deref() == Some(message_id) {
                return Ok(Some(sequence));
            }
        }
        Ok(None)
    }

    /// The `Nats-Msg-Id` header of a stored message, if it has one.
    fn message_id_of(&self, message: &RawMessage) -> Result<Option<String>> {
        let Some(encoded) = &message.hdrs else {
            return Ok(None);
        };
        use base64::Engine as _;
        let block = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| JetStreamError::CorruptBatch {
                stream: self.stream.clone(),
                sequence: message.seq,
                defect: format!("header block is not base64: {e}"),
            })?;
        Ok(header_value(
            &String::from_utf8_lossy(&block),
            "Nats-Msg-Id",
        ))
    }

    fn decode(&self, message: RawMessage) -> Result<Vec<StoredRecord>> {
        let corrupt = |defect: String| JetStreamError::CorruptBatch {
            stream: self.stream.clone(),
            sequence: message.seq,
            defect,
        };
        if message.seq == 0 {
            return Err(corrupt("sequence 0".into()));
        }
        if message.subject != self.subject {
            return Err(corrupt(format!("subject {:?}", message.subject)));
        }
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(message.data.as_bytes())
            .map_err(|e| corrupt(format!("payload is not base64: {e}")))?;
        let (header, mut records) = decode_batch(&bytes).map_err(|d| corrupt(d.to_string()))?;
        if header.record_count > MESSAGE_RECORDS_MAX {
            return Err(corrupt(format!("{} records", header.record_count)));
        }
        for (index, record) in records.iter_mut().enumerate() {
            record.offset = offset::offset_of(message.seq, index as u32)
                .ok_or_else(|| self.beyond_offsets(message.seq))?;
        }
        Ok(records)
    }

    /// The partition's end offset: the offset the next appended record will get
    /// (`last_sequence · 2^16`). Every acknowledged record has a lower offset.
    ///
    /// # Errors
    /// [`JetStreamError::Unavailable`] (retryable), [`JetStreamError::Api`],
    /// [`JetStreamError::SequenceBeyondOffsets`].
    pub async fn end_offset(&self) -> Result<u64> {
        let last = self.state().await?.last_sequence;
        offset::end_offset(last).ok_or_else(|| self.beyond_offsets(last))
    }

    /// The error for a sequence whose records have no offsets.
    fn beyond_offsets(&self, sequence: u64) -> JetStreamError {
        JetStreamError::SequenceBeyondOffsets {
            stream: self.stream.clone(),
            sequence,
            max: crate::limits::SEQUENCE_MAX,
        }
    }

    /// Waits until the end offset is above `offset` (a record at or after `offset` is
    /// acknowledged) or `timeout` passes; returns the end offset seen last, which is ≤ `offset`
    /// on timeout. Polls the stream leader's state, from every 2 ms up to every 100 ms.
    ///
    /// # Errors
    /// As [`JetStreamPartition::end_offset`]; retryable errors are retried until the timeout.
    pub async fn wait_for_end_above(&self, offset: u64, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            // Each poll has the request timeout, not what is left of the wait: a wait
            // returns an end the leader answered, however short it is.
            let end = match self.end_offset().await {
                Ok(end) => end,
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => 0,
                Err(e) => return Err(e),
            };
            if end > offset || tokio::time::Instant::now() >= deadline {
                return Ok(end);
            }
            tokio::time::sleep_until((tokio::time::Instant::now() + pause).min(deadline)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// A watch of the stream's end: the sequence of its last message, then that of every
    /// message stored after it, as JetStream delivers them. It is an ordered push consumer
    /// that delivers headers only (one replica, in memory; the client recreates it past the
    /// last sequence it delivered when it stalls, so none is skipped); an idle stream costs
    /// its idle heartbeat, one message every 5 s. Dropping the watch ends the subscription
    /// (the server deletes the consumer 30 s later). The subscription's queue is the
    /// client's, bounded (`subscription_capacity`).
    ///
    /// # Errors
    /// [`JetStreamError::Unavailable`] (retryable) when the consumer cannot be made; the
    /// watch yields it when the consumer stalls and cannot be made again.
    pub async fn watch_end(
        &self,
    ) -> Result<impl futures_util::Stream<Item = Result<u64>> + Send + Unpin + 'static> {
        use async_nats::jetstream::consumer::{DeliverPolicy, push::OrderedConfig};
        use futures_util::StreamExt as _;
        let stream = self.stream.clone();
        let unavailable =
            move |what: &str, e: &dyn std::fmt::Display| JetStreamError::Unavailable {
                stream: stream.clone(),
                why: format!("watching the end: {what}: {e}"),
            };
        let config = OrderedConfig {
            deliver_subject: self.client.new_inbox(),
            headers_only: true,
            deliver_policy: DeliverPolicy::Last,
            ..OrderedConfig::default()
        };
        let consumer = self
            .js
            .create_consumer_on_stream(config, &self.stream)
            .await
            .map_err(|e| unavailable("creating the consumer", &e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable("subscribing", &e))?;
        Ok(messages.map(move |delivered| match delivered {
            Ok(message) => message
                .info()
                .map(|info| info.stream_sequence)
                .map_err(|e| unavailable("a delivery without its sequence", &e)),
            Err(e) => Err(unavailable("the consumer", &e)),
        }))
    }

    /// The stream's state from its leader, within the connection's request timeout; sent
    /// again at once when the stream elects a leader meanwhile.
    ///
    /// # Errors
    /// [`JetStreamError::Unavailable`] (retryable), [`JetStreamError::Api`].
    pub async fn state(&self) -> Result<PartitionState> {
        self.state_until(self.default_deadline()).await
    }

    /// [`Self::state`] within the caller's `deadline` (e.g. a wait's).
    ///
    /// # Errors
    /// As [`Self::state`]: [`JetStreamError::Unavailable`] once the deadline passed.
    pub(crate) async fn state_until(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<PartitionState> {
        let subject = format!("STREAM.INFO.{}", self.stream);
        let info: Info = self
            .leader_request(subject, &(), deadline)
            .await
            .map_err(|f| api::classify(&self.stream, f, true))?;
        Ok(PartitionState {
            last_sequence: info.state.last_sequence,
            first_sequence: info.state.first_sequence,
            messages: info.state.messages,
            bytes: info.state.bytes,
            leader: info.cluster.and_then(|c| c.leader),
            replicas: info.config.num_replicas as u32,
        })
    }
}

/// An append handed to the connection ([`JetStreamPartition::send`]); its acknowledgment
/// is still to come.
pub struct SentAppend<'a> {
    partition: &'a JetStreamPartition,
    pending: PublishAckFuture,
    /// Ends the wait early: the acknowledgment will not come.
    leader_changed: Pin<Box<OwnedNotified>>,
    bytes: usize,
    options: &'a AppendOptions,
}

impl SentAppend<'_> {
    /// Waits for the stream's acknowledgment, until its deadline or until the stream elects
    /// a leader (or the connection is re-established) after the message was sent.
    ///
    /// # Errors
    /// As [`JetStreamPartition::append`].
    pub async fn acknowledged(self) -> Result<Appended> {
        let p = self.partition;
        let answer = tokio::select! {
            answer = self.pending.into_future() => answer,
            () = self.leader_changed => {
                return Err(JetStreamError::OutcomeUnknown {
                    stream: p.stream.clone(),
                    why: "a leader was elected (or the connection re-established) while the \
                          acknowledgment was awaited"
                        .into(),
                });
            }
        };
        let ack = answer
            .map_err(|e| p.publish_error(PublishFailure::of(&e, true), self.bytes, self.options))?;
        p.appended(&ack)
    }
}

/// The value of header `name` (case-insensitive) in a NATS header block
/// (`NATS/1.0\r\nName: value\r\n…\r\n\r\n`).
fn header_value(block: &str, name: &str) -> Option<String> {
    block.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// A failed publish, as the client reported it.
struct PublishFailure {
    kind: PublishErrorKind,
    /// The server's (`code`, `err_code`) when it answered with a JetStream error.
    server_code: Option<(u64, u64)>,
    detail: String,
    /// Whether the message had been handed to the connection.
    sent: bool,
}

impl PublishFailure {
    fn of(e: &PublishError, sent: bool) -> PublishFailure {
        PublishFailure {
            server_code: jetstream_code(e),
            kind: e.kind(),
            detail: e.to_string(),
            sent,
        }
    }
}

fn jetstream_code(e: &PublishError) -> Option<(u64, u64)> {
    let source = std::error::Error::source(e)?;
    let error = source.downcast_ref::<async_nats::jetstream::Error>()?;
    Some((error.code() as u64, error.error_code().0))
}

fn check_message_id(id: &str) -> Result<()> {
    let why = if id.is_empty() {
        "empty".to_string()
    } else if id.len() > limits::MESSAGE_ID_BYTES_MAX {
        format!(
            "{} bytes; the limit is {}",
            id.len(),
            limits::MESSAGE_ID_BYTES_MAX
        )
    } else if !id.bytes().all(|b| b.is_ascii_graphic()) {
        "only printable ASCII without spaces is allowed in a NATS header".to_string()
    } else {
        return Ok(());
    };
    Err(JetStreamError::InvalidArgument {
        field: "message_id",
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_found_by_name() {
        let block = "NATS/1.0\r\nNats-Expected-Last-Sequence: 4\r\nNats-Msg-Id: req-1:0\r\n\r\n";
        assert_eq!(
            header_value(block, "nats-msg-id").as_deref(),
            Some("req-1:0")
        );
        assert_eq!(header_value(block, "Other"), None);
        assert_eq!(header_value("NATS/1.0\r\n\r\n", "Nats-Msg-Id"), None);
    }

    #[test]
    fn message_ids_are_checked() {
        assert!(check_message_id("req-1:share-0").is_ok());
        for bad in ["", "has space", "line\r\nbreak", &"x".repeat(513)] {
            assert!(
                matches!(
                    check_message_id(bad),
                    Err(JetStreamError::InvalidArgument {
                        field: "message_id",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }
}
