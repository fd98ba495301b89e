//! The in-process bus beside a raw `tokio::sync::mpsc` channel of the same
//! capacity carrying the same `Bytes`: what the bus adds to moving a frame.
//!
//! Run: `cargo bench -p mxp-benches --bench bus`
//!
//! Runtime: one tokio multi-thread runtime with 2 worker threads (the size of
//! the machines this project targets); every task of both contenders runs on
//! it, and both halves of a pair run in the same process, one after the other.
//!
//! Ratios to read from one run:
//! * `bus_throughput/bus` ÷ `bus_throughput/mpsc` in elements/s (goal ≥ 0.5);
//! * `bus_hop/bus/64B` ÷ `bus_hop/mpsc/64B` — one-way hop, criterion's mean;
//!   the `RESULT` lines give p50 and p99 (goal: bus p50 ≤ 1.5 × mpsc p50);
//! * `bus_hop/bus/64KiB` ÷ `bus_hop/bus/64B` (goal ≈ 1: a frame moves
//!   without copy whatever its size).
//!
//! Every line starting with `RESULT` on stderr is computed from this file's own
//! samples (warm-up included), one per contender and configuration.
//! Results: docs/BENCHMARKS-transport.md.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mxp_protocol::{AgentId, Frame, FrameHeader, MessageType};
use mxp_transport::{Bus, Envelope, PeerId, Principal};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// Mailbox capacity of the bus (the `mailbox_capacity` default of `Limits`)
/// and capacity of the raw channel.
const CAPACITY: usize = 1024;
/// Envelopes taken per `recv_many` on both sides.
const BATCH: usize = 256;
/// Frames per criterion iteration in the throughput pair.
const FRAMES: u64 = 10_000;
/// Payload of the throughput pair's frame.
const THROUGHPUT_PAYLOAD: usize = 256;
/// Payload sizes of the hop pairs.
const HOP_PAYLOADS: [usize; 2] = [64, 64 * 1024];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn frame(payload: usize) -> Frame {
    FrameHeader::new(MessageType::Event)
        .with_message_id(1)
        .with_trace_id(1)
        .encode(&vec![7u8; payload])
        .unwrap()
}

fn envelope(frame: &Frame) -> Envelope {
    Envelope::new(frame.clone(), me(), None)
}

/// A principal for in-process senders: the node's own, from a bus's authority.
fn me() -> Principal {
    static ME: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(|| {
        Bus::new(1)
            .take_authority(PeerId::from_spki(b"bench node"), [])
            .unwrap()
            .node()
    });
    *ME
}

fn label(len: usize) -> String {
    if len >= 1024 {
        format!("{}KiB", len / 1024)
    } else {
        format!("{len}B")
    }
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let frame = frame(THROUGHPUT_PAYLOAD);
    let mut group = c.benchmark_group("bus_throughput");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(FRAMES));

    // The bus: AgentSender::send into a Mailbox, read with recv_many.
    let bus = Bus::new(CAPACITY);
    let agent = AgentId::from_bytes([1; 16]);
    let mut mailbox = Some(bus.register(agent).unwrap());
    let sender = bus.sender(agent).unwrap();
    let (mut frames, mut wall) = (0u64, Duration::ZERO);
    group.bench_function("bus", |b| {
        b.iter_custom(|iters| {
            let n = iters * FRAMES;
            let mut mb = mailbox.take().unwrap();
            let (s, f) = (sender.clone(), frame.clone());
            let (elapsed, mb) = rt.block_on(async move {
                let start = Instant::now();
                let consumer = tokio::spawn(async move {
                    let mut buf = Vec::with_capacity(BATCH);
                    let mut got = 0u64;
                    while got < n {
                        let k = mb.recv_many(&mut buf, BATCH).await;
                        assert!(k > 0, "bus gone");
                        got += k as u64;
                        buf.clear();
                    }
                    mb
                });
                let producer = tokio::spawn(async move {
                    for _ in 0..n {
                        s.send(envelope(&f)).await.unwrap();
                    }
                });
                producer.await.unwrap();
                let mb = consumer.await.unwrap();
                (start.elapsed(), mb)
            });
            mailbox = Some(mb);
            frames += n;
            wall += elapsed;
            elapsed
        })
    });
    let bus_rate = frames as f64 / wall.as_secs_f64();
    eprintln!(
        "RESULT bus throughput bus frames_per_s={bus_rate:.0} ns_per_frame={:.1}",
        1e9 / bus_rate
    );

    // The floor: the same Bytes through a bare channel of the same capacity.
    let (tx, rx) = mpsc::channel::<Bytes>(CAPACITY);
    let mut receiver = Some(rx);
    let (mut frames, mut wall) = (0u64, Duration::ZERO);
    group.bench_function("mpsc", |b| {
        b.iter_custom(|iters| {
            let n = iters * FRAMES;
            let mut rx = receiver.take().unwrap();
            let (s, bytes) = (tx.clone(), frame.as_bytes().clone());
            let (elapsed, rx) = rt.block_on(async move {
                let start = Instant::now();
                let consumer = tokio::spawn(async move {
                    let mut buf = Vec::with_capacity(BATCH);
                    let mut got = 0u64;
                    while got < n {
                        let k = rx.recv_many(&mut buf, BATCH).await;
                        assert!(k > 0, "channel closed");
                        got += k as u64;
                        buf.clear();
                    }
                    rx
                });
                let producer = tokio::spawn(async move {
                    for _ in 0..n {
                        s.send(bytes.clone()).await.unwrap();
                    }
                });
                producer.await.unwrap();
                let rx = consumer.await.unwrap();
                (start.elapsed(), rx)
            });
            receiver = Some(rx);
            frames += n;
            wall += elapsed;
            elapsed
        })
    });
    let mpsc_rate = frames as f64 / wall.as_secs_f64();
    eprintln!(
        "RESULT bus throughput mpsc frames_per_s={mpsc_rate:.0} ns_per_frame={:.1}",
        1e9 / mpsc_rate
    );
    eprintln!(
        "RESULT bus throughput ratio bus/mpsc={:.2} (goal >= 0.5)",
        bus_rate / mpsc_rate
    );
    group.finish();
}

