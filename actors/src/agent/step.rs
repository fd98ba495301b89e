//! One governed tool call: the only place a tool runs.
//!
//! ```text
//! tool looked up, arguments checked ─▶ gate (kill switch, policy, approvals,
//! budgets) ─▶ audit: decision, token mint, token verification (durable)
//! ─▶ enforcer: token verified into a Grant ─▶ tool.execute(grant)
//! ─▶ audit: execution (durable) ─▶ budgets charged
//! ```
//!
//! A plan step ([`super::executor`]) and a skill's host call
//! ([`GovernedCalls::call`], `mxp.call_tool`) both come here: a host call is
//! a new intent of the same principal, agent and session, decided and
//! recorded like any plan step. The skill never holds a token.
//!
//! The flow rule is checked here too, before the gate: a sink whose
//! arguments carry labelled data (a file read, a secret) is denied unless
//! policy permits each flow ([`crate::gate::Gate::check_flow`]); the labels
//! a tool puts on its output are handed back to the caller.

use std::sync::Arc;

use std::sync::Mutex;

use mxp_governance::flow::{FlowMode, FlowSource, Labelled, flows_into};
use mxp_governance::token::args::args_digest;
use mxp_protocol::SessionId;
use mxp_transport::Principal;
use serde_json::{Value, json};

use super::AgentShared;
use crate::audit;
use crate::error::CallFailure;
use crate::gate::{Allowed, ApprovalWait, Denial, Intent, Refusal, is_sink, now_unix_ms};
use crate::services::Services;
use crate::tool::{ToolContext, ToolError, ToolRegistry};

/// What a governed call of one agent needs: the agent, its tools and the
/// node's services.
#[derive(Clone)]
pub(crate) struct StepEnv {
    pub(crate) shared: Arc<AgentShared>,
    pub(crate) tools: Arc<ToolRegistry>,
    pub(crate) services: Arc<Services>,
}

/// The labelled data a governed call can see: the labelled outputs before
/// it and how labels are followed ([`mxp_governance::flow`]).
#[derive(Clone, Copy)]
pub(crate) struct FlowScope<'a> {
    pub(crate) labelled: &'a [Labelled<'a>],
    pub(crate) mode: FlowMode,
}

/// What a governed call produced: the tool's output and the sources its
/// data carries.
pub(crate) struct Called {
    pub(crate) output: Value,
    pub(crate) labels: Vec<FlowSource>,
}

/// Runs `tool` with `args` for `principal` in `session`, through the flow
/// rule, the gate, the audit log and the enforcer: the one path by which a
/// tool runs. `step` is the plan step it runs as (a skill's host calls run
/// as the skill's step).
///
/// # Errors
/// [`CallFailure`]: the tool is unknown or its arguments do not fit, the
/// gate denied it (or it waits for an approval), the audit log could not
/// record a step (fail closed), the token was refused, the tool failed.
///
/// # Cancel safety
/// Dropped while the tool runs, the tool's future is dropped (see
/// [`crate::Tool::execute`]); an audit record already sent is still written.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn governed_call(
    env: &StepEnv,
    principal: &Principal,
    session: &SessionId,
    (trace_id, message_id): (u64, u64),
    step: usize,
    tool_name: String,
    args: Value,
    flow: FlowScope<'_>,
) -> Result<Called, CallFailure> {
    let tool = env
        .tools
        .get(&tool_name)
        .ok_or_else(|| ToolError::Unknown(tool_name.clone()))?;
    tool.args()
        .check(&args)
        .map_err(|reason| ToolError::InvalidArguments {
            tool: tool_name.clone(),
            reason,
        })?;
    let step_tool = tool_name.clone();
    // The labels the arguments carry: checked for a sink, and handed to a
    // tool that makes governed calls of its own (a skill).
    let inbound = flows_into(&args, flow.labelled, flow.mode);
    let intent = Intent {
        principal: *principal,
        agent: env.shared.id,
        session: Some(session.clone()),
        tool: tool_name,
        effect: tool.effect(),
        args,
        trace_id,
        message_id,
    };
    if is_sink(intent.effect) && !inbound.is_empty() {
        check_flow(&env.services, &intent, &inbound).await?;
    }
    let allowed = decide(&env.services, intent).await?;
    // The enforcing side computes the digest of the arguments it will
    // act on itself, and verifies the token against them.
    let digest = args_digest(&allowed.intent().args);
    let granted =
        env.services
            .enforcer()
            .grant(&allowed, &digest, &env.shared.effects, now_unix_ms());
    // The decision, the mint and the verification are durable before
    // the tool may act.
    let auditor = env.services.auditor();
    if auditor.is_on() {
        let a = allowed.intent();
        let who = a.principal.id();
        let (kind, data) = audit::step_decision(
            audit::PolicyEffect::Allow,
            allowed.reasons(),
            &a.tool,
            &a.agent,
            a.effect,
            Some(&digest),
            Some(allowed.facts()),
        );
        let verified = match &granted {
            Ok(_) => json!({ "tool": a.tool }),
            Err(e) => json!({ "tool": a.tool, "refused": e.to_string() }),
        };
        auditor
            .record(vec![
                audit::event(kind, data, Some(who), Some(session), trace_id),
                audit::event(
                    audit::EventKind::TokenMint,
                    json!({ "tool": a.tool, "args_digest": digest.to_string() }),
                    Some(who),
                    Some(session),
                    trace_id,
                ),
                audit::event(
                    audit::EventKind::TokenVerification {
                        accepted: granted.is_ok(),
                    },
                    verified,
                    Some(who),
                    Some(session),
                    trace_id,
                ),
            ])
            .await?;
    }
    let grant = granted.map_err(CallFailure::Enforce)?;
    let status = || env.shared.status();
    let ctx = ToolContext::new(env.shared.id, principal, session, &status)
        .at_step(step)
        .with_governed(env, (trace_id, message_id), &inbound);
    let started = std::time::Instant::now();
    let executed = tool.execute(&ctx, grant).await;
    drop(allowed);
    if auditor.is_on() {
        let (outcome, bytes) = match &executed {
            Ok(v) => (
                audit::ToolOutcome::Landed,
                serde_json::to_vec(v).unwrap_or_default(),
            ),
            Err(e @ ToolError::InDoubt { .. }) => {
                (audit::ToolOutcome::InDoubt, e.to_string().into_bytes())
            }
            Err(e) => (audit::ToolOutcome::Failed, e.to_string().into_bytes()),
        };
        // Queued, not waited for: whatever comes next that the world can
        // see waits for a durable record behind this one (the next step's
        // decision before its tool acts, the Call's `call_answered` before
        // its answer goes out), and the writer keeps the order. One
        // durable write fewer per step.
        auditor
            .enqueue(vec![audit::event(
                audit::execution(outcome, &bytes),
                json!({ "tool": step_tool }),
                Some(principal.id()),
                Some(session),
                trace_id,
            )])
            .await?;
    }
    let budgets = env.services.gate().budgets();
    if budgets.is_enabled() {
        // A failed run spent its time too.
        let wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let bytes = executed.as_ref().map_or(0, crate::gate::arg_bytes);
        budgets.record(env.shared.id, session, bytes, wall_ms, 0, now_unix_ms());
    }
    let output = executed.map_err(CallFailure::from)?;
    Ok(Called {
        output,
        labels: ctx.take_labels(),
    })
}

