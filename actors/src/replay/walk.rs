//! Re-running one recorded Call: the pure comparison.
//!
//! The Call's recorded params go through a [`PlanRun`] with the agent's
//! planner; each step the planner yields is checked the way the executor
//! checks it (the tool exists, its arguments fit), compared with the
//! recorded step (tool and arguments digest), and every recorded decision
//! of it is taken again by the policy with the recorded facts (time, budget
//! spent, approvers). The recorded token verification and tool output are
//! fed back as inputs: no tool runs. At the end the answer's digest (or its
//! error code) is compared with the recorded one.
//!
//! In [`Mode::Compare`] the walk stops at the first difference. In
//! [`Mode::WhatIf`] a different decision is listed and the walk follows the
//! recording on, so every recorded decision is re-taken; a step the planner
//! no longer produces ends that Call's walk.

use futures_util::FutureExt;
use mxp_governance::audit::{CallAnswer, PolicyEffect, RecordedOutput, ToolOutcome};
use mxp_governance::policy::Decision;
use mxp_governance::token::args::args_digest;
use mxp_protocol::{CallBody, ErrorCode, Fingerprint};
use serde_json::{Value, json};

use super::recorded::{CallHead, RecordedCall, RecordedDecision, RecordedSteps};
use super::{
    CallOutcome, CallReplay, CannotReplay, DecisionChange, Divergence, DivergenceKind, ReplayAgent,
    Verdict,
};
use crate::gate::{Facts, IntentView, Policy};
use crate::plan_run::{Next, PlanRun};
use crate::planner::PlanError;

/// Stop at the first difference, or list every changed decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Replay: the first divergence of step, decision or answer.
    Compare,
    /// What-if: every decision that would change, along the recording.
    WhatIf,
}

/// What the replayed run answered.
#[derive(Debug, Clone, PartialEq)]
enum Replayed {
    /// A result with this digest (hex).
    Answer(String),
    /// An error: its code when the replay decides it, `None` when a
    /// recorded input decided it (a tool's failure, an approval's fate).
    Failed(Option<ErrorCode>),
}

impl Replayed {
    fn json(&self) -> Value {
        match self {
            Replayed::Answer(d) => json!({ "answer_digest": d }),
            Replayed::Failed(Some(c)) => json!({ "error_code": c.0, "error": c.name() }),
            Replayed::Failed(None) => {
                json!({ "error": "as recorded (decided by a recorded input)" })
            }
        }
    }
}

fn recorded_answer_json(a: Option<&(u64, CallAnswer)>) -> Value {
    match a {
        Some((_, CallAnswer::Answered { digest })) => json!({ "answer_digest": hex(digest) }),
        Some((_, CallAnswer::Failed { code })) => {
            json!({ "error_code": code, "error": ErrorCode(*code).name() })
        }
        _ => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn effect_name(e: PolicyEffect) -> &'static str {
    match e {
        PolicyEffect::Allow => "allow",
        PolicyEffect::Deny => "deny",
        _ => "require_approval",
    }
}

fn effect_of(d: Decision) -> PolicyEffect {
    match d {
        Decision::Allow => PolicyEffect::Allow,
        Decision::RequireApproval => PolicyEffect::RequireApproval,
        _ => PolicyEffect::Deny,
    }
}

/// Policy ids as the log keeps them (at most 256 characters), sorted.
fn ids(reasons: &[String]) -> Vec<String> {
    let mut v: Vec<String> = reasons
        .iter()
        .map(|r| r.chars().take(256).collect())
        .collect();
    v.sort();
    v
}

/// A decision as `{"effect", "policy_ids"}`.
pub(super) fn decision_json(effect: PolicyEffect, ids: &[String]) -> Value {
    json!({ "effect": effect_name(effect), "policy_ids": ids })
}

fn step_json(tool: &str, digest: &str) -> Value {
    json!({ "tool": tool, "args_digest": digest })
}

/// Everything one walk needs besides the Call.
pub(super) struct Walk<'a> {
    pub(super) agent: &'a ReplayAgent,
    pub(super) policy: &'a dyn Policy,
    pub(super) node: Fingerprint,
    pub(super) mode: Mode,
}

/// The state of one walk.
struct State {
    rec: RecordedSteps,
    replay: CallReplay,
}

impl State {
    fn verdict(mut self, verdict: Verdict) -> CallReplay {
        self.replay.outcome = verdict;
        self.replay
    }

    fn cannot(self, step: Option<usize>, seq: Option<u64>, why: CannotReplay) -> CallReplay {
        self.verdict(Verdict::CannotReplay { step, seq, why })
    }

    fn diverged(
        self,
        step: Option<usize>,
        seq: Option<u64>,
        what: DivergenceKind,
        recorded: Value,
        replayed: Value,
    ) -> CallReplay {
        self.verdict(Verdict::Diverged(Divergence {
            step,
            seq,
            what,
            recorded,
            replayed,
        }))
    }

