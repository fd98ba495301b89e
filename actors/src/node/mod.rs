//! A whole node: the supervision tree over the transport, the node agent
//! (registry, control methods, mesh, forwarding) and the hosted agents.
//!
//! * [`settings`]: what a node needs to start.
//! * [`supervisor`]: the tree, restarts, retiring on shutdown.
//! * [`agent`]: the node agent (nil UUID): mesh frames, control, forwards.
//! * [`control`]: control Calls parsed, and the intent each one is (pure).
//! * [`forward`]: where a Call for a remote agent goes (pure).
//! * [`mesh`]: the heartbeat round to other nodes.
//! * [`service`]: node-wide services (the skill runner) the supervisor restarts.

mod agent;
mod audit_control;
pub mod control;
pub mod dial;
pub mod forward;
pub mod governed;
mod mesh;
pub mod replay;
pub mod service;
mod settings;
mod supervisor;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mxp_protocol::{AgentId, Call, CallBody, Flags, Response, TypedPayload};
use mxp_transport::{
    Bus, CallError, Client, MxpUrl, NODE_AGENT, PeerId, Principal, Server, TransportError,
};
use ractor::{Actor, ActorRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

pub use service::NodeService;
pub use settings::{DEFAULT_NODE_BODY_BYTES, NodeError, NodeSettings};

use crate::AgentMsg;
use crate::services::Services;
use agent::NodeAgentArgs;
use supervisor::{NodeMsg, NodeSupervisor, NodeSupervisorArgs};

/// A hosted agent as the node tracks it.
#[derive(Clone)]
pub(crate) struct Hosted {
    pub(crate) actor: ActorRef<AgentMsg>,
    pub(crate) view: crate::AgentView,
    pub(crate) name: String,
    pub(crate) capabilities: Vec<String>,
    /// Its planner and tools, for replay.
    pub(crate) replay: crate::replay::ReplayAgent,
}

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
    /// Whether the kill switch is on.
    #[serde(default)]
    pub kill_switch: bool,
    /// Approvals waiting for a decision.
    #[serde(default)]
    pub approvals_pending: usize,
    /// Live audit subscriptions served (`audit.subscribe`).
    #[serde(default)]
    pub audit_subscribers: usize,
}

