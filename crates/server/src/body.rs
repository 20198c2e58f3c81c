//! Request bodies, read whole at the edge before the request takes an in-flight slot, against
//! a deadline that grows with what arrived: a body must arrive within `body_read_timeout_ms`
//! plus one second per `body_rate_min_bytes_per_s` bytes received (the rule of Apache's
//! `mod_reqtimeout`). Slower: 408 `body_timeout`, and the connection closes.
//!
//! Why before the slot: a client that trickles a body would otherwise hold a slot of
//! `requests_max` for as long as it trickles, and a few hundred such clients make every
//! other request 503. Read first, a slow body holds only its own connection (bounded per
//! address by [`crate::admission`]) and its bytes (bounded by
//! [`crate::limits::BODY_BYTES_MAX`]).

use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::Body as _;
use tokio::time::Instant;

use crate::error::{ApiError, ProblemCode};
use crate::limits;

/// How fast a body must arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    /// Time allowed before the rate counts.
    pub timeout: Duration,
    /// Least rate past `timeout`, bytes per second (≥ 1).
    pub rate_min_bytes_per_s: u64,
}

impl BodyDeadline {
    /// When a body that began at `started` and has `received` bytes so far must be done.
    fn due(&self, started: Instant, received: u64) -> Instant {
        let rate = self.rate_min_bytes_per_s.max(1);
        let earned_ms = received.saturating_mul(1000) / rate;
        started + self.timeout + Duration::from_millis(earned_ms)
    }
}

/// Reads `body` whole within `deadline`, at most [`limits::BODY_BYTES_MAX`] bytes. After an
/// error the rest of the body is unread: the answer must close the connection.
///
/// A body already in hand (the usual case: it came with the head) is read without arming a
/// timer.
///
/// # Errors
/// 408 `body_timeout` when it is too slow; 413 `payload_too_large` when it is over the
/// limit; 400 `invalid_request` when the client ends the body early or breaks it.
pub async fn read(mut body: Body, deadline: BodyDeadline) -> Result<Bytes, ApiError> {
    let started = Instant::now();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received: u64 = 0;
    loop {
        let due = deadline.due(started, received);
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let frame = match tokio::time::timeout_at(due, next).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    ProblemCode::InvalidRequest,
                    format!("the request body could not be read: {e}; nothing was done"),
                )
                .field("body"));
            }
            Err(_) => return Err(too_slow(deadline, received)),
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not used by the API
        };
        received += data.len() as u64;
        if received > limits::BODY_BYTES_MAX as u64 {
            return Err(ApiError::payload_too_large());
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// 408 `body_timeout`, with what arrived and the rule.
fn too_slow(deadline: BodyDeadline, received: u64) -> ApiError {
    ApiError::new(
        ProblemCode::BodyTimeout,
        format!(
            "the request body did not arrive in time: {received} bytes came; a body must \
             arrive within {} ms plus 1 s per {} bytes (body_read_timeout_ms, \
             body_rate_min_bytes_per_s); nothing was done",
            deadline.timeout.as_millis(),
            deadline.rate_min_bytes_per_s
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_grows_by_one_second_per_rate_bytes() {
        let d = BodyDeadline {
            timeout: Duration::from_secs(10),
            rate_min_bytes_per_s: 1000,
        };
        let t0 = Instant::now();
        assert_eq!(d.due(t0, 0), t0 + Duration::from_secs(10));
        assert_eq!(d.due(t0, 2500), t0 + Duration::from_millis(12_500));
        assert!(d.due(t0, u64::MAX) > t0);
    }

    /// A body that sends `first` and then nothing, never ending.
    struct Stalled(Option<Bytes>);

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            match self.0.take() {
                Some(data) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data)))),
                None => std::task::Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_is_refused_408_and_one_in_hand_is_read() {
        let d = BodyDeadline {
            timeout: Duration::from_millis(100),
            rate_min_bytes_per_s: 10,
        };
        let whole = read(Body::from("{\"a\":1}"), d).await.unwrap();
        assert_eq!(&whole[..], b"{\"a\":1}");

        let stalled = Body::new(Stalled(Some(Bytes::from_static(b"12345"))));
        let e = read(stalled, d).await.unwrap_err();
        assert_eq!(e.code, ProblemCode::BodyTimeout);
        assert!(e.detail.contains("5 bytes came"), "{e:?}");
    }
}
