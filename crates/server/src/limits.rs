//! Every limit of the HTTP edge, in one place, with the relations between them checked at
//! compile time at the bottom of this file.
//!
//! Each limit answers with a named problem (see [`crate::error`]) and changes nothing: a
//! request refused at the edge never reaches the log or the transaction store. Limits of the
//! data itself (record, key, batch bytes) are the libraries' own
//! ([`logbook_log::limits`], [`logbook_txn::limits`]) and are checked again there.

use logbook_log::limits as log_limits;

/// The limits of the API contract, defined in `logbook-api` so clients share them.
pub use logbook_api::limits::{
    BATCH_RECORDS_MAX, BODY_BYTES_MAX, KV_READ_ANSWER_BYTES_MAX, READ_RECORDS_DEFAULT,
    READ_RECORDS_MAX, READ_WAIT_MS_MAX, SCAN_ROWS_DEFAULT, SCAN_ROWS_MAX, SSE_HEARTBEAT_MS_DEFAULT,
    TOKEN_BYTES_MAX, VIEW_READ_TIMEOUT_MS_DEFAULT, VIEW_SWITCH_TIMEOUT_MS_DEFAULT,
};

/// Most data keys (data subjects with a live or torn slot) the embedded key store holds:
/// 16 Mi slots of 192 bytes, a 3 GiB file (decision 0030).
pub const DATA_KEYS_MAX: u64 = 16 * 1024 * 1024;

