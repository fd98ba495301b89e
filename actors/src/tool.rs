//! Tools: what a plan step can do, and the one registry that names them.
//!
//! A [`Tool`] declares its name, the shape of its arguments and its
//! [`EffectClass`], which is what the gate, policy and the kill switch key
//! on. Its `execute` requires a [`Grant`]: the proof that the gate allowed
//! this exact intent and that its capability token verified, which only the
//! [`crate::gate::Enforcer`] constructs.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use mxp_governance::flow::FlowSource;
use mxp_protocol::{AgentId, SessionId};
use mxp_transport::Principal;
use serde_json::Value;

use crate::AgentStatus;
use crate::agent::step::{GovernedCalls, StepEnv};
use crate::gate::Grant;

pub use mxp_protocol::EffectClass;

/// The shape a tool's arguments must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArgSchema {
    /// Any JSON value.
    Any,
    /// `null` (or absent).
    None,
    /// A JSON object.
    Object,
}

impl ArgSchema {
    /// Checks `args` against the schema.
    ///
    /// # Errors
    /// A sentence saying what was expected.
    pub fn check(self, args: &Value) -> Result<(), &'static str> {
        match (self, args) {
            (ArgSchema::Any, _) | (ArgSchema::None, Value::Null) => Ok(()),
            (ArgSchema::Object, Value::Object(_)) => Ok(()),
            (ArgSchema::None, _) => Err("takes no arguments"),
            (ArgSchema::Object, _) => Err("takes a JSON object"),
        }
    }
}

/// Why a tool did not produce an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// No tool of this name is registered.
    #[error("tool {0:?} is not available to this agent")]
    Unknown(String),
    /// The arguments do not fit the tool's schema.
    #[error("tool {tool:?} {reason}")]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The arguments fit the schema but not the tool (a bad path, URL or
    /// program): nothing was done.
    #[error("tool {tool:?}: {reason}")]
    Malformed {
        /// The tool.
        tool: String,
        /// What is wrong.
        reason: String,
    },
    /// The enforcing component refused the act within the token's scope
    /// (a path outside the root, a host off the allowlist, a flow policy
    /// does not allow): nothing was done.
    #[error("tool {tool:?} refused: {reason}")]
    Refused {
        /// The tool.
        tool: String,
        /// Why.
        reason: String,
    },
    /// The effect may or may not have happened (a timeout after sending, a
    /// crash mid-call). It is never retried silently: its idempotency key
    /// is refused until an operator resolves it.
    #[error("tool {tool:?} is in doubt: {reason}")]
    InDoubt {
        /// The tool.
        tool: String,
        /// Why, and the idempotency key.
        reason: String,
    },
    /// The tool ran and failed.
    #[error("tool {tool:?} failed: {reason}")]
    Failed {
        /// The tool.
        tool: String,
        /// Why.
        reason: String,
    },
}

/// What a tool may read about the Call it serves, and where it says what
/// its output carries (the flow rule).
pub struct ToolContext<'a> {
    /// The agent whose plan runs the tool.
    pub agent: AgentId,
    /// Who asked.
    pub principal: &'a Principal,
    /// The session.
    pub session: &'a SessionId,
    status: &'a (dyn Fn() -> AgentStatus + Send + Sync),
    step: usize,
    labels: std::sync::Mutex<Vec<FlowSource>>,
    /// Where new governed intents of this Call run, with its trace and
    /// message ids and the labels its arguments carry (set by the governed
    /// path; absent in a bare context).
    governed: Option<(&'a StepEnv, (u64, u64), &'a [FlowSource])>,
}

