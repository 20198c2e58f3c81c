//! The paths of API v1: the route templates the server registers ([`route`]) and functions
//! that build a concrete path from names and keys, percent-encoding each segment, so a key
//! with `/`, `?`, `%` or spaces reaches its route intact.
//!
//! ```
//! use logbook_api::paths;
//! assert_eq!(paths::view_row("by carrier", "UA|JFK"), "/v1/views/by%20carrier/rows/UA%7CJFK");
//! assert_eq!(paths::route::VIEW_ROW, "/v1/views/{view}/rows/{key}");
//! let q = paths::Query::new().push("prefix", "a&b").push_opt("limit", Some(10)).finish();
//! assert_eq!(q, "?prefix=a%26b&limit=10");
//! ```

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The header a cluster node puts on a request it forwards to another (its node id): the
/// receiving node never forwards that request again.
pub const FORWARDED_BY_HEADER: &str = "logbook-forwarded-by";

/// Route templates, as the server registers them (`{name}` marks a path parameter).
pub mod route {
    /// `GET`: every stream.
    pub const STREAMS: &str = "/v1/streams";
    /// `PUT` (create), `GET`, `DELETE` one stream.
    pub const STREAM: &str = "/v1/streams/{stream}";
    /// `POST` (append), `GET` (read) a stream's records.
    pub const RECORDS: &str = "/v1/streams/{stream}/records";
    /// `GET`: a stream's records as server-sent events (the push tail).
    pub const RECORD_EVENTS: &str = "/v1/streams/{stream}/records/events";
    /// `GET`: per partition, the first offset at or after a time.
    pub const STREAM_OFFSETS: &str = "/v1/streams/{stream}/offsets";
    /// `PUT`: set a stream's retention.
    pub const STREAM_RETENTION: &str = "/v1/streams/{stream}/retention";
    /// `POST`: begin a transaction.
    pub const TXNS: &str = "/v1/txns";
    /// `GET`: scan keys in a transaction.
    pub const TXN_KV: &str = "/v1/txns/{txn}/kv";
    /// `GET`, `PUT`, `DELETE` a key in a transaction.
    pub const TXN_KEY: &str = "/v1/txns/{txn}/kv/{key}";
    /// `GET`, `PUT`, `DELETE` the empty key in a transaction ([`TXN_KEY`] with the key
    /// `""`: a path parameter never matches an empty segment, so it has a route of its own).
    pub const TXN_EMPTY_KEY: &str = "/v1/txns/{txn}/kv/";
    /// `POST`: increment a key in a transaction (the empty key: `/v1/txns/{txn}/kv//increment`).
    pub const TXN_INCREMENT: &str = "/v1/txns/{txn}/kv/{key}/increment";
    /// `POST`: commit a transaction.
    pub const TXN_COMMIT: &str = "/v1/txns/{txn}/commit";
    /// `POST`: abort a transaction.
    pub const TXN_ABORT: &str = "/v1/txns/{txn}/abort";
    /// `GET`: scan committed keys outside a transaction.
    pub const KV: &str = "/v1/kv";
    /// `GET`: a committed key outside a transaction.
    pub const KV_KEY: &str = "/v1/kv/{key}";
    /// `GET`: the empty key outside a transaction ([`KV_KEY`] with the key `""`).
    pub const KV_EMPTY_KEY: &str = "/v1/kv/";
    /// `POST`: keys and ranges at one snapshot (`GET` reads the key named `read`).
    pub const KV_READ: &str = "/v1/kv/read";
    /// `POST`: a whole transaction in one self-contained request.
    pub const COMMITS: &str = "/v1/commits";
    /// `GET`: every view.
    pub const VIEWS: &str = "/v1/views";
    /// `PUT` (create), `GET` (status), `DELETE` one view.
    pub const VIEW: &str = "/v1/views/{view}";
    /// `GET`: a view's rows (range or keys).
    pub const VIEW_ROWS: &str = "/v1/views/{view}/rows";
    /// `GET`: one row of a view.
    pub const VIEW_ROW: &str = "/v1/views/{view}/rows/{key}";
    /// `GET`: a view's row with the empty key ([`VIEW_ROW`] with the key `""`: an
    /// aggregate without `group_by`).
    pub const VIEW_EMPTY_KEY_ROW: &str = "/v1/views/{view}/rows/";
    /// `POST`: rebuild a view into a new version.
    pub const VIEW_REBUILD: &str = "/v1/views/{view}/rebuild";
    /// `POST`: switch (or roll out) a view's version.
    pub const VIEW_SWITCH: &str = "/v1/views/{view}/switch";
    /// `GET`: every derived stream.
    pub const DERIVED_STREAMS: &str = "/v1/derived-streams";
    /// `PUT` (create), `GET` (spec and status), `DELETE`: one derived stream.
    pub const DERIVED_STREAM: &str = "/v1/derived-streams/{name}";
    /// `GET`: every consumer group.
    pub const GROUPS: &str = "/v1/groups";
    /// `GET`: one group (members, assignments, committed offsets, lag).
    pub const GROUP: &str = "/v1/groups/{group}";
    /// `POST`: a member joins the group.
    pub const GROUP_MEMBERS: &str = "/v1/groups/{group}/members";
    /// `DELETE`: a member leaves the group.
    pub const GROUP_MEMBER: &str = "/v1/groups/{group}/members/{member}";
    /// `POST`: a member's heartbeat (and the partitions it gives up).
    pub const GROUP_HEARTBEAT: &str = "/v1/groups/{group}/members/{member}/heartbeat";
    /// `POST`: a member commits processed offsets.
    pub const GROUP_COMMIT: &str = "/v1/groups/{group}/members/{member}/commit";
    /// `POST`: reset a group's committed offsets.
    pub const GROUP_RESET: &str = "/v1/groups/{group}/reset";
    /// `GET`: liveness and readiness.
    pub const HEALTH: &str = "/v1/health";
    /// `GET`: the nodes of the cluster.
    pub const CLUSTER: &str = "/v1/cluster";
    /// `GET`: what the background auditors (the segment scrubber) checked and found.
    pub const AUDIT: &str = "/v1/audit";
    /// `GET`: the node's limits and the caller's quotas.
    pub const LIMITS: &str = "/v1/limits";
    /// `GET`: Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// `GET`: the OpenAPI document.
    pub const OPENAPI: &str = "/openapi.json";
    /// `GET` (state, the erasure's dry run), `DELETE` (erase) a data subject (scope
    /// `data_subjects:erase`).
    pub const DATA_SUBJECT: &str = "/v1/data-subjects/{id}";
    /// `GET`: every record about a data subject, decrypted, as JSON Lines (scope
    /// `data_subjects:export`).
    pub const DATA_SUBJECT_EXPORT: &str = "/v1/data-subjects/{id}/export";
    /// `POST` (create), `GET` (list) bearer tokens (admin only).
    pub const TOKENS: &str = "/v1/tokens";
    /// `DELETE`: revoke a token by id (admin only).
    pub const TOKEN: &str = "/v1/tokens/{id}";
    /// The schema registry's base URL (Confluent Schema Registry's REST API under it).
    pub const SCHEMA_REGISTRY: &str = "/v1/schema-registry";
    /// `GET`: every subject.
    pub const SR_SUBJECTS: &str = "/v1/schema-registry/subjects";
    /// `POST` (look a schema up under the subject), `DELETE` the subject.
    pub const SR_SUBJECT: &str = "/v1/schema-registry/subjects/{subject}";
    /// `GET` (a subject's versions), `POST` (register a schema).
    pub const SR_VERSIONS: &str = "/v1/schema-registry/subjects/{subject}/versions";
    /// `GET`, `DELETE` one version (`latest` or a number).
    pub const SR_VERSION: &str = "/v1/schema-registry/subjects/{subject}/versions/{version}";
    /// `GET`: one version's schema text alone.
    pub const SR_VERSION_SCHEMA: &str =
        "/v1/schema-registry/subjects/{subject}/versions/{version}/schema";
    /// `GET`: a schema by its global id.
    pub const SR_SCHEMA: &str = "/v1/schema-registry/schemas/ids/{id}";
    /// `GET`: the (subject, version) pairs that use a global id.
    pub const SR_SCHEMA_VERSIONS: &str = "/v1/schema-registry/schemas/ids/{id}/versions";
    /// `GET`: the schema types the registry takes.
    pub const SR_SCHEMA_TYPES: &str = "/v1/schema-registry/schemas/types";
    /// `GET`, `PUT`, `DELETE` the global compatibility level.
    pub const SR_CONFIG: &str = "/v1/schema-registry/config";
    /// `GET`, `PUT`, `DELETE` a subject's compatibility level.
    pub const SR_SUBJECT_CONFIG: &str = "/v1/schema-registry/config/{subject}";
    /// `POST`: check a schema against one version.
    pub const SR_COMPATIBILITY_VERSION: &str =
        "/v1/schema-registry/compatibility/subjects/{subject}/versions/{version}";
    /// `POST`: check a schema against the versions the subject's level names.
    pub const SR_COMPATIBILITY: &str =
        "/v1/schema-registry/compatibility/subjects/{subject}/versions";
    /// `GET`: the registry's mode (always `READWRITE`).
    pub const SR_MODE: &str = "/v1/schema-registry/mode";