/// Largest total of request header names and values, in bytes (16 KiB). Larger: 431
/// `headers_too_large`.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// hyper's read buffer per connection, in bytes (128 KiB). It never fills with an
/// incomplete head: the head guard ([`crate::head`]) refuses a head over
/// [`HEAD_BYTES_MAX`] first, so every oversized head gets a problem answer, not hyper's bare
/// 431 or a reset.
pub const HTTP1_BUF_BYTES: usize = 128 * 1024;
/// Most bytes one read from a socket hands to hyper (64 KiB): what hyper may hold of a
/// pipelined client's next head before the guard starts counting it.
pub const READ_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Longest request target (path and query), in bytes (16 KiB; a key in the URL is at most
/// 4 KiB). Longer: 414 `uri_too_long` — by the edge when the request line is within
/// [`REQUEST_LINE_BYTES_MAX`], by the head guard beyond.
pub const URI_BYTES_MAX: usize = 16 * 1024;
/// Longest request line the head guard lets through, in bytes: [`URI_BYTES_MAX`] and room
/// for the method and version. Longer: 414 `uri_too_long`, on any request of a connection.
pub const REQUEST_LINE_BYTES_MAX: usize = URI_BYTES_MAX + 64;
/// Longest request head the head guard lets through, in bytes (40 KiB: a request line and
/// headers at their limits, with room for line ends). Longer: 431 `headers_too_large`.
pub const HEAD_BYTES_MAX: usize = 40 * 1024;
/// Most header lines in a request (100, hyper's own count). More: 431 `headers_too_large`.
pub const HEADER_LINES_MAX: usize = 100;
/// hyper's default most headers per request (its `DEFAULT_MAX_HEADERS`), which the server
/// keeps rather than setting `max_headers` (that costs a heap array per parsed head).
pub const HYPER_HEADERS_MAX_DEFAULT: usize = 100;
/// Most bytes of an over-long request head read (and dropped) before the answer, so that
/// the client reads the answer instead of a reset (4 MiB); a longer head's client may see
/// the connection reset instead.
pub const HEAD_DRAIN_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Default time a client has to send a complete request head, in ms (10 s; slow-loris
/// guard). hyper's timer runs from the moment a connection waits for a head, so it is also
/// the keep-alive idle timeout: a connection that sends nothing for this long is closed.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time a request body may take to arrive before the minimum rate counts, in ms
/// (10 s): a body must arrive within this plus one second per
/// [`BODY_RATE_MIN_BYTES_PER_S_DEFAULT`] bytes received, else 408 `body_timeout`.
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default least rate of a request body once its first [`BODY_READ_TIMEOUT_MS_DEFAULT`] are
/// spent, in bytes per second (16 KiB/s: a body of [`BODY_BYTES_MAX`] may take ~17 min).
pub const BODY_RATE_MIN_BYTES_PER_S_DEFAULT: u64 = 16 * 1024;
/// Default most open TCP connections (1,024). One more is answered 503 `too_many_connections`
/// and closed.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// Default most open connections from one client address (256, a quarter of
/// [`CONNECTIONS_MAX_DEFAULT`]): one more is answered 429 `connection_quota_exceeded`.
pub const CONNECTIONS_PER_CLIENT_MAX_DEFAULT: usize = 256;
/// Connections kept for health checks and scrapes (`/v1/health`, `/metrics`) beyond
/// `connections_max` and the per-client cap: a client refused a connection is given one of
/// these, which answers one request — a probe; any other route gets the refusal.
pub const PROBE_CONNECTIONS: usize = 16;
/// Probe connections one client address may hold, so that one cannot take the reserve.
pub const PROBE_CONNECTIONS_PER_CLIENT: usize = 2;
/// Longest a new client waits, in ms, for the slot of an idle keep-alive connection asked to
/// close because the node is full ([`crate::idle`]; it closes at its reader's next poll, so
/// the wait is normally a scheduling delay). Past it: a probe connection or the refusal.
pub const EVICTION_WAIT_MS: u64 = 1_000;
/// Time a probe connection has to send its request head, in ms.
pub const PROBE_HEADER_READ_TIMEOUT_MS: u64 = 2_000;
/// Default node-wide budget of partitions, internal streams' included (2,048): each costs
/// a writer thread, a file descriptor and ~340 KB, so the default keeps a node within
/// ~2,000 threads and ~0.7 GB for partitions. One stream more: 409 `too_many_partitions`.
pub const PARTITIONS_MAX_DEFAULT: u32 = 2048;
/// Default rate of the segment scrubber, in MB (10^6 bytes) per second (4): a pass over
/// 100 GB of sealed segments takes about 7 hours, at a cost a disk does not notice.
pub const SCRUB_RATE_MB_PER_S_DEFAULT: u64 = 4;
/// Largest accepted `scrub_rate_mb_per_s` (10,000: 10 GB/s, beyond any disk; keeps the
/// rate in bytes far from overflow).
pub const SCRUB_RATE_MB_PER_S_MAX: u64 = 10_000;
/// Default bound on a cluster node's clock offset from the cluster's median, in ms (500,
/// CockroachDB's default): beyond it the node stops leading and taking writes.
pub const MAX_CLOCK_OFFSET_MS_DEFAULT: u64 = 500;
/// Largest accepted `max_clock_offset_ms` (a minute: beyond that, clocks are not watched
/// but ignored).
pub const MAX_CLOCK_OFFSET_MS_MAX: u64 = 60_000;
/// Default φ at or above which a cluster node suspects a peer (8: one chance in 10⁸ that
/// the suspicion is a mistake; Akka's and Cassandra's default).
pub const PHI_THRESHOLD_DEFAULT: u32 = 8;
/// Smallest accepted `phi_threshold` (1: a 10 % chance that a suspicion is a mistake).
pub const PHI_THRESHOLD_MIN: u32 = 1;
/// Largest accepted `phi_threshold` (16: one chance in 10¹⁶, as near to never as an f64's
/// precision tells apart).
pub const PHI_THRESHOLD_MAX: u32 = 16;
/// Default interval between the heartbeats a cluster node sends each peer, in ms (500).
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 500;
/// Shortest accepted `heartbeat_interval_ms` (50): each heartbeat is an HTTP request per
/// peer, so shorter ones cost CPU for no better detection than the network's jitter allows.
pub const HEARTBEAT_INTERVAL_MS_MIN: u64 = 50;
/// Longest accepted `heartbeat_interval_ms` (2 000): a fifth of the etcd lease (10 s), so a
/// paused leader is suspected from several missed heartbeats well before its lease expires.
pub const HEARTBEAT_INTERVAL_MS_MAX: u64 = 2_000;
const _: () = assert!(HEARTBEAT_INTERVAL_MS_DEFAULT >= HEARTBEAT_INTERVAL_MS_MIN);
const _: () = assert!(HEARTBEAT_INTERVAL_MS_DEFAULT <= HEARTBEAT_INTERVAL_MS_MAX);
const _: () = assert!(PHI_THRESHOLD_MIN <= PHI_THRESHOLD_DEFAULT);
const _: () = assert!(PHI_THRESHOLD_DEFAULT <= PHI_THRESHOLD_MAX);
/// Default seconds between the view auditor's rounds (3,600: every view recomputed once an
/// hour, at the pace below).
pub const AUDIT_INTERVAL_S_DEFAULT: u64 = 3600;
/// Largest accepted `audit_interval_s` (a week).
pub const AUDIT_INTERVAL_S_MAX: u64 = 7 * 24 * 3600;
/// Default pace of one view's recomputation by the auditor, records per second (10,000:
/// a fraction of what one processor applies, so the audit costs little of a core).
pub const AUDIT_RECORDS_PER_S_DEFAULT: u64 = 10_000;
/// Default memory budget of one audit, bytes (1 GiB, the default state budget of one view
/// processor): views up to about that size are audited; a larger one is skipped with a
/// note rather than doubling the node's memory for it.
pub const AUDIT_MEMORY_BYTES_MAX_DEFAULT: u64 = 1 << 30;
/// Default most requests handled at once (256). One more: 503 `server_busy` with
/// `Retry-After`.
pub const REQUESTS_MAX_DEFAULT: usize = 256;
/// Default most requests of one principal handled at once (128, half of
/// [`REQUESTS_MAX_DEFAULT`]). One more: 429 `principal_quota_exceeded`.
pub const REQUESTS_PER_PRINCIPAL_MAX_DEFAULT: usize = 128;
/// Default most connections one principal sends requests over (256). A request over one
/// more: 429 `principal_quota_exceeded`, and that connection closes.
pub const CONNECTIONS_PER_PRINCIPAL_MAX_DEFAULT: usize = 256;
/// Default most long polls waiting at once (256): record reads with `wait_ms`, reads that
/// wait for a consistency `token`. They hold no request slot ([`REQUESTS_MAX_DEFAULT`]),
/// only one of these. One more: 429 `long_poll_budget_exhausted`.
pub const LONG_POLLS_MAX_DEFAULT: usize = 256;
/// Default most interactive transactions open at once (1,000). One more: 429
/// `too_many_transactions`.
pub const OPEN_TXNS_MAX_DEFAULT: usize = 1000;
/// Default most interactive transactions one principal holds open (250, a quarter of
/// [`OPEN_TXNS_MAX_DEFAULT`]). One more: 429 `transaction_quota_exceeded`.
pub const TXNS_PER_PRINCIPAL_MAX_DEFAULT: usize = 250;
/// Default idle timeout of an interactive transaction, in ms (30 s): a transaction with no
/// request for this long is aborted by the reaper; later requests get 410
/// `transaction_expired`.
pub const TXN_IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How often the reaper looks for idle transactions, in ms.
pub const REAPER_INTERVAL_MS: u64 = 500;
/// Ids of ended transactions remembered with how they ended (so late requests hear
/// "committed", "aborted" or "expired", not "unknown").
pub const ENDED_TXNS_REMEMBERED: usize = 10_000;
/// Default time in-flight requests get to finish at shutdown, in ms (30 s).
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 30_000;
/// Threads for blocking library calls (appends waiting for fsync, commits).
pub const BLOCKING_THREADS_MAX: usize = 256;
/// A record read stops after about this many bytes of keys and values (4 MiB).
pub const READ_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most push-tail subscriptions (`GET .../records/events`) open at once (64). They hold no
/// request slot ([`REQUESTS_MAX_DEFAULT`]) while they stream, only one of these. One more:
/// 429 `subscription_budget_exhausted` with `Retry-After`.
pub const SUBSCRIPTIONS_MAX: usize = 64;
/// Events one subscription may have waiting for its client (4,096: about four reads, one
/// kept for the last event). A client that takes nothing from a full queue for `stall_ms`
/// is dropped with `event: dropped`.
pub const SSE_QUEUE_EVENTS: usize = 4096;
/// Bytes of events one subscription may have waiting for its client (4 MiB; one larger
/// event still goes out alone). More ends the subscription with `event: dropped`.
pub const SSE_QUEUE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes a subscription's body hands to hyper beyond what has reached the socket (256 KiB):
/// hyper's own write buffer is not bounded under `pipeline_flush`, so the body bounds it.
pub const SSE_UNFLUSHED_BYTES_MAX: usize = 256 * 1024;
/// Records one subscription reads from a partition at a time (one chunk of events): as many
/// as one long poll's page (1,000).
pub const SSE_READ_RECORDS: usize = logbook_api::limits::READ_RECORDS_MAX;
/// Bytes of keys and values one subscription reads from a partition at a time (about 1 MiB;
/// at least one record).
pub const SSE_READ_BYTES_MAX: usize = 1024 * 1024;
/// Partitions one subscription reads side by side (4): its reads in hand beside its queue
/// are at most this many of [`SSE_READ_BYTES_MAX`].
pub const SSE_READS_CONCURRENT: usize = 4;
/// Default time a subscription's client may take nothing from its full queue before it is
/// dropped as a slow consumer, in ms (30 s).
pub const SSE_STALL_MS_DEFAULT: u64 = 30_000;
/// Shortest `heartbeat_ms` or `stall_ms` a subscription may ask for, in ms.
pub const SSE_WAIT_MS_MIN: u64 = 100;
/// Longest `heartbeat_ms` or `stall_ms` a subscription may ask for, in ms (5 minutes).
pub const SSE_WAIT_MS_MAX: u64 = 300_000;
/// Consumer groups a node keeps (each is state in memory, derived from `_groups`).
pub const GROUPS_MAX: usize = 1024;
/// Members of one group.
pub const MEMBERS_PER_GROUP_MAX: usize = 256;
/// Default most consumer groups one principal's joins may have made and not yet deleted
/// (256, a quarter of [`GROUPS_MAX`]). One more: 429 `group_quota_exceeded`.
pub const GROUPS_PER_PRINCIPAL_MAX_DEFAULT: usize = 256;
/// Default most group members one principal may have joined, over every group (1,024: a
/// full group of [`MEMBERS_PER_GROUP_MAX`] four times over). One more: 429
/// `group_quota_exceeded`.
pub const GROUP_MEMBERS_PER_PRINCIPAL_MAX_DEFAULT: usize = 1024;
/// Request ids of accepted commits a group remembers, to answer a retried commit.
pub const COMMIT_IDS_PER_GROUP_MAX: usize = 10_000;
/// A member's session timeout, ms: least, most and default.
pub const GROUP_SESSION_TIMEOUT_MS_MIN: u64 = 500;
/// See [`GROUP_SESSION_TIMEOUT_MS_MIN`].
pub const GROUP_SESSION_TIMEOUT_MS_MAX: u64 = 300_000;
/// See [`GROUP_SESSION_TIMEOUT_MS_MIN`].
pub const GROUP_SESSION_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// How often the coordinator looks for members whose session timed out, and the longest a
/// cluster node that does not coordinate waits for `_groups` to grow before it looks again
/// whether it coordinates now, ms.
pub const GROUP_EXPIRY_CHECK_MS: u64 = 100;

const _: () = assert!(BATCH_RECORDS_MAX <= log_limits::BATCH_RECORDS_MAX as usize);
const _: () = assert!(BODY_BYTES_MAX <= log_limits::BATCH_BYTES_MAX as usize);
const _: () = assert!(logbook_api::limits::PARTITIONS_MAX == log_limits::PARTITIONS_MAX);
// The contract's scan limit is the transaction store's.
const _: () = assert!(logbook_api::limits::SCAN_ROWS_MAX == logbook_txn::limits::SCAN_ROWS_MAX);
const _: () = assert!(
    logbook_api::limits::STREAM_NAME_BYTES_MAX == log_limits::STREAM_NAME_BYTES_MAX as usize
);
// A read carries its token in the query: the largest token leaves most of the request
// target to the path and the rest of the query (a key in the URL is at most 4 KiB).
const _: () = assert!(TOKEN_BYTES_MAX <= URI_BYTES_MAX / 3);
// A head within the contract's limits passes the head guard (the edge answers the rest);
// hyper's buffer holds what the guard lets through plus one read from before the mark.
const _: () =
    assert!(REQUEST_LINE_BYTES_MAX + HEADER_BYTES_MAX + 4 * HEADER_LINES_MAX < HEAD_BYTES_MAX);
const _: () = assert!(READ_CHUNK_BYTES_MAX + HEAD_BYTES_MAX < HTTP1_BUF_BYTES);
const _: () = assert!(HEAD_BYTES_MAX < HEAD_DRAIN_BYTES_MAX);
// The head guard refuses a head with more header lines before hyper parses it, so hyper's
// own (bare 431) limit is never what answers.
const _: () = assert!(HEADER_LINES_MAX <= HYPER_HEADERS_MAX_DEFAULT);
// hyper refuses a read buffer below 8 KiB.
const _: () = assert!(HTTP1_BUF_BYTES >= 8192);
const _: () = assert!(READ_RECORDS_DEFAULT <= READ_RECORDS_MAX);
// The largest row fits a key-value answer alone, so a page always holds one: a scan's
// `next` moves on, and its first row is never `answer_too_large`.
const _: () = assert!(
    logbook_txn::limits::KEY_JSON_BYTES_MAX
        + logbook_txn::limits::VALUE_BYTES_MAX
        + logbook_txn::limits::READ_ROW_OVERHEAD_BYTES
        <= KV_READ_ANSWER_BYTES_MAX
);
const _: () = assert!(REQUESTS_MAX_DEFAULT <= BLOCKING_THREADS_MAX);
const _: () = assert!(REAPER_INTERVAL_MS < TXN_IDLE_TIMEOUT_MS_DEFAULT);
const _: () = assert!(SUBSCRIPTIONS_MAX < CONNECTIONS_MAX_DEFAULT);
// A quota below its node-wide limit is what leaves room for other clients.
const _: () = assert!(CONNECTIONS_PER_CLIENT_MAX_DEFAULT < CONNECTIONS_MAX_DEFAULT);
const _: () = assert!(CONNECTIONS_PER_PRINCIPAL_MAX_DEFAULT < CONNECTIONS_MAX_DEFAULT);
const _: () = assert!(REQUESTS_PER_PRINCIPAL_MAX_DEFAULT < REQUESTS_MAX_DEFAULT);
const _: () = assert!(TXNS_PER_PRINCIPAL_MAX_DEFAULT < OPEN_TXNS_MAX_DEFAULT);
const _: () = assert!(GROUPS_PER_PRINCIPAL_MAX_DEFAULT < GROUPS_MAX);
// One principal can fill a group by itself.
const _: () = assert!(GROUP_MEMBERS_PER_PRINCIPAL_MAX_DEFAULT >= MEMBERS_PER_GROUP_MAX);
const _: () = assert!(PROBE_HEADER_READ_TIMEOUT_MS <= HEADER_READ_TIMEOUT_MS_DEFAULT);
const _: () = assert!(PROBE_CONNECTIONS_PER_CLIENT < PROBE_CONNECTIONS);
const _: () = assert!(BODY_RATE_MIN_BYTES_PER_S_DEFAULT > 0);
const _: () = assert!(SSE_READ_RECORDS < SSE_QUEUE_EVENTS);
const _: () = assert!(SSE_READS_CONCURRENT >= 1);
// What one subscription's reads hold beside its queue is no more than one read of a request.
const _: () = assert!(SSE_READS_CONCURRENT * SSE_READ_BYTES_MAX <= READ_BYTES_MAX);
const _: () = assert!(SSE_WAIT_MS_MIN <= SSE_HEARTBEAT_MS_DEFAULT);
const _: () = assert!(SSE_HEARTBEAT_MS_DEFAULT <= SSE_WAIT_MS_MAX);
const _: () = assert!(SSE_WAIT_MS_MIN <= SSE_STALL_MS_DEFAULT);
const _: () = assert!(SSE_STALL_MS_DEFAULT <= SSE_WAIT_MS_MAX);
const _: () = assert!(GROUP_SESSION_TIMEOUT_MS_MIN <= GROUP_SESSION_TIMEOUT_MS_DEFAULT);
const _: () = assert!(GROUP_SESSION_TIMEOUT_MS_DEFAULT <= GROUP_SESSION_TIMEOUT_MS_MAX);
const _: () = assert!(GROUP_EXPIRY_CHECK_MS < GROUP_SESSION_TIMEOUT_MS_MIN);
const _: () = assert!(MEMBERS_PER_GROUP_MAX as u32 >= log_limits::PARTITIONS_MAX);

const _: () =
    assert!(logbook_api::limits::REQUEST_ID_BYTES_MAX == logbook_log::dedup::REQUEST_ID_BYTES_MAX);

const _: () = assert!(SCRUB_RATE_MB_PER_S_DEFAULT <= SCRUB_RATE_MB_PER_S_MAX);
