//! Scopes: what a token may do.
//!
//! ```text
//! scope    = "admin" | "metrics:read" | "audit:read" | "data_subjects:erase"
//!          | "data_subjects:export" | kind ":" action ":" pattern
//! kind     = "streams" (append | read | manage) | "views" (read | manage)
//!          | "kv" (read | write) | "groups" (consume | read | manage)
//!          | "schemas" (read | write) | "derived_streams" (manage)
//! pattern  = "*" | name | prefix "*"      (a name or prefix: 1..=1024 bytes, no "*" inside)
//! ```
//!
//! `streams:read:orders` reads the stream `orders`; `kv:write:user/*` writes keys starting
//! with `user/`; `views:manage:*` creates, drops, rebuilds and switches every view. `admin`
//! `groups:consume:billing` joins the group `billing`, heart-beats and commits in it;
//! `groups:read:*` lists and describes groups; `groups:manage:*` resets and deletes them
//! (every route naming a group also needs `streams:read` on its stream, checked by the handler);
//! `schemas:read:orders-value` reads the registry's subject `orders-value` (its versions,
//! compatibility checks, its level, the schemas its versions use by id) and
//! `schemas:write:orders-*` registers and deletes versions and sets levels of those
//! subjects (`schemas:write:*` also the global level). `derived_streams:manage:audit-*`
//! creates, inspects and drops the derived streams so named (creating one also needs
//! `streams:read` on its source and `streams:append` on its target: its processor reads and
//! appends on the creator's word). `admin`
//! covers everything, including the internal streams (names starting with `_`), which no
//! pattern covers, and the token routes. A request's [`Need`] is covered when one scope of
//! its token has the need's kind and action and a pattern matching the name. A need for a
//! whole kind (a listing) names `*`: only a `*` pattern covers it; a scan by prefix `p` is
//! covered by patterns `*` and `q*` where `p` starts with `q`; a key range from `start` to
//! `end` only by a pattern whose names hold the whole range (`kv:read:acct/*` covers
//! `acct/1`..`acct/2`, not `acct/1`..`b`, nor a range without an end).

use std::fmt;

/// What a scope or a need is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Streams and their records.
    Streams,
    /// Views and their rows.
    Views,
    /// The key-value table of transactions.
    Kv,
    /// Consumer groups.
    Groups,
    /// The schema registry's subjects.
    Schemas,
    /// Derived streams (their processors, not the streams they write).
    DerivedStreams,
}

/// What may be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Append records.
    Append,
    /// Read.
    Read,
    /// Create, drop, rebuild, switch.
    Manage,
    /// Write keys; register and delete schemas, set compatibility levels.
    Write,
    /// Be a member of a consumer group: join, heartbeat, commit, leave.
    Consume,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Streams => "streams",
            Kind::Views => "views",
            Kind::Kv => "kv",
            Kind::Groups => "groups",
            Kind::Schemas => "schemas",
            Kind::DerivedStreams => "derived_streams",
        }
    }

    fn actions(self) -> &'static [Action] {
        match self {
            Kind::Streams => &[Action::Append, Action::Read, Action::Manage],
            Kind::Views => &[Action::Read, Action::Manage],
            Kind::Kv => &[Action::Read, Action::Write],
            Kind::Groups => &[Action::Consume, Action::Read, Action::Manage],
            Kind::Schemas => &[Action::Read, Action::Write],
            Kind::DerivedStreams => &[Action::Manage],
        }
    }
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Append => "append",
            Action::Read => "read",
            Action::Manage => "manage",
            Action::Write => "write",
            Action::Consume => "consume",
        }
    }
}

/// Which names a scope covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Every name (except internal streams).
    Any,
    /// Names starting with this.
    Prefix(String),
    /// This name.
    Exact(String),
}

