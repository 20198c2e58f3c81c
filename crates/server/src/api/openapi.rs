//! The answers of every route that no handler states: those the edge gives before a handler
//! runs ([`crate::edge`]: limits, `Host`, media type, credentials and scopes, the in-flight
//! limit), those of the shared extractors (query parameters, path segments, JSON bodies)
//! and the server's own failures. [`complete`] adds them to each operation of the OpenAPI
//! document from the facts that decide them — whether the route is open
//! ([`crate::auth::OPEN_ROUTES`]), takes a body, has path parameters, is exempt from the
//! in-flight limit or the `Host` check — so a route added later is documented alike. A
//! handler's own answers stay in its `#[utoipa::path]`; where a status is in both, the
//! descriptions are joined.
//!
//! `crates/server/tests/router.rs` provokes each of these answers on every route and
//! checks that the document lists its status.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder, Schema};

use crate::error::{PROBLEM_JSON, ProblemCode};
use logbook_api::paths::route;

/// What decides which shared answers a route gives.
#[derive(Debug, Clone, Copy)]
struct Route<'a> {
    path: &'a str,
    method: &'a axum::http::Method,
    /// Takes a request body.
    body: bool,
}

impl Route<'_> {
    fn open(&self) -> bool {
        crate::auth::OPEN_ROUTES.contains(&self.path)
    }
    /// Needs a scope beyond being authenticated (so a token can lack it: 403).
    fn scoped(&self) -> bool {
        let needs = crate::auth::route_needs(
            self.path,
            self.method,
            &[],
            &axum::http::Uri::from_static("/"),
        );
        needs
            .iter()
            .any(|n| *n != crate::auth::scope::Need::Nothing)
    }
    fn limited(&self) -> bool {
        !crate::edge::UNLIMITED_ROUTES.contains(&self.path)
    }
    fn host_checked(&self) -> bool {
        self.path != route::HEALTH
    }
    fn has_path_params(&self) -> bool {
        self.path.contains('{')
    }
    /// Reads or writes the log (on a cluster node, the replicated one).
    fn data(&self) -> bool {
        DATA_PREFIXES.iter().any(|p| self.path.starts_with(p))
    }
    fn writes(&self) -> bool {
        *self.method != axum::http::Method::GET
    }
    /// A step of an interactive transaction: its handle is looked up first.
    fn in_txn(&self) -> bool {
        self.path.starts_with(route::TXN_PREFIX)
    }
    fn groups(&self) -> bool {
        self.path.starts_with(route::GROUPS)
    }
}

/// Routes whose handlers read or write the log.
const DATA_PREFIXES: &[&str] = &[
    route::STREAMS,
    route::VIEWS,
    route::KV,
    route::TXNS,
    route::COMMITS,
    route::GROUPS,
    route::TOKENS,
    route::SCHEMA_REGISTRY,
];

/// The shared answers of `route`: (status, codes).
fn shared(route: Route<'_>) -> Vec<(u16, Vec<ProblemCode>)> {
    use ProblemCode as C;
    // A head hyper cannot parse is answered below the router, on any route (crate::head).
    let mut bad_request = vec![C::InvalidRequest, C::MalformedRequest];
    if route.has_path_params() {
        bad_request.push(C::InvalidPathSegment);
    }
    if route.body {
        bad_request.extend([C::InvalidJson, C::NotIJson]);
    }
    let mut unavailable = vec![C::NotReady, C::TooManyConnections, C::Closed];
    if route.limited() {
        unavailable.push(C::ServerBusy);
    }
    // Connection refusals (crate::admission) reach any route; the quotas and the long-poll
    // budget every route that takes a slot (crate::edge, crate::quota).
    let mut too_many = vec![C::ConnectionQuotaExceeded];
    if route.limited() {
        too_many.extend([C::PrincipalQuotaExceeded, C::LongPollBudgetExhausted]);
    }
    let mut answers = vec![
        (400, bad_request),
        (429, too_many),
        (413, vec![C::PayloadTooLarge]),
        (414, vec![C::UriTooLong]),
        (415, vec![C::UnsupportedMediaType]),
        (431, vec![C::HeadersTooLarge]),
        (500, vec![C::InternalError]),
        (503, unavailable),
    ];
    if route.body {
        answers.push((408, vec![C::BodyTimeout]));
    }
    if !route.open() {
        answers.push((401, vec![C::Unauthenticated]));
        if route.scoped() {
            answers.push((403, vec![C::Forbidden]));
        }
    }
    let mut misdirected = Vec::new();
    if route.host_checked() {
        misdirected.push(C::HostNotAllowed);
    }
    if route.data() {
        // A cluster node's replicated log, whatever the route does with it.
        answers.push((502, vec![C::LogBackendFailed]));
        if let Some(a) = answers.iter_mut().find(|a| a.0 == 503) {
            a.1.push(C::LogUnavailable);
        }
        if route.writes() {
            answers.push((504, vec![C::OutcomeUnknown]));
        }
    }
    if route.in_txn() {
        // The handle's lookup, before the step ([`super::txns`]).
        answers.push((404, vec![C::UnknownTransaction]));
        answers.push((
            409,
            vec![
                C::TransactionCommitted,
                C::TransactionAborted,
                C::SerializationFailure,
            ],
        ));
        answers.push((410, vec![C::TransactionExpired, C::TransactionClosed]));
        misdirected.push(C::MisdirectedRequest);
    }
    if route.groups() {
        answers.push((501, vec![C::NotSupportedInCluster]));
        // On a cluster node the groups' coordinator answers (crate::api::groups): none is
        // elected now, or the answer to the request sent on was lost.
        if let Some(a) = answers.iter_mut().find(|a| a.0 == 503) {
            a.1.push(C::LeaderUnavailable);
        }
        match answers.iter_mut().find(|a| a.0 == 504) {
            Some(a) if !a.1.contains(&C::OutcomeUnknown) => a.1.push(C::OutcomeUnknown),
            Some(_) => {}
            None => answers.push((504, vec![C::OutcomeUnknown])),
        }
    }
    if !misdirected.is_empty() {
        answers.push((421, misdirected));
    }
    answers
}

