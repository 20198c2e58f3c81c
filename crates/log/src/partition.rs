//! One partition: an ordered sequence of segments, one writer thread doing group commit, and
//! any number of concurrent readers.
//!
//! ```text
//!  appenders ──encode+CRC──▶ bounded queue ──▶ writer thread ──write──▶ active segment
//!  (any thread)              (APPEND_QUEUE_DEPTH)  │  one group = every append queued
//!                                                  │  while the last fdatasync ran
//!                                                  ├─ fdatasync (policy `always`)
//!                                                  └─ advance the acknowledged end offset,
//!                                                     resolve completions, wake readers
//! ```
//!
//! Group commit: the writer takes the first queued append, then everything else already
//! queued (up to [`GROUP_COMMIT_BYTES_MAX`]), writes them with one `write`, and makes them
//! durable with one `fdatasync`. The longer an fsync takes, the more appends queue behind it
//! and the bigger the next group: throughput rises with load instead of latency collapsing.
//!
//! Invariants:
//! * offsets are dense: the writer assigns `next_offset` and nothing else does;
//! * readers never see past the acknowledged end (`acked`), so under fsync `always` they only
//!   ever see durable records (docs/DESIGN.md rule 2: processors never read past durability);
//! * after a failed write or fsync the partition is poisoned: every later append fails with
//!   [`LogError::Poisoned`] until the log is reopened, because the state of the file after a
//!   failed fsync is unknown (fsyncgate, 2018) and retrying it can report success falsely.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::completion::{
    AppendAck, AppendCompletion, Completer, EndOffsetAbove, WatchedEnd, Watermark, completion,
};
use crate::error::{LogError, Result};
use crate::format::{self, BATCH_HEADER_BYTES, BatchHeader, EncodedBatch, Record, StoredRecord};
use crate::limits::{APPEND_QUEUE_DEPTH, GROUP_COMMIT_BYTES_MAX, QUEUED_BYTES_MAX};
use crate::segment::{self, ChunkReader, Segment, index_file_name, parse_file_name};
use crate::storage::Storage;
use crate::{AppendCondition, Clock, FsyncPolicy, Retention, TimestampOffset};

/// How often the writer checks age-based retention when no appends arrive.
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Settings of a partition, taken from its stream's config.
#[derive(Debug, Clone)]
pub(crate) struct PartitionConfig {
    pub segment_bytes_max: u64,
    /// The stream's retention, shared by its partitions: the one setting that changes while
    /// the stream is open ([`crate::Log::set_retention`]).
    pub retention: Arc<RwLock<Retention>>,
    pub fsync: FsyncPolicy,
}

/// Counters of one partition (monotonic since open).
#[derive(Debug, Default)]
pub struct PartitionStats {
    /// Appends acknowledged.
    pub appends: AtomicU64,
    /// Records acknowledged.
    pub records: AtomicU64,
    /// Batch bytes written to segments.
    pub bytes_written: AtomicU64,
    /// Group commits (one `write` of one or more batches).
    pub groups: AtomicU64,
    /// Successful `fdatasync` calls on segment files.
    pub syncs: AtomicU64,
    /// Total time spent in `fdatasync`, µs.
    pub sync_us_total: AtomicU64,
    /// Segments deleted by retention.
    pub segments_deleted: AtomicU64,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // The writer thread never panics while holding the lock except on a broken invariant, in
    // which case the process is already wrong; readers may continue with what is there.
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// State shared by a partition's handle, its writer thread and its readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub stream: String,
    pub id: u32,
    pub dir: PathBuf,
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub config: PartitionConfig,
    /// Segments in offset order; the last one is active (receives appends).
    pub segments: RwLock<Vec<Segment>>,
    /// Next offset not yet acknowledged: readers see offsets below it.
    pub acked: Watermark,
    /// Next offset not yet known to be durable.
    pub durable: AtomicU64,
    pub poisoned: Mutex<Option<String>>,
    pub closed: AtomicBool,
    /// Bytes of batches queued for the writer, bounded by [`QUEUED_BYTES_MAX`].
    queued_bytes: Mutex<u64>,
    /// Signalled when the writer takes batches off the queue (or the partition closes).
    queue_space: std::sync::Condvar,
    pub stats: PartitionStats,
}

impl WatchedEnd for Shared {
    fn acked(&self) -> &Watermark {
        &self.acked
    }
    fn is_closed(&self) -> bool {
        Shared::is_closed(self)
    }
}

impl Shared {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Gives back `bytes` of the writer's queue and wakes appenders waiting for space.
    fn release_queue_bytes(&self, bytes: u64) {
        let mut queued = self.queued_bytes.lock().unwrap_or_else(|e| e.into_inner());
        *queued = queued.saturating_sub(bytes);
        drop(queued);
        self.queue_space.notify_all();
    }

