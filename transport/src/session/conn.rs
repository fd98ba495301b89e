//! Per connection: malformed frames counted up to the threshold, then the
//! close. Per node: which connections are admitted (in all, per source IP
//! before the TLS handshake, per peer identity after it) and which frames
//! (one token bucket per identity, shared by its connections and kept after
//! it leaves until it has refilled).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::{Limits, PeerId, TokenBucket};

/// What to do after a malformed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Answer it; the connection stays open.
    Answer,
    /// Queue its answer, then close the connection at once with
    /// `CLOSE_MALFORMED` (the answer may be lost with the connection).
    AnswerThenClose,
    /// The connection reached the threshold already: answer nothing more.
    Silent,
}

/// The malformed-frame count of one connection, shared by its stream tasks.
#[derive(Debug)]
pub(crate) struct ConnSession {
    malformed: AtomicU32,
    threshold: u32,
}

impl ConnSession {
    pub(crate) fn new(threshold: u32) -> ConnSession {
        ConnSession {
            malformed: AtomicU32::new(0),
            threshold: threshold.max(1),
        }
    }

    /// Counts one malformed frame (before anything is answered, so whoever
    /// reads the count after the answer sees it) and says what to do.
    pub(crate) fn malformed(&self) -> Malformed {
        let n = self
            .malformed
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        match n.cmp(&self.threshold) {
            std::cmp::Ordering::Less => Malformed::Answer,
            std::cmp::Ordering::Equal => Malformed::AnswerThenClose,
            std::cmp::Ordering::Greater => Malformed::Silent,
        }
    }

