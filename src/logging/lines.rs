//! The helpers' logger: each event as one tagged line in tracing-subscriber's full
//! format (`TIME LEVEL target: message field=value …`), written with one write(2).
//!
//! It is a subscriber of its own rather than `tracing_subscriber::fmt()` because that
//! one sits on the span `Registry`, whose slab allocates and zero-fills a table of
//! 4,096 per-thread shards (32 KiB) when it is made: resident for the life of every
//! monitor and shared with its FUSE server, while the helpers open no spans. The
//! filter stays `EnvFilter`, as a layer on top.

use std::fmt::{Debug, Write as _};
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// Writes each event as a line to `file`, `tag` first.
pub(super) struct Lines {
    file: Arc<File>,
    tag: String,
    next_span: AtomicU64,
}

impl Lines {
    pub(super) fn new(file: Arc<File>, tag: String) -> Lines {
        Lines {
            file,
            tag,
            next_span: AtomicU64::new(1),
        }
    }

    /// The line for an event with `meta` whose fields `record` visits.
    pub(super) fn format(&self, meta: &Metadata<'_>, record: impl FnOnce(&mut Fields)) -> String {
        let mut line = String::with_capacity(160);
        line.push_str(&self.tag);
        let _ = SystemTime.format_time(&mut Writer::new(&mut line));
        let _ = write!(line, " {:>5} {}: ", meta.level().as_str(), meta.target());
        let mut fields = Fields::default();
        record(&mut fields);
        line.push_str(&fields.message);
        if !fields.message.is_empty() && !fields.rest.is_empty() {
            line.push(' ');
        }
        line.push_str(&fields.rest);
        line.push('\n');
        line
    }
}

/// An event's fields: the message, and the others as `name=value`.
#[derive(Default)]
pub(super) struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if !self.rest.is_empty() {
            self.rest.push(' ');
        }
        let name = field.name();
        let _ = write!(
            self.rest,
            "{}={value:?}",
            name.strip_prefix("r#").unwrap_or(name)
        );
    }
}

impl Subscriber for Lines {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        // The EnvFilter layer above decides.
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Spans are not shown; each still needs an id of its own (never 0).
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = self.format(event.metadata(), |f| event.record(f));
        // A log that cannot be written loses the line; the helper goes on.
        let _ = (&*self.file).write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn events_are_tagged_lines_in_the_full_format_and_filtered() {
        let mut file = tempfile::tempfile().expect("tempfile");
        let lines = Lines::new(
            Arc::new(file.try_clone().expect("dup")),
            "[container c1] ".into(),
        );
        let sub = lines.with(super::super::filter("info"));
        tracing::subscriber::with_default(sub, || {
            tracing::info!(pid = 7, name = "x", "started {}", "it");
            tracing::debug!("not shown");
            let span = tracing::info_span!("outer", id = 1);
            let _g = span.enter();
            tracing::warn!(error = %std::io::Error::other("gone"), "cannot");
        });
        let mut text = String::new();
        file.rewind().expect("rewind");
        file.read_to_string(&mut text).expect("read");
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 2, "{text}");
        // [tag] 2026-12-07T04:05:06.123456Z  INFO skiff::...: message fields
        let rest = got[0]
            .strip_prefix("[container c1] ")
            .expect("the tag first");
        let (time, rest) = rest.split_once(' ').expect("a time");
        assert!(time.ends_with('Z') && time.contains('T'), "{time}");
        assert_eq!(
            rest,
            format!(" INFO {}: started it pid=7 name=\"x\"", module_path!())
        );
        assert!(
            got[1].ends_with(&format!(" WARN {}: cannot error=gone", module_path!())),
            "{}",
            got[1]
        );
    }

    /// The same events through tracing-subscriber's own formatter (the oracle), times cut.
    #[test]
    fn lines_match_tracing_subscriber_s_full_format() {
        fn emit() {
            tracing::info!(pid = 7, name = "x", "started {}", "it");
            tracing::warn!(error = %std::io::Error::other("gone"), path = ?"/a b", "cannot");
            tracing::error!(code = 3_u8);
        }
        let untimed = |text: &str| -> Vec<String> {
            text.lines()
                .map(|l| {
                    l.split_once(' ')
                        .map(|(_, r)| r.to_string())
                        .unwrap_or_default()
                })
                .collect()
        };
        let mut file = tempfile::tempfile().expect("tempfile");
        let lines = Lines::new(Arc::new(file.try_clone().expect("dup")), String::new());
        tracing::subscriber::with_default(lines.with(super::super::filter("info")), emit);
        let mut ours = String::new();
        file.rewind().expect("rewind");
        file.read_to_string(&mut ours).expect("read");

        let theirs = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = theirs.clone();
        let fmt = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(super::super::filter("info"))
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(fmt, emit);
        let theirs = String::from_utf8(theirs.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(
            untimed(&ours),
            untimed(&theirs),
            "ours:\n{ours}\ntheirs:\n{theirs}"
        );
    }

    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
