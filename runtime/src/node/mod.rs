//! Assembling and running a node: configuration into settings, metrics,
//! signals and graceful shutdown. The `mxp-node` binary is a thin `main`
//! around [`run`].

pub mod audit_key;
pub mod broker_config;
pub mod config;
pub mod http;
mod process;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mxp_actors::{AgentSpec, CedarPolicy, Gate, NoHooks, Node, NodeSettings, RulePlanner};
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
    /// An address from the configuration cannot be bound.
    #[error(
        "{setting} = {addr}: cannot bind {what}: {reason}; set {setting} ({variable}) to a free address{hint}"
    )]
    Bind {
        /// The setting, e.g. `metrics.listen`.
        setting: &'static str,
        /// Its environment variable, e.g. `MXP_METRICS__LISTEN`.
        variable: &'static str,
        /// What listens there.
        what: &'static str,
        /// The address.
        addr: String,
        /// The OS error.
        reason: String,
        /// What else may be done.
        hint: &'static str,
    },
    /// The policy set does not load.
    #[error("policy set {0} (governance.policy_dir): {1}")]
    Policy(String, mxp_governance::policy::PolicyLoadError),
    /// The node's store cannot be opened.
    #[error("node store: {0}")]
    Store(mxp_actors::store::StoreError),
    /// The broker's outcome ledger (in the node's store) cannot be opened.
    #[error("outcome ledger in the node store: {0}")]
    Ledger(mxp_broker::outcome::OutcomeError),
    /// The node's audit key cannot be used.
    #[error(transparent)]
    AuditKey(#[from] audit_key::AuditKeyError),
    /// The metrics endpoint cannot start.
    #[error("metrics endpoint on {addr} (metrics.listen): {reason}")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

impl RunError {
    /// The exit code `mxp-node` ends with: 2 for what the operator's
    /// configuration or files decide (settings, data folder, identity, an
    /// address that cannot be bound), 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_)
            | RunError::DataDir { .. }
            | RunError::Identity(_)
            | RunError::Bind { .. }
            | RunError::Policy(..)
            | RunError::Store(_)
            | RunError::Ledger(_)
            | RunError::AuditKey(_) => 2,
            RunError::Node(mxp_actors::NodeError::Transport(
                mxp_transport::TransportError::Bind { .. },
            )) => 2,
            RunError::Node(_) | RunError::Metrics { .. } => 1,
        }
    }

    /// The same error, naming the setting when it is the QUIC endpoint that
    /// cannot bind (`node.listen`).
    pub fn name_setting(self) -> RunError {
        match self {
            RunError::Node(mxp_actors::NodeError::Transport(
                mxp_transport::TransportError::Bind { addr, source },
            )) => RunError::Bind {
                setting: "node.listen",
                variable: "MXP_NODE__LISTEN",
                what: "the QUIC endpoint (UDP)",
                addr: addr.to_string(),
                reason: source.to_string(),
                hint: " (port 0: any free port)",
            },
            other => other,
        }
    }
}

/// The data folder: created with mode 0700 (and its missing parents), or,
/// when it exists, refused if group or others may write it and a warning
/// (returned) if they may only read or list it.
fn prepare_data_dir(data: &std::path::Path) -> Result<Option<String>, RunError> {
    let shown = data.display();
    let err = |reason: String| RunError::DataDir {
        path: shown.to_string(),
        reason,
    };
    match std::fs::metadata(data) {
        Ok(meta) if !meta.is_dir() => Err(err("exists and is not a folder".into())),
        Ok(meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o022 != 0 {
                    return Err(err(format!(
                        "has mode {mode:04o}: group or other users may write it and replace the node's identity; fix: chmod 700 {shown}"
                    )));
                }
                if mode & 0o077 != 0 {
                    return Ok(Some(format!(
                        "data folder {shown} has mode {mode:04o}: group or other users may list it; fix: chmod 700 {shown}"
                    )));
                }
            }
            #[cfg(not(unix))]
            let _ = meta;
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                b.mode(0o700);
            }
            b.create(data).map_err(|e| err(e.to_string()))?;
            Ok(None)
        }
        Err(e) => Err(err(e.to_string())),
    }
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

/// The metrics listener's address (`metrics.listen`), if metrics are on.
///
/// # Errors
/// [`RunError::Config`] naming `metrics.listen` if it is not an address.
pub fn metrics_addr(config: &Config) -> Result<Option<SocketAddr>, RunError> {
    Ok((!config.metrics.listen.is_empty())
        .then(|| config.metrics.listen.parse())
        .transpose()
        .map_err(|_| ConfigError::Key {
            key: "metrics.listen".into(),
            reason: "not a socket address".into(),
        })?)
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
    /// The verifier key of the node's audit checkpoints
    /// (`<name>+<hex key ID>+<base64 key>`), to print at start.
    pub audit_vkey: String,
}

