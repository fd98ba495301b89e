//! Authenticated identities: who sent a frame, as a value nobody can forge.
//!
//! A [`Principal`] is made in exactly two places:
//! * the QUIC server, from the certificate the peer proved it holds in the
//!   TLS handshake (`Principal::peer`, crate-private);
//! * the [`NodeAuthority`], which the node takes from its bus once, for its
//!   own actors (the node, its hosted agents) and to recognise operators.
//!
//! Nothing reads a principal from a payload, and [`PeerId`]'s `FromStr`
//! (which configuration needs) makes a fingerprint, not a principal. What
//! policy, tokens and the audit log key on is the description inside,
//! [`PrincipalId`], which [`Principal::id`] gives.

use std::collections::HashSet;
use std::fmt;

use mxp_protocol::{AgentId, Fingerprint, PrincipalId, PrincipalKind};

use crate::PeerId;

/// An authenticated identity. Only the TLS handshake path and the
/// [`NodeAuthority`] construct one; it is `Copy` so it travels with every
/// envelope, plan run, control Call and forward.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal {
    id: PrincipalId,
}

impl Principal {
    /// A peer, from the certificate its TLS handshake proved.
    pub(crate) fn peer(peer: PeerId) -> Principal {
        Principal {
            id: PrincipalId::Peer(peer.fingerprint()),
        }
    }

    /// What policy, tokens and the audit log key on.
    pub const fn id(&self) -> &PrincipalId {
        &self.id
    }

    /// Its kind.
    pub const fn kind(&self) -> PrincipalKind {
        self.id.kind()
    }

    /// The certificate fingerprint behind it (for an agent, its node's).
    pub const fn fingerprint(&self) -> &Fingerprint {
        self.id.fingerprint()
    }