    fn poison_cause(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn poisoned_error(&self, cause: String) -> LogError {
        LogError::Poisoned {
            stream: self.stream.clone(),
            partition: self.id,
            cause,
        }
    }
}

/// A sealed segment as the scrubber sees it: its file and what its index says it holds.
#[derive(Debug, Clone)]
pub(crate) struct SealedSegment {
    pub partition: u32,
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Arc<dyn crate::storage::StorageFile>,
    /// Bytes of the file that hold whole batches (header included).
    pub len: u64,
    /// Offset one past its last record.
    pub next_offset: u64,
}

/// Where [`Partition::read`] starts scanning for an offset (or the time lookup for a time).
struct Located {
    file: Arc<dyn crate::storage::StorageFile>,
    path: PathBuf,
    /// Byte position of a batch at or before the offset.
    pos: u64,
    /// Base offset of the batch at `pos`.
    expected_base: u64,
    /// Bytes of the segment holding whole batches.
    seg_len: u64,
    /// Offset one past the segment's last record.
    seg_next: u64,
}

impl Located {
    /// Position `(pos, expected_base)` in segment `s`, from its index.
    fn at(s: &Segment, (pos, expected_base): (u64, u64)) -> Located {
        Located {
            file: s.file.clone(),
            path: s.path.clone(),
            pos,
            expected_base,
            seg_len: s.len,
            seg_next: s.next_offset,
        }
    }
}

/// The batches of one segment from a located position, each checked for density, length
/// and room before its bytes are handed out (the CRC is checked by whoever decodes them),
/// up to the acknowledged end.
struct Batches<'a> {
    reader: ChunkReader<'a>,
    path: &'a Path,
    pos: u64,
    expected_base: u64,
    seg_len: u64,
    end: u64,
}

impl<'a> Batches<'a> {
    fn new(located: &'a Located, end: u64) -> Batches<'a> {
        Batches {
            reader: ChunkReader::with_limit(&*located.file, located.seg_len),
            path: &located.path,
            pos: located.pos,
            expected_base: located.expected_base,
            seg_len: located.seg_len,
            end,
        }
    }

    /// The next batch, or `None` at the segment's end or the acknowledged end. Does not move
    /// past it: [`Batches::advance`] does.
    fn next(&mut self) -> Result<Option<Batch<'_>>> {
        if self.pos >= self.seg_len {
            return Ok(None);
        }
        let io = |e| LogError::io("read", self.path, e);
        let header = BatchHeader::parse(self.reader.get(self.pos, BATCH_HEADER_BYTES).map_err(io)?);
        // `base_offset` is outside the CRC; offsets are dense, so it is known anyway.
        if header.base_offset != self.expected_base {
            return Err(self.corrupt(format!(
                "batch starts at offset {}, expected {} (offsets must be dense)",
                header.base_offset, self.expected_base
            )));
        }
        if header.base_offset >= self.end {
            return Ok(None);
        }
        if !header.length_is_plausible() {
            return Err(self.corrupt(format!("implausible batch length {}", header.batch_bytes)));
        }
        if self.pos + u64::from(header.batch_bytes) > self.seg_len {
            return Err(self.corrupt(format!(
                "batch of {} bytes runs past the end of the segment ({} bytes)",
                header.batch_bytes, self.seg_len
            )));
        }
        let bytes = self
            .reader
            .get(self.pos, header.batch_bytes as usize)
            .map_err(|e| LogError::io("read", self.path, e))?;
        Ok(Some(Batch {
            header,
            bytes,
            path: self.path,
            pos: self.pos,
        }))
    }

    /// Moves past the batch [`Batches::next`] returned.
    fn advance(&mut self, header: &BatchHeader) {
        self.expected_base = header.next_offset();
        self.pos += u64::from(header.batch_bytes);
    }

    /// Whether every batch of the segment was passed.
    fn at_segment_end(&self) -> bool {
        self.pos >= self.seg_len
    }

    /// A corruption error at the current batch.
    fn corrupt(&self, reason: impl ToString) -> LogError {
        corrupt_at(self.path, self.pos, reason)
    }
}

/// One batch handed out by [`Batches::next`]: its bytes are not verified yet.
struct Batch<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
    path: &'a Path,
    pos: u64,
}

impl Batch<'_> {
    /// Verifies the batch (CRC, shape) and decodes its records.
    fn decode(&self) -> Result<Vec<StoredRecord>> {
        let (_, records) = format::decode_batch(self.bytes).map_err(|d| self.corrupt(d))?;
        Ok(records)
    }

    /// Verifies the batch without decoding it.
    fn verify(&self) -> Result<()> {
        format::verify_batch(self.bytes).map_err(|d| self.corrupt(d))?;
        Ok(())
    }

    fn corrupt(&self, reason: impl ToString) -> LogError {
        corrupt_at(self.path, self.pos, reason)
    }
}

fn corrupt_at(path: &Path, file_offset: u64, reason: impl ToString) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        file_offset,
        reason: reason.to_string(),
    }
}

struct Request {
    batch: EncodedBatch,
    completer: Completer,
    hook: Option<AckHook>,
    condition: AppendCondition,
}

/// glibc's initial mmap threshold (128 KiB). The append queue's slots are allocated at once
/// when a partition opens: kept under the threshold, they come from malloc's arenas and are
/// reused by the next partition after a drop, instead of being mapped and unmapped — which
/// raises the threshold for good and leaves later partitions' memory in the arenas.
const MMAP_THRESHOLD_BYTES: usize = 128 * 1024;
const _: () = assert!(
    APPEND_QUEUE_DEPTH * (std::mem::size_of::<Request>() + std::mem::size_of::<usize>())
        < MMAP_THRESHOLD_BYTES
);

