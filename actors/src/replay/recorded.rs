//! What the audit log holds of one Call, read back into typed steps.
//!
//! A plan run records, in this order (docs/AUDIT.md):
//!
//! ```text
//! call_received                      agent, method, params (or their digest)
//! per step:
//!   policy_decision                  effect, policy ids; tool, args_digest, effect class, facts
//!   [approval_request]               after require_approval; then maybe another decision
//!   token_mint, token_verification   after an allow
//!   tool_execution                   outcome and output
//! call_answered                      the answer's digest, or the error code
//! ```
//!
//! All of a Call's events share its session and trace id. [`RecordedCall`]
//! is that sequence; [`RecordedCall::steps`] reads it into [`RecordedStep`]s,
//! refusing a record that does not say what replay needs, by its sequence
//! number.

use mxp_governance::audit::{
    AuditEvent, CallAnswer, EventKind, PolicyEffect, RecordedOutput, ToolOutcome,
};
use mxp_protocol::{AgentId, PrincipalId, SessionId};
use serde_json::Value;

use crate::gate::{BUDGET_EXCEEDED, KILL_SWITCH};
use crate::tool::EffectClass;

/// The reason a denial names when no token could be minted.
const TOKEN_REFUSED: &str = "token_refused";

/// One Call as recorded: its `call_received` event and the events of the
/// same session and trace that followed it, up to its `call_answered`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    /// Its place among the session's Calls, from 1.
    pub index: usize,
    /// The `call_received` event.
    pub received: AuditEvent,
    /// The events after it, in log order.
    pub events: Vec<AuditEvent>,
}

/// The Call a `call_received` event names.
#[derive(Debug, Clone, PartialEq)]
pub struct CallHead {
    /// The session.
    pub session: SessionId,
    /// Who called.
    pub principal: PrincipalId,
    /// The agent that ran it.
    pub agent: AgentId,
    /// The method.
    pub method: String,
    /// The params, or why only their digest was recorded.
    pub params: Result<Value, String>,
}

/// A policy decision of a step, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDecision {
    /// Its record.
    pub seq: u64,
    /// Allow, deny or require approval.
    pub effect: PolicyEffect,
    /// The determining policies (or `kill_switch`, `budget_exceeded`, ...).
    pub policy_ids: Vec<String>,
    /// The tool.
    pub tool: String,
    /// The arguments' digest (hex), as the token binds it.
    pub args_digest: String,
    /// Its effect class, as recorded.
    pub class: Option<EffectClass>,
    /// The time the policy saw, unix seconds (recorded with an allow; else
    /// the record's time).
    pub now_s: i64,
    /// The budget spent the policy saw (recorded with an allow; else 0).
    pub budget_spent: u64,
    /// The approvers the policy saw (recorded with an allow that needed them).
    pub approved_by: Option<Vec<PrincipalId>>,
    /// A flow-rule denial (labelled data reaching the step's arguments),
    /// naming the source: replayed as recorded, not re-decided.
    pub flow: Option<String>,
}

impl RecordedDecision {
    /// Whether something other than the policy decided it (the kill switch,
    /// a budget, a token that could not be minted): an input to replay, not
    /// a decision to re-take.
    pub fn outside_policy(&self) -> bool {
        // A flow denial is decided on labels the log does not carry (which
        // outputs were labelled): an input here, as docs/AUDIT.md says.
        if self.flow.is_some() {
            return true;
        }
        self.effect == PolicyEffect::Deny
            && matches!(
                self.policy_ids.as_slice(),
                [one] if one == KILL_SWITCH || one == BUDGET_EXCEEDED || one == TOKEN_REFUSED
            )
    }
}

/// A step's tool execution, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedExecution {
    /// Its record.
    pub seq: u64,
    /// Landed, failed or in doubt.
    pub outcome: ToolOutcome,
    /// The output (the JSON the run saw), or its digest.
    pub output: RecordedOutput,
}

/// One plan step as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedStep {
    /// Its decisions: one, or several when it waited for an approval.
    pub decisions: Vec<RecordedDecision>,
    /// Whether its token verified (after an allow), if recorded.
    pub verified: Option<bool>,
    /// Its execution, if recorded.
    pub execution: Option<RecordedExecution>,
}

impl RecordedStep {
    /// The first decision (every step has one).
    pub fn first(&self) -> Option<&RecordedDecision> {
        self.decisions.first()
    }
}

/// A Call's steps and answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordedSteps {
    /// The steps, in order.
    pub steps: Vec<RecordedStep>,
    /// The answer and its record, if the Call was answered.
    pub answer: Option<(u64, CallAnswer)>,
}

/// A record that does not say what replay needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {reason}")]
pub struct Malformed {
    /// The record.
    pub seq: u64,
    /// What is missing or wrong.
    pub reason: String,
}

fn malformed(seq: u64, reason: impl Into<String>) -> Malformed {
    Malformed {
        seq,
        reason: reason.into(),
    }
}

