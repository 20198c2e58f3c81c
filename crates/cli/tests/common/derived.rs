//! What the derived-stream end-to-end tests share: reading a stream whole, waiting until
//! derived streams have caught up, killing the server at random moments while writers run,
//! and making streams offline with a tiny request-id window.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use logbook_api::client::blocking::Client;
use logbook_api::paths;
use logbook_log::{Log, RequestIdWindow, StreamConfig};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::api::call;

/// Server lives killed while records arrive.
pub const LIVES: usize = 6;
/// Longest wait for the processors to catch up at the end.
const CATCH_UP: Duration = Duration::from_secs(120);

/// Every record of `stream` (partitions `0..partitions`) as (partition, offset, key, value),
/// each partition in offset order.
pub fn read_all(
    client: &Client,
    stream: &str,
    partitions: u32,
) -> Vec<(u32, u64, Option<String>, Value)> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let mut from = 0;
        loop {
            let path = format!(
                "{}?partition={p}&from={from}&limit=1000",
                paths::records(stream)
            );
            let (status, body) = call(client, "GET", &path, None);
            assert_eq!(status, 200, "{body}");
            let records = body["records"].as_array().unwrap();
            if records.is_empty() {
                break;
            }
            for r in records {
                out.push((
                    p,
                    r["offset"].as_u64().unwrap(),
                    r["key"].as_str().map(str::to_string),
                    r["value"].clone(),
                ));
            }
            from = body["next"].as_u64().unwrap();
        }
    }
    out
}

/// Waits until the derived streams `names` have read their sources to the end, twice in a
/// row with the same ends (one's source may be another's target, or its own).
pub fn wait_caught_up(client: &Client, names: &[&str]) {
    let deadline = Instant::now() + CATCH_UP;
    let mut last: Option<Vec<u64>> = None;
    loop {
        let mut ends = Vec::new();
        let mut done = true;
        for name in names {
            let (status, body) = call(client, "GET", &paths::derived_stream(name), None);
            assert_eq!(status, 200, "{body}");
            assert!(body["error"].is_null(), "{name}: {body}");
            let parts = body["partitions"].as_array().unwrap();
            done &= !parts.is_empty();
            for p in parts {
                done &= p["next"] == p["end"];
                ends.push(p["end"].as_u64().unwrap());
            }
        }
        if done && last.as_ref() == Some(&ends) {
            return;
        }
        last = done.then_some(ends);
        assert!(
            Instant::now() < deadline,
            "the derived streams did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs [`LIVES`] lives of the server on `data`, each SIGKILLed at a random moment while
/// `writers` threads run `write(client, seed, stop)` against it (they stop at the kill,
/// ignoring failures); returns the server of a last life.
pub fn killed_lives(
    mut serve: super::Serve,
    data: &Path,
    seed: u64,
    writers: u64,
    write: impl Fn(Client, u64, Arc<AtomicBool>) + Clone + Send + 'static,
) -> super::Serve {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for life in 0..LIVES as u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let (client, stop, write) = (serve.client(), stop.clone(), write.clone());
                let seed = seed ^ (life << 8 | w);
                std::thread::spawn(move || write(client, seed, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
        // SIGKILL while records arrive and the processors append.
        drop(serve);
        stop.store(true, Ordering::Release);
        for t in threads {
            t.join().unwrap();
        }
        serve = super::spawn_serve(data, &[], &[], Stdio::null());
    }
    serve
}

/// The run's seed: `DERIVED_CRASH_SEED` or a fresh one, printed.
pub fn seed() -> u64 {
    let seed = std::env::var("DERIVED_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen::<u64>());
    eprintln!("DERIVED_CRASH_SEED={seed}");
    seed
}

/// Makes `streams` (name, partitions, tiny window) offline in `data`; those marked remember
/// only 2 request ids (no HTTP setting exists for the window), so that exactly-once cannot
/// come from the window.
pub fn create_streams(data: &Path, streams: &[(&str, u32, bool)]) {
    let log = Log::open(data).unwrap();
    for (name, partitions, tiny_window) in streams {
        let mut config = StreamConfig::with_partitions(*partitions);
        if *tiny_window {
            config.request_ids = RequestIdWindow {
                max_ids: 2,
                ..RequestIdWindow::default()
            };
        }
        log.create_stream(name, config).unwrap();
    }
}
