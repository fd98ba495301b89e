//! The replay comparison on hand-made recordings: what the executor
//! records (built with the same helpers it uses), replayed with real rule
//! planners and real Cedar policies.

use std::sync::Arc;

use mxp_governance::audit::{
    AuditEvent, EventData, EventKind, PolicyEffect, RecordedOutput, ToolOutcome,
};
use mxp_governance::policy::{PolicyEngine, Zone, default_files};
use mxp_governance::token::args::args_digest;
use mxp_protocol::{AgentId, ErrorCode, Fingerprint, PrincipalId, SessionId};
use serde_json::{Value, json};

use super::*;
use crate::audit;
use crate::gate::{CedarPolicy, Facts};
use crate::planner::{PlanStep, Rule, RulePlanner, default_rules};
use crate::tool::{EffectClass, ToolRegistry};

const AGENT: AgentId = AgentId::from_bytes([4; 16]);
const NODE: Fingerprint = Fingerprint([9; 32]);
const ECHO_IDS: &str = "default.tools.read_only_builtins";
const NO_ECHO: &str = r#"@id("test.no_echo")
forbid (principal, action == Mxp::Action::"tool:echo", resource);
"#;
const ECHO_NEEDS_APPROVAL: &str = r#"@id("test.echo_needs_approval")
@approval("operator")
forbid (principal, action == Mxp::Action::"tool:echo", resource) unless { context.approved };
"#;

fn peer() -> PrincipalId {
    PrincipalId::Peer(Fingerprint([1; 32]))
}

fn session() -> SessionId {
    "s-replay".parse().unwrap()
}

fn policy(extra: &[(&str, &str)]) -> CedarPolicy {
    let mut files = default_files();
    files.extend(
        extra
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
    );
    CedarPolicy::new(PolicyEngine::load(&files).unwrap(), Zone::Sandbox)
}

fn agent(rules: Vec<Rule>) -> ReplayAgent {
    ReplayAgent {
        planner: Arc::new(RulePlanner::new(rules, &["echo", "status"]).unwrap()),
        tools: Arc::new(ToolRegistry::builtin()),
    }
}

fn two_echoes() -> Vec<Rule> {
    let mut rules = default_rules();
    rules.insert(
        0,
        Rule {
            method: "twice".into(),
            when: Default::default(),
            steps: vec![
                PlanStep {
                    tool: "echo".into(),
                    args: json!({"count": 1, "p": "$params"}),
                },
                PlanStep {
                    tool: "echo".into(),
                    args: json!({"count": 2}),
                },
            ],
        },
    );
    rules
}

/// A recording, built the way the executor records a plan run.
struct Recording {
    events: Vec<AuditEvent>,
    time_ms: u64,
}

impl Recording {
    fn new() -> Recording {
        Recording {
            events: Vec::new(),
            time_ms: 1_700_000_000_000,
        }
    }

    fn push(&mut self, trace: u64, kind: EventKind, data: Value) {
        let mut e = AuditEvent::new(self.time_ms, kind, EventData::from_value(&data).unwrap())
            .with_trace(trace)
            .with_session(session())
            .with_principal(peer());
        e.seq = self.events.len() as u64;
        self.time_ms += 1;
        self.events.push(e);
    }

    fn received(&mut self, trace: u64, method: &str, params: Value) {
        let data = audit::call_received(&AGENT, method, &params, trace);
        self.push(trace, EventKind::CallReceived, data);
    }

    fn decision(
        &mut self,
        trace: u64,
        effect: PolicyEffect,
        ids: &[&str],
        args: &Value,
        approved: Option<Vec<PrincipalId>>,
    ) {
        let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        let facts = Facts {
            node: NODE,
            now_unix_secs: i64::try_from(self.time_ms / 1000).unwrap(),
            budget_spent: 0,
            approved_by: approved,
        };
        let (kind, data) = audit::step_decision(
            effect,
            &ids,
            "echo",
            &AGENT,
            EffectClass::ReadOnly,
            Some(&args_digest(args)),
            (effect == PolicyEffect::Allow).then_some(&facts),
        );
        self.push(trace, kind, data);
    }

