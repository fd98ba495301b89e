//! The kernel: an agent's lifecycle, its hooks' life (`on_bootstrap`,
//! `on_tick`, `on_shutdown`), and the door of its data path: it admits a
//! Call when the agent is Active and hands it, unparsed, to the executor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mxp_protocol::MessageType;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, info, warn};

use super::executor::ExecMsg;
use super::{AgentShared, InFlight, Job, SupervisionPolicy};
use crate::error::CallFailure;
use crate::hooks::AgentHooks;
use crate::services::Services;
use crate::slot::Batch;
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
    /// A hook panicked in a plan run: fail, so the supervisor restarts the
    /// kernel (and runs `on_bootstrap` again).
    Crash(String),
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
        // Runs still in flight past the drain end now, answered `agent_retired`.
        state.shared.stopped.send_replace(true);
        state.hooks.on_shutdown(&state.shared.context());
        info!(agent = %state.shared.id, "agent terminated");
        myself.stop(Some("terminated".into()));
    }

    /// Admits the Calls of a batch: those the lifecycle refuses are answered
    /// here; the rest go to the executor unparsed, still holding their bytes
    /// of the agent's and the node's budgets. A body is parsed when its run
    /// starts, one at a time (see the executor), never a batch up front.
    fn deliver(state: &mut KernelState, mut batch: Batch) {
        let shared = &state.shared;
        let lifecycle = shared.state();
        let mut jobs = Vec::with_capacity(batch.envelopes.len());
        for mut env in std::mem::take(&mut batch.envelopes) {
            let held = env.take_held();
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
            jobs.push(Job {
                frame,
                principal: state.services.resolve(principal),
                reply,
                held,
                started: Instant::now(),
                _in_flight: InFlight::new(shared),
                _permit: batch.take_permit(),
            });
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
            KernelMsg::Crash(why) => return Err(why.into()),
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
