//! Data subjects (issue 19, decision 0030): the bodies of `GET` and `DELETE
//! /v1/data-subjects/{id}`.

use serde::{Deserialize, Serialize};

/// Whether a data subject's personal fields can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// The subject has a live key: its personal fields read as written.
    Live,
    /// The subject was erased: its personal fields read as `{"erased": true}`.
    Erased,
    /// No key and no erasure: no personal field of this subject was stored.
    None,
}

/// A data subject's state, and what an erasure would touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DataSubject {
    /// The subject's id.
    pub subject: String,
    /// Its key's state (after the erasure, for `DELETE`).
    pub key: KeyState,
    /// The streams declaring personal data: where its records may be. An erasure makes
    /// their personal fields of this subject unreadable everywhere.
    pub streams: Vec<String>,
}

/// One line of `GET /v1/data-subjects/{id}/export` (JSON Lines, `application/jsonl`): a
/// record about the subject, its personal fields decrypted, and where it came from (the
/// stream, and the record's partition and offset in it).
///
/// Serialize only: serde's `flatten` cannot hand the record's raw value back to a
/// deserializer, so a reader parses a line as a JSON object (`stream` plus
/// [`RecordOut`](crate::streams::RecordOut)'s members).
#[derive(Debug, Clone, Serialize)]
pub struct ExportLine {
    /// The stream holding the record.
    pub stream: String,
    /// The record as `GET /v1/streams/{stream}/records` shows it.
    #[serde(flatten)]
    pub record: crate::streams::RecordOut,
}