    /// Not a route: the prefix of every route of API v1 (all but [`METRICS`] and
    /// [`OPENAPI`]).
    pub const V1_PREFIX: &str = "/v1/";
    /// Not a route: the prefix of every route of one interactive transaction (its handle
    /// is `{txn}`; [`TXN_KV`], [`TXN_KEY`], [`TXN_COMMIT`], …).
    pub const TXN_PREFIX: &str = "/v1/txns/{txn}";
}

/// What is escaped in a path segment or a query value: everything but RFC 3986's
/// unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment or query value, percent-encoded (UTF-8).
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, ESCAPED).to_string()
}

/// `/v1/schema-registry/subjects/{subject}` followed by `rest` (e.g. `/versions/1`).
pub fn schema_subject(subject: &str, rest: &str) -> String {
    format!(
        "{}/subjects/{}{rest}",
        route::SCHEMA_REGISTRY,
        encode(subject)
    )
}

/// `/v1/schema-registry/config/{subject}`.
pub fn schema_subject_config(subject: &str) -> String {
    format!("{}/config/{}", route::SCHEMA_REGISTRY, encode(subject))
}

/// `/v1/schema-registry/compatibility/subjects/{subject}/versions/{version}`.
pub fn schema_compatibility(subject: &str, version: &str) -> String {
    format!(
        "{}/compatibility/subjects/{}/versions/{}",
        route::SCHEMA_REGISTRY,
        encode(subject),
        encode(version)
    )
}