    /// Whether the threshold was reached: nothing more is answered.
    pub(crate) fn closing(&self) -> bool {
        self.malformed.load(Ordering::Acquire) >= self.threshold
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` connections (or handshakes) in all.
    Total(usize),
    /// `max_connections_per_ip` from this source address.
    Ip(usize),
    /// `max_connections_per_peer` with this identity.
    Peer(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Total(n) => write!(f, "{n} connections in all (transport.max_connections)"),
            Refused::Ip(n) => write!(
                f,
                "{n} connections from this address (transport.max_connections_per_ip)"
            ),
            Refused::Peer(n) => write!(
                f,
                "{n} connections with this identity (transport.max_connections_per_peer)"
            ),
        }
    }
}

#[derive(Debug)]
struct PeerState {
    bucket: TokenBucket,
    connections: usize,
}

/// Connection and frame admission for a node.
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_ip: usize,
    max_per_peer: usize,
    rate: f64,
    burst: f64,
    total: usize,
    ips: HashMap<IpAddr, usize>,
    peers: HashMap<PeerId, PeerState>,
}

impl Admission {
    pub(crate) fn new(limits: &Limits) -> Admission {
        Admission {
            max_total: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            max_per_peer: limits.max_connections_per_peer,
            rate: limits.peer_rate_per_sec,
            burst: limits.peer_burst,
            total: 0,
            ips: HashMap::new(),
            peers: HashMap::new(),
        }
    }

    /// A connection attempt from `ip`, before its handshake: admitted (and
    /// counted until [`Admission::closed`]) or refused.
    pub(crate) fn incoming(&mut self, ip: IpAddr) -> Result<(), Refused> {
        if self.total >= self.max_total {
            return Err(Refused::Total(self.max_total));
        }
        let n = self.ips.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refused::Ip(self.max_per_ip));
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// An admitted attempt from `ip` ended (handshake failed, or the
    /// connection closed).
    pub(crate) fn closed(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.ips.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.ips.remove(&ip);
            }
        }
    }

    /// The handshake proved identity `peer`: admitted (counted until
    /// [`Admission::peer_left`]) or refused.
    pub(crate) fn peer_connected(&mut self, peer: PeerId, now: Instant) -> Result<(), Refused> {
        // A disconnected peer's bucket is kept until it has refilled, so
        // reconnecting does not buy a fresh burst; then it is forgotten.
        self.peers
            .retain(|_, s| s.connections > 0 || !s.bucket.is_full(now));
        let (rate, burst) = (self.rate, self.burst);
        let state = self.peers.entry(peer).or_insert_with(|| PeerState {
            bucket: TokenBucket::new(rate, burst, now),
            connections: 0,
        });
        if state.connections >= self.max_per_peer {
            return Err(Refused::Peer(self.max_per_peer));
        }
        state.connections += 1;
        Ok(())
    }

    /// A connection of `peer` admitted by [`Admission::peer_connected`] ended.
    pub(crate) fn peer_left(&mut self, peer: PeerId) {
        if let Some(s) = self.peers.get_mut(&peer) {
            s.connections = s.connections.saturating_sub(1);
        }
    }

    /// Takes one token from `peer`'s bucket at `now`.
    pub(crate) fn admit_frame(&mut self, peer: PeerId, now: Instant) -> bool {
        self.peers
            .get_mut(&peer)
            .is_some_and(|s| s.bucket.try_take(now))
    }

    /// Source addresses with connections (or handshakes) counted.
    #[cfg(test)]
    fn ips(&self) -> usize {
        self.ips.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            max_connections: 5,
            max_connections_per_ip: 3,
            max_connections_per_peer: 2,
            peer_rate_per_sec: 1.0,
            peer_burst: 2.0,
            ..Limits::default()
        }
    }

    #[test]
    fn malformed_frames_answer_then_close_at_the_threshold_then_nothing() {
        let s = ConnSession::new(3);
        assert_eq!(s.malformed(), Malformed::Answer);
        assert_eq!(s.malformed(), Malformed::Answer);
        assert!(!s.closing());
        assert_eq!(s.malformed(), Malformed::AnswerThenClose);
        assert!(s.closing());
        assert_eq!(s.malformed(), Malformed::Silent);
        assert_eq!(s.malformed(), Malformed::Silent);
        // A threshold of 1 closes on the first.
        assert_eq!(ConnSession::new(1).malformed(), Malformed::AnswerThenClose);
    }

    #[test]
    fn connections_are_capped_per_ip_before_the_handshake_and_in_all() {
        let mut a = Admission::new(&limits());
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            a.incoming(x).unwrap();
        }
        assert_eq!(a.incoming(x), Err(Refused::Ip(3)));
        a.incoming(y).unwrap();
        a.incoming(y).unwrap();
        // Five in all: even a new address is refused.
        let z: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(a.incoming(z), Err(Refused::Total(5)));
        a.closed(x);
        a.incoming(x).unwrap();
        for _ in 0..3 {
            a.closed(x);
        }
        a.closed(y);
        a.closed(y);
        assert_eq!(a.ips(), 0, "addresses without connections are forgotten");
        a.incoming(z).unwrap();
    }

    #[test]
    fn connections_are_capped_per_identity() {
        let t0 = Instant::now();
        let mut a = Admission::new(&limits());
        let p = PeerId::from_spki(b"p");
        a.peer_connected(p, t0).unwrap();
        a.peer_connected(p, t0).unwrap();
        assert_eq!(a.peer_connected(p, t0), Err(Refused::Peer(2)));
        a.peer_connected(PeerId::from_spki(b"q"), t0).unwrap();
        a.peer_left(p);
        a.peer_connected(p, t0).unwrap();
    }

    #[test]
    fn the_rate_is_per_identity_and_survives_reconnecting() {
        let t0 = Instant::now();
        let mut a = Admission::new(&limits());
        let p = PeerId::from_spki(b"p");
        assert!(!a.admit_frame(p, t0), "unknown peers are not admitted");
        a.peer_connected(p, t0).unwrap();
        assert!(a.admit_frame(p, t0));
        assert!(a.admit_frame(p, t0));
        assert!(!a.admit_frame(p, t0));
        a.peer_left(p);
        a.peer_connected(p, t0).unwrap();
        assert!(!a.admit_frame(p, t0), "reconnecting bought a fresh burst");
        assert!(a.admit_frame(p, t0 + Duration::from_secs(1)));
        // Once refilled and gone, the peer is forgotten.
        a.peer_left(p);
        a.peer_connected(PeerId::from_spki(b"q"), t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(a.peers.len(), 1);
    }
}
