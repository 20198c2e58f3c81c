//! Logbook's replicated log on NATS JetStream, and node membership through etcd.
//!
//! The distributed mode keeps the log in an existing replicated engine instead of a home-made
//! consensus: each Logbook partition is one JetStream stream (R3 by default, file storage,
//! `deny_delete`/`deny_purge`), each appended batch one NATS message carrying the same
//! CRC-framed bytes the embedded log writes ([`logbook_log::format`]), so group commit carries
//! over. This crate is the backend as a library; the `LogBackend` seam in the log crate and the
//! server's cluster mode (`logbook-server`'s feature `cluster`) runs on it. It is **not** part of
//! the default binary.
//!
//! ```text
//!   Logbook partition (stream, incarnation, p) ──hash──▶ JetStream stream LB_<hash>
//!   batch of n ≤ 65,536 records ──one message──▶ sequence s
//!   record i of it ──▶ offset (s − 1)·2^16 + i      (monotonic, gapped: [`offset`])
//!   nodes ──lease + keep-alive──▶ etcd /logbook/<cluster>/nodes/<id>   ([`membership`])
//! ```
//!
//! Module map: [`naming`] (stream names) → [`settings`] (stream configuration, the check that
//! an existing stream matches) → [`client`] (connect, create/open) → [`partition`] (append,
//! read, end offset; `resend`: an append whose leader died is sent again when a new one is
//! elected) → [`ack`] (what an acknowledgment guarantees); [`offset`] the mapping;
//! [`membership`] etcd; [`monitor`] the servers' HTTP monitoring endpoints; [`tls`] TLS to
//! NATS and etcd; [`limits`].
//!
//! What an acknowledgment means depends on the server — see [`ack`] and
//! `docs/decisions/0010-jetstream-backend.md`: with Debian's nats-server 2.9.10 it is
//! "replicated to a majority, not fsynced".
//!
//! ```no_run
//! # async fn demo() -> Result<(), logbook_jetstream::JetStreamError> {
//! use logbook_jetstream::{AppendOptions, ConnectSettings, JetStreamLog, PartitionRef, PartitionSettings};
//! use logbook_log::{Record, format::encode_batch};
//!
//! let log = JetStreamLog::connect(&ConnectSettings::new(["nats://127.0.0.1:4222"])).await?;
//! let partition = log
//!     .create_partition(&PartitionRef::new("orders", 1, 0), &PartitionSettings::default())
//!     .await?;
//! let batch = encode_batch(&[Record::keyed("customer-7", "{\"total\": 42}")], 0)
//!     .expect("a valid batch");
//! let options = AppendOptions { message_id: Some("order-1001:0".into()), ..Default::default() };
//! let appended = partition.append(&batch, &options).await?;
//! let records = partition.read(appended.base_offset, 100).await?;
//! assert_eq!(records[0].offset, appended.base_offset);
//! # Ok(())
//! # }
//! ```

pub mod ack;
mod api;
pub mod backend;
pub mod client;
pub mod election;
pub mod error;
pub mod limits;
pub mod membership;
pub mod monitor;
pub mod naming;
pub mod offset;
pub mod partition;
mod resend;
pub mod settings;
pub mod tls;

// Unit tests that need real servers start them with the integration tests' harness, which
// names this crate by its package name.
#[cfg(test)]
extern crate self as logbook_jetstream;
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_cluster;

pub use ack::AckGuarantee;
pub use backend::{BackendSettings, JetStreamBackend};
pub use client::{ConnectSettings, JetStreamLog};
pub use error::{JetStreamError, Result};
pub use naming::PartitionRef;
pub use partition::{AppendOptions, Appended, JetStreamPartition, Message, PartitionState};
pub use settings::PartitionSettings;
pub use tls::ClientTls;
