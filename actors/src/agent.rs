//! One hosted agent: a supervisor over its kernel and planner, fed from the
//! agent's bus mailbox in batches.
//!
//! ```text
//! Mailbox ──bridge task──▶ Kernel ──▶ Planner ──▶ Reply (Response / Error)
//!            (batches of       (lifecycle,   (plan, run
//!             envelopes)        hooks)        built-in tools)
//! ```
//!
//! A ractor message costs several times a raw channel send, so the bridge
//! moves up to `batch` envelopes per actor message: the data path pays the
//! actor cost once per batch, and stays under supervision.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mxp_protocol::{AgentId, Call, CallBody, ErrorCode, MessageType, TypedPayload};
use mxp_transport::{Bus, Reply};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::hooks::{AgentContext, AgentHooks, MessageOutcome};
use crate::slot::{Batch, Slot, bridge, refuse};
use crate::tools::{ToolContext, run_plan};
use crate::{LifecycleState, Planner, Transition};

/// How an agent's children are supervised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionPolicy {
    /// Restarts allowed within `restart_window_ms` before the agent is stopped.
    pub max_restarts: u32,
    /// The window over which restarts are counted, in milliseconds.
    pub restart_window_ms: u64,
    /// Period of the kernel's tick (`on_tick`, retire drain checks), in milliseconds.
    pub tick_ms: u64,
    /// Time a retiring agent has to finish in-flight Calls, in milliseconds.
    pub drain_timeout_ms: u64,
    /// Envelopes moved to the kernel per actor message.
    pub batch: usize,
    /// Calls an agent may hold accepted but unanswered; past it the bridge
    /// stops reading the mailbox, which fills, and callers get `overloaded`.
    pub max_in_flight: usize,
}

impl Default for SupervisionPolicy {
    fn default() -> Self {
        SupervisionPolicy {
            max_restarts: 5,
            restart_window_ms: 10_000,
            tick_ms: 1_000,
            drain_timeout_ms: 5_000,
            batch: 64,
            max_in_flight: 1024,
        }
    }
}

impl SupervisionPolicy {
    /// Checks the values.
    ///
    /// # Errors
    /// A message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.restart_window_ms == 0 {
            return Err("restart_window_ms must be greater than zero".into());
        }
        if self.tick_ms == 0 {
            return Err("tick_ms must be greater than zero".into());
        }
        if self.batch == 0 {
            return Err("batch must be at least 1".into());
        }
        if self.max_in_flight < self.batch {
            return Err("max_in_flight must be at least batch".into());
        }
        Ok(())
    }
}

/// What an agent is made of.
#[derive(Clone)]
pub struct AgentSpec {
    /// Its id.
    pub id: AgentId,
    /// Its name.
    pub name: String,
    /// What it can do (for discovery).
    pub capabilities: Vec<String>,
    /// Its planner.
    pub planner: Arc<dyn Planner>,
    /// Its hooks.
    pub hooks: Arc<dyn AgentHooks>,
}

impl std::fmt::Debug for AgentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSpec")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("capabilities", &self.capabilities)
            .field("planner", &self.planner.name())
            .finish_non_exhaustive()
    }
}

/// An agent's status, as `mxp agents` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Its id.
    pub agent_id: AgentId,
    /// Its name.
    pub name: String,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Its lifecycle state.
    pub state: LifecycleState,
    /// Calls accepted and not yet answered.
    pub in_flight: usize,
    /// Calls answered by its planner.
    pub calls_handled: u64,
    /// Times its kernel or planner was restarted.
    pub restarts: u64,
    /// Seconds since it started.
    pub uptime_secs: u64,
}

/// State shared by an agent's actors and the node: survives restarts.
pub(crate) struct AgentShared {
    pub(crate) id: AgentId,
    pub(crate) name: String,
    pub(crate) capabilities: Vec<String>,
    state: Mutex<LifecycleState>,
    in_flight: AtomicUsize,
    calls: AtomicU64,
    restarts: AtomicU64,
    started: Instant,
    kernel: Arc<Slot<KernelMsg>>,
    planner: Slot<PlannerMsg>,
}

