//! What a node needs to start, and why it may not.

use std::net::SocketAddr;
use std::time::Duration;

use mxp_transport::{Limits, MxpUrl, NodeIdentity, PeerId, PeerTrust, TransportError};

use crate::audit::Auditor;
use crate::error::SettingsError;
use crate::gate::{Gate, PolicySource, Zone};
use crate::registry::RegistryLimits;
use crate::{AgentSpec, SupervisionPolicy};

/// Bytes of Call bodies a node holds at most, by default (256 MiB).
pub const DEFAULT_NODE_BODY_BYTES: usize = 256 << 20;

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
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The settings are inconsistent.
    #[error("invalid node settings: {0}")]
    Settings(#[from] SettingsError),
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
    /// Which peers may connect.
    pub trust: PeerTrust,
    /// Transport limits.
    pub limits: Limits,
    /// Nodes to join at start (`mxp://host:port`).
    pub seeds: Vec<MxpUrl>,
    /// Period of heartbeats to the mesh and of the registry sweep.
    pub heartbeat_interval: Duration,
    /// How long a remote agent stays online without a heartbeat.
    pub agent_ttl: Duration,
    /// Peers that may change the node (suspend, resume, retire agents).
    /// Empty: nobody may; control Calls are denied.
    pub operators: Vec<PeerId>,
    /// Agents hosted here.
    pub agents: Vec<AgentSpec>,
    /// How agents' kernels and executors are supervised.
    pub supervision: SupervisionPolicy,
    /// The decision point every effect passes.
    pub gate: Gate,
    /// Where `policy.reload` reads the policy set (the gate holds the set
    /// loaded at start).
    pub policy_source: PolicySource,
    /// The zone intents are decided in.
    pub zone: Zone,
    /// Where governed steps are recorded ([`Auditor::off`]: nowhere).
    pub audit: Auditor,
    /// The digest of the node's configuration, recorded at start.
    pub config_digest: Option<[u8; 32]>,
    /// Live sessions held at most.
    pub max_sessions: usize,
    /// How long an idle session is kept.
    pub session_ttl: Duration,
    /// Bytes of Call frames and parsed bodies all agents together may hold
    /// (queued or in flight); a frame past it is answered `overloaded`.
    pub max_body_bytes: usize,
    /// Bounds of the registry of remote agents and mesh nodes.
    pub registry: RegistryLimits,
    /// Node-wide services (the skill runner), started before the agents
    /// and restarted when they fail (see [`super::service`]).
    pub node_services: Vec<std::sync::Arc<dyn super::service::NodeService>>,
}

impl NodeSettings {
    /// Settings with this node's defaults for everything but the address,
    /// identity, trust and agents.
    pub fn new(
        listen: SocketAddr,
        identity: NodeIdentity,
        trust: PeerTrust,
        agents: Vec<AgentSpec>,
    ) -> NodeSettings {
        NodeSettings {
            listen,
            advertise: None,
            identity,
            trust,
            limits: Limits::default(),
            seeds: Vec::new(),
            heartbeat_interval: Duration::from_secs(2),
            agent_ttl: Duration::from_secs(10),
            operators: Vec::new(),
            agents,
            supervision: SupervisionPolicy::default(),
            gate: Gate::default(),
            policy_source: PolicySource::Default,
            zone: Zone::Sandbox,
            audit: Auditor::off(),
            config_digest: None,
            max_sessions: crate::services::DEFAULT_MAX_SESSIONS,
            session_ttl: crate::services::DEFAULT_SESSION_TTL,
            max_body_bytes: DEFAULT_NODE_BODY_BYTES,
            registry: RegistryLimits::default(),
            node_services: Vec::new(),
        }
    }

    /// Checks that the settings fit together.
    ///
    /// # Errors
    /// [`SettingsError`] naming the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.limits
            .validate()
            .map_err(|e| SettingsError::new("transport", e))?;
        self.supervision.validate()?;
        if self.heartbeat_interval.is_zero() {
            return Err(SettingsError::new(
                "node.heartbeat_interval_ms",
                "must be greater than zero",
            ));
        }
        if self.agent_ttl <= self.heartbeat_interval {
            return Err(SettingsError::new(
                "node.agent_ttl_ms",
                "must be longer than node.heartbeat_interval_ms",
            ));
        }
        if self.max_body_bytes < 64 << 10 || self.max_body_bytes > u32::MAX as usize {
            return Err(SettingsError::new(
                "node.max_body_bytes",
                "must be at least 65536 (64 KiB) and at most 4294967295",
            ));
        }
        if self.max_sessions == 0 {
            return Err(SettingsError::new(
                "node.max_sessions",
                "must be at least 1",
            ));
        }
        Ok(())
    }
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