/// `/v1/streams`.
pub fn streams() -> String {
    route::STREAMS.to_string()
}

/// `/v1/streams/{stream}`.
pub fn stream(stream: &str) -> String {
    format!("/v1/streams/{}", encode(stream))
}

/// `/v1/data-subjects/{id}`.
pub fn data_subject(id: &str) -> String {
    format!("/v1/data-subjects/{}", encode(id))
}

/// `/v1/data-subjects/{id}/export`.
pub fn data_subject_export(id: &str) -> String {
    format!("/v1/data-subjects/{}/export", encode(id))
}

/// `/v1/streams/{stream}/records`.
pub fn records(stream: &str) -> String {
    format!("/v1/streams/{}/records", encode(stream))
}

/// `/v1/streams/{stream}/records/events`.
pub fn record_events(stream: &str) -> String {
    format!("/v1/streams/{}/records/events", encode(stream))
}

/// `/v1/streams/{stream}/offsets`.
pub fn stream_offsets(stream: &str) -> String {
    format!("/v1/streams/{}/offsets", encode(stream))
}

/// `/v1/groups`.
pub fn groups() -> String {
    route::GROUPS.to_string()
}

/// `/v1/groups/{group}`.
pub fn group(group: &str) -> String {
    format!("/v1/groups/{}", encode(group))
}

/// `/v1/groups/{group}/members`.
pub fn group_members(group: &str) -> String {
    format!("/v1/groups/{}/members", encode(group))
}

