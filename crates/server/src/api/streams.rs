//! Streams and records: `PUT/GET/DELETE /v1/streams/{stream}`, `GET /v1/streams`,
//! `PUT /v1/streams/{stream}/retention`, `POST/GET /v1/streams/{stream}/records`,
//! `GET /v1/streams/{stream}/offsets`.
//!
//! Appends without an `Idempotency-Key` go through [`logbook_log::LogStream::try_append_batch`]:
//! every record checked against every limit before any batch is queued, queued without
//! blocking (the blocking pool only when a writer's queue is full), then awaited as a future,
//! so no thread waits for the fsync. Appends with one go through
//! [`logbook_log::LogStream::append_with_id`] on the blocking pool (its outcome is not a future
//! yet).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use logbook_api::paths::route;
use logbook_api::streams::{
    AckGuarantee, AppendAnswer, AppendBody, AppendMany, AppendOne, BelowRetention, CreateStream,
    OffsetAtTime, OffsetsAtTime, PartitionOffsets, PersonalData, PositionOut, ReaderKind, RecordIn,
    RecordOut, RecordsOut, Retention, StreamInfo, StreamLimits, StreamList,
};
use logbook_log::{FsyncPolicy, LogError, LogPartition, LogStream, Position, Record, StreamConfig};

use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{JsonBody, Path, Tracking, blocking};
use crate::limits;
use crate::state::{AppState, Opened, Phase};

use super::{Params, json_value, text};

/// A stream as the API shows it: settings, extent, and the readers retention has passed.
/// Reads each view's applied offsets: call it where blocking is allowed.
fn info(s: &dyn LogStream, opened: &Opened) -> StreamInfo {
    let ack = s.ack_guarantee();
    let config = s.config();
    StreamInfo {
        stream: s.name().to_string(),
        partitions: s.partition_count(),
        incarnation: s.incarnation(),
        fsync: config.fsync.to_string(),
        segment_bytes_max: config.segment_bytes_max,
        retention: Retention {
            retention_bytes: config.retention_bytes,
            retention_ms: config.retention_ms,
        },
        below_retention: below_retention(s, opened),
        ack_guarantee: AckGuarantee {
            replicas: ack.replicas,
            fsynced: ack.fsynced,
        },
        personal_data: config.personal_data.map(|d| PersonalData {
            subject: d.subject,
            fields: d.fields,
        }),
        records: s.record_count(),
        offsets: (0..s.partition_count())
            .filter_map(|p| s.partition(p).ok())
            .map(|p| PartitionOffsets {
                partition: p.id(),
                start: p.start_offset(),
                end: p.end_offset(),
            })
            .collect(),
    }
}

/// The view versions (by view name) and the groups (by group name) reading `s` whose
/// positions retention has passed.
fn below_retention(s: &dyn LogStream, opened: &Opened) -> Vec<BelowRetention> {
    let found = opened.views.below_retention(s).unwrap_or_else(|e| {
        // The report is best effort: a view whose state cannot be read says so in its own
        // status; the stream is still shown.
        tracing::warn!(stream = s.name(), error = %e, "could not read the views' positions");
        Vec::new()
    });
    let views = found.into_iter().map(|(name, version, b)| BelowRetention {
        kind: ReaderKind::View,
        name,
        version: Some(version),
        partition: b.partition,
        position: b.applied,
        start: b.start,
    });
    let groups = opened.groups.iter().flat_map(|g| {
        g.below_retention(s.name())
            .into_iter()
            .map(|(name, partition, position, start)| BelowRetention {
                kind: ReaderKind::Group,
                name,
                version: None,
                partition,
                position,
                start,
            })
    });
    views.chain(groups).collect()
}

/// Streams whose names start with `_` belong to Logbook (`_txn` is the commit stream).
fn check_writable(name: &str) -> Result<(), ApiError> {
    if name.starts_with('_') {
        return Err(ApiError::new(
            ProblemCode::ReservedStream,
            format!("stream {name:?} is internal (names starting with '_' are reserved); it can be read, not written"),
        )
        .field("stream"));
    }
    Ok(())
}