/// Adds the shared answers to every operation of `doc` (see the module docs), and marks a
/// request body optional where every member of it is: the body extractor reads an empty
/// body as `{}` ([`crate::extract::JsonBody`]).
pub fn complete(doc: &mut OpenApi) {
    let all_optional = |name: &str| {
        doc.components
            .as_ref()
            .and_then(|c| c.schemas.get(name))
            .is_some_and(|s| matches!(s, RefOr::T(Schema::Object(o)) if o.required.is_empty()))
    };
    let mut optional_bodies = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [("put", &item.put), ("post", &item.post)] {
            let schema = op
                .as_ref()
                .and_then(|op| op.request_body.as_ref())
                .and_then(|b| b.content.get("application/json"))
                .and_then(|c| c.schema.as_ref());
            if let Some(RefOr::Ref(r)) = schema
                && let Some(name) = r.ref_location.rsplit('/').next()
                && all_optional(name)
            {
                optional_bodies.push((path.clone(), method));
            }
        }
    }
    for (path, method) in optional_bodies {
        if let Some(item) = doc.paths.paths.get_mut(&path) {
            let op = if method == "put" {
                &mut item.put
            } else {
                &mut item.post
            };
            if let Some(body) = op.as_mut().and_then(|op| op.request_body.as_mut()) {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
    }
    for (path, item) in &mut doc.paths.paths {
        use axum::http::Method;
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, op) in operations {
            let Some(op) = op else { continue };
            let route = Route {
                path,
                method: &method,
                body: op.request_body.is_some(),
            };
            for (status, codes) in shared(route) {
                add(op, status, &codes);
            }
        }
    }
}

/// Documents `codes` under `status` in `op`: a new problem+json answer, or the codes joined
/// to the one the handler states.
fn add(op: &mut Operation, status: u16, codes: &[ProblemCode]) {
    let key = status.to_string();
    let problem = || Content::new(Some(RefOr::Ref(Ref::from_schema_name("Problem"))));
    match op.responses.responses.get_mut(&key) {
        Some(RefOr::T(response)) => {
            let missing: Vec<String> = codes
                .iter()
                .filter(|c| !response.description.contains(&format!("`{c}`")))
                .map(|c| describe(*c))
                .collect();
            if !missing.is_empty() {
                response.description = format!(
                    "{}; also {}",
                    response.description.trim_end_matches('.'),
                    missing.join(", ")
                );
            }
            response
                .content
                .entry(PROBLEM_JSON.to_string())
                .or_insert_with(problem);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let description = codes
                .iter()
                .map(|c| describe(*c))
                .collect::<Vec<_>>()
                .join(", ");
            let response = ResponseBuilder::new()
                .description(description)
                .content(PROBLEM_JSON, problem())
                .build();
            op.responses.responses.insert(key, RefOr::T(response));
        }
    }
}

/// "`code` (title)".
fn describe(code: ProblemCode) -> String {
    format!("`{code}` ({})", code.title())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_routes_need_no_credentials_and_health_no_host() {
        let get = axum::http::Method::GET;
        let statuses = |path, body| -> Vec<u16> {
            let route = Route {
                path,
                method: &get,
                body,
            };
            let mut s: Vec<u16> = shared(route).iter().map(|a| a.0).collect();
            s.sort_unstable();
            s
        };
        assert_eq!(
            statuses(route::HEALTH, false),
            [400, 413, 414, 415, 429, 431, 500, 503]
        );
        assert_eq!(
            statuses(route::STREAM, true),
            [
                400, 401, 403, 408, 413, 414, 415, 421, 429, 431, 500, 502, 503
            ]
        );
        assert!(
            !statuses(route::CLUSTER, false).contains(&403),
            "any principal"
        );
        let bad = shared(Route {
            path: route::RECORDS,
            method: &axum::http::Method::POST,
            body: true,
        });
        assert!(bad[0].1.contains(&ProblemCode::NotIJson));
    }
}
