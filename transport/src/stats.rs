//! Live counts of what the transport holds, for tests, metrics and `status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use mxp_protocol::MessageType;

/// Counters shared by a server or client and its tasks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    connections: AtomicUsize,
    streams: AtomicUsize,
    calls_in_flight: AtomicUsize,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    malformed: AtomicU64,
    refused_connections: AtomicU64,
    rate_limited: AtomicU64,
    over_read_budget: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Open QUIC connections.
    pub connections: usize,
    /// QUIC streams being served or used.
    pub streams: usize,
    /// Calls waiting for an answer.
    pub calls_in_flight: usize,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Frames that failed to decode.
    pub malformed: u64,
    /// Connections refused at the connection limit.
    pub refused_connections: u64,
    /// Frames refused by the per-peer rate limit.
    pub rate_limited: u64,
}

/// Decrements its gauge (and its Prometheus gauge, if it has one) when dropped.
#[derive(Debug)]
pub(crate) struct Gauge(Arc<Stats>, fn(&Stats) -> &AtomicUsize, Option<&'static str>);

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
        if let Some(name) = self.2 {
            metrics::gauge!(name).decrement(1.0);
        }
    }
}

impl Stats {
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let r = Ordering::Relaxed;
        StatsSnapshot {
            connections: self.connections.load(r),
            streams: self.streams.load(r),
            calls_in_flight: self.calls_in_flight.load(r),
            frames_in: self.frames_in.load(r),
            frames_out: self.frames_out.load(r),
            malformed: self.malformed.load(r),
            refused_connections: self.refused_connections.load(r),
            rate_limited: self.rate_limited.load(r),
        }
    }

    fn gauge(
        self: &Arc<Self>,
        f: fn(&Stats) -> &AtomicUsize,
        metric: Option<&'static str>,
    ) -> Gauge {
        f(self).fetch_add(1, Ordering::Relaxed);
        if let Some(name) = metric {
            metrics::gauge!(name).increment(1.0);
        }
        Gauge(self.clone(), f, metric)
    }

    /// A connection (counted in `mxp_quic_connections` when `metric` is set:
    /// the server's side, not a client's).
    pub(crate) fn connection(self: &Arc<Self>, metric: bool) -> Gauge {
        self.gauge(|s| &s.connections, metric.then_some("mxp_quic_connections"))
    }

    pub(crate) fn stream(self: &Arc<Self>) -> Gauge {
        self.gauge(|s| &s.streams, None)
    }

    pub(crate) fn call(self: &Arc<Self>) -> Gauge {
        self.gauge(|s| &s.calls_in_flight, None)
    }

    pub(crate) fn frame_in(&self, t: MessageType) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mxp_frames_in_total", "type" => t.name()).increment(1);
    }

    pub(crate) fn frame_out(&self, t: MessageType) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mxp_frames_out_total", "type" => t.name()).increment(1);
    }

    pub(crate) fn malformed(&self, class: &'static str) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mxp_decode_errors_total", "class" => class).increment(1);
    }

    pub(crate) fn refused(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mxp_connections_refused_total").increment(1);
    }

    /// A request frame refused because its declared length did not fit the
    /// connection's or the node's read budget.
    pub(crate) fn over_read_budget(&self) {
        self.over_read_budget.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mxp_read_budget_refused_total").increment(1);
    }

    pub(crate) fn over_read_budget_count(&self) -> u64 {
        self.over_read_budget.load(Ordering::Relaxed)
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mxp_rate_limited_total").increment(1);
    }
}
