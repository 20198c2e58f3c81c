//! The Rust client's session against a real `logbook serve`: read answers carry the
//! positions they reflected (a token naming the read's source), the session merges them
//! with its writes' tokens, and every read of the client's own write finds it.

mod common;

use std::process::Stdio;

use logbook_api::client::{KeyRange, ReadOptions};
use logbook_api::streams::{CreateStream, RecordIn};
use logbook_api::token::ConsistencyToken;
use logbook_api::txns::BeginBody;
use serde_json::json;

#[test]
fn reads_return_their_positions_and_the_session_reads_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &[], &[], Stdio::inherit());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = serve.async_client();
        let settings = CreateStream {
            partitions: Some(3),
            ..CreateStream::default()
        };
        client.create_stream("orders", &settings).await.unwrap();
        client
            .create_view("by_id", &json!({"source": "orders", "kind": "table"}))
            .await
            .unwrap();
        for i in 0..40 {
            let key = format!("o-{i}");
            let at = client
                .append("orders", RecordIn::new(json!({"i": i})).key(key.as_str()))
                .await
                .unwrap();
            // Read your write: found at once, never "not yet".
            let row = client
                .get_row("by_id", &key, &ReadOptions::default())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{key} not read back"));
            assert_eq!(row.value["i"], json!(i));
            // The answer names the positions it reflected, at least the write.
            let token = ConsistencyToken::decode(row.token.as_deref().unwrap()).unwrap();
            let seen = &token.streams["orders"];
            assert!(
                seen.offsets[&at.partition] > at.offset,
                "{seen:?} vs {at:?}"
            );
            let session = client.session();
            assert!(session.positions("orders").unwrap().offsets[&at.partition] > at.offset);
        }
        let page = client
            .scan_view("by_id", &KeyRange::default(), &ReadOptions::default())
            .await
            .unwrap();
        assert_eq!(page.rows.len(), 40);
        let token = ConsistencyToken::decode(page.token.as_deref().unwrap()).unwrap();
        let total: u64 = token.streams["orders"].offsets.values().sum();
        assert_eq!(total, 40, "the scan reflected all 40 appends");
        // Opting out sends no token, and still answers.
        assert!(
            client
                .get_row("by_id", "o-0", &ReadOptions::any())
                .await
                .unwrap()
                .is_some()
        );
        // Key-value reads: a commit's token joins the session; the read's answer names `_txn`.
        let (_, committed) = client
            .transaction(&BeginBody::default(), async |t| t.put("k", json!(5)).await)
            .await
            .unwrap();
        let row = client
            .kv_get("k", &ReadOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.value.get(), "5");
        let token = ConsistencyToken::decode(row.token.as_deref().unwrap()).unwrap();
        assert!(token.streams["_txn"].offsets[&0] > committed.offset.unwrap());
    });
}

#[test]
fn kv_reads_before_any_commit_carry_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &[], &[], Stdio::inherit());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = serve.async_client();
        let page = client
            .kv_scan(&KeyRange::default(), &ReadOptions::default())
            .await
            .unwrap();
        assert!(page.rows.is_empty());
        // No commit is durable: the answer reflected no position, so it names none.
        assert_eq!(page.token, None);
        assert_eq!(client.session().token_for("_txn"), None);
        let (_, committed) = client
            .transaction(&BeginBody::default(), async |t| t.put("k", json!(1)).await)
            .await
            .unwrap();
        let page = client
            .kv_scan(&KeyRange::default(), &ReadOptions::default())
            .await
            .unwrap();
        let token = ConsistencyToken::decode(page.token.as_deref().unwrap()).unwrap();
        assert!(token.streams["_txn"].offsets[&0] > committed.offset.unwrap());
    });
}

/// A stream with every partition a stream may have, and the longest name: the batch
/// append's answer and the view row's answer each carry a token naming every partition
/// they reflect (past the old 1 KiB limit, where tokens were dropped), and the session
/// sends it, so the read finds the client's own write.
#[test]
fn tokens_of_a_stream_with_every_partition_carry_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &[], &[], Stdio::inherit());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = serve.async_client();
        let stream = "w".repeat(logbook_api::limits::STREAM_NAME_BYTES_MAX);
        let partitions = logbook_api::limits::PARTITIONS_MAX;
        let settings = CreateStream {
            partitions: Some(partitions),
            ..CreateStream::default()
        };
        client.create_stream(&stream, &settings).await.unwrap();
        client
            .create_view("wide_rows", &json!({"source": stream, "kind": "table"}))
            .await
            .unwrap();
        let records = (0..4 * partitions)
            .map(|i| RecordIn::new(json!({"i": i})).key(format!("k-{i}")))
            .collect();
        let many = client.append_batch(&stream, records).await.unwrap();
        let text = many
            .token
            .expect("the batch append's answer carries a token");
        assert!(text.len() > 1024, "{} bytes", text.len());
        let written = ConsistencyToken::decode(&text).unwrap();
        let touched: std::collections::BTreeSet<u32> =
            many.positions.iter().map(|p| p.partition).collect();
        assert_eq!(written.streams[&stream].offsets.len(), touched.len());
        assert!(touched.len() > 200, "{} partitions written", touched.len());
        // The session sends its whole entry with the read ...
        let sent = client
            .session()
            .token_for(&stream)
            .expect("a token to send");
        assert_eq!(ConsistencyToken::decode(&sent).unwrap(), written);
        // ... and the read finds the write, and answers the positions it reflected.
        let last = format!("k-{}", 4 * partitions - 1);
        let row = client
            .get_row("wide_rows", &last, &ReadOptions::default())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{last} not read back"));
        assert_eq!(row.value["i"], json!(4 * partitions - 1));
        let text = row.token.expect("the view row's answer carries a token");
        let reflected = ConsistencyToken::decode(&text).unwrap();
        let offsets = &reflected.streams[&stream].offsets;
        assert_eq!(
            offsets.len(),
            partitions as usize,
            "every partition applied"
        );
        for (p, o) in &written.streams[&stream].offsets {
            assert!(offsets[p] >= *o, "partition {p}: {} < {o}", offsets[p]);
        }
    });
}
