//! The mesh round: every heartbeat interval the node agent sweeps its
//! registry and tells each node due a round about this node's agents
//! (register where unknown, heartbeat where known), in tasks that never block
//! it. Agents that do not take Calls (suspended, starting, retiring) are sent
//! in a heartbeat with TTL 0, so other nodes show them offline at once; on
//! shutdown every agent is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxp_protocol::{AgentRegister, Flags, Heartbeat, TypedPayload};
use mxp_transport::{Client, MxpUrl, PeerId};
use ractor::{ActorRef, RpcReplyPort};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::agent::{NodeAgentMsg, NodeAgentState};
use crate::LifecycleState;

/// What one round tells a node.
struct Announcement {
    /// Registrations of the agents that take Calls.
    regs: Vec<AgentRegister>,
    /// Their heartbeat.
    alive: Heartbeat,
    /// The agents that do not take Calls now, with TTL 0.
    away: Heartbeat,
}

/// Sweeps the registry, updates gauges, and sends registrations and
/// heartbeats to the nodes due a round (in tasks: the actor does not wait
/// on the network).
pub(super) fn tick(st: &mut NodeAgentState, myself: &ActorRef<NodeAgentMsg>) {
    let now = Instant::now();
    let swept = st.table.sweep(now);
    for id in &swept.offline {
        info!(agent = %id, "remote agent offline: no heartbeat within its TTL");
    }
    for id in &swept.forgotten {
        info!(agent = %id, "remote agent forgotten: offline too long; its id is free again");
    }
    st.sync_local();
    st.sync_dialer(now);
    let (on, off) = st.table.remote_counts();
    metrics::gauge!("mxp_agents", "status" => "remote_online").set(on as f64);
    metrics::gauge!("mxp_agents", "status" => "remote_offline").set(off as f64);
    let mut counts: HashMap<LifecycleState, usize> = HashMap::new();
    for h in st.hosted.values() {
        *counts.entry(h.view.state()).or_default() += 1;
    }
    for state in LifecycleState::ALL {
        metrics::gauge!("mxp_agents", "status" => state.name())
            .set(counts.get(&state).copied().unwrap_or(0) as f64);
    }
    metrics::gauge!("mxp_mesh_nodes").set(st.dialer.len() as f64);
    let Some(ann) = announcement(st, false) else {
        return;
    };
    let timeout = st.heartbeat.max(Duration::from_secs(1));
    for node in st.dialer.due(now) {
        let Ok(url) = node.parse::<MxpUrl>() else {
            st.dialer.remove(&node);
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
        let (client, myself, ann, in_round, me) = (
            st.client.clone(),
            myself.clone(),
            ann.clone(),
            st.in_round.clone(),
            st.me,
        );
        tokio::spawn(async move {
            let ok = mesh_round(&client, &myself, me, &url, &ann, timeout).await;
            in_round
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&node);
            let _ = myself.cast(NodeAgentMsg::Dialed { url: node, ok });
        });
    }
}

/// This node's agents as a round announces them; `None` if it does not
/// advertise an address. `leaving`: every agent is away (shutdown).
fn announcement(st: &NodeAgentState, leaving: bool) -> Option<Arc<Announcement>> {
    let endpoint = st.endpoint?;
    let ttl_secs = u32::try_from(st.ttl.as_secs().max(1)).unwrap_or(u32::MAX);
    let (mut regs, mut away) = (Vec::new(), Vec::new());
    for (id, h) in &st.hosted {
        if !leaving && h.view.state() == LifecycleState::Active {
            regs.push(AgentRegister {
                agent_id: *id,
                name: h.name.clone(),
                capabilities: h.capabilities.clone(),
                endpoint,
            });
        } else {
            away.push(*id);
        }
    }
    let alive = Heartbeat {
        agents: regs.iter().map(|r| r.agent_id).collect(),
        ttl_secs,
    };
    Some(Arc::new(Announcement {
        regs,
        alive,
        away: Heartbeat {
            agents: away,
            ttl_secs: 0,
        },
    }))
}

/// Tells every known node that all of this node's agents are gone (a
/// heartbeat with TTL 0), each within a second, then answers `port`.
pub(super) fn farewell(st: &NodeAgentState, port: RpcReplyPort<()>) {
    let Some(ann) = announcement(st, true) else {
        let _ = port.send(());
        return;
    };
    let nodes: Vec<MxpUrl> = st
        .dialer
        .all()
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let client = st.client.clone();
    tokio::spawn(async move {
        let sends = nodes.iter().map(|url| {
            let (client, ann) = (&client, &ann);
            async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    send_heartbeat(client, url, &ann.away, Duration::from_secs(1)),
                )
                .await;
            }
        });
        futures_util::future::join_all(sends).await;
        let _ = port.send(());
    });
}

/// Sends `hb` to `node`; the answer's count of agents it did not know.
async fn send_heartbeat(
    client: &Client,
    node: &MxpUrl,
    hb: &Heartbeat,
    timeout: Duration,
) -> Option<usize> {
    let id = client.next_message_id();
    let frame = hb.to_frame(id, id, Flags::EMPTY).ok()?;
    let answer = client.exchange(node, frame, timeout).await.ok()?;
    let r = mxp_transport::interpret_answer(&answer, id).ok()?;
    r.parse_body()
        .ok()
        .and_then(|b| b.result.get("unknown").and_then(Value::as_u64))
        .map(|u| usize::try_from(u).unwrap_or(usize::MAX))
}

/// One round with `node`: heartbeats for agents it knows, registrations for
/// those it does not (first contact, or it restarted), TTL 0 for agents
/// that do not take Calls. Whether the node answered.
async fn mesh_round(
    client: &Client,
    myself: &ActorRef<NodeAgentMsg>,
    me: PeerId,
    node: &MxpUrl,
    ann: &Announcement,
    timeout: Duration,
) -> bool {
    let peer = match client.connect(node).await {
        Ok((_, peer)) => peer,
        Err(e) => {
            debug!(node = %node, "mesh node unreachable: {e}");
            return false;
        }
    };
    if peer == me {
        return true;
    }
    debug!(node = %node, peer = %peer.short(), "mesh node reachable");
    if !ann.away.agents.is_empty() {
        send_heartbeat(client, node, &ann.away, timeout).await;
    }
    let mut unknown = ann.regs.len();
    if !ann.alive.agents.is_empty()
        && let Some(u) = send_heartbeat(client, node, &ann.alive, timeout).await
    {
        unknown = u;
    }
    if unknown == 0 && !ann.regs.is_empty() {
        return true;
    }
    let mut learned = Vec::new();
    for reg in &ann.regs {
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
                    // At most as many as the dialer could hold anyway.
                    for n in body
                        .result
                        .get("nodes")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .take(1024)
                    {
                        if let Some(u) = n.as_str().and_then(|s| s.parse::<MxpUrl>().ok()) {
                            learned.push(u);
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                warn!(node = %node, agent = %reg.agent_id, "registration refused: {}", e.to_string().escape_debug())
            }
            Err(e) => debug!(node = %node, "registration failed: {e}"),
        }
    }
    // A node without agents registers nothing and so learns no more of the
    // mesh than its seeds: it has nothing to offer the rest.
    if !learned.is_empty() {
        let _ = myself.cast(NodeAgentMsg::Learned(learned));
    }
    true
}
