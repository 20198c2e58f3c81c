//! A cluster node that does not coordinate the consumer groups follows `_groups` by waiting
//! on the log, not by reading it on a timer (issue 15): while nothing is appended it reads
//! nothing — on JetStream every read is requests to the stream's leader — and a record the
//! coordinator appends wakes it.
//!
//! Two `Groups` share one embedded log, both as cluster nodes (`elected`): the coordinator
//! leads under token 1, the follower's log counts its reads of `_groups`.
#![expect(
    clippy::expect_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use logbook_api::groups::JoinGroup;
use logbook_log::{
    AckGuarantee, AppendCompletion, AppendCondition, EndOffsetAbove, IdempotentAppend, Log,
    LogBackend, LogPartition, LogStream, Record, RequestId, Result, StoredRecord, StreamAppend,
    StreamConfig, TimestampOffset, UnqueuedShares,
};
use logbook_server::groups::{GROUPS_STREAM, Groups};

/// The embedded log, counting the reads of `_groups`' partitions.
#[derive(Debug)]
struct CountingLog {
    log: Arc<Log>,
    reads: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountingStream {
    stream: Arc<dyn LogStream>,
    partitions: Vec<CountingPartition>,
}

#[derive(Debug)]
struct CountingPartition {
    stream: Arc<dyn LogStream>,
    id: u32,
    /// Counted only for `_groups`.
    reads: Option<Arc<AtomicU64>>,
}

impl CountingLog {
    fn wrap(&self, stream: Arc<dyn LogStream>) -> Arc<dyn LogStream> {
        let counted = stream.name() == GROUPS_STREAM;
        let partitions = (0..stream.partition_count())
            .map(|id| CountingPartition {
                stream: stream.clone(),
                id,
                reads: counted.then(|| self.reads.clone()),
            })
            .collect();
        Arc::new(CountingStream { stream, partitions })
    }
}

impl LogBackend for CountingLog {
    fn create_stream(&self, name: &str, config: StreamConfig) -> Result<Arc<dyn LogStream>> {
        LogBackend::create_stream(&*self.log, name, config).map(|s| self.wrap(s))
    }
    fn stream(&self, name: &str) -> Result<Arc<dyn LogStream>> {
        LogBackend::stream(&*self.log, name).map(|s| self.wrap(s))
    }
    fn stream_names(&self) -> Vec<String> {
        LogBackend::stream_names(&*self.log)
    }
    fn drop_stream(&self, name: &str) -> Result<()> {
        LogBackend::drop_stream(&*self.log, name)
    }
}

impl LogStream for CountingStream {
    fn name(&self) -> &str {
        self.stream.name()
    }
    fn incarnation(&self) -> u64 {
        self.stream.incarnation()
    }
    fn config(&self) -> StreamConfig {
        self.stream.config()
    }
    fn partition_count(&self) -> u32 {
        self.stream.partition_count()
    }
    fn ack_guarantee(&self) -> AckGuarantee {
        self.stream.ack_guarantee()
    }
    fn partition(&self, partition: u32) -> Result<&dyn LogPartition> {
        self.stream.partition(partition)?;
        Ok(&self.partitions[partition as usize])
    }
    fn append_batch(&self, records: Vec<Record>) -> Result<StreamAppend> {
        self.stream.append_batch(records)
    }
    fn try_append_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<(StreamAppend, Option<UnqueuedShares>)> {
        self.stream.try_append_batch(records)
    }
    fn queue_unqueued(&self, unqueued: UnqueuedShares, append: &mut StreamAppend) -> Result<()> {
        self.stream.queue_unqueued(unqueued, append)
    }
    fn append_with_id(
        self: Arc<Self>,
        request_id: &RequestId,
        traceparent: Option<&str>,
        records: Vec<Record>,
    ) -> Result<IdempotentAppend> {
        self.stream
            .clone()
            .append_with_id(request_id, traceparent, records)
    }
    fn record_count(&self) -> u64 {
        self.stream.record_count()
    }
    fn size_bytes(&self) -> u64 {
        self.stream.size_bytes()
    }
}

impl CountingPartition {
    fn inner(&self) -> &dyn LogPartition {
        // Checked when the stream handed this partition out.
        self.stream
            .partition(self.id)
            .expect("an existing partition")
    }
}

impl LogPartition for CountingPartition {
    fn id(&self) -> u32 {
        self.id
    }
    fn append_batch(
        &self,
        records: &[Record],
        condition: AppendCondition,
    ) -> Result<AppendCompletion> {
        self.inner().append_batch(records, condition)
    }
    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        if let Some(reads) = &self.reads {
            reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner().read(from, max_records, max_bytes)
    }
    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<TimestampOffset> {
        self.inner().offset_for_timestamp(timestamp_ms)
    }
    fn start_offset(&self) -> u64 {
        self.inner().start_offset()
    }
    fn end_offset(&self) -> u64 {
        self.inner().end_offset()
    }
    fn durable_offset(&self) -> u64 {
        self.inner().durable_offset()
    }
    fn wait_end_offset_above(&self, above: u64, timeout: Duration) -> u64 {
        self.inner().wait_end_offset_above(above, timeout)
    }
    fn end_offset_above(&self, above: u64) -> EndOffsetAbove {
        self.inner().end_offset_above(above)
    }
    fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        self.inner().enforce_retention(now_ms)
    }
    fn size_bytes(&self) -> u64 {
        self.inner().size_bytes()
    }
}

