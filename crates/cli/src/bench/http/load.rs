//! `bench http`'s load generator: the setup of a target (a stream, its table view, every
//! key preloaded) and each phase's raw HTTP/1.1 connections, closed or open loop, measured
//! into a [`RunResult`]. Shared by the single-node run (`mod.rs`) and the cluster run
//! (`cluster.rs`), which both call [`measure`]; it names neither.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hyper::Method;
use logbook_api::paths::{self, Query};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use super::args::HttpBenchArgs;
use crate::bench::conn::Conn;
use crate::bench::kit::{LATENCY_US_MAX, latency_histogram, process_cpu_seconds, round1, round3};

/// The stream appended to.
pub(super) const STREAM: &str = "bench";
/// The table view read.
pub(super) const VIEW: &str = "bench_rows";
/// Records per request when preloading the keys.
const PRELOAD_BATCH: usize = 1000;

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct RunResult {
    /// `on`: every request carried a bearer token the server checked; `off`: none.
    pub(super) auth: &'static str,
    /// `on`: HTTPS (keep-alive connections: one handshake per connection).
    pub(super) tls: &'static str,
    /// The pass over the configurations (from 0).
    pub(super) round: usize,
    /// Whether the stream declared personal fields (its padding encrypted).
    pub(super) encrypted: bool,
    /// Whether the view auditor and the segment scrubber were at work (`--audit`).
    pub(super) audited: bool,
    pub(super) op: &'static str,
    pub(super) mode: &'static str,
    /// Target rate (open loop); null for closed loop.
    pub(super) rate: Option<u64>,
    pub(super) connections: usize,
    /// Most requests in flight per connection.
    pub(super) depth: usize,
    pub(super) requests: u64,
    pub(super) achieved_per_s: f64,
    pub(super) p50_ms: f64,
    pub(super) p95_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) p999_ms: f64,
    pub(super) max_ms: f64,
    pub(super) errors: u64,
    /// CPU time of this whole process (server, its log writers and view processors, and the
    /// load generator) per request, µs: what a request costs all in, whatever else the
    /// machine runs. 2 cores give 2,000,000 CPU-µs per second.
    pub(super) cpu_us_per_request: Option<f64>,
    /// CPU cores this process kept busy on average during the run.
    pub(super) cpu_cores_used: Option<f64>,
    /// The first failed answer (or why requests went unanswered), to tell what failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) first_error: Option<String>,
}

/// The request a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Append,
    Read,
}

/// How a run paces its requests.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pace {
    Closed,
    Open { rate: u64 },
}

/// Where a benchmark's requests go, and what they name.
pub(super) struct Target {
    /// The nodes: the setup calls go to the first, the connections of a run round-robin to
    /// all.
    pub(super) addrs: Vec<SocketAddr>,
    /// The bearer token every request carries, if any.
    pub(super) bearer: Option<String>,
    pub(super) stream: String,
    pub(super) view: String,
    /// The body of the stream's creation.
    pub(super) spec: serde_json::Value,
    /// Reads carry the session's consistency token (that of its last append), as the client
    /// does when it moves between nodes.
    pub(super) session_token: bool,
    /// HTTPS through this connector (which trusts the nodes' certificate), or plain HTTP.
    pub(super) tls: Option<TlsConnector>,
}