/// One scope of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Admin,
    /// `GET /metrics`.
    MetricsRead,
    /// `GET /v1/audit`: the audit's findings (which name files and byte offsets of the
    /// node's disk), without the rest of `admin`.
    AuditRead,
    /// `GET`, `DELETE /v1/data-subjects/{id}`: look up and erase data subjects (decision
    /// 0030). Its own scope, so that erasing personal data can be granted without the rest
    /// of `admin`, and a token for data can never erase.
    DataSubjectsErase,
    /// `GET /v1/data-subjects/{id}/export`: every record about a subject, decrypted (the
    /// right of access). Its own scope: it reads every stream declaring personal data, which
    /// no stream scope short of `streams:read:*` would, and erasing grants no reading.
    DataSubjectsExport,
    /// An action on the names a pattern covers.
    On(Kind, Action, Pattern),
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// An authenticated principal, nothing more (e.g. an unknown route).
    Nothing,
    /// `admin`.
    Admin,
    /// `metrics:read`.
    MetricsRead,
    /// `audit:read`.
    AuditRead,
    /// `data_subjects:erase`.
    DataSubjectsErase,
    /// `data_subjects:export`.
    DataSubjectsExport,
    /// An action on one name.
    Name(Kind, Action, String),
    /// An action on every name starting with this (a prefix scan).
    Prefix(Kind, Action, String),
    /// An action on every name in a key range: from `start` (inclusive; `""` is the first
    /// key) to `end` (exclusive; `None`: to the last key). Covered only by a pattern whose
    /// names hold the whole range.
    Range {
        /// What is acted on.
        kind: Kind,
        /// The action.
        action: Action,
        /// The first name, inclusive.
        start: String,
        /// The name after the last, exclusive; `None`: unbounded.
        end: Option<String>,
    },
    /// An action on the whole kind (a listing).
    All(Kind, Action),
    /// Any scope of this kind, whatever its action or pattern (beginning a transaction,
    /// whose reads and writes are checked one by one).
    AnyOf(Kind),
}

/// A scope that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {scope:?}: {reason}")]
pub struct ScopeError {
    /// The text given (at most 128 characters of it).
    pub scope: String,
    /// Why.
    pub reason: String,
}

/// Longest name or prefix in a pattern, bytes (the longest kv key).
const PATTERN_BYTES_MAX: usize = 1024;

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Scope, ScopeError> {
        let bad = |reason: &str| ScopeError {
            scope: text.chars().take(128).collect(),
            reason: reason.to_string(),
        };
        match text {
            "admin" => return Ok(Scope::Admin),
            "metrics:read" => return Ok(Scope::MetricsRead),
            "audit:read" => return Ok(Scope::AuditRead),
            "data_subjects:erase" => return Ok(Scope::DataSubjectsErase),
            "data_subjects:export" => return Ok(Scope::DataSubjectsExport),
            _ => {}
        }
        let mut parts = text.splitn(3, ':');
        let (kind, action, pattern) = match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(a), Some(p)) => (k, a, p),
            _ => {
                return Err(bad(
                    "expected admin, metrics:read, audit:read, data_subjects:erase, data_subjects:export or KIND:ACTION:PATTERN (e.g. streams:read:orders)",
                ));
            }
        };
        let kind = [
            Kind::Streams,
            Kind::Views,
            Kind::Kv,
            Kind::Groups,
            Kind::Schemas,
            Kind::DerivedStreams,
        ]
        .into_iter()
        .find(|k| k.name() == kind)
        .ok_or_else(|| {
            bad("the kind must be streams, views, kv, groups, schemas or derived_streams")
        })?;
        let action = kind
            .actions()
            .iter()
            .copied()
            .find(|a| a.name() == action)
            .ok_or_else(|| {
                let names: Vec<&str> = kind.actions().iter().map(|a| a.name()).collect();
                bad(&format!(
                    "the action of {} must be {}",
                    kind.name(),
                    names.join(", ")
                ))
            })?;
        let pattern = match pattern {
            "*" => Pattern::Any,
            "" => return Err(bad("the pattern is empty; use * for every name")),
            p if p.len() > PATTERN_BYTES_MAX => return Err(bad("the pattern exceeds 1024 bytes")),
            p => match p.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => Pattern::Prefix(prefix.to_string()),
                None if !p.contains('*') => Pattern::Exact(p.to_string()),
                _ => return Err(bad("`*` may only end a pattern")),
            },
        };
        Ok(Scope::On(kind, action, pattern))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::MetricsRead => f.write_str("metrics:read"),
            Scope::AuditRead => f.write_str("audit:read"),
            Scope::DataSubjectsErase => f.write_str("data_subjects:erase"),
            Scope::DataSubjectsExport => f.write_str("data_subjects:export"),
            Scope::On(kind, action, pattern) => {
                write!(f, "{}:{}:", kind.name(), action.name())?;
                match pattern {
                    Pattern::Any => f.write_str("*"),
                    Pattern::Prefix(p) => write!(f, "{p}*"),
                    Pattern::Exact(n) => f.write_str(n),
                }
            }
        }
    }
}

