//! Damage on the medium: flipped bytes, torn tails, lost or stale index files, and files
//! of a format version this build does not read.
//!
//! The rule under test (docs/DESIGN.md, rule 5): a torn *tail* — the incomplete last batch an
//! interrupted write leaves — is truncated on open, since it was never acknowledged; damage
//! anywhere else is an error that names the file and the byte offset of the damaged batch,
//! and is never skipped or "repaired" silently. `verify` reports the same file and offset.
//!
//! Damage is made with [`SimStorage::corrupt`] and [`SimStorage::truncate`], which change a
//! file's current and durable bytes alike, as the medium would.
//!
//! [`SimStorage::corrupt`]: logbook_log::sim::SimStorage::corrupt
//! [`SimStorage::truncate`]: logbook_log::sim::SimStorage::truncate

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use std::path::{Path, PathBuf};

use common::{
    BatchSpan, DATA_DIR, START_MS, SimDir, batches, index_path, partition_dir, sample_record,
    segment_path, stored, stream_dir,
};
use logbook_log::format::{FORMAT_VERSION, SEGMENT_HEADER_BYTES};
use logbook_log::verify::{ProblemKind, VerifyReport, verify_dir};
use logbook_log::{Log, LogError, Record, StoredRecord, StreamConfig};

/// Opens a fresh log, creates stream `s` (one partition, `segment_bytes_max`), appends each
/// batch (waiting for each acknowledgment), and closes it. Returns the directory and every
/// record as it must read back. The clock stays at [`START_MS`].
fn build(segment_bytes_max: u64, appends: &[Vec<Record>]) -> (SimDir, Vec<StoredRecord>) {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig {
        segment_bytes_max,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("s", config).unwrap();
    let mut expected = Vec::new();
    for batch in appends {
        let ack = stream.append_to(0, batch).unwrap().wait().unwrap();
        assert_eq!(ack.base_offset, expected.len() as u64);
        for record in batch {
            expected.push(stored(expected.len() as u64, record, START_MS));
        }
    }
    (dir, expected)
}

/// `count` appends of `per_batch` records each, made of [`sample_record`]s.
fn sample_appends(count: u64, per_batch: u64) -> Vec<Vec<Record>> {
    (0..count)
        .map(|b| {
            (0..per_batch)
                .map(|i| sample_record(b * per_batch + i))
                .collect()
        })
        .collect()
}

/// Small records, so that flipping every byte of a batch stays cheap.
fn small_appends(count: u64, per_batch: u64) -> Vec<Vec<Record>> {
    (0..count)
        .map(|b| {
            (0..per_batch)
                .map(|i| {
                    let n = b * per_batch + i;
                    Record::keyed(format!("k{n}"), format!("value {n}")).with_header("h", "x")
                })
                .collect()
        })
        .collect()
}

fn read_all(log: &Log) -> Vec<StoredRecord> {
    log.stream("s")
        .unwrap()
        .read(0, 0, usize::MAX, usize::MAX)
        .unwrap()
}

fn verify(dir: &SimDir) -> VerifyReport {
    verify_dir(&dir.sim, Path::new(DATA_DIR)).unwrap()
}

/// Asserts that `verify` reports exactly one problem: `kind` in `path` at `file_offset`.
fn assert_one_problem(dir: &SimDir, kind: ProblemKind, path: &Path, file_offset: u64) {
    let report = verify(dir);
    let found: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.kind, p.path.clone(), p.file_offset))
        .collect();
    assert_eq!(
        found,
        vec![(kind, path.to_path_buf(), file_offset)],
        "verify report: {:?}",
        report.problems
    );
}

/// Asserts that `result` is `Corrupt` naming `path` and `file_offset`.
fn assert_corrupt<T: std::fmt::Debug>(
    result: Result<T, LogError>,
    path: &Path,
    file_offset: u64,
    what: &str,
) {
    match result {
        Err(LogError::Corrupt {
            path: p,
            file_offset: at,
            ..
        }) => assert_eq!((p.as_path(), at), (path, file_offset), "{what}"),
        other => panic!(
            "{what}: expected Corrupt in {} at {file_offset}, got {other:?}",
            path.display()
        ),
    }
}

