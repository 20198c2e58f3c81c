//! Authentication and authorization: who a request acts as, and whether that principal's
//! scopes cover what the route does.
//!
//! ```text
//!  request ─▶ exempt route? (/v1/health, /openapi.json) ─▶ handler
//!          ─▶ Authorization: Bearer lb_… | Basic base64(principal:lb_…)
//!               missing, malformed, unknown, expired, revoked ─▶ 401 unauthenticated
//!          ─▶ the route's needs (route_needs) ⊆ the token's scopes?
//!               no ─▶ 403 forbidden naming the missing scope
//!          ─▶ handler (the principal in the request's extensions)
//! ```
//!
//! Both checks run in the edge before any handler, so a refused request changes nothing.
//! Tokens live in [`tokens`] (derived from the internal stream `_auth`), scopes in
//! [`scope`]. With `--auth off` (loopback listen addresses only) nothing is checked.

pub mod scope;
pub mod tokens;

use std::sync::Arc;

use axum::http::{HeaderMap, Method, Uri, header};
use base64::Engine;

use crate::error::{ApiError, ProblemCode};
use logbook_api::paths::route;
use scope::{Action, Kind, Need};
pub use tokens::{Principal, Tokens};

/// Routes that answer without credentials: probes and the API's description.
pub const OPEN_ROUTES: &[&str] = &[route::HEALTH, route::OPENAPI];

/// The `WWW-Authenticate` challenge of a 401.
pub const CHALLENGE: &str = "Bearer realm=\"logbook\", Basic realm=\"logbook\"";

/// Credentials of a request: the secret and, with HTTP Basic, the principal named.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The token's secret.
    pub secret: String,
    /// The user name of HTTP Basic.
    pub principal: Option<String>,
}

fn unauthenticated(detail: &str) -> ApiError {
    ApiError::new(ProblemCode::Unauthenticated, detail).field("Authorization")
}

/// The credentials in `Authorization` (`Bearer SECRET` or `Basic base64(PRINCIPAL:SECRET)`).
///
/// # Errors
/// 401 `unauthenticated` naming `Authorization` when it is missing or malformed.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthenticated(
            "no credentials; send Authorization: Bearer <token> (the first admin token is in \
             the data directory's admin.token)",
        ));
    };
    let text = value.to_str().unwrap_or("");
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Credentials {
            secret: rest.to_string(),
            principal: None,
        });
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((principal, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return Ok(Credentials {
                secret: secret.to_string(),
                principal: Some(principal.to_string()),
            });
        }
        return Err(unauthenticated(
            "Basic credentials must be base64 of PRINCIPAL:TOKEN",
        ));
    }
    Err(unauthenticated(
        "Authorization must be Bearer <token> or Basic base64(principal:token)",
    ))
}

/// Authenticates a request against `tokens` at `now_ms`.
///
/// # Errors
/// 401 `unauthenticated` for missing, malformed, unknown, expired or revoked credentials
/// (which of the last three is not said).
pub async fn authenticate(
    tokens: &Arc<Tokens>,
    headers: &HeaderMap,
    now_ms: u64,
) -> Result<Arc<Principal>, ApiError> {
    let c = credentials(headers)?;
    tokens
        .authenticate_fresh(&c.secret, c.principal.as_deref(), now_ms)
        .await
        .ok_or_else(|| {
            unauthenticated(
                "the token is not valid: unknown, expired or revoked (or not the principal's)",
            )
        })
}

/// Checks that `principal`'s scopes cover every need of the request.
///
/// # Errors
/// 403 `forbidden` naming the first need no scope covers.
pub fn authorize(principal: &Principal, needs: &[Need]) -> Result<(), ApiError> {
    for need in needs {
        if !principal.scopes.iter().any(|s| s.covers(need)) {
            return Err(ApiError::new(
                ProblemCode::Forbidden,
                format!(
                    "principal {:?} lacks the scope {need}; nothing was done",
                    principal.name
                ),
            ));
        }
    }
    Ok(())
}

