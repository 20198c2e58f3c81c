//! The rows of an input, read by the reader its format names.

use super::csv_rows::CsvRows;
use super::input::{Format, Input};
use super::jsonl_rows::JsonlRows;
use super::rows::Row;
use crate::flights;

type Rows = Box<dyn Iterator<Item = anyhow::Result<Row>>>;

/// The rows of the input, converted, in file order. Reading stops after the first error.
pub(super) fn rows(input: &Input) -> anyhow::Result<Rows> {
    Ok(match input.format {
        Format::Nycflights => {
            let mut reader = flights::read_flights(&input.path)?;
            Box::new(std::iter::from_fn(move || {
                let next = reader.next()?;
                let line = reader.line();
                Some(next.map(|f| Row {
                    line,
                    key: Some(f.key),
                    value: f.value,
                }))
            }))
        }
        Format::Csv => Box::new(CsvRows::open(input)?),
        Format::Jsonl => Box::new(JsonlRows::open(input)?),
    })
}