/// Creates a stream (201), or confirms an existing one with the same settings (200).
#[utoipa::path(put, path = route::STREAM, tag = "streams",
    params(("stream" = String, Path, description = "Stream name: [A-Za-z0-9._-], ≤ 128 bytes")),
    request_body(content = CreateStream, description = "Settings; the body may be empty"),
    responses(
        (status = 201, description = "Created", body = StreamInfo),
        (status = 200, description = "Exists with the same settings", body = StreamInfo),
        (status = 409, description = "Exists with other settings (`stream_exists`), the node holds as many streams as it may (`too_many_streams`), or its partitions would go over the node's budget (`too_many_partitions`, `field`: `partitions`)", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Invalid name or settings (`invalid_stream_config` naming the field: a `personal_data` declaration out of shape, or on a server without a master key)", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "`not_supported_in_cluster`: `personal_data` on a cluster node (its key store is not built yet)", body = Problem, content_type = "application/problem+json")))]
pub async fn put_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    JsonBody(body): JsonBody<CreateStream>,
) -> Result<Response, ApiError> {
    q.only(&[])?;
    check_writable(&name)?;
    let opened = state.opened()?;
    let mut config = StreamConfig::with_partitions(body.partitions.unwrap_or(1));
    if opened.cluster.is_some() {
        // On a cluster an acknowledgment means what the engine gives (`ack_guarantee`:
        // replicated to a majority, fsynced only where every server syncs always); a local
        // fsync policy has no meaning there, so none is asked for unless the body names one
        // (which the backend refuses by name when the engine cannot honour it).
        config.fsync = FsyncPolicy::Never;
    }
    if let Some(f) = &body.fsync {
        config.fsync = f
            .parse::<FsyncPolicy>()
            .map_err(|e| ApiError::invalid("fsync", e))?;
    }
    if let Some(b) = body.segment_bytes_max {
        config.segment_bytes_max = b;
    }
    if let Some(d) = body.personal_data {
        let d = logbook_log::PersonalData {
            subject: d.subject,
            fields: d.fields,
        };
        if opened.cluster.is_some() {
            return Err(ApiError::new(
                ProblemCode::NotSupportedInCluster,
                "personal data needs the cluster's key store (etcd), not built yet (decision 0030)",
            )
            .field("personal_data"));
        }
        opened
            .privacy
            .check_declaration(&d)
            .map_err(|e| ApiError::from_privacy(e, 0, |_| String::new()))?;
        config.personal_data = Some(d);
    }
    let (retention_bytes, retention_ms) = (body.retention_bytes, body.retention_ms);
    config.retention_bytes = retention_bytes;
    config.retention_ms = retention_ms;
    // Both may wait on the network on a cluster node (a catalog refresh): off the worker.
    let log = opened.log.clone();
    let budget = state.clone();
    let (existed, stream) = blocking(move || {
        if let Ok(existing) = log.stream(&name) {
            // Retention changes after creation (its own route): compared only when given.
            let current = existing.config();
            config.retention_bytes = retention_bytes.or(current.retention_bytes);
            config.retention_ms = retention_ms.or(current.retention_ms);
        }
        budget.partitions().create(&*log, &name, config)
    })
    .await??;
    let stream = info(&*stream, &opened);
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(stream)).into_response())
}

/// Replaces a stream's retention (by size and age) and applies it before answering: whole
/// sealed segments beyond it are deleted, oldest first. Offsets are never reused; views and
/// groups whose positions it passed are listed in `below_retention`.
#[utoipa::path(put, path = route::STREAM_RETENTION, tag = "streams",
    params(("stream" = String, Path)),
    request_body(content = Retention, description = "The whole retention: a limit left out or null is no limit"),
    responses(
        (status = 200, description = "Set and applied", body = StreamInfo),
        (status = 400, description = "`invalid_stream_config` naming the field (a limit of 0)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`reserved_stream`: an internal stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_stream`", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "`not_supported_in_cluster`: the replicated log keeps every record", body = Problem, content_type = "application/problem+json")))]
pub async fn put_retention(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    JsonBody(body): JsonBody<Retention>,
) -> Result<Json<StreamInfo>, ApiError> {
    q.only(&[])?;
    check_writable(&name)?;
    let opened = state.opened()?;
    let log = opened.log.clone();
    let retention = logbook_log::Retention {
        retention_bytes: body.retention_bytes,
        retention_ms: body.retention_ms,
    };
    // Rewrites stream.json (fsync) and deletes segments: off the worker.
    let stream = blocking(move || {
        log.set_retention(&name, retention)
            .map(|s| info(&*s, &opened))
    })
    .await?
    .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    Ok(Json(stream))
}

