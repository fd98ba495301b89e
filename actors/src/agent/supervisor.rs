//! An agent's supervisor: starts its kernel and executor, restarts either
//! after a crash within the policy's intensity limit, and stops the agent
//! (only the agent) beyond it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mxp_transport::Bus;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use super::executor::{ExecArgs, ExecMsg, Executor};
use super::kernel::{Kernel, KernelArgs, KernelMsg};
use super::{AgentShared, AgentSpec, AgentStatus, AgentView, SupervisionPolicy};
use crate::error::CallFailure;
use crate::services::Services;
use crate::slot::{Slot, bridge};
use crate::{LifecycleState, Transition};

/// Messages to an agent's supervisor.
pub enum AgentMsg {
    /// Apply a lifecycle transition.
    Control(
        Transition,
        RpcReplyPort<Result<LifecycleState, CallFailure>>,
    ),
    /// Report the agent's status.
    Status(RpcReplyPort<AgentStatus>),
    /// A view of the agent, to read its state without messages.
    View(RpcReplyPort<AgentView>),
    /// The kill switch is on: answer once the executor confirms that no
    /// external write of this agent is in flight.
    ConfirmKillSwitch(RpcReplyPort<()>),
}

/// Supervises one agent's kernel and executor: restarts a crashed child
/// within the policy's intensity limit, stops the agent beyond it.
pub struct AgentSupervisor;

/// Arguments of [`AgentSupervisor`].
pub struct AgentArgs {
    /// The agent.
    pub spec: AgentSpec,
    /// The bus its mailbox is registered on.
    pub bus: Bus,
    /// Restart intensity, tick, drain and batch settings.
    pub policy: SupervisionPolicy,
    /// The node's authority, gate and sessions.
    pub services: Arc<Services>,
}

/// State of [`AgentSupervisor`].
pub struct AgentSupervisorState {
    shared: Arc<AgentShared>,
    spec: AgentSpec,
    policy: SupervisionPolicy,
    services: Arc<Services>,
    /// Plan runs in progress, shared by every executor incarnation.
    runs: Arc<tokio::sync::Semaphore>,
    /// One body parse at a time, shared likewise.
    parse_turn: Arc<tokio::sync::Semaphore>,
    restarts: VecDeque<Instant>,
    bridge: tokio::task::JoinHandle<()>,
}

impl AgentSupervisor {
    async fn spawn_kernel(
        myself: &ActorRef<AgentMsg>,
        st: &AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let args = KernelArgs {
            shared: st.shared.clone(),
            hooks: st.spec.hooks.clone(),
            services: st.services.clone(),
            policy: st.policy.clone(),
        };
        let (k, _) = Actor::spawn_linked(None, Kernel, args, myself.get_cell()).await?;
        st.shared.kernel.set(k);
        Ok(())
    }

    async fn spawn_executor(
        myself: &ActorRef<AgentMsg>,
        st: &AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let args = ExecArgs {
            shared: st.shared.clone(),
            planner: st.spec.planner.clone(),
            tools: st.spec.tools.clone(),
            hooks: st.spec.hooks.clone(),
            json_limits: st.policy.json_limits(),
            parse_turn: st.parse_turn.clone(),
            services: st.services.clone(),
            runs: st.runs.clone(),
            max_runs: st.policy.max_runs,
        };
        let (p, _) = Actor::spawn_linked(None, Executor, args, myself.get_cell()).await?;
        st.shared.executor.set(p);
        Ok(())
    }

    /// Records a restart; false if the intensity limit is exceeded.
    fn allow_restart(st: &mut AgentSupervisorState) -> bool {
        let now = Instant::now();
        let window = Duration::from_millis(st.policy.restart_window_ms);
        while st
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            st.restarts.pop_front();
        }
        st.restarts.push_back(now);
        st.restarts.len() <= st.policy.max_restarts as usize
    }
}