    /// The run ended with `replayed` after `taken` steps.
    fn finish(self, mode: Mode, taken: usize, replayed: Replayed) -> CallReplay {
        if let Some(extra) = self.rec.steps.get(taken) {
            let seq = extra.first().map(|d| d.seq);
            let recorded = extra
                .first()
                .map_or(Value::Null, |d| step_json(&d.tool, &d.args_digest));
            if mode == Mode::WhatIf {
                return self.cannot(Some(taken + 1), seq, CannotReplay::PlanChanged);
            }
            let replayed =
                json!({ "none": "the replayed run ends here", "answer": replayed.json() });
            return self.diverged(
                Some(taken + 1),
                seq,
                DivergenceKind::Step,
                recorded,
                replayed,
            );
        }
        if mode == Mode::WhatIf {
            return self.verdict(Verdict::Done(CallOutcome::Followed));
        }
        let same = match (&self.rec.answer, &replayed) {
            (None, _) => return self.verdict(Verdict::Done(CallOutcome::Unanswered)),
            (Some((_, CallAnswer::Answered { digest })), Replayed::Answer(d)) => hex(digest) == *d,
            (Some((_, CallAnswer::Failed { code })), Replayed::Failed(Some(c))) => *code == c.0,
            (Some((_, CallAnswer::Failed { .. })), Replayed::Failed(None)) => true,
            _ => false,
        };
        if same {
            return self.verdict(Verdict::Done(CallOutcome::Identical));
        }
        let recorded = recorded_answer_json(self.rec.answer.as_ref());
        let seq = self.rec.answer.as_ref().map(|(s, _)| *s);
        self.diverged(None, seq, DivergenceKind::Answer, recorded, replayed.json())
    }
}

