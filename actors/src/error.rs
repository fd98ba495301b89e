//! Why a Call, a control request or a step failed, as typed values that
//! cross actor boundaries, and the one place each maps to its wire code
//! ([`CallFailure::code`]).

use mxp_protocol::{AgentId, DecodeError, ErrorCode, SessionId};
use mxp_transport::Reply;

use crate::gate::{Denial, EnforceError, Pending};
use crate::lifecycle::{InvalidTransition, LifecycleState};
use crate::tool::ToolError;

/// Why a Call was not answered with a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallFailure {
    /// The Call's body does not match its schema.
    #[error("{0}")]
    InvalidPayload(String),
    /// The payload did not decode: answered with the decode class
    /// (`class` in the Error body), as docs/PROTOCOL.md promises.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No plan rule (or control method) handles the method.
    #[error("{0}")]
    Unsupported(String),
    /// The gate refused the intent.
    #[error("{0}")]
    Denied(Denial),
    /// The policy asks for an approval that was not given within
    /// `governance.approval_wait_ms`; it stays pending, and the same Call
    /// asked again once it is approved runs.
    #[error("{tool} needs approval {} by {} (`mxp approvals approve {}`); ask again once it is approved", pending.id, pending.requirements.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and "), pending.id)]
    ApprovalRequired {
        /// The tool waiting.
        tool: String,
        /// The pending approval.
        pending: Pending,
    },
    /// The enforcing component refused the intent's capability token.
    #[error(transparent)]
    Enforce(EnforceError),
    /// The Call names a session that another principal owns.
    #[error("session {0} belongs to another principal")]
    SessionNotYours(SessionId),
    /// No agent with this id is known here or on the mesh.
    #[error("no agent {0} on this node or the mesh")]
    UnknownAgent(AgentId),
    /// The caller is not one this node accepts (e.g. a forwarded caller
    /// outside `trusted_peers`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The agent runs on another node, which alone controls it.
    #[error(
        "agent {agent} runs on node {node}; send control Calls to that node's agent (the nil id at {node})"
    )]
    NotHere {
        /// The agent.
        agent: AgentId,
        /// Its node's URL.
        node: String,
    },
    /// The agent is known but offline (no heartbeat within its TTL).
    #[error("agent {0} is offline: its node has not been heard from within the TTL")]
    AgentOffline(AgentId),
    /// The agent does not accept Calls now (suspended, starting).
    #[error("agent is {0}")]
    NotAccepting(LifecycleState),
    /// A part of the agent is restarting; the same request may succeed later.
    #[error("{0} is restarting; try again")]
    Restarting(&'static str),
    /// The agent is retiring or terminated.
    #[error("agent is {0}")]
    Retired(LifecycleState),
    /// The agent retired while the Call was in flight, and the drain
    /// deadline passed before it finished.
    #[error("the agent retired before this Call finished (supervision.drain_timeout_ms passed)")]
    Drained,
    /// A lifecycle transition the agent's state does not allow.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The node hosting the agent could not be reached.
    #[error("node {node} unreachable: {reason}")]
    Unreachable {
        /// The node's URL.
        node: String,
        /// Why.
        reason: String,
    },
    /// The answer did not come in time.
    #[error("{0}")]
    Timeout(String),
    /// Too much work in flight.
    #[error("{0}")]
    Overloaded(String),
    /// A tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// Something inside the node failed; not the caller's doing.
    #[error("{0}")]
    Internal(String),
}

/// A step the audit log could not record does not go on: the node failed,
/// not the caller (answered as [`CallFailure::Internal`], naming why).
impl From<crate::audit::AuditError> for CallFailure {
    fn from(e: crate::audit::AuditError) -> Self {
        CallFailure::Internal(e.to_string())
    }
}