impl Pattern {
    /// Whether the pattern covers `name`. Internal stream names (`_…`) are covered by no
    /// pattern: only `admin` reaches them.
    fn covers_name(&self, kind: Kind, name: &str) -> bool {
        if kind == Kind::Streams && name.starts_with('_') {
            return false;
        }
        match self {
            Pattern::Any => true,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Exact(n) => n == name,
        }
    }

    /// Whether every name from `start` (inclusive) to `end` (exclusive; `None`: no end)
    /// matches the pattern: the range lies within the names the pattern covers, which are
    /// themselves a range — `n` alone is `[n, n + "\0")`, prefix `p` is `[p, successor(p))`.
    fn covers_range(&self, start: &str, end: Option<&str>) -> bool {
        let (low, high) = match self {
            Pattern::Any => return true,
            Pattern::Exact(n) => (n.as_bytes(), [n.as_bytes(), b"\0"].concat()),
            Pattern::Prefix(p) => (p.as_bytes(), successor(p.as_bytes())),
        };
        start.as_bytes() >= low && end.is_some_and(|e| e.as_bytes() <= high.as_slice())
    }

    /// Whether the pattern covers every name starting with `prefix`.
    fn covers_prefix(&self, prefix: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(p) => prefix.starts_with(p.as_str()),
            Pattern::Exact(_) => false,
        }
    }
}

/// The first byte string after every string that starts with `prefix` (UTF-8 text never
/// holds the byte 0xFF, so the last byte can always be raised).
fn successor(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < u8::MAX {
            out.push(last + 1);
            return out;
        }
    }
    out
}

/// The longest prefix whose names hold every name from `start` to `end` (exclusive;
/// `None`: no end) — the narrowest prefix scope a range needs; `""` when only `*` does.
fn covering_prefix<'a>(start: &'a str, end: Option<&str>) -> &'a str {
    let Some(end) = end else { return "" };
    let mut cut = start.len();
    loop {
        let p = &start[..cut];
        if end.as_bytes() <= successor(p.as_bytes()).as_slice() || cut == 0 {
            return p;
        }
        cut = start[..cut].char_indices().last().map_or(0, |(i, _)| i);
    }
}

impl Scope {
    /// Whether this scope covers `need`.
    pub fn covers(&self, need: &Need) -> bool {
        match (self, need) {
            (_, Need::Nothing) | (Scope::Admin, _) => true,
            (Scope::MetricsRead, Need::MetricsRead) => true,
            (Scope::AuditRead, Need::AuditRead) => true,
            (Scope::DataSubjectsErase, Need::DataSubjectsErase) => true,
            (Scope::DataSubjectsExport, Need::DataSubjectsExport) => true,
            (Scope::On(k, a, p), Need::Name(nk, na, name)) => {
                k == nk && a == na && p.covers_name(*k, name)
            }
            (Scope::On(k, a, p), Need::Prefix(nk, na, prefix)) => {
                k == nk && a == na && p.covers_prefix(prefix)
            }
            (
                Scope::On(k, a, p),
                Need::Range {
                    kind,
                    action,
                    start,
                    end,
                },
            ) => k == kind && a == action && p.covers_range(start, end.as_deref()),
            (Scope::On(k, a, p), Need::All(nk, na)) => k == nk && a == na && *p == Pattern::Any,
            (Scope::On(k, _, _), Need::AnyOf(nk)) => k == nk,
            _ => false,
        }
    }
}