/// The principal a request acts as, as the edge put it in the request's extensions (absent
/// with `--auth off`).
pub type Caller = Option<axum::Extension<Arc<Principal>>>;

/// For handlers: checks that the caller may act on the streams a spec names — for each
/// `(field, action)`, `streams:ACTION:NAME` where the spec's `field` is `NAME`. A view reads
/// its `source`; a derived stream's processor reads its `source` and appends to its
/// `target`, on the word of the principal that created it. Nothing to check without a caller
/// (auth off); a field that is absent or not a string is left to the spec's own check,
/// which names it.
///
/// # Errors
/// 403 `forbidden` naming the first scope missing (`admin` for an internal stream), with
/// `field` the spec's field.
pub fn check_spec_streams(
    caller: &Caller,
    spec: &serde_json::Value,
    fields: &[(&str, Action)],
) -> Result<(), ApiError> {
    let Some(axum::Extension(principal)) = caller else {
        return Ok(());
    };
    for (field, action) in fields {
        if let Some(name) = spec[*field].as_str() {
            let need = Need::Name(Kind::Streams, *action, name.to_string());
            authorize(principal, &[need]).map_err(|e| e.field(*field))?;
        }
    }
    Ok(())
}

/// [`check_spec_streams`] for a view spec: `streams:read` on its `source`.
///
/// # Errors
/// As [`check_spec_streams`].
pub fn check_view_source(caller: &Caller, spec: &serde_json::Value) -> Result<(), ApiError> {
    check_spec_streams(caller, spec, &[("source", Action::Read)])
}

/// What a request to `route` (the matched template, `unmatched` for none) needs, from its
/// method, path parameters and query: [`declared_needs`], and for a route not declared
/// there, `admin` (a new route fails closed until its scope is declared).
pub fn route_needs(
    route: &str,
    method: &Method,
    params: &[(String, String)],
    uri: &Uri,
) -> Vec<Need> {
    declared_needs(route, method, params, uri).unwrap_or_else(|| vec![Need::Admin])
}

