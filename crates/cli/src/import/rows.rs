//! A file's rows, converted to records in file order: the reader by format, the file's
//! identity, the per-row byte cap, the log's limits, the request body.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use anyhow::{Context, bail};
use flate2::read::MultiGzDecoder;
use logbook_log::limits as log_limits;
use serde_json::Value;

use super::input::Input;

/// A stable identity of the file: XXH3-64 of its content (decompressed if it is gzipped, so
/// compressing the same file again does not change it), and its size as stored.
pub(super) fn file_identity(path: &Path) -> anyhow::Result<(u64, u64)> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .len();
    let mut content = open_decompressed(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = content
            .read(&mut buf)
            .with_context(|| format!("{}: reading", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((hasher.digest(), size))
}

/// One row of the file, converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    /// Line on which the row begins (1-based; a CSV header is line 1).
    pub(super) line: u64,
    pub(super) key: Option<String>,
    /// The value as JSON text.
    pub(super) value: Vec<u8>,
}

/// `{"key": …, "value": …}`, the body of a single-record append.
pub(super) fn request_body(row: &Row) -> Vec<u8> {
    let key = row.key.as_deref().map(|k| Value::from(k).to_string());
    let mut body = Vec::with_capacity(row.value.len() + key.as_ref().map_or(0, String::len) + 20);
    body.push(b'{');
    if let Some(k) = key {
        body.extend_from_slice(b"\"key\":");
        body.extend_from_slice(k.as_bytes());
        body.push(b',');
    }
    body.extend_from_slice(b"\"value\":");
    body.extend_from_slice(&row.value);
    body.push(b'}');
    body
}

/// The log's limits, checked in pass 1 so that an oversized row stops the import before
/// anything is sent (the server checks them again).
pub(super) fn check_limits(input: &Input, row: &Row) -> anyhow::Result<()> {
    let key = row.key.as_ref().map_or(0, String::len);
    if key > log_limits::KEY_BYTES_MAX as usize {
        bail!(
            "{}: line {}: the key is {key} bytes; the log's limit is {}; nothing was imported",
            input.path.display(),
            row.line,
            log_limits::KEY_BYTES_MAX
        );
    }
    if key + row.value.len() > log_limits::RECORD_BYTES_MAX as usize {
        bail!(
            "{}: line {}: the record is {} bytes; the log's limit is {}; nothing was imported",
            input.path.display(),
            row.line,
            key + row.value.len(),
            log_limits::RECORD_BYTES_MAX
        );
    }
    Ok(())
}

/// The file's bytes, decompressed if its name ends in `.gz`.
fn open_decompressed(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let gzipped = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if gzipped {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// Most bytes read for one row: the log's record limit, plus room for the reader's read-ahead
/// buffer, whitespace and CSV quoting. Without a cap, one huge line would be buffered whole.
const ROW_BYTES_MAX: u64 = log_limits::RECORD_BYTES_MAX as u64 + (64 << 10);

/// A reader that fails once more than [`ROW_BYTES_MAX`] bytes were read since the row
/// iterator last reset `since_row` (after each row).
pub(super) struct RowCap {
    inner: Box<dyn Read>,
    since_row: Rc<Cell<u64>>,
}

impl Read for RowCap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let used = self.since_row.get();
        if used >= ROW_BYTES_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RowTooLong,
            ));
        }
        let room = usize::try_from(ROW_BYTES_MAX - used).unwrap_or(usize::MAX);
        let n = buf.len().min(room);
        let n = self.inner.read(&mut buf[..n])?;
        self.since_row.set(used + n as u64);
        Ok(n)
    }
}

/// The error of [`RowCap`].
#[derive(Debug)]
struct RowTooLong;

impl std::fmt::Display for RowTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "longer than {} bytes: the log's record limit is {} bytes",
            ROW_BYTES_MAX,
            log_limits::RECORD_BYTES_MAX
        )
    }
}