impl Walk<'_> {
    /// Walks `call`.
    pub(super) fn call(&self, call: &RecordedCall, head: &CallHead) -> CallReplay {
        let replay = CallReplay {
            call: call.index,
            trace_id: call.received.trace_id,
            seq: call.received.seq,
            steps: 0,
            decisions: 0,
            changes: Vec::new(),
            outcome: Verdict::Done(CallOutcome::Identical),
        };
        let rec = match call.steps() {
            Ok(r) => r,
            Err(m) => {
                let st = State {
                    rec: RecordedSteps::default(),
                    replay,
                };
                return st.cannot(None, Some(m.seq), CannotReplay::Malformed(m.reason));
            }
        };
        let st = State { rec, replay };
        let params = match &head.params {
            Ok(p) => p.clone(),
            Err(why) => {
                return st.cannot(
                    None,
                    Some(call.received.seq),
                    CannotReplay::ParamsOmitted(why.clone()),
                );
            }
        };
        self.run(st, head, CallBody::new(head.method.clone(), params))
    }

    fn run(&self, mut st: State, head: &CallHead, body: CallBody) -> CallReplay {
        let mut run = PlanRun::new(body);
        let mut taken = 0usize;
        loop {
            let step = match run.next() {
                Next::Done(answer) => {
                    let d = args_digest(answer).to_string();
                    return st.finish(self.mode, taken, Replayed::Answer(d));
                }
                Next::NeedPlan { call, done } => {
                    let planned = self.agent.planner.next(call, done).now_or_never();
                    let failed = match planned {
                        None => {
                            return st.cannot(Some(taken + 1), None, CannotReplay::PlannerWaits);
                        }
                        Some(Ok(next)) => match run.planned(next) {
                            Ok(()) => continue,
                            Err(_) => ErrorCode::INTERNAL,
                        },
                        Some(Err(PlanError::NoRule { .. })) => ErrorCode::UNSUPPORTED,
                        Some(Err(_)) => ErrorCode::INTERNAL,
                    };
                    return st.finish(self.mode, taken, Replayed::Failed(Some(failed)));
                }
                Next::Intent(step) => step.clone(),
            };
            let n = taken + 1;
            // What the executor checks before the gate.
            let tool = self.agent.tools.get(&step.tool);
            let refused = match tool {
                None => Some((
                    ErrorCode::UNSUPPORTED,
                    "the tool is not available to this agent",
                )),
                Some(t) => t
                    .args()
                    .check(&step.args)
                    .err()
                    .map(|why| (ErrorCode::INVALID_PAYLOAD, why)),
            };
            let digest = args_digest(&step.args).to_string();
            let recorded = st.rec.steps.get(taken).cloned();
            let same_step = recorded
                .as_ref()
                .and_then(|r| r.first())
                .is_some_and(|d| d.tool == step.tool && d.args_digest == digest);
            if refused.is_some() || !same_step {
                if recorded.is_none() && st.rec.answer.is_none() && self.mode == Mode::Compare {
                    // The recording stops here, unanswered (the caller gave
                    // up, or the node stopped): nothing more to compare.
                    return st.verdict(Verdict::Done(CallOutcome::Unanswered));
                }
                let seq = recorded.as_ref().and_then(|r| r.first()).map(|d| d.seq);
                if self.mode == Mode::WhatIf {
                    if recorded.is_none() {
                        // The recording ended before this step (the Call
                        // failed or was cut off): nothing more to re-decide.
                        return st.finish(self.mode, taken, Replayed::Failed(None));
                    }
                    return st.cannot(Some(n), seq, CannotReplay::PlanChanged);
                }
                if let (Some((code, _)), None) = (refused, &recorded) {
                    // Refused before the gate, as recorded (no decision).
                    return st.finish(self.mode, taken, Replayed::Failed(Some(code)));
                }
                let rec_json = recorded
                    .as_ref()
                    .and_then(|r| r.first())
                    .map_or(Value::Null, |d| step_json(&d.tool, &d.args_digest));
                let mut rep_json = step_json(&step.tool, &digest);
                if let (Some((_, why)), Some(map)) = (refused, rep_json.as_object_mut()) {
                    map.insert("refused".into(), json!(why));
                }
                return st.diverged(Some(n), seq, DivergenceKind::Step, rec_json, rep_json);
            }
            let (Some(recorded), Some(tool)) = (recorded, tool) else {
                return st.cannot(Some(n), None, CannotReplay::PlanChanged);
            };
            st.replay.steps += 1;
            let class = tool.effect();
            for d in &recorded.decisions {
                if d.outside_policy() {
                    continue;
                }
                let view = IntentView {
                    principal: &head.principal,
                    agent: head.agent,
                    session: Some(&head.session),
                    tool: &step.tool,
                    effect: class,
                    args: &step.args,
                };
                let Some(outcome) = self.policy.decide_recorded(&view, &self.facts(d)) else {
                    return st.cannot(Some(n), Some(d.seq), CannotReplay::PolicyCannotRedecide);
                };
                st.replay.decisions += 1;
                let (new_effect, new_ids) = (effect_of(outcome.decision), ids(&outcome.reasons));
                let rec_ids = ids(&d.policy_ids);
                if same_decision(d.effect, &rec_ids, new_effect, &new_ids) {
                    continue;
                }
                let (rec_json, new_json) = (
                    decision_json(d.effect, &rec_ids),
                    decision_json(new_effect, &new_ids),
                );
                if self.mode == Mode::Compare {
                    return st.diverged(
                        Some(n),
                        Some(d.seq),
                        DivergenceKind::Decision,
                        rec_json,
                        new_json,
                    );
                }
                st.replay.changes.push(DecisionChange {
                    step: n,
                    seq: d.seq,
                    tool: step.tool.clone(),
                    args_digest: digest.clone(),
                    recorded: rec_json,
                    new: new_json,
                });
            }
            taken = n;
            // Follow the recording: the last decision, the token, the output.
            let last = recorded.decisions.last().map(|d| d.effect);
            match last {
                Some(PolicyEffect::Allow) => {}
                Some(PolicyEffect::Deny) => {
                    return st.finish(self.mode, taken, Replayed::Failed(Some(ErrorCode::DENIED)));
                }
                // Approval required, then not approved in time, or denied:
                // the approval's fate is an input.
                _ => return st.finish(self.mode, taken, Replayed::Failed(None)),
            }
            match recorded.verified {
                Some(true) => {}
                Some(false) => {
                    return st.finish(self.mode, taken, Replayed::Failed(Some(ErrorCode::DENIED)));
                }
                None => return st.verdict(Verdict::Done(CallOutcome::Unanswered)),
            }
            let Some(exec) = recorded.execution else {
                return st.verdict(Verdict::Done(CallOutcome::Unanswered));
            };
            let bytes = match (&exec.outcome, &exec.output) {
                (ToolOutcome::Landed, RecordedOutput::Recorded(bytes)) => bytes,
                (ToolOutcome::Landed, _) => {
                    return st.cannot(Some(n), Some(exec.seq), CannotReplay::OutputDigest);
                }
                // A failed or in-doubt tool ends the Call with its error.
                _ => return st.finish(self.mode, taken, Replayed::Failed(None)),
            };
            let Ok(output) = serde_json::from_slice::<Value>(bytes) else {
                return st.cannot(
                    Some(n),
                    Some(exec.seq),
                    CannotReplay::Malformed("the recorded output is not JSON".into()),
                );
            };
            if run.complete(output).is_err() {
                return st.cannot(Some(n), Some(exec.seq), CannotReplay::PlanChanged);
            }
        }
    }

    fn facts(&self, d: &RecordedDecision) -> Facts {
        Facts {
            node: self.node,
            now_unix_secs: d.now_s,
            budget_spent: d.budget_spent,
            approved_by: d.approved_by.clone(),
        }
    }
}

/// Whether a re-taken decision is the recorded one. A recorded deny that
/// the policy answers with require_approval by the same policies is the
/// gate refusing an approval it could not request or use (a full approval
/// book, a store that failed): the same policy decision.
fn same_decision(
    rec: PolicyEffect,
    rec_ids: &[String],
    new: PolicyEffect,
    new_ids: &[String],
) -> bool {
    rec_ids == new_ids
        && (rec == new || (rec == PolicyEffect::Deny && new == PolicyEffect::RequireApproval))
}
