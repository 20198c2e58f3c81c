//! The background scrubber (issue 18, item 2): a pass reads every sealed segment once and
//! nothing else, each step stays within its byte budget (the rate limit is this accounting,
//! not a timer), and damage in a sealed segment is named by file and byte offset while the
//! log keeps running.

#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

mod common;

use common::{SimDir, batches, partition_dir, sample_record, segment_path};
use logbook_log::format::SEGMENT_HEADER_BYTES;
use logbook_log::{Log, Record, ScrubStep, Scrubber, StreamConfig};

/// A log on simulated storage with stream `s` of `partitions` partitions in 4 KiB segments,
/// each partition given `appends` appends of 1 to 3 sample records.
fn build(partitions: u32, appends: u64) -> (SimDir, Log) {
    let dir = SimDir::new();
    let log = dir.open().unwrap();
    let config = StreamConfig {
        segment_bytes_max: 4096,
        ..StreamConfig::with_partitions(partitions)
    };
    let stream = log.create_stream("s", config).unwrap();
    let mut i = 0;
    for p in 0..partitions {
        for a in 0..appends {
            let records: Vec<Record> = (0..=a % 3)
                .map(|_| {
                    i += 1;
                    sample_record(i)
                })
                .collect();
            stream.append_to(p, &records).unwrap().wait().unwrap();
        }
    }
    (dir, log)
}

/// The sealed segments of partition `p` of `s` (every segment but the last): base offsets.
fn sealed_bases(dir: &SimDir, p: u32) -> Vec<u64> {
    let mut bases = dir.segment_bases(&partition_dir("s", p));
    bases.pop();
    bases
}

/// Steps a fresh scrubber with `budget` until it finishes a pass; every step's account.
fn one_pass(log: &Log, budget: u64) -> Vec<ScrubStep> {
    let mut scrubber = Scrubber::new();
    let mut steps = Vec::new();
    loop {
        let step = scrubber.step(log, budget);
        let done = step.pass_finished;
        assert!(
            step.bytes > 0 || done,
            "a step with a budget of {budget} made no progress"
        );
        steps.push(step);
        if done {
            return steps;
        }
        assert!(steps.len() < 1_000_000, "the pass never ended");
    }
}

#[test]
fn a_pass_reads_every_sealed_byte_once_and_each_step_stays_within_its_budget() {
    let (dir, log) = build(2, 120);
    let mut sealed_bytes = 0u64;
    let mut sealed_segments = 0u64;
    let mut sealed_batches = 0u64;
    let mut largest_batch = 0u64;
    for p in 0..2 {
        let bases = sealed_bases(&dir, p);
        assert!(bases.len() >= 3, "the test needs several sealed segments");
        for base in bases {
            let bytes = dir.bytes(&segment_path("s", p, base));
            sealed_bytes += bytes.len() as u64;
            sealed_segments += 1;
            for span in batches(&bytes) {
                sealed_batches += 1;
                largest_batch = largest_batch.max(span.len);
            }
        }
    }
    // Budgets below one batch, around a segment, and larger than the whole log.
    for budget in [100, 1000, 4096, 10_000, u64::MAX] {
        let steps = one_pass(&log, budget);
        let total: u64 = steps.iter().map(|s| s.bytes).sum();
        assert_eq!(total, sealed_bytes, "budget {budget}: bytes of one pass");
        let segments: u64 = steps.iter().map(|s| s.segments).sum();
        assert_eq!(segments, sealed_segments, "budget {budget}: segments");
        let batches: u64 = steps.iter().map(|s| s.batches).sum();
        assert_eq!(batches, sealed_batches, "budget {budget}: batches");
        for (i, step) in steps.iter().enumerate() {
            assert!(step.findings.is_empty(), "{:?}", step.findings);
            let cap = budget.max(largest_batch);
            assert!(
                step.bytes <= cap,
                "budget {budget}: step {i} read {} bytes (largest batch {largest_batch})",
                step.bytes
            );
            // A step that did not end the pass stopped only for want of room.
            if !step.pass_finished {
                let floor = budget.saturating_sub(largest_batch.max(SEGMENT_HEADER_BYTES as u64));
                assert!(
                    step.bytes >= floor,
                    "budget {budget}: step {i} stopped early"
                );
            }
        }
    }
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_named_by_file_and_offset_while_the_log_runs() {
    let (dir, log) = build(1, 120);
    let bases = sealed_bases(&dir, 0);
    let damaged = segment_path("s", 0, bases[1]);
    let spans = batches(&dir.bytes(&damaged));
    let third = spans[2];
    dir.sim.corrupt(&damaged, third.pos + 45, 0x10).unwrap();
    // A segment header damaged too, in another sealed segment.
    let bad_header = segment_path("s", 0, bases[2]);
    dir.sim.corrupt(&bad_header, 20, 0x01).unwrap();

    let steps = one_pass(&log, 4096);
    let findings: Vec<_> = steps.iter().flat_map(|s| s.findings.clone()).collect();
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert_eq!(findings[0].path, damaged);
    assert_eq!(findings[0].file_offset, third.pos);
    assert_eq!(
        (findings[0].stream.as_str(), findings[0].partition),
        ("s", 0)
    );
    assert!(
        findings[0].reason.contains("checksum"),
        "{}",
        findings[0].reason
    );
    assert_eq!(findings[1].path, bad_header);
    assert_eq!(findings[1].file_offset, 0);
    // Every sealed segment was still visited, and the log still takes appends.
    let segments: u64 = steps.iter().map(|s| s.segments).sum();
    assert_eq!(segments, bases.len() as u64);
    let stream = log.stream("s").unwrap();
    stream
        .append_to(0, &[sample_record(9999)])
        .unwrap()
        .wait()
        .unwrap();
    // The next pass finds the same damage again (reporting it once is the thread's job).
    let again: usize = one_pass(&log, u64::MAX)
        .iter()
        .map(|s| s.findings.len())
        .sum();
    assert_eq!(again, 2);
}

#[test]
fn a_log_without_sealed_segments_reads_nothing_and_finishes_no_pass() {
    let (_dir, log) = build(1, 3);
    let mut scrubber = Scrubber::new();
    let step = scrubber.step(&log, u64::MAX);
    assert_eq!(step, ScrubStep::default());
}
