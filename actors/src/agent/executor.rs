//! The executor: drives an agent's plan runs, each in its own task, up to
//! `supervision.max_runs` at once (past it a Call is answered `overloaded`).
//!
//! A run is the pure [`PlanRun`]: the executor asks the planner for steps
//! and runs each through [`super::step::governed_call`] (the one path a tool
//! runs by: gate, audit, enforcer, tool, audit). A step that waits (a
//! slow tool, later an approval) holds up only its own run. A panic inside a
//! run crashes the executor actor, which its supervisor restarts; the other
//! runs go on.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::future::Future;

use futures_util::FutureExt;
use mxp_protocol::{Call, Frame, JsonLimits, SessionId, TypedPayload};
use mxp_transport::{BodyPermit, Principal};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::kernel::KernelMsg;
use super::step::{FlowScope, StepEnv, governed_call};
use super::{AgentShared, Job};
use crate::audit;
use crate::error::CallFailure;
use crate::gate::{HOOK_REPLY, Intent};
use crate::hooks::{AgentHooks, MessageOutcome};
use crate::plan_run::{Next, PlanRun};
use crate::planner::{PlanError, Planner};
use crate::services::Services;
use crate::tool::{EffectClass, ToolRegistry};

/// Messages to an executor.
pub(crate) enum ExecMsg {
    /// Calls to run.
    Run(Vec<Job>),
    /// A run panicked: fail, so the supervisor restarts the executor.
    Crashed(String),
    /// Answer once no external write of the agent is in flight (the kill
    /// switch is on, so no new one starts).
    ConfirmKillSwitch(ractor::RpcReplyPort<()>),
}

pub(crate) struct Executor;

/// What every run of one agent shares.
struct RunEnv {
    shared: Arc<AgentShared>,
    planner: Arc<dyn Planner>,
    /// Where each step's governed call runs (the agent, its tools, the services).
    step: StepEnv,
    hooks: Arc<dyn AgentHooks>,
    services: Arc<Services>,
    json_limits: JsonLimits,
    /// Bodies are parsed one at a time per agent.
    parse_turn: Arc<Semaphore>,
}

pub(crate) struct ExecState {
    env: Arc<RunEnv>,
    runs: Arc<Semaphore>,
    max_runs: usize,
}

pub(crate) struct ExecArgs {
    pub(crate) shared: Arc<AgentShared>,
    pub(crate) planner: Arc<dyn Planner>,
    pub(crate) tools: Arc<ToolRegistry>,
    pub(crate) hooks: Arc<dyn AgentHooks>,
    pub(crate) json_limits: JsonLimits,
    pub(crate) parse_turn: Arc<Semaphore>,
    pub(crate) services: Arc<Services>,
    pub(crate) runs: Arc<Semaphore>,
    pub(crate) max_runs: usize,
}

impl Actor for Executor {
    type Msg = ExecMsg;
    type State = ExecState;
    type Arguments = ExecArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ExecMsg>,
        a: ExecArgs,
    ) -> Result<ExecState, ActorProcessingErr> {
        Ok(ExecState {
            env: Arc::new(RunEnv {
                step: StepEnv {
                    shared: a.shared.clone(),
                    tools: a.tools,
                    services: a.services.clone(),
                },
                shared: a.shared,
                planner: a.planner,
                hooks: a.hooks,
                services: a.services,
                json_limits: a.json_limits,
                parse_turn: a.parse_turn,
            }),
            runs: a.runs,
            max_runs: a.max_runs,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ExecMsg>,
        msg: ExecMsg,
        state: &mut ExecState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ExecMsg::Crashed(why) => Err(why.into()),
            ExecMsg::ConfirmKillSwitch(port) => {
                let env = state.env.clone();
                tokio::spawn(async move {
                    env.shared.effects.wait_idle().await;
                    let _ = port.send(());
                });
                Ok(())
            }
            ExecMsg::Run(jobs) => {
                for job in jobs {
                    match state.runs.clone().try_acquire_owned() {
                        Ok(permit) => spawn_run(state.env.clone(), job, permit, myself.clone()),
                        Err(_) => CallFailure::Overloaded(format!(
                            "agent {} is running {} plans, its limit (supervision.max_runs)",
                            state.env.shared.id, state.max_runs
                        ))
                        .answer(job.reply),
                    }
                }
                Ok(())
            }
        }
    }
}

