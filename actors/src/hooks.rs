//! Hooks through which agent code takes part in the kernel's life.

use mxp_protocol::{AgentId, CallBody};
use serde_json::Value;

use crate::LifecycleState;

/// What a hook sees of its agent.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// The agent's id.
    pub agent_id: AgentId,
    /// Its name (shared: a context is made for every Call).
    pub name: std::sync::Arc<str>,
    /// Its state when the hook runs.
    pub state: LifecycleState,
}

/// What [`AgentHooks::on_message`] decides for a Call.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageOutcome {
    /// Let the planner handle the Call.
    Plan,
    /// Answer the Call with this result without planning. The answer is an
    /// effect like any other: it passes the gate (as the read-only intent
    /// `hook.reply`), and a denied one is answered `denied`.
    Reply(Value),
}

/// Agent code run by the kernel. Every method has a default that does
/// nothing, so an agent implements only what it needs. A hook that panics
/// crashes the kernel, which its supervisor restarts (the Call being handled
/// gets a retriable `internal` error).
pub trait AgentHooks: Send + Sync + 'static {
    /// Once per kernel start, before the agent becomes Ready.
    fn on_bootstrap(&self, _ctx: &AgentContext) {}

    /// For every Call the agent accepts (it is Active), before planning.
    fn on_message(&self, _ctx: &AgentContext, _call: &CallBody) -> MessageOutcome {
        MessageOutcome::Plan
    }

    /// Every tick of the kernel's timer.
    fn on_tick(&self, _ctx: &AgentContext) {}

    /// Once, when the agent terminates.
    fn on_shutdown(&self, _ctx: &AgentContext) {}
}

/// Hooks that do nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl AgentHooks for NoHooks {}
