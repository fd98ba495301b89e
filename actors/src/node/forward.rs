//! Forwarding a Call for an agent this node does not host: the decision is
//! pure ([`route`]), and the forward itself is an intent (`mesh.forward`)
//! the gate decides before the frame leaves.

use mxp_protocol::AgentId;
use mxp_transport::{MxpUrl, NODE_AGENT, PeerId, Principal};
use serde_json::json;

use crate::error::CallFailure;
use crate::gate::Intent;
use crate::registry::{Owner, RegistryTable};
use crate::tool::EffectClass;

/// The pseudo-tool a forward is gated as.
pub const FORWARD: &str = "mesh.forward";

/// Where a Call for `target` from `from` goes.
///
/// # Errors
/// * [`CallFailure::UnknownAgent`]: no record of the agent, or it is one of
///   this node's (retired) ids;
/// * [`CallFailure::NotHere`]: the Call came from a *mesh node* (a peer that
///   has agents registered here) and is for an agent of another node:
///   forwards are one hop, so a node never forwards what a node forwarded;
///   the answer names the agent's node;
/// * [`CallFailure::AgentOffline`]: the agent is known but its node has not
///   been heard from within the TTL.
pub fn route(
    table: &RegistryTable,
    target: &AgentId,
    from: &Principal,
) -> Result<(MxpUrl, PeerId), CallFailure> {
    if let Some(peer) = from.remote_peer()
        && table.is_node(&peer)
    {
        // One hop: a mesh node's Call is never forwarded again. Say where the
        // agent is, so the node can call it there itself.
        return Err(match table.get(target) {
            Some(r) if r.owner != Owner::Local => CallFailure::NotHere {
                agent: *target,
                node: r.node.to_string(),
            },
            _ => CallFailure::UnknownAgent(*target),
        });
    }
    match table.get(target) {
        Some(r) if r.owner == Owner::Local => Err(CallFailure::UnknownAgent(*target)),
        Some(r) if r.online => table
            .route(target)
            .map(|(url, owner)| (url.clone(), owner))
            .ok_or(CallFailure::UnknownAgent(*target)),
        Some(_) => Err(CallFailure::AgentOffline(*target)),
        None => Err(CallFailure::UnknownAgent(*target)),
    }
}

/// The intent of forwarding a Call for `target` to `node`.
pub fn intent(
    principal: Principal,
    target: &AgentId,
    node: &MxpUrl,
    trace_id: u64,
    message_id: u64,
) -> Intent {
    Intent {
        principal,
        agent: NODE_AGENT,
        session: None,
        tool: FORWARD.into(),
        effect: EffectClass::Forward,
        args: json!({ "target": target, "node": node.to_string() }),
        trace_id,
        message_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;
    use std::time::{Duration, Instant};

    use mxp_protocol::{AgentRegister, ErrorCode};
    use mxp_transport::Bus;

    #[test]
    fn routes_to_online_agents_only_and_names_offline_ones() {
        let auth = Bus::new(1)
            .take_authority(PeerId::from_spki(b"node"), [])
            .unwrap();
        let me = auth.node();
        let mut t = RegistryTable::new();
        let t0 = Instant::now();
        let reg = AgentRegister {
            agent_id: AgentId::from_bytes([1; 16]),
            name: "remote".into(),
            capabilities: vec![],
            endpoint: SocketAddrV4::new([127, 0, 0, 1].into(), 9001),
        };
        t.register_remote(
            &reg,
            PeerId::from_spki(b"other"),
            Duration::from_secs(1),
            t0,
        )
        .unwrap();
        let (url, owner) = route(&t, &reg.agent_id, &me).unwrap();
        assert_eq!(url.port(), 9001);
        assert_eq!(owner, PeerId::from_spki(b"other"));
        let unknown = route(&t, &AgentId::from_bytes([2; 16]), &me).unwrap_err();
        assert_eq!(unknown.code(), ErrorCode::UNKNOWN_AGENT);
        t.sweep(t0 + Duration::from_secs(5));
        let offline = route(&t, &reg.agent_id, &me).unwrap_err();
        assert_eq!(offline.code(), ErrorCode::AGENT_UNAVAILABLE);
        let local: MxpUrl = "mxp://127.0.0.1:9000".parse().unwrap();
        t.upsert_local(
            AgentId::from_bytes([3; 16]),
            "here",
            &[],
            &local,
            crate::LifecycleState::Active,
            t0,
        );
        assert_eq!(
            route(&t, &AgentId::from_bytes([3; 16]), &me)
                .unwrap_err()
                .code(),
            ErrorCode::UNKNOWN_AGENT
        );
    }
}