/// Lists streams, with the node's limits on them and the partitions in use.
#[utoipa::path(get, path = route::STREAMS, tag = "streams",
    responses((status = 200, body = StreamList)))]
pub async fn list_streams(
    State(state): State<AppState>,
    q: Params,
) -> Result<Json<StreamList>, ApiError> {
    q.only(&[])?;
    let opened = state.opened()?;
    // A cluster node reads the replicated catalog up to its end first: off the worker.
    let log = opened.log.clone();
    let streams: Vec<StreamInfo> = blocking(move || {
        log.stream_names()
            .iter()
            .filter_map(|n| log.stream(n).ok())
            .map(|s| info(&*s, &opened))
            .collect()
    })
    .await?;
    let limits = StreamLimits {
        streams_max: logbook_log::limits::STREAMS_MAX,
        partitions_per_stream_max: logbook_log::limits::PARTITIONS_MAX,
        partitions_max: state.partitions().max(),
        partitions_used: streams.iter().map(|s| u64::from(s.partitions)).sum(),
    };
    Ok(Json(StreamList {
        streams,
        limits: Some(limits),
    }))
}

/// A stream's settings and extent.
#[utoipa::path(get, path = route::STREAM, tag = "streams",
    params(("stream" = String, Path)),
    responses((status = 200, body = StreamInfo),
        (status = 404, description = "`unknown_stream`", body = Problem, content_type = "application/problem+json")))]
pub async fn get_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<Json<StreamInfo>, ApiError> {
    q.only(&[])?;
    let opened = state.opened()?;
    let s = opened
        .log
        .stream(&name)
        .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    // Reads the views' applied offsets (their stores): off the worker.
    Ok(Json(blocking(move || info(&*s, &opened)).await?))
}