type HookFn = Box<dyn FnOnce(std::result::Result<AppendAck, &LogError>) + Send>;

/// A callback the writer runs with an append's outcome *before* it advances the
/// acknowledged end offset, so that state derived on the write path (the request-id index)
/// covers every record a reader can see. Runs exactly once: if the append never reaches the
/// writer, dropping the hook runs it with [`LogError::Closed`].
pub(crate) struct AckHook(Option<HookFn>);

impl AckHook {
    pub fn new(f: impl FnOnce(std::result::Result<AppendAck, &LogError>) + Send + 'static) -> Self {
        AckHook(Some(Box::new(f)))
    }
    fn run(mut self, outcome: std::result::Result<AppendAck, &LogError>) {
        if let Some(f) = self.0.take() {
            f(outcome);
        }
    }
}

impl Drop for AckHook {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(&LogError::Closed));
        }
    }
}

impl std::fmt::Debug for AckHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckHook")
    }
}

/// Why [`Partition::try_append_encoded`] did not queue a batch.
#[derive(Debug, thiserror::Error)]
pub enum TryAppendError {
    /// The writer's queue is full (by count or bytes): nothing was queued; here is the
    /// batch back.
    #[error("the partition's append queue is full")]
    Full(EncodedBatch),
    /// The append failed and will keep failing (poisoned or closed partition).
    #[error(transparent)]
    Failed(LogError),
}