/// Creates the data folder and identity, and turns the configuration into
/// node settings.
///
/// # Errors
/// [`RunError`] naming the folder, file or key.
pub fn prepare(config: &Config) -> Result<Prepared, RunError> {
    let data = &config.node.data_dir;
    let folder_warning = prepare_data_dir(data)?;
    let (identity, identity_warnings) =
        NodeIdentity::load_or_create_checked(&data.join("identity"))?;
    for w in folder_warning.iter().chain(&identity_warnings) {
        tracing::warn!("{w}");
    }
    let peer = identity.peer_id();
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
    let metrics = metrics_addr(config)?;
    let zone = config.governance.zone()?;
    let policy_source = config.governance.policy_source();
    let engine = policy_source
        .load()
        .map_err(|e| RunError::Policy(policy_source.to_string(), e))?;
    let store = mxp_actors::store::Store::open(&data.join("store")).map_err(RunError::Store)?;
    let tools = tools::build(config, &store)?;
    let mut agents = Vec::new();
    let mut specs = Vec::new();
    for (a, tools) in config.agents.iter().zip(tools.registries) {
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
            tools,
            hooks: Arc::new(NoHooks),
        });
    }
    let audit_log = mxp_actors::store::AuditLog::open(store.clone()).map_err(RunError::Store)?;
    let (checkpoints, audit_vkey) = checkpoint_settings(config, &data.join("identity"), &peer)?;
    let audit = mxp_actors::audit::Auditor::start_with(
        audit_log,
        mxp_actors::audit::AuditSettings {
            checkpoints: Some(checkpoints),
            subscriptions: mxp_actors::audit::SubscriptionLimits {
                per_peer: config.audit.max_subscriptions_per_peer,
                total: config.audit.max_subscriptions,
            },
        },
    )
    .map_err(|e| match e {
        mxp_actors::audit::AuditError::Store(s) => RunError::Store(s),
        other => RunError::DataDir {
            path: data.display().to_string(),
            reason: format!("cannot start the audit writer: {other}"),
        },
    })?;
    let gate = Gate::new(
        Arc::new(CedarPolicy::new(engine, zone)),
        config.governance.gate_settings(),
        Some(store),
    )
    .map_err(RunError::Store)?;
    if gate.kill_switch().is_on() {
        tracing::warn!(
            "the kill switch is ON (persisted): every external write is denied until `mxp killswitch off`"
        );
    }
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
            gate,
            policy_source,
            zone,
            audit,
            config_digest: Some(
                *mxp_governance::token::blake3::hash(config.to_toml().as_bytes()).as_bytes(),
            ),
            max_sessions: config.node.max_sessions,
            session_ttl: Duration::from_millis(config.node.session_ttl_ms),
            max_body_bytes: config.node.max_body_bytes,
            registry: config.mesh.limits(),
            node_services: tools.node_services,
        },
        accept_any_peer: config.node.accept_any_peer,
        audit_vkey,
        agents,
        metrics,
        grace: Duration::from_millis(config.node.shutdown_grace_ms),
    })
}

/// How the node signs audit checkpoints (`[audit]`), with the key in
/// `identity_dir` (made on first start), and the key's verifier text.
fn checkpoint_settings(
    config: &Config,
    identity_dir: &std::path::Path,
    node: &PeerId,
) -> Result<(mxp_actors::audit::CheckpointSettings, String), RunError> {
    let (seed, made) = audit_key::load_or_create(identity_dir)?;
    let origin = config.audit.origin_for(node);
    let signer = mxp_governance::audit::note::NoteSigner::new(&origin, &seed).map_err(|e| {
        ConfigError::Key {
            key: "audit.origin".into(),
            reason: format!("{origin:?} cannot name the audit key: {e}"),
        }
    })?;
    let vkey = signer.verifier().to_vkey();
    if made {
        tracing::info!(vkey = %vkey, "made a new audit key in {}", identity_dir.join(audit_key::AUDIT_KEY_FILE).display());
    }
    Ok((
        mxp_actors::audit::CheckpointSettings {
            origin,
            signer,
            schedule: mxp_governance::audit::CheckpointSchedule {
                every_events: config.audit.checkpoint_every_events,
                every_ms: config.audit.checkpoint_every_ms,
            },
            witnesses: config.audit.witness_keys()?,
        },
        vkey,
    ))
}

