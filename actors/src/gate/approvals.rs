//! Approvals at the gate: a `require_approval` decision creates a pending
//! approval bound to the exact intent (principal, agent, session, tool,
//! argument digest); operators vote on it; the same intent asked again once
//! approved is allowed, once. Every change is written to the store before
//! it takes effect, so pending and decided approvals survive a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mxp_governance::approval::{
    Approval, ApprovalBook, ApprovalError, ApprovalId, ApprovalState, IntentKey,
};
use mxp_governance::policy::ApprovalRequirement;
use mxp_governance::token::args::args_digest;
use mxp_protocol::PrincipalId;
use ring::rand::SecureRandom;
use tokio::sync::watch;

use super::{Denial, GateSettings, Intent};
use crate::store::{Store, StoreError};

/// A pending approval, as a waiting Call learns of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Its id.
    pub id: ApprovalId,
    /// Who must approve.
    pub requirements: Vec<ApprovalRequirement>,
    /// The determining policies.
    pub reasons: Vec<String>,
    /// When it expires, unix ms.
    pub expires_unix_ms: u64,
}

/// How waiting for an approval ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApprovalWait {
    /// Approved: ask the gate again.
    Approved,
    /// Denied by this principal.
    Denied(Option<PrincipalId>),
    /// It expired undecided.
    Expired,
    /// The wait ended first; it is still pending.
    StillPending,
}

/// Why a vote was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoteError {
    /// The book refused it.
    #[error(transparent)]
    Refused(#[from] ApprovalError),
    /// The vote could not be persisted; it did not count.
    #[error("the vote was not recorded: {0}")]
    Store(#[from] StoreError),
}

/// The outcome of looking an intent up.
pub(crate) enum Resolved {
    /// Approved by these principals (and now consumed).
    Approved(Vec<PrincipalId>),
    /// Waiting for a decision.
    Pending(Pending),
    /// Refused outright.
    Denied(Denial),
}

/// The node's approvals.
pub struct Approvals {
    book: Mutex<ApprovalBook>,
    store: Option<Arc<Store>>,
    changed: watch::Sender<u64>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").finish_non_exhaustive()
    }
}

/// The intent key of `intent`, when it runs in a session.
pub(crate) fn intent_key(intent: &Intent) -> Option<IntentKey> {
    Some(IntentKey {
        principal: *intent.principal.id(),
        agent: intent.agent,
        session: intent.session.clone()?,
        tool: intent.tool.clone(),
        args: args_digest(&intent.args),
    })
}

