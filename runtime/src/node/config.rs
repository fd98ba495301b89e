//! `mxp-node` configuration: embedded defaults, then a TOML file, then
//! `MXP_*` environment variables. Loading is pure (the file's text and the
//! environment are inputs) and every error names the key and the reason.

use std::net::SocketAddr;
use std::path::PathBuf;

use mxp_actors::{Rule, SupervisionPolicy};

pub use super::broker_config::{BrokerSection, SkillsSection, ToolLimitsSection};
use mxp_protocol::AgentId;
use mxp_transport::{Limits, MxpUrl, PeerId};
use serde::{Deserialize, Serialize};

/// The defaults, as a commented TOML document (`mxp-node --print-default-config`).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[node]`.
    pub node: NodeSection,
    /// `[metrics]`.
    pub metrics: MetricsSection,
    /// `[transport]`.
    pub transport: Limits,
    /// `[supervision]`.
    pub supervision: SupervisionPolicy,
    /// `[mesh]`.
    pub mesh: MeshSection,
    /// `[governance]`.
    pub governance: GovernanceSection,
    /// `[broker]`.
    pub broker: BrokerSection,
    /// `[skills]`.
    pub skills: SkillsSection,
    /// `[audit]`.
    pub audit: AuditSection,
    /// `[[agents]]`.
    #[serde(default)]
    pub agents: Vec<AgentSection>,
}

/// `[mesh]`: bounds of the registry of remote agents and mesh nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    /// Agents one registering identity may hold here.
    pub max_agents_per_peer: usize,
    /// Remote agents held in all.
    pub max_remote_agents: usize,
    /// Mesh nodes known (and dialled) in all, besides seeds.
    pub max_nodes: usize,
    /// A remote agent offline this long (ms) is forgotten; its id is free again.
    pub forget_after_ms: u64,
    /// Bytes of remote agents' names and capabilities held in all.
    pub max_registry_bytes: usize,
}

impl MeshSection {
    /// As the registry takes them.
    pub fn limits(&self) -> mxp_actors::registry::RegistryLimits {
        mxp_actors::registry::RegistryLimits {
            max_agents_per_peer: self.max_agents_per_peer,
            max_remote_agents: self.max_remote_agents,
            max_nodes: self.max_nodes,
            forget_after: std::time::Duration::from_millis(self.forget_after_ms),
            max_bytes: self.max_registry_bytes,
        }
    }
}

/// `[governance]`: policy, tokens, approvals, budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceSection {
    /// Folder of `*.cedar` files; empty: the embedded default set.
    pub policy_dir: String,
    /// The zone intents are decided in: `sandbox`, `supervised` or `high_stakes`.
    pub zone: String,
    /// A minted capability token is valid this long (ms).
    pub token_ttl_ms: u64,
    /// A Call waits this long for an approval before it is answered
    /// `approval_required` (ms).
    pub approval_wait_ms: u64,
    /// A pending approval expires after this long (ms).
    pub approval_ttl_ms: u64,
    /// Pending approvals held at most.
    pub max_pending_approvals: usize,
    /// The budget window (ms).
    pub budget_window_ms: u64,
    /// Tool calls per agent per window; 0: unlimited.
    pub agent_max_calls: u64,
    /// Tool argument and output bytes per agent per window; 0: unlimited.
    pub agent_max_bytes: u64,
    /// Tool wall time per agent per window (ms); 0: unlimited.
    pub agent_max_wall_ms: u64,
    /// Tool calls per session per window; 0: unlimited.
    pub session_max_calls: u64,
    /// Tool argument and output bytes per session per window; 0: unlimited.
    pub session_max_bytes: u64,
    /// Tool wall time per session per window (ms); 0: unlimited.
    pub session_max_wall_ms: u64,
    /// How the flow rule finds labelled data in a sink's arguments:
    /// `content` or `run`.
    pub flow_mode: String,
}

impl GovernanceSection {
    /// The zone.
    ///
    /// # Errors
    /// [`ConfigError::Key`] for an unknown zone.
    pub fn zone(&self) -> Result<mxp_actors::gate::Zone, ConfigError> {
        use mxp_actors::gate::Zone;
        match self.zone.as_str() {
            "sandbox" => Ok(Zone::Sandbox),
            "supervised" => Ok(Zone::Supervised),
            "high_stakes" => Ok(Zone::HighStakes),
            other => Err(key_err(
                "governance.zone",
                format!("{other:?} is not a zone: use sandbox, supervised or high_stakes"),
            )),
        }
    }

    /// The flow rule's mode.
    ///
    /// # Errors
    /// [`ConfigError::Key`] for an unknown mode.
    pub fn flow_mode(&self) -> Result<mxp_actors::FlowMode, ConfigError> {
        self.flow_mode
            .parse()
            .map_err(|why: String| key_err("governance.flow_mode", why))
    }

    /// The policy source.
    pub fn policy_source(&self) -> mxp_actors::gate::PolicySource {
        use mxp_actors::gate::PolicySource;
        if self.policy_dir.is_empty() {
            PolicySource::Default
        } else {
            PolicySource::Dir(PathBuf::from(&self.policy_dir))
        }
    }

