//! Data subjects (issue 19, decision 0030): `GET /v1/data-subjects/{id}` — the subject's
//! state and the streams an erasure would touch (the CLI's dry run) — and
//! `DELETE /v1/data-subjects/{id}`, the erasure: its record appended to `_data_subjects`,
//! then its key destroyed ([`crate::privacy::Privacy::erase`]). Both need the scope
//! `data_subjects:erase` (which `admin` covers).

use axum::Json;
use axum::extract::State;
use logbook_api::data_subjects::{DataSubject, KeyState};
use logbook_api::paths::route;

use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{Path, blocking};
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
