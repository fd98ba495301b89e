//! The one decision point every effect passes.
//!
//! Every plan step, hook reply, node control method and forward becomes an
//! [`Intent`] (who asked, for which agent, in which session, which tool with
//! which effect class and arguments). The [`Gate`] asks its [`Policy`] and
//! either denies, with a reason, or returns an [`Allowed`]: the only value a
//! tool's `execute`, a hook reply, a control action or a forward accepts.
//! `Allowed` has no public constructor; nothing acts without passing here.
//!
//! This policy ([`DefaultPolicy`]) allows read-only tools, read-only
//! control and forwarding, lets only operators change the node, and denies
//! every other effect. The governance crate's Cedar policy replaces it.

use std::sync::Arc;

use mxp_protocol::{AgentId, PrincipalKind, SessionId};
use mxp_transport::Principal;
use serde_json::Value;

use crate::tool::EffectClass;

/// The pseudo-tool a hook's reply is gated as (read-only).
pub const HOOK_REPLY: &str = "hook.reply";

/// Something a Call wants done, before it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// Who asked (authenticated; resolved to an operator where configured).
    pub principal: Principal,
    /// The agent acting (the node agent's nil id for control and forwards).
    pub agent: AgentId,
    /// The session, when the Call runs in one.
    pub session: Option<SessionId>,
    /// The tool, control method (`agent.retire`) or pseudo-tool
    /// (`hook.reply`, `mesh.forward`).
    pub tool: String,
    /// What it does to the world.
    pub effect: EffectClass,
    /// Its arguments.
    pub args: Value,
    /// The Call's trace id.
    pub trace_id: u64,
    /// The Call's message id.
    pub message_id: u64,
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with why and, where there is one, what would change it.
    Deny {
        /// Why.
        reason: String,
        /// What the caller can do about it.
        remedy: Option<String>,
    },
}

/// Decides intents. Pure and synchronous: it must not block.
pub trait Policy: Send + Sync + 'static {
    /// The decision for `intent`.
    fn decide(&self, intent: &Intent) -> Decision;
}

/// Why the gate refused an intent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{tool} ({effect}) denied: {reason}{}", remedy.as_ref().map(|r| format!("; {r}")).unwrap_or_default())]
pub struct Denial {
    /// The tool or method refused.
    pub tool: String,
    /// Its effect class.
    pub effect: EffectClass,
    /// Why.
    pub reason: String,
    /// What would change the answer.
    pub remedy: Option<String>,
}

/// Proof that the gate allowed this exact intent. Only [`Gate::check`]
/// makes one.
#[derive(Debug)]
pub struct Allowed {
    intent: Intent,
}

impl Allowed {
    /// The intent that was allowed: a tool acts on these arguments only.
    pub fn intent(&self) -> &Intent {
        &self.intent
    }

    /// The allowed intent, to act on.
    pub fn into_intent(self) -> Intent {
        self.intent
    }
}

/// The decision point: a policy, and the only maker of [`Allowed`].
#[derive(Clone)]
pub struct Gate {
    policy: Arc<dyn Policy>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new(Arc::new(DefaultPolicy))
    }
}

impl Gate {
    /// A gate deciding with `policy`.
    pub fn new(policy: Arc<dyn Policy>) -> Gate {
        Gate { policy }
    }

    /// Decides `intent`: the proof to act on it, or why not.
    ///
    /// # Errors
    /// [`Denial`] when the policy refuses.
    pub fn check(&self, intent: Intent) -> Result<Allowed, Denial> {
        let decision = self.policy.decide(&intent);
        let label = match decision {
            Decision::Allow => "allow",
            Decision::Deny { .. } => "deny",
        };
        metrics::counter!("mxp_gate_decisions_total", "decision" => label, "effect" => intent.effect.name())
            .increment(1);
        match decision {
            Decision::Allow => Ok(Allowed { intent }),
            Decision::Deny { reason, remedy } => Err(Denial {
                tool: intent.tool,
                effect: intent.effect,
                reason,
                remedy,
            }),
        }
    }
}

/// The policy until governance lands: read-only effects and forwarding are
/// allowed; control needs an operator; every other effect is denied.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

/// How to make this machine's CLI an operator, for denial messages.
pub const OPERATOR_REMEDY: &str = "add the caller's fingerprint to node.operators (`mxp identity` prints the setting to paste) and restart the node";

impl Policy for DefaultPolicy {
    fn decide(&self, intent: &Intent) -> Decision {
        match intent.effect {
            EffectClass::ReadOnly | EffectClass::Forward => Decision::Allow,
            EffectClass::Control => match intent.principal.kind() {
                PrincipalKind::Operator | PrincipalKind::Node => Decision::Allow,
                _ => Decision::Deny {
                    reason: format!("{} is not an operator of this node", intent.principal),
                    remedy: Some(OPERATOR_REMEDY.into()),
                },
            },
            other => Decision::Deny {
                reason: format!("no policy allows {other} effects yet (deny by default)"),
                remedy: None,
            },
        }
    }
}