impl CallFailure {
    /// The wire code: the only place a failure becomes an [`ErrorCode`].
    pub fn code(&self) -> ErrorCode {
        match self {
            CallFailure::InvalidPayload(_) => ErrorCode::INVALID_PAYLOAD,
            CallFailure::Decode(e) => ErrorCode::for_decode_error(e),
            CallFailure::Unauthenticated(_) => ErrorCode::UNAUTHENTICATED,
            CallFailure::Unsupported(_) => ErrorCode::UNSUPPORTED,
            CallFailure::Denied(_) | CallFailure::SessionNotYours(_) | CallFailure::Enforce(_) => {
                ErrorCode::DENIED
            }
            CallFailure::ApprovalRequired { .. } => ErrorCode::APPROVAL_REQUIRED,
            CallFailure::UnknownAgent(_) | CallFailure::NotHere { .. } => ErrorCode::UNKNOWN_AGENT,
            CallFailure::AgentOffline(_)
            | CallFailure::NotAccepting(_)
            | CallFailure::Restarting(_) => ErrorCode::AGENT_UNAVAILABLE,
            CallFailure::Retired(_) | CallFailure::Drained => ErrorCode::AGENT_RETIRED,
            CallFailure::InvalidTransition(_) => ErrorCode::INVALID_TRANSITION,
            CallFailure::Unreachable { .. } => ErrorCode::UNREACHABLE,
            CallFailure::Timeout(_) => ErrorCode::TIMEOUT,
            CallFailure::Overloaded(_) => ErrorCode::OVERLOADED,
            CallFailure::Tool(e) => match e {
                ToolError::Unknown(_) => ErrorCode::UNSUPPORTED,
                ToolError::InvalidArguments { .. } | ToolError::Malformed { .. } => {
                    ErrorCode::INVALID_PAYLOAD
                }
                ToolError::Refused { .. } => ErrorCode::DENIED,
                _ => ErrorCode::INTERNAL,
            },
            CallFailure::Internal(_) => ErrorCode::INTERNAL,
        }
    }

    /// Why an agent in `state` refuses a Call; `None` when it accepts.
    pub fn refusal_in(state: LifecycleState) -> Option<CallFailure> {
        match state {
            LifecycleState::Active => None,
            LifecycleState::Init | LifecycleState::Ready | LifecycleState::Suspended => {
                Some(CallFailure::NotAccepting(state))
            }
            LifecycleState::Retiring | LifecycleState::Terminated => {
                Some(CallFailure::Retired(state))
            }
        }
    }

    /// Answers `reply` with this failure as an Error frame and counts it.
    pub fn answer(self, reply: Reply) {
        let code = self.code();
        metrics::counter!("mxp_calls_total", "outcome" => code.name()).increment(1);
        let _ = match &self {
            CallFailure::Decode(e) => reply.decode_error(e),
            CallFailure::Denied(d) => reply.error_with_details(code, self.to_string(), d.details()),
            CallFailure::Enforce(EnforceError::Token { code: why, .. }) => reply
                .error_with_details(
                    code,
                    self.to_string(),
                    serde_json::json!({ "reasons": [format!("token_{why}")] }),
                ),
            CallFailure::Enforce(EnforceError::KillSwitch(d)) => {
                reply.error_with_details(code, self.to_string(), d.details())
            }
            CallFailure::ApprovalRequired { pending, .. } => reply.error_with_details(
                code,
                self.to_string(),
                serde_json::json!({
                    "approval": pending.id.to_string(),
                    "reasons": pending.reasons,
                    "expires_unix_ms": pending.expires_unix_ms,
                    "remedy": crate::gate::remedy_json(&crate::gate::Remedy::Approval {
                        requirements: pending.requirements.clone(),
                    }),
                }),
            ),
            _ => reply.error(code, self.to_string()),
        };
    }
}

/// A node's or agent's settings that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SettingsError {
    /// The setting, e.g. `supervision.batch`.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl SettingsError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> SettingsError {
        SettingsError {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Transition;

    #[test]
    fn each_failure_has_its_documented_code() {
        let id = AgentId::from_bytes([1; 16]);
        let cases = [
            (
                CallFailure::Restarting("kernel"),
                ErrorCode::AGENT_UNAVAILABLE,
            ),
            (CallFailure::AgentOffline(id), ErrorCode::AGENT_UNAVAILABLE),
            (
                CallFailure::Unreachable {
                    node: "mxp://x:1".into(),
                    reason: "refused".into(),
                },
                ErrorCode::UNREACHABLE,
            ),
            (
                CallFailure::InvalidTransition(InvalidTransition {
                    from: LifecycleState::Active,
                    transition: Transition::Resume,
                }),
                ErrorCode::INVALID_TRANSITION,
            ),
            (
                CallFailure::Retired(LifecycleState::Retiring),
                ErrorCode::AGENT_RETIRED,
            ),
            (CallFailure::UnknownAgent(id), ErrorCode::UNKNOWN_AGENT),
        ];
        for (failure, code) in cases {
            assert_eq!(failure.code(), code, "{failure}");
        }
        assert!(CallFailure::Restarting("kernel").code().retriable());
        assert!(CallFailure::refusal_in(LifecycleState::Active).is_none());
    }
}