impl Actor for AgentSupervisor {
    type Msg = AgentMsg;
    type State = AgentSupervisorState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentSupervisorState, ActorProcessingErr> {
        args.policy.validate()?;
        let mailbox = args
            .bus
            .register_with_budget(args.spec.id, Some(args.policy.max_body_bytes))?;
        let shared = Arc::new(AgentShared {
            id: args.spec.id,
            name: Arc::from(args.spec.name.as_str()),
            capabilities: args.spec.capabilities.clone(),
            state: Mutex::new(LifecycleState::Init),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            started: Instant::now(),
            kernel: Arc::new(Slot::empty()),
            stopped: tokio::sync::watch::Sender::new(false),
            effects: crate::gate::InFlight::default(),
            executor: Slot::empty(),
        });
        let bridge = tokio::spawn(bridge(
            mailbox,
            shared.kernel.clone(),
            args.policy.batch,
            Some(Arc::new(tokio::sync::Semaphore::new(
                args.policy.max_in_flight,
            ))),
            KernelMsg::Deliver,
            |m| match m {
                KernelMsg::Deliver(b) => b.envelopes,
                _ => Vec::new(),
            },
        ));
        let st = AgentSupervisorState {
            shared,
            spec: args.spec,
            runs: Arc::new(tokio::sync::Semaphore::new(args.policy.max_runs)),
            parse_turn: Arc::new(tokio::sync::Semaphore::new(1)),
            policy: args.policy,
            services: args.services,
            restarts: VecDeque::new(),
            bridge,
        };
        AgentSupervisor::spawn_executor(&myself, &st).await?;
        AgentSupervisor::spawn_kernel(&myself, &st).await?;
        info!(agent = %st.shared.id, name = %st.shared.name, "agent started");
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AgentMsg>,
        st: &mut AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        st.bridge.abort();
        if st.shared.state() != LifecycleState::Terminated {
            st.shared.set_state(LifecycleState::Terminated);
        }
        st.shared.stopped.send_replace(true);
        if let Some(k) = st.shared.kernel.take() {
            k.stop(None);
        }
        if let Some(p) = st.shared.executor.take() {
            p.stop(None);
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        st: &mut AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Status(port) => {
                let _ = port.send(st.shared.status());
            }
            AgentMsg::View(port) => {
                let _ = port.send(AgentView(st.shared.clone()));
            }
            AgentMsg::ConfirmKillSwitch(port) => match st.shared.executor.get() {
                // The executor confirms itself: a dead or restarting one
                // does not answer, and the caller names this agent.
                Some(exec) => {
                    let _ = exec.cast(ExecMsg::ConfirmKillSwitch(port));
                }
                None => drop(port),
            },
            AgentMsg::Control(t, port) => {
                let result = match st.shared.kernel.get() {
                    Some(k) => match k
                        .call(|p| KernelMsg::Control(t, p), Some(Duration::from_secs(5)))
                        .await
                    {
                        Ok(ractor::rpc::CallResult::Success(r)) => r.map_err(CallFailure::from),
                        _ => Err(CallFailure::Restarting("the agent's kernel")),
                    },
                    None => Err(CallFailure::Restarting("the agent's kernel")),
                };
                let _ = port.send(result);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<AgentMsg>,
        evt: SupervisionEvent,
        st: &mut AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let which = if st.shared.kernel.holds(&cell) {
                    "kernel"
                } else if st.shared.executor.holds(&cell) {
                    "executor"
                } else {
                    return Ok(());
                };
                st.shared.restarts.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("mxp_actor_restarts_total", "actor" => which).increment(1);
                let why = err.to_string();
                st.services
                    .auditor()
                    .record_detached(vec![crate::audit::event(
                        crate::audit::EventKind::ActorRestart,
                        serde_json::json!({
                            "agent": st.shared.id.to_string(),
                            "actor": which,
                            "reason": why.chars().take(512).collect::<String>(),
                        }),
                        None,
                        None,
                        0,
                    )]);
                if !AgentSupervisor::allow_restart(st) {
                    error!(agent = %st.shared.id, actor = which, "{which} crashed: {err}; restart limit of {} in {} ms exceeded, stopping the agent", st.policy.max_restarts, st.policy.restart_window_ms);
                    st.shared.set_state(LifecycleState::Terminated);
                    myself.stop(Some("restart intensity exceeded".into()));
                    return Ok(());
                }
                warn!(agent = %st.shared.id, actor = which, "{which} crashed: {err}; restarting");
                if which == "kernel" {
                    AgentSupervisor::spawn_kernel(&myself, st).await?;
                } else {
                    AgentSupervisor::spawn_executor(&myself, st).await?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _)
                if st.shared.kernel.holds(&cell)
                    && st.shared.state() == LifecycleState::Terminated =>
            {
                myself.stop(Some("terminated".into()));
            }
            _ => {}
        }
        Ok(())
    }
}
