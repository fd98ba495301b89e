//! A whole node: the supervision tree over the transport, the node agent
//! (registry, control methods, mesh, forwarding) and the hosted agents.
//!
//! The node agent answers on [`NODE_AGENT`] (the nil UUID):
//! * AgentRegister, AgentHeartbeat, AgentDiscover frames from the mesh;
//! * control Calls: `node.status`, `agents.list`, and for operators
//!   `agent.suspend`, `agent.resume`, `agent.retire` (`{"agent_id": "…"}`);
//! * Calls for agents that are not here: forwarded, frame unchanged, to the
//!   node that registered the agent (one hop at most: a Call that arrived
//!   from another mesh node is never forwarded again).

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mxp_protocol::{
    AgentId, AgentRegister, Call, CallBody, DiscoverRequest, DiscoverResult, ErrorCode, Flags,
    Heartbeat, MessageType, Response, TypedPayload,
};
use mxp_transport::{
    Bus, CallError, Client, Envelope, Limits, MxpUrl, NODE_AGENT, NodeIdentity, Origin, PeerId,
    PeerTrust, Reply, Server, TransportError,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, error, info, warn};

use crate::registry::{Owner, RegistryTable};
use crate::slot::{Slot, bridge};
use crate::{
    AgentArgs, AgentMsg, AgentSpec, AgentStatus, AgentSupervisor, LifecycleState,
    SupervisionPolicy, Transition,
};

/// Errors starting or running a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport could not start (bind, identity, TLS).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// An actor could not be spawned.
    #[error("cannot start {what}: {reason}")]
    Spawn {
        /// The actor.
        what: String,
        /// Why.
        reason: String,
    },
    /// The settings are inconsistent.
    #[error("invalid node settings: {0}")]
    Settings(String),
}

/// Everything a node needs to start.
pub struct NodeSettings {
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Address other nodes reach this one at (IPv4, carried in AgentRegister);
    /// defaults to `listen`.
    pub advertise: Option<SocketAddr>,
    /// This node's identity.
    pub identity: NodeIdentity,
    /// Which peers are accepted.
    pub trust: PeerTrust,
    /// Transport limits.
    pub limits: Limits,
    /// Nodes to join at start (`mxp://host:port`).
    pub seeds: Vec<MxpUrl>,
    /// Period of heartbeats to the mesh and of the registry sweep.
    pub heartbeat_interval: Duration,
    /// How long a remote agent stays online without a heartbeat.
    pub agent_ttl: Duration,
    /// Peers allowed to suspend, resume and retire agents. Empty: any peer
    /// (development mode; a warning is logged at start).
    pub operators: Vec<PeerId>,
    /// Agents hosted here.
    pub agents: Vec<AgentSpec>,
    /// How agents' kernels and planners are supervised.
    pub supervision: SupervisionPolicy,
}

impl std::fmt::Debug for NodeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSettings")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("identity", &self.identity)
            .field("seeds", &self.seeds)
            .field("agents", &self.agents)
            .finish_non_exhaustive()
    }
}

/// A hosted agent as the node tracks it.
#[derive(Clone)]
struct Hosted {
    actor: ActorRef<AgentMsg>,
    name: String,
    capabilities: Vec<String>,
}

type Directory = Arc<RwLock<HashMap<AgentId, Hosted>>>;

/// What `node.status` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's fingerprint.
    pub peer_id: String,
    /// Its advertised URL.
    pub url: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Agents hosted here, by lifecycle state.
    pub local_agents: HashMap<String, usize>,
    /// Remote agents known and online.
    pub remote_online: usize,
    /// Remote agents known but not heard of within their TTL.
    pub remote_offline: usize,
    /// Mesh nodes known.
    pub nodes: Vec<String>,
    /// Transport counters.
    pub transport: mxp_transport::StatsSnapshot,
}

// ---------------------------------------------------------------- node agent

enum NodeAgentMsg {
    Deliver(Vec<Envelope>),
    Tick,
    /// Mesh nodes learned from a registration answer.
    Learned(Vec<MxpUrl>),
}

struct NodeAgent;

