//! Assembling and running a node: configuration into settings, metrics,
//! signals and graceful shutdown. The `mxp-node` binary is a thin `main`
//! around [`run`].

pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mxp_actors::{AgentSpec, Gate, NoHooks, Node, NodeSettings, RulePlanner, ToolRegistry};
use mxp_protocol::AgentId;
use mxp_transport::{NodeIdentity, PeerId, PeerTrust};

pub use config::{Config, ConfigError, DEFAULT_TOML};

/// Errors that stop a node from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The data folder cannot be used.
    #[error("data folder {path}: {reason}")]
    DataDir {
        /// The folder.
        path: String,
        /// Why.
        reason: String,
    },
    /// The node failed to start.
    #[error(transparent)]
    Node(#[from] mxp_actors::NodeError),
    /// The node's identity cannot be loaded or created.
    #[error(transparent)]
    Identity(#[from] mxp_transport::TransportError),
    /// The metrics endpoint cannot start.
    #[error("metrics endpoint on {addr}: {reason}")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// A stable agent id for an agent configured without one: derived from the
/// node's identity and the agent's name, so it survives restarts and differs
/// between nodes. A UUID of version 8 (custom).
///
/// ```
/// use mxp_runtime::node::derive_agent_id;
/// use mxp_transport::NodeIdentity;
/// let node = NodeIdentity::generate()?.peer_id();
/// assert_eq!(derive_agent_id(&node, "demo"), derive_agent_id(&node, "demo"));
/// assert_ne!(derive_agent_id(&node, "demo"), derive_agent_id(&node, "other"));
/// # Ok::<(), mxp_transport::TransportError>(())
/// ```
pub fn derive_agent_id(node: &PeerId, name: &str) -> AgentId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"mxp-agent-id\0");
    ctx.update(node.as_bytes());
    ctx.update(name.as_bytes());
    let digest = ctx.finish();
    let mut id = [0u8; 16];
    id.copy_from_slice(digest.as_ref().get(..16).unwrap_or(&[0; 16]));
    id[6] = (id[6] & 0x0f) | 0x80; // version 8
    id[8] = (id[8] & 0x3f) | 0x80; // RFC 4122 variant
    AgentId::from_bytes(id)
}

/// What [`prepare`] decided: the settings to start with, and what to tell the operator.
pub struct Prepared {
    /// The node's settings.
    pub settings: NodeSettings,
    /// Hosted agents: (id, name).
    pub agents: Vec<(AgentId, String)>,
    /// Metrics address, if enabled.
    pub metrics: Option<SocketAddr>,
    /// Drain time on shutdown.
    pub grace: Duration,
    /// Whether any client certificate is accepted (`node.accept_any_peer`).
    pub accept_any_peer: bool,
}

/// Creates the data folder and identity, and turns the configuration into
/// node settings.
///
/// # Errors
/// [`RunError`] naming the folder, file or key.
pub fn prepare(config: &Config) -> Result<Prepared, RunError> {
    let data = &config.node.data_dir;
    std::fs::create_dir_all(data).map_err(|e| RunError::DataDir {
        path: data.display().to_string(),
        reason: e.to_string(),
    })?;
    let identity = NodeIdentity::load_or_create(&data.join("identity"))?;
    let peer = identity.peer_id();
    let mut agents = Vec::new();
    let mut specs = Vec::new();
    let tools = Arc::new(ToolRegistry::builtin());
    for a in &config.agents {
        let id = a.id.unwrap_or_else(|| derive_agent_id(&peer, &a.name));
        let planner = match &a.rules {
            Some(rules) => {
                RulePlanner::new(rules.clone(), &tools.names()).map_err(|e| ConfigError::Key {
                    key: format!("agents.{}.rules", a.name),
                    reason: e.to_string(),
                })?
            }
            None => RulePlanner::default_rules(),
        };
        agents.push((id, a.name.clone()));
        specs.push(AgentSpec {
            id,
            name: a.name.clone(),
            capabilities: a.capabilities.clone(),
            planner: Arc::new(planner),
            tools: tools.clone(),
            hooks: Arc::new(NoHooks),
        });
    }
    let trust = if config.node.accept_any_peer {
        PeerTrust::AnyIdentified
    } else {
        PeerTrust::pinned(config.node.trusted_peers.iter().copied())
    };
    let advertise = (!config.node.advertise.is_empty())
        .then(|| config.node.advertise.parse())
        .transpose()
        .map_err(|_| ConfigError::Key {
            key: "node.advertise".into(),
            reason: "not a socket address".into(),
        })?;
    let metrics = (!config.metrics.listen.is_empty())
        .then(|| config.metrics.listen.parse())
        .transpose()
        .map_err(|_| ConfigError::Key {
            key: "metrics.listen".into(),
            reason: "not a socket address".into(),
        })?;
    Ok(Prepared {
        settings: NodeSettings {
            listen: config.node.listen,
            advertise,
            identity,
            trust,
            limits: config.transport.clone(),
            seeds: config.node.seeds.clone(),
            heartbeat_interval: Duration::from_millis(config.node.heartbeat_interval_ms),
            agent_ttl: Duration::from_millis(config.node.agent_ttl_ms),
            operators: config.node.operators.clone(),
            agents: specs,
            supervision: config.supervision.clone(),
            gate: Gate::default(),
            max_sessions: config.node.max_sessions,
            session_ttl: Duration::from_millis(config.node.session_ttl_ms),
            max_body_bytes: config.node.max_body_bytes,
            registry: config.mesh.limits(),
        },
        accept_any_peer: config.node.accept_any_peer,
        agents,
        metrics,
        grace: Duration::from_millis(config.node.shutdown_grace_ms),
    })
}

