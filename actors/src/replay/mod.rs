//! Deterministic replay and policy what-if over the audit log.
//!
//! Pure and synchronous: the inputs are the recorded events, the agent's
//! planner and tools, a policy and the node's fingerprint; nothing runs a
//! tool, reads a clock or draws randomness. docs/AUDIT.md ("Replay and
//! what-if") says what is compared and what determinism rests on.
//!
//! * [`replay_session`]: re-run each recorded Call of a session through the
//!   planner and the policy, feeding back the recorded outputs, and report
//!   `identical` or the first divergence (which Call, which step, and
//!   whether the step, a decision or the answer differs), or why it cannot
//!   be replayed.
//! * [`WhatIf`]: re-decide every recorded step of a session, or of every
//!   session in a time range (fed record by record, bounded memory), under
//!   another policy, and list the decisions that would change.
//!
//! The node's side (reading the log in pages, the control methods
//! `audit.replay` and `policy.what_if`) is in `node::replay`.

mod recorded;
mod report;
mod session;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests;
mod walk;
mod whatif;

use std::sync::Arc;

use mxp_protocol::{AgentId, SessionId};
use serde_json::Value;

pub use recorded::{
    CallHead, Malformed, RecordedCall, RecordedDecision, RecordedExecution, RecordedStep,
    RecordedSteps,
};
pub use session::{Assembled, SessionRecords, SessionReplay, assemble, replay_session};
pub use walk::Mode;
pub use whatif::{Skipped, WhatIf, WhatIfChange, WhatIfReport};

use crate::planner::Planner;
use crate::tool::ToolRegistry;

/// Records of one session a replay holds at most, by default.
pub const MAX_SESSION_RECORDS: usize = 16_384;
/// Bytes of event data and tool output a replay holds at most, by default.
pub const MAX_HELD_BYTES: usize = 32 << 20;
/// Changed decisions a what-if report lists at most (it counts them all).
pub const MAX_LISTED_CHANGES: usize = 1000;
/// Calls a what-if report lists as skipped at most (it counts them all).
pub const MAX_LISTED_SKIPPED: usize = 100;

/// How much a replay or what-if may hold in memory at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Records held at most (a session's, or of Calls still open).
    pub max_records: usize,
    /// Bytes of those records' data and tool outputs, at most.
    pub max_bytes: usize,
}

impl Default for ReplayLimits {
    fn default() -> ReplayLimits {
        ReplayLimits {
            max_records: MAX_SESSION_RECORDS,
            max_bytes: MAX_HELD_BYTES,
        }
    }
}

/// What a replay needs of an agent: its planner and tools as they are now.
#[derive(Clone)]
pub struct ReplayAgent {
    /// The planner.
    pub planner: Arc<dyn Planner>,
    /// The tools (their effect classes and argument schemas).
    pub tools: Arc<ToolRegistry>,
}

impl std::fmt::Debug for ReplayAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayAgent")
            .field("planner", &self.planner.name())
            .field("tools", &self.tools)
            .finish()
    }
}

/// Why a Call (or session) cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CannotReplay {
    /// The Call's params were recorded as a digest only.
    #[error("the Call's params were recorded as a digest only ({0})")]
    ParamsOmitted(String),
    /// A tool's output was recorded as its length and digest only.
    #[error(
        "cannot replay past this step: its output was recorded as a digest (outputs over 16 KiB are)"
    )]
    OutputDigest,
    /// The planner did not answer at once (a model-backed planner).
    #[error(
        "the agent's planner does not answer at once, so it cannot be replayed (only a deterministic planner such as the rule planner can)"
    )]
    PlannerWaits,
    /// The policy cannot decide a recorded intent.
    #[error("the policy cannot re-decide recorded intents (only a Cedar policy can)")]
    PolicyCannotRedecide,
    /// The planner no longer produces the recorded step (what-if).
    #[error(
        "the planner no longer produces the recorded step, so its arguments (recorded as a digest) are not known"
    )]
    PlanChanged,
    /// A record does not say what replay needs.
    #[error("{0}")]
    Malformed(String),
    /// The agent is not hosted on this node any more.
    #[error("agent {0} is not hosted on this node any more")]
    UnknownAgent(AgentId),
    /// Steps were recorded without a `call_received` event.
    #[error(
        "steps recorded without a call_received event (recorded before Calls were, or the Call began before the range)"
    )]
    NoCallReceived,
    /// Two Calls of the session ran at once with the same trace id.
    #[error(
        "two Calls of the session ran at once with the same trace id, so their steps cannot be told apart"
    )]
    OverlappingTrace,
}