/// One partition of a stream. Cheap to share (`Arc` inside the stream); appends and reads may
/// come from any thread.
#[derive(Debug)]
pub struct Partition {
    shared: Arc<Shared>,
    sender: RwLock<Option<SyncSender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Partition {
    /// Opens (recovering) or creates the partition in `dir` and starts its writer thread.
    pub(crate) fn open(
        stream: &str,
        id: u32,
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        config: PartitionConfig,
    ) -> Result<Partition> {
        let segments = recover(&*storage, &dir, id)?;
        let end = segments.last().map_or(0, |s| s.next_offset);
        let shared = Arc::new(Shared {
            stream: stream.to_string(),
            id,
            dir,
            storage,
            clock,
            config,
            segments: RwLock::new(segments),
            acked: Watermark::new(end),
            durable: AtomicU64::new(end),
            poisoned: Mutex::new(None),
            closed: AtomicBool::new(false),
            queued_bytes: Mutex::new(0),
            queue_space: std::sync::Condvar::new(),
            stats: PartitionStats::default(),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(APPEND_QUEUE_DEPTH);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name(format!("logbook-writer-{stream}-{id}"))
            .spawn(move || Writer::new(writer_shared).run(rx))
            .map_err(|e| LogError::io("spawn writer thread", PathBuf::new(), e))?;
        Ok(Partition {
            shared,
            sender: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The log clock's time, ms since the Unix epoch (the timestamp given to records that
    /// carry none).
    pub fn clock_now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// This partition's number within its stream.
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// Appends `records` as one batch: all of them or none become visible, at consecutive
    /// offsets. Limits are checked here, in the caller's thread; the returned completion
    /// resolves once the batch is acknowledged (see [`FsyncPolicy`] for what that means).
    ///
    /// Blocks while [`APPEND_QUEUE_DEPTH`] appends are already queued (backpressure).
    ///
    /// # Errors
    /// Bad input (see [`format::encode_batch`]) and [`LogError::Poisoned`] are returned at once
    /// and change nothing; I/O failures arrive through the completion. An I/O failure means
    /// the outcome is unknown (the batch may or may not be on disk): retry with a request id.
    pub fn append(&self, records: &[Record]) -> Result<AppendCompletion> {
        let batch = format::encode_batch(records, self.shared.clock.now_ms())?;
        self.append_encoded(batch)
    }

    /// Appends a batch already encoded by [`format::encode_batch`].
    pub fn append_encoded(&self, batch: EncodedBatch) -> Result<AppendCompletion> {
        self.append_with_hook(batch, None, AppendCondition::Always)
    }

    /// [`Self::append`] under a precondition: with [`AppendCondition::EndOffset`] the writer
    /// stores the batch only if the partition ends there when it assigns the batch's offsets
    /// (so of two appends expecting one end, exactly one is stored).
    ///
    /// # Errors
    /// As [`Self::append`]; an unmet condition fails the completion with
    /// [`LogError::EndOffsetMismatch`], nothing stored, the partition not poisoned.
    pub fn append_if(
        &self,
        records: &[Record],
        condition: AppendCondition,
    ) -> Result<AppendCompletion> {
        let batch = format::encode_batch(records, self.shared.clock.now_ms())?;
        self.append_with_hook(batch, None, condition)
    }

    /// Appends a batch; `hook` runs with the outcome before the batch becomes visible.
    pub(crate) fn append_with_hook(
        &self,
        batch: EncodedBatch,
        hook: Option<AckHook>,
        condition: AppendCondition,
    ) -> Result<AppendCompletion> {
        if let Some(cause) = self.shared.poison_cause() {
            return Err(self.shared.poisoned_error(cause));
        }
        self.reserve_queue_bytes(batch.len() as u64)?;
        let (done, completer) = completion();
        let request = Request {
            batch,
            completer,
            hook,
            condition,
        };
        let sender = read(&self.sender);
        let Some(sender) = sender.as_ref() else {
            return Err(LogError::Closed);
        };
        match sender.try_send(request) {
            Ok(()) => Ok(done),
            Err(TrySendError::Full(request)) => match sender.send(request) {
                Ok(()) => Ok(done),
                Err(_) => Err(LogError::Closed),
            },
            Err(TrySendError::Disconnected(_)) => Err(LogError::Closed),
        }
    }

    /// Queues a batch already encoded by [`format::encode_batch`] if the writer's queue has
    /// room now, and never blocks: for callers that must not hold their thread (an async
    /// server's worker). When the queue is full the batch comes back unchanged in
    /// [`TryAppendError::Full`], to retry later or to queue with the blocking
    /// [`Self::append_encoded`] on a thread that may wait.
    ///
    /// # Errors
    /// [`TryAppendError::Full`]; [`TryAppendError::Failed`] with [`LogError::Poisoned`] or
    /// [`LogError::Closed`], which change nothing.
    pub fn try_append_encoded(
        &self,
        batch: EncodedBatch,
    ) -> std::result::Result<AppendCompletion, TryAppendError> {
        if let Some(cause) = self.shared.poison_cause() {
            return Err(TryAppendError::Failed(self.shared.poisoned_error(cause)));
        }
        let bytes = batch.len() as u64;
        if !self.try_reserve_queue_bytes(bytes) {
            return Err(TryAppendError::Full(batch));
        }
        let sender = read(&self.sender);
        let Some(sender) = sender.as_ref() else {
            self.shared.release_queue_bytes(bytes);
            return Err(TryAppendError::Failed(LogError::Closed));
        };
        let (done, completer) = completion();
        let request = Request {
            batch,
            completer,
            hook: None,
            condition: AppendCondition::Always,
        };
        match sender.try_send(request) {
            Ok(()) => Ok(done),
            Err(TrySendError::Full(request)) => {
                self.shared.release_queue_bytes(bytes);
                // Dropping the completer resolves `done`, which nobody holds any more.
                let Request { batch, .. } = request;
                Err(TryAppendError::Full(batch))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.release_queue_bytes(bytes);
                Err(TryAppendError::Failed(LogError::Closed))
            }
        }
    }

    /// Takes `bytes` of queue space if they fit now (the same rule as
    /// [`Self::reserve_queue_bytes`], without waiting).
    fn try_reserve_queue_bytes(&self, bytes: u64) -> bool {
        let mut queued = self
            .shared
            .queued_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *queued > 0 && *queued + bytes > QUEUED_BYTES_MAX {
            return false;
        }
        *queued += bytes;
        true
    }

    /// Waits until `bytes` more fit in the writer's queue (backpressure by bytes: the
    /// request count alone would let 4096 queued 16 MiB batches hold 64 GiB). One batch is
    /// always admitted into an empty queue, whatever its size.
    fn reserve_queue_bytes(&self, bytes: u64) -> Result<()> {
        let mut queued = self
            .shared
            .queued_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while *queued > 0 && *queued + bytes > QUEUED_BYTES_MAX {
            if self.shared.is_closed() {
                return Err(LogError::Closed);
            }
            queued = self
                .shared
                .queue_space
                .wait_timeout(queued, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *queued += bytes;
        Ok(())
    }

    /// First offset still retained (records below it were deleted by retention).
    pub fn start_offset(&self) -> u64 {
        read(&self.shared.segments)
            .first()
            .map_or(0, |s| s.base_offset)
    }

    /// Next offset to be acknowledged: records `start_offset()..end_offset()` are readable.
    pub fn end_offset(&self) -> u64 {
        self.shared.acked.get()
    }

    /// Next offset not yet known to be durable (fsynced). Equal to [`Self::end_offset`] under
    /// fsync `always`; may trail it under weaker policies.
    pub fn durable_offset(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Bytes held by this partition's segment files.
    pub fn size_bytes(&self) -> u64 {
        read(&self.shared.segments).iter().map(|s| s.len).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        read(&self.shared.segments).len()
    }

    /// The first sealed segment (every segment but the active last one) whose base offset is
    /// at least `from_base`, for the background scrubber. The handle keeps the file readable
    /// even if retention deletes the segment meanwhile.
    pub(crate) fn sealed_segment_from(&self, from_base: u64) -> Option<SealedSegment> {
        let segments = read(&self.shared.segments);
        let sealed = segments.split_last().map_or(&[][..], |(_, sealed)| sealed);
        let s = sealed.iter().find(|s| s.base_offset >= from_base)?;
        Some(SealedSegment {
            partition: self.shared.id,
            base_offset: s.base_offset,
            path: s.path.clone(),
            file: s.file.clone(),
            len: s.len,
            next_offset: s.next_offset,
        })
    }

    /// Counters since open.
    pub fn stats(&self) -> &PartitionStats {
        &self.shared.stats
    }

    /// Reads records from offset `from`, at most `max_records` of them and at most about
    /// `max_bytes` of keys and values (at least one record is returned if any is available,
    /// however large, so a reader always makes progress). Every batch read is verified
    /// against its CRC32C.
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] when `from` is below [`Self::start_offset`] or above
    /// [`Self::end_offset`] (`from == end_offset()` returns no records);
    /// [`LogError::Corrupt`] naming file and byte offset if a batch fails verification.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let end = self.end_offset();
        let start = self.start_offset();
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                partition: self.shared.id,
                offset: from,
                start,
                end,
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        while next < end && out.len() < max_records && (out.is_empty() || bytes < max_bytes) {
            let before = next;
            let Some(located) = self.locate(next) else {
                // Retention deleted the segment after we checked the start offset.
                let start = self.start_offset();
                return Err(LogError::OffsetOutOfRange {
                    partition: self.shared.id,
                    offset: next,
                    start,
                    end,
                });
            };
            let seg_next = located.seg_next;
            let mut batches = Batches::new(&located, end);
            while out.len() < max_records && (out.is_empty() || bytes < max_bytes) {
                let Some(batch) = batches.next()? else {
                    break;
                };
                let header = batch.header;
                let records = batch.decode()?;
                if header.base_offset > next {
                    return Err(batch.corrupt(format!(
                        "batch starts at offset {}, expected at most {next}",
                        header.base_offset
                    )));
                }
                for record in records {
                    if record.offset < next {
                        continue;
                    }
                    if out.len() >= max_records || (!out.is_empty() && bytes >= max_bytes) {
                        // A limit is reached in the middle of a batch: done. (Falling through
                        // would step past the batch's unread records and, at the end of a
                        // segment, report the segment as ending too early.)
                        return Ok(out);
                    }
                    bytes += record.value.len() + record.key.as_ref().map_or(0, Vec::len);
                    next = record.offset + 1;
                    out.push(record);
                }
                batches.advance(&header);
            }
            let at_segment_end = batches.at_segment_end();
            if at_segment_end && next < seg_next {
                return Err(batches.corrupt(format!("segment ends before offset {next}")));
            }
            if at_segment_end {
                next = next.max(seg_next);
            }
            if next == before {
                // Every step above consumes a record or a segment; standing still would
                // mean the segment metadata and the bytes disagree.
                return Err(
                    batches.corrupt(format!("no record at offset {next} where the index points"))
                );
            }
        }
        Ok(out)
    }

    /// The first retained record whose timestamp is at or after `timestamp_ms` (ms since the
    /// Unix epoch), as Kafka's ListOffsets answers it: its offset and timestamp, or the end
    /// offset and no timestamp when no acknowledged record is that recent. Timestamps a
    /// client chose may be out of order, so records after the answer can be older than
    /// `timestamp_ms`; every record before it is.
    ///
    /// Answered from the segments' newest timestamps and their index entries (each holds the
    /// newest timestamp before it): one segment is read, from the last entry before the
    /// time to the first batch whose newest record reaches it — at most about
    /// [`crate::limits::INDEX_INTERVAL_BYTES`] of batches plus one, each verified.
    ///
    /// # Errors
    /// [`LogError::Corrupt`] naming file and byte offset if a batch read fails verification.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<TimestampOffset> {
        let end = self.end_offset();
        let not_found = TimestampOffset {
            offset: end,
            timestamp_ms: None,
        };
        let Some(located) = self.locate_timestamp(timestamp_ms, end) else {
            return Ok(not_found);
        };
        let mut batches = Batches::new(&located, end);
        while let Some(batch) = batches.next()? {
            let header = batch.header;
            if header.max_timestamp_ms >= timestamp_ms {
                let records = batch.decode()?;
                let found = records.iter().find(|r| r.timestamp_ms >= timestamp_ms);
                let Some(record) = found else {
                    return Err(batch.corrupt(format!(
                        "the batch header's newest timestamp {} is newer than every record's",
                        header.max_timestamp_ms
                    )));
                };
                return Ok(TimestampOffset {
                    offset: record.offset,
                    timestamp_ms: Some(record.timestamp_ms),
                });
            }
            batch.verify()?;
            batches.advance(&header);
        }
        if batches.at_segment_end() {
            return Err(batches.corrupt(format!(
                "the segment's newest timestamp is at or after {timestamp_ms} but none of its records is"
            )));
        }
        // The record is in the active segment but not acknowledged yet.
        Ok(not_found)
    }

    /// Finds the segment holding `offset` and where in it to start scanning.
    fn locate(&self, offset: u64) -> Option<Located> {
        let segments = read(&self.shared.segments);
        let i = segments.partition_point(|s| s.base_offset <= offset);
        let s = segments.get(i.checked_sub(1)?)?;
        Some(Located::at(s, s.position_for(offset)))
    }

    /// Finds the first segment holding a record at or after `timestamp_ms` (below `end`), and
    /// where in it to start scanning.
    fn locate_timestamp(&self, timestamp_ms: i64, end: u64) -> Option<Located> {
        let segments = read(&self.shared.segments);
        let s = segments
            .iter()
            .take_while(|s| s.base_offset < end)
            .find(|s| s.max_timestamp_ms >= timestamp_ms)?;
        Some(Located::at(s, s.position_for_timestamp(timestamp_ms)))
    }

    /// Blocks until [`Self::end_offset`] exceeds `above` (a record at offset `above` exists)
    /// or `timeout` passes; returns the end offset. This is the tail subscription's wake-up.
    pub fn wait_end_offset_above(&self, above: u64, timeout: Duration) -> u64 {
        if self.shared.is_closed() {
            return self.end_offset();
        }
        self.shared.acked.wait_above(above, timeout)
    }

    /// A future resolving once [`Self::end_offset`] exceeds `above` (or the log closes).
    pub fn end_offset_above(&self, above: u64) -> EndOffsetAbove {
        EndOffsetAbove::watermark(self.shared.clone(), above)
    }

    /// Deletes whole sealed segments beyond the stream's retention, by bytes and by age.
    /// Runs on its own from the writer thread after each segment roll and every 30 s; exposed
    /// so callers (and tests) can apply it at a chosen `now_ms`. Returns segments deleted.
    ///
    /// Bytes: the oldest segment is deleted while the others still hold at least
    /// `retention_bytes`. Age: a segment is deleted once its newest record timestamp is older
    /// than `now_ms - retention_ms`. The active segment is never deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        enforce_retention(&self.shared, now_ms)
    }

    /// Stops the writer after it has written and synced every queued append. Idempotent.
    pub(crate) fn close(&self) {
        write(&self.sender).take();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!(stream = %self.shared.stream, partition = self.shared.id, "writer thread panicked");
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.acked.wake_all();
        self.shared.queue_space.notify_all();
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens every segment of a partition directory, recovering the active one.
fn recover(storage: &dyn Storage, dir: &Path, partition: u32) -> Result<Vec<Segment>> {
    let entries = storage
        .list_dir(dir)
        .map_err(|e| LogError::io("list", dir, e))?;
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for path in entries {
        if path.extension().is_some_and(|e| e == "tmp") {
            storage
                .remove_file(&path)
                .map_err(|e| LogError::io("remove", &path, e))?;
        } else if let Some(base) = parse_file_name(&path, "log") {
            bases.push(base);
        } else if let Some(base) = parse_file_name(&path, "index") {
            indexes.push((base, path));
        }
    }
    bases.sort_unstable();
    for (base, path) in indexes {
        if bases.binary_search(&base).is_err() {
            // The segment was deleted (retention) and the crash came before its index went.
            storage
                .remove_file(&path)
                .map_err(|e| LogError::io("remove", &path, e))?;
        }
    }
    // A crash while a new segment was being created can leave it without a whole header
    // (its directory entry durable, its first bytes not): it never held a record.
    if let Some(&last) = bases.last() {
        let path = dir.join(segment::segment_file_name(last));
        if segment::creation_was_interrupted(storage, &path)? {
            tracing::warn!(segment = %path.display(), "removing a segment whose creation was interrupted");
            storage
                .remove_file(&path)
                .map_err(|e| LogError::io("remove", &path, e))?;
            let index = dir.join(index_file_name(last));
            let _ = storage.remove_file(&index);
            storage
                .sync_dir(dir)
                .map_err(|e| LogError::io("fsync directory", dir, e))?;
            bases.pop();
            if bases.is_empty() {
                return Ok(vec![Segment::create(storage, dir, partition, last)?]);
            }
        }
    }
    let Some((&active, sealed)) = bases.split_last() else {
        return Ok(vec![Segment::create(storage, dir, partition, 0)?]);
    };
    let mut segments = Vec::with_capacity(bases.len());
    for &base in sealed {
        segments.push(Segment::open_sealed(storage, dir, partition, base)?);
    }
    segments.push(Segment::open_active(storage, dir, partition, active)?);
    for pair in segments.windows(2) {
        if pair[0].next_offset != pair[1].base_offset {
            return Err(LogError::Corrupt {
                path: pair[1].path.clone(),
                file_offset: 0,
                reason: format!(
                    "segment starts at offset {} but the previous one ends at {}",
                    pair[1].base_offset, pair[0].next_offset
                ),
            });
        }
    }
    Ok(segments)
}

fn enforce_retention(shared: &Shared, now_ms: i64) -> Result<usize> {
    let config = *read(&shared.config.retention);
    if !config.is_limited() {
        return Ok(0);
    }
    let victims: Vec<Segment> = {
        let mut segments = write(&shared.segments);
        let mut total: u64 = segments.iter().map(|s| s.len).sum();
        let mut count = 0;
        while count + 1 < segments.len() {
            let oldest = &segments[count];
            let by_bytes = config
                .retention_bytes
                .is_some_and(|max| total - oldest.len >= max);
            let by_age = config.retention_ms.is_some_and(|ms| {
                let limit = now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
                oldest.max_timestamp_ms < limit
            });
            if !(by_bytes || by_age) {
                break;
            }
            total -= oldest.len;
            count += 1;
        }
        segments.drain(..count).collect()
    };
    for segment in &victims {
        shared
            .storage
            .remove_file(&segment.path)
            .map_err(|e| LogError::io("remove", &segment.path, e))?;
        let index = shared.dir.join(index_file_name(segment.base_offset));
        match shared.storage.remove_file(&index) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io("remove", &index, e)),
        }
        tracing::info!(segment = %segment.path.display(), "deleted by retention");
    }
    if !victims.is_empty() {
        shared
            .storage
            .sync_dir(&shared.dir)
            .map_err(|e| LogError::io("fsync directory", &shared.dir, e))?;
        shared
            .stats
            .segments_deleted
            .fetch_add(victims.len() as u64, Ordering::Relaxed);
    }
    Ok(victims.len())
}

/// The writer thread of one partition.
struct Writer {
    shared: Arc<Shared>,
    buf: Vec<u8>,
    /// Bytes written but not yet fsynced.
    unsynced: bool,
    last_sync: Instant,
    last_retention: Instant,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Self {
        Writer {
            shared,
            // Grown as groups need it, not up front: a 4 MiB buffer per partition, freed when
            // the partition closes, raised glibc's mmap threshold, and from then on every
            // partition's allocations stayed in malloc arenas after their stream was dropped
            // (RSS grew with each create/drop cycle of wide streams; issue 17, item 6).
            buf: Vec::new(),
            unsynced: false,
            last_sync: Instant::now(),
            last_retention: Instant::now(),
        }
    }

    fn run(mut self, rx: Receiver<Request>) {
        let mut group: Vec<Request> = Vec::new();
        loop {
            match rx.recv_timeout(self.next_wakeup()) {
                Ok(request) => group.push(request),
                Err(RecvTimeoutError::Timeout) => {
                    self.periodic();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let mut bytes = group[0].batch.len();
            while bytes < GROUP_COMMIT_BYTES_MAX {
                match rx.try_recv() {
                    Ok(request) => {
                        bytes += request.batch.len();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
            self.shared.release_queue_bytes(bytes as u64);
            self.periodic();
        }
        if self.unsynced
            && self.shared.poison_cause().is_none()
            && let Err(e) = self.sync()
        {
            tracing::error!(error = %e, "final fsync at close failed");
        }
    }

    fn next_wakeup(&self) -> Duration {
        let retention = RETENTION_CHECK_INTERVAL.saturating_sub(self.last_retention.elapsed());
        match self.shared.config.fsync {
            FsyncPolicy::Interval { interval_ms } if self.unsynced => {
                Duration::from_millis(interval_ms)
                    .saturating_sub(self.last_sync.elapsed())
                    .min(retention)
            }
            _ => retention,
        }
    }

    /// Interval syncs and retention, due or not.
    fn periodic(&mut self) {
        if let FsyncPolicy::Interval { interval_ms } = self.shared.config.fsync
            && self.unsynced
            && self.last_sync.elapsed() >= Duration::from_millis(interval_ms)
            && self.shared.poison_cause().is_none()
            && let Err(e) = self.sync()
        {
            self.poison(&e);
        }
        if self.last_retention.elapsed() >= RETENTION_CHECK_INTERVAL {
            self.last_retention = Instant::now();
            self.retention();
        }
    }

    fn retention(&self) {
        if let Err(e) = enforce_retention(&self.shared, self.shared.clock.now_ms()) {
            tracing::warn!(stream = %self.shared.stream, partition = self.shared.id, error = %e, "retention failed; will retry");
        }
    }

    fn poison(&self, error: &LogError) {
        let mut poisoned = self
            .shared
            .poisoned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if poisoned.is_none() {
            tracing::error!(stream = %self.shared.stream, partition = self.shared.id, %error, "partition poisoned: no writes until reopened");
            *poisoned = Some(error.to_string());
        }
    }

    /// Writes one group, makes it durable as the policy says, acknowledges it.
    fn commit(&mut self, group: &mut Vec<Request>) {
        if let Some(cause) = self.shared.poison_cause() {
            for request in group.drain(..) {
                let error = self.shared.poisoned_error(cause.clone());
                if let Some(hook) = request.hook {
                    hook.run(Err(&error));
                }
                request.completer.complete(Err(error));
            }
            return;
        }
        self.refuse_unmet_conditions(group);
        if group.is_empty() {
            return;
        }
        let result = self.write_group(group).and_then(|(next, rolled)| {
            if self.shared.config.fsync == FsyncPolicy::Always {
                self.sync()?;
            }
            Ok((next, rolled))
        });
        match result {
            Ok((next, rolled)) => {
                let stats = &self.shared.stats;
                stats.groups.fetch_add(1, Ordering::Relaxed);
                stats
                    .appends
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                let first = self.shared.acked.get();
                stats.records.fetch_add(next - first, Ordering::Relaxed);
                let mut base = first;
                let mut acks = Vec::with_capacity(group.len());
                for request in group.iter_mut() {
                    let ack = AppendAck {
                        partition: self.shared.id,
                        base_offset: base,
                        record_count: request.batch.record_count(),
                    };
                    if let Some(hook) = request.hook.take() {
                        hook.run(Ok(ack));
                    }
                    acks.push(ack);
                    base += u64::from(ack.record_count);
                }
                assert_eq!(base, next, "acknowledged offsets must be dense");
                self.shared.acked.advance(next);
                for (request, ack) in group.drain(..).zip(acks) {
                    request.completer.complete(Ok(ack));
                }
                if rolled {
                    self.retention();
                }
            }
            Err(error) => {
                self.poison(&error);
                let (kind, message) = match &error {
                    LogError::Io { source, .. } => (source.kind(), error.to_string()),
                    other => (std::io::ErrorKind::Other, other.to_string()),
                };
                let path = match &error {
                    LogError::Io { path, .. } => path.clone(),
                    _ => PathBuf::new(),
                };
                for request in group.drain(..) {
                    let error = LogError::Io {
                        op: "append",
                        path: path.clone(),
                        source: std::io::Error::new(kind, message.clone()),
                    };
                    if let Some(hook) = request.hook {
                        hook.run(Err(&error));
                    }
                    request.completer.complete(Err(error));
                }
            }
        }
    }

    /// Fails, and takes out of the group, every append whose [`AppendCondition`] does not
    /// hold at the offset it would get; the rest keep their order. Nothing is written for
    /// them and the partition stays healthy (the writer is the only appender, so the end it
    /// checks against is the one the group will be written at).
    fn refuse_unmet_conditions(&self, group: &mut Vec<Request>) {
        if group.iter().all(|r| r.condition == AppendCondition::Always) {
            return;
        }
        let mut next = self.shared.acked.get();
        let mut kept = Vec::with_capacity(group.len());
        for request in group.drain(..) {
            match request.condition {
                AppendCondition::EndOffset(expected) if expected != next => {
                    let error = LogError::EndOffsetMismatch {
                        stream: self.shared.stream.clone(),
                        partition: self.shared.id,
                        expected,
                        actual: next,
                    };
                    if let Some(hook) = request.hook {
                        hook.run(Err(&error));
                    }
                    request.completer.complete(Err(error));
                }
                _ => {
                    next += u64::from(request.batch.record_count());
                    kept.push(request);
                }
            }
        }
        *group = kept;
    }

    /// Assigns offsets and writes the group's batches, rolling segments as needed. Returns
    /// the next offset after the group and whether a segment was rolled.
    fn write_group(&mut self, group: &mut [Request]) -> Result<(u64, bool)> {
        let shared = self.shared.clone();
        let (mut file, mut path, mut pos, mut next) = {
            let segments = read(&shared.segments);
            let Some(active) = segments.last() else {
                unreachable!("a partition always has an active segment");
            };
            (
                active.file.clone(),
                active.path.clone(),
                active.len,
                active.next_offset,
            )
        };
        let mut rolled = false;
        let mut headers = Vec::with_capacity(group.len());
        self.buf.clear();
        for request in group.iter_mut() {
            let batch_len = request.batch.len() as u64;
            let has_data = pos + self.buf.len() as u64 > format::SEGMENT_HEADER_BYTES as u64;
            if has_data && pos + self.buf.len() as u64 + batch_len > shared.config.segment_bytes_max
            {
                self.flush(&*file, &path, pos, &mut headers)?;
                let active = self.roll(next)?;
                file = active.0;
                path = active.1;
                pos = format::SEGMENT_HEADER_BYTES as u64;
                rolled = true;
            }
            request.batch.set_base_offset(next);
            headers.push(BatchHeader::parse(request.batch.bytes()));
            next += u64::from(request.batch.record_count());
            self.buf.extend_from_slice(request.batch.bytes());
        }
        self.flush(&*file, &path, pos, &mut headers)?;
        Ok((next, rolled))
    }

    /// Writes the buffered batches at `pos` and records them in the active segment.
    fn flush(
        &mut self,
        file: &dyn crate::storage::StorageFile,
        path: &Path,
        pos: u64,
        headers: &mut Vec<BatchHeader>,
    ) -> Result<u64> {
        if self.buf.is_empty() {
            return Ok(pos);
        }
        file.write_at(&self.buf, pos)
            .map_err(|e| LogError::io("write", path, e))?;
        self.unsynced = true;
        self.shared
            .stats
            .bytes_written
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        let mut segments = write(&self.shared.segments);
        let Some(active) = segments.last_mut() else {
            unreachable!("a partition always has an active segment");
        };
        assert_eq!(active.len, pos, "the writer is the only appender");
        for header in headers.drain(..) {
            active.note_appended(&header);
        }
        let new_pos = pos + self.buf.len() as u64;
        assert_eq!(active.len, new_pos);
        self.buf.clear();
        Ok(new_pos)
    }

    /// Seals the active segment (fsync, index file) and creates the next one at `base`.
    fn roll(&mut self, base: u64) -> Result<(Arc<dyn crate::storage::StorageFile>, PathBuf)> {
        self.sync()?;
        {
            let segments = read(&self.shared.segments);
            if let Some(active) = segments.last() {
                active.write_index(&*self.shared.storage, &self.shared.dir)?;
            }
        }
        let segment = Segment::create(
            &*self.shared.storage,
            &self.shared.dir,
            self.shared.id,
            base,
        )?;
        let handle = (segment.file.clone(), segment.path.clone());
        write(&self.shared.segments).push(segment);
        Ok(handle)
    }

    /// fdatasync of the active segment; advances the durable offset.
    fn sync(&mut self) -> Result<()> {
        let (file, path, next) = {
            let segments = read(&self.shared.segments);
            let Some(active) = segments.last() else {
                unreachable!("a partition always has an active segment");
            };
            (active.file.clone(), active.path.clone(), active.next_offset)
        };
        let started = Instant::now();
        file.sync_data()
            .map_err(|e| LogError::io("fsync", &path, e))?;
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let stats = &self.shared.stats;
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        stats.sync_us_total.fetch_add(us, Ordering::Relaxed);
        self.shared.durable.store(next, Ordering::Release);
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }
}
