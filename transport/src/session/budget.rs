//! Bytes held for request frames being read: a budget per connection and
//! one per node, reserved from the length the header declares *before* the
//! payload is read, and given back when the frame is complete (the bus's
//! byte budgets take over from there) or the read fails.
//!
//! Over budget, the node does not wait: it answers `overloaded` (400,
//! retriable) and stops the stream, so the bytes a peer can make a node hold
//! in partly read frames are at most `max_buffered_bytes_per_connection` per
//! connection and `max_buffered_bytes` in all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One counter with a limit.
#[derive(Debug)]
pub(crate) struct Pool {
    held: AtomicU64,
    limit: u64,
}

impl Pool {
    pub(crate) fn new(limit: u64) -> Arc<Pool> {
        Arc::new(Pool {
            held: AtomicU64::new(0),
            limit,
        })
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                h.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Which budget refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exhausted {
    /// The connection's (`max_buffered_bytes_per_connection`).
    Connection { held: u64, limit: u64 },
    /// The node's (`max_buffered_bytes`).
    Node { held: u64, limit: u64 },
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exhausted::Connection { held, limit } => write!(
                f,
                "this connection already holds {held} of its {limit} bytes of partly read frames (transport.max_buffered_bytes_per_connection)"
            ),
            Exhausted::Node { held, limit } => write!(
                f,
                "the node already holds {held} of its {limit} bytes of partly read frames (transport.max_buffered_bytes)"
            ),
        }
    }
}

/// A connection's read budget and the node's.
#[derive(Debug, Clone)]
pub(crate) struct ReadBudget {
    pub(crate) conn: Arc<Pool>,
    pub(crate) node: Arc<Pool>,
}

/// Bytes reserved from both pools; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: ReadBudget,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.conn.give(self.bytes);
        self.budget.node.give(self.bytes);
    }
}

impl ReadBudget {
    /// Reserves `bytes` from the connection's pool and the node's, or from
    /// neither.
    pub(crate) fn reserve(&self, bytes: u64) -> Result<Reservation, Exhausted> {
        if !self.conn.try_take(bytes) {
            return Err(Exhausted::Connection {
                held: self.conn.held(),
                limit: self.conn.limit,
            });
        }
        if !self.node.try_take(bytes) {
            self.conn.give(bytes);
            return Err(Exhausted::Node {
                held: self.node.held(),
                limit: self.node.limit,
            });
        }
        Ok(Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_per_connection_and_per_node_and_given_back() {
        let node = Pool::new(100);
        let a = ReadBudget {
            conn: Pool::new(60),
            node: node.clone(),
        };
        let b = ReadBudget {
            conn: Pool::new(60),
            node: node.clone(),
        };
        let a1 = a.reserve(40).unwrap();
        assert!(matches!(
            a.reserve(21),
            Err(Exhausted::Connection {
                held: 40,
                limit: 60
            })
        ));
        let a2 = a.reserve(20).unwrap();
        assert_eq!((a.conn.held(), node.held()), (60, 60));
        let b1 = b.reserve(40).unwrap();
        // The node's pool refuses; nothing stays taken from b's.
        assert!(matches!(
            b.reserve(1),
            Err(Exhausted::Node {
                held: 100,
                limit: 100
            })
        ));
        assert_eq!(b.conn.held(), 40);
        drop((a1, a2, b1));
        assert_eq!((a.conn.held(), b.conn.held(), node.held()), (0, 0, 0));
        // More than a pool holds is refused outright, never wrapped.
        assert!(a.reserve(u64::MAX).is_err());
        assert_eq!(node.held(), 0);
    }
}