/// `/v1/groups/{group}/members/{member}`.
pub fn group_member(group: &str, member: &str) -> String {
    format!("/v1/groups/{}/members/{}", encode(group), encode(member))
}

/// `/v1/groups/{group}/members/{member}/heartbeat`.
pub fn group_heartbeat(group: &str, member: &str) -> String {
    group_member(group, member) + "/heartbeat"
}

/// `/v1/groups/{group}/members/{member}/commit`.
pub fn group_commit(group: &str, member: &str) -> String {
    group_member(group, member) + "/commit"
}

/// `/v1/groups/{group}/reset`.
pub fn group_reset(group: &str) -> String {
    format!("/v1/groups/{}/reset", encode(group))
}

/// `/v1/streams/{stream}/retention`.
pub fn stream_retention(stream: &str) -> String {
    format!("/v1/streams/{}/retention", encode(stream))
}

/// `/v1/txns`.
pub fn txns() -> String {
    route::TXNS.to_string()
}

/// `/v1/txns/{txn}/kv`.
pub fn txn_kv(txn: &str) -> String {
    format!("/v1/txns/{}/kv", encode(txn))
}

/// `/v1/txns/{txn}/kv/{key}`.
pub fn txn_key(txn: &str, key: &str) -> String {
    format!("/v1/txns/{}/kv/{}", encode(txn), encode(key))
}

/// `/v1/txns/{txn}/kv/{key}/increment`.
pub fn txn_increment(txn: &str, key: &str) -> String {
    format!("/v1/txns/{}/kv/{}/increment", encode(txn), encode(key))
}

/// `/v1/txns/{txn}/commit`.
pub fn txn_commit(txn: &str) -> String {
    format!("/v1/txns/{}/commit", encode(txn))
}

/// `/v1/txns/{txn}/abort`.
pub fn txn_abort(txn: &str) -> String {
    format!("/v1/txns/{}/abort", encode(txn))
}

/// `/v1/kv`.
pub fn kv() -> String {
    route::KV.to_string()
}

/// `/v1/kv/read`.
pub fn kv_read() -> String {
    route::KV_READ.to_string()
}

/// `/v1/commits`.
pub fn commits() -> String {
    route::COMMITS.to_string()
}

/// `/v1/kv/{key}`.
pub fn kv_key(key: &str) -> String {
    format!("/v1/kv/{}", encode(key))
}

/// `/v1/views`.
pub fn views() -> String {
    route::VIEWS.to_string()
}

/// `/v1/views/{view}`.
pub fn view(view: &str) -> String {
    format!("/v1/views/{}", encode(view))
}

/// `/v1/views/{view}/rows`.
pub fn view_rows(view: &str) -> String {
    format!("/v1/views/{}/rows", encode(view))
}

/// `/v1/views/{view}/rows/{key}`.
pub fn view_row(view: &str, key: &str) -> String {
    format!("/v1/views/{}/rows/{}", encode(view), encode(key))
}

/// `/v1/views/{view}/rebuild`.
pub fn view_rebuild(view: &str) -> String {
    format!("/v1/views/{}/rebuild", encode(view))
}

/// `/v1/views/{view}/switch`.
pub fn view_switch(view: &str) -> String {
    format!("/v1/views/{}/switch", encode(view))
}

/// `/v1/derived-streams`.
pub fn derived_streams() -> String {
    route::DERIVED_STREAMS.to_string()
}

/// `/v1/derived-streams/{name}`.
pub fn derived_stream(name: &str) -> String {
    format!("/v1/derived-streams/{}", encode(name))
}

/// `/v1/health`.
pub fn health() -> String {
    route::HEALTH.to_string()
}

/// `/v1/cluster`.
pub fn cluster() -> String {
    route::CLUSTER.to_string()
}

/// `/v1/audit`.
pub fn audit() -> String {
    route::AUDIT.to_string()
}

/// `/v1/limits`.
pub fn limits() -> String {
    route::LIMITS.to_string()
}

/// `/metrics` (Prometheus text, not JSON).
pub fn metrics() -> String {
    route::METRICS.to_string()
}

