//! How a text log line writes its fields (`name=value`), without colours made of nothing.
//!
//! `tracing-subscriber`'s default field formatter styles every field name (italic) and its
//! `=` (dimmed) through `nu-ansi-term` even when colours are off: the styles are empty, but
//! each costs a pass through the formatting machinery. The server formats its request span's
//! fields on every request, so that was ~850 instructions a field, a request.
//! [`PlainFields`] writes an ordinary field as `name={value:?}` directly — the text the
//! default writes without colours — and leaves everything else to the default formatter:
//! any field when colours are on, the message (which it sanitizes of terminal escapes),
//! errors (with their sources) and raw (`r#`) names. Like the default, it skips the `log.`
//! metadata of records bridged from the `log` crate.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// The field formatter of text logs (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> PlainVisitor<'a> {
        PlainVisitor {
            writer,
            empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one set of fields (a span's or an event's), space-separated.
#[derive(Debug)]
pub struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: the next field needs no separating space.
    empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Whether `field` is written here rather than by the default formatter.
    fn plain(&self, field: &Field) -> bool {
        let name = field.name();
        !self.writer.has_ansi_escapes() && name != "message" && !name.starts_with("r#")
    }

    /// Has the default formatter write one field, after this visitor's.
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut inner = DefaultVisitor::new(self.writer.by_ref(), self.empty);
        record(&mut inner);
        self.result = inner.finish();
        self.empty = false;
    }
}

/// Metadata of a record from the `log` crate (`log.target`, `log.file`, …): the line shows
/// it already, and the default formatter writes nothing for it either (not even a space).
fn log_metadata(field: &Field) -> bool {
    field.name().starts_with("log.")
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() || log_metadata(field) {
            return;
        }
        if self.plain(field) {
            // The default writes a string field with its Debug form (quoted) too.
            self.record_debug(field, &value);
        } else {
            self.delegate(|v| v.record_str(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.delegate(|v| v.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || log_metadata(field) {
            return;
        }
        if !self.plain(field) {
            self.delegate(|v| v.record_debug(field, value));
            return;
        }
        if !self.empty {
            self.result = self.writer.write_char(' ');
        }
        self.empty = false;
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(field.name()))
            .and_then(|()| self.writer.write_char('='))
            .and_then(|()| write!(self.writer, "{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Every kind of field, in spans and events, as the server and the libraries log them.
    fn log_everything() {
        let span = tracing::info_span!(
            "request",
            method = %"GET",
            route = %logbook_api::paths::route::VIEW_ROW,
            request_id = Some(tracing::field::display("req-1")),
            traceparent = None::<tracing::field::DisplayValue<&str>>,
        );
        let _in = span.enter();
        let inner = tracing::info_span!("inner", n = 3, flag = true, text = "quoted \"str\"");
        let _inner = inner.enter();
        tracing::info!("a message with \x1b[31m an escape");
        tracing::warn!(
            status = 500u16,
            code = "internal",
            elapsed_us = 12u64,
            "request failed"
        );
        let io = std::io::Error::other("disk gone");
        tracing::error!(
            error = &Outer(io) as &(dyn std::error::Error + 'static),
            "with sources"
        );
        tracing::info!(r#type = "raw", neg = -4i64, float = 1.5f64, dbg = ?vec![1, 2], "tail");
        tracing::info!(empty = "", "");
        tracing::info!("log.target" = "bridged", after = 1, "from the log crate");
    }

    fn text_of(plain: bool, ansi: bool) -> String {
        let buffer = Buffer::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(ansi)
            .without_time()
            .with_max_level(tracing::Level::TRACE);
        if plain {
            let subscriber = builder.fmt_fields(PlainFields).finish();
            tracing::subscriber::with_default(subscriber, log_everything);
        } else {
            tracing::subscriber::with_default(builder.finish(), log_everything);
        }
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    /// The plain formatter writes what the default one does, byte for byte, with colours
    /// off and on.
    #[test]
    fn plain_fields_write_what_the_default_writes() {
        for ansi in [false, true] {
            let (plain, default) = (text_of(true, ansi), text_of(false, ansi));
            assert_eq!(plain, default, "ansi {ansi}");
            assert_eq!(plain.lines().count(), 6, "{plain}");
        }
        let text = text_of(true, false);
        assert!(
            text.contains("request{method=GET route=/v1/views/{view}/rows/{key} request_id=req-1}"),
            "{text}"
        );
        assert!(!text.contains("traceparent"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }
}