impl<'a> ToolContext<'a> {
    /// A context whose agent status is read by `status` when a tool asks.
    pub fn new(
        agent: AgentId,
        principal: &'a Principal,
        session: &'a SessionId,
        status: &'a (dyn Fn() -> AgentStatus + Send + Sync),
    ) -> ToolContext<'a> {
        ToolContext {
            agent,
            principal,
            session,
            status,
            step: 0,
            labels: std::sync::Mutex::new(Vec::new()),
            governed: None,
        }
    }

    /// The same context, for plan step `step` (from 0).
    #[must_use]
    pub fn at_step(mut self, step: usize) -> ToolContext<'a> {
        self.step = step;
        self
    }

    /// This context, able to make new governed intents through `env`; the
    /// tool's arguments carry `inbound` labels (they reach whatever those
    /// intents do).
    pub(crate) fn with_governed(
        mut self,
        env: &'a StepEnv,
        trace: (u64, u64),
        inbound: &'a [FlowSource],
    ) -> ToolContext<'a> {
        self.governed = Some((env, trace, inbound));
        self
    }

    /// The agent's status now.
    pub fn status(&self) -> AgentStatus {
        (self.status)()
    }

    /// The plan step the tool runs as.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Says the tool's output carries data from `source` (a file it read,
    /// data derived from labelled input): later steps whose arguments hold
    /// it are subject to the flow rule.
    pub fn label_output(&self, source: FlowSource) {
        let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        if !labels.contains(&source) {
            labels.push(source);
        }
    }

    /// The sources the output was labelled with, taken.
    pub fn take_labels(&self) -> Vec<FlowSource> {
        std::mem::take(&mut *self.labels.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A handle to make new governed intents of this Call (same principal,
    /// agent, session and trace), each through the gate like a plan step:
    /// what a skill's host calls use. `None` outside the governed path
    /// (a context made with [`ToolContext::new`] alone). The handle carries
    /// the flow labels of this tool's arguments and gathers those of what
    /// its intents return ([`GovernedCalls::labels`]).
    pub fn governed(&self) -> Option<GovernedCalls> {
        self.governed.map(|(env, trace, inbound)| {
            GovernedCalls::new(
                env,
                *self.principal,
                self.session.clone(),
                trace,
                self.step,
                inbound.to_vec(),
            )
        })
    }
}

/// A tool a plan step can name.
pub trait Tool: Send + Sync + 'static {
    /// Its name, as plan steps and policy name it (e.g. `echo`).
    fn name(&self) -> &str;

    /// What it does to the world.
    fn effect(&self) -> EffectClass;

    /// The shape of its arguments.
    fn args(&self) -> ArgSchema;

    /// Runs the granted intent. `grant` carries the exact arguments the
    /// gate allowed and their verified capability token; a tool reads its
    /// arguments from there.
    ///
    /// # Cancel safety
    /// The future is dropped when the caller gives up; a tool with an
    /// external effect must record whether it happened (broker issue).
    fn execute<'a>(
        &'a self,
        ctx: &'a ToolContext<'a>,
        grant: Grant<'a>,
    ) -> BoxFuture<'a, Result<Value, ToolError>>;
}

/// `echo`: answers with its arguments.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Tool for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn effect(&self) -> EffectClass {
        EffectClass::ReadOnly
    }
    fn args(&self) -> ArgSchema {
        ArgSchema::Any
    }
    fn execute<'a>(
        &'a self,
        _: &'a ToolContext<'a>,
        grant: Grant<'a>,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(std::future::ready(Ok(grant.args().clone())))
    }
}

/// `status`: answers with the agent's status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Status;

impl Tool for Status {
    fn name(&self) -> &str {
        "status"
    }
    fn effect(&self) -> EffectClass {
        EffectClass::ReadOnly
    }
    fn args(&self) -> ArgSchema {
        ArgSchema::Any
    }
    fn execute<'a>(
        &'a self,
        ctx: &'a ToolContext<'a>,
        _: Grant<'a>,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        let status = serde_json::to_value(ctx.status()).map_err(|e| ToolError::Failed {
            tool: "status".into(),
            reason: e.to_string(),
        });
        Box::pin(std::future::ready(status))
    }
}

/// The tools an agent's plans may name, by name.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

/// A tool name registered twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tool named {0:?} is registered already")]
pub struct DuplicateTool(pub String);

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> ToolRegistry {
        ToolRegistry::default()
    }

    /// The built-in tools: `echo` and `status`, both read-only.
    pub fn builtin() -> ToolRegistry {
        let mut r = ToolRegistry::new();
        // Two distinct names: registering them cannot collide.
        let _ = r.register(Arc::new(Echo));
        let _ = r.register(Arc::new(Status));
        r
    }

    /// Adds `tool`.
    ///
    /// # Errors
    /// [`DuplicateTool`] if its name is taken.
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), DuplicateTool> {
        let name = tool.name().to_owned();
        if self.tools.contains_key(&name) {
            return Err(DuplicateTool(name));
        }
        self.tools.insert(name, tool);
        Ok(())
    }

    /// The tool named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tools.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtins_are_read_only_and_unique() {
        let mut r = ToolRegistry::builtin();
        assert_eq!(r.names(), vec!["echo", "status"]);
        for name in r.names() {
            assert_eq!(r.get(name).map(|t| t.effect()), Some(EffectClass::ReadOnly));
        }
        assert_eq!(
            r.register(Arc::new(Echo)),
            Err(DuplicateTool("echo".into()))
        );
    }

    #[test]
    fn schemas_check_arguments() {
        assert!(ArgSchema::Any.check(&json!([1])).is_ok());
        assert!(ArgSchema::None.check(&Value::Null).is_ok());
        assert!(ArgSchema::None.check(&json!(1)).is_err());
        assert!(ArgSchema::Object.check(&json!({})).is_ok());
        assert!(ArgSchema::Object.check(&json!("x")).is_err());
    }
}
