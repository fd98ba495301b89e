//! The one door out of the sandbox: the host trait a skill's tool calls go through.

use thiserror::Error;

/// What a skill's `mxp.call_tool` reaches.
///
/// The runner has already checked the tool is in the skill's manifest and that
/// the skill is within its host-call budget before it calls this. The
/// implementation (the coordinator's gate wiring) turns the call into a new
/// governed intent: the skill never holds a capability token.
///
/// The trait is synchronous: the runner calls it on the thread running the
/// skill. From async code run [`crate::SkillRunner::invoke`] on a blocking
/// thread (`tokio::task::spawn_blocking`) or inside `block_in_place`, and
/// block on the gate there.
pub trait SkillHost: Send {
    /// Run `tool` with the raw argument bytes the skill passed.
    ///
    /// # Errors
    ///
    /// [`HostCallError`] when the gate denies the call or the tool fails; the
    /// skill receives the matching negative code (see [`crate::abi`]).
    fn call_tool(&mut self, tool: &str, args: &[u8]) -> Result<Vec<u8>, HostCallError>;
}

/// Why a host call gave the skill no result.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostCallError {
    /// Governance refused the call (policy, budget, approval, kill switch).
    #[error("the call to tool {tool} was denied: {reason}")]
    Denied {
        /// The tool asked for.
        tool: String,
        /// Why, as the gate put it.
        reason: String,
    },
    /// The tool ran and failed.
    #[error("tool {tool} failed: {reason}")]
    Failed {
        /// The tool asked for.
        tool: String,
        /// The tool's error.
        reason: String,
    },
}

impl HostCallError {
    /// The code `mxp.call_tool` returns to the skill for this error.
    #[must_use]
    pub fn code(&self) -> i64 {
        match self {
            Self::Denied { .. } => crate::abi::CODE_DENIED,
            Self::Failed { .. } => crate::abi::CODE_FAILED,
        }
    }
}

/// A host that refuses every call: the placeholder while a real host is lent
/// to a running skill, and a safe default for skills that need no tools.
#[derive(Debug, Default, Clone, Copy)]
pub struct DenyAll;

impl SkillHost for DenyAll {
    fn call_tool(&mut self, tool: &str, _args: &[u8]) -> Result<Vec<u8>, HostCallError> {
        Err(HostCallError::Denied {
            tool: tool.to_owned(),
            reason: "this node gives skills no tools".to_owned(),
        })
    }
}