/// Sets up the stream, the view and the keys, then runs every phase.
pub(super) async fn measure(
    args: &HttpBenchArgs,
    target: &Target,
) -> anyhow::Result<Vec<RunResult>> {
    let bearer = target.bearer.as_deref();
    let mut c = Conn::open_with(target.addrs[0], bearer, target.tls.as_ref()).await?;
    expect(
        c.call(
            Method::PUT,
            &paths::stream(&target.stream),
            Some(target.spec.to_string()),
        )
        .await?,
        "creating the stream",
    )?;
    let view = json!({"source": target.stream, "kind": "table"});
    expect(
        c.call(
            Method::PUT,
            &paths::view(&target.view),
            Some(view.to_string()),
        )
        .await?,
        "creating the view",
    )?;
    // Every key once, in batches; then wait until the view has applied the last batch.
    let padding = padding(args.record_bytes);
    let mut token = String::new();
    let mut k = 0;
    while k < args.keys {
        let end = (k + PRELOAD_BATCH as u64).min(args.keys);
        let records: Vec<serde_json::Value> = (k..end)
            .map(|i| json!({"key": format!("k{i}"), "value": {"i": i, "user": i, "pad": padding}}))
            .collect();
        let body = json!({ "records": records }).to_string();
        token = append_token(&mut c, &target.stream, body, "preloading the keys").await?;
        k = end;
    }
    wait_applied(target, &format!("k{}", args.keys - 1), &token).await?;

    let mut out = Vec::new();
    for &pace in std::iter::once(&Pace::Closed).chain(&open(&args.append_rates)) {
        let r = run_phase(args, target, Op::Append, pace, "").await?;
        eprintln!("{}", serde_json::to_string(&r)?);
        out.push(r);
    }
    let read_query = match target.session_token {
        // The session's last write: every node has applied it before the reads start, so
        // they measure reads that carry a token, not the views catching up.
        true => {
            let body = json!({"key": "k0", "value": {"i": 0, "pad": padding}}).to_string();
            let token =
                append_token(&mut c, &target.stream, body, "the session's last write").await?;
            wait_applied(target, "k0", &token).await?;
            Query::new().push("token", &token).finish()
        }
        false => String::new(),
    };
    for &pace in std::iter::once(&Pace::Closed).chain(&open(&args.read_rates)) {
        let r = run_phase(args, target, Op::Read, pace, &read_query).await?;
        eprintln!("{}", serde_json::to_string(&r)?);
        out.push(r);
    }
    Ok(out)
}

fn open(rates: &[u64]) -> Vec<Pace> {
    rates.iter().map(|&rate| Pace::Open { rate }).collect()
}

/// Appends `body` on `c`; the write's consistency token.
async fn append_token(
    c: &mut Conn,
    stream: &str,
    body: String,
    what: &str,
) -> anyhow::Result<String> {
    let (status, resp) = c
        .call(Method::POST, &paths::records(stream), Some(body))
        .await?;
    expect((status, resp.clone()), what)?;
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap_or_default();
    match v["token"].as_str() {
        Some(t) => Ok(t.to_string()),
        None => bail!("{what}: the answer has no token: {v}"),
    }
}

/// Reads `key` of the view with `token` on every node of `target` (waiting there until the
/// node's view has applied the write the token names); a node that does not know the view
/// yet (its catalog is behind) is asked again, for up to a minute.
async fn wait_applied(target: &Target, key: &str, token: &str) -> anyhow::Result<()> {
    let path = paths::view_row(&target.view, key)
        + &Query::new()
            .push("token", token)
            .push("timeout_ms", 60_000)
            .finish();
    for &addr in &target.addrs {
        let mut c = Conn::open_with(addr, target.bearer.as_deref(), target.tls.as_ref()).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = c.call(Method::GET, &path, None).await?;
            if matches!(status, 404 | 503) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            expect(
                (status, body),
                &format!("waiting for {addr}'s view to apply {key}"),
            )?;
            break;
        }
    }
    Ok(())
}

fn expect(got: (u16, Vec<u8>), what: &str) -> anyhow::Result<()> {
    if !(200..300).contains(&got.0) {
        bail!(
            "{what}: HTTP {}: {}",
            got.0,
            String::from_utf8_lossy(&got.1)
        );
    }
    Ok(())
}

fn padding(record_bytes: usize) -> String {
    // `{"i":NNNN,"pad":""}` is about 20 bytes.
    "x".repeat(record_bytes.saturating_sub(20))
}

/// A connection's halves, each driven by a task of its own.
type Halves = (
    Box<dyn AsyncRead + Unpin + Send>,
    Box<dyn AsyncWrite + Unpin + Send>,
);