struct NodeAgentState {
    table: RegistryTable,
    directory: Directory,
    client: Arc<Client>,
    server: Arc<Server>,
    me: PeerId,
    url: MxpUrl,
    endpoint: Option<SocketAddrV4>,
    operators: Vec<PeerId>,
    ttl: Duration,
    limits: Limits,
    started: Instant,
    /// Nodes to heartbeat: seeds and nodes learned, minus this one.
    mesh: BTreeSet<String>,
    /// Nodes with a mesh round under way (one at a time per node, so an
    /// unreachable node neither piles up tasks nor delays the others).
    in_round: Arc<std::sync::Mutex<BTreeSet<String>>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    heartbeat: Duration,
}

struct NodeAgentArgs {
    directory: Directory,
    client: Arc<Client>,
    server: Arc<Server>,
    me: PeerId,
    url: MxpUrl,
    endpoint: Option<SocketAddrV4>,
    operators: Vec<PeerId>,
    ttl: Duration,
    limits: Limits,
    seeds: Vec<MxpUrl>,
    heartbeat: Duration,
}

fn respond(reply: Reply, result: Value) {
    let _ = reply.ok(result);
}

fn fail(reply: Reply, code: ErrorCode, message: impl Into<String>) {
    let _ = reply.error(code, message);
}

impl NodeAgentState {
    fn local_statuses(&self) -> Vec<(AgentId, Hosted)> {
        let dir = self.directory.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(AgentId, Hosted)> = dir.iter().map(|(k, v)| (*k, v.clone())).collect();
        v.sort_by_key(|(id, h)| (h.name.clone(), *id));
        v
    }

    fn sync_local(&mut self) {
        let now = Instant::now();
        let locals = self.local_statuses();
        for (id, h) in &locals {
            self.table
                .upsert_local(*id, &h.name, &h.capabilities, &self.url, now);
        }
        let live: BTreeSet<AgentId> = locals.iter().map(|(id, _)| *id).collect();
        let stale: Vec<AgentId> = self
            .table
            .records()
            .into_iter()
            .filter(|r| r.owner == Owner::Local && !live.contains(&r.agent_id))
            .map(|r| r.agent_id)
            .collect();
        for id in stale {
            self.table.remove_local(&id);
        }
    }