    /// An allowed echo step: decision, mint, verification, execution.
    fn echo(&mut self, trace: u64, args: &Value) {
        self.decision(trace, PolicyEffect::Allow, &[ECHO_IDS], args, None);
        self.push(trace, EventKind::TokenMint, json!({"tool": "echo"}));
        self.push(
            trace,
            EventKind::TokenVerification { accepted: true },
            json!({"tool": "echo"}),
        );
        let out = serde_json::to_vec(args).unwrap();
        self.push(
            trace,
            audit::execution(ToolOutcome::Landed, &out),
            json!({"tool": "echo"}),
        );
    }

    fn answered(&mut self, trace: u64, answer: Result<&Value, ErrorCode>) {
        self.push(trace, audit::call_answered(answer), json!({}));
    }
}

fn replay(rec: &Recording, a: &ReplayAgent, p: &CedarPolicy) -> SessionReplay {
    let a = a.clone();
    replay_session(
        &session(),
        &rec.events,
        &move |id| (id == AGENT).then(|| a.clone()),
        p,
        NODE,
    )
}

fn divergence(r: &SessionReplay) -> Divergence {
    match &r.calls.last().unwrap().outcome {
        Verdict::Diverged(d) => d.clone(),
        other => panic!("{other:?}"),
    }
}

fn cannot(r: &SessionReplay) -> (Option<usize>, CannotReplay) {
    match &r.calls.last().unwrap().outcome {
        Verdict::CannotReplay { step, why, .. } => (*step, why.clone()),
        other => panic!("{other:?}"),
    }
}

/// One echo Call, answered; then a two-step Call, answered.
fn recorded_session() -> Recording {
    let mut rec = Recording::new();
    let hello = json!({"hello": "world"});
    rec.received(1, "echo", hello.clone());
    rec.echo(1, &hello);
    rec.answered(1, Ok(&hello));
    rec.received(2, "twice", json!("x"));
    let (a, b) = (json!({"count": 1, "p": "x"}), json!({"count": 2}));
    rec.echo(2, &a);
    rec.echo(2, &b);
    rec.answered(2, Ok(&json!({"result": b, "steps": [a, b]})));
    rec
}

#[test]
fn a_recorded_session_replays_identical() {
    let rec = recorded_session();
    let r = replay(&rec, &agent(two_echoes()), &policy(&[]));
    assert!(r.is_identical(), "{r:?}");
    assert_eq!(r.calls.len(), 2);
    assert_eq!((r.calls[0].steps, r.calls[1].steps), (1, 2));
    assert_eq!(r.calls[1].decisions, 2);
    let j = r.to_json();
    assert_eq!(j["result"], "identical");
    assert_eq!(
        (j["calls"].as_u64(), j["steps"].as_u64()),
        (Some(2), Some(3))
    );
}

#[test]
fn other_rules_diverge_at_the_first_changed_step() {
    let rec = recorded_session();
    // The second step of `twice` now echoes count 3.
    let mut rules = two_echoes();
    rules[0].steps[1].args = json!({"count": 3});
    let r = replay(&rec, &agent(rules), &policy(&[]));
    assert!(!r.is_identical());
    assert_eq!(r.calls.len(), 2, "the first Call is identical");
    let d = divergence(&r);
    assert_eq!((d.what, d.step), (DivergenceKind::Step, Some(2)));
    assert_eq!(
        d.recorded["args_digest"],
        json!(args_digest(&json!({"count": 2})).to_string())
    );
    assert_eq!(
        d.replayed["args_digest"],
        json!(args_digest(&json!({"count": 3})).to_string())
    );
    assert_eq!(
        d.seq,
        Some(rec.events[11].seq),
        "the recorded decision of step 2"
    );
    // A planner without the `twice` rule: unsupported where an answer was recorded.
    let r = replay(&rec, &agent(default_rules()), &policy(&[]));
    let d = divergence(&r);
    assert_eq!((d.what, d.step), (DivergenceKind::Step, Some(1)));
    assert_eq!(d.recorded["tool"], "echo");
}