impl Approvals {
    pub(crate) fn in_memory(max_pending: usize) -> Approvals {
        Approvals {
            book: Mutex::new(ApprovalBook::new(max_pending)),
            store: None,
            changed: watch::Sender::new(0),
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// The book, with every approval of `store` read back.
    pub(crate) fn open(
        store: Option<Arc<Store>>,
        max_pending: usize,
    ) -> Result<Approvals, StoreError> {
        let mut book = ApprovalBook::new(max_pending);
        if let Some(s) = &store {
            for a in s.approvals()? {
                // A duplicate id cannot come out of a keyed tree; skip it.
                let _ = book.insert_restored(a);
            }
        }
        let a = Approvals {
            book: Mutex::new(book),
            store,
            changed: watch::Sender::new(0),
            rng: ring::rand::SystemRandom::new(),
        };
        a.gauge();
        Ok(a)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ApprovalBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gauge(&self) {
        metrics::gauge!("mxp_approvals_pending").set(self.pending_count() as f64);
    }

    /// Approvals waiting for a decision.
    pub fn pending_count(&self) -> usize {
        self.lock().pending_count()
    }

    fn persist(&self, a: &Approval) -> Result<(), StoreError> {
        match &self.store {
            Some(s) => s.put_approval(a),
            None => Ok(()),
        }
    }

    fn fresh_id(&self) -> ApprovalId {
        let mut id = [0u8; 16];
        // The system RNG does not fail on supported platforms; a zero id
        // would collide and be refused by the book, failing closed.
        let _ = self.rng.fill(&mut id);
        ApprovalId(id)
    }

    fn expire(&self, book: &mut ApprovalBook, now_ms: u64) {
        for id in book.expire(now_ms) {
            if let Some(a) = book.get(&id) {
                let _ = self.persist(a);
            }
        }
    }

    /// Looks `intent` up: approved (consumed now), pending (created now, or
    /// already), or refused.
    pub(crate) fn resolve(
        &self,
        intent: &Intent,
        reasons: &[String],
        requirements: Vec<ApprovalRequirement>,
        now_ms: u64,
        settings: &GateSettings,
    ) -> Resolved {
        let deny = |message: String| Denial {
            tool: intent.tool.clone(),
            effect: intent.effect,
            reasons: reasons.to_vec(),
            message,
            remedy: None,
        };
        let Some(key) = intent_key(intent) else {
            return Resolved::Denied(deny(
                "it needs an approval, and only an intent in a session can be approved".into(),
            ));
        };
        let mut book = self.lock();
        self.expire(&mut book, now_ms);
        if let Some(approved) = book.take_approved(&key, now_ms) {
            if let Some(a) = book.get(&approved.id)
                && let Err(e) = self.persist(a)
            {
                return Resolved::Denied(deny(format!(
                    "the approval could not be recorded as used: {e}"
                )));
            }
            drop(book);
            self.gauge();
            return Resolved::Approved(approved.approvers);
        }
        let ttl_ms = u64::try_from(settings.approval_ttl.as_millis()).unwrap_or(u64::MAX);
        let id = self.fresh_id();
        let created = match book.request(id, key, reasons.to_vec(), requirements, now_ms, ttl_ms) {
            Ok(a) => a.clone(),
            Err(e) => return Resolved::Denied(deny(format!("no approval can be requested: {e}"))),
        };
        if let Err(e) = self.persist(&created) {
            return Resolved::Denied(deny(format!(
                "the approval request could not be recorded: {e}"
            )));
        }
        drop(book);
        self.gauge();
        self.changed.send_modify(|v| *v += 1);
        Resolved::Pending(Pending {
            id: *created.id(),
            requirements: created.requirements().to_vec(),
            reasons: created.reasons().to_vec(),
            expires_unix_ms: created.expires_unix_ms(),
        })
    }

    /// Every approval, oldest first.
    pub fn list(&self, now_ms: u64) -> Vec<Approval> {
        let mut book = self.lock();
        self.expire(&mut book, now_ms);
        book.iter().cloned().collect()
    }

    /// One approval.
    pub fn get(&self, id: &ApprovalId, now_ms: u64) -> Option<Approval> {
        let mut book = self.lock();
        self.expire(&mut book, now_ms);
        book.get(id).cloned()
    }

    /// Records `voter`'s vote on `id`, durably, and wakes its waiting Call.
    ///
    /// # Errors
    /// [`VoteError`] naming why the vote does not count.
    pub fn vote(
        &self,
        id: &ApprovalId,
        voter: &PrincipalId,
        approve: bool,
        now_ms: u64,
    ) -> Result<Approval, VoteError> {
        let mut book = self.lock();
        self.expire(&mut book, now_ms);
        // Vote on a copy: only a persisted vote counts.
        let mut trial = book.clone();
        let after = trial.vote(id, voter, approve, now_ms)?.clone();
        self.persist(&after)?;
        *book = trial;
        drop(book);
        self.gauge();
        self.changed.send_modify(|v| *v += 1);
        Ok(after)
    }

    /// Waits up to `wait` for approval `id` to be decided.
    ///
    /// # Cancel safety
    /// Cancel safe: waiting changes nothing.
    pub async fn wait(&self, id: &ApprovalId, wait: Duration) -> ApprovalWait {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now_ms = super::now_unix_ms();
            let (state, expires, denier) = {
                let mut book = self.lock();
                self.expire(&mut book, now_ms);
                match book.get(id) {
                    None => return ApprovalWait::Expired,
                    Some(a) => (
                        a.state(),
                        a.expires_unix_ms(),
                        a.votes().iter().rev().find(|v| !v.approve).map(|v| v.by),
                    ),
                }
            };
            match state {
                ApprovalState::Approved | ApprovalState::Consumed => return ApprovalWait::Approved,
                ApprovalState::Denied => return ApprovalWait::Denied(denier),
                ApprovalState::Expired => return ApprovalWait::Expired,
                _ => {}
            }
            let to_expiry = Duration::from_millis(expires.saturating_sub(now_ms));
            let until = deadline.min(tokio::time::Instant::now() + to_expiry);
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                // Sender gone cannot happen while `self` lives; the deadline
                // or expiry passed: look once more, then stop.
                _ => {
                    if tokio::time::Instant::now() >= deadline {
                        let expired = super::now_unix_ms() >= expires;
                        return if expired {
                            ApprovalWait::Expired
                        } else {
                            ApprovalWait::StillPending
                        };
                    }
                }
            }
        }
    }
}