    fn handle_envelope(&mut self, myself: &ActorRef<NodeAgentMsg>, env: Envelope) {
        let Some(reply) = env.reply else {
            debug!(r#type = %env.frame.message_type(), "node agent ignores a frame without a reply port");
            return;
        };
        let now = Instant::now();
        match env.frame.message_type() {
            MessageType::AgentRegister => {
                let Origin::Peer(from) = env.origin else {
                    return fail(
                        reply,
                        ErrorCode::INVALID_PAYLOAD,
                        "AgentRegister must come from a peer",
                    );
                };
                let reg = match AgentRegister::from_frame(&env.frame) {
                    Ok(r) => r,
                    Err(e) => return fail(reply, ErrorCode::INVALID_PAYLOAD, e.to_string()),
                };
                // The directory is authoritative for this node's agents: sync
                // first, so a peer can never claim a local agent's id.
                self.sync_local();
                match self.table.register_remote(&reg, from, self.ttl, now) {
                    Ok(()) => {
                        info!(agent = %reg.agent_id, name = %reg.name, peer = %from.short(), "remote agent registered");
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
                        fail(reply, ErrorCode::DENIED, e.to_string());
                    }
                }
            }
            MessageType::AgentHeartbeat => {
                let Origin::Peer(from) = env.origin else {
                    return fail(
                        reply,
                        ErrorCode::INVALID_PAYLOAD,
                        "AgentHeartbeat must come from a peer",
                    );
                };
                match Heartbeat::from_frame(&env.frame) {
                    Ok(hb) => {
                        let refreshed = self.table.heartbeat(&hb, from, now);
                        respond(
                            reply,
                            json!({ "refreshed": refreshed, "unknown": hb.agents.len() - refreshed }),
                        );
                    }
                    Err(e) => fail(reply, ErrorCode::INVALID_PAYLOAD, e.to_string()),
                }
            }
            MessageType::AgentDiscover => match DiscoverRequest::from_frame(&env.frame) {
                Ok(req) => {
                    self.sync_local();
                    let limit = req.limit.map_or(100, |l| l.min(1000) as usize);
                    let agents = self.table.discover(&req.capability, limit);
                    respond(
                        reply,
                        serde_json::to_value(DiscoverResult { agents }).unwrap_or_default(),
                    );
                }
                Err(e) => fail(reply, ErrorCode::INVALID_PAYLOAD, e.to_string()),
            },
            MessageType::Call => {
                let call = match Call::from_frame(&env.frame) {
                    Ok(c) => c,
                    Err(e) => return fail(reply, ErrorCode::INVALID_PAYLOAD, e.to_string()),
                };
                if call.target == NODE_AGENT {
                    self.control(myself, env.origin, &call, reply);
                } else {
                    self.forward(env.frame, env.origin, call, reply);
                }
            }
            other => fail(
                reply,
                ErrorCode::UNSUPPORTED,
                format!("the node agent does not handle {other}"),
            ),
        }
    }

    /// Forwards a Call for a remote agent, unchanged, to its node.
    fn forward(&self, frame: mxp_protocol::Frame, origin: Origin, call: Call, reply: Reply) {
        if let Origin::Peer(p) = origin {
            if self.table.is_node(&p) {
                return fail(
                    reply,
                    ErrorCode::UNKNOWN_AGENT,
                    format!("no agent {} on this node", call.target),
                );
            }
        }
        let Some(node) = self.table.route(&call.target).cloned() else {
            return fail(
                reply,
                ErrorCode::UNKNOWN_AGENT,
                format!("no agent {} on this node or the mesh", call.target),
            );
        };
        let client = self.client.clone();
        let deadline = self.limits.call_deadline(call.timeout_secs);
        tokio::spawn(async move {
            debug!(agent = %call.target, node = %node, "forwarding call");
            match client.exchange(&node, frame, deadline).await {
                Ok(answer) => {
                    let _ = reply.send(answer);
                }
                Err(CallError::Timeout(d)) => fail(
                    reply,
                    ErrorCode::TIMEOUT,
                    format!("node {node} did not answer within {d:?}"),
                ),
                Err(e) => fail(
                    reply,
                    ErrorCode::AGENT_UNAVAILABLE,
                    format!("node {node} unreachable: {e}"),
                ),
            }
        });
    }

    fn control(
        &mut self,
        myself: &ActorRef<NodeAgentMsg>,
        origin: Origin,
        call: &Call,
        reply: Reply,
    ) {
        let body: CallBody = match call.parse_body() {
            Ok(b) => b,
            Err(e) => return fail(reply, ErrorCode::INVALID_PAYLOAD, e.to_string()),
        };
        let _ = myself;
        match body.method.as_str() {
            "node.status" => {
                let locals = self.local_statuses();
                let (remote_online, remote_offline) = self.table.remote_counts();
                let server = self.server.clone();
                let base = NodeStatus {
                    peer_id: self.me.to_string(),
                    url: self.url.to_string(),
                    uptime_secs: self.started.elapsed().as_secs(),
                    local_agents: HashMap::new(),
                    remote_online,
                    remote_offline,
                    nodes: self.mesh.iter().cloned().collect(),
                    transport: server.stats(),
                };
                tokio::spawn(async move {
                    let mut status = base;
                    for (_, h) in locals {
                        if let Some(s) = agent_status(&h.actor).await {
                            *status.local_agents.entry(s.state.to_string()).or_default() += 1;
                        }
                    }
                    respond(reply, serde_json::to_value(status).unwrap_or_default());
                });
            }
            "agents.list" => {
                self.sync_local();
                let locals = self.local_statuses();
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
                    for (_, h) in locals {
                        if let Some(s) = agent_status(&h.actor).await {
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
            m @ ("agent.suspend" | "agent.resume" | "agent.retire") => {
                if let Origin::Peer(p) = origin {
                    if !self.operators.is_empty() && !self.operators.contains(&p) {
                        return fail(
                            reply,
                            ErrorCode::DENIED,
                            format!("peer {p} is not an operator of this node"),
                        );
                    }
                }
                let transition = match m {
                    "agent.suspend" => Transition::Suspend,
                    "agent.resume" => Transition::Resume,
                    _ => Transition::Retire,
                };
                let Some(id) = body
                    .params
                    .get("agent_id")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<AgentId>().ok())
                else {
                    return fail(
                        reply,
                        ErrorCode::INVALID_PAYLOAD,
                        format!("{m} needs params {{\"agent_id\": \"<uuid>\"}}"),
                    );
                };
                let hosted = self
                    .directory
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .cloned();
                let Some(h) = hosted else {
                    return fail(
                        reply,
                        ErrorCode::UNKNOWN_AGENT,
                        format!("no agent {id} on this node"),
                    );
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
                            info!(agent = %id, %transition, %state, "operator changed agent lifecycle");
                            respond(reply, json!({ "agent_id": id, "state": state }));
                        }
                        Ok(ractor::rpc::CallResult::Success(Err(e))) => {
                            fail(reply, ErrorCode::INVALID_PAYLOAD, e)
                        }
                        _ => fail(
                            reply,
                            ErrorCode::AGENT_UNAVAILABLE,
                            format!("agent {id} did not answer"),
                        ),
                    }
                });
            }
            other => fail(
                reply,
                ErrorCode::UNSUPPORTED,
                format!(
                    "the node agent has no method {other:?} (node.status, agents.list, agent.suspend, agent.resume, agent.retire)"
                ),
            ),
        }
    }

