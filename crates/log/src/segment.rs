//! One segment: a file of consecutive batches of one partition, and its sparse offset index.
//!
//! ```text
//!  00000000000000001200.log   = segment header (32 B) | batch | batch | ... (append only)
//!  00000000000000001200.index = written once, when the segment is sealed (rolled)
//!                               ^ base offset of the segment, 20 decimal digits
//! ```
//!
//! Invariants of a [`Segment`] (asserted where they change):
//! * batches are contiguous from byte [`SEGMENT_HEADER_BYTES`] to `len`, and their offsets are
//!   dense from `base_offset` to `next_offset`;
//! * index entries are strictly increasing in both offset and position, each points at the
//!   first byte of a batch, and each carries the largest timestamp of the batches before it
//!   (so those are non-decreasing: the time lookup relies on it).
//!
//! The index of the active segment lives only in memory; it is rebuilt by the recovery scan
//! on open, which reads the active segment anyway to find a torn tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{LogError, Result};
use crate::format::{
    self, BATCH_HEADER_BYTES, BatchDefect, BatchHeader, IndexEntry, IndexFile,
    SEGMENT_HEADER_BYTES, SegmentHeader,
};
use crate::limits::INDEX_INTERVAL_BYTES;
use crate::storage::{OpenMode, Storage, StorageFile, replace_durably};

/// File name of the segment starting at `base_offset`.
pub(crate) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// File name of the index of the segment starting at `base_offset`.
pub(crate) fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.index")
}

/// Parses `NNNNNNNNNNNNNNNNNNNN.<ext>` into its base offset.
pub(crate) fn parse_file_name(path: &Path, ext: &str) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// In-memory state of one segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    /// Bytes of the file that hold whole batches (header included).
    pub len: u64,
    /// Offset one past the last record.
    pub next_offset: u64,
    /// Largest record timestamp, `i64::MIN` while empty.
    pub max_timestamp_ms: i64,
    /// Sparse index: offset and time to byte position.
    pub index: Vec<IndexEntry>,
    /// Bytes appended since the last index entry.
    bytes_since_index: u64,
}

