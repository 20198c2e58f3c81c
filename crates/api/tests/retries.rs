//! The client's retries on the wire, against a stand-in for the network that drops
//! connections and answers 503 on cue (a fault-injecting peer, as a proxy would): the same
//! `Idempotency-Key` on every attempt, an unknown outcome (no answer, `504 outcome_unknown`,
//! or a refusal after an attempt that may have been applied) reported as unknown, an
//! unreachable server as unreachable.
#![expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on an unexpected error"
)]

use std::sync::{Arc, Mutex};

use logbook_api::client::{Client, ClientConfig, ClientError, RetryPolicy};
use logbook_api::streams::RecordIn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the peer does with the n-th request (0-based).
#[derive(Debug, Clone, Copy)]
enum Act {
    /// Read the request, then close the connection without answering.
    Drop,
    /// Answer 503 with `Retry-After: 0`.
    Busy,
    /// Answer 504 `outcome_unknown` (the server could not learn what became of the append).
    OutcomeUnknown,
    /// Answer 201 with an append's body.
    Created,
}

const BUSY: &str = r#"{"type":"urn:logbook:problem:server_busy","code":"server_busy","title":"Server busy","status":503,"detail":"busy"}"#;
const OUTCOME_UNKNOWN: &str = r#"{"type":"urn:logbook:problem:outcome_unknown","code":"outcome_unknown","title":"The outcome of the append is unknown","status":504,"detail":"the log did not answer"}"#;
const CREATED: &str = r#"{"partition":0,"offset":7,"token":null}"#;

fn answer(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `script` (its last act repeats); returns its address and the `idempotency-key`
/// header of every request received, in order.
async fn peer(script: Vec<Act>) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let log = log.clone();
            let script = script.clone();
            tokio::spawn(async move {
                while let Some(head) = read_request(&mut tcp).await {
                    let key = head
                        .lines()
                        .find_map(|l| l.strip_prefix("idempotency-key: "))
                        .map(str::to_string);
                    let n = {
                        let mut l = log.lock().unwrap();
                        l.push(key);
                        l.len() - 1
                    };
                    let text = match script[n.min(script.len() - 1)] {
                        Act::Drop => return,
                        Act::Busy => answer(
                            "503 Service Unavailable",
                            "retry-after: 0\r\ncontent-type: application/problem+json\r\n",
                            BUSY,
                        ),
                        Act::OutcomeUnknown => answer(
                            "504 Gateway Timeout",
                            "content-type: application/problem+json\r\n",
                            OUTCOME_UNKNOWN,
                        ),
                        Act::Created => {
                            answer("201 Created", "content-type: application/json\r\n", CREATED)
                        }
                    };
                    if tcp.write_all(text.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Reads one request (head and a `content-length` body); returns the head, lower-cased.
async fn read_request(tcp: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.ok()?;
    Some(head)
}

fn quick(attempts_max: u32) -> ClientConfig {
    ClientConfig {
        retry: RetryPolicy {
            attempts_max,
            backoff_initial_ms: 1,
            backoff_max_ms: 5,
            ..RetryPolicy::default()
        },
        ..ClientConfig::default()
    }
}

fn record() -> RecordIn {
    RecordIn::new(serde_json::json!({"n": 1}))
}

#[tokio::test]
async fn a_write_is_retried_with_the_same_idempotency_key() {
    let (addr, seen) = peer(vec![Act::Drop, Act::Busy, Act::Drop, Act::Created]).await;
    let client = Client::with_config(&addr, quick(6)).unwrap();
    let at = client.append("s", record()).await.unwrap();
    assert_eq!((at.partition, at.offset), (0, 7));
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys.len(), 4, "two drops and a 503 were retried: {keys:?}");
    let first = keys[0].clone().unwrap();
    assert!(first.starts_with("lb-"), "{first}");
    assert!(keys.iter().all(|k| k.as_deref() == Some(first.as_str())));
    // The next logical write gets a key of its own.
    client.append("s", record()).await.unwrap();
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys.len(), 5);
    assert_ne!(keys[4].as_deref(), Some(first.as_str()));
}

#[tokio::test]
async fn a_write_never_answered_is_unknown_not_failed() {
    let (addr, seen) = peer(vec![Act::Drop]).await;
    let client = Client::with_config(&addr, quick(3)).unwrap();
    let err = client
        .append_with_id("s", "order-17", record())
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    match err {
        ClientError::Unknown {
            request_id,
            attempts,
            ..
        } => {
            assert_eq!(request_id.as_deref(), Some("order-17"));
            assert_eq!(attempts, 3);
        }
        other => panic!("{other}"),
    }
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys, vec![Some("order-17".to_string()); 3]);
}

#[tokio::test]
async fn a_server_that_stays_busy_is_its_problem_and_an_unreachable_one_is_not_unknown() {
    let (addr, seen) = peer(vec![Act::Busy]).await;
    let client = Client::with_config(&addr, quick(3)).unwrap();
    let err = client.append("s", record()).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(logbook_api::ProblemCode::ServerBusy),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
    // A port nobody listens on: no attempt reached a server, so the outcome is known.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let client = Client::with_config(&addr, quick(2)).unwrap();
    let err = client.append("s", record()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Unreachable { attempts: 2, .. }),
        "{err}"
    );
}

/// The first attempt reached the server (its connection dropped after sending), so a 503
/// answered to every retry cannot mean "not applied": the outcome is unknown, and the last
/// problem is kept in the error.
#[tokio::test]
async fn a_busy_answer_after_a_dropped_attempt_is_unknown_not_failed() {
    let (addr, seen) = peer(vec![Act::Drop, Act::Busy]).await;
    let client = Client::with_config(&addr, quick(4)).unwrap();
    let err = client
        .append_with_id("s", "order-18", record())
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert_eq!(err.code(), None, "not the server's decision: {err}");
    match err {
        ClientError::Unknown {
            request_id,
            attempts,
            problem,
            ..
        } => {
            assert_eq!(request_id.as_deref(), Some("order-18"));
            assert_eq!(attempts, 4);
            let problem = problem.unwrap();
            assert_eq!(
                problem.known_code(),
                Some(logbook_api::ProblemCode::ServerBusy)
            );
        }
        other => panic!("{other}"),
    }
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys, vec![Some("order-18".to_string()); 4]);
}

/// `504 outcome_unknown` is resolved by the same request sent again: the client retries it
/// with the same key, and when the retries run out the outcome is unknown.
#[tokio::test]
async fn an_outcome_unknown_answer_is_retried_with_the_same_key_then_unknown() {
    let (addr, seen) = peer(vec![Act::OutcomeUnknown, Act::Created]).await;
    let client = Client::with_config(&addr, quick(3)).unwrap();
    let at = client
        .append_with_id("s", "order-19", record())
        .await
        .unwrap();
    assert_eq!((at.partition, at.offset), (0, 7));
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys, vec![Some("order-19".to_string()); 2]);

    let (addr, seen) = peer(vec![Act::OutcomeUnknown]).await;
    let client = Client::with_config(&addr, quick(3)).unwrap();
    let err = client
        .append_with_id("s", "order-20", record())
        .await
        .unwrap_err();
    match err {
        ClientError::Unknown {
            request_id,
            attempts,
            problem,
            ..
        } => {
            assert_eq!(request_id.as_deref(), Some("order-20"));
            assert_eq!(attempts, 3);
            assert_eq!(
                problem.unwrap().known_code(),
                Some(logbook_api::ProblemCode::OutcomeUnknown)
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
}
