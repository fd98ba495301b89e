//! Control Calls to the node agent: parsing, and the intent each one is.
//!
//! Pure: [`ControlRequest::parse`] turns a Call body into a request, and
//! [`ControlRequest::intent`] into the [`Intent`] the gate decides. Reading
//! methods (`node.status`, `agents.list`) are read-only intents; lifecycle
//! methods are `control` intents, which the default policy allows only to
//! operators.

use mxp_governance::approval::ApprovalId;
use mxp_protocol::{AgentId, CallBody};
use mxp_transport::{NODE_AGENT, Principal};
use serde_json::{Value, json};

use crate::Transition;
use crate::error::CallFailure;
use crate::gate::Intent;
use crate::tool::EffectClass;

/// The control methods, for error messages.
pub const METHODS: &str = "node.status, agents.list, agent.suspend, agent.resume, agent.retire, policy.reload, killswitch.set, approvals.list, approvals.decide, audit.read, audit.replay, policy.what_if, audit.subscribe, audit.checkpoint, audit.cosign";

/// A parsed control Call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlRequest {
    /// `audit.subscribe` `{"from": seq, "checkpoint": size}`: follow the
    /// log live from `from` (docs/AUDIT.md).
    AuditSubscribe {
        /// The first sequence number to send.
        from: u64,
        /// The size of the last checkpoint the subscriber accepted.
        checkpoint: Option<u64>,
    },
    /// `audit.checkpoint` `{"size": n, "from_size": m}`: the latest signed
    /// checkpoint (or the one of `size`), with the consistency proof from
    /// `from_size`.
    AuditCheckpoint {
        /// The checkpoint's size (`None`: the latest).
        size: Option<u64>,
        /// The size the proof starts from.
        from_size: Option<u64>,
    },
    /// `audit.cosign` `{"note": "<cosigned checkpoint>"}`: a witness's
    /// cosignature of a checkpoint this node signed.
    AuditCosign {
        /// The note with the witness's cosignature line(s).
        note: String,
    },
    /// `policy.reload`: load the node's policy files again and swap them in.
    PolicyReload,
    /// `killswitch.set` `{"on": bool, "mesh": bool}`.
    KillSwitch {
        /// On or off.
        on: bool,
        /// Also every reachable node of the mesh.
        mesh: bool,
    },
    /// `approvals.list` `{}`, or `{"id": "ap-…"}` for one.
    ApprovalsList {
        /// One approval, or all.
        id: Option<ApprovalId>,
    },
    /// `audit.read` `{"from": seq, "limit": n}`, `{"verify": true}` or
    /// `{"prove": seq}`.
    AuditRead {
        /// The first sequence number.
        from: u64,
        /// Records at most.
        limit: usize,
        /// Verify the whole chain instead of reading.
        verify: bool,
        /// The inclusion proof of this record instead of reading.
        prove: Option<u64>,
    },
    /// `audit.replay` `{"session": "...", "policies": [...]?}` (its params
    /// are parsed by `node::replay`).
    AuditReplay,
    /// `policy.what_if` `{"policies": [...], "since_ms": n}` (its params
    /// are parsed by `node::replay`).
    PolicyWhatIf,
    /// `approvals.decide` `{"id": "ap-…", "approve": bool}`.
    ApprovalsDecide {
        /// The approval.
        id: ApprovalId,
        /// Approve, or deny.
        approve: bool,
    },
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
        let invalid = |what: &str| {
            CallFailure::InvalidPayload(format!("{} needs params {what}", body.method))
        };
        let flag = |name: &str| -> Result<Option<bool>, CallFailure> {
            match body.params.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(_) => Err(CallFailure::InvalidPayload(format!(
                    "{}: {name} must be true or false",
                    body.method
                ))),
            }
        };
        let approval_id = || -> Result<Option<ApprovalId>, CallFailure> {
            match body.params.get("id") {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => s
                    .parse::<ApprovalId>()
                    .map(Some)
                    .map_err(|e| CallFailure::InvalidPayload(format!("{}: id: {e}", body.method))),
                Some(_) => Err(CallFailure::InvalidPayload(format!(
                    "{}: id must be a string like \"ap-<32 hex digits>\"",
                    body.method
                ))),
            }
        };
        let transition = match body.method.as_str() {
            "node.status" => return Ok(ControlRequest::NodeStatus),
            "agents.list" => return Ok(ControlRequest::AgentsList),
            "policy.reload" => return Ok(ControlRequest::PolicyReload),
            "killswitch.set" => {
                let on =
                    flag("on")?.ok_or_else(|| invalid("{\"on\": true|false, \"mesh\": false}"))?;
                let mesh = flag("mesh")?.unwrap_or(false);
                return Ok(ControlRequest::KillSwitch { on, mesh });
            }
            "approvals.list" => {
                return Ok(ControlRequest::ApprovalsList { id: approval_id()? });
            }
            "audit.read" => {
                let from = match body.params.get("from") {
                    None | Some(Value::Null) => 0,
                    Some(v) => v.as_u64().ok_or_else(|| {
                        invalid("{\"from\": <sequence number>, \"limit\": 1..1000}")
                    })?,
                };
                let limit = match body.params.get("limit") {
                    None | Some(Value::Null) => 100,
                    Some(v) => v
                        .as_u64()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            invalid("{\"from\": <sequence number>, \"limit\": 1..1000}")
                        })? as usize,
                };
                let verify = flag("verify")?.unwrap_or(false);
                let prove = match body.params.get("prove") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        v.as_u64()
                            .ok_or_else(|| invalid("{\"prove\": <sequence number>}"))?,
                    ),
                };
                return Ok(ControlRequest::AuditRead {
                    from,
                    limit,
                    verify,
                    prove,
                });
            }
            "audit.replay" => return Ok(ControlRequest::AuditReplay),
            "policy.what_if" => return Ok(ControlRequest::PolicyWhatIf),
            "audit.subscribe" => {
                let number = |name: &str| -> Result<Option<u64>, CallFailure> {
                    match body.params.get(name) {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                            invalid("{\"from\": <sequence number>, \"checkpoint\": <tree size>}")
                        }),
                    }
                };
                return Ok(ControlRequest::AuditSubscribe {
                    from: number("from")?.unwrap_or(0),
                    checkpoint: number("checkpoint")?,
                });
            }
            "audit.checkpoint" => {
                let size = |name: &str| -> Result<Option<u64>, CallFailure> {
                    match body.params.get(name) {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                            invalid("{\"size\": <tree size>, \"from_size\": <tree size>}")
                        }),
                    }
                };
                return Ok(ControlRequest::AuditCheckpoint {
                    size: size("size")?,
                    from_size: size("from_size")?,
                });
            }
            "audit.cosign" => {
                let note = body
                    .params
                    .get("note")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid("{\"note\": \"<checkpoint note with cosignature lines>\"}")
                    })?;
                return Ok(ControlRequest::AuditCosign {
                    note: note.to_owned(),
                });
            }
            "approvals.decide" => {
                let id = approval_id()?
                    .ok_or_else(|| invalid("{\"id\": \"ap-…\", \"approve\": true|false}"))?;
                let approve = flag("approve")?
                    .ok_or_else(|| invalid("{\"id\": \"ap-…\", \"approve\": true|false}"))?;
                return Ok(ControlRequest::ApprovalsDecide { id, approve });
            }
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
            ControlRequest::PolicyReload => "policy.reload",
            ControlRequest::KillSwitch { .. } => "killswitch.set",
            ControlRequest::ApprovalsList { .. } => "approvals.list",
            ControlRequest::AuditRead { .. } => "audit.read",
            ControlRequest::AuditReplay => "audit.replay",
            ControlRequest::PolicyWhatIf => "policy.what_if",
            ControlRequest::AuditSubscribe { .. } => "audit.subscribe",
            ControlRequest::AuditCheckpoint { .. } => "audit.checkpoint",
            ControlRequest::AuditCosign { .. } => "audit.cosign",
            ControlRequest::ApprovalsDecide { .. } => "approvals.decide",
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
            ControlRequest::NodeStatus
            | ControlRequest::AgentsList
            | ControlRequest::AuditReplay
            | ControlRequest::PolicyWhatIf => (EffectClass::ReadOnly, Value::Null),
            ControlRequest::Lifecycle { agent, .. } => {
                (EffectClass::Control, json!({ "agent_id": agent }))
            }
            ControlRequest::PolicyReload => (EffectClass::Control, Value::Null),
            ControlRequest::KillSwitch { on, mesh } => {
                (EffectClass::Control, json!({ "on": on, "mesh": mesh }))
            }
            ControlRequest::ApprovalsList { id } => (
                EffectClass::ReadOnly,
                json!({ "id": id.map_or_else(|| "*".to_owned(), |i| i.to_string()) }),
            ),
            ControlRequest::AuditRead {
                from,
                limit,
                verify,
                prove,
            } => (
                EffectClass::ReadOnly,
                json!({ "from": from, "limit": limit, "verify": verify, "prove": prove }),
            ),
            ControlRequest::AuditSubscribe { from, checkpoint } => (
                EffectClass::ReadOnly,
                json!({ "from": from, "checkpoint": checkpoint }),
            ),
            ControlRequest::AuditCheckpoint { size, from_size } => (
                EffectClass::ReadOnly,
                json!({ "size": size, "from_size": from_size }),
            ),
            // Writes a cosignature to the node's store: a local write.
            ControlRequest::AuditCosign { note } => {
                (EffectClass::LocalWrite, json!({ "size": note.len() }))
            }
            ControlRequest::ApprovalsDecide { id, approve } => (
                EffectClass::Control,
                json!({ "id": id.to_string(), "approve": approve }),
            ),
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
    use crate::gate::{CedarPolicy, Decision, Facts, Policy};
    use mxp_transport::{Bus, PeerId};

    fn facts() -> Facts {
        Facts {
            node: mxp_protocol::Fingerprint([5; 32]),
            now_unix_secs: 1_700_000_000,
            budget_spent: 0,
            approved_by: None,
        }
    }

    #[test]
    fn lifecycle_control_needs_an_operator_and_reading_does_not() {
        let auth = Bus::new(1)
            .take_authority(PeerId::from_spki(b"node"), [])
            .unwrap();
        let agent = auth.agent(AgentId::from_bytes([9; 16]));
        let policy = CedarPolicy::default_set();
        let retire = ControlRequest::Lifecycle {
            transition: Transition::Retire,
            agent: AgentId::from_bytes([1; 16]),
        };
        let d = policy.decide(&retire.intent(agent, 1, 1), &facts());
        assert_eq!(d.decision, Decision::Deny, "{d:?}");
        let read = policy.decide(&ControlRequest::NodeStatus.intent(agent, 1, 1), &facts());
        assert_eq!(read.decision, Decision::Allow, "{read:?}");
        // The node itself has an operator's rights (peers configured as
        // operators are tested over QUIC, where such principals exist).
        let op = auth.node();
        for request in [
            retire,
            ControlRequest::PolicyReload,
            ControlRequest::KillSwitch {
                on: true,
                mesh: false,
            },
            ControlRequest::ApprovalsList { id: None },
        ] {
            let d = policy.decide(&request.intent(op, 1, 1), &facts());
            assert_eq!(d.decision, Decision::Allow, "{request:?}: {d:?}");
            let d = policy.decide(&request.intent(agent, 1, 1), &facts());
            assert_eq!(d.decision, Decision::Deny, "{request:?}: {d:?}");
        }
    }

    #[test]
    fn governance_methods_parse_and_name_bad_params() {
        let ks = ControlRequest::parse(&CallBody::new("killswitch.set", json!({"on": true})));
        assert_eq!(
            ks,
            Ok(ControlRequest::KillSwitch {
                on: true,
                mesh: false
            })
        );
        let bad = ControlRequest::parse(&CallBody::new("killswitch.set", json!({"on": "yes"})))
            .unwrap_err();
        assert!(
            bad.to_string().contains("on must be true or false"),
            "{bad}"
        );
        let bad = ControlRequest::parse(&CallBody::new(
            "approvals.decide",
            json!({"id": "nope", "approve": true}),
        ))
        .unwrap_err();
        assert!(bad.to_string().contains("id"), "{bad}");
        let missing =
            ControlRequest::parse(&CallBody::new("approvals.decide", json!({}))).unwrap_err();
        assert!(missing.to_string().contains("needs params"), "{missing}");
    }
}
