//! Limits on what a peer can make a node hold or do, and the token bucket
//! behind the per-peer rate limit (pure: time is an input).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Transport limits. Every field has a safe default (see [`Limits::default`])
/// and is documented in docs/CONFIG.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame payload accepted or sent, in bytes (at most 16 MiB).
    pub max_frame_payload: u64,
    /// Concurrent bidirectional streams (Calls, MXP streams) per connection.
    /// QUIC flow control enforces it: a peer cannot open more.
    pub max_streams_per_connection: u32,
    /// Concurrent unidirectional streams (Events) per connection.
    pub max_uni_streams_per_connection: u32,
    /// Concurrent connections (handshakes included) a node accepts; more
    /// are refused before their handshake.
    pub max_connections: usize,
    /// Concurrent connections (handshakes included) from one source IP
    /// address; more are refused before their TLS handshake starts.
    pub max_connections_per_ip: usize,
    /// Concurrent connections one peer identity may hold; a further one is
    /// closed right after its handshake with application code 3.
    pub max_connections_per_peer: usize,
    /// Bytes one connection may hold in request frames being read (each
    /// frame's whole declared length, reserved when its header arrives); a
    /// frame that does not fit is answered `overloaded` and not read.
    pub max_buffered_bytes_per_connection: u64,
    /// Bytes all connections together may hold in request frames being read.
    pub max_buffered_bytes: u64,
    /// Sustained frames per second one peer identity may send (all its connections).
    pub peer_rate_per_sec: f64,
    /// Frames a peer may send in a burst above the sustained rate.
    pub peer_burst: f64,
    /// Time a TLS handshake may take.
    #[serde(with = "millis")]
    pub handshake_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// Time a peer has to deliver a whole request frame once it opened a stream
    /// (slow-loris protection).
    #[serde(with = "millis")]
    pub request_timeout: Duration,
    /// Deadline of a Call that states none (timeout 0).
    #[serde(with = "millis")]
    pub default_call_timeout: Duration,
    /// Longest deadline a Call may ask for.
    #[serde(with = "millis")]
    pub max_call_timeout: Duration,
    /// Malformed frames a connection may send before it is closed.
    pub malformed_threshold: u32,
    /// Frames an agent's mailbox holds before senders are told it is overloaded.
    pub mailbox_capacity: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_payload: mxp_protocol::MAX_PAYLOAD_LEN,
            max_streams_per_connection: 256,
            max_uni_streams_per_connection: 64,
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_connections_per_peer: 8,
            max_buffered_bytes_per_connection: 64 * 1024 * 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
            peer_rate_per_sec: 50_000.0,
            peer_burst: 100_000.0,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            default_call_timeout: Duration::from_secs(30),
            max_call_timeout: Duration::from_secs(300),
            malformed_threshold: 8,
            mailbox_capacity: 1024,
        }
    }
}

