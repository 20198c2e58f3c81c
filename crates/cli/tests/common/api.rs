//! Requests through the Rust client (`logbook-api`), one attempt each so a test sees every
//! answer the server gives, as a status and a JSON body.

use logbook_api::client::blocking::Client;
use logbook_api::client::{
    ClientConfig, ClientError, ClientOptions, RawRequest, RetryPolicy, Verb,
};
use serde_json::Value;

/// Longest wait for one answer, ms (a loaded 2-core machine can be slow).
const REQUEST_TIMEOUT_MS: u64 = 60_000;

/// A client of `base` making one attempt per request (no retries: the test decides),
/// without credentials.
pub fn client(base: &str) -> Client {
    client_with_token(base, None)
}

/// [`client`] sending `token` as its bearer token.
pub fn client_with_token(base: &str, token: Option<&str>) -> Client {
    Client::with_options(base, &options(token, None)).unwrap()
}

/// The options of a client making one attempt per request, sending `token` and, for an
/// `https://` server, trusting the CA file `ca_cert`.
pub fn options(token: Option<&str>, ca_cert: Option<&std::path::Path>) -> ClientOptions {
    ClientOptions {
        config: ClientConfig {
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            retry: RetryPolicy::none(),
            ..ClientConfig::default()
        },
        bearer_token: token.map(str::to_string),
        ca_cert_pem: ca_cert.map(|path| std::fs::read(path).unwrap()),
    }
}

/// The verb named by an HTTP method (`GET`, `PUT`, `POST`, `DELETE`).
pub fn verb(method: &str) -> Verb {
    match method {
        "GET" => Verb::Get,
        "PUT" => Verb::Put,
        "POST" => Verb::Post,
        "DELETE" => Verb::Delete,
        other => panic!("no verb {other}"),
    }
}

/// A request: `method path` with a JSON body.
pub fn request(method: &str, path: &str, body: Option<&Value>) -> RawRequest {
    let request = RawRequest::new(verb(method), path.to_string());
    match body {
        Some(b) => request.body(serde_json::to_vec(b).unwrap()),
        None => request,
    }
}

/// Sends `request`: the status and the body as JSON — the problem document of an error
/// answer, `null` for an empty body, a JSON string for one that is not JSON. `Err` when no
/// answer came.
pub fn send(client: &Client, request: RawRequest) -> Result<(u16, Value), ClientError> {
    match client.send_raw(request) {
        Ok(answer) => {
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            let body = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            Ok((answer.status, body))
        }
        Err(ClientError::Problem { problem, .. }) => {
            Ok((problem.status, serde_json::to_value(&problem).unwrap()))
        }
        Err(ClientError::Answer { status, detail, .. }) => Ok((status, Value::String(detail))),
        Err(e) => Err(e),
    }
}

/// [`send`] of `method path` with a JSON body, panicking when no answer came.
pub fn call(client: &Client, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    send(client, request(method, path, body)).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}