    /// The gate's settings.
    pub fn gate_settings(&self) -> mxp_actors::GateSettings {
        use std::time::Duration;
        let limit = |n: u64| (n > 0).then_some(n);
        let budget = |calls, bytes, wall| mxp_actors::gate::BudgetLimits {
            calls: limit(calls),
            bytes: limit(bytes),
            wall_ms: limit(wall),
            fuel: None,
            window_ms: self.budget_window_ms,
        };
        mxp_actors::GateSettings {
            token_ttl: Duration::from_millis(self.token_ttl_ms),
            approval_wait: Duration::from_millis(self.approval_wait_ms),
            approval_ttl: Duration::from_millis(self.approval_ttl_ms),
            max_pending_approvals: self.max_pending_approvals,
            agent_budget: budget(
                self.agent_max_calls,
                self.agent_max_bytes,
                self.agent_max_wall_ms,
            ),
            session_budget: budget(
                self.session_max_calls,
                self.session_max_bytes,
                self.session_max_wall_ms,
            ),
            // Checked by `Config::validate`; the default if it was not.
            flow_mode: self.flow_mode().unwrap_or_default(),
            ..mxp_actors::GateSettings::default()
        }
    }
}

/// `[audit]`: signed checkpoints, witnesses and live subscribers of the
/// audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// The checkpoint origin line (and the audit key's name); empty:
    /// `<node fingerprint>/audit`.
    pub origin: String,
    /// Records after the last checkpoint that make the next one due.
    pub checkpoint_every_events: u64,
    /// Milliseconds after the last checkpoint that make the next one due,
    /// if the log grew.
    pub checkpoint_every_ms: u64,
    /// Witness verifier keys (`<name>+<hex key ID>+<base64(0x04 ‖ key)>`)
    /// whose cosignatures the node takes.
    pub witnesses: Vec<String>,
    /// Live subscriptions (`audit.subscribe`) served at once.
    pub max_subscriptions: usize,
    /// Live subscriptions one principal may hold at once.
    pub max_subscriptions_per_peer: usize,
}

impl AuditSection {
    /// The checkpoint origin for a node whose fingerprint is `node`.
    pub fn origin_for(&self, node: &PeerId) -> String {
        if self.origin.is_empty() {
            format!("{node}/audit")
        } else {
            self.origin.clone()
        }
    }

    /// The witnesses' keys.
    ///
    /// # Errors
    /// [`ConfigError::Key`] naming the entry that is not a cosignature
    /// verifier key.
    pub fn witness_keys(
        &self,
    ) -> Result<Vec<mxp_governance::audit::note::NoteVerifier>, ConfigError> {
        use mxp_governance::audit::note::{NoteVerifier, SignatureType};
        self.witnesses
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let key = format!("audit.witnesses[{i}]");
                let v = NoteVerifier::parse(w).map_err(|e| {
                    key_err(
                        &key,
                        format!("{w:?} is not a witness key <name>+<hex key ID>+<base64 key>: {e}"),
                    )
                })?;
                if v.signature_type() != SignatureType::Cosignature {
                    return Err(key_err(
                        &key,
                        format!("{w:?} is not a cosignature key (type 0x04): witnesses cosign with tlog-cosignature keys"),
                    ));
                }
                Ok(v)
            })
            .collect()
    }

    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// [`ConfigError::Key`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.origin.is_empty() && !mxp_governance::audit::note::is_valid_name(&self.origin) {
            return Err(key_err(
                "audit.origin",
                format!(
                    "{:?} cannot name a key: no spaces or '+', not empty",
                    self.origin
                ),
            ));
        }
        if self.origin.chars().any(char::is_control) {
            return Err(key_err("audit.origin", "holds a control character"));
        }
        if self.checkpoint_every_events == 0 {
            return Err(key_err(
                "audit.checkpoint_every_events",
                "must be at least 1",
            ));
        }
        if self.checkpoint_every_ms < 100 {
            return Err(key_err(
                "audit.checkpoint_every_ms",
                "must be at least 100 (a checkpoint is a signature and a durable write)",
            ));
        }
        if self.max_subscriptions_per_peer > self.max_subscriptions {
            return Err(key_err(
                "audit.max_subscriptions_per_peer",
                "is above audit.max_subscriptions",
            ));
        }
        self.witness_keys()?;
        Ok(())
    }
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Advertised address; empty for the listen address.
    pub advertise: String,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Nodes to join.
    pub seeds: Vec<MxpUrl>,
    /// Heartbeat period (ms).
    pub heartbeat_interval_ms: u64,
    /// Remote agent TTL (ms).
    pub agent_ttl_ms: u64,
    /// Peers allowed to connect (pinned fingerprints).
    pub trusted_peers: Vec<PeerId>,
    /// Accept any client certificate (identified, not trusted) instead of
    /// `trusted_peers`.
    pub accept_any_peer: bool,
    /// Operators: peers allowed to change the node; empty: nobody.
    pub operators: Vec<PeerId>,
    /// Live sessions held at most.
    pub max_sessions: usize,
    /// An idle session is forgotten after this long (ms).
    pub session_ttl_ms: u64,
    /// Bytes of Call frames and parsed bodies all agents may hold.
    pub max_body_bytes: usize,
    /// Drain time on shutdown (ms).
    pub shutdown_grace_ms: u64,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// HTTP address of `/metrics`; empty: disabled.
    pub listen: String,
}

