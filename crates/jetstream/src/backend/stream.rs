//! One Logbook stream through the seam: [`LogStream`] over its partitions' JetStream streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use logbook_log::format::{EncodedBatch, encode_batch};
use logbook_log::stream::{IdempotentAppend, StreamAppend, UnqueuedShares, partition_for_key};
use logbook_log::{
    AckGuarantee, AppendCondition, LogError, LogPartition, LogStream, Record, Result, StreamConfig,
    dedup::RequestId,
};

use super::catalog::Definition;
use super::partition::JsPartition;
use super::{BACKEND, now_ms};

/// A stream of the JetStream backend: its catalog definition and one handle per partition.
#[derive(Debug)]
pub(crate) struct JsStream {
    definition: Definition,
    partitions: Vec<JsPartition>,
    ack_guarantee: AckGuarantee,
    /// Set once the catalog shows this incarnation dropped.
    closed: Arc<AtomicBool>,
    /// The partition of the next call's unkeyed records.
    round_robin: AtomicU32,
}

impl JsStream {
    pub(crate) fn new(
        definition: Definition,
        partitions: Vec<JsPartition>,
        fsynced: bool,
        closed: Arc<AtomicBool>,
    ) -> JsStream {
        assert_eq!(
            partitions.len(),
            definition.config.partitions as usize,
            "one handle per partition of the definition"
        );
        let ack_guarantee = AckGuarantee {
            replicas: definition.settings.replicas,
            fsynced,
        };
        // Start the round-robin somewhere else on each node and stream.
        let seed = definition.incarnation as u32 ^ std::process::id();
        JsStream {
            round_robin: AtomicU32::new(seed),
            definition,
            partitions,
            ack_guarantee,
            closed,
        }
    }

    /// Records of one call, grouped by partition, encoded and checked: every share is checked
    /// before any is sent.
    fn shares(&self, records: Vec<Record>) -> Result<Vec<(usize, EncodedBatch, Vec<usize>)>> {
        logbook_log::stream::check_no_reserved_headers(&records)?;
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let count = self.definition.config.partitions;
        let unkeyed = self.round_robin.fetch_add(1, Ordering::Relaxed) % count;
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); count as usize];
        for (index, record) in records.iter().enumerate() {
            let p = record
                .key
                .as_deref()
                .map_or(unkeyed, |key| partition_for_key(key, count));
            groups[p as usize].push(index);
        }
        let mut records: Vec<Option<Record>> = records.into_iter().map(Some).collect();
        let now = now_ms();
        let mut shares = Vec::new();
        for (p, indices) in groups.into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let share: Vec<Record> = indices.iter().filter_map(|&i| records[i].take()).collect();
            let batch = encode_batch(&share, now).map_err(|e| e.remap_record_index(&indices))?;
            self.partitions[p].check_sendable(&batch)?;
            shares.push((p, batch, indices));
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

    fn config(&self) -> &StreamConfig {
        &self.definition.config
    }

    fn partition_count(&self) -> u32 {
        self.definition.config.partitions
    }

    fn ack_guarantee(&self) -> AckGuarantee {
        self.ack_guarantee
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
        for (p, batch, indices) in self.shares(records)? {
            let completion = self.partitions[p].append_encoded(batch, AppendCondition::Always);
            append.push(completion, indices);
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

    fn append_with_id(
        self: Arc<Self>,
        _request_id: &RequestId,
        _traceparent: Option<&str>,
        _records: Vec<Record>,
    ) -> Result<IdempotentAppend> {
        Err(LogError::Unsupported {
            backend: BACKEND,
            operation: "append_with_id",
            why: "appends with a request id (Nats-Msg-Id within the duplicate window, Logbook's \
                  request-id index beyond it) come with the cluster mode; nothing was appended"
                .into(),
        })
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