#[test]
fn another_policy_diverges_at_the_decision() {
    let rec = recorded_session();
    let r = replay(
        &rec,
        &agent(two_echoes()),
        &policy(&[("no_echo.cedar", NO_ECHO)]),
    );
    let d = divergence(&r);
    assert_eq!(r.calls.len(), 1);
    assert_eq!(
        (d.what, d.step, d.seq),
        (DivergenceKind::Decision, Some(1), Some(1))
    );
    assert_eq!(
        d.recorded,
        json!({"effect": "allow", "policy_ids": [ECHO_IDS]})
    );
    assert_eq!(
        d.replayed,
        json!({"effect": "deny", "policy_ids": ["test.no_echo"]})
    );
    let j = r.to_json();
    assert_eq!(j["result"], "diverged");
    assert_eq!(j["divergence"]["call"], 1);
    assert_eq!(j["divergence"]["what"], "decision");
}

#[test]
fn a_different_answer_is_the_answer_diverging() {
    let mut rec = Recording::new();
    let hello = json!({"hello": 1});
    rec.received(1, "echo", hello.clone());
    rec.echo(1, &hello);
    rec.answered(1, Ok(&json!("something else")));
    let r = replay(&rec, &agent(default_rules()), &policy(&[]));
    let d = divergence(&r);
    assert_eq!(
        (d.what, d.step, d.seq),
        (DivergenceKind::Answer, None, Some(5))
    );
    assert_eq!(
        d.replayed["answer_digest"],
        json!(args_digest(&hello).to_string())
    );
    // An error answer where the replay answers: also the answer.
    let mut rec = Recording::new();
    rec.received(1, "echo", hello.clone());
    rec.echo(1, &hello);
    rec.answered(1, Err(ErrorCode::INTERNAL));
    let d = divergence(&replay(&rec, &agent(default_rules()), &policy(&[])));
    assert_eq!(d.what, DivergenceKind::Answer);
    assert_eq!(d.recorded["error"], "internal");
}

#[test]
fn a_denied_step_and_an_unknown_method_replay_identical() {
    let mut rec = Recording::new();
    let args = json!({"a": 1});
    rec.received(1, "echo", args.clone());
    rec.decision(1, PolicyEffect::Deny, &["test.no_echo"], &args, None);
    rec.answered(1, Err(ErrorCode::DENIED));
    rec.received(2, "nope", Value::Null);
    rec.answered(2, Err(ErrorCode::UNSUPPORTED));
    let no_echo = policy(&[("no_echo.cedar", NO_ECHO)]);
    let r = replay(&rec, &agent(default_rules()), &no_echo);
    assert!(r.is_identical(), "{r:?}");
    assert_eq!(r.calls[0].decisions, 1);
    // Under the default policy the denial is a divergence.
    let d = divergence(&replay(&rec, &agent(default_rules()), &policy(&[])));
    assert_eq!(d.what, DivergenceKind::Decision);
    assert_eq!(d.replayed["effect"], "allow");
}

#[test]
fn a_kill_switch_denial_is_an_input_not_a_decision() {
    let mut rec = Recording::new();
    let args = json!({"a": 1});
    rec.received(1, "echo", args.clone());
    rec.decision(1, PolicyEffect::Deny, &["kill_switch"], &args, None);
    rec.answered(1, Err(ErrorCode::DENIED));
    let r = replay(&rec, &agent(default_rules()), &policy(&[]));
    assert!(r.is_identical(), "{r:?}");
    assert_eq!(r.calls[0].decisions, 0);
}