/// Drops a stream and its records (204). Its name may be reused; tokens of the old stream
/// are never satisfied by the new one.
#[utoipa::path(delete, path = route::STREAM, tag = "streams",
    params(("stream" = String, Path)),
    responses((status = 204, description = "Dropped"),
        (status = 404, description = "`unknown_stream`", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<StatusCode, ApiError> {
    q.only(&[])?;
    check_writable(&name)?;
    let opened = state.opened()?;
    let log = opened.log.clone();
    blocking(move || log.drop_stream(&name))
        .await?
        .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The record to append; `field` names the record in errors (`records[3]`, or empty).
fn to_record(r: RecordIn, field: &str) -> Result<Record, ApiError> {
    let at = |member: &str| {
        if field.is_empty() {
            member.to_string()
        } else {
            format!("{field}.{member}")
        }
    };
    let value = json_value(&r.value, || at("value"))?;
    // A record's own `traceparent` header means what the HTTP header means (it is where
    // that one is stored too): W3C trace context, or refused — never stored unchecked for
    // a tracer to trip on.
    if let Some(tp) = r
        .headers
        .as_ref()
        .and_then(|h| h.get(logbook_log::dedup::TRACEPARENT_HEADER))
    {
        logbook_log::dedup::validate_traceparent(tp).map_err(|e| {
            ApiError::from_log(e, |_| String::new()).field(at("headers.traceparent"))
        })?;
    }
    Ok(Record {
        key: r.key.map(String::into_bytes),
        value,
        headers: r
            .headers
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
        timestamp_ms: r.timestamp_ms,
    })
}

/// Appends one record or a batch. With `Idempotency-Key`, exactly once: a retry answers 200
/// with the original positions and `"duplicate": true`; the same key with another body is
/// 409 `request_id_conflict`. `traceparent` is stored in the first record's headers.
#[utoipa::path(post, path = route::RECORDS, tag = "streams",
    params(("stream" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Request id: 1..=128 printable ASCII bytes"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context")),
    request_body = AppendBody,
    responses(
        (status = 201, description = "Appended: `AppendOne` for a single record, `AppendMany` for a batch", body = AppendAnswer),
        (status = 200, description = "A retry (`duplicate`: true): nothing appended, the original positions", body = AppendAnswer),
        (status = 409, description = "`request_id_conflict`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`, `batch_too_many_records`, `record_too_large`...", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "`invalid_json` naming the field; `invalid_data_subject`: a record of a stream declaring personal data without its data subject (`field`: `records[i].value/POINTER`)", body = Problem, content_type = "application/problem+json")))]
pub async fn append(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    tracking: Tracking,
    JsonBody(body): JsonBody<AppendBody>,
) -> Result<Response, ApiError> {
    q.only(&[])?;
    check_writable(&name)?;
    let (records, single) = match body.records {
        Some(records) => {
            let stray = [
                ("key", body.key.is_some()),
                ("value", body.value.is_some()),
                ("headers", body.headers.is_some()),
                ("timestamp_ms", body.timestamp_ms.is_some()),
            ];
            if let Some((field, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(ApiError::invalid(
                    *field,
                    "give one record (key, value, headers) or a batch {\"records\": [...]}, not both",
                ));
            }
            if records.len() > limits::BATCH_RECORDS_MAX {
                return Err(ApiError::new(
                    ProblemCode::BatchTooManyRecords,
                    format!(
                        "the batch has {} records; the limit is {}; nothing was written",
                        records.len(),
                        limits::BATCH_RECORDS_MAX
                    ),
                )
                .field("records"));
            }
            (records, false)
        }
        None => {
            let Some(value) = body.value else {
                return Err(ApiError::invalid_json(
                    Some("value".into()),
                    "missing field `value` (or give a batch as {\"records\": [...]})",
                ));
            };
            let r = RecordIn {
                key: body.key,
                value,
                headers: body.headers,
                timestamp_ms: body.timestamp_ms,
            };
            (vec![r], true)
        }
    };
    let field = move |i: usize| {
        if single {
            String::new()
        } else {
            format!("records[{i}]")
        }
    };
    let mut records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| to_record(r, &field(i)))
        .collect::<Result<_, _>>()?;
    let opened = state.opened()?;
    let stream = opened
        .log
        .stream(&name)
        .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    if stream.config().personal_data.is_some() {
        let sealed = opened
            .privacy
            .seal_records(&*stream, &mut records, false)
            .map_err(|(i, e)| ApiError::from_privacy(e, i, field))?;
        if !sealed {
            // New subjects' keys are fdatasynced before any record under them is queued.
            let (s, privacy) = (stream.clone(), opened.privacy.clone());
            records = blocking(move || {
                privacy
                    .seal_records(&*s, &mut records, true)
                    .map(|_| records)
            })
            .await?
            .map_err(|(i, e)| ApiError::from_privacy(e, i, field))?;
        }
    }
    let metrics = state.metrics().clone();
    let n = records.len() as u64;
    let started = Instant::now();
    let (positions, duplicate, op) = match tracking.request_id {
        Some(rid) => {
            let s = stream.clone();
            let tp = tracking.traceparent;
            let outcome = blocking(move || {
                s.append_with_id(&rid, tp.as_deref(), records)
                    .and_then(|pending| pending.wait())
            })
            .await?
            .map_err(|e| ApiError::from_log(e, field))?;
            (outcome.positions, outcome.duplicate, "append_idempotent")
        }
        None => {
            if let Some(tp) = tracking.traceparent
                && let Some(first) = records.first_mut()
                && !first.headers.iter().any(|(k, _)| k == "traceparent")
            {
                first.headers.push(("traceparent".into(), tp.into_bytes()));
            }
            let positions = append_plain(&stream, records)
                .await
                .map_err(|e| ApiError::from_log(e, field))?;
            (positions, false, "append")
        }
    };
    metrics
        .op_duration
        .with_label_values(&[op])
        .observe(started.elapsed().as_secs_f64());
    metrics.appends.inc();
    if duplicate {
        metrics.duplicates.with_label_values(&["append"]).inc();
    } else {
        metrics.records_appended.inc_by(n);
    }
    let token = Some(
        logbook_views::token_of(&*stream, &positions)
            .encode()
            .map_err(|e| ApiError::token(&e))?,
    );
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let ack = stream.ack_guarantee();
    let ack_guarantee = Some(AckGuarantee {
        replicas: ack.replicas,
        fsynced: ack.fsynced,
    });
    if single && let Some(p) = positions.first() {
        return Ok((
            status,
            Json(AppendOne {
                partition: p.partition,
                offset: p.offset,
                token,
                duplicate,
                ack_guarantee,
            }),
        )
            .into_response());
    }
    let positions = positions
        .iter()
        .map(|p| PositionOut {
            partition: p.partition,
            offset: p.offset,
        })
        .collect();
    Ok((
        status,
        Json(AppendMany {
            positions,
            token,
            duplicate,
            ack_guarantee,
        }),
    )
        .into_response())
}

/// Appends without a request id ([`LogStream::try_append_batch`]): queued on this worker when
/// the writers have room (the usual case: no thread hop); only when a partition's queue is
/// full (backpressure) do the rest wait on the blocking pool. The completions are awaited.
async fn append_plain(
    stream: &Arc<dyn LogStream>,
    records: Vec<Record>,
) -> Result<Vec<Position>, LogError> {
    let (mut append, unqueued) = stream.try_append_batch(records)?;
    if let Some(unqueued) = unqueued {
        let s = stream.clone();
        append = blocking(move || s.queue_unqueued(unqueued, &mut append).map(|()| append))
            .await
            .map_err(|_| LogError::Closed)??;
    }
    append.await
}

/// Waits up to `wait` for a record at `from` or later. Ends early once the server shuts
/// down: a long poll must not hold the drain, so it is answered with what is there (no
/// records, `next` = `from`) and the client polls again elsewhere.
async fn long_poll(state: &AppState, part: &dyn LogPartition, from: u64, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    // The log wakes a waiter only for a record; shutdown is looked at every 50 ms.
    let tick = Duration::from_millis(50);
    while state.phase() != Phase::ShuttingDown {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero()
            || tokio::time::timeout(left.min(tick), part.end_offset_above(from))
                .await
                .is_ok()
        {
            return;
        }
    }
}

/// Reads records of one partition from an offset. With `wait_ms`, waits (long poll) up to
/// that long for a first record when there is none yet.
#[utoipa::path(get, path = route::RECORDS, tag = "streams",
    params(("stream" = String, Path),
        ("partition" = Option<u32>, Query, description = "Required when the stream has several partitions"),
        ("from" = Option<u64>, Query, description = "First offset; default the first retained"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Most records, 1..=1000; default 100"),
        ("wait_ms" = Option<u64>, Query, maximum = 30000, description = "Long poll: wait up to this long, ms (≤ 30000), for a record")),
    responses((status = 200, body = RecordsOut),
        (status = 400, description = "`offset_out_of_range`, `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_stream`, `unknown_partition`", body = Problem, content_type = "application/problem+json")))]
