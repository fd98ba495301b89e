//! The host a skill's `mxp.call_tool` reaches in a node: each call is a new
//! governed intent of the Call the skill serves (same principal, agent,
//! session, trace), through the gate, the audit log and the enforcer
//! ([`mxp_actors::GovernedCalls`]). The skill never sees a token.
//!
//! The runner calls the host on the blocking thread the skill runs on; the
//! host blocks that thread on the governed call, which runs on the node's
//! runtime ([`tokio::runtime::Handle::block_on`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mxp_actors::{CallFailure, GovernedCalls, ToolError};
use mxp_protocol::payload::{JsonLimits, parse_json_bounded};

use crate::host::{HostCallError, SkillHost};

/// The largest arguments a skill may pass to one tool, in bytes.
pub const MAX_HOST_ARGS_BYTES: usize = 1 << 20;
/// How deep and how large those arguments may parse.
pub const HOST_ARGS_JSON: JsonLimits = JsonLimits {
    max_depth: 32,
    max_elements: 65_536,
};
/// Host-call failures kept to explain a failed skill, at most.
const MAX_NOTES: usize = 8;

/// What one invocation's host calls went through, shared with the tool
/// that runs the skill (to explain a failure, and to stop host calls once
/// the Call is gone).
#[derive(Debug, Default)]
pub(crate) struct HostLog {
    /// Set when the Call the skill serves was dropped: no more host calls.
    pub(crate) cancelled: AtomicBool,
    /// Host calls that were denied or failed, in order, a few at most.
    pub(crate) notes: Mutex<Vec<String>>,
}

impl HostLog {
    fn note(&self, tool: &str, e: &HostCallError) {
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        if notes.len() < MAX_NOTES {
            let text: String = e.to_string().chars().take(300).collect();
            notes.push(if text.contains(tool) {
                text
            } else {
                format!("{tool}: {text}")
            });
        }
    }
}

/// A skill host over the gate.
pub(crate) struct GateHost {
    calls: Option<GovernedCalls>,
    runtime: tokio::runtime::Handle,
    log: Arc<HostLog>,
}

impl GateHost {
    pub(crate) fn new(
        calls: Option<GovernedCalls>,
        runtime: tokio::runtime::Handle,
        log: Arc<HostLog>,
    ) -> GateHost {
        GateHost {
            calls,
            runtime,
            log,
        }
    }
}

/// How a governed call's failure reaches the skill: the gate's refusals
/// (policy, approval, kill switch, a token refused, a tool the agent does
/// not have) are `-1`, the tool's own failures `-2`.
pub(crate) fn host_error(tool: &str, f: CallFailure) -> HostCallError {
    let reason = f.to_string();
    match f {
        CallFailure::Denied(_)
        | CallFailure::ApprovalRequired { .. }
        | CallFailure::Enforce(_)
        | CallFailure::Tool(ToolError::Unknown(_)) => HostCallError::Denied {
            tool: tool.to_owned(),
            reason,
        },
        _ => HostCallError::Failed {
            tool: tool.to_owned(),
            reason,
        },
    }
}

impl SkillHost for GateHost {
    fn call_tool(&mut self, tool: &str, args: &[u8]) -> Result<Vec<u8>, HostCallError> {
        let result = self.call(tool, args);
        if let Err(e) = &result {
            self.log.note(tool, e);
        }
        result
    }
}

impl GateHost {
    fn call(&self, tool: &str, args: &[u8]) -> Result<Vec<u8>, HostCallError> {
        let failed = |reason: String| HostCallError::Failed {
            tool: tool.to_owned(),
            reason,
        };
        if self.log.cancelled.load(Ordering::SeqCst) {
            return Err(HostCallError::Denied {
                tool: tool.to_owned(),
                reason: "the Call this skill serves was cancelled".into(),
            });
        }
        let Some(calls) = &self.calls else {
            return Err(HostCallError::Denied {
                tool: tool.to_owned(),
                reason: "this skill runs outside a governed Call, so it may call no tools".into(),
            });
        };
        if args.len() > MAX_HOST_ARGS_BYTES {
            return Err(failed(format!(
                "its arguments are {} bytes, over the {MAX_HOST_ARGS_BYTES}-byte limit",
                args.len()
            )));
        }
        let (args, _) = parse_json_bounded("call_tool arguments", args, HOST_ARGS_JSON)
            .map_err(|e| failed(format!("its arguments are not usable JSON: {e}")))?;
        let out = self
            .runtime
            .block_on(calls.call(tool, args))
            .map_err(|f| host_error(tool, f))?;
        serde_json::to_vec(&out).map_err(|e| failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_refusals_are_denials_and_tool_failures_are_failures() {
        let tool = |e: ToolError| CallFailure::Tool(e);
        assert!(matches!(
            host_error("fs.read", tool(ToolError::Unknown("fs.read".into()))),
            HostCallError::Denied { .. }
        ));
        assert!(matches!(
            host_error(
                "fs.read",
                tool(ToolError::Refused {
                    tool: "fs.read".into(),
                    reason: "escapes the root".into()
                })
            ),
            HostCallError::Failed { .. }
        ));
        assert!(matches!(
            host_error("x", CallFailure::Internal("audit".into())),
            HostCallError::Failed { .. }
        ));
    }

    #[test]
    fn notes_are_bounded_and_name_the_tool() {
        let log = HostLog::default();
        for _ in 0..20 {
            log.note(
                "fs.read",
                &HostCallError::Failed {
                    tool: "fs.read".into(),
                    reason: "x".repeat(1000),
                },
            );
        }
        let notes = log.notes.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(notes.len(), MAX_NOTES);
        assert!(
            notes
                .iter()
                .all(|n| n.contains("fs.read") && n.len() <= 300)
        );
    }
}
