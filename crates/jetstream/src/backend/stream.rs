//! One Logbook stream through the seam: [`LogStream`] over its partitions' JetStream streams.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logbook_log::stream::{IdempotentAppend, Share, StreamAppend, UnqueuedShares, encode_shares};
use logbook_log::{
    AckGuarantee, AppendCondition, LogError, LogPartition, LogStream, Record, Result, StreamConfig,
    dedup::RequestId,
};

use super::catalog::Definition;
use super::claims::Claims;
use super::partition::JsPartition;
use super::request_ids::{self, CheckpointFile, RequestIds};
use super::{BACKEND, now_ms};
use crate::ack::Durability;
use crate::partition::Message;

/// A stream of the JetStream backend: its catalog definition and one handle per partition.
#[derive(Debug)]
pub(crate) struct JsStream {
    definition: Definition,
    partitions: Vec<JsPartition>,
    /// What the cluster's acknowledgments guarantee, as last read from its servers.
    durability: Arc<Durability>,
    /// The request ids' claims on their streams (used with several partitions).
    claims: Arc<Claims>,
    /// Where this node checkpoints the stream's request-id index, if anywhere.
    checkpoint: Option<CheckpointFile>,
    /// Set once the catalog shows this incarnation dropped.
    closed: Arc<AtomicBool>,
    /// The partition of the next call's unkeyed records.
    round_robin: AtomicU32,
    /// This node's request-id index of the stream, made by the first append with an id.
    request_ids: Mutex<Option<Arc<RequestIds>>>,
}

impl JsStream {
    pub(crate) fn new(
        definition: Definition,
        partitions: Vec<JsPartition>,
        durability: Arc<Durability>,
        claims: Arc<Claims>,
        checkpoint: Option<CheckpointFile>,
        closed: Arc<AtomicBool>,
    ) -> JsStream {
        assert_eq!(
            partitions.len(),
            definition.config.partitions as usize,
            "one handle per partition of the definition"
        );
        // Start the round-robin somewhere else on each node and stream.
        let seed = definition.incarnation as u32 ^ std::process::id();
        JsStream {
            round_robin: AtomicU32::new(seed),
            definition,
            partitions,
            durability,
            claims,
            checkpoint,
            closed,
            request_ids: Mutex::new(None),
        }
    }

    /// The stream's request-id index on this node, made on first use.
    fn request_ids(&self) -> Result<Arc<RequestIds>> {
        let mut ids = self.request_ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = ids.as_ref() {
            return Ok(ids.clone());
        }
        let window = Duration::from_millis(self.definition.settings.duplicate_window_ms);
        // One partition: its shares' message ids are per stream already, no claim needed.
        let claims = (self.partition_count() > 1).then(|| request_ids::StreamClaims {
            claims: self.claims.clone(),
            stream: self.definition.name.clone(),
            incarnation: self.definition.incarnation,
        });
        let made = Arc::new(RequestIds::new(
            self.partition_count(),
            window,
            claims,
            self.checkpoint.clone(),
        )?);
        *ids = Some(made.clone());
        Ok(made)
    }

    /// Records of one call as one share per partition ([`encode_shares`]), each checked
    /// against JetStream's message limit: every share is checked before any is sent.
    fn shares(&self, records: Vec<Record>) -> Result<Vec<Share>> {
        let count = self.definition.config.partitions;
        let unkeyed = self.round_robin.fetch_add(1, Ordering::Relaxed) % count;
        let shares = encode_shares(records, count, unkeyed, now_ms())?;
        for share in &shares {
            self.partitions[share.partition as usize].check_sendable(&share.batch)?;
        }
        Ok(shares)
    }
}

impl LogStream for JsStream {
    fn name(&self) -> &str {
        &self.definition.name
    }

    /// The offset of the stream's create record in the catalog: the same on every node.
    fn incarnation(&self) -> u64 {
        self.definition.incarnation
    }

    fn config(&self) -> StreamConfig {
        self.definition.config.clone()
    }

    fn partition_count(&self) -> u32 {
        self.definition.config.partitions
    }

    /// The stream's replicas; fsynced as the cluster's servers said when last read.
    fn ack_guarantee(&self) -> AckGuarantee {
        self.durability.guarantee(self.definition.settings.replicas)
    }

    fn partition(&self, partition: u32) -> Result<&dyn LogPartition> {
        match self.partitions.get(partition as usize) {
            Some(p) => Ok(p),
            None => Err(LogError::UnknownPartition {
                stream: self.definition.name.clone(),
                partition,
                partitions: self.definition.config.partitions,
            }),
        }
    }

    fn append_batch(&self, records: Vec<Record>) -> Result<StreamAppend> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let len = records.len();
        let mut append = StreamAppend::new(len);
        for share in self.shares(records)? {
            let completion = self.partitions[share.partition as usize]
                .append_encoded(share.batch, AppendCondition::Always);
            append.push(completion, share.indices);
        }
        Ok(append)
    }

    /// Never leaves anything unqueued: a publish is a task, not a place in a bounded queue.
    fn try_append_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<(StreamAppend, Option<UnqueuedShares>)> {
        Ok((self.append_batch(records)?, None))
    }

    /// Only the embedded log hands shares back, so none can be for this stream.
    fn queue_unqueued(&self, unqueued: UnqueuedShares, _append: &mut StreamAppend) -> Result<()> {
        drop(unqueued);
        Err(LogError::Unsupported {
            backend: BACKEND,
            operation: "queue_unqueued",
            why: "these shares come from another backend's stream; nothing of them was queued"
                .into(),
        })
    }

    /// Exactly once on every node: `Nats-Msg-Id` per share within JetStream's duplicate
    /// window, this node's request-id index (derived from the log) beyond it
    /// ([`super::request_ids`]). Blocks until the outcome is known; the returned append is
    /// resolved.
    fn append_with_id(
        self: Arc<Self>,
        request_id: &RequestId,
        traceparent: Option<&str>,
        records: Vec<Record>,
    ) -> Result<IdempotentAppend> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let ids = self.request_ids()?;
        let appended_ms = now_ms();
        let shares = ids.prepare(
            request_id,
            traceparent,
            records,
            self.partition_count(),
            appended_ms,
        )?;
        let mut batches = Vec::with_capacity(shares.len());
        for share in &shares {
            let batch = share.encode(appended_ms)?;
            self.partitions[share.partition as usize].check_sendable(&batch)?;
            batches.push(Message::from(batch));
        }
        let publishers = request_ids::publishers(&self.partitions);
        let runtime = self.partitions[0].runtime().clone();
        let id = request_id.clone();
        let outcome = runtime.block_on(async move {
            ids.append(&id, &shares, &batches, appended_ms, &publishers)
                .await
        })??;
        Ok(IdempotentAppend::resolved(outcome))
    }

    /// JetStream counts messages, not records: this is the number of batches stored (as last
    /// observed), a lower bound of the records, equal when every append is one record.
    fn record_count(&self) -> u64 {
        self.partitions.iter().map(JsPartition::messages).sum()
    }

    fn size_bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.size_bytes()).sum()
    }
}
