//! Raw HTTP/1.1 on a TCP socket, for the tests about the wire itself: requests a client would
//! refuse to send (oversized heads, foreign `Host`s, wrong media types) and answers' headers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// Longest wait for an answer on a socket.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP answer: status, head as sent, headers (names lowercase) and body (de-chunked).
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The status line and headers as sent.
    pub head: String,
    /// `(name lowercase, value)` pairs.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; a JSON string when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| Value::String(self.body.clone()))
    }

    /// Asserts a problem+json answer with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.json()["code"], code, "{self:?}");
    }
}

/// A connection to `addr` (`HOST:PORT`).
pub fn connect(addr: &str) -> BufReader<TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    BufReader::new(tcp)
}

/// A request's bytes with exactly `headers`, plus `content-length` when there is a body.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Sends `bytes` and reads one answer.
pub fn exchange(conn: &mut BufReader<TcpStream>, bytes: &[u8]) -> Answer {
    conn.get_mut().write_all(bytes).unwrap();
    read_answer(conn).unwrap_or_else(|| panic!("the connection closed without an answer"))
}

/// One request on a connection of its own, with exactly `headers`.
pub fn one(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    exchange(&mut connect(addr), &request(method, path, headers, body))
}

/// Reads one answer (its body by `content-length` or chunked); `None` if the connection ends
/// (or is reset) first.
pub fn read_answer(conn: &mut BufReader<TcpStream>) -> Option<Answer> {
    let (status, head, headers) = read_head(conn)?;
    let value = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let body = if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(conn)?
    } else {
        let length = value("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).ok()?;
        body
    };
    Some(Answer {
        status,
        head,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// An answer's status, head as sent and headers (names lowercase).
type Head = (u16, String, Vec<(String, String)>);

/// Reads an answer's head; `None` if the connection ends first.
fn read_head(conn: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match conn.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, head, headers))
}

/// A chunked body up to its last chunk (trailers skipped).
fn read_chunked(conn: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while read_chunk(conn, &mut body)? {}
    Some(body)
}

/// Appends the next chunk of a chunked body to `body`: `Some(false)` after the last one
/// (trailers skipped), `None` if the connection ends first.
fn read_chunk(conn: &mut BufReader<TcpStream>, body: &mut Vec<u8>) -> Option<bool> {
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
    if size == 0 {
        loop {
            let mut trailer = String::new();
            if conn.read_line(&mut trailer).ok()? <= 2 {
                return Some(false);
            }
        }
    }
    let start = body.len();
    body.resize(start + size + 2, 0);
    conn.read_exact(&mut body[start..]).ok()?;
    body.truncate(start + size);
    Some(true)
}

/// One server-sent event as read off the wire: `kind` is `:` for a block without `event:`
/// (a heartbeat comment, the opening id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `id:`, if given.
    pub id: Option<String>,
    /// `event:`, or `:` for a block without one.
    pub kind: String,
    /// `data:` (one line).
    pub data: String,
}

/// A `text/event-stream` answer read event by event, as the server sends them.
pub struct EventStream {
    /// The connection (drop it to disconnect).
    pub conn: BufReader<TcpStream>,
    /// The answer's status.
    pub status: u16,
    pending: Vec<u8>,
    ended: bool,
}

/// The receive buffer of an [`EventStream`]'s socket, bytes: small and fixed, so a client
/// that stops reading holds little in its socket whatever TCP autotuning would allow.
const EVENT_STREAM_RECV_BYTES: usize = 16 * 1024;

impl EventStream {
    /// `GET path` with `headers` on a connection of its own; the answer's head is read.
    pub fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut conn = connect(addr);
        rustix::net::sockopt::set_socket_recv_buffer_size(conn.get_ref(), EVENT_STREAM_RECV_BYTES)
            .unwrap();
        let mut all = vec![("host", addr)];
        all.extend_from_slice(headers);
        conn.get_mut()
            .write_all(&request("GET", path, &all, b""))
            .unwrap();
        let (status, _, _) = read_head(&mut conn).unwrap();
        EventStream {
            conn,
            status,
            pending: Vec::new(),
            ended: false,
        }
    }

    /// The next event; `None` once the body has ended.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&block).into_owned();
                let mut event = Event {
                    id: None,
                    kind: ":".into(),
                    data: String::new(),
                };
                for line in block.lines() {
                    match line.split_once(": ") {
                        Some(("id", v)) => event.id = Some(v.to_string()),
                        Some(("event", v)) => event.kind = v.to_string(),
                        Some(("data", v)) => event.data = v.to_string(),
                        _ => {}
                    }
                }
                return Some(event);
            }
            if self.ended || !read_chunk(&mut self.conn, &mut self.pending)? {
                self.ended = true;
                return None;
            }
        }
    }
}

/// True once the server has closed the connection (nothing more to read).
pub fn closed(conn: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(conn.read_to_end(&mut rest), Ok(0))
}