/// A running node.
pub struct Node {
    supervisor: ActorRef<NodeMsg>,
    services: Arc<Services>,
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
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future part-way may leave the socket
    /// bound and some actors running until the runtime stops.
    pub async fn start(s: NodeSettings) -> Result<Node, NodeError> {
        s.validate()?;
        let bus = Bus::with_node_budget(s.limits.mailbox_capacity, Some(s.max_body_bytes));
        // A node that pins its peers takes their word for forwarded callers.
        let pinned = match &s.trust {
            mxp_transport::PeerTrust::Pinned(set) => Some(set.iter().copied().collect::<Vec<_>>()),
            _ => None,
        };
        let authority = Arc::new(
            bus.take_authority(s.identity.peer_id(), s.operators.iter().copied())?
                .with_trusted(pinned),
        );
        s.gate.publish_metrics();
        let services = Arc::new(
            Services::new(authority, s.gate.clone(), s.max_sessions, s.session_ttl)
                .with_auditor(s.audit.clone()),
        );
        if let Some(digest) = s.config_digest {
            let node = *services.authority().node().id();
            services
                .auditor()
                .record(vec![crate::audit::event(
                    mxp_governance::audit::EventKind::NodeConfig { digest },
                    serde_json::json!({ "node": node.to_string() }),
                    Some(&node),
                    None,
                    0,
                )])
                .await
                .map_err(|e| {
                    NodeError::Settings(crate::error::SettingsError::new("audit", e.to_string()))
                })?;
        }
        let server = Arc::new(Server::bind(
            s.listen,
            &s.identity,
            s.trust.clone(),
            s.limits.clone(),
            bus.clone(),
        )?);
        let local_addr = server.local_addr().map_err(|e| {
            NodeError::Settings(crate::error::SettingsError::new(
                "node.listen",
                format!("the bound socket has no address: {e}"),
            ))
        })?;
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
                "no operators configured: control Calls (agent lifecycle, policy.reload, killswitch.set, approvals) are denied to everyone; add fingerprints to node.operators (`mxp identity` prints one)"
            );
        }
        let node_args = {
            let (client, server, url, services) = (
                client.clone(),
                server.clone(),
                url.clone(),
                services.clone(),
            );
            let (limits, seeds, registry) = (s.limits.clone(), s.seeds.clone(), s.registry);
            let (policy_source, zone) = (s.policy_source.clone(), s.zone);
            let (ttl, heartbeat) = (s.agent_ttl, s.heartbeat_interval);
            Box::new(move |hosted| NodeAgentArgs {
                hosted,
                client: client.clone(),
                server: server.clone(),
                services: services.clone(),
                me: peer_id,
                url: url.clone(),
                endpoint,
                ttl,
                limits: limits.clone(),
                seeds: seeds.clone(),
                heartbeat,
                registry,
                policy_source: policy_source.clone(),
                zone,
            }) as Box<dyn Fn(BTreeMap<AgentId, Hosted>) -> NodeAgentArgs + Send + Sync>
        };
        let args = NodeSupervisorArgs {
            bus: bus.clone(),
            node_args,
            agents: s.agents,
            policy: s.supervision,
            services: services.clone(),
            node_services: s.node_services,
        };
        let (supervisor, join) = Actor::spawn(None, NodeSupervisor, args)
            .await
            .map_err(|e| NodeError::Spawn {
                what: "node supervisor",
                reason: e.to_string(),
            })?;
        info!(url = %url, peer_id = %peer_id, "node started");
        Ok(Node {
            supervisor,
            services,
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

    /// The node's own principal (to call its agents in-process as the node).
    pub fn principal(&self) -> Principal {
        self.services.authority().node()
    }

    /// Calls an agent of this node in-process, as the node itself, and
    /// returns the Response.
    ///
    /// # Errors
    /// [`CallError`] as the agent answers.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the Call; the agent sees its caller gone.
    pub async fn call(
        &self,
        agent: AgentId,
        body: &CallBody,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let secs = u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX);
        let call = Call::json(agent, secs, body).map_err(TransportError::from)?;
        let id = self.bus.next_message_id();
        let frame = call
            .to_frame(id, id, Flags::EMPTY)
            .map_err(TransportError::from)?;
        self.bus.call(frame, &self.principal(), timeout).await
    }

    /// Calls a control method of this node in-process, as the node itself
    /// (which the gate treats as an operator), as `mxp` would over QUIC.
    ///
    /// # Errors
    /// [`CallError`] as the node agent answers.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the Call.
    pub async fn control(&self, method: &str, params: Value) -> Result<Value, CallError> {
        let call = Call::json(NODE_AGENT, 10, &CallBody::new(method, params))
            .map_err(TransportError::from)?;
        let id = self.bus.next_message_id();
        let frame = call
            .to_frame(id, id, Flags::EMPTY)
            .map_err(TransportError::from)?;
        let r: Response = self
            .bus
            .call(frame, &self.principal(), Duration::from_secs(10))
            .await?;
        r.parse_body()
            .map(|b| b.result)
            .map_err(|e| CallError::InvalidResponse(e.to_string()))
    }

    /// Stops the node gracefully: agents retire (new Calls are refused,
    /// in-flight ones drain within `grace`), then connections close and the
    /// actors stop. Returns how many agents had not finished draining.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part-way, the node may be left half stopped.
    pub async fn shutdown(self, grace: Duration) -> usize {
        // Tell the mesh first, while the client can still reach it: peers
        // mark this node's agents offline at once instead of after the TTL.
        let _ = self
            .supervisor
            .call(NodeMsg::Farewell, Some(Duration::from_secs(3)))
            .await;
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
