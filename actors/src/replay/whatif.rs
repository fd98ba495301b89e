//! What-if: every recorded step decision re-taken under another policy,
//! fed record by record so that a range of the whole log fits in bounded
//! memory (only Calls still open are held).

use std::collections::HashMap;

use mxp_governance::audit::{AuditEvent, EventKind};
use mxp_protocol::{AgentId, Fingerprint, SessionId};

use super::recorded::RecordedCall;
use super::session::{held_bytes, is_step_event, replay_call};
use super::walk::Mode;
use super::{
    CannotReplay, DecisionChange, MAX_LISTED_CHANGES, MAX_LISTED_SKIPPED, ReplayAgent, ReplayError,
    ReplayLimits, Verdict,
};
use crate::gate::Policy;

/// A decision that would change, with its session.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIfChange {
    /// The session.
    pub session: SessionId,
    /// The Call's `call_received` record.
    pub call_seq: u64,
    /// The Call's trace id.
    pub trace_id: u64,
    /// The change.
    pub change: DecisionChange,
}

/// A Call (or a decision outside any recorded Call) not re-decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The session.
    pub session: SessionId,
    /// The record to blame.
    pub seq: u64,
    /// The plan step, from 1, if at one.
    pub step: Option<usize>,
    /// Why.
    pub why: CannotReplay,
}

/// What a what-if found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WhatIfReport {
    /// Calls walked.
    pub calls: usize,
    /// Decisions re-taken.
    pub decisions: usize,
    /// Decisions that would change, in all.
    pub changed_total: usize,
    /// The first [`MAX_LISTED_CHANGES`] of them, in log order of their Calls.
    pub changed: Vec<WhatIfChange>,
    /// Calls or decisions not re-decided, in all.
    pub skipped_total: usize,
    /// The first [`MAX_LISTED_SKIPPED`] of them.
    pub skipped: Vec<Skipped>,
}

/// A what-if in progress: feed it the records in log order with
/// [`WhatIf::push`], then [`WhatIf::finish`].
pub struct WhatIf<'a> {
    agents: &'a dyn Fn(AgentId) -> Option<ReplayAgent>,
    policy: &'a dyn Policy,
    node: Fingerprint,
    limits: ReplayLimits,
    open: HashMap<(SessionId, u64), RecordedCall>,
    held: (usize, usize),
    report: WhatIfReport,
}

impl std::fmt::Debug for WhatIf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatIf")
            .field("open", &self.open.len())
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl<'a> WhatIf<'a> {
    /// A what-if deciding with `policy` for node `node`, each Call's agent
    /// from `agents`, holding at most `limits` of open Calls.
    pub fn new(
        agents: &'a dyn Fn(AgentId) -> Option<ReplayAgent>,
        policy: &'a dyn Policy,
        node: Fingerprint,
        limits: ReplayLimits,
    ) -> WhatIf<'a> {
        WhatIf {
            agents,
            policy,
            node,
            limits,
            open: HashMap::new(),
            held: (0, 0),
            report: WhatIfReport::default(),
        }
    }

    /// Feeds the next record. A Call is re-decided once its answer is
    /// recorded; records of no session are ignored.
    ///
    /// # Errors
    /// [`ReplayError::TooManyOpen`] when open Calls hold more than the limits.
    pub fn push(&mut self, e: AuditEvent) -> Result<(), ReplayError> {
        let Some(session) = e.session.clone() else {
            return Ok(());
        };
        let key = (session, e.trace_id);
        match &e.kind {
            EventKind::CallReceived => {
                if let Some(old) = self.open.remove(&key) {
                    self.release(&old);
                    self.skip(key.0.clone(), e.seq, None, CannotReplay::OverlappingTrace);
                    return Ok(());
                }
                self.hold(&e)?;
                let call = RecordedCall {
                    index: 0,
                    received: e,
                    events: Vec::new(),
                };
                self.open.insert(key, call);
            }
            _ if is_step_event(&e) => {
                if !self.open.contains_key(&key) {
                    if matches!(e.kind, EventKind::PolicyDecision { .. }) {
                        self.skip(key.0, e.seq, None, CannotReplay::NoCallReceived);
                    }
                    return Ok(());
                }
                self.hold(&e)?;
                let answered = matches!(e.kind, EventKind::CallAnswered { .. });
                if let Some(call) = self.open.get_mut(&key) {
                    call.events.push(e);
                }
                if answered && let Some(call) = self.open.remove(&key) {
                    self.release(&call);
                    self.walk(&key.0, &call);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Re-decides the Calls left open (never answered, or answered after
    /// the range) and returns the report.
    pub fn finish(mut self) -> WhatIfReport {
        let mut open: Vec<((SessionId, u64), RecordedCall)> = self.open.drain().collect();
        open.sort_by_key(|(_, c)| c.received.seq);
        for ((session, _), call) in open {
            self.walk(&session, &call);
        }
        self.report
    }

    fn hold(&mut self, e: &AuditEvent) -> Result<(), ReplayError> {
        let bytes = held_bytes(e);
        if self.held.0 >= self.limits.max_records
            || self.held.1.saturating_add(bytes) > self.limits.max_bytes
        {
            return Err(ReplayError::TooManyOpen {
                limits: self.limits,
            });
        }
        self.held.0 += 1;
        self.held.1 += bytes;
        Ok(())
    }

    fn release(&mut self, call: &RecordedCall) {
        let n = 1 + call.events.len();
        let bytes: usize =
            held_bytes(&call.received) + call.events.iter().map(held_bytes).sum::<usize>();
        self.held.0 = self.held.0.saturating_sub(n);
        self.held.1 = self.held.1.saturating_sub(bytes);
    }

    fn skip(&mut self, session: SessionId, seq: u64, step: Option<usize>, why: CannotReplay) {
        self.report.skipped_total += 1;
        if self.report.skipped.len() < MAX_LISTED_SKIPPED {
            self.report.skipped.push(Skipped {
                session,
                seq,
                step,
                why,
            });
        }
    }

    fn walk(&mut self, session: &SessionId, call: &RecordedCall) {
        let r = replay_call(call, self.agents, self.policy, self.node, Mode::WhatIf);
        self.report.calls += 1;
        self.report.decisions += r.decisions;
        for change in r.changes {
            self.report.changed_total += 1;
            if self.report.changed.len() < MAX_LISTED_CHANGES {
                self.report.changed.push(WhatIfChange {
                    session: session.clone(),
                    call_seq: r.seq,
                    trace_id: r.trace_id,
                    change,
                });
            }
        }
        if let Verdict::CannotReplay { step, seq, why } = r.outcome {
            self.skip(session.clone(), seq.unwrap_or(r.seq), step, why);
        }
    }
}
