//! One hosted agent: a supervisor over its kernel and plan executor, fed
//! from the agent's bus mailbox in batches.
//!
//! ```text
//! Mailbox ──bridge task──▶ Kernel ──▶ Executor ──▶ plan runs (one task each)
//!            (batches of     (lifecycle,  (admits up     planner → gate → tool
//!             envelopes)      session,     to max_runs)  → Reply
//!                             hooks)
//! ```
//!
//! * [`kernel`]: lifecycle, sessions, hooks (a hook reply passes the gate).
//! * [`executor`]: drives plan runs concurrently; every step passes the gate.
//! * [`step`]: one governed tool call (gate, audit, enforcer, tool, audit),
//!   the only path a tool runs by: plan steps and skills' host calls.
//! * [`supervisor`]: restarts a crashed kernel or executor within limits.
//!
//! A ractor message costs several times a raw channel send, so the bridge
//! moves up to `batch` envelopes per actor message: the data path pays the
//! actor cost once per batch, and stays under supervision.

pub(crate) mod executor;
pub(crate) mod kernel;
pub(crate) mod step;
pub(crate) mod supervisor;

pub use step::GovernedCalls;
pub use supervisor::{AgentArgs, AgentMsg, AgentSupervisor, AgentSupervisorState};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mxp_protocol::{AgentId, Frame};
use mxp_transport::{BodyPermit, Principal, Reply};
use serde::{Deserialize, Serialize};

use crate::error::SettingsError;
use crate::hooks::{AgentContext, AgentHooks};
use crate::slot::Slot;
use crate::tool::ToolRegistry;
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
    /// Plan runs an agent drives at once; a Call past it gets `overloaded`.
    pub max_runs: usize,
    /// Bytes of Call frames (queued in the mailbox or in flight) and of
    /// their parsed bodies an agent may hold; a Call past it is `overloaded`.
    pub max_body_bytes: usize,
    /// Most JSON values one Call body may parse into.
    pub max_json_values: usize,
    /// Deepest nesting of arrays and objects in one Call body.
    pub max_json_depth: usize,
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
            max_runs: 1024,
            max_body_bytes: 64 << 20,
            max_json_values: 1 << 20,
            max_json_depth: 64,
        }
    }
}

impl SupervisionPolicy {
    /// The JSON limits a Call body is parsed within.
    pub fn json_limits(&self) -> mxp_protocol::JsonLimits {
        mxp_protocol::JsonLimits {
            max_depth: self.max_json_depth,
            max_elements: self.max_json_values,
        }
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`SettingsError`] naming the field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.restart_window_ms == 0 {
            return Err(SettingsError::new(
                "supervision.restart_window_ms",
                "must be greater than zero",
            ));
        }
        if self.tick_ms == 0 {
            return Err(SettingsError::new(
                "supervision.tick_ms",
                "must be greater than zero",
            ));
        }
        if self.batch == 0 {
            return Err(SettingsError::new(
                "supervision.batch",
                "must be at least 1",
            ));
        }
        if self.max_in_flight < self.batch {
            return Err(SettingsError::new(
                "supervision.max_in_flight",
                "must be at least supervision.batch",
            ));
        }
        if self.max_body_bytes < 64 << 10 {
            return Err(SettingsError::new(
                "supervision.max_body_bytes",
                "must be at least 65536 (64 KiB)",
            ));
        }
        if self.max_body_bytes > u32::MAX as usize {
            return Err(SettingsError::new(
                "supervision.max_body_bytes",
                "must be at most 4294967295",
            ));
        }
        if self.max_json_values == 0 || self.max_json_depth == 0 {
            return Err(SettingsError::new(
                "supervision.max_json_values",
                "max_json_values and max_json_depth must be at least 1",
            ));
        }
        if self.max_runs == 0 {
            return Err(SettingsError::new(
                "supervision.max_runs",
                "must be at least 1",
            ));
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
    /// The tools its plans may name.
    pub tools: Arc<ToolRegistry>,
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
    /// Calls it answered (by a hook or a plan run, with a result or an error).
    pub calls_handled: u64,
    /// Times its kernel or planner was restarted.
    pub restarts: u64,
    /// Seconds since it started.
    pub uptime_secs: u64,
}

/// State shared by an agent's actors and the node: survives restarts.
pub(crate) struct AgentShared {
    pub(crate) id: AgentId,
    pub(crate) name: Arc<str>,
    pub(crate) capabilities: Vec<String>,
    state: Mutex<LifecycleState>,
    in_flight: AtomicUsize,
    calls: AtomicU64,
    restarts: AtomicU64,
    started: Instant,
    kernel: Arc<Slot<kernel::KernelMsg>>,
    executor: Slot<executor::ExecMsg>,
    /// Set when the agent terminates: runs still in flight end at once
    /// (past the drain deadline), their callers answered `agent_retired`.
    stopped: tokio::sync::watch::Sender<bool>,
    /// External writes of this agent in flight, for the kill switch.
    pub(crate) effects: crate::gate::InFlight,
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
            name: self.name.to_string(),
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

/// A read-only view of a running agent: its state and status, read
/// without a message to its actors.
#[derive(Clone)]
pub struct AgentView(Arc<AgentShared>);

impl std::fmt::Debug for AgentView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentView({})", self.0.id)
    }
}

impl AgentView {
    /// Its lifecycle state now.
    pub fn state(&self) -> LifecycleState {
        self.0.state()
    }

    /// Its status now.
    pub fn status(&self) -> AgentStatus {
        self.0.status()
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

/// A Call on its way from the kernel to a plan run: its frame unparsed,
/// with the bytes it holds of the agent's and the node's budgets.
pub(crate) struct Job {
    frame: Frame,
    principal: Principal,
    reply: Reply,
    held: Option<BodyPermit>,
    started: Instant,
    _in_flight: InFlight,
    /// Its share of the agent's in-flight limit, released when answered.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}
