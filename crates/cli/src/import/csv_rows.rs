//! CSV rows as JSON objects: the header names the members, fields are typed (integer,
//! float, null for empty and `NA`, else string).

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use super::input::Input;
use super::rows::{Row, RowCap, is_row_too_long, open_capped};

/// CSV rows as JSON objects.
pub(super) struct CsvRows {
    reader: csv::Reader<RowCap>,
    since_row: Rc<Cell<u64>>,
    record: csv::ByteRecord,
    path: PathBuf,
    /// Each column's `"name":`, JSON-escaped, ready to write.
    members: Vec<Vec<u8>>,
    names: Vec<String>,
    /// Indexes of the key columns, in key order.
    key: Vec<usize>,
    last_line: u64,
    done: bool,
}

impl CsvRows {
    pub(super) fn open(input: &Input) -> anyhow::Result<CsvRows> {
        let path = &input.path;
        let (capped, since_row) = open_capped(path)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(capped);
        let header = reader
            .byte_headers()
            .with_context(|| format!("{}: line 1: cannot read the header", path.display()))?
            .clone();
        if header.is_empty() || (header.len() == 1 && header.get(0) == Some(b"")) {
            bail!(
                "{}: line 1: empty; expected a header line naming the columns",
                path.display()
            );
        }
        let mut names = Vec::with_capacity(header.len());
        for (i, name) in header.iter().enumerate() {
            let name = std::str::from_utf8(name).map_err(|_| {
                anyhow!(
                    "{}: line 1, column {}: the column name is not UTF-8",
                    path.display(),
                    i + 1
                )
            })?;
            if name.is_empty() {
                bail!(
                    "{}: line 1, column {}: the column has no name",
                    path.display(),
                    i + 1
                );
            }
            if let Some(first) = names.iter().position(|n: &String| n == name) {
                bail!(
                    "{}: line 1, column {}: `{name}` is also column {}; column names must differ",
                    path.display(),
                    i + 1,
                    first + 1
                );
            }
            names.push(name.to_string());
        }
        let mut key = Vec::with_capacity(input.key.len());
        for k in &input.key {
            let Some(i) = names.iter().position(|n| n == k) else {
                bail!(
                    "{}: line 1: no column `{k}` for --key; the header has: {}",
                    path.display(),
                    names.join(", ")
                );
            };
            key.push(i);
        }
        let members = names
            .iter()
            .map(|n| format!("{}:", Value::from(n.as_str())).into_bytes())
            .collect();
        since_row.set(0);
        Ok(CsvRows {
            reader,
            since_row,
            record: csv::ByteRecord::new(),
            path: path.clone(),
            members,
            names,
            key,
            last_line: 1,
            done: false,
        })
    }

    /// Converts the current record; errors name the column (the caller adds file and line).
    fn convert(&self, line: u64) -> Result<Row, String> {
        let record = &self.record;
        let column = |i: usize| format!("column {} (`{}`)", i + 1, self.names[i]);
        if record.len() != self.names.len() {
            let detail = if record.len() < self.names.len() {
                format!("{} is missing", column(record.len()))
            } else {
                format!("column {} is unexpected", self.names.len() + 1)
            };
            return Err(format!(
                "{detail}: expected {} fields, found {}",
                self.names.len(),
                record.len()
            ));
        }
        let mut value = Vec::with_capacity(record.as_slice().len() * 2 + 64);
        value.push(b'{');
        for (i, field) in record.iter().enumerate() {
            if i > 0 {
                value.push(b',');
            }
            value.extend_from_slice(&self.members[i]);
            let text = std::str::from_utf8(field)
                .map_err(|_| format!("{}: not valid UTF-8", column(i)))?;
            write_typed(text, &mut value);
        }
        value.push(b'}');
        let key = if self.key.is_empty() {
            None
        } else {
            let mut parts = Vec::with_capacity(self.key.len());
            for &i in &self.key {
                let text = std::str::from_utf8(&record[i])
                    .map_err(|_| format!("{}: not valid UTF-8", column(i)))?;
                if is_null(text) {
                    return Err(format!(
                        "{}: is {} but is part of the key (--key)",
                        column(i),
                        if text.is_empty() { "empty" } else { "NA" }
                    ));
                }
                parts.push(text);
            }
            Some(parts.join("|"))
        };
        Ok(Row { line, key, value })
    }
}

impl Iterator for CsvRows {
    type Item = anyhow::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let read = self.reader.read_byte_record(&mut self.record);
        self.since_row.set(0);
        match read {
            Ok(true) => {
                let line = self
                    .record
                    .position()
                    .map_or(self.last_line + 1, csv::Position::line);
                self.last_line = line;
                let row = self
                    .convert(line)
                    .map_err(|e| anyhow!("{}: line {line}, {e}", self.path.display()));
                self.done = row.is_err();
                Some(row)
            }
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                if let csv::ErrorKind::Io(io) = e.kind()
                    && is_row_too_long(io)
                {
                    return Some(Err(anyhow!(
                        "{}: line {}: {io}; nothing was imported",
                        self.path.display(),
                        self.last_line + 1
                    )));
                }
                let at = e.position().map_or_else(
                    || format!("after line {}", self.last_line),
                    |p| format!("line {}", p.line()),
                );
                Some(Err(anyhow!("{}: {at}: {e}", self.path.display())))
            }
        }
    }
}

/// A CSV field that stands for a missing value.
fn is_null(field: &str) -> bool {
    field.is_empty() || field == "NA"
}

/// Writes a CSV field as JSON: null, an exact integer, a float, or a string.
fn write_typed(field: &str, out: &mut Vec<u8>) {
    if is_null(field) {
        out.extend_from_slice(b"null");
        return;
    }
    let number = match json_number(field) {
        Some(true) => field.parse::<i64>().is_ok(),
        Some(false) => field.parse::<f64>().is_ok_and(f64::is_finite),
        None => false,
    };
    if number {
        out.extend_from_slice(field.as_bytes());
    } else {
        out.extend_from_slice(Value::from(field).to_string().as_bytes());
    }
}

/// Whether `s` is a JSON number (RFC 8259 grammar): `Some(true)` for an integer,
/// `Some(false)` for one with a fraction or exponent, `None` if it is not a number.
fn json_number(s: &str) -> Option<bool> {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return None,
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
        integer = false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
        integer = false;
    }
    (i == b.len()).then_some(integer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_follow_the_grammar() {
        for (s, want) in [
            ("0", Some(true)),
            ("-12", Some(true)),
            ("1.25", Some(false)),
            ("-0.5e-3", Some(false)),
            ("01", None),
            ("1.", None),
            (".5", None),
            ("+1", None),
            ("NaN", None),
            ("inf", None),
            ("1e", None),
            ("", None),
            ("12a", None),
        ] {
            assert_eq!(json_number(s), want, "{s:?}");
        }
    }
}