pub async fn read_records(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<Json<RecordsOut>, ApiError> {
    q.only(&["partition", "from", "limit", "wait_ms"])?;
    let opened = state.opened()?;
    let stream = opened
        .log
        .stream(&name)
        .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    let partition = match q.get::<u32>("partition")? {
        Some(p) => p,
        None if stream.partition_count() == 1 => 0,
        None => {
            return Err(ApiError::invalid(
                "partition",
                format!(
                    "stream {name:?} has {} partitions: say which to read",
                    stream.partition_count()
                ),
            ));
        }
    };
    let part = stream
        .partition(partition)
        .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    let from = q.get::<u64>("from")?.unwrap_or_else(|| part.start_offset());
    let limit = q
        .get::<usize>("limit")?
        .unwrap_or(limits::READ_RECORDS_DEFAULT);
    if limit == 0 || limit > limits::READ_RECORDS_MAX {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be 1..={}", limits::READ_RECORDS_MAX),
        ));
    }
    let wait_ms = q.get::<u64>("wait_ms")?.unwrap_or(0);
    if wait_ms > limits::READ_WAIT_MS_MAX {
        return Err(ApiError::invalid(
            "wait_ms",
            format!("wait_ms must be at most {}", limits::READ_WAIT_MS_MAX),
        ));
    }
    if wait_ms > 0 && from >= part.end_offset() {
        let wait = Duration::from_millis(state.wait_ms(wait_ms));
        long_poll(&state, part, from, wait).await;
    }
    let s = stream.clone();
    let stored = blocking(move || {
        s.partition(partition)?
            .read(from, limit, limits::READ_BYTES_MAX)
    })
    .await?
    .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    let next = stored.last().map_or(from, |r| r.offset + 1);
    let reveal = Reveal::of(&*stream, &opened);
    let records = stored
        .into_iter()
        .map(|r| record_out(partition, r, reveal.as_ref()))
        .collect();
    Ok(Json(RecordsOut { records, next }))
}