/// The flow rule for a sink: each source its arguments carry must be
/// permitted by policy. A denial is recorded (a `policy_decision` deny
/// naming the source in `data.flow`) before it is answered.
async fn check_flow(
    services: &Services,
    intent: &Intent,
    inbound: &[FlowSource],
) -> Result<(), CallFailure> {
    let Err(denial) = services
        .gate()
        .check_flow(intent, inbound, services.node(), now_unix_ms())
    else {
        return Ok(());
    };
    let auditor = services.auditor();
    if auditor.is_on() {
        let digest = args_digest(&intent.args);
        let (kind, mut data) = audit::step_decision(
            audit::PolicyEffect::Deny,
            &denial.reasons,
            &intent.tool,
            &intent.agent,
            intent.effect,
            Some(&digest),
            None,
        );
        // The first source policy did not permit (the one the denial names).
        let source = inbound
            .iter()
            .find(|s| denial.message.starts_with(&s.to_string()))
            .or(inbound.first());
        if let (Some(map), Some(src)) = (data.as_object_mut(), source) {
            map.insert(
                "flow".into(),
                json!({ "source": src.entity_id(), "step": src.step }),
            );
        }
        auditor
            .record(vec![audit::event(
                kind,
                data,
                Some(intent.principal.id()),
                intent.session.as_ref(),
                intent.trace_id,
            )])
            .await?;
    }
    Err(CallFailure::Denied(denial))
}

