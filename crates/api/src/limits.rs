//! The limits that are part of the API contract: what a client may send and what a server
//! answers with by default. The server enforces them (its `limits` module re-exports
//! these) and a client can check a request before sending it.

/// Largest request body, in bytes (16 MiB). Larger: 413 `payload_too_large`, refused from the
/// `Content-Length` before the body is read.
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Deepest nesting of arrays and objects in a JSON value the server stores (a record's
/// value, a kv value; 100 levels, the value itself being level 1). Deeper: 400
/// `not_i_json` naming the field. It leaves room for the envelope of every answer that
/// carries the value within the recursion limit of common JSON parsers (`serde_json`'s is
/// 128), so what the server stores its clients can read back.
pub const JSON_DEPTH_MAX: usize = 100;
/// Most records in one `POST /v1/streams/{stream}/records` (10,000). More: 413
/// `batch_too_many_records`.
pub const BATCH_RECORDS_MAX: usize = 10_000;
/// Default `limit` of a record read (100; at most [`READ_RECORDS_MAX`]).
pub const READ_RECORDS_DEFAULT: usize = 100;
/// Largest `limit` of a record read.
pub const READ_RECORDS_MAX: usize = 1000;
/// Most partitions of a stream (256); a stream has 1..=256.
pub const PARTITIONS_MAX: u32 = 256;
/// Longest stream name, in bytes (128).
pub const STREAM_NAME_BYTES_MAX: usize = 128;
/// Longest `wait_ms` of a record read (long poll), in ms (30 s).
pub const READ_WAIT_MS_MAX: u64 = 30_000;
/// Default `limit` of a key-value scan.
pub const SCAN_ROWS_DEFAULT: usize = 100;
/// Largest `limit` of a key-value scan (`GET /v1/kv`, `GET /v1/txns/{txn}/kv`): 10,000.
/// More: 400 naming `limit`.
pub const SCAN_ROWS_MAX: usize = 10_000;
/// Byte budget of one key-value answer (4 MiB) — `POST /v1/kv/read`, and the scans
/// `GET /v1/kv` and `GET /v1/txns/{txn}/kv`: each key and row costs its key and value bytes
/// plus 64. A range or scan that reaches it stops with `next` (fewer rows than its `limit`:
/// read on from `next`, at the same snapshot for a read); keys whose values pass it are 413
/// `answer_too_large`. It is above the largest row (a 1 KiB key and a 256 KiB value), so a
/// page always holds at least one row.
pub const KV_READ_ANSWER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest consistency token, in bytes of its text (4,286): a token naming one stream with
/// the longest name and every partition a stream may have (see [`crate::token`] for the
/// layout), so the token of any one stream's writes or reads is always representable.
pub const TOKEN_BYTES_MAX: usize = 3 + (TOKEN_ONE_STREAM_BINARY_BYTES * 4).div_ceil(3);
/// Bytes of the binary form of a token naming one stream at the limits: the stream count,
/// the name's length and the name, the incarnation, the entry count, and per partition its
/// number (4 bytes) and offset (8 bytes).
const TOKEN_ONE_STREAM_BINARY_BYTES: usize =
    1 + 1 + STREAM_NAME_BYTES_MAX + 8 + 2 + 12 * PARTITIONS_MAX as usize;
/// Largest request id (`Idempotency-Key`), in bytes; 1..=128 printable ASCII.
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// Default silence before a push-tail subscription sends a `: heartbeat` comment, in ms
/// (15 s); a client that hears nothing for longer may take the connection as lost.
pub const SSE_HEARTBEAT_MS_DEFAULT: u64 = 15_000;
/// How long a view read carrying a `token` waits by default for the view to apply it, ms.
pub const VIEW_READ_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// How long a switch or rollout waits by default for the target version to catch up, ms.
pub const VIEW_SWITCH_TIMEOUT_MS_DEFAULT: u64 = 10_000;

const _: () = assert!(READ_RECORDS_DEFAULT <= READ_RECORDS_MAX);
const _: () = assert!(SCAN_ROWS_DEFAULT <= SCAN_ROWS_MAX);
// The token's layout stores a name's length in one byte and the entry count in two.
const _: () = assert!(STREAM_NAME_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(PARTITIONS_MAX <= u16::MAX as u32);
/// Most bearer tokens a node keeps, revoked and expired ones included.
pub const TOKENS_MAX: usize = 10_000;
/// Most scopes on one token.
pub const TOKEN_SCOPES_MAX: usize = 64;
/// Longest principal name, bytes.
pub const PRINCIPAL_BYTES_MAX: usize = 128;
