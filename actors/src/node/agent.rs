//! The node agent (nil UUID): mesh frames (register, heartbeat, discover),
//! control Calls, and forwards for agents hosted elsewhere. Control and
//! forwards are intents: each passes the gate before it acts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxp_protocol::{
    AgentId, AgentRegister, Call, DiscoverRequest, DiscoverResult, Frame, Heartbeat, MessageType,
    TypedPayload,
};
use mxp_transport::{
    CallError, Client, Envelope, Limits, MxpUrl, NODE_AGENT, PeerId, Principal, Reply, Server,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::control::ControlRequest;
use super::{Hosted, NodeStatus, forward, mesh};
use crate::AgentMsg;
use crate::error::CallFailure;
use crate::gate::OPERATOR_REMEDY;
use crate::registry::{Owner, RegistryTable};
use crate::services::Services;
use crate::tool::EffectClass;

/// Messages to the node agent.
pub(crate) enum NodeAgentMsg {
    /// Frames for the node agent.
    Deliver(Vec<Envelope>),
    /// The heartbeat timer.
    Tick,
    /// Mesh nodes learned from a registration answer.
    Learned(Vec<MxpUrl>),
    /// A hosted agent stopped (from the node supervisor).
    Gone(AgentId),
}

pub(crate) struct NodeAgent;

pub(crate) struct NodeAgentState {
    pub(super) table: RegistryTable,
    pub(super) hosted: BTreeMap<AgentId, Hosted>,
    pub(super) client: Arc<Client>,
    server: Arc<Server>,
    services: Arc<Services>,
    pub(super) me: PeerId,
    pub(super) url: MxpUrl,
    pub(super) endpoint: Option<SocketAddrV4>,
    pub(super) ttl: Duration,
    limits: Limits,
    started: Instant,
    /// Nodes to heartbeat: seeds and nodes learned, minus this one.
    pub(super) mesh: BTreeSet<String>,
    /// Nodes with a mesh round under way (one at a time per node, so an
    /// unreachable node neither piles up tasks nor delays the others).
    pub(super) in_round: Arc<std::sync::Mutex<BTreeSet<String>>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    pub(super) heartbeat: Duration,
}

/// What the node agent starts with (again, after a restart).
pub(crate) struct NodeAgentArgs {
    pub(crate) hosted: BTreeMap<AgentId, Hosted>,
    pub(crate) client: Arc<Client>,
    pub(crate) server: Arc<Server>,
    pub(crate) services: Arc<Services>,
    pub(crate) me: PeerId,
    pub(crate) url: MxpUrl,
    pub(crate) endpoint: Option<SocketAddrV4>,
    pub(crate) ttl: Duration,
    pub(crate) limits: Limits,
    pub(crate) seeds: Vec<MxpUrl>,
    pub(crate) heartbeat: Duration,
}

fn respond(reply: Reply, result: Value) {
    let _ = reply.ok(result);
}

impl NodeAgentState {
    /// Brings the registry's view of local agents in line with `hosted`.
    pub(super) fn sync_local(&mut self) {
        let now = Instant::now();
        for (id, h) in &self.hosted {
            self.table
                .upsert_local(*id, &h.name, &h.capabilities, &self.url, now);
        }
    }

    fn handle_envelope(&mut self, env: Envelope) {
        let (frame, principal, reply) = env.into_parts();
        let Some(reply) = reply else {
            debug!(r#type = %frame.message_type(), "node agent ignores a frame without a reply port");
            return;
        };
        let _span = tracing::debug_span!(
            "node_agent",
            trace_id = frame.trace_id(),
            message_id = frame.message_id(),
        )
        .entered();
        let principal = self.services.resolve(principal);
        let now = Instant::now();
        match frame.message_type() {
            MessageType::AgentRegister => {
                let Some(from) = principal.remote_peer() else {
                    return CallFailure::InvalidPayload(
                        "AgentRegister must come from a peer".into(),
                    )
                    .answer(reply);
                };
                let reg = match AgentRegister::from_frame(&frame) {
                    Ok(r) => r,
                    Err(e) => return CallFailure::InvalidPayload(e.to_string()).answer(reply),
                };
                // The hosted set is authoritative for this node's agents: sync
                // first, so a peer can never claim a local agent's id.
                self.sync_local();
                match self.table.register_remote(&reg, from, self.ttl, now) {
                    Ok(()) => {
                        info!(agent = %reg.agent_id, name = %reg.name.escape_debug(), peer = %from.short(), "remote agent registered");
                        let node =
                            MxpUrl::new(reg.endpoint.ip().to_string(), reg.endpoint.port(), None);
                        self.mesh.insert(node.to_string());
                        let mut nodes: Vec<String> = self
                            .table
                            .node_urls()
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        nodes.push(self.url.to_string());
                        respond(reply, json!({ "nodes": nodes }));
                    }
                    Err(e) => {
                        warn!(agent = %reg.agent_id, peer = %from.short(), "registration refused: {e}");
                        let _ = reply.error(mxp_protocol::ErrorCode::DENIED, e.to_string());
                    }
                }
            }
            MessageType::AgentHeartbeat => {
                let Some(from) = principal.remote_peer() else {
                    return CallFailure::InvalidPayload(
                        "AgentHeartbeat must come from a peer".into(),
                    )
                    .answer(reply);
                };
                match Heartbeat::from_frame(&frame) {
                    Ok(hb) => {
                        let refreshed = self.table.heartbeat(&hb, from, now);
                        respond(
                            reply,
                            json!({ "refreshed": refreshed, "unknown": hb.agents.len() - refreshed }),
                        );
                    }
                    Err(e) => CallFailure::InvalidPayload(e.to_string()).answer(reply),
                }
            }
            MessageType::AgentDiscover => match DiscoverRequest::from_frame(&frame) {
                Ok(req) => {
                    self.sync_local();
                    let limit = req.limit.map_or(100, |l| l.min(1000) as usize);
                    let agents = self.table.discover(&req.capability, limit);
                    respond(
                        reply,
                        serde_json::to_value(DiscoverResult { agents }).unwrap_or_default(),
                    );
                }
                Err(e) => CallFailure::InvalidPayload(e.to_string()).answer(reply),
            },
            MessageType::Call => {
                let call = match Call::from_frame(&frame) {
                    Ok(c) => c,
                    Err(e) => return CallFailure::InvalidPayload(e.to_string()).answer(reply),
                };
                if call.target == NODE_AGENT {
                    self.control(principal, &frame, &call, reply);
                } else {
                    self.forward(frame, principal, &call, reply);
                }
            }
            other => CallFailure::Unsupported(format!("the node agent does not handle {other}"))
                .answer(reply),
        }
    }

    /// Forwards a Call for a remote agent, unchanged, to its node, once the
    /// gate allows it.
    fn forward(&self, frame: Frame, principal: Principal, call: &Call, reply: Reply) {
        let node = match forward::route(&self.table, &call.target, &principal) {
            Ok(n) => n,
            Err(f) => return f.answer(reply),
        };
        let intent = forward::intent(
            principal,
            &call.target,
            &node,
            frame.trace_id(),
            frame.message_id(),
        );
        if let Err(denial) = self.services.gate().check(intent) {
            return CallFailure::Denied(denial).answer(reply);
        }
        let client = self.client.clone();
        let deadline = self.limits.call_deadline(call.timeout_secs);
        let target = call.target;
        tokio::spawn(async move {
            debug!(agent = %target, node = %node, "forwarding call");
            match client.exchange(&node, frame, deadline).await {
                Ok(answer) => {
                    let _ = reply.send(answer);
                }
                Err(CallError::Timeout(d)) => {
                    CallFailure::Timeout(format!("node {node} did not answer within {d:?}"))
                        .answer(reply)
                }
                Err(e) => CallFailure::Unreachable {
                    node: node.to_string(),
                    reason: e.to_string(),
                }
                .answer(reply),
            }
        });
    }

    fn control(&mut self, principal: Principal, frame: &Frame, call: &Call, reply: Reply) {
        let request = match call
            .parse_body()
            .map_err(|e| CallFailure::InvalidPayload(e.to_string()))
            .and_then(|body| ControlRequest::parse(&body))
        {
            Ok(r) => r,
            Err(f) => return f.answer(reply),
        };
        let intent = request.intent(principal, frame.trace_id(), frame.message_id());
        if let Err(mut denial) = self.services.gate().check(intent) {
            if denial.effect == EffectClass::Control && !self.services.authority().has_operators() {
                denial.reason = format!(
                    "no operators are configured on this node, so nobody may call {}",
                    request.method()
                );
                denial.remedy = Some(OPERATOR_REMEDY.into());
            }
            return CallFailure::Denied(denial).answer(reply);
        }
        match request {
            ControlRequest::NodeStatus => self.node_status(reply),
            ControlRequest::AgentsList => self.agents_list(reply),
            ControlRequest::Lifecycle { transition, agent } => {
                let Some(h) = self.hosted.get(&agent).cloned() else {
                    return CallFailure::UnknownAgent(agent).answer(reply);
                };
                tokio::spawn(async move {
                    match h
                        .actor
                        .call(
                            |p| AgentMsg::Control(transition, p),
                            Some(Duration::from_secs(10)),
                        )
                        .await
                    {
                        Ok(ractor::rpc::CallResult::Success(Ok(state))) => {
                            info!(agent = %agent, %transition, %state, by = %principal, "operator changed agent lifecycle");
                            respond(reply, json!({ "agent_id": agent, "state": state }));
                        }
                        Ok(ractor::rpc::CallResult::Success(Err(f))) => f.answer(reply),
                        _ => CallFailure::Restarting("the agent's supervisor").answer(reply),
                    }
                });
            }
        }
    }

    fn node_status(&self, reply: Reply) {
        let locals: Vec<Hosted> = self.hosted.values().cloned().collect();
        let (remote_online, remote_offline) = self.table.remote_counts();
        let base = NodeStatus {
            peer_id: self.me.to_string(),
            url: self.url.to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            local_agents: HashMap::new(),
            remote_online,
            remote_offline,
            nodes: self.mesh.iter().cloned().collect(),
            transport: self.server.stats(),
        };
        tokio::spawn(async move {
            let mut status = base;
            for h in locals {
                if let Some(s) = mesh::agent_status(&h.actor).await {
                    *status.local_agents.entry(s.state.to_string()).or_default() += 1;
                }
            }
            respond(reply, serde_json::to_value(status).unwrap_or_default());
        });
    }

    fn agents_list(&mut self, reply: Reply) {
        self.sync_local();
        let locals: Vec<Hosted> = self.hosted.values().cloned().collect();
        let remote: Vec<Value> = self
            .table
            .records()
            .into_iter()
            .filter(|r| r.owner != Owner::Local)
            .map(|r| {
                json!({
                    "agent_id": r.agent_id, "name": r.name, "capabilities": r.capabilities,
                    "status": if r.online { "online" } else { "offline" },
                    "location": r.node.to_string(),
                })
            })
            .collect();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for h in locals {
                if let Some(s) = mesh::agent_status(&h.actor).await {
                    let mut v = serde_json::to_value(&s).unwrap_or_default();
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("status".into(), json!("online"));
                        obj.insert("location".into(), json!("local"));
                    }
                    out.push(v);
                }
            }
            out.extend(remote);
            respond(reply, json!({ "agents": out }));
        });
    }
}

