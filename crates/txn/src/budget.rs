//! The byte budget of a read's answer: every read that can return many rows — a read at a
//! snapshot ([`crate::TxnStore::read_at_within`]), a scan outside a transaction
//! ([`crate::TxnStore::scan_page_within`]) or in one ([`crate::Txn::scan_page_within`]) —
//! stops a page at its row limit or at its budget, whichever comes first, and says where
//! the next page starts. The budget is counted while the rows are taken, so an answer
//! never grows past it: each row costs its key as a JSON string writes it
//! ([`json_string_bytes`]: a control character takes six bytes), its value bytes (stored
//! as canonical JSON already) plus [`limits::READ_ROW_OVERHEAD_BYTES`], which bounds many
//! tiny rows as well as a few large ones.

use crate::mvcc::Value;
use crate::{KeyValue, ScanPage, TxnError, limits};

/// The bytes an answer has taken so far, against its budget.
#[derive(Debug)]
pub(crate) struct Budget {
    used: usize,
    max: usize,
}

impl Budget {
    /// A budget of `max` bytes, none used.
    pub(crate) fn new(max: usize) -> Self {
        Budget { used: 0, max }
    }

    fn cost(key: &[u8], value: Option<&Value>) -> usize {
        json_string_bytes(key) + value.map_or(0, |v| v.len()) + limits::READ_ROW_OVERHEAD_BYTES
    }

    /// Takes the cost of a key and its value, if it fits.
    pub(crate) fn take(&mut self, key: &[u8], value: Option<&Value>) -> bool {
        let used = self.used.saturating_add(Self::cost(key, value));
        if used > self.max {
            return false;
        }
        self.used = used;
        true
    }

    /// The error of an answer that passes its budget at `field[index]` with this key.
    pub(crate) fn exceeded(
        &self,
        field: &'static str,
        index: usize,
        key: &[u8],
        value: Option<&Value>,
    ) -> TxnError {
        TxnError::AnswerTooLarge {
            field,
            index,
            bytes: self.used.saturating_add(Self::cost(key, value)),
            max: self.max,
        }
    }
}

/// The bytes of `key` inside a JSON string as an answer writes it: `"` and `\` and the
/// short escapes (`\n`, `\t`, …) take two, other control characters six (`\u0001`), every
/// other byte one (UTF-8 is written as is).
pub(crate) fn json_string_bytes(key: &[u8]) -> usize {
    key.iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\t' | b'\r' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// A page of `rows` (in key order): at most `limit` rows within `budget`; `next` is the
/// key of the first row left out by either. A row that does not fit an answer still
/// holding nothing is handed back as `Err`: it alone is over the budget, and a `next` at
/// it would never move on.
pub(crate) fn page(
    rows: impl Iterator<Item = KeyValue>,
    limit: usize,
    budget: &mut Budget,
) -> Result<ScanPage, KeyValue> {
    let mut page = ScanPage::default();
    for row in rows {
        if page.rows.len() == limit {
            page.next = Some(row.key);
            break;
        }
        if !budget.take(&row.key, Some(&row.value)) {
            if budget.used == 0 {
                return Err(row);
            }
            page.next = Some(row.key);
            break;
        }
        page.rows.push(row);
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, value_bytes: usize) -> impl Iterator<Item = KeyValue> {
        (0..n).map(move |i| KeyValue {
            key: format!("k{i}").into_bytes(),
            value: Value::from(vec![b'1'; value_bytes]),
            version: Some(0),
        })
    }

    #[test]
    fn a_key_costs_what_a_json_string_writes() {
        assert_eq!(json_string_bytes(b"plain"), 5);
        assert_eq!(json_string_bytes(b"\x01"), 6, "\\u0001");
        assert_eq!(json_string_bytes(b"a\"b\\\n"), 1 + 2 + 1 + 2 + 2);
        assert_eq!(json_string_bytes("é".as_bytes()), 2, "UTF-8 as is");
    }

    #[test]
    fn a_page_stops_at_its_limit_or_its_budget_with_next_there() {
        let row = 2 + 100 + limits::READ_ROW_OVERHEAD_BYTES;
        let mut budget = Budget::new(usize::MAX);
        let p = page(rows(10, 100), 4, &mut budget).unwrap();
        assert_eq!((p.rows.len(), p.next.as_deref()), (4, Some(&b"k4"[..])));
        let mut budget = Budget::new(3 * row + row / 2);
        let p = page(rows(10, 100), 4, &mut budget).unwrap();
        assert_eq!((p.rows.len(), p.next.as_deref()), (3, Some(&b"k3"[..])));
        let mut budget = Budget::new(usize::MAX);
        let p = page(rows(3, 100), 4, &mut budget).unwrap();
        assert_eq!((p.rows.len(), p.next), (3, None));
        let mut budget = Budget::new(row - 1);
        let e = page(rows(3, 100), 4, &mut budget).unwrap_err();
        assert_eq!(e.key, b"k0", "one row alone over the budget");
    }
}
