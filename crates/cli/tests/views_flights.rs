//! The bench's carrier aggregate on the bundled flights sample, checked against the same
//! numbers computed independently from the CSV (csv + gzip, no Logbook code).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use logbook_log::Log;
use logbook_views::{ReadOptions, ScanRange, Views};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../samples/flights-2013-01.csv.gz"
);

#[test]
fn carrier_delays_match_an_independent_computation() {
    // Independent: count, sum and max of dep_delay per carrier where it is not NA.
    let gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(SAMPLE).unwrap());
    let mut csv = csv::Reader::from_reader(gz);
    let headers = csv.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (carrier, delay, origin, day) =
        (col("carrier"), col("dep_delay"), col("origin"), col("day"));
    let mut expected: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    let mut per_origin_day: BTreeMap<String, i64> = BTreeMap::new();
    for row in csv.records() {
        let row = row.unwrap();
        *per_origin_day
            .entry(format!("{}|2013|1|{}", &row[origin], &row[day]))
            .or_default() += 1;
        if &row[delay] == "NA" {
            continue;
        }
        let d: i64 = row[delay].parse().unwrap();
        let e = expected
            .entry(row[carrier].to_string())
            .or_insert((0, 0, i64::MIN));
        e.0 += 1;
        e.1 += d;
        e.2 = e.2.max(d);
    }

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let status = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args([
            "quickstart",
            "--exit",
            "--listen",
            "127.0.0.1:0",
            "--sample",
            SAMPLE,
        ])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let log = Arc::new(Log::open(&data).unwrap());
    let views = Views::open(log, &data.join("views")).unwrap();
    views
        .create(
            "delay",
            br#"{"source":"flights","kind":"aggregate","filter":{"field":"dep_delay","op":"is_not_null"},
                "group_by":["carrier"],"aggregates":{"flights":{"fn":"count"},
                "avg_dep_delay":{"fn":"avg","field":"dep_delay"},"max_dep_delay":{"fn":"max","field":"dep_delay"}}}"#,
        )
        .unwrap();
    views
        .create(
            "per_day",
            br#"{"source":"flights","kind":"aggregate","group_by":["origin","year","month","day"],
                "aggregates":{"departures":{"fn":"count"}}}"#,
        )
        .unwrap();
    for v in ["delay", "per_day"] {
        assert!(
            views
                .wait_caught_up(v, None, Duration::from_secs(60))
                .unwrap()
        );
    }
    let all = |name: &str| {
        let r = views
            .scan(
                name,
                &ScanRange {
                    limit: 10_000,
                    ..ScanRange::default()
                },
                &ReadOptions::default(),
            )
            .unwrap();
        assert!(r.next.is_none());
        r.rows
    };
    let rows = all("delay");
    assert_eq!(rows.len(), expected.len());
    for r in rows {
        let (n, sum, max) = expected[&r.key];
        assert_eq!(r.value["flights"], n, "{}", r.key);
        assert_eq!(r.value["max_dep_delay"], max, "{}", r.key);
        let avg = r.value["avg_dep_delay"].as_f64().unwrap();
        assert!(
            (avg - sum as f64 / n as f64).abs() < 1e-9,
            "{}: {avg}",
            r.key
        );
    }
    let got: BTreeMap<String, i64> = all("per_day")
        .into_iter()
        .map(|r| (r.key, r.value["departures"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, per_origin_day);
}
