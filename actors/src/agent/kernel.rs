//! The kernel: an agent's lifecycle, its hooks, and the door of its data
//! path. It admits a Call (the agent is Active, the body parses, the caller
//! may use the session it names), lets the agent's `on_message` hook answer
//! it through the gate, and hands the rest to the executor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mxp_protocol::{Call, MessageType, TypedPayload};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, info, warn};

use super::executor::ExecMsg;
use super::{AgentShared, InFlight, Job, SupervisionPolicy};
use crate::error::CallFailure;
use crate::gate::{HOOK_REPLY, Intent};
use crate::hooks::{AgentHooks, MessageOutcome};
use crate::services::Services;
use crate::slot::Batch;
use crate::tool::EffectClass;
use crate::{InvalidTransition, LifecycleState, Transition};

/// Messages to a kernel.
pub(crate) enum KernelMsg {
    /// Envelopes from the agent's mailbox.
    Deliver(Batch),
    /// A lifecycle transition requested by an operator or the node.
    Control(
        Transition,
        RpcReplyPort<Result<LifecycleState, InvalidTransition>>,
    ),
    /// The kernel's timer.
    Tick,
}

pub(crate) struct Kernel;

pub(crate) struct KernelState {
    shared: Arc<AgentShared>,
    hooks: Arc<dyn AgentHooks>,
    services: Arc<Services>,
    drain_timeout: Duration,
    drain_deadline: Option<Instant>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) struct KernelArgs {
    pub(crate) shared: Arc<AgentShared>,
    pub(crate) hooks: Arc<dyn AgentHooks>,
    pub(crate) services: Arc<Services>,
    pub(crate) policy: SupervisionPolicy,
}

impl Kernel {
    fn terminate(state: &mut KernelState, myself: &ActorRef<KernelMsg>) {
        state.shared.set_state(LifecycleState::Terminated);
        state.hooks.on_shutdown(&state.shared.context());
        info!(agent = %state.shared.id, "agent terminated");
        myself.stop(Some("terminated".into()));
    }

    fn deliver(state: &mut KernelState, mut batch: Batch) {
        let shared = &state.shared;
        let lifecycle = shared.state();
        let ctx = shared.context();
        let mut jobs = Vec::with_capacity(batch.envelopes.len());
        for env in std::mem::take(&mut batch.envelopes) {
            let (frame, principal, reply) = env.into_parts();
            let _span = tracing::debug_span!(
                "kernel",
                agent = %shared.id,
                trace_id = frame.trace_id(),
                message_id = frame.message_id(),
            )
            .entered();
            if frame.message_type() != MessageType::Call {
                debug!(agent = %shared.id, r#type = %frame.message_type(), "frame delivered");
                continue;
            }
            let Some(reply) = reply else { continue };
            if let Some(refusal) = CallFailure::refusal_in(lifecycle) {
                refusal.answer(reply);
                continue;
            }
            let mut body = match Call::from_frame(&frame).and_then(|c| c.parse_body()) {
                Ok(b) => b,
                Err(e) => {
                    CallFailure::InvalidPayload(e.to_string()).answer(reply);
                    continue;
                }
            };
            let principal = state.services.resolve(principal);
            let session = match state.services.admit(body.session.take(), &principal) {
                Ok(s) => s,
                Err(f) => {
                    f.answer(reply);
                    continue;
                }
            };
            match state.hooks.on_message(&ctx, &body) {
                MessageOutcome::Reply(result) => {
                    // A hook's answer is an effect like any other: it passes the gate.
                    let intent = Intent {
                        principal,
                        agent: shared.id,
                        session: Some(session.clone()),
                        tool: HOOK_REPLY.into(),
                        effect: EffectClass::ReadOnly,
                        args: result,
                        trace_id: frame.trace_id(),
                        message_id: frame.message_id(),
                    };
                    match state.services.gate().check(intent) {
                        Ok(allowed) => {
                            metrics::counter!("mxp_calls_total", "outcome" => "ok").increment(1);
                            // An unencodable result is answered `internal` by the reply itself.
                            let _ = reply.ok_in_session(allowed.into_intent().args, Some(session));
                        }
                        Err(denial) => CallFailure::Denied(denial).answer(reply),
                    }
                }
                MessageOutcome::Plan => jobs.push(Job {
                    body,
                    principal,
                    session,
                    reply,
                    started: Instant::now(),
                    _in_flight: InFlight::new(shared),
                    _permit: batch.take_permit(),
                }),
            }
        }
        if jobs.is_empty() {
            return;
        }
        let failed = match shared.executor.cast(ExecMsg::Run(jobs)) {
            Err(Some(ExecMsg::Run(jobs))) => jobs,
            _ => Vec::new(),
        };
        for job in failed {
            CallFailure::Restarting("the agent's executor").answer(job.reply);
        }
    }
}

impl Actor for Kernel {
    type Msg = KernelMsg;
    type State = KernelState;
    type Arguments = KernelArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<KernelMsg>,
        args: KernelArgs,
    ) -> Result<KernelState, ActorProcessingErr> {
        let shared = args.shared;
        args.hooks.on_bootstrap(&shared.context());
        if shared.state() == LifecycleState::Init {
            shared.transition(Transition::Boot)?;
            shared.transition(Transition::Activate)?;
        }
        let ticker = myself.send_interval(Duration::from_millis(args.policy.tick_ms), || {
            KernelMsg::Tick
        });
        Ok(KernelState {
            shared,
            hooks: args.hooks,
            services: args.services,
            drain_timeout: Duration::from_millis(args.policy.drain_timeout_ms),
            drain_deadline: None,
            ticker: Some(ticker),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<KernelMsg>,
        state: &mut KernelState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<KernelMsg>,
        msg: KernelMsg,
        state: &mut KernelState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            KernelMsg::Deliver(batch) => Kernel::deliver(state, batch),
            KernelMsg::Control(t, port) => {
                let result = state.shared.transition(t);
                if let Ok(next) = result {
                    info!(agent = %state.shared.id, transition = %t, state = %next, "lifecycle transition");
                    match next {
                        LifecycleState::Retiring => {
                            state.drain_deadline = Some(Instant::now() + state.drain_timeout);
                        }
                        LifecycleState::Terminated => {
                            let _ = port.send(result);
                            Kernel::terminate(state, &myself);
                            return Ok(());
                        }
                        _ => {}
                    }
                }
                let _ = port.send(result);
                if state.shared.state() == LifecycleState::Retiring {
                    // Check the drain at once: an idle agent retires without waiting for a tick.
                    myself.send_message(KernelMsg::Tick)?;
                }
            }
            KernelMsg::Tick => {
                state.hooks.on_tick(&state.shared.context());
                if let Some(deadline) = state.drain_deadline {
                    let idle = state.shared.in_flight.load(Ordering::Relaxed) == 0;
                    if idle || Instant::now() >= deadline {
                        if !idle {
                            warn!(agent = %state.shared.id, "drain deadline passed with calls in flight; terminating");
                        }
                        let _ = state.shared.transition(Transition::Terminate);
                        Kernel::terminate(state, &myself);
                    }
                }
            }
        }
        Ok(())
    }
}