/// One `[[agents]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Id; derived from the node identity and the name when absent.
    #[serde(default)]
    pub id: Option<AgentId>,
    /// Name, 1 to 256 bytes.
    pub name: String,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Tools beyond the built-in `echo` and `status` (e.g. `fs.read`,
    /// `http.fetch`, `skill.summarise`); empty: the built-ins only.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Planner rules; the default rules when absent.
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
}

/// The tools an agent's rules may name: the built-ins and the ones it lists.
pub fn agent_tool_names(a: &AgentSection) -> Vec<&str> {
    let mut names = vec!["echo", "status"];
    for t in &a.tools {
        if !names.contains(&t.as_str()) {
            names.push(t);
        }
    }
    names
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{origin}: not valid TOML: {message}")]
    Syntax {
        /// Where the text came from.
        origin: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key has a value of the wrong kind, or is unknown.
    #[error("{key}: {reason}")]
    Key {
        /// The key, e.g. `transport.max_connections`.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Environment variables starting with `MXP_` that are not node settings
/// (the `mxp` CLI reads them); `mxp-node` ignores them without a warning.
pub const OTHER_VARIABLES: &[&str] = &["MXP_CONFIG_DIR"];

/// Variables starting with this are secrets for the broker
/// (`MXP_SECRET_<NAME>`), not settings: ignored here, never logged.
pub const SECRET_PREFIX: &str = "MXP_SECRET_";

/// An environment variable that looks like a setting but was ignored, e.g.
/// `MXP_NODE_LISTEN` (one underscore between section and key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The variable's name.
    pub variable: String,
    /// What is wrong with it, and the right spelling when one is close.
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// A configuration, and what loading it warned about (to log at start).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Environment variables ignored though they look like settings.
    pub warnings: Vec<ConfigWarning>,
}

/// `MXP_<SECTION>__<KEY>` for every key of every table in `value`.
fn setting_variables(value: &toml::Value) -> Vec<String> {
    let mut out = Vec::new();
    for (section, v) in value.as_table().into_iter().flatten() {
        for key in v.as_table().into_iter().flat_map(|t| t.keys()) {
            out.push(format!(
                "MXP_{}__{}",
                section.to_ascii_uppercase(),
                key.to_ascii_uppercase()
            ));
        }
    }
    out
}

/// Edit distance (Levenshtein) of two ASCII-ish strings, by bytes.
fn distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diag = i;
        let mut prev = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let cost = diag + usize::from(ca != *cb);
            let cell = cost.min(prev + 1).min(up.saturating_add(1));
            diag = up;
            if let Some(c) = row.get_mut(j + 1) {
                *c = cell;
            }
            prev = cell;
        }
        if let Some(c) = row.first_mut() {
            *c = i + 1;
        }
    }
    row.last().copied().unwrap_or(0)
}