impl AgentShared {
    pub(crate) fn state(&self) -> LifecycleState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, s: LifecycleState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// Applies `t` atomically.
    fn transition(&self, t: Transition) -> Result<LifecycleState, crate::InvalidTransition> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let next = st.apply(t)?;
        *st = next;
        Ok(next)
    }

    pub(crate) fn status(&self) -> AgentStatus {
        AgentStatus {
            agent_id: self.id,
            name: self.name.clone(),
            capabilities: self.capabilities.clone(),
            state: self.state(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            calls_handled: self.calls.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }

    fn context(&self) -> AgentContext {
        AgentContext {
            agent_id: self.id,
            name: self.name.clone(),
            state: self.state(),
        }
    }
}

/// Counts a Call as in flight until dropped (answered, or lost in a crash).
struct InFlight(Arc<AgentShared>);

impl InFlight {
    fn new(shared: &Arc<AgentShared>) -> InFlight {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A Call on its way from the kernel to the planner.
pub(crate) struct Job {
    body: CallBody,
    reply: Reply,
    started: Instant,
    _in_flight: InFlight,
    /// Its share of the agent's in-flight limit, released when answered.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

// ---------------------------------------------------------------- kernel

/// Messages to a kernel.
pub(crate) enum KernelMsg {
    /// Envelopes from the agent's mailbox.
    Deliver(Batch),
    /// A lifecycle transition requested by an operator or the node.
    Control(
        Transition,
        RpcReplyPort<Result<LifecycleState, crate::InvalidTransition>>,
    ),
    /// The kernel's timer.
    Tick,
}

pub(crate) struct Kernel;

pub(crate) struct KernelState {
    shared: Arc<AgentShared>,
    hooks: Arc<dyn AgentHooks>,
    drain_timeout: Duration,
    drain_deadline: Option<Instant>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) struct KernelArgs {
    shared: Arc<AgentShared>,
    hooks: Arc<dyn AgentHooks>,
    policy: SupervisionPolicy,
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
            let _span = tracing::debug_span!(
                "kernel",
                agent = %shared.id,
                trace_id = env.frame.trace_id(),
                message_id = env.frame.message_id(),
            )
            .entered();
            if env.frame.message_type() != MessageType::Call {
                debug!(agent = %shared.id, r#type = %env.frame.message_type(), "frame delivered");
                continue;
            }
            let Some(reply) = env.reply else { continue };
            if let Some((code, message)) = lifecycle.call_refusal() {
                refuse(reply, code, message);
                continue;
            }
            let body = match Call::from_frame(&env.frame).and_then(|c| c.parse_body()) {
                Ok(b) => b,
                Err(e) => {
                    refuse(reply, ErrorCode::INVALID_PAYLOAD, e.to_string());
                    continue;
                }
            };
            match state.hooks.on_message(&ctx, &body) {
                MessageOutcome::Reply(result) => {
                    metrics::counter!("mxp_calls_total", "outcome" => "ok").increment(1);
                    let _ = reply.ok(result);
                }
                MessageOutcome::Plan => jobs.push(Job {
                    body,
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
        let failed = match shared.planner.cast(PlannerMsg::Run(jobs)) {
            Err(Some(PlannerMsg::Run(jobs))) => jobs,
            _ => Vec::new(),
        };
        for job in failed {
            refuse(
                job.reply,
                ErrorCode::AGENT_UNAVAILABLE,
                "planner is restarting",
            );
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

// ---------------------------------------------------------------- planner

/// Messages to a planner.
pub(crate) enum PlannerMsg {
    /// Calls to plan and run.
    Run(Vec<Job>),
}

pub(crate) struct PlannerActor;

pub(crate) struct PlannerState {
    shared: Arc<AgentShared>,
    planner: Arc<dyn Planner>,
}

impl Actor for PlannerActor {
    type Msg = PlannerMsg;
    type State = PlannerState;
    type Arguments = (Arc<AgentShared>, Arc<dyn Planner>);

    async fn pre_start(
        &self,
        _myself: ActorRef<PlannerMsg>,
        (shared, planner): Self::Arguments,
    ) -> Result<PlannerState, ActorProcessingErr> {
        Ok(PlannerState { shared, planner })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PlannerMsg>,
        msg: PlannerMsg,
        state: &mut PlannerState,
    ) -> Result<(), ActorProcessingErr> {
        let PlannerMsg::Run(jobs) = msg;
        for job in jobs {
            let _span = tracing::debug_span!(
                "planner",
                agent = %state.shared.id,
                trace_id = job.reply.trace_id(),
                message_id = job.reply.call_id(),
                method = %job.body.method,
            )
            .entered();
            let outcome = state
                .planner
                .plan(&job.body)
                .map_err(|e| match e {
                    crate::PlanError::NoRule { .. } => (ErrorCode::UNSUPPORTED, e.to_string()),
                    _ => (ErrorCode::INTERNAL, e.to_string()),
                })
                .and_then(|plan| {
                    // Only a plan that reads the status pays for building it.
                    let status = if plan.steps.iter().any(|s| s.tool == "status") {
                        serde_json::to_value(state.shared.status()).unwrap_or_default()
                    } else {
                        serde_json::Value::Null
                    };
                    run_plan(&plan.steps, &ToolContext { status })
                        .map_err(|e| (ErrorCode::UNSUPPORTED, e.to_string()))
                });
            state.shared.calls.fetch_add(1, Ordering::Relaxed);
            metrics::histogram!("mxp_call_duration_seconds")
                .record(job.started.elapsed().as_secs_f64());
            match outcome {
                Ok(result) => {
                    metrics::counter!("mxp_calls_total", "outcome" => "ok").increment(1);
                    let _ = job.reply.ok(result);
                }
                Err((code, message)) => refuse(job.reply, code, message),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- supervisor

/// Messages to an agent's supervisor.
pub enum AgentMsg {
    /// Apply a lifecycle transition.
    Control(Transition, RpcReplyPort<Result<LifecycleState, String>>),
    /// Report the agent's status.
    Status(RpcReplyPort<AgentStatus>),
}

/// Supervises one agent's kernel and planner: restarts a crashed child
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
}

/// State of [`AgentSupervisor`].
pub struct AgentSupervisorState {
    shared: Arc<AgentShared>,
    spec: AgentSpec,
    policy: SupervisionPolicy,
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
            policy: st.policy.clone(),
        };
        let (k, _) = Actor::spawn_linked(None, Kernel, args, myself.get_cell()).await?;
        st.shared.kernel.set(k);
        Ok(())
    }

    async fn spawn_planner(
        myself: &ActorRef<AgentMsg>,
        st: &AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let args = (st.shared.clone(), st.spec.planner.clone());
        let (p, _) = Actor::spawn_linked(None, PlannerActor, args, myself.get_cell()).await?;
        st.shared.planner.set(p);
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
        let mailbox = args.bus.register(args.spec.id)?;
        let shared = Arc::new(AgentShared {
            id: args.spec.id,
            name: args.spec.name.clone(),
            capabilities: args.spec.capabilities.clone(),
            state: Mutex::new(LifecycleState::Init),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            started: Instant::now(),
            kernel: Arc::new(Slot::empty()),
            planner: Slot::empty(),
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
            policy: args.policy,
            restarts: VecDeque::new(),
            bridge,
        };
        AgentSupervisor::spawn_planner(&myself, &st).await?;
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
        if let Some(k) = st.shared.kernel.take() {
            k.stop(None);
        }
        if let Some(p) = st.shared.planner.take() {
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
            AgentMsg::Control(t, port) => {
                let result = match st.shared.kernel.get() {
                    Some(k) => match k
                        .call(|p| KernelMsg::Control(t, p), Some(Duration::from_secs(5)))
                        .await
                    {
                        Ok(ractor::rpc::CallResult::Success(r)) => r.map_err(|e| e.to_string()),
                        _ => Err("the agent's kernel is restarting; try again".into()),
                    },
                    None => Err("the agent's kernel is not running".into()),
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
                } else if st.shared.planner.holds(&cell) {
                    "planner"
                } else {
                    return Ok(());
                };
                st.shared.restarts.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("mxp_actor_restarts_total", "actor" => which).increment(1);
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
                    AgentSupervisor::spawn_planner(&myself, st).await?;
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