impl Segment {
    /// Creates a new, empty segment file with its header and makes it durable (file and
    /// directory entry).
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        partition: u32,
        base_offset: u64,
    ) -> Result<Segment> {
        let path = dir.join(segment_file_name(base_offset));
        let file = storage
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| LogError::io("create segment", &path, e))?;
        let header = SegmentHeader {
            partition,
            base_offset,
        }
        .encode();
        file.write_at(&header, 0)
            .map_err(|e| LogError::io("write", &path, e))?;
        file.sync_data()
            .map_err(|e| LogError::io("fsync", &path, e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| LogError::io("fsync directory", dir, e))?;
        Ok(Segment::empty(base_offset, path, file))
    }

    /// The in-memory state of a segment holding only its header.
    fn empty(base_offset: u64, path: PathBuf, file: Arc<dyn StorageFile>) -> Segment {
        Segment {
            base_offset,
            path,
            file,
            len: SEGMENT_HEADER_BYTES as u64,
            next_offset: base_offset,
            max_timestamp_ms: i64::MIN,
            index: Vec::new(),
            bytes_since_index: u64::MAX, // the first batch always gets an entry
        }
    }

    /// Records that a batch was written at byte `len` (the caller wrote it).
    pub fn note_appended(&mut self, header: &BatchHeader) {
        assert_eq!(
            header.base_offset, self.next_offset,
            "offsets must be dense"
        );
        let position = self.len;
        if self.bytes_since_index >= u64::from(INDEX_INTERVAL_BYTES) {
            let rel = header.base_offset - self.base_offset;
            push_index(&mut self.index, rel, position, self.max_timestamp_ms);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += u64::from(header.batch_bytes);
        self.len += u64::from(header.batch_bytes);
        self.next_offset = header.next_offset();
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
    }

    /// Where to scan from for `offset`: the last index entry at or before it, as (byte
    /// position, base offset of the batch that starts there).
    pub fn position_for(&self, offset: u64) -> (u64, u64) {
        let rel = offset.saturating_sub(self.base_offset);
        let i = self
            .index
            .partition_point(|e| u64::from(e.relative_offset) <= rel);
        self.entry_position(i.checked_sub(1))
    }

    /// Where to scan from for the first record with a timestamp at or after `timestamp_ms`:
    /// the last index entry whose batches before it are all older, as
    /// [`Segment::position_for`] says it. Every batch before that position is older than
    /// `timestamp_ms`, because `max_timestamp_ms_before` is the largest timestamp before it.
    pub fn position_for_timestamp(&self, timestamp_ms: i64) -> (u64, u64) {
        let i = self
            .index
            .partition_point(|e| e.max_timestamp_ms_before < timestamp_ms);
        self.entry_position(i.checked_sub(1))
    }

    /// The byte position and base offset of index entry `i`, or of the first batch.
    fn entry_position(&self, i: Option<usize>) -> (u64, u64) {
        match i.and_then(|i| self.index.get(i)) {
            None => (SEGMENT_HEADER_BYTES as u64, self.base_offset),
            Some(e) => (
                u64::from(e.position),
                self.base_offset
                    .saturating_add(u64::from(e.relative_offset)),
            ),
        }
    }

    /// The index file describing this segment as it is now.
    pub fn index_file(&self) -> IndexFile {
        IndexFile {
            base_offset: self.base_offset,
            segment_bytes: self.len,
            next_offset: self.next_offset,
            max_timestamp_ms: self.max_timestamp_ms,
            entries: self.index.clone(),
        }
    }

    /// Writes this segment's index file durably (temporary file, fsync, rename, fsync dir).
    pub fn write_index(&self, storage: &dyn Storage, dir: &Path) -> Result<()> {
        let path = dir.join(index_file_name(self.base_offset));
        replace_durably(storage, &path, &self.index_file().encode())
    }

    /// Opens a sealed segment: checks its header, and trusts its index file only if it
    /// describes exactly this file; otherwise scans the segment (fully verifying it) and
    /// rewrites the index. Any defect is [`LogError::Corrupt`]: a sealed segment has no tail.
    pub fn open_sealed(
        storage: &dyn Storage,
        dir: &Path,
        partition: u32,
        base_offset: u64,
    ) -> Result<Segment> {
        let (mut segment, file_len) = Self::open_file(storage, dir, partition, base_offset)?;
        let index_path = dir.join(index_file_name(base_offset));
        let index = read_whole(storage, &index_path)
            .ok()
            .and_then(|bytes| IndexFile::decode(&bytes).ok())
            .filter(|ix| ix.base_offset == base_offset && ix.segment_bytes == file_len);
        if let Some(ix) = index {
            segment.len = ix.segment_bytes;
            segment.next_offset = ix.next_offset;
            segment.max_timestamp_ms = ix.max_timestamp_ms;
            segment.index = ix.entries;
            return Ok(segment);
        }
        tracing::info!(segment = %segment.path.display(), "offset index missing or stale; rebuilding it");
        let scan = scan(&*segment.file, &segment.path, base_offset, file_len)?;
        if let Some(defect) = scan.defect {
            return Err(LogError::Corrupt {
                path: segment.path.clone(),
                file_offset: defect.position,
                reason: defect.reason,
            });
        }
        segment.apply_scan(&scan);
        segment.write_index(storage, dir)?;
        Ok(segment)
    }

    /// Opens the active (last) segment: scans it fully; a torn tail is truncated (and the
    /// truncation made durable), a defect with valid data after it is [`LogError::Corrupt`].
    pub fn open_active(
        storage: &dyn Storage,
        dir: &Path,
        partition: u32,
        base_offset: u64,
    ) -> Result<Segment> {
        let (mut segment, file_len) = Self::open_file(storage, dir, partition, base_offset)?;
        let scan = scan(&*segment.file, &segment.path, base_offset, file_len)?;
        if let Some(defect) = &scan.defect {
            if !defect.torn {
                return Err(LogError::Corrupt {
                    path: segment.path.clone(),
                    file_offset: defect.position,
                    reason: defect.reason.clone(),
                });
            }
            tracing::warn!(
                segment = %segment.path.display(),
                file_offset = defect.position,
                dropped_bytes = file_len - defect.position,
                reason = %defect.reason,
                "truncating a torn tail left by an interrupted write (never acknowledged)"
            );
            segment
                .file
                .set_len(defect.position)
                .map_err(|e| LogError::io("truncate", &segment.path, e))?;
            segment
                .file
                .sync_data()
                .map_err(|e| LogError::io("fsync", &segment.path, e))?;
        }
        segment.apply_scan(&scan);
        Ok(segment)
    }

    fn apply_scan(&mut self, scan: &Scan) {
        self.len = scan.valid_len;
        self.next_offset = scan.next_offset;
        self.max_timestamp_ms = scan.max_timestamp_ms;
        self.index = scan.index.clone();
        self.bytes_since_index = scan.bytes_since_index;
    }

    fn open_file(
        storage: &dyn Storage,
        dir: &Path,
        partition: u32,
        base_offset: u64,
    ) -> Result<(Segment, u64)> {
        let path = dir.join(segment_file_name(base_offset));
        let file = storage
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| LogError::io("open segment", &path, e))?;
        let file_len = file.len().map_err(|e| LogError::io("stat", &path, e))?;
        check_header(&*file, &path, file_len, partition, base_offset)?;
        Ok((Segment::empty(base_offset, path, file), file_len))
    }
}

