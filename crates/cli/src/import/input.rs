//! What to import: the file, how its rows become records ([`Format`]) and which fields form
//! the key, checked together ([`Input::new`]) before anything is read. Every other module of
//! `import` depends on this one, none the other way.

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;

/// How a file's rows become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CSV with a header line: one JSON object per row; integers and decimals become
    /// numbers, empty fields and `NA` null, everything else strings.
    Csv,
    /// JSON Lines: one JSON value per line (stored as parsed JSON); blank lines are skipped.
    Jsonl,
    /// nycflights13's flights table (the bundled sample): its column types and the key
    /// `year-month-day|carrier|flight|origin`, as `logbook quickstart` imports it.
    Nycflights,
}

/// What to import: a file, how to read it, which fields form the key.
#[derive(Debug, Clone)]
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// How to read it.
    pub format: Format,
    /// Key columns / members, joined with `|`; empty: unkeyed records.
    pub key: Vec<String>,
}

impl Input {
    /// Checks the combination and picks the format from the extension when none is given.
    ///
    /// # Errors
    /// An unknown extension without `--format`; `--key` with `nycflights` (its key is fixed);
    /// an empty key column name.
    pub fn new(path: PathBuf, format: Option<Format>, key: Vec<String>) -> anyhow::Result<Input> {
        let format = match format {
            Some(f) => f,
            None => format_of(&path)?,
        };
        if format == Format::Nycflights && !key.is_empty() {
            bail!(
                "--key does not apply to --format nycflights: its key is year-month-day|carrier|flight|origin"
            );
        }
        if key.iter().any(|k| k.trim().is_empty()) {
            bail!("--key: empty column name (expected e.g. --key carrier,flight)");
        }
        for (i, k) in key.iter().enumerate() {
            if key[..i].contains(k) {
                bail!("--key: `{k}` is named twice; name each column once");
            }
        }
        Ok(Input { path, format, key })
    }
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".csv") {
        Ok(Format::Csv)
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Ok(Format::Jsonl)
    } else {
        bail!(
            "{}: cannot tell the format from the name (expected .csv, .jsonl or .ndjson, optionally .gz); pass --format",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_name() {
        for (name, f) in [
            ("a.csv", Format::Csv),
            ("a.CSV.gz", Format::Csv),
            ("a.jsonl.gz", Format::Jsonl),
            ("a.ndjson", Format::Jsonl),
        ] {
            assert_eq!(format_of(Path::new(name)).unwrap(), f, "{name}");
        }
        let e = format_of(Path::new("a.txt")).unwrap_err().to_string();
        assert!(e.contains("pass --format"), "{e}");
        let e = Input::new("x.csv".into(), Some(Format::Nycflights), vec!["a".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--key does not apply"), "{e}");
    }
}
