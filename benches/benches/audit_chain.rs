//! The audit chain's pure costs: hashing one realistic (~300-byte) event
//! (canonical encoding + BLAKE3), appending its leaf to the Merkle log,
//! encoding/decoding a record, and verifying a 10,000-event log from its
//! bytes (decode + hash + links + Merkle root).
//!
//! Run: `cargo bench -p mxp-benches --bench audit_chain`
//! Besides criterion's report it prints events/s for each step.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mxp_governance::audit::{
    AuditEvent, Chain, EventData, EventKind, Limits, MerkleLog, Record, RecordedOutput,
    ToolOutcome, merkle, verify,
};
use mxp_protocol::{AgentId, Fingerprint, PrincipalId};
use serde_json::json;

const LOG: usize = 10_000;

/// A tool execution as an agent would log it: principal, session, trace,
/// a recorded 20-byte output and a few data fields: 305 bytes encoded.
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

fn log() -> Vec<Vec<u8>> {
    let mut chain = Chain::new();
    (0..LOG as u64)
        .map(|i| chain.append(event(i)).unwrap().encode())
        .collect()
}

fn per_second(label: &str, n: usize, f: impl Fn()) {
    f();
    let rounds = 5;
    let start = Instant::now();
    for _ in 0..rounds {
        f();
    }
    let secs = start.elapsed().as_secs_f64() / f64::from(rounds);
    eprintln!(
        "audit_chain: {label}: {:.0} events/s ({:.2} µs/event)",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}

fn chain_hash(c: &mut Criterion) {
    let e = event(42);
    let encoded = e.canonical_encoding().len();
    let record = Record::new(e.clone(), [1; 32]).encode().len();
    eprintln!("audit_chain: canonical event {encoded} bytes, record {record} bytes");
    let prev = [1u8; 32];
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| b.iter(|| black_box(&e).canonical_encoding()));
    group.bench_function("chain_hash", |b| b.iter(|| black_box(&e).chain_hash(&prev)));
    let mut chain = Chain::new();
    group.bench_function("chain_append", |b| {
        b.iter(|| chain.append(black_box(e.clone())).unwrap())
    });
    let bytes = Record::new(e.clone(), prev).encode();
    group.bench_function("record_decode", |b| {
        b.iter(|| Record::decode(black_box(&bytes), &Limits::default()).unwrap())
    });
    let mut tree = MerkleLog::new();
    let leaf = merkle::leaf_hash(&prev);
    group.bench_function("merkle_append", |b| b.iter(|| tree.append(black_box(leaf))));
    group.finish();
}

fn verification(c: &mut Criterion) {
    let log = log();
    let mut group = c.benchmark_group("audit_verify");
    group.sample_size(20);
    group.throughput(Throughput::Elements(LOG as u64));
    group.bench_function("verify_10000", |b| {
        b.iter(|| verify(black_box(&log), &Limits::default()).unwrap())
    });
    group.finish();

    let e = event(42);
    per_second("chain hash (encode + BLAKE3)", LOG, || {
        for i in 0..LOG {
            black_box(e.chain_hash(&[i as u8; 32]));
        }
    });
    per_second("chain append (check limits + hash)", LOG, || {
        let mut chain = Chain::new();
        for _ in 0..LOG {
            black_box(chain.append(e.clone()).unwrap());
        }
    });
    per_second("merkle append", LOG, || {
        let mut tree = MerkleLog::new();
        for i in 0..LOG {
            tree.append(merkle::leaf_hash(&[i as u8; 32]));
        }
        black_box(tree.root());
    });
    per_second("verify 10,000-event log from bytes", LOG, || {
        black_box(verify(&log, &Limits::default()).unwrap());
    });
}

criterion_group!(benches, chain_hash, verification);
criterion_main!(benches);