/// Which part of a step differed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DivergenceKind {
    /// The planner's step (tool or arguments) differs, or one side has a
    /// step the other has not.
    Step,
    /// A policy decision (effect or determining policies) differs.
    Decision,
    /// The Call's answer (digest, or error code) differs.
    Answer,
}

impl DivergenceKind {
    /// `step`, `decision` or `answer`.
    pub const fn name(self) -> &'static str {
        match self {
            DivergenceKind::Step => "step",
            DivergenceKind::Decision => "decision",
            DivergenceKind::Answer => "answer",
        }
    }
}

/// The first difference between a recording and its replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// The plan step, from 1; `None` for the answer.
    pub step: Option<usize>,
    /// The record that differs, if one does.
    pub seq: Option<u64>,
    /// What differs.
    pub what: DivergenceKind,
    /// The recorded value (`null`: none recorded).
    pub recorded: Value,
    /// The replayed value.
    pub replayed: Value,
}

/// A decision that another policy would take differently.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionChange {
    /// The plan step, from 1.
    pub step: usize,
    /// The decision's record.
    pub seq: u64,
    /// The tool.
    pub tool: String,
    /// The arguments' digest (hex).
    pub args_digest: String,
    /// `{"effect", "policy_ids"}` as recorded.
    pub recorded: Value,
    /// `{"effect", "policy_ids"}` under the other policy.
    pub new: Value,
}

/// How a walk that ran to its end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallOutcome {
    /// Every step, decision and the answer are the recorded ones.
    Identical,
    /// Identical as far as recorded; the Call was never answered (its
    /// caller gave up, or the node stopped).
    Unanswered,
    /// What-if: the recording was followed to its end.
    Followed,
}

/// The verdict on one Call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The walk ran to its end.
    Done(CallOutcome),
    /// The first difference.
    Diverged(Divergence),
    /// The walk could not go on.
    CannotReplay {
        /// The plan step, from 1, if at one.
        step: Option<usize>,
        /// The record, if one is to blame.
        seq: Option<u64>,
        /// Why.
        why: CannotReplay,
    },
}

/// One Call replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReplay {
    /// Its place among the session's Calls, from 1 (0 in a what-if over a
    /// time range).
    pub call: usize,
    /// Its trace id.
    pub trace_id: u64,
    /// Its `call_received` record.
    pub seq: u64,
    /// Steps replayed.
    pub steps: usize,
    /// Decisions re-taken.
    pub decisions: usize,
    /// What-if: the decisions that would change.
    pub changes: Vec<DecisionChange>,
    /// The verdict.
    pub outcome: Verdict,
}

/// Why a replay or what-if could not run at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The log has no record of this session.
    #[error("the audit log has no record of session {0}")]
    UnknownSession(SessionId),
    /// The session has more records than a replay holds.
    #[error("session {session} has more than {} records or {} bytes of data and outputs, more than one replay holds; it cannot be replayed", limits.max_records, limits.max_bytes)]
    SessionTooLarge {
        /// The session.
        session: SessionId,
        /// The limits passed.
        limits: ReplayLimits,
    },
    /// Calls left open in the log (started, not answered) hold more than
    /// a what-if may.
    #[error("more than {} records or {} bytes belong to Calls still open at once in the log; narrow the time range", limits.max_records, limits.max_bytes)]
    TooManyOpen {
        /// The limits passed.
        limits: ReplayLimits,
    },
}
