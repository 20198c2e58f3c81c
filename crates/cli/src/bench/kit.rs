//! The load-generator kit every benchmark shares: temporary directories, latency
//! histograms, and what the machine looked like while measuring (file system, load).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;

/// Histogram range, µs: 1 µs to 60 s, 3 significant digits. Latencies above it are clamped.
pub(crate) const LATENCY_US_MAX: u64 = 60_000_000;

/// An empty latency histogram, µs (1 µs to [`LATENCY_US_MAX`], 3 significant digits).
pub(crate) fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).context("creating a histogram")
}

/// Microseconds since `since`, at least 1 (a histogram's lowest value).
pub(crate) fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A directory removed when dropped (also on error).
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// Creates `<parent>/<prefix>-<pid>-<nanos>` (the parent must exist).
    pub(crate) fn create(parent: &Path, prefix: &str) -> anyhow::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = parent.join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove a benchmark directory");
        }
    }
}

/// The file system holding `path`, from /proc/self/mounts: "TYPE DEVICE mounted at POINT".
pub(crate) fn file_system_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (device, point, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), format!("{kind} {device} mounted at {point}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, description)| description)
}

/// The 1-minute load average (Linux), or `None`.
pub(crate) fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time (user + system) this process has used so far, in seconds, from
/// `/proc/self/stat`; `None` where that is not readable. Resolution: one clock tick (10 ms).
/// Wall time on a shared machine depends on the other work; CPU time per operation much
/// less, so benchmarks report both.
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces and parentheses) start after
    // its last ')'; utime and stime, fields 14 and 15 of the line, are 12th and 13th there.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // The kernel counts in USER_HZ ticks, 100 a second on every Linux ABI.
    Some((utime + stime) as f64 / 100.0)
}

/// `x` rounded to 1 decimal (for JSON figures).
pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `x` rounded to 3 decimals.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `x` rounded to 4 decimals.
pub(crate) fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// A random master key in a 0600 file beside (not inside) the data directory.
pub(crate) fn bench_master_key(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("master.key");
    if !path.exists() {
        let mut hex = String::with_capacity(64);
        for _ in 0..32 {
            hex.push_str(&format!("{:02x}", rand::random::<u8>()));
        }
        crate::private_file::write_new(&path, hex.as_bytes())?;
    }
    Ok(path)
}
