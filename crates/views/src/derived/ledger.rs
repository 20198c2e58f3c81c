//! The account processor of a ledger (issue 21 item 3, multi-partition requests without
//! two-phase commit): a derived stream with `"ledger": true` reads a stream keyed by
//! account, keeps each account's balance of its source partition, and writes back into the
//! same stream — it consumes the credit instructions it emitted itself.
//!
//! ```text
//!  ledger partition of `from`                         ledger partition of `to`
//!  {"id","from","to","amount"}  (a transfer request, keyed by from)
//!     balance(from) ≥ amount ─▶ {"type":"debited", "account":from, "delta":-amount}  (from)
//!                             ─▶ {"type":"credit", "account":to,  …}  ───────────▶ applied:
//!                                                          {"type":"credited","account":to,
//!                                                           "delta":amount}  (to)
//!     otherwise            ─▶ {"type":"rejected", "account":from, "balance", …}     (from)
//!  {"type":"deposit","account","delta"}  (appended by the application) adds to the balance
//! ```
//!
//! Every transfer gets exactly one outcome: `rejected`, or `debited` then `credited`. A
//! balance is the sum of the `delta`s of its account's records (a view's aggregate); a credit
//! in flight is a `credit` without its `credited`. The state is a pure function of the
//! partition's records from its start, rebuilt at a restart as a uniqueness constraint's is.

use std::collections::HashMap;

use logbook_log::Record;
use serde_json::{Value, json};

use crate::limits::{LEDGER_ID_BYTES_MAX, ROW_KEY_BYTES_MAX};
use crate::value::Scalar;

/// Bytes an account costs in memory beyond its name (map entry, balance).
const ACCOUNT_OVERHEAD_BYTES: usize = 48;

/// What one ledger record makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// These records (one or two).
    Emit(Vec<Record>),
    /// Nothing: an outcome, a deposit, or a record that is not the ledger's.
    Nothing,
    /// A request not keyed by its account (it may be in another partition than its
    /// account's balance): skipped and counted.
    Skipped,
    /// Holding one more account would pass the byte limit.
    Full {
        /// Bytes the state would hold.
        bytes: usize,
    },
}

/// The balances of one source partition's accounts.
#[derive(Debug, Default)]
pub struct Balances {
    /// i128: at most 2^64 records of less than 2^63 each can never overflow it.
    by_account: HashMap<String, i128>,
    bytes: usize,
}

/// An account's key: the text a `key_by` on the field would make (so the log routes it as
/// a stateless derived stream would); `None` unless it is a JSON string.
fn account(value: &Value, field: &str) -> Option<String> {
    let v = value.get(field)?;
    v.is_string().then(|| {
        let mut out = String::new();
        Scalar::of(Some(v)).push_key_text(&mut out);
        out
    })
}

fn keyed(key: &str, value: &Value) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: serde_json::to_vec(value).unwrap_or_default(),
        headers: Vec::new(),
        timestamp_ms: None,
    }
}

impl Balances {
    /// The balance of `account` (0 when it has none).
    pub fn balance(&self, account: &str) -> i128 {
        self.by_account.get(account).copied().unwrap_or(0)
    }

    /// Adds `delta` to `account`'s balance; `Err(bytes)` past `max_bytes` (nothing changed).
    fn add(&mut self, account: &str, delta: i64, max_bytes: usize) -> Result<(), usize> {
        let now = self.balance(account) + i128::from(delta);
        if !self.by_account.contains_key(account) {
            let bytes = self.bytes + account.len() + ACCOUNT_OVERHEAD_BYTES;
            if bytes > max_bytes {
                return Err(bytes);
            }
            self.bytes = bytes;
        }
        self.by_account.insert(account.to_string(), now);
        Ok(())
    }

    /// Applies one record with key `key` and value `value`, holding at most `max_bytes`;
    /// `own` says whether the processor emitted it (only its own credit instructions are
    /// applied: a credit appended by anyone else would be money without a debit).
    pub fn apply(
        &mut self,
        key: Option<&[u8]>,
        value: &Value,
        own: bool,
        max_bytes: usize,
    ) -> Step {
        let key = key.map(String::from_utf8_lossy);
        let kind = value.get("type").and_then(Value::as_str);
        match kind {
            None | Some("transfer") => self.transfer(key.as_deref(), value, max_bytes),
            Some("credit") if !own => Step::Skipped,
            Some("deposit") | Some("credit") => {
                let Some(account) = account(value, "account") else {
                    return Step::Nothing;
                };
                if key.as_deref() != Some(account.as_str()) {
                    return Step::Skipped;
                }
                let amount = value
                    .get(if kind == Some("deposit") {
                        "delta"
                    } else {
                        "amount"
                    })
                    .and_then(Value::as_i64)
                    .filter(|a| *a > 0);
                let Some(amount) = amount else {
                    return Step::Nothing;
                };
                match self.add(&account, amount, max_bytes) {
                    Err(bytes) => Step::Full { bytes },
                    Ok(_) if kind == Some("deposit") => Step::Nothing,
                    Ok(_) => Step::Emit(vec![keyed(
                        &account,
                        &json!({"type": "credited", "id": value["id"], "account": account,
                            "from": value["from"], "delta": amount}),
                    )]),
                }
            }
            // Outcomes (ours) and anything else are not instructions.
            Some(_) => Step::Nothing,
        }
    }