/// Checks a segment file's header: magic, CRC, version, and that it names this partition and
/// base offset (open and the scrubber both check it here).
pub(crate) fn check_header(
    file: &dyn StorageFile,
    path: &Path,
    file_len: u64,
    partition: u32,
    base_offset: u64,
) -> Result<()> {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    let read = if file_len >= SEGMENT_HEADER_BYTES as u64 {
        file.read_exact_at(&mut header, 0)
            .map_err(|e| LogError::io("read", path, e))?;
        SegmentHeader::decode(&header)
    } else {
        Err(format::HeaderDefect::Short)
    };
    let decoded = read.map_err(|defect| match defect {
        format::HeaderDefect::Version(found) => LogError::UnsupportedFormat {
            path: path.to_path_buf(),
            found,
            supported: u32::from(format::FORMAT_VERSION),
        },
        other => LogError::Corrupt {
            path: path.to_path_buf(),
            file_offset: 0,
            reason: format!("segment header: {other}"),
        },
    })?;
    if decoded.base_offset != base_offset || decoded.partition != partition {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            file_offset: 0,
            reason: format!(
                "segment header says partition {} base offset {}, file belongs to partition {partition} base offset {base_offset}",
                decoded.partition, decoded.base_offset
            ),
        });
    }
    Ok(())
}

/// Appends an index entry for the batch of relative offset `rel` at byte `position`, after
/// batches whose largest timestamp is `max_timestamp_ms_before`. The one place entries are
/// made, for appends and for scans alike, so both build the same index.
#[expect(
    clippy::cast_possible_truncation,
    reason = "segments are smaller than u32::MAX bytes and records (limits.rs)"
)]
fn push_index(index: &mut Vec<IndexEntry>, rel: u64, position: u64, max_timestamp_ms_before: i64) {
    let entry = IndexEntry {
        relative_offset: rel as u32,
        position: position as u32,
        max_timestamp_ms_before,
    };
    if let Some(last) = index.last() {
        assert!(
            last.relative_offset < entry.relative_offset
                && last.position < entry.position
                && last.max_timestamp_ms_before <= entry.max_timestamp_ms_before,
            "index must increase"
        );
    }
    index.push(entry);
}

/// Reads a whole (small) file.
pub(crate) fn read_whole(storage: &dyn Storage, path: &Path) -> std::io::Result<Vec<u8>> {
    let file = storage.open(path, OpenMode::Read)?;
    let len = usize::try_from(file.len()?).map_err(std::io::Error::other)?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// Whether a segment file is what a crash inside [`Segment::create`] leaves: shorter than a
/// header, or a header of zeros (its directory entry durable, its bytes not). Such a file
/// never held a record; recovery removes it when it is the last segment.
pub(crate) fn creation_was_interrupted(storage: &dyn Storage, path: &Path) -> Result<bool> {
    let bytes = read_whole_prefix(storage, path, SEGMENT_HEADER_BYTES)?;
    Ok(bytes.len() < SEGMENT_HEADER_BYTES || bytes.iter().all(|b| *b == 0))
}

/// Reads at most the first `n` bytes of a file.
pub(crate) fn read_whole_prefix(storage: &dyn Storage, path: &Path, n: usize) -> Result<Vec<u8>> {
    let io = |e| LogError::io("read", path, e);
    let file = storage.open(path, OpenMode::Read).map_err(io)?;
    let len = file.len().map_err(io)?;
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(n).min(n)];
    file.read_exact_at(&mut bytes, 0).map_err(io)?;
    Ok(bytes)
}

