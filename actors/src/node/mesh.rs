//! The mesh round: every heartbeat interval the node agent sweeps its
//! registry and tells each known node about this node's agents (register
//! where unknown, heartbeat where known), in tasks that never block it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxp_protocol::{AgentId, AgentRegister, Flags, Heartbeat, TypedPayload};
use mxp_transport::{Client, MxpUrl, PeerId};
use ractor::ActorRef;
use serde_json::Value;
use tracing::{debug, info, warn};

use super::Hosted;
use super::agent::{NodeAgentMsg, NodeAgentState};
use crate::{AgentMsg, AgentStatus, LifecycleState};

/// Sweeps the registry, updates gauges, and sends registrations and
/// heartbeats to the mesh (in a task: the actor does not wait on the network).
pub(super) fn tick(st: &mut NodeAgentState, myself: &ActorRef<NodeAgentMsg>) {
    let now = Instant::now();
    for id in st.table.sweep(now) {
        info!(agent = %id, "remote agent offline: no heartbeat within its TTL");
    }
    st.sync_local();
    let (on, off) = st.table.remote_counts();
    metrics::gauge!("mxp_agents", "status" => "remote_online").set(on as f64);
    metrics::gauge!("mxp_agents", "status" => "remote_offline").set(off as f64);
    let locals: Vec<(AgentId, Hosted)> = st.hosted.iter().map(|(k, v)| (*k, v.clone())).collect();
    let Some(endpoint) = st.endpoint else {
        return;
    };
    let regs: Vec<AgentRegister> = locals
        .iter()
        .map(|(id, h)| AgentRegister {
            agent_id: *id,
            name: h.name.clone(),
            capabilities: h.capabilities.clone(),
            endpoint,
        })
        .collect();
    let ttl_secs = u32::try_from(st.ttl.as_secs().max(1)).unwrap_or(u32::MAX);
    let hb = Heartbeat {
        agents: regs.iter().map(|r| r.agent_id).collect(),
        ttl_secs,
    };
    let me = st.me;
    let timeout = st.heartbeat.max(Duration::from_secs(1));
    let regs = Arc::new(regs);
    let hb = Arc::new(hb);
    for node in &st.mesh {
        let Ok(url) = node.parse::<MxpUrl>() else {
            continue;
        };
        if !st
            .in_round
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.clone())
        {
            continue;
        }
        let (client, myself, regs, hb, in_round, node) = (
            st.client.clone(),
            myself.clone(),
            regs.clone(),
            hb.clone(),
            st.in_round.clone(),
            node.clone(),
        );
        tokio::spawn(async move {
            mesh_round(&client, &myself, me, &url, &regs, &hb, timeout).await;
            in_round
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&node);
        });
    }
    tokio::spawn(async move {
        // Gauges of local agents by state.
        let mut counts: HashMap<LifecycleState, usize> = HashMap::new();
        for (_, h) in &locals {
            if let Some(s) = agent_status(&h.actor).await {
                *counts.entry(s.state).or_default() += 1;
            }
        }
        for state in LifecycleState::ALL {
            metrics::gauge!("mxp_agents", "status" => state.name())
                .set(counts.get(&state).copied().unwrap_or(0) as f64);
        }
    });
}

pub(super) async fn agent_status(actor: &ActorRef<AgentMsg>) -> Option<AgentStatus> {
    match actor
        .call(AgentMsg::Status, Some(Duration::from_secs(2)))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(s)) => Some(s),
        _ => None,
    }
}

/// One heartbeat to `node`, registering this node's agents there first when
/// it does not know them (first contact, or the other node restarted).
async fn mesh_round(
    client: &Client,
    myself: &ActorRef<NodeAgentMsg>,
    me: PeerId,
    node: &MxpUrl,
    regs: &[AgentRegister],
    hb: &Heartbeat,
    timeout: Duration,
) {
    let peer = match client.connect(node).await {
        Ok((_, peer)) => peer,
        Err(e) => {
            debug!(node = %node, "mesh node unreachable: {e}");
            return;
        }
    };
    if peer == me {
        return;
    }
    debug!(node = %node, peer = %peer.short(), "mesh node reachable");
    let mut unknown = regs.len();
    if !hb.agents.is_empty() {
        let id = client.next_message_id();
        if let Ok(frame) = hb.to_frame(id, id, Flags::EMPTY)
            && let Ok(answer) = client.exchange(node, frame, timeout).await
            && let Ok(r) = mxp_transport::interpret_answer(&answer, id)
        {
            unknown = r
                .parse_body()
                .ok()
                .and_then(|b| b.result.get("unknown").and_then(Value::as_u64))
                .map_or(unknown, |u| u as usize);
        }
    }
    if unknown == 0 && !regs.is_empty() {
        return;
    }
    let mut learned = Vec::new();
    for reg in regs {
        let id = client.next_message_id();
        let Ok(frame) = reg.to_frame(id, id, Flags::EMPTY) else {
            continue;
        };
        match client
            .exchange(node, frame, timeout)
            .await
            .map(|a| mxp_transport::interpret_answer(&a, id))
        {
            Ok(Ok(r)) => {
                if let Ok(body) = r.parse_body() {
                    for n in body
                        .result
                        .get("nodes")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(u) = n.as_str().and_then(|s| s.parse::<MxpUrl>().ok()) {
                            learned.push(u);
                        }
                    }
                }
            }
            Ok(Err(e)) => warn!(node = %node, agent = %reg.agent_id, "registration refused: {e}"),
            Err(e) => debug!(node = %node, "registration failed: {e}"),
        }
    }
    // A node without agents registers nothing and so learns no more of the
    // mesh than its seeds: it has nothing to offer the rest.
    if !learned.is_empty() {
        let _ = myself.cast(NodeAgentMsg::Learned(learned));
    }
}