/// The segment header with `version` in its version field and a matching checksum, so the
/// only thing wrong with it is the version.
fn header_with_version(header: &[u8], version: u32) -> Vec<u8> {
    let mut header = header[..SEGMENT_HEADER_BYTES].to_vec();
    header[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

#[test]
fn a_damaged_batch_in_the_active_segment_fails_open_naming_file_and_offset() {
    let (dir, expected) = build(1 << 20, &sample_appends(10, 2));
    let path = segment_path("s", 0, 0);
    let spans = batches(&dir.bytes(&path));
    assert_eq!(spans.len(), 10, "one active segment holding every batch");

    for victim in &spans[..spans.len() - 1] {
        let at = victim.pos + victim.len / 2;
        dir.sim.corrupt(&path, at, 0x40).unwrap();
        let damaged = dir.bytes(&path);

        assert_corrupt(dir.open(), &path, victim.pos, "open");
        assert_eq!(
            dir.bytes(&path),
            damaged,
            "a failed open must leave the damaged file as it was (no truncation)"
        );
        assert_one_problem(&dir, ProblemKind::Corrupt, &path, victim.pos);

        dir.sim.corrupt(&path, at, 0x40).unwrap(); // undo
    }
    let log = dir.open().unwrap();
    assert_eq!(read_all(&log), expected, "the undamaged log opens again");
}

#[test]
fn any_damaged_byte_of_a_batch_followed_by_whole_batches_is_reported_not_truncated() {
    let (dir, expected) = build(1 << 20, &small_appends(6, 3));
    let path = segment_path("s", 0, 0);
    let spans = batches(&dir.bytes(&path));
    let victim = spans[2];
    for at in victim.pos..victim.end() {
        for xor in [0x01, 0x80] {
            dir.sim.corrupt(&path, at, xor).unwrap();
            let what = format!("byte {at} (batch at {}) ^ {xor:#04x}", victim.pos);
            assert_corrupt(dir.open(), &path, victim.pos, &format!("open, {what}"));
            assert_eq!(
                dir.bytes(&path).len() as u64,
                spans[5].end(),
                "{what}: nothing truncated"
            );
            assert_one_problem(&dir, ProblemKind::Corrupt, &path, victim.pos);
            dir.sim.corrupt(&path, at, xor).unwrap(); // undo
        }
    }
    assert_eq!(read_all(&dir.open().unwrap()), expected);
}

#[test]
fn a_damaged_segment_header_fails_open_at_byte_zero() {
    let (dir, _) = build(1 << 20, &small_appends(2, 1));
    let path = segment_path("s", 0, 0);
    for at in 0..SEGMENT_HEADER_BYTES as u64 {
        dir.sim.corrupt(&path, at, 0x10).unwrap();
        assert_corrupt(dir.open(), &path, 0, &format!("header byte {at}"));
        assert_one_problem(&dir, ProblemKind::Corrupt, &path, 0);
        dir.sim.corrupt(&path, at, 0x10).unwrap();
    }
}

/// A log of several 4 KiB segments; returns it with the bases of its segments.
fn multi_segment() -> (SimDir, Vec<StoredRecord>, Vec<u64>) {
    let (dir, expected) = build(4096, &sample_appends(24, 2));
    let bases = dir.segment_bases(&partition_dir("s", 0));
    assert!(
        bases.len() >= 4,
        "want several sealed segments, got {bases:?}"
    );
    (dir, expected, bases)
}

#[test]
fn a_damaged_batch_in_a_sealed_segment_fails_reads_over_it_naming_file_and_offset() {
    let (dir, expected, bases) = multi_segment();
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();

    let sealed = bases[1];
    let path = segment_path("s", 0, sealed);
    let spans = batches(&dir.bytes(&path));
    let victim = *spans.last().unwrap();
    dir.sim
        .corrupt(&path, victim.pos + victim.len / 2, 0x04)
        .unwrap();

    assert_corrupt(
        stream.read(0, 0, usize::MAX, usize::MAX),
        &path,
        victim.pos,
        "a read from 0 over the damaged batch",
    );
    assert_corrupt(
        stream.read(0, victim.base_offset, 1, usize::MAX),
        &path,
        victim.pos,
        "a read starting in the damaged batch",
    );
    // Records before and after the damage are still served.
    let before = victim.base_offset as usize;
    assert_eq!(
        stream.read(0, 0, before, usize::MAX).unwrap(),
        expected[..before]
    );
    let after = bases[2];
    assert_eq!(
        stream.read(0, after, usize::MAX, usize::MAX).unwrap(),
        expected[after as usize..]
    );
    drop(stream);
    drop(log);

    assert_one_problem(&dir, ProblemKind::Corrupt, &path, victim.pos);
    // Never skipped silently: after a reopen either open or the read reports it.
    match dir.open() {
        Err(e) => assert_corrupt(Err::<(), _>(e), &path, victim.pos, "reopen"),
        Ok(log) => assert_corrupt(
            log.stream("s").unwrap().read(0, 0, usize::MAX, usize::MAX),
            &path,
            victim.pos,
            "a read after reopen",
        ),
    }
}

#[test]
fn any_damaged_byte_of_a_sealed_batch_fails_reads_over_it_naming_file_and_offset() {
    let (dir, expected) = build(4096, &small_appends(160, 3));
    let bases = dir.segment_bases(&partition_dir("s", 0));
    assert!(bases.len() >= 3, "{bases:?}");
    let path = segment_path("s", 0, bases[1]);
    let spans = batches(&dir.bytes(&path));
    let log = dir.open().unwrap();
    let stream = log.stream("s").unwrap();
    // The first batch (found through the index), one in the middle and the last one (the
    // segment's end is known from the index).
    for victim in [spans[0], spans[spans.len() / 2], spans[spans.len() - 1]] {
        for at in victim.pos..victim.end() {
            for xor in [0x01, 0x80] {
                dir.sim.corrupt(&path, at, xor).unwrap();
                let what = format!("byte {at} (batch at {}) ^ {xor:#04x}", victim.pos);
                assert_corrupt(
                    stream.read(0, bases[1], usize::MAX, usize::MAX),
                    &path,
                    victim.pos,
                    &format!("read from the segment's start, {what}"),
                );
                assert_corrupt(
                    stream.read(0, victim.base_offset, 1, usize::MAX),
                    &path,
                    victim.pos,
                    &format!("read from the batch, {what}"),
                );
                dir.sim.corrupt(&path, at, xor).unwrap(); // undo
            }
        }
    }
    assert_eq!(read_all(&log), expected);
}

#[test]
fn a_damaged_sealed_segment_without_its_index_fails_open() {
    let (dir, _, bases) = multi_segment();
    let path = segment_path("s", 0, bases[1]);
    let victim = batches(&dir.bytes(&path))[0];
    dir.sim
        .corrupt(&path, victim.pos + victim.len / 2, 0x04)
        .unwrap();
    dir.remove(&index_path("s", 0, bases[1]));
    assert_corrupt(
        dir.open(),
        &path,
        victim.pos,
        "rebuilding the index scans the segment",
    );
}

#[test]
fn a_truncated_last_batch_is_dropped_at_every_byte_position() {
    // The active segment holds a few batches after at least one sealed segment; the last
    // batch has several records, so a partial batch would show as a partial append.
    let mut appends = sample_appends(14, 2);
    appends.push(small_appends(1, 3).remove(0));
    let (reference, expected) = build(4096, &appends);
    let bases = reference.segment_bases(&partition_dir("s", 0));
    let active = *bases.last().unwrap();
    assert!(bases.len() >= 2);
    let path = segment_path("s", 0, active);
    let original = reference.bytes(&path);
    let spans = batches(&original);
    assert!(spans.len() >= 2, "the active segment holds several batches");
    let last: BatchSpan = *spans.last().unwrap();
    assert_eq!(last.end(), original.len() as u64);
    let complete = expected.len() - last.records as usize;

    for len in last.pos..last.end() {
        let (dir, _) = build(4096, &appends);
        dir.sim.truncate(&path, len).unwrap();
        let log = dir.open().unwrap();
        let stream = log.stream("s").unwrap();
        let partition = stream.partition(0).unwrap();
        assert_eq!(
            partition.end_offset(),
            complete as u64,
            "truncated at byte {len}"
        );
        assert_eq!(
            read_all(&log),
            expected[..complete],
            "truncated at byte {len}"
        );
        let kept = &original[..last.pos as usize];
        assert_eq!(dir.bytes(&path), kept, "truncated at byte {len}: file");
        assert_eq!(
            dir.sim.durable_bytes(&path).unwrap(),
            kept,
            "truncated at byte {len}: the truncation is durable"
        );

        let record = sample_record(1000);
        let ack = stream.append(record.clone()).unwrap().wait().unwrap();
        assert_eq!(ack.base_offset, complete as u64, "truncated at byte {len}");
        assert_eq!(
            stream.read(0, ack.base_offset, 10, usize::MAX).unwrap(),
            vec![stored(ack.base_offset, &record, START_MS)]
        );
    }
}

#[test]
fn a_zero_filled_tail_is_dropped() {
    let (dir, expected) = build(1 << 20, &small_appends(4, 2));
    let path = segment_path("s", 0, 0);
    let mut bytes = dir.bytes(&path);
    let len = bytes.len();
    bytes.extend_from_slice(&[0u8; 1000]);
    dir.overwrite(&path, &bytes);
    assert_one_problem(&dir, ProblemKind::TornTail, &path, len as u64);

    let log = dir.open().unwrap();
    assert_eq!(read_all(&log), expected);
    assert_eq!(dir.bytes(&path).len(), len);
    drop(log);
    assert!(verify(&dir).problems.is_empty());
}

/// What a test does to the index file of a sealed segment.
#[derive(Debug, Clone, Copy)]
enum IndexDamage {
    Missing,
    Garbage,
    Truncated,
    /// The (valid) index of another segment in its place.
    OtherSegments,
}

#[test]
fn a_missing_or_stale_index_of_a_sealed_segment_is_rebuilt() {
    for damage in [
        IndexDamage::Missing,
        IndexDamage::Garbage,
        IndexDamage::Truncated,
        IndexDamage::OtherSegments,
    ] {
        let (dir, expected, bases) = multi_segment();
        let sealed = bases[1];
        let path = index_path("s", 0, sealed);
        let original = dir.bytes(&path);
        match damage {
            IndexDamage::Missing => dir.remove(&path),
            IndexDamage::Garbage => dir.overwrite(&path, &[0xA5; 100]),
            IndexDamage::Truncated => dir.overwrite(&path, &original[..original.len() - 3]),
            IndexDamage::OtherSegments => {
                dir.overwrite(&path, &dir.bytes(&index_path("s", 0, bases[0])));
            }
        }
        assert_one_problem(&dir, ProblemKind::StaleIndex, &path, 0);

        let log = dir.open().unwrap();
        assert_eq!(
            dir.sim.file_bytes(&path),
            Some(original.clone()),
            "{damage:?}: the index is rewritten as it was"
        );
        assert_eq!(read_all(&log), expected, "{damage:?}");
        let stream = log.stream("s").unwrap();
        for from in sealed..bases[2] {
            let got = stream.read(0, from, 1, usize::MAX).unwrap();
            assert_eq!(got, expected[from as usize..=from as usize], "{damage:?}");
        }
        drop(stream);
        drop(log);
        assert!(verify(&dir).problems.is_empty(), "{damage:?}");
    }
}

#[test]
fn a_segment_of_an_unsupported_version_is_refused() {
    let (dir, _, bases) = multi_segment();
    for base in [bases[0], *bases.last().unwrap()] {
        let path = segment_path("s", 0, base);
        let original = dir.bytes(&path);
        let mut bytes = header_with_version(&original, 2);
        bytes.extend_from_slice(&original[SEGMENT_HEADER_BYTES..]);
        dir.overwrite(&path, &bytes);
        match dir.open() {
            Err(LogError::UnsupportedFormat {
                path: p,
                found: 2,
                supported,
            }) => {
                assert_eq!(p, path);
                assert_eq!(supported, u32::from(FORMAT_VERSION));
            }
            other => panic!("segment {base}: expected UnsupportedFormat, got {other:?}"),
        }
        assert_eq!(dir.bytes(&path), bytes, "the file is left alone");
        dir.overwrite(&path, &original);
    }
    dir.open().unwrap();
}

#[test]
fn metadata_of_an_unsupported_version_is_refused() {
    let (dir, _) = build(1 << 20, &small_appends(1, 1));
    let files: [(PathBuf, &str, &str); 2] = [
        (
            stream_dir("s").join("stream.json"),
            "\"format_version\": 1",
            "\"format_version\": 9",
        ),
        (
            Path::new(DATA_DIR).join("logbook.json"),
            "\"format_version\":1",
            "\"format_version\":9",
        ),
    ];
    for (path, from, to) in files {
        let original = dir.bytes(&path);
        let text = String::from_utf8(original.clone()).unwrap();
        assert!(text.contains(from), "{}: {text}", path.display());
        dir.overwrite(&path, text.replace(from, to).as_bytes());
        match dir.open() {
            Err(LogError::UnsupportedFormat {
                path: p, found: 9, ..
            }) => assert_eq!(p, path),
            other => panic!(
                "{}: expected UnsupportedFormat, got {other:?}",
                path.display()
            ),
        }
        dir.overwrite(&path, &original);
    }
    dir.open().unwrap();
}
