//! The actors of an MXP node, built with ractor around pure cores.
//!
//! ```text
//! NodeSupervisor
//!  ├─ Transport (QUIC server; the bus)
//!  ├─ Registry (agents here and on the mesh)
//!  ├─ (policy, broker, skill runner, audit, replay: governance issues)
//!  └─ Agent <id>: AgentSupervisor
//!      ├─ Kernel  (lifecycle, hooks)
//!      └─ Planner (rule-based by default)
//! ```
//!
//! The decisions are pure and tested without actors: the lifecycle
//! ([`LifecycleState::apply`]), planning ([`RulePlanner`]), the built-in tools
//! ([`tools::run_plan`]). Actors are thin shells that hold state, receive
//! frames in batches and restart on failure.
#![forbid(unsafe_code)]

mod agent;
mod hooks;
mod lifecycle;
mod node;
mod planner;
pub mod registry;
mod slot;
pub mod tools;

pub use agent::{
    AgentArgs, AgentMsg, AgentSpec, AgentStatus, AgentSupervisor, AgentSupervisorState,
    SupervisionPolicy,
};
pub use hooks::{AgentContext, AgentHooks, MessageOutcome, NoHooks};
pub use lifecycle::{InvalidTransition, LifecycleState, Transition};
pub use node::{Node, NodeError, NodeSettings, NodeStatus};
pub use planner::{
    BUILTIN_TOOLS, Plan, PlanError, PlanStep, Planner, Rule, RuleError, RulePlanner, default_rules,
};
