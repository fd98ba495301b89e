//! The durable audit log against the comparisons issue 11 names, side by
//! side in one run, on the same filesystem (under `target/tmp`) and with the
//! same events:
//!
//! * `durable_append/{mxp,sqlite}/batch_{1,8,64}`: chain + store + fsync
//!   of a batch of events (group commit), the node's `AuditLog` over its
//!   store (the append-only audit file beside redb) beside the same chain over SQLite (rusqlite, bundled; WAL,
//!   `synchronous=FULL`, one transaction per batch);
//! * `single_append/{mxp,raw_fdatasync}`: one event made durable, beside
//!   appending the same record bytes to a file and `fdatasync`;
//! * `chain_hash`: the pure chain step of one event (limits, canonical
//!   encoding, BLAKE3), to set against a single durable append;
//! * verification of the stored log, printed as events/s.
//!
//! Run: `cargo bench -p mxp-benches --bench audit_store`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mxp_actors::store::{AuditLog, Store};
use mxp_governance::audit::{AuditEvent, Chain, EventData, EventKind, RecordedOutput, ToolOutcome};
use mxp_protocol::{AgentId, Fingerprint, PrincipalId};
use serde_json::json;

/// A tool execution as an agent logs it (305 bytes encoded; the same
/// event as `benches/audit_chain.rs`).
fn event(i: u64) -> AuditEvent {
    let data = EventData::from_value(&json!({
        "tool": "http.fetch",
        "call_id": format!("c-{i:08}"),
        "duration_us": 1234 + i % 100,
        "args_digest": "9f86d081884c7d659a2feaa0c55ad015",
    }))
    .unwrap();
    AuditEvent::new(
        1_700_000_000_000 + i,
        EventKind::ToolExecution {
            outcome: ToolOutcome::Landed,
            output: RecordedOutput::Recorded(vec![b'x'; 20]),
        },
        data,
    )
    .with_trace(i.wrapping_mul(0x9e37_79b9))
    .with_session("s-0123456789abcdef0123456789abcdef".parse().unwrap())
    .with_principal(PrincipalId::Agent {
        agent: AgentId::from_bytes([7; 16]),
        node: Fingerprint([0xab; 32]),
    })
}

fn scratch() -> tempfile::TempDir {
    // The benches' own folder under target/: the same filesystem a node's
    // data folder beside the checkout would be on (not a tmpfs).
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// The same chain, stored in SQLite the way one would: a table of records
/// keyed by sequence number, WAL, `synchronous=FULL`, a transaction per
/// batch.
struct SqliteLog {
    conn: rusqlite::Connection,
    chain: Chain,
}

impl SqliteLog {
    fn open(dir: &std::path::Path) -> SqliteLog {
        let conn = rusqlite::Connection::open(dir.join("audit.sqlite")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch(
            "CREATE TABLE audit (seq INTEGER PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        SqliteLog {
            conn,
            chain: Chain::new(),
        }
    }

    fn append_batch(&mut self, events: Vec<AuditEvent>) {
        let tx = self.conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO audit (seq, record) VALUES (?1, ?2)")
                .unwrap();
            for e in events {
                let r = self.chain.append(e).unwrap();
                insert
                    .execute(rusqlite::params![r.seq() as i64, r.encode()])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

fn durable_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_append");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    for batch in [1usize, 8, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        let dir = scratch();
        let store = Store::open(&dir.path().join("mxp")).unwrap();
        let mut log = AuditLog::open(store).unwrap();
        let mut i = 0u64;
        g.bench_with_input(
            BenchmarkId::new("mxp", format!("batch_{batch}")),
            &batch,
            |b, &n| {
                b.iter(|| {
                    let events: Vec<_> = (0..n as u64).map(|k| event(i + k)).collect();
                    i += n as u64;
                    black_box(log.append_batch(events).unwrap());
                });
            },
        );
        let dir = scratch();
        let mut sql = SqliteLog::open(dir.path());
        let mut i = 0u64;
        g.bench_with_input(
            BenchmarkId::new("sqlite", format!("batch_{batch}")),
            &batch,
            |b, &n| {
                b.iter(|| {
                    let events: Vec<_> = (0..n as u64).map(|k| event(i + k)).collect();
                    i += n as u64;
                    sql.append_batch(events);
                });
            },
        );
    }
    g.finish();
}

fn single_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("single_append");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(8));
    let dir = scratch();
    let store = Store::open(&dir.path().join("mxp")).unwrap();
    let mut log = AuditLog::open(store).unwrap();
    let mut i = 0u64;
    g.bench_function("mxp", |b| {
        b.iter(|| {
            i += 1;
            black_box(log.append(event(i)).unwrap());
        });
    });
    // The floor: the same record bytes appended to a file and made durable
    // with one fdatasync, chain hashing included so only storage differs.
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("raw.log"))
        .unwrap();
    let mut chain = Chain::new();
    let mut i = 0u64;
    g.bench_function("raw_fdatasync", |b| {
        b.iter(|| {
            i += 1;
            let bytes = chain.append(event(i)).unwrap().encode();
            file.write_all(&bytes).unwrap();
            file.sync_data().unwrap();
        });
    });
    g.finish();
}

fn chain_hash(c: &mut Criterion) {
    let mut chain = Chain::new();
    let mut i = 0u64;
    c.bench_function("chain_hash", |b| {
        b.iter_batched(
            || {
                i += 1;
                event(i)
            },
            |e| black_box(chain.append(e).unwrap()),
            criterion::BatchSize::SmallInput,
        );
    });
}

/// Verifying the stored log from genesis (read, decode, hash, link, Merkle
/// root), in events/s.
fn verification(_: &mut Criterion) {
    const N: u64 = 20_000;
    let dir = scratch();
    let store: Arc<Store> = Store::open(&dir.path().join("mxp")).unwrap();
    let mut log = AuditLog::open(store).unwrap();
    for start in (0..N).step_by(1000) {
        log.append_batch((start..start + 1000).map(event).collect())
            .unwrap();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let v = log.verify_all().unwrap();
        black_box(v);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "verification: {N} stored events verified in {:.1} ms (best of 5): {:.0} events/s",
        best * 1e3,
        N as f64 / best
    );
}

criterion_group!(
    benches,
    durable_append,
    single_append,
    chain_hash,
    verification
);
criterion_main!(benches);
