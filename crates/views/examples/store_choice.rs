//! Micro-benchmark behind `docs/decisions/0003-view-state-store.md`: the view processor's
//! access pattern on fjall and on redb.
//!
//! ```text
//! cargo run -p logbook-views --release --features store-bench --example store_choice
//! ```
//!
//! Per record (like an aggregate view applying one flight): read the key's previous
//! contribution, its group's partial state and one multiset entry (3 point reads), write all
//! three back (3 writes); every `BATCH` records the writes and the applied offset are
//! committed in one atomic batch without fsync. Then: random point reads of contributions and
//! prefix scans of 100 multiset entries. 10% of records replace an earlier key. One writer
//! thread per store; the figures are per second of wall time.

#![expect(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a one-off measurement behind decision 0003: a panic is its error report"
)]

use std::time::Instant;

const RECORDS: u64 = 300_000;
const BATCH: u64 = 1_000;
const GROUPS: u64 = 16;
const VALUES: u64 = 1_000;
const READS: u64 = 200_000;
const SCANS: u64 = 20_000;

/// splitmix64, so both stores see the same keys.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn keys(i: u64) -> ([u8; 20], Vec<u8>, Vec<u8>) {
    let r = mix(i);
    // 10% replace an earlier record's key.
    let pk_id = if r % 10 == 0 && i > 0 { r % i } else { i };
    let mut pk = [0u8; 20];
    pk[0] = b'C';
    pk[1..9].copy_from_slice(&mix(pk_id).to_be_bytes());
    pk[9..17].copy_from_slice(&pk_id.to_be_bytes());
    let g = (r >> 8) % GROUPS;
    let v = (r >> 20) % VALUES;
    let mut group = b"G".to_vec();
    group.extend_from_slice(&g.to_be_bytes());
    let mut ms = b"M".to_vec();
    ms.extend_from_slice(&g.to_be_bytes());
    ms.extend_from_slice(&v.to_be_bytes());
    (pk, group, ms)
}

fn bump(old: Option<&[u8]>) -> Vec<u8> {
    let n = old.map_or(0, |b| u64::from_le_bytes(b[..8].try_into().unwrap()));
    let mut v = (n + 1).to_le_bytes().to_vec();
    v.extend_from_slice(&[0u8; 24]);
    v
}

fn report(store: &str, apply_s: f64, read_s: f64, scan_s: f64, rows: u64) {
    println!(
        "{{\"store\":\"{store}\",\"records\":{RECORDS},\"batch\":{BATCH},\"apply_records_per_s\":{:.0},\"point_reads_per_s\":{:.0},\"scans_per_s\":{:.0},\"scan_rows\":{rows}}}",
        RECORDS as f64 / apply_s,
        READS as f64 / read_s,
        SCANS as f64 / scan_s
    );
}

fn fjall_run(dir: &std::path::Path) {
    use fjall::{Database, KeyspaceCreateOptions, Readable};
    let db = Database::builder(dir.join("fjall")).open().unwrap();
    let ks = db.keyspace("v", KeyspaceCreateOptions::default).unwrap();
    let start = Instant::now();
    let mut i = 0;
    while i < RECORDS {
        let mut batch = db.batch();
        let mut pending: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
        for j in i..(i + BATCH).min(RECORDS) {
            let (pk, group, ms) = keys(j);
            for k in [pk.to_vec(), group, ms] {
                let old = match pending.get(&k) {
                    Some(v) => Some(v.clone()),
                    None => ks.get(&k).unwrap().map(|s| s.to_vec()),
                };
                let new = bump(old.as_deref());
                pending.insert(k, new);
            }
        }
        for (k, v) in pending {
            batch.insert(&ks, k, v);
        }
        i += BATCH;
        batch.insert(&ks, b"A".to_vec(), i.to_le_bytes().to_vec());
        batch.commit().unwrap();
    }
    let apply_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for n in 0..READS {
        let (pk, _, _) = keys(mix(n) % RECORDS);
        let snap = db.snapshot();
        assert!(snap.get(&ks, pk).unwrap().is_some());
    }
    let read_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut rows = 0;
    for n in 0..SCANS {
        let mut prefix = b"M".to_vec();
        prefix.extend_from_slice(&(n % GROUPS).to_be_bytes());
        let snap = db.snapshot();
        for kv in snap.prefix(&ks, &prefix).take(100) {
            let (_k, _v) = kv.into_inner().unwrap();
            rows += 1;
        }
    }
    let scan_s = start.elapsed().as_secs_f64();
    report("fjall", apply_s, read_s, scan_s, rows);
}

fn redb_run(dir: &std::path::Path) {
    use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("v");
    let db = Database::create(dir.join("redb")).unwrap();
    let start = Instant::now();
    let mut i = 0;
    while i < RECORDS {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(Durability::None).unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            let mut pending: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
            for j in i..(i + BATCH).min(RECORDS) {
                let (pk, group, ms) = keys(j);
                for k in [pk.to_vec(), group, ms] {
                    let old = match pending.get(&k) {
                        Some(v) => Some(v.clone()),
                        None => t.get(k.as_slice()).unwrap().map(|g| g.value().to_vec()),
                    };
                    let new = bump(old.as_deref());
                    pending.insert(k, new);
                }
            }
            for (k, v) in pending {
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
            i += BATCH;
            t.insert(b"A".as_slice(), i.to_le_bytes().as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let apply_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for n in 0..READS {
        let (pk, _, _) = keys(mix(n) % RECORDS);
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        assert!(t.get(pk.as_slice()).unwrap().is_some());
    }
    let read_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut rows = 0;
    for n in 0..SCANS {
        let mut prefix = b"M".to_vec();
        prefix.extend_from_slice(&(n % GROUPS).to_be_bytes());
        let mut end = prefix.clone();
        *end.last_mut().unwrap() += 1;
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        for kv in t
            .range(prefix.as_slice()..end.as_slice())
            .unwrap()
            .take(100)
        {
            let (_k, _v) = kv.unwrap();
            rows += 1;
        }
    }
    let scan_s = start.elapsed().as_secs_f64();
    report("redb", apply_s, read_s, scan_s, rows);
}

fn main() {
    let base = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target"));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    fjall_run(dir.path());
    redb_run(dir.path());
}
