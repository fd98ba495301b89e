//! What a node's agents share: the authority that names principals, the
//! gate every effect passes, and the session table.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mxp_protocol::SessionId;
use mxp_transport::{NodeAuthority, Principal};
use ring::rand::SecureRandom;

use crate::audit::Auditor;
use crate::error::CallFailure;
use crate::gate::{Allowed, Denial, Enforcer, Gate, Intent, Minter, Refusal, keys};
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
    minter: Minter,
    enforcer: Enforcer,
    auditor: Auditor,
    sessions: Mutex<Sessions>,
    rng: ring::rand::SystemRandom,
}

/// The session table and a pool of random bytes for new session ids (one
/// system call per 256 ids, not one per Call).
struct Sessions {
    table: SessionTable,
    pool: Box<[u8; 4096]>,
    used: usize,
    minted: u64,
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
    ///
    /// # Panics
    /// Never in practice: only if the system random number generator fails
    /// when the node's token key is drawn (then no token could be trusted,
    /// and the node must not start).
    pub fn new(
        authority: Arc<NodeAuthority>,
        gate: Gate,
        max_sessions: usize,
        session_ttl: Duration,
    ) -> Services {
        let node = *authority.node().id().fingerprint();
        #[allow(clippy::expect_used)]
        let (minter, enforcer) = keys(node, gate.kill_switch().clone(), gate.settings().max_nonces)
            .expect("the system RNG draws the node's token key");
        Services {
            authority,
            gate,
            minter,
            enforcer,
            auditor: Auditor::off(),
            sessions: Mutex::new(Sessions {
                table: SessionTable::new(
                    max_sessions,
                    DEFAULT_SESSIONS_PER_PRINCIPAL.min(max_sessions),
                    session_ttl,
                ),
                pool: Box::new([0; 4096]),
                used: 4096,
                minted: 0,
            }),
            rng: ring::rand::SystemRandom::new(),
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

    /// Decides `intent` at the gate, minting its token on allow.
    ///
    /// # Errors
    /// The gate's [`Refusal`].
    pub fn check(&self, intent: Intent) -> Result<Allowed, Refusal> {
        self.gate.check(intent, &self.minter)
    }

    /// Decides `intent`, for effects that cannot wait for an approval
    /// (control, forwards, hook replies): a pending approval is a denial
    /// naming it.
    ///
    /// # Errors
    /// [`Denial`].
    pub fn check_now(&self, intent: Intent) -> Result<Allowed, Denial> {
        match self.check(intent) {
            Ok(a) => Ok(a),
            Err(Refusal::Denied(d)) => Err(d),
            Err(Refusal::NeedsApproval { pending, intent }) => Err(Denial {
                tool: intent.tool.clone(),
                effect: intent.effect,
                reasons: pending.reasons.clone(),
                message: format!(
                    "it needs approval {} (`mxp approvals approve {}`), and this kind of effect cannot wait for one",
                    pending.id, pending.id
                ),
                remedy: Some(Box::new(crate::gate::Remedy::Approval {
                    requirements: pending.requirements,
                })),
            }),
        }
    }

    /// These services, recording governed steps with `auditor`.
    #[must_use]
    pub fn with_auditor(mut self, auditor: Auditor) -> Services {
        self.auditor = auditor;
        self
    }

    /// The audit writer.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// The enforcing component that verifies tokens before tools run.
    pub fn enforcer(&self) -> &Enforcer {
        &self.enforcer
    }

    /// The node the services belong to.
    pub fn node(&self) -> mxp_protocol::Fingerprint {
        self.minter.node()
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
        let mut guard = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let Sessions {
            table,
            pool,
            used,
            minted,
        } = &mut *guard;
        let rng = &self.rng;
        let fresh = || {
            if *used + 16 > pool.len() {
                // The system RNG does not fail on supported platforms; if it
                // did, the counter mixed in keeps the ids unique here.
                let _ = rng.fill(&mut pool[..]);
                *used = 0;
            }
            let mut bytes = [0u8; 16];
            if let Some(chunk) = pool.get_mut(*used..*used + 16) {
                bytes.copy_from_slice(chunk);
                // Spent: nothing left in memory predicts an id handed out.
                chunk.fill(0);
            }
            *used += 16;
            *minted += 1;
            for (b, c) in bytes.iter_mut().zip(minted.to_le_bytes()) {
                *b ^= c;
            }
            SessionId::from_random(bytes)
        };
        table
            .admit(requested, principal.id(), Instant::now(), fresh)
            .map_err(|e| match e {
                SessionError::NotYours(s) => CallFailure::SessionNotYours(s),
                other => CallFailure::Overloaded(other.to_string()),
            })
    }
}
