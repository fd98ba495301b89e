//! Control Calls to the node agent: parsing, and the intent each one is.
//!
//! Pure: [`ControlRequest::parse`] turns a Call body into a request, and
//! [`ControlRequest::intent`] into the [`Intent`] the gate decides. Reading
//! methods (`node.status`, `agents.list`) are read-only intents; lifecycle
//! methods are `control` intents, which the default policy allows only to
//! operators.

use mxp_protocol::{AgentId, CallBody};
use mxp_transport::{NODE_AGENT, Principal};
use serde_json::{Value, json};

use crate::Transition;
use crate::error::CallFailure;
use crate::gate::Intent;
use crate::tool::EffectClass;

/// The control methods, for error messages.
pub const METHODS: &str = "node.status, agents.list, agent.suspend, agent.resume, agent.retire";

/// A parsed control Call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// `node.status`.
    NodeStatus,
    /// `agents.list`.
    AgentsList,
    /// `agent.suspend|resume|retire` `{"agent_id": "<uuid>"}`.
    Lifecycle {
        /// The method's transition.
        transition: Transition,
        /// The agent.
        agent: AgentId,
    },
}

impl ControlRequest {
    /// Parses a control Call's body.
    ///
    /// # Errors
    /// [`CallFailure::Unsupported`] for an unknown method,
    /// [`CallFailure::InvalidPayload`] for missing or malformed params.
    pub fn parse(body: &CallBody) -> Result<ControlRequest, CallFailure> {
        let transition = match body.method.as_str() {
            "node.status" => return Ok(ControlRequest::NodeStatus),
            "agents.list" => return Ok(ControlRequest::AgentsList),
            "agent.suspend" => Transition::Suspend,
            "agent.resume" => Transition::Resume,
            "agent.retire" => Transition::Retire,
            other => {
                return Err(CallFailure::Unsupported(format!(
                    "the node agent has no method {:?} ({METHODS})",
                    other.escape_debug().to_string()
                )));
            }
        };
        let agent = body
            .params
            .get("agent_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<AgentId>().ok())
            .ok_or_else(|| {
                CallFailure::InvalidPayload(format!(
                    "{} needs params {{\"agent_id\": \"<uuid>\"}}",
                    body.method
                ))
            })?;
        Ok(ControlRequest::Lifecycle { transition, agent })
    }

    /// The method name.
    pub fn method(&self) -> &'static str {
        match self {
            ControlRequest::NodeStatus => "node.status",
            ControlRequest::AgentsList => "agents.list",
            ControlRequest::Lifecycle { transition, .. } => match transition {
                Transition::Suspend => "agent.suspend",
                Transition::Resume => "agent.resume",
                _ => "agent.retire",
            },
        }
    }

    /// The intent the gate decides for this request from `principal`.
    pub fn intent(&self, principal: Principal, trace_id: u64, message_id: u64) -> Intent {
        let (effect, args) = match self {
            ControlRequest::NodeStatus | ControlRequest::AgentsList => {
                (EffectClass::ReadOnly, Value::Null)
            }
            ControlRequest::Lifecycle { agent, .. } => {
                (EffectClass::Control, json!({ "agent_id": agent }))
            }
        };
        Intent {
            principal,
            agent: NODE_AGENT,
            session: None,
            tool: self.method().into(),
            effect,
            args,
            trace_id,
            message_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxp_protocol::ErrorCode;

    #[test]
    fn control_calls_parse_to_requests() {
        let id = AgentId::from_bytes([3; 16]);
        assert_eq!(
            ControlRequest::parse(&CallBody::new("node.status", Value::Null)),
            Ok(ControlRequest::NodeStatus)
        );
        assert_eq!(
            ControlRequest::parse(&CallBody::new("agent.retire", json!({"agent_id": id}))),
            Ok(ControlRequest::Lifecycle {
                transition: Transition::Retire,
                agent: id
            })
        );
        let missing =
            ControlRequest::parse(&CallBody::new("agent.suspend", json!({}))).unwrap_err();
        assert_eq!(missing.code(), ErrorCode::INVALID_PAYLOAD);
        let unknown = ControlRequest::parse(&CallBody::new("rm -rf", Value::Null)).unwrap_err();
        assert_eq!(unknown.code(), ErrorCode::UNSUPPORTED);
        assert!(unknown.to_string().contains("node.status"), "{unknown}");
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;
    use crate::gate::{Decision, DefaultPolicy, Policy};
    use mxp_transport::{Bus, PeerId};

    #[test]
    fn lifecycle_control_needs_an_operator_and_reading_does_not() {
        let auth = Bus::new(1)
            .take_authority(PeerId::from_spki(b"node"), [])
            .unwrap();
        let agent = auth.agent(AgentId::from_bytes([9; 16]));
        let retire = ControlRequest::Lifecycle {
            transition: Transition::Retire,
            agent: AgentId::from_bytes([1; 16]),
        };
        match DefaultPolicy.decide(&retire.intent(agent, 1, 1)) {
            Decision::Deny { remedy, .. } => {
                assert!(remedy.unwrap().contains("node.operators"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            DefaultPolicy.decide(&ControlRequest::NodeStatus.intent(agent, 1, 1)),
            Decision::Allow
        );
        assert_eq!(
            DefaultPolicy.decide(&retire.intent(auth.node(), 1, 1)),
            Decision::Allow
        );
    }
}