    /// Sweeps the registry, updates gauges, and sends registrations and
    /// heartbeats to the mesh (in a task: the actor does not wait on the network).
    fn tick(&mut self, myself: &ActorRef<NodeAgentMsg>) {
        let now = Instant::now();
        for id in self.table.sweep(now) {
            info!(agent = %id, "remote agent offline: no heartbeat within its TTL");
        }
        self.sync_local();
        let (on, off) = self.table.remote_counts();
        metrics::gauge!("mxp_agents", "status" => "remote_online").set(on as f64);
        metrics::gauge!("mxp_agents", "status" => "remote_offline").set(off as f64);
        let locals = self.local_statuses();
        let Some(endpoint) = self.endpoint else {
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
        let ttl_secs = u32::try_from(self.ttl.as_secs().max(1)).unwrap_or(u32::MAX);
        let hb = Heartbeat {
            agents: regs.iter().map(|r| r.agent_id).collect(),
            ttl_secs,
        };
        let me = self.me;
        let timeout = self.heartbeat.max(Duration::from_secs(1));
        let regs = Arc::new(regs);
        let hb = Arc::new(hb);
        for node in &self.mesh {
            let Ok(url) = node.parse::<MxpUrl>() else {
                continue;
            };
            if !self
                .in_round
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(node.clone())
            {
                continue;
            }
            let (client, myself, regs, hb, in_round, node) = (
                self.client.clone(),
                myself.clone(),
                regs.clone(),
                hb.clone(),
                self.in_round.clone(),
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
}

async fn agent_status(actor: &ActorRef<AgentMsg>) -> Option<AgentStatus> {
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
        if let Ok(frame) = hb.to_frame(id, id, Flags::EMPTY) {
            if let Ok(answer) = client.exchange(node, frame, timeout).await {
                if let Ok(r) = mxp_transport::interpret_answer(&answer, id) {
                    unknown = r
                        .parse_body()
                        .ok()
                        .and_then(|b| b.result.get("unknown").and_then(Value::as_u64))
                        .map_or(unknown, |u| u as usize);
                }
            }
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
        Ok(NodeAgentState {
            table: RegistryTable::new(),
            directory: a.directory,
            client: a.client,
            server: a.server,
            me: a.me,
            url: a.url,
            endpoint: a.endpoint,
            operators: a.operators,
            ttl: a.ttl,
            limits: a.limits,
            started: Instant::now(),
            mesh,
            in_round: Arc::new(std::sync::Mutex::new(BTreeSet::new())),
            ticker: Some(ticker),
            heartbeat: a.heartbeat,
        })
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
                    st.handle_envelope(&myself, env);
                }
            }
            NodeAgentMsg::Tick => st.tick(&myself),
            NodeAgentMsg::Learned(urls) => {
                for u in urls {
                    let u = MxpUrl::new(u.host(), u.port(), None);
                    if u != st.url {
                        st.mesh.insert(u.to_string());
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- supervisor

/// Messages to the node supervisor.
enum NodeMsg {
    /// Retire every agent; answer when all stopped or `grace` passed.
    Retire(Duration, RpcReplyPort<usize>),
}

struct NodeSupervisor;

struct NodeSupervisorState {
    bus: Bus,
    directory: Directory,
    node_agent: Arc<Slot<NodeAgentMsg>>,
    node_args: Box<dyn Fn() -> NodeAgentArgs + Send + Sync>,
    bridge: tokio::task::JoinHandle<()>,
    restarts: u32,
}

struct NodeSupervisorArgs {
    bus: Bus,
    directory: Directory,
    node_args: Box<dyn Fn() -> NodeAgentArgs + Send + Sync>,
    agents: Vec<AgentSpec>,
    policy: SupervisionPolicy,
}

impl NodeSupervisor {
    async fn spawn_node_agent(
        myself: &ActorRef<NodeMsg>,
        st: &NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (a, _) =
            Actor::spawn_linked(None, NodeAgent, (st.node_args)(), myself.get_cell()).await?;
        st.node_agent.set(a);
        Ok(())
    }
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeSupervisorState;
    type Arguments = NodeSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        a: NodeSupervisorArgs,
    ) -> Result<NodeSupervisorState, ActorProcessingErr> {
        let mailbox = a.bus.register(NODE_AGENT)?;
        let node_agent = Arc::new(Slot::empty());
        let bridge = tokio::spawn(bridge(
            mailbox,
            node_agent.clone(),
            64,
            None,
            |b| NodeAgentMsg::Deliver(b.envelopes),
            |m| match m {
                NodeAgentMsg::Deliver(envs) => envs,
                _ => Vec::new(),
            },
        ));
        let st = NodeSupervisorState {
            bus: a.bus,
            directory: a.directory,
            node_agent,
            node_args: a.node_args,
            bridge,
            restarts: 0,
        };
        NodeSupervisor::spawn_node_agent(&myself, &st).await?;
        for spec in a.agents {
            let (id, name, capabilities) = (spec.id, spec.name.clone(), spec.capabilities.clone());
            let args = AgentArgs {
                spec,
                bus: st.bus.clone(),
                policy: a.policy.clone(),
            };
            let (actor, _) =
                Actor::spawn_linked(None, AgentSupervisor, args, myself.get_cell()).await?;
            st.directory
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    id,
                    Hosted {
                        actor,
                        name,
                        capabilities,
                    },
                );
        }
        Ok(st)
    }

    async fn post_stop(
        &self,
        _: ActorRef<NodeMsg>,
        st: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        st.bridge.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<NodeMsg>,
        msg: NodeMsg,
        st: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Retire(grace, port) => {
                let hosted: Vec<Hosted> = st
                    .directory
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect();
                for h in &hosted {
                    let _ = h
                        .actor
                        .call(
                            |p| AgentMsg::Control(Transition::Retire, p),
                            Some(Duration::from_secs(2)),
                        )
                        .await;
                }
                let directory = st.directory.clone();
                // Wait in a task so the supervisor keeps processing the
                // agents' termination events meanwhile.
                tokio::spawn(async move {
                    let end = Instant::now() + grace;
                    loop {
                        let left = directory.read().unwrap_or_else(|p| p.into_inner()).len();
                        if left == 0 || Instant::now() >= end {
                            let _ = port.send(left);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        evt: SupervisionEvent,
        st: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                reason
                    .filter(|r| r != "terminated")
                    .map(|r| format!("stopped: {r}")),
            ),
            _ => return Ok(()),
        };
        if st.node_agent.holds(&cell) {
            st.restarts += 1;
            metrics::counter!("mxp_actor_restarts_total", "actor" => "node_agent").increment(1);
            error!(
                "node agent failed ({}); restarting",
                failure.unwrap_or_default()
            );
            NodeSupervisor::spawn_node_agent(&myself, st).await?;
            return Ok(());
        }
        let mut dir = st.directory.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<AgentId> = dir
            .iter()
            .filter(|(_, h)| h.actor.get_id() == cell.get_id())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            dir.remove(&id);
            match &failure {
                Some(why) => {
                    metrics::counter!("mxp_actor_restarts_total", "actor" => "agent_supervisor")
                        .increment(1);
                    error!(agent = %id, "agent stopped: {why}");
                }
                None => info!(agent = %id, "agent retired"),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- handle

/// A running node.
pub struct Node {
    supervisor: ActorRef<NodeMsg>,
    join: tokio::task::JoinHandle<()>,
    server: Arc<Server>,
    client: Arc<Client>,
    bus: Bus,
    peer_id: PeerId,
    url: MxpUrl,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("url", &self.url)
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Binds the transport and starts the supervision tree.
    ///
    /// # Errors
    /// [`NodeError`] if the address cannot be bound, the settings are
    /// invalid, or an actor fails to start.
    pub async fn start(s: NodeSettings) -> Result<Node, NodeError> {
        s.limits.validate().map_err(NodeError::Settings)?;
        s.supervision.validate().map_err(NodeError::Settings)?;
        if s.heartbeat_interval.is_zero() || s.agent_ttl <= s.heartbeat_interval {
            return Err(NodeError::Settings(
                "agent_ttl must be longer than heartbeat_interval, which must be greater than zero"
                    .into(),
            ));
        }
        let bus = Bus::new(s.limits.mailbox_capacity);
        let server = Arc::new(Server::bind(
            s.listen,
            &s.identity,
            s.trust.clone(),
            s.limits.clone(),
            bus.clone(),
        )?);
        let local_addr = server
            .local_addr()
            .map_err(|e| NodeError::Settings(format!("bound socket has no address: {e}")))?;
        let client = Arc::new(Client::new(&s.identity, s.trust.clone(), s.limits.clone())?);
        let advertise = s.advertise.unwrap_or(local_addr);
        let endpoint = match advertise {
            SocketAddr::V4(v4) if !v4.ip().is_unspecified() => Some(v4),
            other => {
                warn!(address = %other, "advertised address is not a routable IPv4 address: this node's agents are not registered with the mesh (set node.advertise)");
                None
            }
        };
        let url = MxpUrl::new(advertise.ip().to_string(), advertise.port(), None);
        let peer_id = s.identity.peer_id();
        if s.operators.is_empty() {
            warn!(
                "no operators configured: any peer may suspend, resume or retire agents (development mode)"
            );
        }
        let directory: Directory = Arc::new(RwLock::new(HashMap::new()));
        let node_args = {
            let (directory, client, server, url) = (
                directory.clone(),
                client.clone(),
                server.clone(),
                url.clone(),
            );
            let (operators, limits, seeds) =
                (s.operators.clone(), s.limits.clone(), s.seeds.clone());
            let (ttl, heartbeat) = (s.agent_ttl, s.heartbeat_interval);
            Box::new(move || NodeAgentArgs {
                directory: directory.clone(),
                client: client.clone(),
                server: server.clone(),
                me: peer_id,
                url: url.clone(),
                endpoint,
                operators: operators.clone(),
                ttl,
                limits: limits.clone(),
                seeds: seeds.clone(),
                heartbeat,
            }) as Box<dyn Fn() -> NodeAgentArgs + Send + Sync>
        };
        let args = NodeSupervisorArgs {
            bus: bus.clone(),
            directory,
            node_args,
            agents: s.agents,
            policy: s.supervision,
        };
        let (supervisor, join) = Actor::spawn(None, NodeSupervisor, args)
            .await
            .map_err(|e| NodeError::Spawn {
                what: "node supervisor".into(),
                reason: e.to_string(),
            })?;
        info!(url = %url, peer_id = %peer_id, "node started");
        Ok(Node {
            supervisor,
            join,
            server,
            client,
            bus,
            peer_id,
            url,
            local_addr,
        })
    }

    /// The address the QUIC endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL other nodes reach this one at.
    pub fn url(&self) -> &MxpUrl {
        &self.url
    }

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node's bus (to host extra components in-process).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The node's QUIC client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Transport counters.
    pub fn transport_stats(&self) -> mxp_transport::StatsSnapshot {
        self.server.stats()
    }

    /// Calls a control method of this node in-process, as `mxp` would over QUIC.
    ///
    /// # Errors
    /// [`CallError`] as the node agent answers.
    pub async fn control(&self, method: &str, params: Value) -> Result<Value, CallError> {
        let call = Call::json(NODE_AGENT, 10, &CallBody::new(method, params))
            .map_err(TransportError::from)?;
        let id = self.bus.next_message_id();
        let frame = call
            .to_frame(id, id, Flags::EMPTY)
            .map_err(TransportError::from)?;
        let r: Response = self.bus.call(frame, Duration::from_secs(10)).await?;
        r.parse_body()
            .map(|b| b.result)
            .map_err(|e| CallError::InvalidResponse(e.to_string()))
    }

    /// Stops the node gracefully: agents retire (new Calls are refused,
    /// in-flight ones drain within `grace`), then connections close and the
    /// actors stop. Returns how many agents had not finished draining.
    pub async fn shutdown(self, grace: Duration) -> usize {
        let left = match self
            .supervisor
            .call(
                |p| NodeMsg::Retire(grace, p),
                Some(grace + Duration::from_secs(5)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(n)) => n,
            _ => 0,
        };
        if left > 0 {
            warn!(
                agents = left,
                "shutdown: agents still draining after the grace period"
            );
        }
        self.server.shutdown(Duration::from_secs(1)).await;
        self.client.close().await;
        self.supervisor.stop(Some("shutdown".into()));
        let _ = self.join.await;
        info!("node stopped");
        left
    }
}