/// The setting variable `name` was probably meant to be: the same letters
/// with other underscores, else the closest within three edits.
fn suggest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let upper = name.to_ascii_uppercase();
    let letters = |s: &str| s.chars().filter(|c| *c != '_').collect::<String>();
    let wanted = letters(&upper);
    if let Some(k) = known.iter().find(|k| letters(k) == wanted) {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (distance(&upper, k), k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn did_you_mean(name: &str, known: &[String]) -> String {
    suggest(name, known)
        .map(|k| format!("; did you mean {k}?"))
        .unwrap_or_default()
}

pub(crate) fn key_err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Overlays `top` onto `base`, table by table; arrays and scalars replace.
fn merge(base: &mut toml::Value, top: toml::Value) {
    match (base, top) {
        (toml::Value::Table(b), toml::Value::Table(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

/// Parses an environment value as a TOML value, or takes it as a string.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

impl Config {
    /// Loads the configuration: defaults, then `file` (its name and text),
    /// then every `MXP_SECTION__KEY` in `env`. Warnings (variables ignored)
    /// are dropped: see [`Config::load_with_warnings`].
    ///
    /// # Errors
    /// [`ConfigError`] naming the key (or the file position) and the reason.
    pub fn load(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::load_with_warnings(file, env).map(|l| l.config)
    }

    /// [`Config::load`], with a warning for every `MXP_` variable that is
    /// neither a setting nor one of [`OTHER_VARIABLES`] (e.g.
    /// `MXP_NODE_LISTEN`: not `MXP_<SECTION>__<KEY>`), naming the setting it
    /// was probably meant to be. A variable naming a section or a key that
    /// does not exist is an error, not a warning.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key (or the file position, or the
    /// variable) and the reason.
    pub fn load_with_warnings(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let syntax = |origin: &str, e: toml::de::Error| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        };
        let mut value: toml::Value =
            toml::from_str(DEFAULT_TOML).map_err(|e| syntax("embedded defaults", e))?;
        if let Some((origin, text)) = file {
            let user: toml::Value = toml::from_str(text).map_err(|e| syntax(origin, e))?;
            // A file that lists agents replaces the default demo agent.
            merge(&mut value, user);
        }
        let known = setting_variables(&value);
        let mut warnings = Vec::new();
        // Keys the environment added that neither the defaults nor the file
        // have: (variable, section, key), to name the variable if unknown.
        let mut added = Vec::new();
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with("MXP_"))
            .collect();
        env.sort();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("MXP_") else {
                continue;
            };
            if OTHER_VARIABLES.contains(&name.as_str()) || name.starts_with(SECRET_PREFIX) {
                continue;
            }
            let Some((section_name, key_name)) = rest
                .split_once("__")
                .map(|(s, k)| (s.to_ascii_lowercase(), k.to_ascii_lowercase()))
                .filter(|(s, k)| !s.is_empty() && !k.is_empty() && !k.contains("__"))
            else {
                let message = match suggest(&name, &known) {
                    Some(k) => format!("not a setting, ignored; did you mean {k}?"),
                    None => "not a setting, ignored: settings are MXP_<SECTION>__<KEY> (two underscores between section and key), listed by mxp-node --print-default-config".to_owned(),
                };
                warnings.push(ConfigWarning {
                    variable: name,
                    message,
                });
                continue;
            };
            let key = format!("{section_name}.{key_name}");
            let section = value
                .as_table_mut()
                .and_then(|t| t.get_mut(&section_name))
                .and_then(toml::Value::as_table_mut)
                .ok_or_else(|| {
                    key_err(
                        &key,
                        format!(
                            "environment variable {name}: no section [{section_name}]{}",
                            did_you_mean(&name, &known)
                        ),
                    )
                })?;
            if !section.contains_key(&key_name) {
                added.push((name.clone(), section_name, key_name.clone()));
            }
            section.insert(key_name, env_value(&raw));
        }
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let reason = e.into_inner().to_string();
            let unknown = added.iter().find(|(_, section, k)| {
                (key == *section || key == format!("{section}.{k}"))
                    && reason.contains(&format!("unknown field `{k}`"))
            });
            match unknown {
                Some((name, section, k)) => key_err(
                    &format!("{section}.{k}"),
                    format!(
                        "environment variable {name}: no key {k} in [{section}]{}",
                        did_you_mean(name, &known)
                    ),
                ),
                None => key_err(if key == "." { "(top level)" } else { &key }, reason),
            }
        })?;
        config.validate()?;
        Ok(Loaded { config, warnings })
    }

    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// [`ConfigError::Key`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transport
            .validate()
            .map_err(|e| key_err("transport", e))?;
        self.supervision
            .validate()
            .map_err(|e| key_err(e.field, e.reason))?;
        match (
            self.node.accept_any_peer,
            self.node.trusted_peers.is_empty(),
        ) {
            (false, true) => {
                return Err(key_err(
                    "node.trusted_peers",
                    "is empty and node.accept_any_peer is false, so no peer could connect: pin peers' fingerprints here, or set node.accept_any_peer = true",
                ));
            }
            (true, false) => {
                return Err(key_err(
                    "node.accept_any_peer",
                    "is true while node.trusted_peers pins peers: choose one (set accept_any_peer = false to pin)",
                ));
            }
            _ => {}
        }
        self.governance.zone()?;
        self.governance.flow_mode()?;
        self.audit.validate()?;
        for (key, v) in [
            ("governance.token_ttl_ms", self.governance.token_ttl_ms),
            (
                "governance.approval_ttl_ms",
                self.governance.approval_ttl_ms,
            ),
            (
                "governance.budget_window_ms",
                self.governance.budget_window_ms,
            ),
        ] {
            if v == 0 {
                return Err(key_err(key, "must be greater than zero"));
            }
        }
        if self.governance.max_pending_approvals == 0 {
            return Err(key_err(
                "governance.max_pending_approvals",
                "must be at least 1",
            ));
        }
        if self.governance.approval_wait_ms > self.governance.approval_ttl_ms {
            return Err(key_err(
                "governance.approval_wait_ms",
                "is longer than governance.approval_ttl_ms: a Call would wait past its approval's expiry",
            ));
        }
        for (key, v) in [
            ("mesh.max_agents_per_peer", self.mesh.max_agents_per_peer),
            ("mesh.max_remote_agents", self.mesh.max_remote_agents),
            ("mesh.max_nodes", self.mesh.max_nodes),
            ("mesh.max_registry_bytes", self.mesh.max_registry_bytes),
        ] {
            if v == 0 {
                return Err(key_err(key, "must be at least 1"));
            }
        }
        if self.node.max_sessions == 0 {
            return Err(key_err("node.max_sessions", "must be at least 1"));
        }
        if self.node.session_ttl_ms == 0 {
            return Err(key_err("node.session_ttl_ms", "must be greater than zero"));
        }
        if self.node.heartbeat_interval_ms == 0 {
            return Err(key_err(
                "node.heartbeat_interval_ms",
                "must be greater than zero",
            ));
        }
        if self.node.agent_ttl_ms <= self.node.heartbeat_interval_ms {
            return Err(key_err(
                "node.agent_ttl_ms",
                "must be longer than node.heartbeat_interval_ms",
            ));
        }
        if !self.node.advertise.is_empty() && self.node.advertise.parse::<SocketAddr>().is_err() {
            return Err(key_err(
                "node.advertise",
                format!(
                    "{:?} is not an address like 192.0.2.7:9000",
                    self.node.advertise
                ),
            ));
        }
        self.broker.validate()?;
        self.skills.validate()?;
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return Err(key_err(
                "metrics.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:9464",
                    self.metrics.listen
                ),
            ));
        }
        for (i, a) in self.agents.iter().enumerate() {
            let key = format!("agents[{i}]");
            if a.name.is_empty() || a.name.len() > mxp_protocol::payload::MAX_AGENT_NAME_LEN {
                return Err(key_err(&format!("{key}.name"), "must be 1 to 256 bytes"));
            }
            if let Some(c) = a
                .capabilities
                .iter()
                .find(|c| c.is_empty() || c.len() > mxp_protocol::payload::MAX_CAPABILITY_LEN)
            {
                return Err(key_err(
                    &format!("{key}.capabilities"),
                    format!("{c:?} must be 1 to 256 bytes"),
                ));
            }
            self.check_agent_tools(&key, a)?;
            if let Some(rules) = &a.rules {
                mxp_actors::RulePlanner::new(rules.clone(), &agent_tool_names(a))
                    .map_err(|e| key_err(&format!("{key}.rules"), e.to_string()))?;
            }
            if self.agents.iter().take(i).any(|b| b.name == a.name) {
                return Err(key_err(
                    &format!("{key}.name"),
                    format!("{:?} is used by another agent", a.name),
                ));
            }
        }
        Ok(())
    }

    /// Checks that every tool `a` lists exists and is configured.
    fn check_agent_tools(&self, key: &str, a: &AgentSection) -> Result<(), ConfigError> {
        let b = &self.broker;
        for (j, t) in a.tools.iter().enumerate() {
            let key = format!("{key}.tools[{j}]");
            let missing = |setting: &str, why: &str| {
                Err(key_err(&key, format!("{t:?} needs {setting} ({why})")))
            };
            match t.as_str() {
                "echo" | "status" => {}
                "fs.read" | "fs.write" | "fs.list" | "fs.stat" if b.fs_root.is_empty() => {
                    return missing("broker.fs_root", "the folder the file tools act in");
                }
                "fs.read" | "fs.write" | "fs.list" | "fs.stat" => {}
                "http.fetch" if b.http_allow.is_empty() => {
                    return missing(
                        "broker.http_allow",
                        "the hosts it may reach; empty, every URL would be refused",
                    );
                }
                "http.fetch" => {}
                "shell.exec" if !b.shell_enabled => {
                    return missing("broker.shell_enabled = true", "it is off by default");
                }
                "shell.exec" => {}
                other => match other.strip_prefix(mxp_skills::SKILL_PREFIX) {
                    Some(skill)
                        if self.skills.pins.contains_key(skill) && self.skills.enabled() => {}
                    Some(skill) => {
                        return missing(
                            &format!("skills.dir and a pin skills.pins.{skill}"),
                            "a skill loads only from the skills folder, with its SHA-256 pinned",
                        );
                    }
                    None => {
                        return Err(key_err(
                            &key,
                            format!(
                                "unknown tool {other:?} (tools: echo, status, {}, skill.<name>)",
                                super::broker_config::BROKER_TOOLS.join(", ")
                            ),
                        ));
                    }
                },
            }
            if a.tools.iter().take(j).any(|u| u == t) {
                return Err(key_err(&key, format!("{t:?} is listed twice")));
            }
        }
        Ok(())
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(
            Some(("node.toml", file)),
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn embedded_defaults_match_the_code_defaults() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.transport, Limits::default());
        assert_eq!(c.supervision, SupervisionPolicy::default());
        assert_eq!(c.node.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.metrics.listen, "127.0.0.1:9464");
        assert_eq!(c.agents.len(), 1);
        assert_eq!(c.agents[0].name, "demo");
        // What --print-default-config prints loads back to the same thing.
        assert_eq!(
            Config::load(Some(("printed", &c.to_toml())), []).unwrap(),
            c
        );
    }

    #[test]
    fn the_audit_section_has_its_defaults_and_names_bad_values() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(
            (
                c.audit.checkpoint_every_events,
                c.audit.checkpoint_every_ms,
                c.audit.max_subscriptions,
                c.audit.max_subscriptions_per_peer
            ),
            (1000, 10_000, 64, 4)
        );
        let node: PeerId = "ab".repeat(32).parse().unwrap();
        assert_eq!(c.audit.origin_for(&node), format!("{node}/audit"));
        let w = mxp_governance::audit::note::Cosigner::new("w.example/w1", &[2; 32])
            .unwrap()
            .verifier()
            .to_vkey();
        let ok = load(
            &format!("[audit]\norigin = \"n.example/audit\"\nwitnesses = [\"{w}\"]\n"),
            &[("MXP_AUDIT__CHECKPOINT_EVERY_EVENTS", "5")],
        )
        .unwrap();
        assert_eq!(ok.audit.witness_keys().unwrap().len(), 1);
        assert_eq!(ok.audit.checkpoint_every_events, 5);
        let node_key = mxp_governance::audit::note::NoteSigner::new("n", &[1; 32])
            .unwrap()
            .verifier()
            .to_vkey();
        for (file, key, why) in [
            (
                "[audit]\norigin = \"has space\"",
                "audit.origin",
                "cannot name a key",
            ),
            (
                "[audit]\ncheckpoint_every_events = 0",
                "audit.checkpoint_every_events",
                "at least 1",
            ),
            (
                "[audit]\ncheckpoint_every_ms = 5",
                "audit.checkpoint_every_ms",
                "at least 100",
            ),
            (
                "[audit]\nmax_subscriptions = 2\nmax_subscriptions_per_peer = 3",
                "audit.max_subscriptions_per_peer",
                "above",
            ),
            (
                "[audit]\nwitnesses = [\"nope\"]",
                "audit.witnesses[0]",
                "not a witness key",
            ),
            (
                &format!("[audit]\nwitnesses = [\"{w}\", \"{node_key}\"]"),
                "audit.witnesses[1]",
                "not a cosignature key",
            ),
        ] {
            let e = load(file, &[]).unwrap_err().to_string();
            assert!(e.starts_with(key) && e.contains(why), "{file}: {e}");
        }
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let c = load(
            "[node]\nlisten = \"127.0.0.1:9100\"\n[transport]\nmax_connections = 5\n",
            &[
                ("MXP_TRANSPORT__MAX_CONNECTIONS", "7"),
                ("MXP_NODE__SEEDS", "[\"mxp://127.0.0.1:9000\"]"),
                ("MXP_CONFIG_DIR", "/x"),
            ],
        )
        .unwrap();
        assert_eq!(c.node.listen.port(), 9100);
        assert_eq!(
            c.transport.max_connections, 7,
            "environment wins over the file"
        );
        assert_eq!(c.node.seeds.len(), 1);
        assert_eq!(
            c.transport.max_streams_per_connection, 256,
            "untouched keys keep their defaults"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case<'_>] = &[
            (
                "[transport]\nmax_connections = \"many\"",
                &[],
                "transport.max_connections",
                "invalid type",
            ),
            (
                "[node]\nlisten = \"nowhere\"",
                &[],
                "node.listen",
                "invalid socket address",
            ),
            (
                "[node]\nlistn = \"x\"",
                &[],
                "node",
                "unknown field `listn`",
            ),
            (
                "[transport]\nmax_frame_payload = 16777217",
                &[],
                "transport",
                "max_frame_payload",
            ),
            (
                "[node]\nagent_ttl_ms = 10",
                &[],
                "node.agent_ttl_ms",
                "longer",
            ),
            (
                "[node]\nseeds = [\"http://x\"]",
                &[],
                "node.seeds[0]",
                "mxp://",
            ),
            (
                "[node]\ntrusted_peers = [\"abc\"]",
                &[],
                "node.trusted_peers[0]",
                "64 hex digits",
            ),
            (
                "[[agents]]\nname = \"a\"\n[[agents.rules]]\nmethod = \"x\"\nsteps = [{ tool = \"shell\" }]",
                &[],
                "agents[0].rules",
                "unknown tool",
            ),
            (
                "",
                &[("MXP_NODE__LISTEN", "bad")],
                "node.listen",
                "invalid socket address",
            ),
            ("", &[("MXP_NOPE__X", "1")], "nope.x", "no section [nope]"),
            (
                "[metrics]\nlisten = \"x\"",
                &[],
                "metrics.listen",
                "not an address",
            ),
        ];
        for (file, env, key, reason) in cases {
            let e = load(file, env).unwrap_err().to_string();
            assert!(e.starts_with(key), "{file:?}: {e}");
            assert!(e.contains(reason), "{file:?}: {e}");
        }
        let e = load("[node", &[]).unwrap_err().to_string();
        assert!(e.starts_with("node.toml: not valid TOML"), "{e}");
    }

    fn warnings(env: &[(&str, &str)]) -> Vec<ConfigWarning> {
        Config::load_with_warnings(
            None,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap()
        .warnings
    }

    #[test]
    fn misspelled_variables_are_warned_about_with_the_right_spelling() {
        let w = warnings(&[("MXP_NODE_LISTEN", "127.0.0.1:9001")]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].variable, "MXP_NODE_LISTEN");
        assert!(
            w[0].message.contains("did you mean MXP_NODE__LISTEN?"),
            "{w:?}"
        );
        assert!(w[0].to_string().starts_with("MXP_NODE_LISTEN: "));
        for (wrong, right) in [
            ("MXP_METRICS_LISTEN", "MXP_METRICS__LISTEN"),
            ("MXP_NODE__DATA__DIR", "MXP_NODE__DATA_DIR"),
            ("MXP_NODE_DATA_DIR", "MXP_NODE__DATA_DIR"),
            ("MXP_NODELISTEN", "MXP_NODE__LISTEN"),
        ] {
            let w = warnings(&[(wrong, "1")]);
            assert_eq!(w.len(), 1, "{wrong}: {w:?}");
            assert!(
                w[0].message.contains(&format!("did you mean {right}?")),
                "{wrong}: {w:?}"
            );
        }
        // Nothing close: the message says how settings are spelled.
        let w = warnings(&[("MXP_WHATEVER", "1")]);
        assert!(w[0].message.contains("MXP_<SECTION>__<KEY>"), "{w:?}");
        // The CLI's variables, right spellings and other prefixes: no warning.
        assert!(
            warnings(&[
                ("MXP_CONFIG_DIR", "/x"),
                ("MXP_NODE__LISTEN", "127.0.0.1:9001"),
                ("MXPNODE_LISTEN", "x"),
                ("HOME", "/home/x"),
            ])
            .is_empty()
        );
        // The misspelled variable really was ignored.
        let c = Config::load_with_warnings(
            None,
            [("MXP_NODE_LISTEN".to_owned(), "127.0.0.1:9001".to_owned())],
        )
        .unwrap();
        assert_eq!(c.config.node.listen.port(), 9000);
    }

    #[test]
    fn unknown_sections_and_keys_from_the_environment_name_the_variable() {
        let e = load("", &[("MXP_NDOE__LISTEN", "127.0.0.1:1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MXP_NDOE__LISTEN"), "{e}");
        assert!(e.contains("did you mean MXP_NODE__LISTEN?"), "{e}");
        let e = load("", &[("MXP_NODE__LISTN", "127.0.0.1:1")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("node.listn: environment variable MXP_NODE__LISTN"),
            "{e}"
        );
        assert!(e.contains("did you mean MXP_NODE__LISTEN?"), "{e}");
        for (wrong, right) in [
            ("MXP__NODE__LISTEN", "MXP_NODE__LISTEN"),
            (
                "MXP_TRANSPORT___MAX_CONNECTIONS",
                "MXP_TRANSPORT__MAX_CONNECTIONS",
            ),
        ] {
            let e = load("", &[(wrong, "1")]).unwrap_err().to_string();
            assert!(e.contains(wrong), "{e}");
            assert!(e.contains(&format!("did you mean {right}?")), "{e}");
        }
        // An unknown key in the file is still the deserialiser's error.
        let e = load("[node]\nlistn = \"x\"", &[]).unwrap_err().to_string();
        assert!(e.contains("unknown field `listn`"), "{e}");
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("MXP_NODE_LISTEN", "MXP_NODE__LISTEN"), 1);
    }

    #[test]
    fn broker_and_skills_are_off_by_default_and_agents_have_the_builtins_only() {
        let c = Config::load(None, []).unwrap();
        assert!(c.broker.fs_root.is_empty());
        assert!(c.broker.http_allow.is_empty());
        assert!(!c.broker.shell_enabled);
        assert!(c.broker.secrets_file.is_empty());
        assert!(!c.skills.enabled());
        assert!(c.agents[0].tools.is_empty());
        assert_eq!(agent_tool_names(&c.agents[0]), vec!["echo", "status"]);
        // The code's defaults of the broker agree with the embedded ones.
        let http = c.broker.http_settings().unwrap();
        let code = mxp_broker::http::HttpSettings::default();
        assert_eq!(http.methods, code.methods);
        assert_eq!(http.max_response_body, code.max_response_body);
        assert_eq!(http.timeout, code.timeout);
        assert_eq!(http.redirects, None);
        assert_eq!(c.broker.fs_limits(), mxp_broker::fs::FsLimits::default());
        let shell = c.broker.shell_settings().unwrap();
        assert_eq!(shell, mxp_broker::shell::ShellSettings::default());
        let runner = c.skills.settings().runner;
        assert_eq!(runner, mxp_skills::RunnerConfig::default());
        assert_eq!(
            c.broker.ledger_settings(),
            mxp_broker::outcome::LedgerSettings::default()
        );
    }

    #[test]
    fn agents_get_the_tools_they_list_when_those_are_configured() {
        let file = "[broker]\nfs_root = \"/srv/files\"\nhttp_allow = [\"api.example.com\", \"127.0.0.1:8080\"]\nhttp_allowed_classes = [\"loopback\"]\n\
            tool_limits = { \"fs.read\" = { timeout_ms = 5000 } }\n\
            [skills]\ndir = \"/srv/skills\"\nquarantine_dir = \"/srv/quarantine\"\npins = { summarise = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" }\n\
            [[agents]]\nname = \"a\"\ntools = [\"fs.read\", \"http.fetch\", \"skill.summarise\"]\n\
            [[agents.rules]]\nmethod = \"read\"\nsteps = [{ tool = \"fs.read\", args = \"$params\" }]\n";
        let c = load(file, &[]).unwrap();
        assert_eq!(
            agent_tool_names(&c.agents[0]),
            vec!["echo", "status", "fs.read", "http.fetch", "skill.summarise"]
        );
        assert_eq!(c.broker.limits("fs.read").timeout.as_millis(), 5000);
        assert_eq!(c.broker.limits("fs.write").timeout.as_millis(), 60_000);
        let http = c.broker.http_settings().unwrap();
        assert_eq!(http.allow[1].port, Some(8080));
        // What --print-default-config style printing gives loads back.
        assert_eq!(
            Config::load(Some(("printed", &c.to_toml())), []).unwrap(),
            c
        );
        // The same through the environment.
        let c = load(
            "",
            &[
                ("MXP_BROKER__FS_ROOT", "/srv/files"),
                ("MXP_BROKER__SHELL_ENABLED", "true"),
                ("MXP_BROKER__SHELL_ALLOW", "[\"/bin/echo\"]"),
                (
                    "MXP_SKILLS__PINS",
                    "{ a = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" }",
                ),
                ("MXP_SECRET_API_KEY", "never-a-setting"),
            ],
        )
        .unwrap();
        assert_eq!(c.broker.fs_root, "/srv/files");
        assert!(c.broker.shell_enabled);
        assert!(c.skills.pins.contains_key("a"));
        // A secret variable is neither a setting nor warned about.
        assert!(warnings(&[("MXP_SECRET_API_KEY", "x")]).is_empty());
    }

    #[test]
    fn broker_and_skills_errors_name_the_key() {
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let agent = |tools: &str| format!("[[agents]]\nname = \"a\"\ntools = [{tools}]\n");
        let cases: Vec<(String, &str, &str)> = vec![
            (
                agent("\"fs.read\""),
                "agents[0].tools[0]",
                "needs broker.fs_root",
            ),
            (
                agent("\"http.fetch\""),
                "agents[0].tools[0]",
                "needs broker.http_allow",
            ),
            (
                agent("\"shell.exec\""),
                "agents[0].tools[0]",
                "broker.shell_enabled = true",
            ),
            (agent("\"skill.x\""), "agents[0].tools[0]", "skills.pins.x"),
            (agent("\"rm\""), "agents[0].tools[0]", "unknown tool \"rm\""),
            (
                format!(
                    "[broker]\nfs_root = \"/r\"\n{}",
                    agent("\"fs.read\", \"fs.read\"")
                ),
                "agents[0].tools[1]",
                "listed twice",
            ),
            (
                format!(
                    "{}[[agents.rules]]\nmethod = \"r\"\nsteps = [{{ tool = \"fs.read\" }}]\n",
                    agent("")
                ),
                "agents[0].rules",
                "unknown tool \"fs.read\"",
            ),
            (
                "[broker]\nfs_root = \"relative/dir\"".into(),
                "broker.fs_root",
                "not an absolute path",
            ),
            (
                "[broker]\nshell_enabled = true\nshell_allow = [\"echo\"]".into(),
                "broker.shell_allow[0]",
                "not an absolute path",
            ),
            (
                "[broker]\nhttp_allow = [\"localhost:80\"]".into(),
                "broker.http_allow[0]",
                "this machine",
            ),
            (
                "[broker]\nhttp_allow = [\"::1\"]".into(),
                "broker.http_allow[0]",
                "brackets",
            ),
            (
                "[broker]\nhttp_allowed_classes = [\"nat64\"]".into(),
                "broker.http_allowed_classes[0]",
                "always refused",
            ),
            (
                "[broker]\nhttp_allowed_classes = [\"lan\"]".into(),
                "broker.http_allowed_classes[0]",
                "not an address class",
            ),
            (
                "[broker]\nhttp_methods = [\"get\"]".into(),
                "broker.http_methods[0]",
                "upper case",
            ),
            (
                "[broker]\nhttp_timeout_ms = 0".into(),
                "broker.http_timeout_ms",
                "greater than zero",
            ),
            (
                "[broker]\nhttp_timeout_ms = 90000".into(),
                "broker.tool_timeout_ms",
                "longer than broker.http_timeout_ms",
            ),
            (
                "[broker]\ntool_limits = { \"shell.exec\" = { timeout_ms = 1000 } }".into(),
                "broker.tool_limits.\"shell.exec\".timeout_ms",
                "longer than broker.shell_timeout_ms",
            ),
            (
                "[broker]\ntool_limits = { \"fs.reed\" = {} }".into(),
                "broker.tool_limits.\"fs.reed\"",
                "no brokered tool",
            ),
            (
                "[broker]\nshell_run_as = \"nobody\"".into(),
                "broker.shell_run_as",
                "uid:gid",
            ),
            (
                "[skills]\ndir = \"/s\"".into(),
                "skills.quarantine_dir",
                "must be set",
            ),
            (
                "[skills]\ndir = \"/s\"\nquarantine_dir = \"/s/q\"".into(),
                "skills.quarantine_dir",
                "outside skills.dir",
            ),
            (
                "[skills]\npins = { \"Bad\" = \"x\" }".into(),
                "skills.pins.Bad",
                "skill name",
            ),
            (
                "[skills]\npins = { ok = \"ABC\" }".into(),
                "skills.pins.ok",
                "SHA-256",
            ),
            (
                "[skills]\nmax_memory_bytes = 1".into(),
                "skills.max_memory_bytes",
                "64 KiB",
            ),
            (
                format!(
                    "[skills]\npins = {{ s = \"{hash}\" }}\n{}",
                    agent("\"skill.s\"")
                ),
                "agents[0].tools[0]",
                "skills.dir",
            ),
            (
                "[broker]\nfs_rot = \"/x\"".into(),
                "broker",
                "unknown field `fs_rot`",
            ),
        ];
        for (file, key, reason) in &cases {
            let e = load(file, &[]).unwrap_err().to_string();
            assert!(e.starts_with(key), "{file:?}: {e}");
            assert!(e.contains(reason), "{file:?}: {e}");
        }
    }

    #[test]
    fn a_file_listing_agents_replaces_the_demo_agent() {
        let c = load(
            "[[agents]]\nname = \"a\"\n[[agents]]\nname = \"b\"\ncapabilities = [\"x\"]",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.agents.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert!(
            load("[[agents]]\nname = \"a\"\n[[agents]]\nname = \"a\"", &[])
                .unwrap_err()
                .to_string()
                .contains("agents[1].name")
        );
    }
}
