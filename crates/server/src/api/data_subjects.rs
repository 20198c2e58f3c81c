//! Data subjects (issue 19, decision 0030): `GET /v1/data-subjects/{id}` — the subject's
//! state and the streams an erasure would touch (the CLI's dry run) — and
//! `DELETE /v1/data-subjects/{id}`, the erasure: its record appended to `_data_subjects`,
//! then its key destroyed ([`crate::privacy::Privacy::erase`]). Both need the scope
//! `data_subjects:erase` (which `admin` covers). `GET /v1/data-subjects/{id}/export` (scope
//! `data_subjects:export`: it reads every personal stream) — the right of access: every
//! record about the subject, decrypted, as JSON Lines.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use logbook_api::data_subjects::{DataSubject, ExportLine, KeyState};
use logbook_api::paths::route;

use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{Path, blocking};
use crate::limits;
use crate::privacy::{self, fields};
use crate::state::{AppState, Opened};

use super::Params;

/// 400 `invalid_data_subject` for an id of the wrong shape.
fn check_id(id: &str) -> Result<(), ApiError> {
    fields::check_subject(id).map_err(|reason| {
        ApiError::new(
            ProblemCode::InvalidDataSubject,
            format!("data subject id {id:?}: {reason}"),
        )
        .field("id")
    })
}

fn answer(opened: &Opened, id: String, state: privacy::KeyState) -> DataSubject {
    let log = &opened.log;
    let streams = log
        .stream_names()
        .into_iter()
        .filter(|n| {
            log.stream(n)
                .is_ok_and(|s| s.config().personal_data.is_some())
        })
        .collect();
    DataSubject {
        subject: id,
        key: match state {
            privacy::KeyState::Live => KeyState::Live,
            privacy::KeyState::Erased => KeyState::Erased,
            privacy::KeyState::None => KeyState::None,
        },
        streams,
    }
}

/// A data subject's state and the streams declaring personal data: what an erasure would
/// make unreadable. Changes nothing.
#[utoipa::path(get, path = route::DATA_SUBJECT, tag = "data subjects",
    params(("id" = String, Path, description = "The data subject's id: 1..=64 bytes of [A-Za-z0-9._:@-]")),
    responses((status = 200, body = DataSubject),
        (status = 400, description = "`invalid_data_subject`: the id's shape", body = Problem, content_type = "application/problem+json")))]
pub async fn get_data_subject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Json<DataSubject>, ApiError> {
    q.only(&[])?;
    check_id(&id)?;
    let opened = state.opened()?;
    let key = opened.privacy.state(&id);
    Ok(Json(answer(&opened, id, key)))
}

/// Erases a data subject: an erasure record (without personal data) is appended to the
/// internal stream `_data_subjects` and fsynced, then the subject's key is destroyed
/// (its slot in the key store overwritten and fdatasynced). From then on every personal
/// field of the subject reads as `{"erased": true}`, in every copy of the log. Idempotent:
/// erasing an erased (or unknown) subject changes nothing and answers the same.
#[utoipa::path(delete, path = route::DATA_SUBJECT, tag = "data subjects",
    params(("id" = String, Path, description = "The data subject's id: 1..=64 bytes of [A-Za-z0-9._:@-]")),
    responses((status = 200, description = "Erased (`key`: `erased`), or nothing of it was stored (`none`)", body = DataSubject),
        (status = 400, description = "`invalid_data_subject`: the id's shape", body = Problem, content_type = "application/problem+json")))]
pub async fn erase_data_subject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Json<DataSubject>, ApiError> {
    q.only(&[])?;
    check_id(&id)?;
    let opened = state.opened()?;
    let (privacy, subject) = (opened.privacy.clone(), id.clone());
    let now_ms = logbook_log::Clock::now_ms(&logbook_log::SystemClock);
    // Appends and fsyncs, then overwrites and fdatasyncs: off the worker.
    let key = blocking(move || privacy.erase(&subject, now_ms))
        .await?
        .map_err(|e| ApiError::from_privacy(e, 0, |_| String::new()))?;
    Ok(Json(answer(&opened, id, key)))
}

/// Most bytes of an export's answer (64 MiB); a larger one is refused (413
/// `answer_too_large`) rather than held in memory.
pub const EXPORT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Every record about a data subject (the right of access): each stream declaring personal
/// data is read whole, and each record whose subject is `id` is one line of JSON Lines,
/// `{"stream", "partition", "offset", "key", "value", "headers", "timestamp_ms"}`, its
/// personal fields decrypted — or `{"erased": true}` once the subject is erased. Streams in
/// name order, records in partition and offset order. A full scan of those streams: cost
/// grows with them, not with the subject.
#[utoipa::path(get, path = route::DATA_SUBJECT_EXPORT, tag = "data subjects",
    params(("id" = String, Path, description = "The data subject's id: 1..=64 bytes of [A-Za-z0-9._:@-]")),
    responses((status = 200, description = "JSON Lines: one record about the subject per line, with its stream, partition and offset (empty: none)", content_type = "application/jsonl"),
        (status = 400, description = "`invalid_data_subject`: the id's shape", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`answer_too_large`: more than 64 MiB of records", body = Problem, content_type = "application/problem+json")))]
pub async fn export_data_subject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    q.only(&[])?;
    check_id(&id)?;
    let opened = state.opened()?;
    let lines = blocking(move || export(&opened, &id)).await??;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/jsonl")],
        lines,
    )
        .into_response())
}

fn export(opened: &Opened, id: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut names = opened.log.stream_names();
    names.sort_unstable();
    for name in names {
        let Ok(stream) = opened.log.stream(&name) else {
            continue; // dropped meanwhile
        };
        let Some(reveal) = super::streams::Reveal::of(&*stream, opened) else {
            continue;
        };
        let subject_at = reveal.subject_pointer().to_string();
        for p in 0..stream.config().partitions {
            let part = stream
                .partition(p)
                .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
            let mut from = part.start_offset();
            loop {
                let batch = part
                    .read(from, 1000, limits::READ_BYTES_MAX)
                    .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
                let Some(last) = batch.last() else { break };
                from = last.offset + 1;
                for r in batch {
                    let about = serde_json::from_slice::<serde_json::Value>(&r.value)
                        .ok()
                        .is_some_and(|v| {
                            fields::subject_of(&v, &subject_at).is_ok_and(|s| s == id)
                        });
                    if !about {
                        continue;
                    }
                    let line = ExportLine {
                        stream: name.clone(),
                        record: super::streams::record_out(p, r, Some(&reveal)),
                    };
                    serde_json::to_writer(&mut out, &line)
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    out.push(b'\n');
                    if out.len() > EXPORT_BYTES_MAX {
                        return Err(ApiError::new(
                            ProblemCode::AnswerTooLarge,
                            format!("the export of {id:?} is more than {EXPORT_BYTES_MAX} bytes"),
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}
