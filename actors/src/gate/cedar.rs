//! The node's Cedar policy behind the gate: each [`Intent`] becomes a Cedar
//! request (principal from authentication only, never from a payload).

use std::str::FromStr;

use mxp_governance::flow::FlowSource;
use mxp_governance::policy::{
    Action, Arguments, Outcome, PolicyEngine, PolicyLoadError, Request, RequestContext, Resource,
    Zone,
};
use mxp_protocol::{AgentId, PrincipalId, SessionId};
use mxp_transport::NODE_AGENT;
use serde_json::Value;

use super::{Facts, Intent, Policy};
use crate::tool::EffectClass;

/// The session text of an intent outside any session (node control).
const NO_SESSION: &str = "none";

/// Where the node's policy set comes from, to load at start and reload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PolicySource {
    /// The shipped default set (`governance/policy/default/`).
    #[default]
    Default,
    /// The `*.cedar` files of this folder.
    Dir(std::path::PathBuf),
}

impl PolicySource {
    /// Loads and validates the set.
    ///
    /// # Errors
    /// [`PolicyLoadError`] naming file, line, column and reason.
    pub fn load(&self) -> Result<PolicyEngine, PolicyLoadError> {
        match self {
            PolicySource::Default => PolicyEngine::load(&mxp_governance::policy::default_files()),
            PolicySource::Dir(d) => PolicyEngine::load_dir(d),
        }
    }
}

/// A loaded Cedar set deciding for the gate, in one zone.
pub struct CedarPolicy {
    engine: PolicyEngine,
    zone: Zone,
}

impl std::fmt::Debug for CedarPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CedarPolicy")
            .field("policies", &self.engine.summary().policies)
            .field("zone", &self.zone)
            .finish()
    }
}

impl CedarPolicy {
    /// `engine`, deciding every intent in `zone`.
    pub fn new(engine: PolicyEngine, zone: Zone) -> CedarPolicy {
        CedarPolicy { engine, zone }
    }

    /// The shipped default set, in the `sandbox` zone.
    pub fn default_set() -> CedarPolicy {
        CedarPolicy::new(PolicyEngine::default_set(), Zone::Sandbox)
    }

    /// The engine.
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// The zone it decides in.
    pub fn zone(&self) -> Zone {
        self.zone
    }
}

impl Policy for CedarPolicy {
    fn decide(&self, intent: &Intent, facts: &Facts) -> Outcome {
        self.decide_view(&intent.view(), facts)
    }

    fn decide_recorded(&self, intent: &IntentView<'_>, facts: &Facts) -> Option<Outcome> {
        Some(self.decide_view(intent, facts))
    }

    fn decide_flow(&self, intent: &Intent, source: &FlowSource, facts: &Facts) -> Outcome {
        match flow_request(intent, source, facts, self.zone) {
            Ok(request) => self.engine.decide(&request),
            Err(why) => Outcome::deny(vec![why], None),
        }
    }
}

impl CedarPolicy {
    fn decide_view(&self, intent: &IntentView<'_>, facts: &Facts) -> Outcome {
        match view_request(intent, facts, self.zone) {
            Ok(request) => self.engine.decide(&request),
            Err(why) => Outcome::deny(vec![why], None),
        }
    }
}

/// The Cedar request asking whether labelled data from `source` may reach
/// `intent`'s arguments: action `flow`, resource the `Mxp::Source`, the
/// sink's arguments and effect in the context and its name in
/// `context.sink`.
///
/// # Errors
/// A sentence naming what does not fit (the arguments).
pub fn flow_request(
    intent: &Intent,
    source: &FlowSource,
    facts: &Facts,
    zone: Zone,
) -> Result<Request, String> {
    let session = match &intent.session {
        Some(s) => s.clone(),
        None => SessionId::from_str(NO_SESSION).map_err(|e| e.to_string())?,
    };
    let args = Arguments::from_json(&intent.args).map_err(|e| format!("arguments: {e}"))?;
    let context = RequestContext::new(session, zone, intent.effect, facts.now_unix_secs)
        .with_args(args)
        .with_sink(&intent.tool);
    Ok(Request::new(
        *intent.principal.id(),
        Action::flow(),
        Resource::Source(source.clone()),
        context,
    ))
}

/// What a policy decides on: an intent's description, without the proof
/// of who asked. A live [`Intent`] gives one ([`Intent::view`]); replay and
/// what-if build one from an audit record (the principal as recorded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntentView<'a> {
    /// Who asked.
    pub principal: &'a PrincipalId,
    /// The agent acting.
    pub agent: AgentId,
    /// The session, if any.
    pub session: Option<&'a SessionId>,
    /// The tool or control method.
    pub tool: &'a str,
    /// Its effect class.
    pub effect: EffectClass,
    /// Its arguments.
    pub args: &'a Value,
}

impl Intent {
    /// This intent's description, for a policy.
    pub fn view(&self) -> IntentView<'_> {
        IntentView {
            principal: self.principal.id(),
            agent: self.agent,
            session: self.session.as_ref(),
            tool: &self.tool,
            effect: self.effect,
            args: &self.args,
        }
    }
}

/// The Cedar request for `intent`, or why there is none (a deny).
///
/// # Errors
/// A sentence naming what does not fit: the tool name, the arguments.
pub fn intent_request(intent: &Intent, facts: &Facts, zone: Zone) -> Result<Request, String> {
    view_request(&intent.view(), facts, zone)
}

/// The Cedar request for an intent's description, or why there is none.
///
/// # Errors
/// As [`intent_request`].
pub fn view_request(intent: &IntentView<'_>, facts: &Facts, zone: Zone) -> Result<Request, String> {
    let node = facts.node;
    let (action, resource) = if intent.agent == NODE_AGENT {
        let action = Action::from_str(intent.tool).map_err(|e| e.to_string())?;
        let resource = match intent.tool {
            "agent.suspend" | "agent.resume" | "agent.retire" => {
                let agent = intent
                    .args
                    .get("agent_id")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<AgentId>().ok())
                    .ok_or_else(|| format!("{} names no agent", intent.tool))?;
                Resource::Agent { agent, node }
            }
            "approvals.decide" | "approvals.list" => Resource::Approval(
                intent
                    .args
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("*")
                    .chars()
                    .take(64)
                    .collect(),
            ),
            _ => Resource::Node(node),
        };
        (action, resource)
    } else {
        (
            Action::tool(intent.tool).map_err(|e| e.to_string())?,
            Resource::Agent {
                agent: intent.agent,
                node,
            },
        )
    };
    let session = match intent.session {
        Some(s) => s.clone(),
        None => SessionId::from_str(NO_SESSION).map_err(|e| e.to_string())?,
    };
    let args = Arguments::from_json(intent.args).map_err(|e| format!("arguments: {e}"))?;
    let mut context = RequestContext::new(session, zone, intent.effect, facts.now_unix_secs)
        .with_args(args)
        .with_budget_spent(facts.budget_spent);
    if let Some(approvers) = &facts.approved_by {
        context = context.approved_by(approvers.clone());
    }
    Ok(Request::new(*intent.principal, action, resource, context))
}
