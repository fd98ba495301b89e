//! What a node's agents share: the authority that names principals, the
//! gate every effect passes, and the session table.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mxp_protocol::SessionId;
use mxp_transport::{NodeAuthority, Principal};
use ring::rand::SecureRandom;

use crate::error::CallFailure;
use crate::gate::Gate;
use crate::session::{SessionError, SessionTable};

/// Live sessions a node holds at most, by default.
pub const DEFAULT_MAX_SESSIONS: usize = 65_536;
/// Sessions one principal may hold at once; claiming more forgets its oldest.
pub const DEFAULT_SESSIONS_PER_PRINCIPAL: usize = 1024;
/// How long an idle session is kept, by default.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(3600);

/// The node's shared services for its agents.
pub struct Services {
    authority: Arc<NodeAuthority>,
    gate: Gate,
    sessions: Mutex<SessionTable>,
    rng: ring::rand::SystemRandom,
    minted: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Services over `authority` and `gate`, holding at most `max_sessions`
    /// sessions, each kept `session_ttl` after its last Call.
    pub fn new(
        authority: Arc<NodeAuthority>,
        gate: Gate,
        max_sessions: usize,
        session_ttl: Duration,
    ) -> Services {
        Services {
            authority,
            gate,
            sessions: Mutex::new(SessionTable::new(
                max_sessions,
                DEFAULT_SESSIONS_PER_PRINCIPAL.min(max_sessions),
                session_ttl,
            )),
            rng: ring::rand::SystemRandom::new(),
            minted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The node's authority.
    pub fn authority(&self) -> &Arc<NodeAuthority> {
        &self.authority
    }

    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The caller with its role here (a configured operator is an operator).
    pub fn resolve(&self, p: Principal) -> Principal {
        self.authority.resolve(p)
    }

    /// Who a Call from `sender` naming a forwarded `caller` is from (see
    /// [`NodeAuthority::relay`]).
    ///
    /// # Errors
    /// [`CallFailure::Unauthenticated`] when the caller is not trusted here.
    pub fn relay(
        &self,
        sender: Principal,
        caller: mxp_protocol::Fingerprint,
    ) -> Result<Principal, CallFailure> {
        self.authority
            .relay(sender, caller)
            .map_err(|e| CallFailure::Unauthenticated(e.to_string()))
    }

    /// The session a Call from `principal` runs in.
    ///
    /// # Errors
    /// [`CallFailure::SessionNotYours`] or [`CallFailure::Overloaded`].
    pub fn admit(
        &self,
        requested: Option<SessionId>,
        principal: &Principal,
    ) -> Result<SessionId, CallFailure> {
        let fresh = || {
            let mut bytes = [0u8; 16];
            // The system RNG does not fail on supported platforms; if it did,
            // the counter mixed in still keeps the ids unique in this process.
            let _ = self.rng.fill(&mut bytes);
            let n = self
                .minted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes();
            for (b, c) in bytes.iter_mut().zip(n) {
                *b ^= c;
            }
            SessionId::from_random(bytes)
        };
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(requested, principal.id(), Instant::now(), fresh)
            .map_err(|e| match e {
                SessionError::NotYours(s) => CallFailure::SessionNotYours(s),
                other => CallFailure::Overloaded(other.to_string()),
            })
    }
}
