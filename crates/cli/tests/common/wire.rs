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

/// A chunked body up to its last chunk (trailers skipped).
fn read_chunked(conn: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if conn.read_line(&mut trailer).ok()? <= 2 {
                    return Some(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size + 2, 0);
        conn.read_exact(&mut body[start..]).ok()?;
        body.truncate(start + size);
    }
}

/// True once the server has closed the connection (nothing more to read).
pub fn closed(conn: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(conn.read_to_end(&mut rest), Ok(0))
}
