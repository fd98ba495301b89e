//! Live counts of what the transport holds, for tests, metrics and `status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
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

/// Decrements its gauge when dropped.
#[derive(Debug)]
pub(crate) struct Gauge(Arc<Stats>, fn(&Stats) -> &AtomicUsize);

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
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

    fn gauge(self: &Arc<Self>, f: fn(&Stats) -> &AtomicUsize) -> Gauge {
        f(self).fetch_add(1, Ordering::Relaxed);
        Gauge(self.clone(), f)
    }

    pub(crate) fn connection(self: &Arc<Self>) -> Gauge {
        self.gauge(|s| &s.connections)
    }

    pub(crate) fn stream(self: &Arc<Self>) -> Gauge {
        self.gauge(|s| &s.streams)
    }

    pub(crate) fn call(self: &Arc<Self>) -> Gauge {
        self.gauge(|s| &s.calls_in_flight)
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn frame_out(&self) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}
