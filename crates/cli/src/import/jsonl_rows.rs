//! JSON Lines rows: each non-blank line one JSON value, the key read from its members.

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::anyhow;
use serde_json::Value;

use super::input::Input;
use super::rows::{Row, RowCap, is_row_too_long, open_capped};

/// JSON Lines rows.
pub(super) struct JsonlRows {
    reader: BufReader<RowCap>,
    since_row: Rc<Cell<u64>>,
    buf: Vec<u8>,
    path: PathBuf,
    key: Vec<String>,
    line: u64,
    done: bool,
}

impl JsonlRows {
    pub(super) fn open(input: &Input) -> anyhow::Result<JsonlRows> {
        let (capped, since_row) = open_capped(&input.path)?;
        Ok(JsonlRows {
            reader: BufReader::new(capped),
            since_row,
            buf: Vec::new(),
            path: input.path.clone(),
            key: input.key.clone(),
            line: 0,
            done: false,
        })
    }

    /// Converts one non-blank line; errors name the column or the field.
    fn convert(&self, text: &[u8], indent: usize) -> Result<Row, String> {
        let value: Value = serde_json::from_slice(text).map_err(|e| {
            // serde_json's message ends with its own position ("at line 1 column 7"); the
            // line is ours, the column is the one in the file.
            let message = e.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m);
            format!("column {}: not valid JSON: {message}", e.column() + indent)
        })?;
        let key = if self.key.is_empty() {
            None
        } else {
            let mut parts = Vec::with_capacity(self.key.len());
            for name in &self.key {
                parts.push(key_part(&value, name)?);
            }
            Some(parts.join("|"))
        };
        Ok(Row {
            line: self.line,
            key,
            value: text.to_vec(),
        })
    }
}

/// One `--key` member of a JSON value as key text.
fn key_part(value: &Value, name: &str) -> Result<String, String> {
    let Value::Object(object) = value else {
        return Err(format!(
            "field `{name}` (--key): the line is not a JSON object"
        ));
    };
    // The member named exactly so, else a dotted path into nested objects.
    let found = object.get(name).or_else(|| {
        name.split('.')
            .try_fold(value, |v, segment| v.as_object()?.get(segment))
    });
    match found {
        None => Err(format!("field `{name}` (--key) is missing")),
        Some(Value::Null) => Err(format!("field `{name}` (--key) is null")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(Value::Array(_) | Value::Object(_)) => Err(format!(
            "field `{name}` (--key) is an array or object; a key part must be a string, number or boolean"
        )),
    }
}

impl Iterator for JsonlRows {
    type Item = anyhow::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            let read = self.reader.read_until(b'\n', &mut self.buf);
            self.since_row.set(0);
            match read {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    // A UTF-8 byte order mark (as some editors write) is not JSON.
                    if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                        self.buf.drain(..3);
                    }
                    let start = self
                        .buf
                        .iter()
                        .position(|b| !b.is_ascii_whitespace())
                        .unwrap_or(self.buf.len());
                    let end = self
                        .buf
                        .iter()
                        .rposition(|b| !b.is_ascii_whitespace())
                        .map_or(start, |e| e + 1);
                    if start >= end {
                        continue;
                    }
                    let row = self
                        .convert(&self.buf[start..end], start)
                        .map_err(|e| anyhow!("{}: line {}, {e}", self.path.display(), self.line));
                    self.done = row.is_err();
                    return Some(row);
                }
                Err(e) if is_row_too_long(&e) => {
                    self.done = true;
                    return Some(Err(anyhow!(
                        "{}: line {}: {e}; nothing was imported",
                        self.path.display(),
                        self.line + 1
                    )));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(anyhow!(
                        "{}: after line {}: {e}",
                        self.path.display(),
                        self.line
                    )));
                }
            }
        }
        None
    }
}