impl std::error::Error for RowTooLong {}

/// Whether an I/O error is [`RowCap`]'s.
pub(super) fn is_row_too_long(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<RowTooLong>())
}

/// The input's bytes, decompressed, capped per row; the counter to reset after each row.
pub(super) fn open_capped(path: &Path) -> anyhow::Result<(RowCap, Rc<Cell<u64>>)> {
    let since_row = Rc::new(Cell::new(0));
    let reader = RowCap {
        inner: open_decompressed(path)?,
        since_row: since_row.clone(),
    };
    Ok((reader, since_row))
}

#[cfg(test)]
mod tests {
    use super::*;
    // The readers are tested through the dispatch by format, as the import uses them.
    use crate::import::source::rows;

    fn input(dir: &tempfile::TempDir, name: &str, text: &str, key: &[&str]) -> Input {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Input::new(path, None, key.iter().map(|k| k.to_string()).collect()).unwrap()
    }

    fn all(input: &Input) -> Vec<Result<Row, String>> {
        rows(input)
            .unwrap()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    fn value(row: &Result<Row, String>) -> String {
        String::from_utf8(row.as_ref().unwrap().value.clone()).unwrap()
    }

    #[test]
    fn csv_fields_are_typed_and_keys_joined() {
        let dir = tempfile::tempdir().unwrap();
        let i = input(
            &dir,
            "a.csv",
            "carrier,flight,delay,ratio,tail,zip,big\n\
             UA,1545,-2,0.5,N14228,007,99999999999999999999\n\
             AA,11,NA,,\"a \"\"q\"\"\",1e3,1.5e999\n",
            &["carrier", "flight"],
        );
        let rows = all(&i);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].as_ref().unwrap().line, 2);
        assert_eq!(rows[0].as_ref().unwrap().key.as_deref(), Some("UA|1545"));
        assert_eq!(
            value(&rows[0]),
            r#"{"carrier":"UA","flight":1545,"delay":-2,"ratio":0.5,"tail":"N14228","zip":"007","big":"99999999999999999999"}"#
        );
        assert_eq!(
            value(&rows[1]),
            r#"{"carrier":"AA","flight":11,"delay":null,"ratio":null,"tail":"a \"q\"","zip":1e3,"big":"1.5e999"}"#
        );
        // Every value is valid JSON.
        for r in &rows {
            let _: Value = serde_json::from_str(&value(r)).unwrap();
        }
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let missing = input(&dir, "m.csv", "a,b\n1,2\n", &["a"]);
        let missing = Input {
            key: vec!["c".into()],
            ..missing
        };
        let e = rows(&missing).err().unwrap().to_string();
        assert!(e.contains("line 1: no column `c` for --key"), "{e}");
        assert!(e.contains("the header has: a, b"), "{e}");

        let short = input(&dir, "s.csv", "a,b,c\n1,2,3\n4,5\n", &[]);
        let short = all(&short);
        assert_eq!(short.len(), 2);
        let e = short[1].as_ref().unwrap_err();
        assert!(e.contains("line 3, column 3 (`c`) is missing"), "{e}");

        let na_key = input(&dir, "k.csv", "a,b\nx,1\nNA,2\n", &["a"]);
        let e = all(&na_key)[1].clone().unwrap_err();
        assert!(
            e.contains("line 3, column 1 (`a`): is NA but is part of the key"),
            "{e}"
        );

