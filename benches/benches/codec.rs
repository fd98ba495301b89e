//! MXP codec: encode, and decode with checksum verification, beside XXH3-64
//! alone over the same bytes (the floor no decoder can beat) and a plain
//! copy + hash (the floor for encoding).
//!
//! Run: `cargo bench -p mxp-benches --bench codec`
//! Ratios to read from one run, per payload size:
//! * `decode/parse` ÷ `decode/xxh3_alone`  (goal ≤ 1.5 up to 256 B, ≤ 1.1 from 4 KiB)
//! * `encode/encode_into_reused` ÷ `encode/copy_hash`  (goal ≤ 1.3)
//! * `encode/encode_alloc` ÷ `encode/copy_hash_alloc`  (the allocating encode
//!   beside its floor: a fresh exactly-sized `Vec`, copy, hash, into `Bytes`)
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mxp_protocol::{Flags, Frame, FrameHeader, MessageType};
use xxhash_rust::xxh3::xxh3_64;

const SIZES: [usize; 7] = [0, 64, 256, 1024, 4096, 16 * 1024, 1024 * 1024];

fn header() -> FrameHeader {
    FrameHeader::new(MessageType::Call)
        .with_flags(Flags::REQUIRES_ACK)
        .with_message_id(42)
        .with_trace_id(7)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn label(len: usize) -> String {
    match len {
        l if l >= 1024 * 1024 => format!("{}MiB", l / (1024 * 1024)),
        l if l >= 1024 => format!("{}KiB", l / 1024),
        l => format!("{l}B"),
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for len in SIZES {
        let wire = header().encode(&payload(len)).unwrap().into_bytes();
        // A static buffer makes `Bytes::clone` free (no reference count), so the
        // loop measures parsing alone, as when a socket hands its `Bytes` over.
        let wire: &'static [u8] = Box::leak(wire.to_vec().into_boxed_slice());
        let bytes = Bytes::from_static(wire);
        let covered = &wire[..wire.len() - 8];
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::new("xxh3_alone", label(len)), &len, |b, _| {
            b.iter(|| xxh3_64(black_box(covered)))
        });
        group.bench_with_input(BenchmarkId::new("parse", label(len)), &len, |b, _| {
            b.iter(|| Frame::parse(black_box(bytes.clone())).map(|f| f.message_id()))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for len in SIZES {
        let p = payload(len);
        let frame = header().encode(&p).unwrap();
        let covered = frame.as_bytes()[..frame.wire_len() - 8].to_vec();
        group.throughput(Throughput::Bytes(frame.wire_len() as u64));

        let mut buf = BytesMut::with_capacity(len + 64);
        group.bench_with_input(BenchmarkId::new("copy_hash", label(len)), &len, |b, _| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(black_box(&covered));
                let sum = xxh3_64(&buf);
                buf.extend_from_slice(&sum.to_le_bytes());
                black_box(buf.len())
            })
        });
        let mut buf = BytesMut::with_capacity(len + 64);
        group.bench_with_input(
            BenchmarkId::new("encode_into_reused", label(len)),
            &len,
            |b, _| {
                b.iter(|| {
                    buf.clear();
                    black_box(header())
                        .encode_into(black_box(&p), &mut buf)
                        .unwrap();
                    black_box(buf.len())
                })
            },
        );
        // The floor for the allocating encode: one exactly-sized fresh `Vec`,
        // copy of header + payload, one hash, handed to `Bytes` (no copy).
        group.bench_with_input(
            BenchmarkId::new("copy_hash_alloc", label(len)),
            &len,
            |b, _| {
                b.iter(|| {
                    let src = black_box(&covered);
                    let mut v = Vec::with_capacity(src.len() + 8);
                    v.extend_from_slice(src);
                    let sum = xxh3_64(&v);
                    v.extend_from_slice(&sum.to_le_bytes());
                    Bytes::from(v)
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("encode_alloc", label(len)),
            &len,
            |b, _| b.iter(|| black_box(header()).encode(black_box(&p)).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