/// The needs declared for `route` (`None`: not declared). Keys and names come
/// percent-decoded from `params`.
pub fn declared_needs(
    route: &str,
    method: &Method,
    params: &[(String, String)],
    uri: &Uri,
) -> Option<Vec<Need>> {
    use Action::*;
    use Kind::*;
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map_or(String::new(), |(_, v)| v.clone())
    };
    let read_or = |write: Action| if *method == Method::GET { Read } else { write };
    let name = |kind, action, p: &str| Need::Name(kind, action, param(p));
    Some(match route {
        route::METRICS => vec![Need::MetricsRead],
        route::TOKENS | route::TOKEN => vec![Need::Admin],
        // Findings name files and byte offsets of the node's disk: a scope of their own.
        route::AUDIT => vec![Need::AuditRead],
        // Creating one also needs the streams it reads and appends to (`check_spec_streams`,
        // in the handler, once the spec is parsed).
        route::DERIVED_STREAMS => vec![Need::All(DerivedStreams, Manage)],
        route::DERIVED_STREAM => vec![name(DerivedStreams, Manage, "name")],
        route::DATA_SUBJECT => vec![Need::DataSubjectsErase],
        // Reads every stream declaring personal data, decrypted.
        route::DATA_SUBJECT_EXPORT => vec![Need::DataSubjectsExport],
        route::STREAMS => vec![Need::All(Streams, Read)],
        route::STREAM => vec![name(Streams, read_or(Manage), "stream")],
        route::STREAM_RETENTION => vec![name(Streams, Manage, "stream")],
        route::RECORDS => vec![name(Streams, read_or(Append), "stream")],
        route::STREAM_OFFSETS => vec![name(Streams, Read, "stream")],
        // Starting from a group's commits also reads the group.
        route::RECORD_EVENTS => {
            let mut needs = vec![name(Streams, Read, "stream")];
            needs.extend(query_value(uri, "from").and_then(|from| {
                let group = from.strip_prefix("group:")?;
                Some(Need::Name(Groups, Read, group.to_string()))
            }));
            needs
        }
        route::TXNS | route::TXN_COMMIT | route::TXN_ABORT => vec![Need::AnyOf(Kv)],
        route::TXN_KV | route::KV => vec![scan_need(Kv, uri)],
        route::TXN_KEY | route::KV_KEY => vec![name(Kv, read_or(Write), "key")],
        route::TXN_EMPTY_KEY | route::KV_EMPTY_KEY => {
            vec![Need::Name(Kv, read_or(Write), String::new())]
        }
        // An increment's result is in the commit's answer: it reads the key too.
        route::TXN_INCREMENT => {
            vec![name(Kv, Write, "key"), reveals_state(&param("key"))]
        }
        route::KV_READ if *method == Method::GET => vec![Need::Name(Kv, Read, "read".into())],
        // Any kv scope here; the handler checks each key and range of the body
        // (`authorize_body`) once it is parsed.
        route::KV_READ | route::COMMITS => vec![Need::AnyOf(Kv)],
        route::VIEWS => vec![Need::All(Views, Read)],
        route::VIEW => vec![name(Views, read_or(Manage), "view")],
        route::VIEW_ROWS | route::VIEW_ROW | route::VIEW_EMPTY_KEY_ROW => {
            vec![name(Views, Read, "view")]
        }
        route::VIEW_REBUILD | route::VIEW_SWITCH => vec![name(Views, Manage, "view")],
        route::GROUPS => vec![Need::All(Groups, Read)],
        // DELETE deletes the group (the handler also checks streams:read on its stream).
        route::GROUP => vec![name(Groups, read_or(Manage), "group")],
        route::GROUP_MEMBERS
        | route::GROUP_MEMBER
        | route::GROUP_HEARTBEAT
        | route::GROUP_COMMIT => vec![name(Groups, Consume, "group")],
        route::GROUP_RESET => vec![name(Groups, Manage, "group")],
        route::SR_SUBJECTS => vec![Need::All(Schemas, Read)],
        route::SR_SUBJECT => {
            // POST looks a schema up; DELETE deletes the subject.
            let action = if *method == Method::POST { Read } else { Write };
            vec![name(Schemas, action, "subject")]
        }
        route::SR_VERSIONS | route::SR_VERSION | route::SR_SUBJECT_CONFIG => {
            vec![name(Schemas, read_or(Write), "subject")]
        }
        route::SR_VERSION_SCHEMA | route::SR_COMPATIBILITY | route::SR_COMPATIBILITY_VERSION => {
            vec![name(Schemas, Read, "subject")]
        }
        // The global level is every subject's.
        route::SR_CONFIG if *method != Method::GET => vec![Need::All(Schemas, Write)],
        // A schema by id belongs to the subjects using it: any schemas scope here, the
        // handler checks that one of those subjects is covered (`authorize_any`).
        route::SR_CONFIG
        | route::SR_MODE
        | route::SR_SCHEMA_TYPES
        | route::SR_SCHEMA
        | route::SR_SCHEMA_VERSIONS => vec![Need::AnyOf(Schemas)],
        // Any valid token: the node list, the limits and the caller's own quotas, and a
        // path no route matches (its 404).
        route::CLUSTER | route::LIMITS | "unmatched" => vec![Need::Nothing],
        _ => return None,
    })
}

/// What an atomic operation on `key` needs beside `kv:write`: `kv:read` on the key. An
/// increment, a compare-and-set (`if_version`) and a put-if-absent are evaluated on the
/// key's state at commit, and their answer reveals it — the incremented value, the version
/// a `version_mismatch` found, that a `key_exists` — so a write-only token would read
/// through them. PostgreSQL draws the same line: `UPDATE t SET n = n + 1` needs `SELECT`
/// on `n` beside `UPDATE`. A plain put or delete reveals nothing and needs `kv:write` only.
/// Decision 0018.
pub fn reveals_state(key: &str) -> Need {
    Need::Name(Kind::Kv, Action::Read, key.to_string())
}

