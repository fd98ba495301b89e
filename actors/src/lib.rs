//! The actors of an MXP node, built with ractor around pure cores.
//!
//! ```text
//! NodeSupervisor                      (node::supervisor)
//!  ├─ Transport (QUIC server; the bus; owned, not restartable)
//!  ├─ NodeAgent (registry, control, mesh, forwarding: node::agent)
//!  ├─ node services (the skill runner: node::service), restarted on failure
//!  └─ Agent <id>: AgentSupervisor     (agent::supervisor)
//!      ├─ Kernel   (lifecycle, sessions, hooks: agent::kernel)
//!      └─ Executor (plan runs, concurrently: agent::executor)
//! ```
//!
//! Every effect of a Call passes one decision point, the [`Gate`]: plan
//! steps, hook replies, node control and forwards are all [`Intent`]s, and
//! what acts requires the gate's [`Allowed`]. The gate checks the kill
//! switch, the node's Cedar policy ([`CedarPolicy`]), approvals and budgets,
//! and mints a capability token for a tool intent; a tool runs only with a
//! [`Grant`], which the enforcer makes after verifying that token.
//!
//! The decisions are pure and tested without actors: the lifecycle
//! ([`LifecycleState::apply`]), plan runs ([`PlanRun`]), rule planning
//! ([`RulePlanner`]), sessions ([`SessionTable`]), the Cedar request of an
//! intent ([`gate::intent_request`]), control parsing ([`node::control`]) and the
//! forwarding decision ([`node::forward`]). Actors are thin shells that
//! hold state, receive frames in batches and restart on failure.
#![forbid(unsafe_code)]

mod agent;
pub mod audit;
pub mod error;
pub mod gate;
mod hooks;
mod lifecycle;
pub mod node;
pub mod plan_run;
mod planner;
pub mod registry;
pub mod replay;
pub mod services;
pub mod session;
mod slot;
pub mod store;
pub mod tool;

pub use agent::{
    AgentArgs, AgentMsg, AgentSpec, AgentStatus, AgentSupervisor, AgentSupervisorState, AgentView,
    GovernedCalls, SupervisionPolicy,
};
pub use error::{CallFailure, SettingsError};
pub use gate::{
    Allowed, CedarPolicy, Decision, Denial, Facts, Gate, GateSettings, Grant, Intent, Outcome,
    Policy, Refusal,
};
pub use hooks::{AgentContext, AgentHooks, MessageOutcome, NoHooks};
pub use lifecycle::{InvalidTransition, LifecycleState, Transition};
pub use mxp_governance::flow::{FlowMode, FlowSource, SourceKind};
pub use node::{DEFAULT_NODE_BODY_BYTES, Node, NodeError, NodeService, NodeSettings, NodeStatus};
pub use plan_run::PlanRun;
pub use planner::{
    Plan, PlanError, PlanStep, Planner, PlannerStep, Rule, RuleError, RulePlanner, StepResult,
    default_rules,
};
pub use services::Services;
pub use session::SessionTable;
pub use tool::{ArgSchema, EffectClass, Tool, ToolContext, ToolError, ToolRegistry};