impl Limits {
    /// Checks the values make sense together.
    ///
    /// # Errors
    /// A message naming the field and the reason.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(format!("{name} must be greater than zero"))
            } else {
                Ok(())
            }
        };
        if self.max_frame_payload > mxp_protocol::MAX_PAYLOAD_LEN {
            return Err(format!(
                "max_frame_payload {} exceeds the MXP maximum of {} bytes",
                self.max_frame_payload,
                mxp_protocol::MAX_PAYLOAD_LEN
            ));
        }
        if self.max_streams_per_connection == 0 {
            return Err("max_streams_per_connection must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.max_connections_per_ip == 0 {
            return Err("max_connections_per_ip must be at least 1".into());
        }
        if self.max_connections_per_peer == 0 {
            return Err("max_connections_per_peer must be at least 1".into());
        }
        let one_frame = self.max_frame_payload + mxp_protocol::FRAME_OVERHEAD as u64;
        if self.max_buffered_bytes_per_connection < one_frame {
            return Err(format!(
                "max_buffered_bytes_per_connection {} is less than one frame of max_frame_payload ({one_frame} bytes with its header and checksum)",
                self.max_buffered_bytes_per_connection
            ));
        }
        if self.max_buffered_bytes < self.max_buffered_bytes_per_connection {
            return Err(format!(
                "max_buffered_bytes {} is less than max_buffered_bytes_per_connection {}",
                self.max_buffered_bytes, self.max_buffered_bytes_per_connection
            ));
        }
        if self.mailbox_capacity == 0 {
            return Err("mailbox_capacity must be at least 1".into());
        }
        if !(self.peer_rate_per_sec.is_finite() && self.peer_rate_per_sec > 0.0) {
            return Err("peer_rate_per_sec must be a positive number".into());
        }
        if !(self.peer_burst.is_finite() && self.peer_burst >= 1.0) {
            return Err("peer_burst must be at least 1".into());
        }
        positive("handshake_timeout", self.handshake_timeout)?;
        positive("idle_timeout", self.idle_timeout)?;
        positive("request_timeout", self.request_timeout)?;
        positive("default_call_timeout", self.default_call_timeout)?;
        if self.max_call_timeout < self.default_call_timeout {
            return Err("max_call_timeout must not be shorter than default_call_timeout".into());
        }
        Ok(())
    }

    /// The deadline for a Call that asked for `timeout_secs` (0: none stated).
    pub fn call_deadline(&self, timeout_secs: u32) -> Duration {
        match timeout_secs {
            0 => self.default_call_timeout,
            s => Duration::from_secs(u64::from(s)).min(self.max_call_timeout),
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` stored.
///
/// ```
/// use std::time::{Duration, Instant};
/// use mxp_transport::TokenBucket;
/// let t0 = Instant::now();
/// let mut b = TokenBucket::new(10.0, 2.0, t0);
/// assert!(b.try_take(t0));
/// assert!(b.try_take(t0));
/// assert!(!b.try_take(t0));                          // burst spent
/// assert!(b.try_take(t0 + Duration::from_millis(100))); // one token back after 1/10 s
/// ```
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Whether the bucket would be full at `now` (a fresh bucket would be the same).
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// Takes one token if there is one at time `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate_and_caps_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 5.0, t0);
        assert_eq!((0..10).filter(|_| b.try_take(t0)).count(), 5);
        let t1 = t0 + Duration::from_millis(50); // 5 tokens' worth
        assert_eq!((0..10).filter(|_| b.try_take(t1)).count(), 5);
        let t2 = t1 + Duration::from_secs(3600); // refill caps at burst
        assert_eq!((0..10).filter(|_| b.try_take(t2)).count(), 5);
        // Time going backwards never adds tokens.
        assert!(!b.try_take(t0));
        assert!(!b.is_full(t2));
        assert!(b.is_full(t2 + Duration::from_millis(50)));
    }

    #[test]
    fn limits_validate_names_the_field() {
        assert!(Limits::default().validate().is_ok());
        let l = Limits {
            max_frame_payload: mxp_protocol::MAX_PAYLOAD_LEN + 1,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().contains("max_frame_payload"));
        let l = Limits {
            request_timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().contains("request_timeout"));
        let l = Limits {
            peer_rate_per_sec: f64::NAN,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().contains("peer_rate_per_sec"));
        let l = Limits {
            max_connections_per_ip: 0,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().contains("max_connections_per_ip"));
        let l = Limits {
            max_connections_per_peer: 0,
            ..Limits::default()
        };
        assert!(
            l.validate()
                .unwrap_err()
                .contains("max_connections_per_peer")
        );
        let l = Limits {
            max_buffered_bytes_per_connection: mxp_protocol::MAX_PAYLOAD_LEN,
            ..Limits::default()
        };
        assert!(
            l.validate()
                .unwrap_err()
                .contains("max_buffered_bytes_per_connection")
        );
        let l = Limits {
            max_frame_payload: 1000,
            max_buffered_bytes_per_connection: 1040,
            max_buffered_bytes: 1039,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().starts_with("max_buffered_bytes "));
        let l = Limits {
            max_frame_payload: 1000,
            max_buffered_bytes_per_connection: 1040,
            max_buffered_bytes: 1040,
            ..Limits::default()
        };
        assert!(l.validate().is_ok());
    }

    #[test]
    fn call_deadline_is_clamped() {
        let l = Limits::default();
        assert_eq!(l.call_deadline(0), l.default_call_timeout);
        assert_eq!(l.call_deadline(5), Duration::from_secs(5));
        assert_eq!(l.call_deadline(u32::MAX), l.max_call_timeout);
    }
}