/// A defect found by [`scan`].
#[derive(Debug, Clone)]
pub(crate) struct Defect {
    /// Byte position of the first bad batch.
    pub position: u64,
    /// What is wrong with it.
    pub reason: String,
    /// Whether it looks like an interrupted write at the end of the file: nothing that
    /// parses follows it. Only meaningful for the active segment.
    pub torn: bool,
}

/// Result of verifying a segment from its header to its end.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    pub valid_len: u64,
    pub next_offset: u64,
    pub max_timestamp_ms: i64,
    pub index: Vec<IndexEntry>,
    pub bytes_since_index: u64,
    pub batches: u64,
    pub defect: Option<Defect>,
}

/// Buffered sequential reader over a [`StorageFile`]: recovery and reads fetch many small
/// batches, and one `pread` per batch would dominate.
pub(crate) struct ChunkReader<'a> {
    file: &'a dyn StorageFile,
    buf: Vec<u8>,
    buf_start: u64,
    /// Bytes of the file worth reading: a chunk never extends past this.
    limit: u64,
}

const CHUNK_BYTES: usize = 1024 * 1024;

impl<'a> ChunkReader<'a> {
    pub fn new(file: &'a dyn StorageFile) -> Self {
        Self::with_limit(file, u64::MAX)
    }

    /// A reader whose chunks stop at byte `limit` (a segment's acknowledged length): a tail
    /// read of a few records then fills (and zeroes) a few KiB, not a whole 1 MiB chunk.
    pub fn with_limit(file: &'a dyn StorageFile, limit: u64) -> Self {
        ChunkReader {
            file,
            buf: Vec::new(),
            buf_start: 0,
            limit,
        }
    }