/// Starts a run. It is polled once here first: a run that needs no wait
/// (a rule plan of ready tools, the common case) finishes without a task of
/// its own; one that waits is moved into a task, which polls it again at
/// once with its own waker. A panic either way crashes the executor.
fn spawn_run(env: Arc<RunEnv>, job: Job, permit: OwnedSemaphorePermit, exec: ActorRef<ExecMsg>) {
    let span = tracing::debug_span!(
        "plan_run",
        agent = %env.shared.id,
        trace_id = job.reply.trace_id(),
        message_id = job.reply.call_id(),
    );
    // Unconstrained: tokio's cooperative budget would otherwise make a ready
    // run report Pending once the executor has done enough work this turn.
    let mut run = Box::pin(tokio::task::unconstrained(
        async move {
            serve(env, job).await;
            drop(permit);
        }
        .instrument(span),
    ));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let first =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.as_mut().poll(&mut cx)));
    match first {
        Ok(std::task::Poll::Ready(())) => {}
        Ok(std::task::Poll::Pending) => {
            tokio::spawn(async move {
                if let Err(panic) = std::panic::AssertUnwindSafe(run).catch_unwind().await {
                    let why = panic_text(&panic);
                    let _ = exec.cast(ExecMsg::Crashed(format!("plan run panicked: {why}")));
                }
            });
        }
        Err(panic) => {
            let why = panic_text(&panic);
            let _ = exec.cast(ExecMsg::Crashed(format!("plan run panicked: {why}")));
        }
    }
}

/// Runs one Call to its answer, or until its caller gives up.
async fn serve(env: Arc<RunEnv>, job: Job) {
    let Job {
        frame,
        principal,
        mut reply,
        mut held,
        started,
        _in_flight,
        _permit,
    } = job;
    let trace = (reply.trace_id(), reply.call_id());
    let mut stopped = env.shared.stopped.subscribe();
    let outcome = tokio::select! {
        biased;
        out = admit_and_run(&env, frame, &principal, &mut held, trace) => Some(out),
        () = reply.closed() => None,
        // Past the drain deadline the agent terminated: the run ends here.
        _ = stopped.wait_for(|s| *s) => Some(Err(Failed::Answer(CallFailure::Drained))),
    };
    env.shared.calls.fetch_add(1, Ordering::Relaxed);
    metrics::histogram!("mxp_call_duration_seconds").record(started.elapsed().as_secs_f64());
    match outcome {
        Some(Ok((result, session))) => {
            metrics::counter!("mxp_calls_total", "outcome" => "ok").increment(1);
            let _ = reply.ok_in_session(result, Some(session));
        }
        Some(Err(Failed::Answer(failure))) => failure.answer(reply),
        // The hook panicked and the kernel was told: the caller sees the
        // reply dropped (`internal`, retriable).
        Some(Err(Failed::HookPanicked)) => drop(reply),
        None => {
            metrics::counter!("mxp_calls_total", "outcome" => "cancelled").increment(1);
        }
    }
}

/// How a run ended without a result.
enum Failed {
    /// Answer the caller with this.
    Answer(CallFailure),
    /// `on_message` panicked; the kernel restarts.
    HookPanicked,
}

impl From<CallFailure> for Failed {
    fn from(f: CallFailure) -> Failed {
        Failed::Answer(f)
    }
}

