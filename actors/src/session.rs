//! Sessions: which principal owns which session. Pure (time and the fresh
//! id are inputs) and bounded.
//!
//! A Call that names no session gets a new one, owned by its caller. A Call
//! that names a session joins it if its caller owns it, claims it if no one
//! does, and is refused if another principal owns it. Sessions idle for
//! longer than the TTL are forgotten; past `capacity`, idle ones are swept
//! first and a Call that still finds no room is refused (`overloaded`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mxp_protocol::{PrincipalId, SessionId};

/// Why a Call cannot run in the session it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Another principal owns the session.
    #[error("session {0} belongs to another principal")]
    NotYours(SessionId),
    /// The table is full of live sessions.
    #[error("too many live sessions on this node ({0}); try again later")]
    Full(usize),
}

#[derive(Debug)]
struct Entry {
    owner: PrincipalId,
    last_used: Instant,
}

/// Owners of live sessions.
#[derive(Debug)]
pub struct SessionTable {
    sessions: HashMap<SessionId, Entry>,
    capacity: usize,
    ttl: Duration,
}

impl SessionTable {
    /// A table of at most `capacity` sessions, each forgotten after `ttl` idle.
    pub fn new(capacity: usize, ttl: Duration) -> SessionTable {
        SessionTable {
            sessions: HashMap::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The session a Call from `principal` runs in: `requested` if allowed,
    /// else a new one made by `fresh`.
    ///
    /// # Errors
    /// [`SessionError`] if another principal owns `requested`, or the table
    /// is full of live sessions.
    pub fn admit(
        &mut self,
        requested: Option<SessionId>,
        principal: &PrincipalId,
        now: Instant,
        fresh: impl FnOnce() -> SessionId,
    ) -> Result<SessionId, SessionError> {
        let id = match requested {
            Some(id) => {
                if let Some(e) = self.sessions.get_mut(&id)
                    && now.saturating_duration_since(e.last_used) <= self.ttl
                {
                    if e.owner != *principal {
                        return Err(SessionError::NotYours(id));
                    }
                    e.last_used = now;
                    return Ok(id);
                }
                id
            }
            None => fresh(),
        };
        if self.sessions.len() >= self.capacity && !self.sessions.contains_key(&id) {
            self.sweep(now);
            if self.sessions.len() >= self.capacity {
                return Err(SessionError::Full(self.capacity));
            }
        }
        self.sessions.insert(
            id.clone(),
            Entry {
                owner: *principal,
                last_used: now,
            },
        );
        Ok(id)
    }

    /// Forgets sessions idle for longer than the TTL.
    pub fn sweep(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.sessions
            .retain(|_, e| now.saturating_duration_since(e.last_used) <= ttl);
    }

    /// Live sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxp_protocol::Fingerprint;

    fn s(x: &str) -> SessionId {
        x.parse().unwrap()
    }

    #[test]
    fn a_session_belongs_to_whoever_started_it() {
        let alice = PrincipalId::Peer(Fingerprint([1; 32]));
        let mallory = PrincipalId::Peer(Fingerprint([2; 32]));
        let mut t = SessionTable::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let fresh = t.admit(None, &alice, now, || s("s-1")).unwrap();
        assert_eq!(fresh, s("s-1"));
        assert_eq!(
            t.admit(Some(s("s-1")), &alice, now, || s("x")),
            Ok(s("s-1"))
        );
        assert_eq!(
            t.admit(Some(s("s-1")), &mallory, now, || s("x")),
            Err(SessionError::NotYours(s("s-1")))
        );
        // A session nobody holds can be named and is claimed.
        assert_eq!(
            t.admit(Some(s("mine")), &mallory, now, || s("x")),
            Ok(s("mine"))
        );
        // After the TTL the session is free again.
        let later = now + Duration::from_secs(61);
        assert_eq!(
            t.admit(Some(s("s-1")), &mallory, later, || s("x")),
            Ok(s("s-1"))
        );
    }

    #[test]
    fn the_table_is_bounded_and_sweeps_idle_sessions_first() {
        let p = PrincipalId::Peer(Fingerprint([1; 32]));
        let mut t = SessionTable::new(2, Duration::from_secs(10));
        let now = Instant::now();
        t.admit(Some(s("a")), &p, now, || s("x")).unwrap();
        t.admit(Some(s("b")), &p, now, || s("x")).unwrap();
        assert_eq!(
            t.admit(Some(s("c")), &p, now, || s("x")),
            Err(SessionError::Full(2))
        );
        assert_eq!(t.len(), 2);
        let later = now + Duration::from_secs(11);
        assert!(t.admit(Some(s("c")), &p, later, || s("x")).is_ok());
        assert_eq!(t.len(), 1);
    }
}