impl fmt::Display for Need {
    /// The scope that would cover the need, for a 403's detail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Nothing => f.write_str("(any)"),
            Need::Admin => f.write_str("admin"),
            Need::MetricsRead => f.write_str("metrics:read"),
            Need::AuditRead => f.write_str("audit:read"),
            Need::DataSubjectsErase => f.write_str("data_subjects:erase"),
            Need::DataSubjectsExport => f.write_str("data_subjects:export"),
            Need::Name(k, a, n) if *k == Kind::Streams && n.starts_with('_') => {
                write!(
                    f,
                    "admin (stream {n:?} is internal; {}:{} does not reach it)",
                    k.name(),
                    a.name()
                )
            }
            // The empty name (the empty key) is covered by `*` alone.
            Need::Name(k, a, n) if n.is_empty() => write!(f, "{}:{}:*", k.name(), a.name()),
            Need::Name(k, a, n) => write!(f, "{}:{}:{n}", k.name(), a.name()),
            Need::Prefix(k, a, p) => write!(f, "{}:{}:{p}*", k.name(), a.name()),
            Need::Range {
                kind,
                action,
                start,
                end,
            } => {
                let (k, a) = (kind.name(), action.name());
                match covering_prefix(start, end.as_deref()) {
                    "" => write!(f, "{k}:{a}:*"),
                    p => write!(f, "{k}:{a}:{p}*"),
                }
            }
            Need::All(k, a) => write!(f, "{}:{}:*", k.name(), a.name()),
            Need::AnyOf(k) => write!(f, "{}:… (any {} scope)", k.name(), k.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> Scope {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn grammar_round_trips_and_refuses_by_reason() {
        for s in [
            "admin",
            "metrics:read",
            "data_subjects:erase",
            "data_subjects:export",
            "derived_streams:manage:audit-*",
            "streams:append:orders",
            "streams:read:*",
            "views:manage:by_*",
            "kv:write:user/*",
            "kv:read:a:b",
            "groups:consume:billing",
            "groups:manage:*",
        ] {
            assert_eq!(scope(s).to_string(), s);
        }
        for (bad, why) in [
            ("", "expected admin"),
            ("root", "expected admin"),
            ("tables:read:x", "kind must be"),
            ("views:append:x", "action of views must be read, manage"),
            ("kv:manage:x", "action of kv"),
            (
                "derived_streams:read:x",
                "action of derived_streams must be manage",
            ),
            (
                "groups:write:x",
                "action of groups must be consume, read, manage",
            ),
            ("streams:read:", "pattern is empty"),
            ("streams:read:a*b", "may only end"),
            ("streams:read:**", "may only end"),
        ] {
            let e = bad.parse::<Scope>().unwrap_err();
            assert!(e.reason.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn coverage() {
        use Action::*;
        use Kind::*;
        let name = |k, a, n: &str| Need::Name(k, a, n.to_string());
        assert!(scope("streams:read:orders").covers(&name(Streams, Read, "orders")));
        assert!(!scope("streams:read:orders").covers(&name(Streams, Read, "orders2")));
        assert!(!scope("streams:read:orders").covers(&name(Streams, Append, "orders")));
        assert!(scope("streams:read:ord*").covers(&name(Streams, Read, "orders")));
        assert!(!scope("streams:read:*").covers(&name(Streams, Read, "_txn")));
        assert!(scope("admin").covers(&name(Streams, Read, "_txn")));
        assert!(!scope("views:read:*").covers(&name(Streams, Read, "x")));
        assert!(scope("kv:read:*").covers(&name(Kv, Read, "_x")));
        assert!(scope("kv:read:u/*").covers(&Need::Prefix(Kv, Read, "u/1".into())));
        assert!(!scope("kv:read:u/*").covers(&Need::Prefix(Kv, Read, "u".into())));
        assert!(!scope("kv:read:u/*").covers(&Need::All(Kv, Read)));
        assert!(scope("kv:read:*").covers(&Need::All(Kv, Read)));
        assert!(scope("kv:write:x").covers(&Need::AnyOf(Kv)));
        let range = |start: &str, end: Option<&str>| Need::Range {
            kind: Kv,
            action: Read,
            start: start.into(),
            end: end.map(str::to_string),
        };
        // A range is covered only when it lies wholly within the pattern's names.
        assert!(scope("kv:read:acct/*").covers(&range("acct/1", Some("acct/2"))));
        assert!(scope("kv:read:acct/*").covers(&range("acct/", Some("acct0"))));
        assert!(!scope("kv:read:acct/*").covers(&range("acct/", Some("acct0a"))));
        assert!(!scope("kv:read:acct/*").covers(&range("acct", Some("acct/9"))));
        assert!(!scope("kv:read:acct/*").covers(&range("acct/1", None)));
        assert!(scope("kv:read:k").covers(&range("k", Some("k\0"))));
        assert!(!scope("kv:read:k").covers(&range("k", Some("k\0\0"))));
        assert!(scope("kv:read:*").covers(&range("", None)));
        assert!(!scope("kv:write:*").covers(&range("", None)));
        // The 403 names the narrowest scope that would cover the range.
        assert_eq!(
            range("acct/1", Some("acct/2")).to_string(),
            "kv:read:acct/1*"
        );
        assert_eq!(
            range("acct/1", Some("acct/9")).to_string(),
            "kv:read:acct/*"
        );
        assert_eq!(range("a", Some("z")).to_string(), "kv:read:*");
        assert_eq!(range("a", None).to_string(), "kv:read:*");
        assert!(!scope("metrics:read").covers(&Need::Admin));
        assert!(scope("metrics:read").covers(&Need::MetricsRead));
        assert!(!scope("streams:manage:*").covers(&Need::MetricsRead));
        assert!(scope("data_subjects:erase").covers(&Need::DataSubjectsErase));
        assert!(scope("admin").covers(&Need::DataSubjectsErase));
        assert!(!scope("data_subjects:erase").covers(&Need::Admin));
        assert!(!scope("streams:manage:*").covers(&Need::DataSubjectsErase));
        assert!(scope("audit:read").covers(&Need::AuditRead));
        assert!(scope("admin").covers(&Need::AuditRead));
        assert!(!scope("audit:read").covers(&Need::Admin));
        assert!(!scope("metrics:read").covers(&Need::AuditRead));
        assert_eq!(scope("audit:read").to_string(), "audit:read");
        // Erasing and exporting are granted apart: neither reaches the other.
        assert!(scope("data_subjects:export").covers(&Need::DataSubjectsExport));
        assert!(scope("admin").covers(&Need::DataSubjectsExport));
        assert!(!scope("data_subjects:erase").covers(&Need::DataSubjectsExport));
        assert!(!scope("data_subjects:export").covers(&Need::DataSubjectsErase));
        assert!(!scope("streams:read:*").covers(&Need::DataSubjectsExport));
        assert!(scope("derived_streams:manage:d*").covers(&name(DerivedStreams, Manage, "d1")));
        assert!(!scope("derived_streams:manage:d*").covers(&Need::All(DerivedStreams, Manage)));
        assert!(!scope("streams:manage:*").covers(&name(DerivedStreams, Manage, "d1")));
        assert!(!scope("views:manage:*").covers(&name(DerivedStreams, Manage, "d1")));
    }
}