/// Parses the body (one at a time per agent, within the JSON limits, its
/// cost charged to the budgets in place of the raw frame), admits the
/// session, lets the `on_message` hook answer through the gate, or plans.
async fn admit_and_run(
    env: &RunEnv,
    frame: Frame,
    principal: &Principal,
    held: &mut Option<BodyPermit>,
    trace: (u64, u64),
) -> Result<(Value, SessionId), Failed> {
    let parsed = {
        // The semaphore is never closed; if it were, parsing unthrottled is
        // still correct.
        let _turn = env.parse_turn.acquire().await.ok();
        Call::from_frame(&frame).and_then(|c| c.parse_body_within(env.json_limits))
    };
    drop(frame);
    let (mut body, cost) = parsed.map_err(CallFailure::Decode)?;
    // A forwarded Call names its caller; only a trusted forwarder's word counts.
    let principal = &match body.caller.take() {
        Some(caller) => env.services.relay(*principal, caller)?,
        None => *principal,
    };
    // Charge the parse in place of the frame; a parse no larger than the
    // frame keeps the frame's charge (no churn on the budgets).
    if let Some(h) = held.as_mut()
        && cost.estimated_bytes() > h.bytes()
    {
        h.resize(cost.estimated_bytes()).map_err(|e| {
            CallFailure::Overloaded(format!(
                "the parsed body needs about {} bytes and the budget has {} free (supervision.max_body_bytes, node.max_body_bytes)",
                e.asked, e.free
            ))
        })?;
    }
    let session = env.services.admit(body.session.take(), principal)?;
    let ctx = env.shared.context();
    let hooks = env.hooks.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        hooks.on_message(&ctx, &body)
    }));
    match outcome {
        Err(panic) => {
            let why = panic_text(&panic);
            let _ = env
                .shared
                .kernel
                .cast(KernelMsg::Crash(format!("on_message panicked: {why}")));
            Err(Failed::HookPanicked)
        }
        Ok(MessageOutcome::Reply(result)) => {
            // A hook's answer is an effect like any other: it passes the gate.
            let intent = Intent {
                principal: *principal,
                agent: env.shared.id,
                session: Some(session.clone()),
                tool: HOOK_REPLY.into(),
                effect: EffectClass::ReadOnly,
                args: result,
                trace_id: trace.0,
                message_id: trace.1,
            };
            let allowed = env
                .services
                .check_now(intent)
                .map_err(CallFailure::Denied)?;
            Ok((allowed.into_intent().args, session))
        }
        Ok(MessageOutcome::Plan) => {
            // The Call as replay needs it, queued in order before the run's
            // first durable step; its answer is durable before it goes out.
            let auditor = env.services.auditor();
            let event = |kind, data| {
                audit::event(kind, data, Some(principal.id()), Some(&session), trace.0)
            };
            if auditor.is_on() {
                let data =
                    audit::call_received(&env.shared.id, &body.method, &body.params, trace.1);
                let received = event(audit::EventKind::CallReceived, data);
                auditor
                    .enqueue(vec![received])
                    .await
                    .map_err(|e| CallFailure::Internal(e.to_string()))?;
            }
            let result = drive(env, PlanRun::new(body), principal, &session, trace).await;
            if auditor.is_on() {
                let kind = audit::call_answered(result.as_ref().map_err(CallFailure::code));
                let data = json!({ "agent": env.shared.id.to_string(), "message_id": trace.1 });
                auditor
                    .record(vec![event(kind, data)])
                    .await
                    .map_err(|e| CallFailure::Internal(e.to_string()))?;
            }
            Ok((result?, session))
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Drives `run` to its end: planner, gate, tool, feed back, until done.
async fn drive(
    env: &RunEnv,
    mut run: PlanRun,
    principal: &Principal,
    session: &SessionId,
    (trace_id, message_id): (u64, u64),
) -> Result<Value, CallFailure> {
    loop {
        let step = match run.next() {
            Next::Done(_) => return Ok(run.into_answer().unwrap_or_default()),
            Next::NeedPlan { call, done } => {
                let next = env.planner.next(call, done).await.map_err(|e| match e {
                    PlanError::NoRule { .. } => CallFailure::Unsupported(e.to_string()),
                    other => CallFailure::Internal(other.to_string()),
                })?;
                run.planned(next)
                    .map_err(|e| CallFailure::Internal(e.to_string()))?;
                continue;
            }
            Next::Intent(step) => step.clone(),
        };
        let index = run.step_index();
        let labelled = run.labelled();
        let called = governed_call(
            &env.step,
            principal,
            session,
            (trace_id, message_id),
            index,
            step.tool,
            step.args,
            FlowScope {
                labelled: &labelled,
                mode: env.services.gate().settings().flow_mode,
            },
        )
        .await?;
        drop(labelled);
        run.complete_labelled(called.output, called.labels)
            .map_err(|e| CallFailure::Internal(e.to_string()))?;
    }
}
