//! # logbook-views: derived views maintained from streams, exactly once
//!
//! A *view* is read-optimised data computed from one stream by a deterministic processor:
//! a **table** (latest value per key), an **index** (field values → primary keys) or an
//! **aggregate** (`count`, `sum`, `min`, `max`, `avg`, `count_distinct` per group), each with
//! an optional filter. Views are defined by JSON specs (`docs/views.md`), kept current by one
//! processor per view version and source partition, and can be rebuilt from offset 0 while
//! the current version serves.
//!
//! ```
//! use std::sync::Arc;
//! use logbook_log::{Log, Record, StreamConfig};
//! use logbook_views::{ReadOptions, Views, token_of};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let log = Arc::new(Log::open(dir.path().join("data"))?);
//! let flights = log.create_stream("flights", StreamConfig::with_partitions(2))?;
//! let views = Views::open(log.clone(), &dir.path().join("views"))?;
//! views.create("by_carrier", br#"{"source":"flights","kind":"aggregate",
//!     "group_by":["carrier"],"aggregates":{"n":{"fn":"count"}}}"#)?;
//! let positions = flights
//!     .append_batch(vec![Record::keyed("f1", r#"{"carrier":"UA"}"#)])?
//!     .wait()?;
//! // Read your write: wait (≤ 1 s) until the view has applied it.
//! let token = token_of(&*flights, &positions).encode()?;
//! let read = views.get("by_carrier", "UA", &ReadOptions { token: Some(token), timeout_ms: 1000 })?;
//! assert_eq!(read.rows[0].value["n"], 1);
//! # Ok(()) }
//! ```
//!
//! It is **not** a query engine: reads are point lookups and key-range scans of rows that
//! processors computed when the records were written (docs/DESIGN.md rule 3).
//!
//! Module map, in data-flow order: [`spec`] (what a view computes) → [`processor`] (threads
//! that consume the log) → [`apply`] (the deterministic state machine) → [`layout`] (state
//! bytes) → [`state`] (state in memory, checkpoints) → [`store`] (the key-value seam) →
//! [`read`] (merging partitions, digests) →
//! [`engine`] (catalog, tokens, rebuild, rollout) → [`audit`] (a view recomputed from the log
//! and compared by digest with its stored checkpoints and its live state) → [`auditor`]
//! (the background thread running it for every view); [`value`] defines how JSON values compare
//! and encode; [`token`] the consistency tokens; [`limits`] every limit. Beside the views,
//! [`derived`]: derived streams, processors whose output is records of another stream.

pub mod apply;
pub mod audit;
pub mod auditor;
pub mod batch;
mod catalog;
pub mod derived;
pub mod engine;
mod error;
pub mod extract;
mod hash;
pub mod layout;
pub mod limits;
pub mod processor;
pub mod read;
pub mod spec;
pub mod state;
pub mod store;
pub mod token;
pub mod value;

pub use audit::{AuditOptions, AuditReport, CheckpointReport, RowDifference, Verdict};
pub use auditor::{AuditorConfig, AuditorStatus, AuditorThread, ViewAuditStatus};
pub use engine::{
    BelowRetention, Progress, ReadOptions, ReadResult, RetentionGap, Rollout, VersionStatus,
    ViewInfo, ViewStatus, Views, validate_view_name,
};
pub use error::{Result, ViewError};
pub use read::{Digest, Row, ScanRange};
pub use spec::{Plan, Semantics, ViewSpec};
pub use state::ViewsConfig;
pub use token::{ConsistencyToken, token_of};