    fn transfer(&mut self, key: Option<&str>, value: &Value, max_bytes: usize) -> Step {
        let (Some(from), Some(to)) = (account(value, "from"), account(value, "to")) else {
            return Step::Nothing;
        };
        if key != Some(from.as_str()) {
            return Step::Skipped;
        }
        let balance = self.balance(&from);
        // As a JSON number while it fits one (it always does unless deposits pile up past
        // i64), otherwise as text.
        let balance_json =
            i64::try_from(balance).map_or_else(|_| Value::String(balance.to_string()), Value::from);
        let amount = value
            .get("amount")
            .and_then(Value::as_i64)
            .filter(|a| *a > 0);
        let id = &value["id"];
        let id_fits = serde_json::to_vec(id).is_ok_and(|b| b.len() <= LEDGER_ID_BYTES_MAX);
        let reject = |reason: &str| {
            let id = if id_fits { id.clone() } else { Value::Null };
            let to = if to.len() <= ROW_KEY_BYTES_MAX {
                to.as_str()
            } else {
                ""
            };
            Step::Emit(vec![keyed(
                &from,
                &json!({"type": "rejected", "id": id, "account": from, "to": to,
                    "amount": amount, "balance": balance_json, "reason": reason}),
            )])
        };
        if !id_fits {
            return reject("id is longer than 256 bytes of JSON");
        }
        if to.len() > ROW_KEY_BYTES_MAX {
            return reject("to is longer than a key may be");
        }
        let Some(amount) = amount else {
            return reject("amount is not a positive integer");
        };
        if from == to {
            return reject("from and to are the same account");
        }
        if balance < i128::from(amount) {
            return reject("insufficient funds");
        }
        match self.add(&from, -amount, max_bytes) {
            Err(bytes) => Step::Full { bytes },
            Ok(()) => Step::Emit(vec![
                keyed(
                    &from,
                    &json!({"type": "debited", "id": value["id"], "account": from, "to": to,
                        "delta": -amount}),
                ),
                keyed(
                    &to,
                    &json!({"type": "credit", "id": value["id"], "account": to, "from": from,
                        "amount": amount}),
                ),
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn values(step: Step) -> Vec<(String, Value)> {
        let Step::Emit(records) = step else {
            panic!("{step:?}")
        };
        records
            .into_iter()
            .map(|r| {
                (
                    String::from_utf8(r.key.unwrap()).unwrap(),
                    serde_json::from_slice(&r.value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_transfer_debits_then_credits_or_is_rejected() {
        let mut b = Balances::default();
        let deposit = json!({"type": "deposit", "account": "a", "delta": 100});
        assert_eq!(b.apply(Some(b"a"), &deposit, false, MAX), Step::Nothing);
        let t = json!({"id": "t1", "from": "a", "to": "b", "amount": 60});
        let out = values(b.apply(Some(b"a"), &t, false, MAX));
        assert_eq!(out[0].0, "a");
        assert_eq!(out[0].1["delta"], -60);
        assert_eq!(out[1].0, "b");
        assert_eq!(out[1].1["type"], "credit");
        assert_eq!(b.balance("a"), 40);
        // No overdraft: the second one is rejected, the balance untouched.
        let t2 = json!({"id": "t2", "from": "a", "to": "b", "amount": 60});
        let out2 = values(b.apply(Some(b"a"), &t2, false, MAX));
        assert_eq!(out2[0].1["type"], "rejected");
        assert_eq!(out2[0].1["balance"], 40);
        assert_eq!(b.balance("a"), 40);
        // The credit, applied in b's partition, says so.
        // Only its own: a credit someone else appended is skipped.
        assert_eq!(b.apply(Some(b"b"), &out[1].1, false, MAX), Step::Skipped);
        let credited = values(b.apply(Some(b"b"), &out[1].1, true, MAX));
        assert_eq!(
            credited[0],
            (
                "b".to_string(),
                json!({"type": "credited", "id": "t1", "account": "b", "from": "a", "delta": 60})
            )
        );
        assert_eq!(b.balance("b"), 60);
        // Outcomes are not instructions; a request keyed elsewhere is skipped.
        assert_eq!(
            b.apply(Some(b"b"), &credited[0].1, true, MAX),
            Step::Nothing
        );
        assert_eq!(b.apply(Some(b"b"), &t, false, MAX), Step::Skipped);
        let bad = json!({"id": "t3", "from": "a", "to": "b", "amount": -5});
        assert_eq!(
            values(b.apply(Some(b"a"), &bad, false, MAX))[0].1["type"],
            "rejected"
        );
    }

    #[test]
    fn the_state_is_bounded() {
        let mut b = Balances::default();
        let max = 1 + ACCOUNT_OVERHEAD_BYTES;
        let deposit = |a: &str| json!({"type": "deposit", "account": a, "delta": 1});
        assert_eq!(
            b.apply(Some(b"a"), &deposit("a"), false, max),
            Step::Nothing
        );
        assert!(matches!(
            b.apply(Some(b"c"), &deposit("c"), false, max),
            Step::Full { .. }
        ));
    }
}
