//! Capability tokens at the gate: minted on allow ([`Minter`], held by the
//! node's services and used only by [`Gate::check`](super::Gate::check)),
//! verified by the enforcing component before a tool runs ([`Enforcer`]).

use std::sync::Mutex;
use std::time::Duration;

use mxp_governance::token::args::{ArgsDigest, args_digest};
use mxp_governance::token::{
    CallIntent, Claims, Grant as TokenGrant, MacKey, Nonce, NonceLedger, Token, TokenError,
    VerifiedToken, Verifier,
};
use mxp_protocol::Fingerprint;
use ring::rand::SecureRandom;
use serde_json::Value;

use super::killswitch::{InFlight, InFlightGuard, KillSwitch};
use super::{Allowed, Denial, Intent};
use crate::tool::EffectClass;

/// Mints MAC tokens under this node's key.
pub struct Minter {
    key: MacKey,
    node: Fingerprint,
    nonces: Mutex<Pool>,
}

struct Pool {
    rng: ring::rand::SystemRandom,
    bytes: Box<[u8; 4096]>,
    used: usize,
    minted: u64,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A fresh MAC key pair: the minter and the enforcer that verifies its
/// tokens. The key is random per process: tokens never outlive the node.
///
/// # Errors
/// When the system RNG fails.
pub(crate) fn keys(
    node: Fingerprint,
    kill: KillSwitch,
    max_nonces: usize,
) -> Result<(Minter, Enforcer), ring::error::Unspecified> {
    let rng = ring::rand::SystemRandom::new();
    let mut secret = [0u8; 32];
    rng.fill(&mut secret)?;
    let key = MacKey::new(node, secret);
    secret.fill(0);
    let verifier = Verifier::new().with_mac_key(key.clone());
    Ok((
        Minter {
            key,
            node,
            nonces: Mutex::new(Pool {
                rng,
                bytes: Box::new([0; 4096]),
                used: 4096,
                minted: 0,
            }),
        },
        Enforcer {
            verifier,
            ledger: Mutex::new(NonceLedger::new(max_nonces)),
            kill,
        },
    ))
}

impl Minter {
    /// The issuing node.
    pub fn node(&self) -> Fingerprint {
        self.node
    }

    fn nonce(&self) -> Nonce {
        let mut p = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        let Pool {
            rng,
            bytes,
            used,
            minted,
        } = &mut *p;
        if *used + 16 > bytes.len() {
            // The system RNG does not fail on supported platforms; if it
            // did, the counter mixed in keeps nonces unique in this process.
            let _ = rng.fill(&mut bytes[..]);
            *used = 0;
        }
        let mut n = [0u8; 16];
        if let Some(chunk) = bytes.get_mut(*used..*used + 16) {
            n.copy_from_slice(chunk);
            chunk.fill(0);
        }
        *used += 16;
        *minted += 1;
        for (b, c) in n.iter_mut().zip(minted.to_le_bytes()) {
            *b ^= c;
        }
        Nonce(n)
    }

    /// A token for exactly `intent`, valid `ttl` from `now_ms`.
    pub(crate) fn mint(
        &self,
        intent: &Intent,
        session: &mxp_protocol::SessionId,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<Token, TokenError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let claims = Claims {
            principal: *intent.principal.id(),
            agent: intent.agent,
            session: session.clone(),
            grants: vec![TokenGrant::new(
                intent.tool.clone(),
                args_digest(&intent.args),
            )],
            not_after_unix_ms: now_ms.saturating_add(ttl_ms),
            nonce: self.nonce(),
        };
        self.key.mint(&claims)
    }
}

/// The enforcing component's check: verifies an [`Allowed`]'s token against
/// the intent it is presented with, spends its nonce, and re-checks the
/// kill switch, before a tool may run.
pub struct Enforcer {
    verifier: Verifier,
    ledger: Mutex<NonceLedger>,
    kill: KillSwitch,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer").finish_non_exhaustive()
    }
}

/// Proof that a tool may run this exact intent now: the gate allowed it and
/// its token verified. Only [`Enforcer::grant`] makes one; a tool's execute
/// requires it.
#[derive(Debug)]
pub struct Grant<'a> {
    intent: &'a Intent,
    token: VerifiedToken<'a>,
    _in_flight: Option<InFlightGuard<'a>>,
}

impl<'a> Grant<'a> {
    /// The intent: a tool acts on these arguments only.
    pub fn intent(&self) -> &'a Intent {
        self.intent
    }

    /// The arguments the token binds.
    pub fn args(&self) -> &'a Value {
        &self.intent.args
    }

    /// The verified token.
    pub fn token(&self) -> &VerifiedToken<'a> {
        &self.token
    }
}

/// Why the enforcer refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnforceError {
    /// The intent carries no token (it is not a tool intent in a session).
    #[error("{0} has no capability token")]
    NoToken(String),
    /// The token did not verify.
    #[error("the capability token for {tool} was refused: {reason}")]
    Token {
        /// The tool.
        tool: String,
        /// Why ([`TokenError`]'s text).
        reason: String,
        /// Its reason code.
        code: &'static str,
    },
    /// The kill switch went on after the gate allowed the intent.
    #[error("{}", .0)]
    KillSwitch(Denial),
}

impl Enforcer {
    /// Verifies `allowed`'s token for its intent, whose argument digest is
    /// `digest` (computed by the caller from the arguments it will act on),
    /// and counts an external write in `in_flight` for the kill switch.
    ///
    /// # Errors
    /// [`EnforceError`] naming the refusal.
    pub fn grant<'a>(
        &self,
        allowed: &'a Allowed,
        digest: &'a ArgsDigest,
        in_flight: &'a InFlight,
        now_ms: u64,
    ) -> Result<Grant<'a>, EnforceError> {
        let intent = allowed.intent();
        let (Some(token), Some(session)) = (allowed.token(), intent.session.as_ref()) else {
            return Err(EnforceError::NoToken(intent.tool.clone()));
        };
        // Enter before reading the switch (see the module docs).
        let guard = (intent.effect == EffectClass::ExternalWrite).then(|| in_flight.enter());
        if guard.is_some() && self.kill.is_on() {
            return Err(EnforceError::KillSwitch(Denial::kill_switch(intent)));
        }
        let call = CallIntent {
            principal: intent.principal.id(),
            agent: &intent.agent,
            session,
            tool: &intent.tool,
            args_digest: digest,
        };
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let verified = self
            .verifier
            .verify(token.as_bytes(), &call, now_ms, &mut ledger)
            .map_err(|e| EnforceError::Token {
                tool: intent.tool.clone(),
                code: e.class(),
                reason: e.to_string(),
            })?;
        drop(ledger);
        Ok(Grant {
            intent,
            token: verified,
            _in_flight: guard,
        })
    }

    /// Verifies raw token bytes for an intent (used by tests and tools that
    /// receive a token from elsewhere).
    ///
    /// # Errors
    /// The [`TokenError`].
    pub fn verify<'a>(
        &self,
        token: &[u8],
        call: &CallIntent<'a>,
        now_ms: u64,
    ) -> Result<VerifiedToken<'a>, TokenError> {
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        self.verifier.verify(token, call, now_ms, &mut ledger)
    }
}
