//! Operations: health, the cluster's nodes, the limits and quotas, metrics, the OpenAPI
//! document.

use std::sync::Arc;

use crate::error::Problem;
use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use logbook_api::audit::{
    AuditDigest, AuditRowDifference, AuditStatus, CheckpointAudit, CheckpointRowDifference,
    ScrubberFinding, ScrubberStatus, ViewAudit, ViewAuditReport, ViewAuditorStatus,
};
use logbook_api::ops::{
    ClusterLimits, ClusterStatus, Health, Limits, NodeLimits, Quota, Quotas, RequestLimits,
};
use logbook_api::paths::route;

use crate::error::ApiError;
use crate::state::{AppState, Phase};

use super::Params;

/// Liveness and readiness. Answers 200 when ready, 503 while the data directory is being
/// opened (recovery) or the server is shutting down; with `?probe=live`, 200 whenever the
/// process answers.
#[utoipa::path(get, path = route::HEALTH, tag = "operations",
    params(("probe" = Option<String>, Query, pattern = "^(ready|live)$", description = "`ready` (default) or `live`")),
    responses((status = 200, body = Health), (status = 503, description = "Not ready", body = Health)))]
pub async fn health(State(state): State<AppState>, q: Params) -> Result<Response, ApiError> {
    q.only(&["probe"])?;
    let live_probe = match q.text("probe") {
        None | Some("ready") => false,
        Some("live") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "probe",
                format!("probe must be `live` or `ready`, not {other:?}"),
            ));
        }
    };
    let phase = state.phase();
    let clock_fault = state.clock_fault();
    let ready = phase == Phase::Ready && clock_fault.is_none();
    let status = if ready || live_probe {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        live: true,
        ready,
        state: phase.name().to_string(),
        open_transactions: state.txns().len(),
        waiting_for: if ready {
            None
        } else {
            clock_fault.or_else(|| state.waiting_for())
        },
        clock_unix_ms: Some(crate::auth::tokens::now_ms()),
    };
    Ok((status, axum::Json(body)).into_response())
}

/// The nodes of the cluster as registered in etcd, with their health and what each serves,
/// the certifier's leader and the consumer groups' coordinator (node id, URL, fencing token)
/// as their elections name them, the
/// other nodes as this node's heartbeats see them (φ, suspected, round trip, clock offset),
/// and what an acknowledged append guarantees, from the NATS servers' settings
/// (on a single node: mode `single`, no nodes, no leader, no peers, no guarantee). While etcd cannot be reached both are
/// unknown (503); the log and the views keep serving.
#[utoipa::path(get, path = route::CLUSTER, tag = "operations",
    responses((status = 200, body = ClusterStatus),
        (status = 503, description = "`membership_unavailable`, `not_ready`", body = Problem, content_type = "application/problem+json")))]
pub async fn cluster(State(state): State<AppState>, q: Params) -> Result<Response, ApiError> {
    q.only(&[])?;
    let opened = state.opened()?;
    let body = match &opened.cluster {
        None => ClusterStatus {
            mode: "single".into(),
            node_id: None,
            nodes: Vec::new(),
            leader: None,
            groups_coordinator: None,
            peers: Vec::new(),
            ack_guarantee: None,
        },
        Some(member) => ClusterStatus {
            mode: "cluster".into(),
            node_id: Some(member.node_id().to_string()),
            nodes: member.nodes().await?,
            leader: member.leader().await?,
            groups_coordinator: member.groups_coordinator().await?,
            peers: member.peers(),
            ack_guarantee: Some(member.ack_guarantee()),
        },
    };
    Ok(axum::Json(body).into_response())
}

/// What the background auditors checked and found: the segment scrubber's totals and every
/// damaged place it found (file and byte offset), and each view's latest audit (digests of
/// the live and the recomputed state, the first rows that differ). Scope `audit:read` (or
/// `admin`): findings name files and rows.
#[utoipa::path(get, path = route::AUDIT, tag = "operations",
    responses((status = 200, body = AuditStatus),
        (status = 503, description = "`not_ready`", body = Problem, content_type = "application/problem+json")))]
pub async fn audit(State(state): State<AppState>, q: Params) -> Result<Response, ApiError> {
    q.only(&[])?;
    let opened = state.opened()?;
    let scrubber = scrubber_status(&opened, state.config().scrub_rate_mb_per_s);
    let views = view_auditor_status(&opened);
    Ok(axum::Json(AuditStatus { scrubber, views }).into_response())
}