/// Prints the percentiles of one-way hops (round trips halved), in ns.
fn report_hop(contender: &str, payload: usize, rtts: &mut [u64]) -> u64 {
    rtts.sort_unstable();
    let p50 = percentile(rtts, 50) / 2;
    let p99 = percentile(rtts, 99) / 2;
    let mean = rtts.iter().sum::<u64>() as f64 / rtts.len().max(1) as f64 / 2.0;
    eprintln!(
        "RESULT bus hop {contender} payload={} p50_ns={p50} p99_ns={p99} mean_ns={mean:.0} samples={}",
        label(payload),
        rtts.len()
    );
    p50
}

fn hop(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("bus_hop");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut p50s = Vec::new();
    for payload in HOP_PAYLOADS {
        let frame = frame(payload);

        // The bus: A sends the envelope to B's mailbox; B's task moves the
        // same envelope back to A's mailbox. One sample is one round trip.
        let bus = Bus::new(CAPACITY);
        let (a, b_id) = (AgentId::from_bytes([1; 16]), AgentId::from_bytes([2; 16]));
        let mut mb_a = Some(bus.register(a).unwrap());
        let mut mb_b = bus.register(b_id).unwrap();
        let (to_a, to_b) = (bus.sender(a).unwrap(), bus.sender(b_id).unwrap());
        let echo = rt.spawn(async move {
            while let Some(env) = mb_b.recv().await {
                if to_a.send(env).await.is_err() {
                    break;
                }
            }
        });
        let mut rtts: Vec<u64> = Vec::new();
        group.bench_function(BenchmarkId::new("bus", label(payload)), |b| {
            b.iter_custom(|iters| {
                let mut mb = mb_a.take().unwrap();
                let (to_b, env) = (to_b.clone(), envelope(&frame));
                let (elapsed, mb, samples) = rt.block_on(async move {
                    tokio::spawn(async move {
                        let mut samples = Vec::with_capacity(iters as usize);
                        let mut env = Some(env);
                        let start = Instant::now();
                        for _ in 0..iters {
                            let t = Instant::now();
                            to_b.send(env.take().unwrap()).await.unwrap();
                            env = Some(mb.recv().await.unwrap());
                            samples.push(t.elapsed().as_nanos() as u64);
                        }
                        (start.elapsed(), mb, samples)
                    })
                    .await
                    .unwrap()
                });
                mb_a = Some(mb);
                rtts.extend(samples);
                // One iteration is one round trip: report the one-way hop.
                elapsed / 2
            })
        });
        echo.abort();
        let bus_p50 = report_hop("bus", payload, &mut rtts);

        // The floor: a raw mpsc ping-pong of the frame's Bytes.
        let (tx_a, rx_a) = mpsc::channel::<Bytes>(CAPACITY);
        let (tx_b, mut rx_b) = mpsc::channel::<Bytes>(CAPACITY);
        let mut rx_a = Some(rx_a);
        let echo = rt.spawn(async move {
            while let Some(bytes) = rx_b.recv().await {
                if tx_a.send(bytes).await.is_err() {
                    break;
                }
            }
        });
        let mut rtts: Vec<u64> = Vec::new();
        group.bench_function(BenchmarkId::new("mpsc", label(payload)), |b| {
            b.iter_custom(|iters| {
                let mut rx = rx_a.take().unwrap();
                let (tx_b, bytes) = (tx_b.clone(), frame.as_bytes().clone());
                let (elapsed, rx, samples) = rt.block_on(async move {
                    tokio::spawn(async move {
                        let mut samples = Vec::with_capacity(iters as usize);
                        let mut bytes = Some(bytes);
                        let start = Instant::now();
                        for _ in 0..iters {
                            let t = Instant::now();
                            tx_b.send(bytes.take().unwrap()).await.unwrap();
                            bytes = Some(rx.recv().await.unwrap());
                            samples.push(t.elapsed().as_nanos() as u64);
                        }
                        (start.elapsed(), rx, samples)
                    })
                    .await
                    .unwrap()
                });
                rx_a = Some(rx);
                rtts.extend(samples);
                elapsed / 2
            })
        });
        drop(tx_b);
        echo.abort();
        let mpsc_p50 = report_hop("mpsc", payload, &mut rtts);
        eprintln!(
            "RESULT bus hop ratio payload={} bus_p50/mpsc_p50={:.2} (goal <= 1.5)",
            label(payload),
            bus_p50 as f64 / mpsc_p50.max(1) as f64
        );
        p50s.push(bus_p50);
    }
    if let [small, large] = p50s[..] {
        eprintln!(
            "RESULT bus hop size ratio bus_p50_64KiB/bus_p50_64B={:.2} (goal ~ 1)",
            large as f64 / small.max(1) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, throughput, hop);
criterion_main!(benches);