/// A connection to `addr` as `target` says, split: a TCP socket's own halves, or a TLS
/// stream's (which share a lock; the handshake is made here, before the run's clock starts).
async fn connect(target: &Target, addr: SocketAddr) -> anyhow::Result<Halves> {
    match &target.tls {
        None => {
            let tcp = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            tcp.set_nodelay(true)?;
            let (rd, wr) = tcp.into_split();
            Ok((Box::new(rd), Box::new(wr)))
        }
        Some(tls) => {
            let io = crate::bench::net::connect(&addr.to_string(), Some(tls)).await?;
            let (rd, wr) = tokio::io::split(io);
            Ok((Box::new(rd), Box::new(wr)))
        }
    }
}

/// One measured run: `connections` connections, merged histograms.
async fn run_phase(
    args: &HttpBenchArgs,
    target: &Target,
    op: Op,
    pace: Pace,
    read_query: &str,
) -> anyhow::Result<RunResult> {
    let connections = match pace {
        Pace::Closed => args.connections,
        Pace::Open { .. } => args.open_connections,
    };
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let addr = target.addrs[i % target.addrs.len()];
        conns.push(connect(target, addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs(args.seconds);
    let cpu_before = process_cpu_seconds();
    let shape = Arc::new(RequestShape {
        op,
        host: target.addrs[0].to_string(),
        auth: target
            .bearer
            .as_ref()
            .map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n")),
        pad: padding(args.record_bytes),
        keys: args.keys,
        records_path: paths::records(&target.stream),
        row_path: paths::view_row(&target.view, ""),
        read_query: read_query.to_string(),
    });
    let mut tasks = Vec::with_capacity(connections);
    for (i, (rd, wr)) in conns.into_iter().enumerate() {
        let schedule = match pace {
            Pace::Closed => None,
            Pace::Open { rate } => {
                let interval = Duration::from_secs_f64(connections as f64 / rate.max(1) as f64);
                Some((interval, interval.mul_f64(i as f64 / connections as f64)))
            }
        };
        let depth = Arc::new(Semaphore::new(args.depth.max(1)));
        let (sent_tx, sent_rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(send_loop(
            wr,
            shape.clone(),
            i as u64,
            depth.clone(),
            sent_tx,
            start,
            end,
            schedule,
        ));
        let reader = tokio::spawn(receive_loop(rd, depth, sent_rx));
        tasks.push((writer, reader));
    }
    let mut hist = latency_histogram()?;
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut first_error = None;
    for (writer, reader) in tasks {
        // The write half stays open until every answer is in: dropping it half-closes the
        // connection, and a server may then drop answers it has not written yet.
        let (sent, write_half) = writer.await.context("a load task failed")?;
        let tally = reader.await.context("a load task failed")??;
        drop(write_half);
        hist.add(&tally.hist).context("merging histograms")?;
        // Requests sent but never answered (a broken connection) are errors.
        requests += sent;
        let unanswered = sent.saturating_sub(tally.answered);
        errors += tally.errors + unanswered;
        if first_error.is_none() {
            first_error = tally
                .first_error
                .or_else(|| (unanswered > 0).then(|| format!("{unanswered} requests unanswered")));
        }
    }
    // Requests still in flight at the end of the window finish after it: rate over the
    // whole time taken.
    let seconds = start.elapsed().as_secs_f64().max(args.seconds as f64);
    let ms = |q: f64| round3(hist.value_at_quantile(q) as f64 / 1000.0);
    // One reading for both figures, so they describe the same interval.
    let cpu_seconds = cpu_before
        .zip(process_cpu_seconds())
        .map(|(b, a)| (a - b).max(0.0));
    Ok(RunResult {
        auth: "",
        tls: "",
        round: 0,
        encrypted: false,
        audited: false,
        cpu_us_per_request: cpu_seconds
            .filter(|_| requests > 0)
            .map(|s| round1(s * 1e6 / requests as f64)),
        cpu_cores_used: cpu_seconds.map(|s| round3(s / seconds)),
        op: match op {
            Op::Append => "append",
            Op::Read => "read",
        },
        mode: match pace {
            Pace::Closed => "closed",
            Pace::Open { .. } => "open",
        },
        rate: match pace {
            Pace::Closed => None,
            Pace::Open { rate } => Some(rate),
        },
        connections,
        depth: args.depth.max(1),
        requests,
        achieved_per_s: round1(requests.saturating_sub(errors) as f64 / seconds),
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: round3(hist.max() as f64 / 1000.0),
        errors,
        first_error,
    })
}

/// What every request of a run looks like.
struct RequestShape {
    op: Op,
    /// The `host` header (the first node's address: a node does not check it).
    host: String,
    /// The `authorization` header line (with its CRLF), or empty.
    auth: String,
    pad: String,
    keys: u64,
    /// The append's path (`paths::records`), built once: no per-request cost.
    records_path: String,
    /// A row's path without its key (`paths::view_row` with the empty key), built once.
    row_path: String,
    /// Appended to a read's path: `?token=…` or empty.
    read_query: String,
}

impl RequestShape {
    /// Appends request `n` (key from `rng`) to `buf`, as HTTP/1.1 bytes.
    fn write(&self, buf: &mut Vec<u8>, key: u64, n: u64) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = match self.op {
            Op::Append => {
                let body = format!(
                    "{{\"key\":\"k{key}\",\"value\":{{\"i\":{n},\"user\":{key},\"pad\":\"{}\"}}}}",
                    self.pad
                );
                write!(
                    buf,
                    "POST {} HTTP/1.1\r\nhost: {}\r\n{}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    self.records_path,
                    self.host,
                    self.auth,
                    body.len()
                )
            }
            Op::Read => write!(
                buf,
                "GET {}k{key}{} HTTP/1.1\r\nhost: {}\r\n{}\r\n",
                self.row_path, self.read_query, self.host, self.auth
            ),
        };
    }
}

/// One connection's sending side. Closed loop (`schedule` None): keeps `depth` requests in
/// flight, sending as soon as an answer frees a slot. Open loop: sends each request when it
/// is due, without waiting for earlier answers (HTTP/1.1 pipelining) unless `depth` are
/// already in flight; requests due at the same moment leave in one write. Each request's
/// latency starts at its due time when late (no coordinated omission), else at its send.
/// Returns the number of requests sent, and the write half (still open).
#[expect(
    clippy::too_many_arguments,
    reason = "a task's inputs, moved in once at spawn; one caller"
)]
async fn send_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    shape: Arc<RequestShape>,
    seed: u64,
    depth: Arc<Semaphore>,
    sent: tokio::sync::mpsc::UnboundedSender<Instant>,
    start: Instant,
    end: Instant,
    schedule: Option<(Duration, Duration)>,
) -> (u64, W) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut n: u64 = 0;
    let mut buf = Vec::with_capacity(64 * 1024);
    tokio::time::sleep_until(start.into()).await;
    loop {
        buf.clear();
        // The first request of this write: wait for its due time and a free slot.
        let first_due = match schedule {
            None => None,
            Some((interval, offset)) => {
                let due = start + offset + interval.mul_f64(n as f64);
                if due >= end {
                    break;
                }
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                }
                Some(due)
            }
        };
        let Ok(permit) = depth.acquire().await else {
            break;
        };
        permit.forget();
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut from = match first_due {
            Some(due) if due < now => due,
            _ => now,
        };
        loop {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            shape.write(&mut buf, rng % shape.keys, n);
            n += 1;
            if sent.send(from).is_err() {
                return (n, wr);
            }
            // More requests in this write: those already due, while slots are free.
            let next_due = match schedule {
                None => now,
                Some((interval, offset)) => start + offset + interval.mul_f64(n as f64),
            };
            if next_due > now || next_due >= end || buf.len() > 48 * 1024 {
                break;
            }
            let Ok(permit) = depth.try_acquire() else {
                break;
            };
            permit.forget();
            from = if schedule.is_some() { next_due } else { now };
        }
        // A TLS stream holds what it encrypted until flushed.
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            break;
        }
    }
    (n, wr)
}