fn join(groups: &Groups, member: &str) {
    let body = JoinGroup {
        stream: "orders".into(),
        member: member.into(),
        // Longer than the test: no member expires while it runs.
        session_timeout_ms: Some(300_000),
    };
    // One principal under the default quotas.
    let quota = logbook_server::groups::GroupQuota {
        groups_max: logbook_server::limits::GROUPS_PER_PRINCIPAL_MAX_DEFAULT,
        members_max: logbook_server::limits::GROUP_MEMBERS_PER_PRINCIPAL_MAX_DEFAULT,
    };
    groups
        .join("g", &body, "token:test", quota)
        .expect("the coordinator accepts a join");
}

/// Waits (bounded) until the follower's state holds `members` in group g.
fn wait_members(follower: &Groups, members: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = follower
            .list()
            .expect("the follower lists its groups")
            .iter()
            .find(|g| g.group == "g")
            .map_or(0, |g| g.members.len());
        if seen == members {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the follower holds {seen} members of g after 10 s, not {members}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_idle_groups_follower_reads_nothing_and_a_new_record_wakes_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = Arc::new(Log::open(dir.path()).expect("the log opens"));
    log.create_stream("orders", StreamConfig::with_partitions(2))
        .expect("the stream is created");
    let coordinator = Groups::open(log.clone(), true).expect("the coordinator opens");
    coordinator.lead(1, "a").expect("the coordinator leads");
    let reads = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(CountingLog {
        log,
        reads: reads.clone(),
    });
    let follower = Groups::open(counting, true).expect("the follower opens");
    assert!(!follower.is_writer(), "the follower does not coordinate");

    join(&coordinator, "m1");
    wait_members(&follower, 1);

    // Idle: nothing is appended. Polling read `_groups` every 100 ms (about 10 reads here).
    let before = reads.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(1));
    let idle = reads.load(Ordering::SeqCst) - before;
    assert_eq!(
        idle, 0,
        "the idle follower read _groups {idle} times in 1 s"
    );

    // A record the coordinator appends wakes the follower, which reads and applies it.
    join(&coordinator, "m2");
    wait_members(&follower, 2);
    assert!(
        reads.load(Ordering::SeqCst) > before,
        "the follower read m2's join"
    );

    follower.close();
    coordinator.close();
}