/// The view auditor's part of `GET /v1/audit`.
fn view_auditor_status(opened: &crate::state::Opened) -> ViewAuditorStatus {
    let Some(auditor) = &opened.auditor else {
        let state = if opened.cluster.is_some() {
            "not_available"
        } else {
            "off"
        };
        return ViewAuditorStatus {
            state: state.into(),
            interval_s: 0,
            records_per_s: 0,
            memory_bytes_max: 0,
            repair: false,
            rounds: 0,
            views: Vec::new(),
        };
    };
    let status = auditor.status();
    ViewAuditorStatus {
        state: "running".into(),
        interval_s: status.interval_s,
        records_per_s: status.records_per_s,
        memory_bytes_max: status.memory_bytes_max as u64,
        repair: status.repair,
        rounds: status.rounds,
        views: status.views.iter().map(view_audit).collect(),
    }
}

/// One view's audit as the API shows it (`GET /v1/audit`, `GET /v1/views/{view}`).
pub(crate) fn view_audit(v: &logbook_views::ViewAuditStatus) -> ViewAudit {
    ViewAudit {
        view: v.view.clone(),
        audits: v.audits,
        mismatches: v.mismatches,
        last: v.last.as_ref().map(|r| ViewAuditReport {
            version: r.version,
            verdict: verdict(r.verdict),
            note: r.note.clone(),
            applied: r.applied.clone(),
            live_digest: digest(&r.live),
            recomputed_digest: digest(&r.recomputed),
            differences: r
                .differences
                .iter()
                .map(|d| AuditRowDifference {
                    key: d.key.clone(),
                    live: d.live.clone(),
                    recomputed: d.recomputed.clone(),
                })
                .collect(),
            checkpoint: r.checkpoint.as_ref().map(checkpoint_audit),
        }),
        error: v.error.clone(),
        repaired_to: v.repaired_to,
    }
}

fn checkpoint_audit(c: &logbook_views::CheckpointReport) -> CheckpointAudit {
    CheckpointAudit {
        verdict: verdict(c.verdict),
        applied: c.applied.clone(),
        stored_digest: digest(&c.stored),
        recomputed_digest: digest(&c.recomputed),
        notes: c.notes.clone(),
        differences: c
            .differences
            .iter()
            .map(|d| CheckpointRowDifference {
                key: d.key.clone(),
                stored: d.live.clone(),
                recomputed: d.recomputed.clone(),
            })
            .collect(),
    }
}

fn verdict(v: logbook_views::Verdict) -> String {
    match v {
        logbook_views::Verdict::Match => "match",
        logbook_views::Verdict::Mismatch => "mismatch",
        logbook_views::Verdict::Skipped => "skipped",
    }
    .into()
}

fn digest(d: &logbook_views::Digest) -> AuditDigest {
    AuditDigest {
        rows: d.rows,
        hash: format!("{:032x}", d.hash),
    }
}

/// The scrubber's part of `GET /v1/audit`.
fn scrubber_status(opened: &crate::state::Opened, rate_mb_per_s: u64) -> ScrubberStatus {
    let (state, status) = match (&opened.scrubber, &opened.cluster) {
        (Some(scrubber), _) => ("running", scrubber.status()),
        (None, Some(_)) => ("not_available", logbook_log::ScrubStatus::default()),
        (None, None) => ("off", logbook_log::ScrubStatus::default()),
    };
    ScrubberStatus {
        state: state.into(),
        rate_mb_per_s: if state == "running" { rate_mb_per_s } else { 0 },
        bytes_scrubbed: status.bytes_scrubbed,
        batches_scrubbed: status.batches_scrubbed,
        segments_scrubbed: status.segments_scrubbed,
        passes: status.passes,
        errors: status.errors,
        findings: status
            .findings
            .into_iter()
            .map(|f| ScrubberFinding {
                stream: f.stream,
                partition: f.partition,
                file: f.path.display().to_string(),
                file_offset: f.file_offset,
                reason: f.reason,
            })
            .collect(),
    }
}

/// The node's limits as in force and the caller's quotas, with what it holds of each now
/// (this request included). Any valid token may ask: it learns its own counts only.
#[utoipa::path(get, path = route::LIMITS, tag = "operations",
    responses((status = 200, body = Limits)))]
pub async fn limits(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
    conn: Option<Extension<Arc<crate::head::Tracker>>>,
    q: Params,
) -> Result<axum::Json<Limits>, ApiError> {
    q.only(&[])?;
    let key = crate::quota::request_key(
        caller.as_deref().map(|p| &**p),
        conn.as_deref().and_then(|c| c.peer_key()),
    );
    let quota = |used: usize, max: usize| Quota {
        used: used as u64,
        max: max as u64,
    };
    let (requests, connections) = (state.principal_requests(), state.principal_connections());
    let (txns, txns_max) = state.txns().owned_by(&key);
    // The groups' lock may be held across an append's acknowledgment: off the worker.
    let groups = state.opened().and_then(|o| o.groups()).ok();
    let held_key = key.clone();
    let held = match groups {
        Some(g) => Some(crate::extract::blocking(move || g.held(&held_key)).await?),
        None => None,
    };
    let group_quota = super::groups::group_quota(state.config());
    let quotas = Quotas {
        principal: key.to_string(),
        requests_in_flight: quota(requests.used(&key), requests.max()),
        connections: quota(connections.used(&key), connections.max()),
        open_transactions: quota(txns, txns_max),
        groups: held.map(|h| quota(h.groups, group_quota.groups_max)),
        group_members: held.map(|h| quota(h.members, group_quota.members_max)),
    };
    Ok(axum::Json(Limits {
        node: node_limits(state.config()),
        request: request_limits(),
        quotas,
        cluster: cluster_limits(state.config()),
    }))
}