/// What one connection's answers measured.
struct Tally {
    hist: Histogram<u64>,
    answered: u64,
    errors: u64,
    /// The first answer that was not a success, as received.
    first_error: Option<String>,
}

/// One connection's receiving side: parses answers in order (they come in request order on
/// HTTP/1.1), records each one's latency against its send time, frees its slot. Ends when
/// the sender is done and every request it sent is answered, or the connection breaks.
async fn receive_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    depth: Arc<Semaphore>,
    mut sent: tokio::sync::mpsc::UnboundedReceiver<Instant>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        hist: latency_histogram()?,
        answered: 0,
        errors: 0,
        first_error: None,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    while let Some(from) = sent.recv().await {
        // One full answer in `buf`: its status and length.
        let (status, len) = loop {
            if let Some(parsed) = parse_response(&buf)? {
                break parsed;
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return Ok(tally),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        tally.answered += 1;
        if !(200..300).contains(&status) {
            tally.errors += 1;
            if tally.first_error.is_none() {
                tally.first_error = Some(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
        buf.drain(..len);
        let us = u64::try_from(from.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.hist.saturating_record(us.clamp(1, LATENCY_US_MAX));
        depth.add_permits(1);
    }
    Ok(tally)
}

/// The status and total length of the first HTTP/1.1 answer in `buf`, if it is complete.
/// The server always sends `content-length` (no chunked bodies).
fn parse_response(buf: &[u8]) -> anyhow::Result<Option<(u16, usize)>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("a response head is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .context("a response without a status line")?;
    let mut body = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            body = value.trim().parse().context("a bad content-length")?;
        }
    }
    let total = head_end + 4 + body;
    Ok((buf.len() >= total).then_some((status, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_answers_are_split_by_content_length() -> anyhow::Result<()> {
        let one = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n{\"a\":";
        // Incomplete head, incomplete body: not yet.
        assert_eq!(parse_response(&one[..20])?, None);
        assert_eq!(parse_response(&one[..one.len() - 1])?, None);
        let mut two = one.to_vec();
        two.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let (status, len) = parse_response(&two)?.ok_or_else(|| anyhow::anyhow!("first"))?;
        assert_eq!((status, len), (201, one.len()));
        let (status, len) =
            parse_response(&two[len..])?.ok_or_else(|| anyhow::anyhow!("second"))?;
        assert_eq!((status, len), (404, two.len() - one.len()));
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        Ok(())
    }

    #[test]
    fn requests_are_well_formed_http() {
        let shape = RequestShape {
            op: Op::Append,
            host: "127.0.0.1:1".into(),
            auth: String::new(),
            pad: "xx".into(),
            keys: 10,
            records_path: paths::records(STREAM),
            row_path: paths::view_row(VIEW, ""),
            read_query: String::new(),
        };
        let mut buf = Vec::new();
        shape.write(&mut buf, 7, 3);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        let post = format!("POST {} HTTP/1.1\r\n", paths::records("bench"));
        assert!(head.starts_with(&post), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["key"], "k7");
        assert_eq!(v["value"]["i"], 3);
        let read = RequestShape {
            op: Op::Read,
            ..shape
        };
        buf.clear();
        read.write(&mut buf, 9, 0);
        let get_k9 = format!("GET {} HTTP/1.1\r\n", paths::view_row("bench_rows", "k9"));
        assert_eq!(
            String::from_utf8_lossy(&buf),
            format!("{get_k9}host: 127.0.0.1:1\r\n\r\n")
        );
        let authed = RequestShape {
            auth: "authorization: Bearer lb_x\r\n".into(),
            ..read
        };
        buf.clear();
        authed.write(&mut buf, 9, 0);
        assert_eq!(
            String::from_utf8_lossy(&buf),
            format!("{get_k9}host: 127.0.0.1:1\r\nauthorization: Bearer lb_x\r\n\r\n")
        );
        let with_token = RequestShape {
            read_query: "?token=t1".into(),
            auth: String::new(),
            ..authed
        };
        let mut tokened = Vec::new();
        with_token.write(&mut tokened, 4, 0);
        assert_eq!(
            String::from_utf8_lossy(&tokened),
            format!(
                "GET {}?token=t1 HTTP/1.1\r\nhost: 127.0.0.1:1\r\n\r\n",
                paths::view_row("bench_rows", "k4")
            )
        );
    }
}