/// The metrics listener, once bound.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    /// The address it listens on (the real port when `metrics.listen` asked for port 0).
    pub addr: SocketAddr,
    /// What `/readyz` reports: set [`http::Readiness::Ready`] once the node
    /// has started, [`http::Readiness::Stopping`] when it shuts down.
    pub health: http::Health,
}

/// Binds `addr` (`metrics.listen`), installs the Prometheus recorder and
/// serves `/metrics`, `/healthz` and `/readyz` there (see [`http`]); describes
/// every metric the node emits, sets `mxp_build_info` and adds the process
/// metrics (`process_*`) to every scrape. Must run inside a tokio runtime;
/// once per process.
///
/// # Errors
/// [`RunError::Bind`] naming `metrics.listen` if the address cannot be
/// bound, [`RunError::Metrics`] if the recorder cannot be installed.
pub fn install_metrics(addr: SocketAddr) -> Result<MetricsEndpoint, RunError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let err = |e: &dyn std::fmt::Display| RunError::Metrics {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let started = std::time::SystemTime::now();
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| RunError::Bind {
            setting: "metrics.listen",
            variable: "MXP_METRICS__LISTEN",
            what: "the metrics HTTP listener (TCP)",
            addr: addr.to_string(),
            reason: e.to_string(),
            hint: ", or to \"\" to turn metrics off",
        })?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| err(&e))?;
    let bound = listener.local_addr().map_err(|e| err(&e))?;
    let handle = PrometheusBuilder::new()
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
        .install_recorder()
        .map_err(|e| err(&e))?;
    describe_metrics();
    metrics::gauge!("mxp_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Without its own listener the recorder needs its upkeep run (histogram
    // draining) by us, as its listener did every 5 s.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let health = http::Health::new();
    http::serve(
        listener,
        move || {
            let mut text = handle.render();
            text.push_str(&process::render(&process::sample(started)));
            text
        },
        health.clone(),
    );
    Ok(MetricsEndpoint {
        addr: bound,
        health,
    })
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
        "mxp_build_info",
        "Always 1; the label version is this mxp-node's version"
    );
    describe_gauge!(
        "mxp_agents",
        "Agents by status: lifecycle state for hosted agents, remote_online/remote_offline for the mesh"
    );
    describe_counter!(
        "mxp_policy_decisions_total",
        "Gate decisions by decision (allow, deny, require_approval) and effect class"
    );
    describe_gauge!(
        "mxp_approvals_pending",
        "Approvals waiting for an operator's decision"
    );
    describe_counter!(
        "mxp_approval_votes_total",
        "Approval votes recorded, by vote (approve, deny)"
    );
    describe_gauge!(
        "mxp_kill_switch",
        "1 while the kill switch is on (every external write denied), else 0"
    );
    describe_counter!("mxp_audit_events_total", "Audit records written");
    describe_histogram!(
        "mxp_audit_commit_seconds",
        Unit::Seconds,
        "Time of one audit group commit (a durable write of every batch waiting)"
    );
    describe_counter!(
        "mxp_audit_failures_total",
        "Failed audit writes: the steps waiting on them failed closed"
    );
    describe_counter!(
        "mxp_audit_dropped_total",
        "Audit events recorded without waiting that were dropped: the writer's queue was full"
    );
    describe_counter!(
        "mxp_skills_quarantined_total",
        "Skill modules refused for not matching their pinned SHA-256 and moved to skills.quarantine_dir"
    );
    describe_counter!(
        "mxp_audit_checkpoints_total",
        "Audit checkpoints signed and stored"
    );
    describe_counter!(
        "mxp_audit_checkpoint_failures_total",
        "Audit checkpoints not signed or not stored: a store error, or a log that does not extend the last checkpoint (cut or rewritten)"
    );
    describe_counter!(
        "mxp_audit_cosignatures_total",
        "Witness cosignatures of audit checkpoints taken (audit.cosign)"
    );
    describe_gauge!(
        "mxp_audit_subscribers",
        "Live audit subscriptions served (audit.subscribe)"
    );
    describe_counter!(
        "mxp_policy_reloads_total",
        "policy.reload requests by outcome (ok, invalid: the old set stays)"
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
            "node.accept_any_peer = true: any client with a certificate it made itself can connect and call this node's agents (as the policy set allows; the embedded one: read-only tools only, control for operators). Pin peers with node.trusted_peers and set node.accept_any_peer = false before listening beyond loopback"
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
