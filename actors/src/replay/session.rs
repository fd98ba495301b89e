//! A session's records: collected within bounds, grouped into Calls, and
//! replayed Call by Call until the first one that differs.

use std::collections::HashMap;

use mxp_governance::audit::{AuditEvent, EventKind, RecordedOutput};
use mxp_protocol::{AgentId, Fingerprint, SessionId};

use super::recorded::RecordedCall;
use super::walk::{Mode, Walk};
use super::{
    CallOutcome, CallReplay, CannotReplay, ReplayAgent, ReplayError, ReplayLimits, Verdict,
};
use crate::gate::Policy;

/// Bytes a held event counts: its data, its recorded output and a fixed
/// overhead for the rest.
pub(super) fn held_bytes(e: &AuditEvent) -> usize {
    let output = match &e.kind {
        EventKind::ToolExecution {
            output: RecordedOutput::Recorded(b),
            ..
        } => b.len(),
        _ => 0,
    };
    e.data.as_bytes().len() + output + 256
}

/// The records of one session, collected from the log within
/// [`ReplayLimits`].
#[derive(Debug, Clone)]
pub struct SessionRecords {
    session: SessionId,
    limits: ReplayLimits,
    events: Vec<AuditEvent>,
    bytes: usize,
}

impl SessionRecords {
    /// An empty collection for `session`.
    pub fn new(session: SessionId, limits: ReplayLimits) -> SessionRecords {
        SessionRecords {
            session,
            limits,
            events: Vec::new(),
            bytes: 0,
        }
    }

    /// Keeps `e` if it belongs to the session.
    ///
    /// # Errors
    /// [`ReplayError::SessionTooLarge`] past the limits.
    pub fn push(&mut self, e: AuditEvent) -> Result<(), ReplayError> {
        if e.session.as_ref() != Some(&self.session) {
            return Ok(());
        }
        let bytes = held_bytes(&e);
        if self.events.len() >= self.limits.max_records
            || self.bytes.saturating_add(bytes) > self.limits.max_bytes
        {
            return Err(ReplayError::SessionTooLarge {
                session: self.session.clone(),
                limits: self.limits,
            });
        }
        self.bytes += bytes;
        self.events.push(e);
        Ok(())
    }

    /// The session.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// The records kept, in log order.
    pub fn events(&self) -> &[AuditEvent] {
        &self.events
    }
}

/// A session's records grouped into Calls.
#[derive(Debug, Clone, Default)]
pub struct Assembled {
    /// The Calls, in the order they were received.
    pub calls: Vec<RecordedCall>,
    /// The first step record that belongs to no recorded Call, if any.
    pub orphan: Option<u64>,
    /// The first `call_received` whose trace id was already open, if any.
    pub overlapping: Option<u64>,
}

/// Whether `e` is part of a plan run (not a vote or control event).
pub(super) fn is_step_event(e: &AuditEvent) -> bool {
    matches!(
        e.kind,
        EventKind::PolicyDecision { .. }
            | EventKind::TokenMint
            | EventKind::TokenVerification { .. }
            | EventKind::ToolExecution { .. }
            | EventKind::ApprovalRequest
            | EventKind::CallAnswered { .. }
    )
}

/// Groups one session's events (in log order) into Calls: a
/// `call_received` opens a Call, the events of its trace id follow it, its
/// `call_answered` closes it.
pub fn assemble(events: &[AuditEvent]) -> Assembled {
    let mut out = Assembled::default();
    let mut open: HashMap<u64, usize> = HashMap::new();
    for e in events {
        match &e.kind {
            EventKind::CallReceived => {
                if open.contains_key(&e.trace_id) {
                    out.overlapping.get_or_insert(e.seq);
                    continue;
                }
                open.insert(e.trace_id, out.calls.len());
                out.calls.push(RecordedCall {
                    index: out.calls.len() + 1,
                    received: e.clone(),
                    events: Vec::new(),
                });
            }
            _ if is_step_event(e) => {
                let Some(call) = open.get(&e.trace_id).and_then(|&i| out.calls.get_mut(i)) else {
                    out.orphan.get_or_insert(e.seq);
                    continue;
                };
                call.events.push(e.clone());
                if matches!(e.kind, EventKind::CallAnswered { .. }) {
                    open.remove(&e.trace_id);
                }
            }
            _ => {}
        }
    }
    out
}

/// A session replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionReplay {
    /// The session.
    pub session: SessionId,
    /// Its records.
    pub records: usize,
    /// The Calls replayed, in order; the last one is the first that was not
    /// identical, if any was not.
    pub calls: Vec<CallReplay>,
    /// Why the session as a whole cannot be replayed (steps without a
    /// recorded Call, overlapping Calls), with the record to blame.
    pub problem: Option<(u64, CannotReplay)>,
}

impl SessionReplay {
    /// Whether every Call replayed identically (unanswered Calls as far as
    /// they were recorded).
    pub fn is_identical(&self) -> bool {
        self.problem.is_none()
            && self.calls.iter().all(|c| {
                matches!(
                    c.outcome,
                    Verdict::Done(CallOutcome::Identical | CallOutcome::Unanswered)
                )
            })
    }
}

/// Replays a session's records (in log order) with each Call's agent from
/// `agents`, deciding with `policy` for node `node`: Call by Call until the
/// first that is not identical.
pub fn replay_session(
    session: &SessionId,
    events: &[AuditEvent],
    agents: &dyn Fn(AgentId) -> Option<ReplayAgent>,
    policy: &dyn Policy,
    node: Fingerprint,
) -> SessionReplay {
    let assembled = assemble(events);
    let mut out = SessionReplay {
        session: session.clone(),
        records: events.len(),
        calls: Vec::new(),
        problem: None,
    };
    if let Some(seq) = assembled.overlapping {
        out.problem = Some((seq, CannotReplay::OverlappingTrace));
        return out;
    }
    for call in &assembled.calls {
        let replayed = replay_call(call, agents, policy, node, Mode::Compare);
        let identical = matches!(replayed.outcome, Verdict::Done(_));
        out.calls.push(replayed);
        if !identical {
            return out;
        }
    }
    if let Some(seq) = assembled.orphan {
        out.problem = Some((seq, CannotReplay::NoCallReceived));
    }
    out
}

/// Walks one Call in `mode`.
pub(super) fn replay_call(
    call: &RecordedCall,
    agents: &dyn Fn(AgentId) -> Option<ReplayAgent>,
    policy: &dyn Policy,
    node: Fingerprint,
    mode: Mode,
) -> CallReplay {
    let cannot = |seq: u64, why: CannotReplay| CallReplay {
        call: call.index,
        trace_id: call.received.trace_id,
        seq: call.received.seq,
        steps: 0,
        decisions: 0,
        changes: Vec::new(),
        outcome: Verdict::CannotReplay {
            step: None,
            seq: Some(seq),
            why,
        },
    };
    let head = match call.head() {
        Ok(h) => h,
        Err(m) => return cannot(m.seq, CannotReplay::Malformed(m.reason)),
    };
    let Some(agent) = agents(head.agent) else {
        return cannot(call.received.seq, CannotReplay::UnknownAgent(head.agent));
    };
    Walk {
        agent: &agent,
        policy,
        node,
        mode,
    }
    .call(call, &head)
}
