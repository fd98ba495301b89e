//! Shared pieces of the criterion benchmarks in `benches/`: a latency
//! harness that drives N calls with K in flight and reports p50, p99 and
//! calls per second as greppable `RESULT` lines.
#![allow(clippy::indexing_slicing)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Runtime;

/// Bytes of the JSON body every Call benchmark sends.
pub const BODY_LEN: usize = 256;

/// The runtime every side-by-side contender runs on: tokio, multi-thread,
/// 2 workers (the machine's cores), so pairs compare like with like.
///
/// # Panics
/// If the runtime cannot be built.
#[allow(clippy::expect_used)]
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `{"method":"echo","params":"aaa…"}`, exactly [`BODY_LEN`] bytes.
pub fn call_body() -> Bytes {
    let (prefix, suffix) = (r#"{"method":"echo","params":""#, r#""}"#);
    let pad = BODY_LEN - prefix.len() - suffix.len();
    let body = format!("{prefix}{}{suffix}", "a".repeat(pad));
    debug_assert_eq!(body.len(), BODY_LEN);
    Bytes::from(body)
}

/// One call of a contender: a closure making a fresh future per call.
pub type CallFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The `p`th percentile of sorted samples (0 when empty).
pub fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Latencies (ns) and wall time gathered over every `iter_custom` call.
#[derive(Debug, Default)]
pub struct Samples {
    /// Every call's latency in ns.
    pub latencies: Vec<u64>,
    /// Calls made.
    pub calls: u64,
    /// Wall time they took.
    pub wall: Duration,
}

impl Samples {
    /// Prints `RESULT <label> <contender> inflight=.. p50_us=.. p99_us=..
    /// calls_per_s=..` and returns (p50 in µs, calls/s); NaN when nothing
    /// ran (the contender was filtered out on the command line).
    pub fn report(&mut self, label: &str, contender: &str, inflight: usize) -> (f64, f64) {
        if self.latencies.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        self.latencies.sort_unstable();
        let p50 = percentile(&self.latencies, 50) as f64 / 1000.0;
        let p99 = percentile(&self.latencies, 99) as f64 / 1000.0;
        let rate = self.calls as f64 / self.wall.as_secs_f64();
        eprintln!(
            "RESULT {label} {contender} inflight={inflight} p50_us={p50:.1} p99_us={p99:.1} calls_per_s={rate:.0} samples={}",
            self.latencies.len()
        );
        (p50, rate)
    }
}

/// Runs `total` calls with `inflight` tasks each calling in a loop; returns
/// the wall time and every call's latency in ns. Must run on a tokio runtime.
///
/// # Panics
/// If a calling task panics.
#[allow(clippy::unwrap_used)]
pub async fn drive(total: u64, inflight: usize, call: CallFn) -> (Duration, Vec<u64>) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks = inflight
        .min(usize::try_from(total).unwrap_or(usize::MAX))
        .max(1);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    call().await;
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for h in handles {
        all.extend(h.await.unwrap());
    }
    (start.elapsed(), all)
}