/// `/v1/tokens/{id}`.
pub fn token(id: &str) -> String {
    format!("/v1/tokens/{}", encode(id))
}

/// A query string built parameter by parameter, each value percent-encoded. Empty when no
/// parameter was pushed, else starting with `?`.
#[derive(Debug, Clone, Default)]
pub struct Query(String);

impl Query {
    /// No parameters.
    pub fn new() -> Self {
        Query(String::new())
    }

    /// Adds `name=value`.
    #[must_use]
    pub fn push(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.push_str(&encode(name));
        self.0.push('=');
        self.0.push_str(&encode(&value.to_string()));
        self
    }

    /// Adds `name=value` when there is a value.
    #[must_use]
    pub fn push_opt(self, name: &str, value: Option<impl std::fmt::Display>) -> Self {
        match value {
            Some(v) => self.push(name, v),
            None => self,
        }
    }

    /// The query string: `""` or `?a=1&b=2`.
    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every builder yields its route template when given the template's own parameter
    /// names (braces escaped), so the two cannot drift apart.
    #[test]
    fn builders_match_the_route_templates() {
        let t = |built: String| built.replace("%7B", "{").replace("%7D", "}");
        let pairs = [
            (streams(), route::STREAMS),
            (stream("{stream}"), route::STREAM),
            (records("{stream}"), route::RECORDS),
            (stream_offsets("{stream}"), route::STREAM_OFFSETS),
            (stream_retention("{stream}"), route::STREAM_RETENTION),
            (record_events("{stream}"), route::RECORD_EVENTS),
            (txns(), route::TXNS),
            (txn_kv("{txn}"), route::TXN_KV),
            (txn_key("{txn}", "{key}"), route::TXN_KEY),
            (txn_key("{txn}", ""), route::TXN_EMPTY_KEY),
            (txn_increment("{txn}", "{key}"), route::TXN_INCREMENT),
            (txn_commit("{txn}"), route::TXN_COMMIT),
            (txn_abort("{txn}"), route::TXN_ABORT),
            (kv(), route::KV),
            (kv_key("{key}"), route::KV_KEY),
            (kv_key(""), route::KV_EMPTY_KEY),
            (kv_read(), route::KV_READ),
            (commits(), route::COMMITS),
            (views(), route::VIEWS),
            (view("{view}"), route::VIEW),
            (view_rows("{view}"), route::VIEW_ROWS),
            (view_row("{view}", "{key}"), route::VIEW_ROW),
            (view_row("{view}", ""), route::VIEW_EMPTY_KEY_ROW),
            (view_rebuild("{view}"), route::VIEW_REBUILD),
            (view_switch("{view}"), route::VIEW_SWITCH),
            (data_subject("{id}"), route::DATA_SUBJECT),
            (data_subject_export("{id}"), route::DATA_SUBJECT_EXPORT),
            (derived_streams(), route::DERIVED_STREAMS),
            (derived_stream("{name}"), route::DERIVED_STREAM),
            (health(), route::HEALTH),
            (limits(), route::LIMITS),
            (groups(), route::GROUPS),
            (group("{group}"), route::GROUP),
            (group_members("{group}"), route::GROUP_MEMBERS),
            (group_member("{group}", "{member}"), route::GROUP_MEMBER),
            (
                group_heartbeat("{group}", "{member}"),
                route::GROUP_HEARTBEAT,
            ),
            (group_commit("{group}", "{member}"), route::GROUP_COMMIT),
            (group_reset("{group}"), route::GROUP_RESET),
        ];
        for (built, template) in pairs {
            assert_eq!(t(built), template);
        }
    }

    #[test]
    fn segments_and_values_are_escaped() {
        assert_eq!(kv_key("a/b?c#d%e f"), "/v1/kv/a%2Fb%3Fc%23d%25e%20f");
        assert_eq!(kv_key("ü-._~"), "/v1/kv/%C3%BC-._~");
        assert_eq!(Query::new().finish(), "");
        assert_eq!(
            Query::new()
                .push("keys", "a,b")
                .push_opt("limit", None::<u32>)
                .finish(),
            "?keys=a%2Cb"
        );
    }
}