/// For a write checked against a snapshot the client holds: at `snapshot` and
/// `serializable` isolation a write is certified first-committer-wins against the
/// transaction's snapshot, so its answer (`serialization_failure` or not) tells whether the
/// key was written since then. When the client chose that snapshot — a one-shot commit
/// naming `snapshot`, an interactive transaction begun earlier — a write-only token would
/// learn the key's write history by probing snapshots; such a write needs `kv:read` on the
/// key ([`reveals_state`]). A write at `read_committed`, or in a one-shot commit certified
/// at the newest snapshot (no `snapshot` named), needs `kv:write` alone. Decision 0018.
///
/// # Errors
/// 403 `forbidden` naming `field`, the scope, and how to write without it; nothing was done.
pub fn authorize_held_snapshot_write(
    caller: &Caller,
    field: &str,
    key: &str,
) -> Result<(), ApiError> {
    authorize_body(caller, [(field.to_string(), reveals_state(key))]).map_err(|mut e| {
        e.detail.push_str(
            " — a write at snapshot or serializable isolation is checked against the \
             transaction's snapshot, and its answer tells whether the key was written since; \
             with kv:write alone, write at read_committed or in a one-shot commit without \
             `snapshot`",
        );
        e
    })
}

/// Whether `principal` (none: `--auth off`) may write some key: `admin`, or a `kv:write`
/// scope of any pattern. A transaction begun without may commit no write.
pub fn may_write_kv(principal: Option<&Principal>) -> bool {
    principal.is_none_or(|p| {
        p.scopes.iter().any(|s| {
            matches!(
                s,
                scope::Scope::Admin | scope::Scope::On(Kind::Kv, Action::Write, _)
            )
        })
    })
}

/// Whether `principal` (none: `--auth off`) may read `key`: a conflict on it is then told
/// with the offset of the commit it conflicts with (a version of the key).
pub fn may_read(principal: Option<&Principal>, key: &str) -> bool {
    principal.is_none_or(|p| p.scopes.iter().any(|s| s.covers(&reveals_state(key))))
}

/// The first value of the query parameter `name`, percent-decoded.
fn query_value(uri: &Uri, name: &str) -> Option<String> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .ok()?
        .0
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// A key scan: by `prefix`, the prefix (a `start` to resume from must lie within it, and
/// an `end` beside it is refused: the handler checks both before reading); by `start` and
/// `end`, that range (see [`range_need`]).
fn scan_need(kind: Kind, uri: &Uri) -> Need {
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let get = |n: &str| pairs.iter().find_map(|(k, v)| (k == n).then(|| v.clone()));
    match (get("prefix"), get("start"), get("end")) {
        (Some(p), _, _) => Need::Prefix(kind, Action::Read, p),
        (None, start, end) => range_need(kind, Action::Read, None, start, end),
    }
}

/// What reading (or declaring) a key range needs: keys from `prefix`, or from `start`
/// (inclusive; none: the first key) to `end` (exclusive; none: the last key). A `start`
/// beside a prefix only narrows it (a page resumed from `next`).
pub fn range_need(
    kind: Kind,
    action: Action,
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
) -> Need {
    match prefix {
        Some(p) => Need::Prefix(kind, action, p),
        None => Need::Range {
            kind,
            action,
            start: start.unwrap_or_default(),
            end,
        },
    }
}