/// The gate's answer for a tool intent: allowed at once, or once approved
/// (this call waits, up to `approval_wait`; other runs go on).
async fn decide(services: &Services, intent: Intent) -> Result<Allowed, CallFailure> {
    let mut intent = intent;
    // At most: ask, wait, ask again (approved now). A bound, not a loop
    // an approval race could keep spinning.
    for _ in 0..3 {
        let (who, session, trace) = (
            *intent.principal.id(),
            intent.session.clone(),
            intent.trace_id,
        );
        let (tool, agent, class) = (intent.tool.clone(), intent.agent, intent.effect);
        // A refused step's record names its arguments by digest too (only
        // computed when there is a record to write).
        let digest = services
            .auditor()
            .is_on()
            .then(|| args_digest(&intent.args));
        match services.check(intent) {
            Ok(allowed) => return Ok(allowed),
            Err(Refusal::Denied(d)) => {
                let (kind, data) = audit::step_decision(
                    audit::PolicyEffect::Deny,
                    &d.reasons,
                    &tool,
                    &agent,
                    class,
                    digest.as_ref(),
                    None,
                );
                services
                    .auditor()
                    .record(vec![audit::event(
                        kind,
                        data,
                        Some(&who),
                        session.as_ref(),
                        trace,
                    )])
                    .await?;
                return Err(CallFailure::Denied(d));
            }
            Err(Refusal::NeedsApproval {
                pending,
                intent: back,
            }) => {
                let (kind, data) = audit::step_decision(
                    audit::PolicyEffect::RequireApproval,
                    &pending.reasons,
                    &tool,
                    &agent,
                    class,
                    digest.as_ref(),
                    None,
                );
                services
                    .auditor()
                    .record(vec![
                        audit::event(kind, data, Some(&who), session.as_ref(), trace),
                        audit::event(
                            audit::EventKind::ApprovalRequest,
                            json!({ "approval": pending.id.to_string(), "tool": tool }),
                            Some(&who),
                            session.as_ref(),
                            trace,
                        ),
                    ])
                    .await?;
                let wait = services.gate().settings().approval_wait;
                match services.gate().approvals().wait(&pending.id, wait).await {
                    ApprovalWait::Approved => intent = *back,
                    ApprovalWait::StillPending => {
                        return Err(CallFailure::ApprovalRequired {
                            tool: back.tool,
                            pending,
                        });
                    }
                    ApprovalWait::Denied(by) => {
                        return Err(CallFailure::Denied(Denial {
                            tool: back.tool,
                            effect: back.effect,
                            reasons: pending.reasons,
                            message: format!(
                                "approval {} was denied{}",
                                pending.id,
                                by.map(|p| format!(" by {p}")).unwrap_or_default()
                            ),
                            remedy: None,
                        }));
                    }
                    _ => {
                        return Err(CallFailure::Denied(Denial {
                            tool: back.tool,
                            effect: back.effect,
                            reasons: pending.reasons,
                            message: format!(
                                "approval {} expired before it was decided (governance.approval_ttl_ms)",
                                pending.id
                            ),
                            remedy: None,
                        }));
                    }
                }
            }
        }
    }
    Err(CallFailure::Internal(
        "the approval was used by another Call of the same intent; ask again".into(),
    ))
}

/// A tool's door to new governed intents of the Call it serves: the same
/// principal, agent, session and trace, each decided at the gate, recorded
/// in the audit log and enforced like a plan step. A skill's
/// `mxp.call_tool` goes through here; the caller never holds a token.
///
/// Got from [`ToolContext::governed`]; owned, so it can move to the thread
/// a skill runs on.
#[derive(Clone)]
pub struct GovernedCalls {
    env: StepEnv,
    principal: Principal,
    session: SessionId,
    trace: (u64, u64),
    step: usize,
    /// The labels the tool's arguments carried, and those of every output
    /// its calls returned: what the opaque caller (a skill) has seen.
    labels: Arc<Mutex<Vec<FlowSource>>>,
}

impl std::fmt::Debug for GovernedCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernedCalls")
            .field("agent", &self.env.shared.id)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl GovernedCalls {
    pub(crate) fn new(
        env: &StepEnv,
        principal: Principal,
        session: SessionId,
        trace: (u64, u64),
        step: usize,
        inbound: Vec<FlowSource>,
    ) -> GovernedCalls {
        GovernedCalls {
            env: env.clone(),
            principal,
            session,
            trace,
            step,
            labels: Arc::new(Mutex::new(inbound)),
        }
    }

    /// The flow labels seen so far: those the tool's arguments carried and
    /// those of every output its calls returned. A tool whose working is
    /// opaque (a skill) labels its own output with these.
    pub fn labels(&self) -> Vec<FlowSource> {
        self.labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Who the calls are made for.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The session they run in.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// Runs `tool` with `args` as a new governed intent (flow rule, gate,
    /// audit, enforcer, tool, audit), exactly as a plan step would. The
    /// caller is opaque, so every label it has seen reaches every sink it
    /// calls (the flow rule's `run` mode, whatever the node's setting).
    ///
    /// # Errors
    /// The [`CallFailure`] a plan step would fail with: denied, waiting
    /// for an approval, refused by the enforcer, the tool's error.
    ///
    /// # Cancel safety
    /// As a plan step: dropping the future drops the tool's; audit records
    /// already sent are still written.
    pub async fn call(&self, tool: &str, args: Value) -> Result<Value, CallFailure> {
        let seen = self.labels();
        let carried = [Labelled {
            sources: &seen,
            output: &Value::Null,
        }];
        let labelled: &[Labelled<'_>] = if seen.is_empty() { &[] } else { &carried };
        let called = governed_call(
            &self.env,
            &self.principal,
            &self.session,
            self.trace,
            self.step,
            tool.to_owned(),
            args,
            FlowScope {
                labelled,
                mode: FlowMode::Run,
            },
        )
        .await?;
        let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        for l in called.labels {
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        Ok(called.output)
    }
}