    /// The peer behind it, if it is a remote peer or an operator (for a
    /// relayed caller, the forwarder is the peer on the connection).
    pub fn remote_peer(&self) -> Option<PeerId> {
        match self.id {
            PrincipalId::Peer(f) | PrincipalId::Operator(f) => Some(PeerId::from(f)),
            PrincipalId::Relayed { via, .. } => Some(PeerId::from(via)),
            _ => None,
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({:?})", self.id)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}

/// The node's power to name itself, its agents and its operators. Taken
/// once from a [`crate::Bus`] ([`crate::Bus::take_authority`]); not `Clone`
/// (share it behind an `Arc`).
#[derive(Debug)]
pub struct NodeAuthority {
    node: Fingerprint,
    operators: HashSet<Fingerprint>,
    /// The pinned peers, when the node pins (`node.trusted_peers`): whose
    /// word for a forwarded caller it takes, and which callers it accepts.
    trusted: Option<HashSet<Fingerprint>>,
}

/// A forwarded caller this node does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("caller {caller} (forwarded by {via}) is not among this node's trusted peers")]
pub struct RelayRefused {
    /// The caller the forwarder named (short form).
    pub caller: String,
    /// The forwarder (short form).
    pub via: String,
}

impl NodeAuthority {
    pub(crate) fn new(node: PeerId, operators: impl IntoIterator<Item = PeerId>) -> NodeAuthority {
        NodeAuthority {
            node: node.fingerprint(),
            operators: operators.into_iter().map(|p| p.fingerprint()).collect(),
            trusted: None,
        }
    }

    /// The same authority, for a node that pins `trusted` peers (its
    /// `trusted_peers`); `None` for a node that accepts any peer.
    #[must_use]
    pub fn with_trusted(
        mut self,
        trusted: Option<impl IntoIterator<Item = PeerId>>,
    ) -> NodeAuthority {
        self.trusted = trusted.map(|t| t.into_iter().map(|p| p.fingerprint()).collect());
        self
    }

    /// Who a Call is from when `sender` forwarded it naming `caller`.
    ///
    /// A node that pins its peers takes a pinned peer's word: the principal
    /// is then [`PrincipalId::Relayed`] (never an operator), and the caller
    /// must be pinned too, so `trusted_peers` holds end to end. A node that
    /// accepts any peer trusts no forwarder's word: the Call stays the
    /// sender's. A caller named by the node itself or its agents is ignored.
    ///
    /// # Errors
    /// [`RelayRefused`] when a pinning node's trusted forwarder names a
    /// caller it does not pin.
    pub fn relay(&self, sender: Principal, caller: Fingerprint) -> Result<Principal, RelayRefused> {
        let (Some(trusted), PrincipalId::Peer(via) | PrincipalId::Operator(via)) =
            (&self.trusted, sender.id)
        else {
            return Ok(sender);
        };
        if !trusted.contains(&via) {
            return Ok(sender);
        }
        if !trusted.contains(&caller) {
            return Err(RelayRefused {
                caller: caller.short(),
                via: via.short(),
            });
        }
        Ok(Principal {
            id: PrincipalId::Relayed { caller, via },
        })
    }

    /// The node itself (its own actors: the node agent, mesh rounds).
    pub fn node(&self) -> Principal {
        Principal {
            id: PrincipalId::Node(self.node),
        }
    }

    /// An agent this node hosts.
    pub fn agent(&self, agent: AgentId) -> Principal {
        Principal {
            id: PrincipalId::Agent {
                agent,
                node: self.node,
            },
        }
    }

    /// `p` with its role on this node: a peer that the configuration names
    /// as an operator becomes [`PrincipalKind::Operator`]; anything else is
    /// returned as it is.
    pub fn resolve(&self, p: Principal) -> Principal {
        match p.id {
            PrincipalId::Peer(f) if self.operators.contains(&f) => Principal {
                id: PrincipalId::Operator(f),
            },
            _ => p,
        }
    }

    /// Whether any operator is configured.
    pub fn has_operators(&self) -> bool {
        !self.operators.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinning_node_takes_a_trusted_forwarders_word_for_pinned_callers_only() {
        let (a, s, t) = (
            PeerId::from_spki(b"forwarder"),
            PeerId::from_spki(b"stranger"),
            PeerId::from_spki(b"trusted client"),
        );
        let pinning = NodeAuthority::new(PeerId::from_spki(b"node"), []).with_trusted(Some([a, t]));
        let relayed = pinning.relay(Principal::peer(a), t.fingerprint()).unwrap();
        assert_eq!(
            *relayed.id(),
            PrincipalId::Relayed {
                caller: t.fingerprint(),
                via: a.fingerprint()
            }
        );
        assert!(pinning.relay(Principal::peer(a), s.fingerprint()).is_err());
        let open =
            NodeAuthority::new(PeerId::from_spki(b"node"), []).with_trusted(None::<Vec<PeerId>>);
        assert_eq!(
            open.relay(Principal::peer(a), s.fingerprint()).unwrap(),
            Principal::peer(a),
            "an open node trusts no forwarder's word"
        );
        assert_eq!(
            open.relay(open.node(), s.fingerprint()).unwrap(),
            open.node()
        );
    }

    #[test]
    fn operators_are_recognised_and_nothing_else_changes() {
        let op = PeerId::from_spki(b"operator");
        let stranger = PeerId::from_spki(b"stranger");
        let auth = NodeAuthority::new(PeerId::from_spki(b"node"), [op]);
        assert_eq!(
            auth.resolve(Principal::peer(op)).kind(),
            PrincipalKind::Operator
        );
        assert_eq!(
            auth.resolve(Principal::peer(stranger)).kind(),
            PrincipalKind::Peer
        );
        assert_eq!(auth.resolve(auth.node()).kind(), PrincipalKind::Node);
        assert_eq!(
            auth.agent(AgentId::from_bytes([1; 16])).kind(),
            PrincipalKind::Agent
        );
    }
}