/// For handlers whose body names the keys they act on (`POST /v1/kv/read`,
/// `POST /v1/commits`): checks each `(field, need)` — the body path of a key or range and
/// what acting on it needs — against the caller's scopes. Nothing to check without a
/// caller (auth off).
///
/// # Errors
/// 403 `forbidden` naming the first uncovered field, its key or range, and the scope
/// that would cover it; the handler has done nothing yet.
pub fn authorize_body(
    caller: &Caller,
    needs: impl IntoIterator<Item = (String, Need)>,
) -> Result<(), ApiError> {
    let Some(axum::Extension(principal)) = caller else {
        return Ok(());
    };
    for (field, need) in needs {
        if !principal.scopes.iter().any(|s| s.covers(&need)) {
            let what = match &need {
                Need::Name(_, _, key) => format!("key {key:?}"),
                Need::Prefix(_, _, p) => format!("the keys starting with {p:?}"),
                Need::Range { start, end, .. } => match end {
                    Some(end) => format!("the keys from {start:?} to {end:?}"),
                    None => format!("the keys from {start:?} on"),
                },
                other => format!("{other}"),
            };
            return Err(ApiError::new(
                ProblemCode::Forbidden,
                format!(
                    "principal {:?} lacks the scope {need} for {field} ({what}); nothing was done",
                    principal.name
                ),
            )
            .field(field));
        }
    }
    Ok(())
}

/// For handlers of an object several names share (a schema by id, used by several
/// subjects): checks that the caller's scopes cover at least one of `needs`. Nothing to
/// check without a caller (auth off).
///
/// # Errors
/// 403 `forbidden` naming `what` and the first need, when none is covered (or there are
/// none); the handler has done nothing.
pub fn authorize_any(caller: &Caller, needs: &[Need], what: &str) -> Result<(), ApiError> {
    let Some(axum::Extension(principal)) = caller else {
        return Ok(());
    };
    if needs
        .iter()
        .any(|need| principal.scopes.iter().any(|s| s.covers(need)))
    {
        return Ok(());
    }
    let example = needs
        .first()
        .map_or_else(|| "admin".to_string(), ToString::to_string);
    Err(ApiError::new(
        ProblemCode::Forbidden,
        format!(
            "principal {:?} lacks a scope covering {what} (such as {example}); nothing was done",
            principal.name
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic() {
        assert_eq!(
            credentials(&with_auth("Bearer lb_x")).unwrap(),
            Credentials {
                secret: "lb_x".into(),
                principal: None
            }
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("ingest:lb_y");
        assert_eq!(
            credentials(&with_auth(&format!("basic {basic}"))).unwrap(),
            Credentials {
                secret: "lb_y".into(),
                principal: Some("ingest".into())
            }
        );
        for bad in ["Bearer ", "Basic !!", "Token x", "Basic Zm9v"] {
            let e = credentials(&with_auth(bad)).unwrap_err();
            assert_eq!(e.code, ProblemCode::Unauthenticated, "{bad}");
        }
        assert_eq!(
            credentials(&HeaderMap::new()).unwrap_err().code,
            ProblemCode::Unauthenticated
        );
    }

    #[test]
    fn scans_need_their_prefix_or_their_range() {
        // A kv scan's URI with `query`.
        let uri = |query: &str| format!("{}{query}", route::KV).parse::<Uri>().unwrap();
        assert_eq!(
            scan_need(Kind::Kv, &uri("?prefix=u%2F1&limit=3")),
            Need::Prefix(Kind::Kv, Action::Read, "u/1".into())
        );
        // A page resumed within the prefix (the handler refuses a start outside it, and
        // an end beside it, before reading).
        for query in ["prefix=u&start=u%2F5", "prefix=u&end=v"] {
            assert_eq!(
                scan_need(Kind::Kv, &uri(&format!("?{query}"))),
                Need::Prefix(Kind::Kv, Action::Read, "u".into())
            );
        }
        let range = |start: &str, end: Option<&str>| Need::Range {
            kind: Kind::Kv,
            action: Action::Read,
            start: start.into(),
            end: end.map(str::to_string),
        };
        assert_eq!(
            scan_need(Kind::Kv, &uri("?start=u%2F1&end=u%2F2")),
            range("u/1", Some("u/2"))
        );
        assert_eq!(scan_need(Kind::Kv, &uri("")), range("", None));
    }
}