#[test]
fn an_approval_replays_with_the_recorded_approvers() {
    let op = PrincipalId::Operator(Fingerprint([3; 32]));
    let mut rec = Recording::new();
    let args = json!({"a": 1});
    rec.received(1, "echo", args.clone());
    rec.decision(
        1,
        PolicyEffect::RequireApproval,
        &["test.echo_needs_approval"],
        &args,
        None,
    );
    rec.push(
        1,
        EventKind::ApprovalRequest,
        json!({"approval": "ap-1", "tool": "echo"}),
    );
    rec.decision(1, PolicyEffect::Allow, &[ECHO_IDS], &args, Some(vec![op]));
    rec.push(1, EventKind::TokenMint, json!({}));
    rec.push(
        1,
        EventKind::TokenVerification { accepted: true },
        json!({}),
    );
    rec.push(
        1,
        audit::execution(ToolOutcome::Landed, br#"{"a":1}"#),
        json!({}),
    );
    rec.answered(1, Ok(&args));
    let p = policy(&[("echo_approval.cedar", ECHO_NEEDS_APPROVAL)]);
    let r = replay(&rec, &agent(default_rules()), &p);
    assert!(r.is_identical(), "{r:?}");
    assert_eq!((r.calls[0].steps, r.calls[0].decisions), (1, 2));
}

#[test]
fn digests_stop_the_replay_with_a_reason() {
    // An output recorded as its digest.
    let mut rec = Recording::new();
    let big = json!({"x": "y".repeat(20_000)});
    rec.received(1, "echo", big.clone());
    rec.decision(1, PolicyEffect::Allow, &[ECHO_IDS], &big, None);
    rec.push(
        1,
        EventKind::TokenVerification { accepted: true },
        json!({}),
    );
    let out = serde_json::to_vec(&big).unwrap();
    let kind = audit::execution(ToolOutcome::Landed, &out);
    assert!(matches!(
        &kind,
        EventKind::ToolExecution {
            output: RecordedOutput::Redacted { .. },
            ..
        }
    ));
    rec.push(1, kind, json!({}));
    rec.answered(1, Ok(&big));
    let r = replay(&rec, &agent(default_rules()), &policy(&[]));
    assert_eq!(cannot(&r), (Some(1), CannotReplay::OutputDigest));
    let j = r.to_json();
    assert_eq!(j["result"], "cannot_replay");
    assert!(
        j["cannot_replay"]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot replay past this step"),
        "{j}"
    );
    // Params over the event data limit.
    let mut rec = Recording::new();
    let huge = json!({"x": "z".repeat(70_000)});
    rec.received(1, "echo", huge);
    assert!(
        rec.events[0]
            .data
            .to_value()
            .get("params_omitted")
            .is_some()
    );
    let r = replay(&rec, &agent(default_rules()), &policy(&[]));
    let (step, why) = cannot(&r);
    assert_eq!(step, None);
    assert!(
        matches!(&why, CannotReplay::ParamsOmitted(w) if w.contains("65536")),
        "{why}"
    );
}

#[test]
fn unanswered_calls_and_steps_without_a_call() {
    let mut rec = Recording::new();
    let a = json!({"a": 1});
    rec.received(1, "echo", a.clone());
    rec.echo(1, &a);
    let r = replay(&rec, &agent(default_rules()), &policy(&[]));
    assert!(r.is_identical(), "{r:?}");
    assert_eq!(r.to_json()["unanswered"], 1);
    // A decision whose Call was never recorded (an older log).
    rec.decision(7, PolicyEffect::Allow, &[ECHO_IDS], &a, None);
    let r = replay(&rec, &agent(default_rules()), &policy(&[]));
    assert!(!r.is_identical());
    assert_eq!(r.problem, Some((5, CannotReplay::NoCallReceived)));
    // Two Calls with one trace id at once.
    let mut rec = Recording::new();
    rec.received(1, "echo", a.clone());
    rec.received(1, "echo", a.clone());
    let r = replay(&rec, &agent(default_rules()), &policy(&[]));
    assert_eq!(r.problem, Some((1, CannotReplay::OverlappingTrace)));
    // An agent no longer hosted.
    let mut rec = Recording::new();
    rec.received(1, "echo", a.clone());
    let r = replay_session(&session(), &rec.events, &|_| None, &policy(&[]), NODE);
    assert_eq!(cannot(&r).1, CannotReplay::UnknownAgent(AGENT));
}

#[test]
fn what_if_lists_exactly_the_changed_decisions() {
    let rec = recorded_session();
    let a = agent(two_echoes());
    let agents = move |id| (id == AGENT).then(|| a.clone());
    // Forbid echo with count 2 only: exactly one decision of three changes.
    let forbid_2 = r#"@id("test.no_count_2")
forbid (principal, action == Mxp::Action::"tool:echo", resource) when { context.args has count && context.args.count == 2 };
"#;
    let p = policy(&[("count2.cedar", forbid_2)]);
    let mut w = WhatIf::new(&agents, &p, NODE, ReplayLimits::default());
    for e in &rec.events {
        w.push(e.clone()).unwrap();
    }
    let report = w.finish();
    assert_eq!(
        (report.calls, report.decisions, report.changed_total),
        (2, 3, 1),
        "{report:?}"
    );
    let c = &report.changed[0];
    assert_eq!(
        (c.call_seq, c.trace_id, c.change.step, c.change.seq),
        (6, 2, 2, 11)
    );
    assert_eq!(
        c.change.args_digest,
        args_digest(&json!({"count": 2})).to_string()
    );
    assert_eq!(
        c.change.recorded,
        json!({"effect": "allow", "policy_ids": [ECHO_IDS]})
    );
    assert_eq!(
        c.change.new,
        json!({"effect": "deny", "policy_ids": ["test.no_count_2"]})
    );
    // Forbid the tool: every decision changes.
    let p = policy(&[("no_echo.cedar", NO_ECHO)]);
    let mut w = WhatIf::new(&agents, &p, NODE, ReplayLimits::default());
    for e in &rec.events {
        w.push(e.clone()).unwrap();
    }
    let report = w.finish();
    assert_eq!(
        (report.calls, report.decisions, report.changed_total),
        (2, 3, 3),
        "{report:?}"
    );
    let steps: Vec<(u64, usize)> = report
        .changed
        .iter()
        .map(|c| (c.call_seq, c.change.step))
        .collect();
    assert_eq!(steps, [(0, 1), (6, 1), (6, 2)]);
    assert_eq!(report.skipped_total, 0);
    let j = report.to_json();
    assert_eq!(j["changed"][2]["tool"], "echo");
    assert_eq!(j["changed"][2]["session"], "s-replay");
    // The same policy set: nothing changes.
    let p = policy(&[]);
    let mut w = WhatIf::new(&agents, &p, NODE, ReplayLimits::default());
    for e in &rec.events {
        w.push(e.clone()).unwrap();
    }
    assert_eq!(w.finish().changed_total, 0);
}

#[test]
fn what_if_skips_what_it_cannot_re_decide_and_holds_bounded_memory() {
    let rec = recorded_session();
    // The planner no longer makes `twice`'s steps.
    let a = agent(default_rules());
    let agents = move |id| (id == AGENT).then(|| a.clone());
    let p = policy(&[("no_echo.cedar", NO_ECHO)]);
    let mut w = WhatIf::new(&agents, &p, NODE, ReplayLimits::default());
    for e in &rec.events {
        w.push(e.clone()).unwrap();
    }
    let report = w.finish();
    assert_eq!(report.changed_total, 1, "{report:?}");
    assert_eq!(report.skipped_total, 1);
    assert_eq!(report.skipped[0].why, CannotReplay::PlanChanged);
    assert_eq!(
        (report.skipped[0].seq, report.skipped[0].step),
        (7, Some(1))
    );
    // Open Calls past the limit: refused, not held.
    let limits = ReplayLimits {
        max_records: 3,
        max_bytes: 1 << 20,
    };
    let mut w = WhatIf::new(&agents, &p, NODE, limits);
    let mut refused = None;
    for e in &rec.events {
        if let Err(e) = w.push(e.clone()) {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(ReplayError::TooManyOpen { limits }));
    // A session over the limits.
    let mut s = SessionRecords::new(session(), limits);
    let mut err = None;
    for e in &rec.events {
        if let Err(e) = s.push(e.clone()) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(s.events().len(), 3);
    assert!(
        matches!(err, Some(ReplayError::SessionTooLarge { .. })),
        "{err:?}"
    );
    // Other sessions' records are not kept.
    let mut s = SessionRecords::new("other".parse().unwrap(), limits);
    for e in &rec.events {
        s.push(e.clone()).unwrap();
    }
    assert!(s.events().is_empty());
}