/// Installs the Prometheus exporter on `addr` (`/metrics`) and describes
/// every metric the node emits. Must run inside a tokio runtime; once per process.
///
/// # Errors
/// [`RunError::Metrics`] if the address cannot be bound.
pub fn install_metrics(addr: SocketAddr) -> Result<(), RunError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let err = |e: &dyn std::fmt::Display| RunError::Metrics {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full("mxp_call_duration_seconds".into()),
            &[
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("mxp_mailbox_depth".into()),
                &[0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0],
            )
        })
        .map_err(|e| err(&e))?
        .install()
        .map_err(|e| err(&e))?;
    describe_metrics();
    Ok(())
}

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "mxp_frames_in_total",
        "Frames received over QUIC, by message type"
    );
    describe_counter!(
        "mxp_frames_out_total",
        "Frames sent over QUIC, by message type"
    );
    describe_counter!(
        "mxp_decode_errors_total",
        "Frames from peers that failed to decode, by class"
    );
    describe_counter!(
        "mxp_calls_total",
        "Calls answered by hosted agents, by outcome (ok or an error code name)"
    );
    describe_histogram!(
        "mxp_call_duration_seconds",
        Unit::Seconds,
        "Time from a Call reaching an agent's kernel to its answer"
    );
    describe_counter!(
        "mxp_actor_restarts_total",
        "Actor restarts after a crash, by actor kind"
    );
    describe_histogram!(
        "mxp_mailbox_depth",
        "Envelopes waiting in an agent's mailbox when a batch is taken"
    );
    describe_gauge!("mxp_quic_connections", "Open QUIC connections");
    describe_counter!(
        "mxp_connections_refused_total",
        "Connections refused at the connection limit"
    );
    describe_counter!(
        "mxp_rate_limited_total",
        "Frames refused by the per-peer rate limit"
    );
    describe_gauge!(
        "mxp_agents",
        "Agents by status: lifecycle state for hosted agents, remote_online/remote_offline for the mesh"
    );
}

/// Starts a node from prepared settings.
///
/// # Errors
/// [`RunError::Node`] if it cannot start (e.g. the port is taken).
///
/// # Cancel safety
/// Not cancel safe: see [`mxp_actors::Node::start`].
pub async fn start(prepared: Prepared) -> Result<Node, RunError> {
    if prepared.accept_any_peer {
        tracing::warn!(
            listen = %prepared.settings.listen,
            "node.accept_any_peer = true: any client with a certificate it made itself can connect and call this node's agents (read-only tools only; control needs an operator). Pin peers with node.trusted_peers and set node.accept_any_peer = false before listening beyond loopback"
        );
    }
    Ok(Node::start(prepared.settings).await?)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
///
/// # Cancel safety
/// Cancel safe: it only waits for a signal.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