    /// Returns `len` bytes at `pos`; `UnexpectedEof` if the file ends first.
    pub fn get(&mut self, pos: u64, len: usize) -> std::io::Result<&[u8]> {
        let end = pos + len as u64;
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos < self.buf_start || end > buf_end {
            let room = usize::try_from(self.limit.saturating_sub(pos)).unwrap_or(usize::MAX);
            let want = len.max(CHUNK_BYTES.min(room));
            self.buf.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match self
                    .file
                    .read_at(&mut self.buf[filled..], pos + filled as u64)
                {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.buf.truncate(filled);
            self.buf_start = pos;
            if filled < len {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
        }
        let at = usize::try_from(pos - self.buf_start).map_err(std::io::Error::other)?;
        Ok(&self.buf[at..at + len])
    }
}

/// Verifies every batch of a segment from its header to `file_len`: lengths, CRC32C,
/// versions, record shapes, dense offsets from `base_offset`. Stops at the first defect.
pub(crate) fn scan(
    file: &dyn StorageFile,
    path: &Path,
    base_offset: u64,
    file_len: u64,
) -> Result<Scan> {
    let mut reader = ChunkReader::new(file);
    let mut segment = Scan {
        valid_len: SEGMENT_HEADER_BYTES as u64,
        next_offset: base_offset,
        max_timestamp_ms: i64::MIN,
        index: Vec::new(),
        bytes_since_index: u64::MAX,
        batches: 0,
        defect: None,
    };
    let io = |e| LogError::io("read", path, e);
    let mut pos = SEGMENT_HEADER_BYTES as u64;
    while pos < file_len {
        let header =
            match check_batch_at(&mut reader, pos, file_len, segment.next_offset).map_err(io)? {
                Ok(header) => header,
                Err(defect) => {
                    segment.defect = Some(defect);
                    break;
                }
            };
        let batch_end = pos + u64::from(header.batch_bytes);
        if segment.bytes_since_index >= u64::from(INDEX_INTERVAL_BYTES) {
            let rel = header.base_offset - base_offset;
            push_index(&mut segment.index, rel, pos, segment.max_timestamp_ms);
            segment.bytes_since_index = 0;
        }
        segment.bytes_since_index += u64::from(header.batch_bytes);
        segment.next_offset = header.next_offset();
        segment.max_timestamp_ms = segment.max_timestamp_ms.max(header.max_timestamp_ms);
        segment.batches += 1;
        pos = batch_end;
        segment.valid_len = pos;
    }
    Ok(segment)
}

/// Checks the batch at byte `pos` of a segment whose batches end at `file_len`, expected to
/// start at offset `expected_offset`: length, CRC32C, version, record shapes, density. The
/// one check of a stored batch: the recovery [`scan`], `logbook log verify` and the
/// background scrubber ([`crate::scrub`]) all step through a segment with it. `Err` of the
/// inner result is the defect found there (with whether it looks like a torn tail, which only
/// an active segment can have); the outer error is a failed read.
pub(crate) fn check_batch_at(
    reader: &mut ChunkReader<'_>,
    pos: u64,
    file_len: u64,
    expected_offset: u64,
) -> std::io::Result<std::result::Result<BatchHeader, Defect>> {
    let remaining = file_len - pos;
    let defect = |reason: String, torn: bool| Defect {
        position: pos,
        reason,
        torn,
    };
    if remaining < BATCH_HEADER_BYTES as u64 {
        reader.get(pos, usize::try_from(remaining).unwrap_or(0))?;
        return Ok(Err(defect(
            format!("{remaining} bytes at the end are shorter than a batch header"),
            true,
        )));
    }
    let header = BatchHeader::parse(reader.get(pos, BATCH_HEADER_BYTES)?);
    if !header.length_is_plausible() {
        let torn = all_zero_from(reader, pos, file_len)?;
        return Ok(Err(defect(
            format!("implausible batch length {}", header.batch_bytes),
            torn,
        )));
    }
    let batch_end = pos + u64::from(header.batch_bytes);
    if batch_end > file_len {
        // An interrupted write of the last batch looks like this, but so does a damaged
        // length field of a batch in the middle; only the second has whole batches after it.
        let torn = !valid_batch_within(reader, pos + 1, file_len)?;
        return Ok(Err(defect(
            format!(
                "batch of {} bytes runs past the end of the file ({remaining} bytes left)",
                header.batch_bytes
            ),
            torn,
        )));
    }
    let bytes = reader.get(pos, header.batch_bytes as usize)?;
    if let Err(d) = format::verify_batch(bytes) {
        // A checksum failure on the very last batch is what an interrupted write leaves;
        // the same failure with whole batches after it is corruption.
        let torn = batch_end == file_len
            || (matches!(d, BatchDefect::Checksum { .. })
                && all_zero_from(reader, batch_end, file_len)?);
        return Ok(Err(defect(d.to_string(), torn)));
    }
    if header.base_offset != expected_offset {
        return Ok(Err(defect(
            format!(
                "batch starts at offset {}, expected {expected_offset} (offsets must be dense)",
                header.base_offset
            ),
            false,
        )));
    }
    Ok(Ok(header))
}

/// Whether a whole batch that passes [`format::verify_batch`] starts at any byte position in
/// `from..to`. A torn write leaves nothing valid after the point where it was cut, so a valid
/// batch there means the defect before it is damage, not a torn tail. (A record value that
/// itself holds a valid batch could make a torn tail look like damage: open then refuses
/// rather than guessing, which loses nothing.)
fn valid_batch_within(reader: &mut ChunkReader<'_>, from: u64, to: u64) -> std::io::Result<bool> {
    let mut pos = from;
    while pos + (BATCH_HEADER_BYTES as u64) <= to {
        let header = BatchHeader::parse(reader.get(pos, BATCH_HEADER_BYTES)?);
        if header.length_is_plausible()
            && header.version == format::FORMAT_VERSION
            && header.record_count > 0
            && pos + u64::from(header.batch_bytes) <= to
            && format::verify_batch(reader.get(pos, header.batch_bytes as usize)?).is_ok()
        {
            return Ok(true);
        }
        pos += 1;
    }
    Ok(false)
}

fn all_zero_from(reader: &mut ChunkReader<'_>, from: u64, to: u64) -> std::io::Result<bool> {
    let mut pos = from;
    while pos < to {
        let n = usize::try_from((to - pos).min(CHUNK_BYTES as u64)).unwrap_or(CHUNK_BYTES);
        if reader.get(pos, n)?.iter().any(|b| *b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Verifies one segment file without changing anything, for `logbook log verify`.
pub(crate) fn verify_file(
    storage: &dyn Storage,
    dir: &Path,
    partition: u32,
    base_offset: u64,
) -> Result<Scan> {
    let (segment, file_len) = Segment::open_file(storage, dir, partition, base_offset)?;
    scan(&*segment.file, &segment.path, base_offset, file_len)
}