/// How a stream's personal fields are shown to a reader: decrypted, or marked erased
/// ([`crate::privacy::Privacy::reveal`]).
pub(crate) struct Reveal {
    privacy: Arc<crate::privacy::Privacy>,
    stream: String,
    declaration: logbook_log::PersonalData,
}

impl Reveal {
    /// `None` for a stream without personal data (its values are shown as stored).
    pub(crate) fn of(stream: &dyn LogStream, opened: &Opened) -> Option<Reveal> {
        stream.config().personal_data.map(|declaration| Reveal {
            privacy: opened.privacy.clone(),
            stream: stream.name().to_string(),
            declaration,
        })
    }

    /// The stream's pointer to a record's data subject.
    pub(crate) fn subject_pointer(&self) -> &str {
        &self.declaration.subject
    }
}

/// A stored record as the API shows it (reads and the push tail alike): the log's internal
/// `request-records` header left out, personal fields revealed.
pub(crate) fn record_out(
    partition: u32,
    r: logbook_log::StoredRecord,
    reveal: Option<&Reveal>,
) -> RecordOut {
    let revealed = reveal.and_then(|v| v.privacy.reveal(&v.stream, &v.declaration, &r.value));
    RecordOut {
        partition,
        offset: r.offset,
        key: r.key.as_deref().map(text),
        value: super::raw_json(revealed.as_deref().unwrap_or(&r.value)),
        headers: r
            .headers
            .iter()
            .filter(|(k, _)| k != logbook_log::dedup::REQUEST_RECORDS_HEADER)
            .map(|(k, v)| (k.clone(), text(v)))
            .collect(),
        timestamp_ms: r.timestamp_ms,
    }
}

/// Per partition, the first record at or after a time: where the stream was then (Kafka's
/// ListOffsets by timestamp). Answered without a scan: from the segments' time indexes on
/// the embedded log, by a binary search over the messages on a cluster's JetStream streams —
/// exact there while timestamps rise with the offsets; with client timestamps out of order
/// (or the nodes' clocks apart, up to 500 ms) a cluster may answer a later record than the
/// first at or after the time.
#[utoipa::path(get, path = route::STREAM_OFFSETS, tag = "streams",
    params(("stream" = String, Path),
        ("timestamp_ms" = i64, Query, description = "The time, ms since the Unix epoch")),
    responses((status = 200, body = OffsetsAtTime),
        (status = 400, description = "`invalid_request`: `timestamp_ms` missing or not an integer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_stream`", body = Problem, content_type = "application/problem+json")))]
pub async fn offsets_at_time(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<Json<OffsetsAtTime>, ApiError> {
    q.only(&["timestamp_ms"])?;
    let Some(timestamp_ms) = q.get::<i64>("timestamp_ms")? else {
        return Err(ApiError::invalid(
            "timestamp_ms",
            "timestamp_ms is required: the time in ms since the Unix epoch",
        ));
    };
    let opened = state.opened()?;
    let stream = opened
        .log
        .stream(&name)
        .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    // Reads a few KiB of one segment per partition: off the worker.
    let partitions = blocking(move || {
        stream
            .partitions()
            .into_iter()
            .map(|p| {
                let found = p.offset_for_timestamp(timestamp_ms)?;
                Ok(OffsetAtTime {
                    partition: p.id(),
                    offset: found.offset,
                    timestamp_ms: found.timestamp_ms,
                })
            })
            .collect::<Result<Vec<_>, LogError>>()
    })
    .await?
    .map_err(|e| ApiError::from_log(e, |_| String::new()))?;
    Ok(Json(OffsetsAtTime {
        stream: name,
        timestamp_ms,
        partitions,
    }))
}