/// The settings of `config` that bound the node's capacity.
fn node_limits(config: &crate::config::ServerConfig) -> NodeLimits {
    let n = |v: usize| v as u64;
    NodeLimits {
        connections_max: n(config.connections_max),
        connections_per_client_max: n(config.connections_per_client_max),
        requests_max: n(config.requests_max),
        long_polls_max: n(config.long_polls_max),
        wait_ms_max: config.wait_ms_max,
        subscriptions_max: n(crate::limits::SUBSCRIPTIONS_MAX),
        open_txns_max: n(config.open_txns_max),
        partitions_max: u64::from(config.partitions_max),
        header_read_timeout_ms: config.header_read_timeout_ms,
        body_read_timeout_ms: config.body_read_timeout_ms,
        body_rate_min_bytes_per_s: config.body_rate_min_bytes_per_s,
        txn_idle_timeout_ms: config.txn_idle_timeout_ms,
        snapshot_window_commits: config.snapshot_window_commits,
        certifier_bytes_max: config.certifier_bytes_max,
    }
}

/// The failure detection and clock settings of `config`, on a cluster node.
fn cluster_limits(config: &crate::config::ServerConfig) -> Option<ClusterLimits> {
    config.cluster.as_ref().map(|_| ClusterLimits {
        max_clock_offset_ms: config.max_clock_offset_ms,
        phi_threshold: config.phi_threshold,
        heartbeat_interval_ms: config.heartbeat_interval_ms,
    })
}

/// The limits of one request ([`crate::limits`], the API contract's).
fn request_limits() -> RequestLimits {
    use crate::limits as l;
    let n = |v: usize| v as u64;
    RequestLimits {
        body_bytes_max: n(l::BODY_BYTES_MAX),
        uri_bytes_max: n(l::URI_BYTES_MAX),
        header_bytes_max: n(l::HEADER_BYTES_MAX),
        header_lines_max: n(l::HEADER_LINES_MAX),
        batch_records_max: n(l::BATCH_RECORDS_MAX),
        read_records_max: n(l::READ_RECORDS_MAX),
        read_wait_ms_max: l::READ_WAIT_MS_MAX,
        partitions_per_stream_max: u64::from(logbook_api::limits::PARTITIONS_MAX),
        token_bytes_max: n(l::TOKEN_BYTES_MAX),
        request_id_bytes_max: n(logbook_api::limits::REQUEST_ID_BYTES_MAX),
        json_depth_max: n(logbook_api::limits::JSON_DEPTH_MAX),
    }
}

/// Metrics in the Prometheus text format (see [`crate::metrics`]).
#[utoipa::path(get, path = route::METRICS, tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>, q: Params) -> Result<Response, ApiError> {
    q.only(&[])?;
    let config = state.config();
    let in_flight = config
        .requests_max
        .saturating_sub(state.requests().available_permits())
        + config
            .long_polls_max
            .saturating_sub(state.long_polls().available_permits());
    state.metrics().requests_in_flight.set(in_flight as i64);
    // View lag is computed at scrape time (status reads each source's newest records).
    if let Ok(opened) = state.opened() {
        let m = state.metrics().clone();
        let views = opened.views.clone();
        let _ = crate::extract::blocking(move || m.set_view_lag(&views)).await;
        if let Ok(txns) = opened.txns() {
            let bytes = txns.memory().certifier_bytes;
            let m = state.metrics();
            m.certifier_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(scrubber) = &opened.scrubber {
            state.metrics().set_scrub(&scrubber.status());
        }
        if let Some(auditor) = &opened.auditor {
            state.metrics().set_view_audits(&auditor.status());
        }
        if let Some(member) = &opened.cluster {
            state.metrics().set_peers(&member.peers());
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(),
    )
        .into_response())
}

/// The OpenAPI document, as served.
#[derive(Debug, Clone)]
pub struct OpenApiJson(pub Arc<str>);

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = route::OPENAPI, tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi(
    Extension(doc): Extension<OpenApiJson>,
    q: Params,
) -> Result<Response, ApiError> {
    q.only(&[])?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
        .into_response())
}
