//! Sessions: which principal owns which session. Pure (time and the fresh
//! id are inputs) and bounded.
//!
//! * A Call that names no session gets a new one, a random 128-bit id the
//!   node makes. It costs the table nothing: the id cannot be guessed, so
//!   it is recorded (owned by the caller) only when a Call first names it.
//!   A stream of sessionless Calls therefore cannot fill the table.
//! * A Call that names a session joins it if its caller owns it, claims it
//!   if no one does, and is refused if another principal owns it.
//! * Each principal holds at most `per_principal` sessions; claiming one
//!   more forgets that principal's oldest (never another's). At most
//!   `capacity` in all: past it, idle ones are swept and a claim that still
//!   finds no room is refused (`overloaded`). A session idle for longer than
//!   the TTL is forgotten.

use std::collections::{HashMap, VecDeque};
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
    /// Each principal's sessions, oldest claim first.
    by_owner: HashMap<PrincipalId, VecDeque<SessionId>>,
    capacity: usize,
    per_principal: usize,
    ttl: Duration,
}

impl SessionTable {
    /// A table of at most `capacity` sessions, `per_principal` for any one
    /// principal, each forgotten after `ttl` idle.
    pub fn new(capacity: usize, per_principal: usize, ttl: Duration) -> SessionTable {
        SessionTable {
            sessions: HashMap::new(),
            by_owner: HashMap::new(),
            capacity: capacity.max(1),
            per_principal: per_principal.max(1),
            ttl,
        }
    }

    /// The session a Call from `principal` runs in: `requested` if allowed,
    /// else a new one made by `fresh` (not recorded until a Call names it).
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
        let Some(id) = requested else {
            return Ok(fresh());
        };
        if let Some(e) = self.sessions.get_mut(&id) {
            if now.saturating_duration_since(e.last_used) <= self.ttl {
                if e.owner != *principal {
                    return Err(SessionError::NotYours(id));
                }
                e.last_used = now;
                return Ok(id);
            }
            self.forget(&id);
        }
        let held = self.by_owner.get(principal).map_or(0, VecDeque::len);
        if held >= self.per_principal {
            let oldest = self
                .by_owner
                .get_mut(principal)
                .and_then(VecDeque::pop_front);
            if let Some(old) = oldest {
                self.sessions.remove(&old);
            }
        } else if self.sessions.len() >= self.capacity {
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
        self.by_owner
            .entry(*principal)
            .or_default()
            .push_back(id.clone());
        Ok(id)
    }

    fn forget(&mut self, id: &SessionId) {
        if let Some(e) = self.sessions.remove(id)
            && let Some(q) = self.by_owner.get_mut(&e.owner)
        {
            q.retain(|s| s != id);
            if q.is_empty() {
                self.by_owner.remove(&e.owner);
            }
        }
    }

    /// Forgets sessions idle for longer than the TTL.
    pub fn sweep(&mut self, now: Instant) {
        let ttl = self.ttl;
        let idle: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_used) > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            self.forget(&id);
        }
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
    fn a_session_belongs_to_whoever_first_names_it() {
        let alice = PrincipalId::Peer(Fingerprint([1; 32]));
        let mallory = PrincipalId::Peer(Fingerprint([2; 32]));
        let mut t = SessionTable::new(10, 10, Duration::from_secs(60));
        let now = Instant::now();
        let fresh = t.admit(None, &alice, now, || s("s-1")).unwrap();
        assert_eq!(fresh, s("s-1"));
        assert!(t.is_empty(), "a fresh session costs nothing until named");
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
    fn sessionless_calls_never_fill_the_table() {
        let p = PrincipalId::Peer(Fingerprint([1; 32]));
        let mut t = SessionTable::new(2, 2, Duration::from_secs(10));
        let now = Instant::now();
        for i in 0..10_000u32 {
            t.admit(None, &p, now, || s(&format!("s-{i}"))).unwrap();
        }
        assert!(t.is_empty());
    }

    #[test]
    fn a_principal_evicts_only_its_own_oldest_and_the_table_is_bounded() {
        let p = PrincipalId::Peer(Fingerprint([1; 32]));
        let q = PrincipalId::Peer(Fingerprint([2; 32]));
        let r = PrincipalId::Peer(Fingerprint([3; 32]));
        let mut t = SessionTable::new(4, 2, Duration::from_secs(10));
        let now = Instant::now();
        t.admit(Some(s("q1")), &q, now, || s("x")).unwrap();
        t.admit(Some(s("a")), &p, now, || s("x")).unwrap();
        t.admit(Some(s("b")), &p, now, || s("x")).unwrap();
        // p's third claim forgets p's oldest, not q's.
        t.admit(Some(s("c")), &p, now, || s("x")).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.admit(Some(s("a")), &q, now, || s("x")),
            Ok(s("a")),
            "p's oldest was forgotten"
        );
        assert_eq!(
            t.admit(Some(s("q1")), &p, now, || s("x")),
            Err(SessionError::NotYours(s("q1")))
        );
        // Full of live sessions: a new principal's claim is refused.
        assert_eq!(
            t.admit(Some(s("r1")), &r, now, || s("x")),
            Err(SessionError::Full(4))
        );
        let later = now + Duration::from_secs(11);
        assert!(t.admit(Some(s("r1")), &r, later, || s("x")).is_ok());
        assert_eq!(t.len(), 1);
    }
}
