//! Per-principal quotas: what one principal may hold of the node's shared capacity, so that
//! one client cannot take all of it. A principal is the authenticated token (its id), or
//! the client's address when authentication is off.
//!
//! | quota | counts | over it |
//! | --- | --- | --- |
//! | `requests_per_principal_max` | requests in flight (the edge holds a [`Charge`] while the handler runs) | 429 `principal_quota_exceeded` |
//! | `connections_per_principal_max` | connections the principal's requests came over (held until the connection closes) | 429 `principal_quota_exceeded`, the connection closes |
//! | `txns_per_principal_max` | open interactive transactions ([`crate::state::TxnRegistry`]) | 429 `transaction_quota_exceeded` |
//! | `groups_per_principal_max`, `group_members_per_principal_max` | consumer groups its joins made, members it joined ([`crate::groups::held`], counted from `_groups`) | 429 `group_quota_exceeded` |
//!
//! Every answer over a quota names it and carries `Retry-After` (but the groups', which
//! waiting alone does not free); the request changes nothing. Counts are exact: a charge is
//! taken under the same lock as the check, and given back when it drops (the groups' counts
//! change with the records of `_groups`, under the groups' lock).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::error::{ApiError, ProblemCode};

/// Who a quota counts: `token:ID`, or `address:IP` with authentication off.
pub type PrincipalKey = Arc<str>;

/// The key of a token's principal.
pub fn token_key(token_id: &str) -> PrincipalKey {
    format!("token:{token_id}").into()
}

/// The key of a client address (the principal when authentication is off).
pub fn address_key(ip: IpAddr) -> PrincipalKey {
    format!("address:{ip}").into()
}

/// The key of a request's principal: its token's, else its connection's client address
/// (`peer`, the connection's [`address_key`]).
pub fn request_key(
    principal: Option<&crate::auth::Principal>,
    peer: Option<&PrincipalKey>,
) -> PrincipalKey {
    match (principal, peer) {
        (Some(p), _) => p.quota_key.clone(),
        (None, Some(key)) => key.clone(),
        (None, None) => PrincipalKey::from("address:unknown"),
    }
}

/// One kind of count per principal, bounded by `max`.
#[derive(Debug)]
pub struct Counts {
    counts: Mutex<HashMap<PrincipalKey, usize>>,
    max: usize,
    /// The setting that bounds it, for the answer (`requests_per_principal_max`, ...).
    setting: &'static str,
    /// What is counted, for the answer (`requests in flight`, ...).
    what: &'static str,
}

/// One unit of a [`Counts`] held by a principal, given back on drop.
#[derive(Debug)]
pub struct Charge {
    key: PrincipalKey,
    counts: Arc<Counts>,
}

impl Charge {
    /// The principal charged.
    pub fn key(&self) -> &PrincipalKey {
        &self.key
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&*self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&*self.key);
            }
        }
    }
}

impl Counts {
    /// Counts bounded by `max` per principal; `setting` and `what` name it in refusals.
    pub fn new(max: usize, setting: &'static str, what: &'static str) -> Arc<Counts> {
        Arc::new(Counts {
            counts: Mutex::new(HashMap::new()),
            max,
            setting,
            what,
        })
    }

    /// The quota per principal.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many units `key` holds now.
    pub fn used(&self, key: &PrincipalKey) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&**key).copied().unwrap_or(0)
    }

    /// Takes one unit for `key`.
    ///
    /// # Errors
    /// 429 `principal_quota_exceeded` naming the quota, with `Retry-After`, when `key`
    /// holds `max` already.
    pub fn charge(self: &Arc<Self>, key: &PrincipalKey) -> Result<Charge, ApiError> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.get(&**key).copied().unwrap_or(0);
        if n >= self.max {
            return Err(ApiError::new(
                ProblemCode::PrincipalQuotaExceeded,
                format!(
                    "{key} has {n} {}, its quota ({} = {}); retry shortly",
                    self.what, self.setting, self.max
                ),
            )
            .retry_after(1));
        }
        counts.insert(key.clone(), n + 1);
        Ok(Charge {
            key: key.clone(),
            counts: self.clone(),
        })
    }
}

/// A connection's charge against a principal's connection quota (kept by the connection's
/// tracker in the head guard until it closes).
pub type ConnCharge = Charge;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_over_its_quota_is_refused_by_name_and_others_are_not() {
        let counts = Counts::new(2, "requests_per_principal_max", "requests in flight");
        let (a, b): (PrincipalKey, PrincipalKey) = ("token:a".into(), "token:b".into());
        let held = [counts.charge(&a).unwrap(), counts.charge(&a).unwrap()];
        let refused = counts.charge(&a).unwrap_err();
        assert_eq!(refused.code, ProblemCode::PrincipalQuotaExceeded);
        assert!(
            refused.detail.contains("requests_per_principal_max"),
            "{refused:?}"
        );
        assert_eq!(refused.retry_after_s, Some(1));
        let _other = counts.charge(&b).unwrap();
        drop(held);
        let _again = counts.charge(&a).unwrap();
        assert_eq!(counts.counts.lock().unwrap().len(), 2);
    }

    #[test]
    fn keys_name_the_token_or_the_address() {
        let ip = IpAddr::from([127, 0, 0, 9]);
        assert_eq!(&*address_key(ip), "address:127.0.0.9");
        assert_eq!(&*token_key("k1"), "token:k1");
    }
}
