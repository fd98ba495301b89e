//! What an intent does to the world: the class policy, the gate and the
//! kill switch key on. Shared by the node's tool registry and the pure
//! governance logic, so both name effects the same way.

use std::fmt;

/// What running a tool (or a control method, or a forward) can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EffectClass {
    /// `read_only`: answers from what the node already holds; changes nothing.
    ReadOnly,
    /// `local_write`: changes state on this node only (files under a jail,
    /// the agent's memory).
    LocalWrite,
    /// `external_write`: changes something outside the node (HTTP, a shell,
    /// another system).
    ExternalWrite,
    /// `control`: changes the node's own operation (agent lifecycle, policy,
    /// kill switch).
    Control,
    /// `forward`: sends the Call on to another node of the mesh.
    Forward,
}

impl EffectClass {
    /// The lower-case name (what policies compare `context.effect` with):
    /// `read_only`, `local_write`, `external_write`, `control`, `forward`.
    pub const fn name(self) -> &'static str {
        match self {
            EffectClass::ReadOnly => "read_only",
            EffectClass::LocalWrite => "local_write",
            EffectClass::ExternalWrite => "external_write",
            EffectClass::Control => "control",
            EffectClass::Forward => "forward",
        }
    }
}

impl fmt::Display for EffectClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