fn str_field<'a>(e: &'a AuditEvent, data: &'a Value, key: &str) -> Result<&'a str, Malformed> {
    data.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(e.seq, format!("{} has no {key:?}", e.kind.tag().name())))
}

impl RecordedCall {
    /// The Call its `call_received` event names.
    ///
    /// # Errors
    /// [`Malformed`] when the event lacks a session, principal, agent or method.
    pub fn head(&self) -> Result<CallHead, Malformed> {
        let e = &self.received;
        let data = e.data.to_value();
        let session = e
            .session
            .clone()
            .ok_or_else(|| malformed(e.seq, "call_received has no session"))?;
        let principal = e
            .principal
            .ok_or_else(|| malformed(e.seq, "call_received has no principal"))?;
        let agent = str_field(e, &data, "agent")?
            .parse::<AgentId>()
            .map_err(|_| malformed(e.seq, "call_received names no valid agent id"))?;
        let method = str_field(e, &data, "method")?.to_owned();
        let params = match (data.get("params"), data.get("params_omitted")) {
            (Some(p), None) => Ok(p.clone()),
            (_, Some(why)) => Err(why.as_str().unwrap_or("params omitted").to_owned()),
            (None, None) => return Err(malformed(e.seq, "call_received has no \"params\"")),
        };
        Ok(CallHead {
            session,
            principal,
            agent,
            method,
            params,
        })
    }

    /// The Call's steps and answer, read from its events.
    ///
    /// # Errors
    /// [`Malformed`] naming the first record that does not fit.
    pub fn steps(&self) -> Result<RecordedSteps, Malformed> {
        let mut out = RecordedSteps::default();
        for e in &self.events {
            match &e.kind {
                EventKind::PolicyDecision { effect, policy_ids } => {
                    let d = decision(e, *effect, policy_ids)?;
                    // A decision after a require_approval of the same intent
                    // is that step asked again; any other starts a step.
                    let again = out.steps.last().is_some_and(|s| {
                        s.verified.is_none()
                            && s.execution.is_none()
                            && s.decisions.last().is_some_and(|last| {
                                last.effect == PolicyEffect::RequireApproval
                                    && last.tool == d.tool
                                    && last.args_digest == d.args_digest
                            })
                    });
                    match out.steps.last_mut() {
                        Some(s) if again => s.decisions.push(d),
                        _ => out.steps.push(RecordedStep {
                            decisions: vec![d],
                            verified: None,
                            execution: None,
                        }),
                    }
                }
                EventKind::TokenVerification { accepted } => {
                    let s = out.steps.last_mut().ok_or_else(|| {
                        malformed(e.seq, "a token verification before any decision")
                    })?;
                    s.verified = Some(*accepted);
                }
                EventKind::ToolExecution { outcome, output } => {
                    let s = out
                        .steps
                        .last_mut()
                        .ok_or_else(|| malformed(e.seq, "a tool execution before any decision"))?;
                    if s.execution.is_some() {
                        return Err(malformed(e.seq, "a second tool execution for one step"));
                    }
                    s.execution = Some(RecordedExecution {
                        seq: e.seq,
                        outcome: *outcome,
                        output: output.clone(),
                    });
                }
                EventKind::CallAnswered { answer } => out.answer = Some((e.seq, *answer)),
                // Mints and approval requests carry nothing replay compares.
                _ => {}
            }
        }
        Ok(out)
    }
}

fn decision(
    e: &AuditEvent,
    effect: PolicyEffect,
    policy_ids: &[String],
) -> Result<RecordedDecision, Malformed> {
    let data = e.data.to_value();
    let tool = str_field(e, &data, "tool")?.to_owned();
    let args_digest = str_field(e, &data, "args_digest")
        .map_err(|_| {
            malformed(
                e.seq,
                "policy_decision has no \"args_digest\" (recorded before decisions named their arguments)",
            )
        })?
        .to_owned();
    let class = data
        .get("effect")
        .and_then(Value::as_str)
        .and_then(effect_class);
    let now_s = data
        .get("now_s")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| i64::try_from(e.time_ms / 1000).unwrap_or(i64::MAX));
    let budget_spent = data
        .get("budget_spent")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let approved_by = match data.get("approved_by") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .and_then(|s| s.parse::<PrincipalId>().ok())
                        .ok_or_else(|| malformed(e.seq, "approved_by names an invalid principal"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(malformed(e.seq, "approved_by is not a list")),
    };
    let flow = data
        .get("flow")
        .and_then(|f| f.get("source"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(RecordedDecision {
        seq: e.seq,
        effect,
        policy_ids: policy_ids.to_vec(),
        tool,
        args_digest,
        class,
        now_s,
        budget_spent,
        approved_by,
        flow,
    })
}

/// The effect class of its name.
pub(super) fn effect_class(name: &str) -> Option<EffectClass> {
    [
        EffectClass::ReadOnly,
        EffectClass::LocalWrite,
        EffectClass::ExternalWrite,
        EffectClass::Control,
        EffectClass::Forward,
    ]
    .into_iter()
    .find(|c| c.name() == name)
}