impl Actor for NodeAgent {
    type Msg = NodeAgentMsg;
    type State = NodeAgentState;
    type Arguments = NodeAgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeAgentMsg>,
        a: NodeAgentArgs,
    ) -> Result<NodeAgentState, ActorProcessingErr> {
        let mut mesh: BTreeSet<String> = a
            .seeds
            .iter()
            .map(|u| MxpUrl::new(u.host(), u.port(), None).to_string())
            .collect();
        mesh.remove(&a.url.to_string());
        let ticker = myself.send_interval(a.heartbeat, || NodeAgentMsg::Tick);
        // First mesh round right away, not one interval later.
        myself.send_message(NodeAgentMsg::Tick)?;
        let mut st = NodeAgentState {
            table: RegistryTable::new(),
            hosted: a.hosted,
            client: a.client,
            server: a.server,
            services: a.services,
            me: a.me,
            url: a.url,
            endpoint: a.endpoint,
            ttl: a.ttl,
            limits: a.limits,
            started: Instant::now(),
            mesh,
            in_round: Arc::new(std::sync::Mutex::new(BTreeSet::new())),
            ticker: Some(ticker),
            heartbeat: a.heartbeat,
        };
        st.sync_local();
        Ok(st)
    }

    async fn post_stop(
        &self,
        _: ActorRef<NodeAgentMsg>,
        st: &mut NodeAgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeAgentMsg>,
        msg: NodeAgentMsg,
        st: &mut NodeAgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeAgentMsg::Deliver(batch) => {
                for env in batch {
                    st.handle_envelope(env);
                }
            }
            NodeAgentMsg::Tick => mesh::tick(st, &myself),
            NodeAgentMsg::Learned(urls) => {
                for u in urls {
                    let u = MxpUrl::new(u.host(), u.port(), None);
                    if u != st.url {
                        st.mesh.insert(u.to_string());
                    }
                }
            }
            NodeAgentMsg::Gone(id) => {
                st.hosted.remove(&id);
                st.table.remove_local(&id);
            }
        }
        Ok(())
    }
}