        let dup = input(&dir, "d.csv", "a,b,a\n", &[]);
        let e = rows(&dup).err().unwrap().to_string();
        assert!(e.contains("line 1, column 3: `a` is also column 1"), "{e}");
    }

    #[test]
    fn jsonl_lines_are_values_and_errors_name_line_column_field() {
        let dir = tempfile::tempdir().unwrap();
        let i = input(
            &dir,
            "e.jsonl",
            "{\"user\":{\"id\":7},\"n\":1}\n\n  {\"user\":{\"id\":\"x\"}}\r\n",
            &["user.id"],
        );
        let rows = all(&i);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].as_ref().unwrap().key.as_deref(), Some("7"));
        assert_eq!(rows[1].as_ref().unwrap().line, 3);
        assert_eq!(value(&rows[1]), r#"{"user":{"id":"x"}}"#);

        let bad = input(&dir, "b.jsonl", "{\"id\":1}\n  {\"id\": 2,}\n", &["id"]);
        let e = all(&bad)[1].clone().unwrap_err();
        assert!(e.contains("line 2, column 12: not valid JSON"), "{e}");
        assert!(!e.contains("at line 1"), "{e}");

        let nokey = input(&dir, "n.jsonl", "{\"id\":1}\n{\"other\":2}\n", &["id"]);
        let e = all(&nokey)[1].clone().unwrap_err();
        assert!(e.contains("line 2, field `id` (--key) is missing"), "{e}");
    }

    #[test]
    fn request_bodies_are_single_record_appends() {
        let row = Row {
            line: 2,
            key: Some("a|\"b".into()),
            value: b"{\"x\":1}".to_vec(),
        };
        let body: Value = serde_json::from_slice(&request_body(&row)).unwrap();
        assert_eq!(body, serde_json::json!({"key": "a|\"b", "value": {"x": 1}}));
        let unkeyed = Row { key: None, ..row };
        let body: Value = serde_json::from_slice(&request_body(&unkeyed)).unwrap();
        assert_eq!(body, serde_json::json!({"value": {"x": 1}}));
    }

    #[test]
    fn a_huge_line_fails_naming_it_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Past the cap even after the readers' read-ahead (8 KiB) counted towards the row before.
        let huge = "x".repeat(ROW_BYTES_MAX as usize + (16 << 10));
        let csv = input(&dir, "h.csv", &format!("a\n1\n{huge}\n2\n"), &[]);
        let rows = all(&csv);
        assert_eq!(rows.len(), 2);
        let e = rows[1].clone().unwrap_err();
        assert!(e.contains("h.csv: line 3: longer than"), "{e}");
        let jsonl = input(&dir, "h.jsonl", &format!("1\n\"{huge}\"\n2\n"), &[]);
        let rows = all(&jsonl);
        assert_eq!(rows.len(), 2);
        let e = rows[1].clone().unwrap_err();
        assert!(e.contains("h.jsonl: line 2: longer than"), "{e}");
        // Many rows, each within the limit, read fine: the cap is per row.
        let line = format!("\"{}\"\n", "y".repeat(1 << 19));
        let many = input(&dir, "m.jsonl", &line.repeat(24), &[]);
        assert!(all(&many).iter().all(Result::is_ok));
    }

    #[test]
    fn a_bom_on_line_1_is_skipped_and_duplicate_key_columns_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let i = input(&dir, "b.jsonl", "\u{feff}{\"id\":1}\n", &["id"]);
        let rows = all(&i);
        assert_eq!(value(&rows[0]), r#"{"id":1}"#);
        let e = Input::new("x.csv".into(), None, vec!["id".into(), "id".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`id` is named twice"), "{e}");
    }

    #[test]
    fn the_identity_is_the_decompressed_content() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"a,b\n1,2\n";
        let plain = dir.path().join("p.csv");
        std::fs::write(&plain, text).unwrap();
        let mut ids = vec![file_identity(&plain).unwrap().0];
        for mtime in [1, 2] {
            let gz = dir.path().join(format!("p{mtime}.csv.gz"));
            let mut enc = flate2::GzBuilder::new()
                .mtime(mtime)
                .write(File::create(&gz).unwrap(), flate2::Compression::default());
            std::io::Write::write_all(&mut enc, text).unwrap();
            enc.finish().unwrap();
            ids.push(file_identity(&gz).unwrap().0);
        }
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    }
}
