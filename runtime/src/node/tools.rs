//! Each agent's tools, from `[broker]`, `[skills]` and its `tools` list:
//! what needs files, sockets or processes is opened and checked here, at
//! start, so a node that cannot use its configuration refuses to start and
//! names the key.
//!
//! Safe by default: an agent lists nothing, it has `echo` and `status`
//! only; nothing of the broker is opened unless some agent needs it (the
//! shell's probe runs whenever `broker.shell_enabled` is true).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mxp_actors::store::Store;
use mxp_actors::{EffectClass, NodeService, Tool, ToolRegistry};
use mxp_broker::Broker;
use mxp_broker::fs::FsRoot;
use mxp_broker::outcome::OutcomeLedger;
use mxp_broker::secret::SecretStore;
use mxp_broker::shell::{ShellError, ShellJail};
use mxp_broker::tools::{HttpTool, ShellTool, fs_tools_with};
use mxp_skills::{SKILL_PREFIX, SkillService, skill_effect};

use super::RunError;
use super::config::{Config, ConfigError, key_err};

/// What the agents' tools came to.
pub(crate) struct Tools {
    /// Each agent's registry, in the order of `config.agents`.
    pub(crate) registries: Vec<Arc<ToolRegistry>>,
    /// Node-wide services to supervise (the skill runner).
    pub(crate) node_services: Vec<Arc<dyn NodeService>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether some agent lists `tool`.
fn wanted(config: &Config, tool: &str) -> bool {
    config
        .agents
        .iter()
        .any(|a| a.tools.iter().any(|t| t == tool))
}

/// The broker every brokered tool shares: secrets from `MXP_SECRET_*` and
/// `broker.secrets_file`; the outcome ledger in the node's store.
fn broker(config: &Config, store: &Arc<Store>) -> Result<Arc<Broker>, RunError> {
    let b = &config.broker;
    let mut secrets = SecretStore::new();
    for skipped in secrets.add_env(std::env::vars_os()) {
        tracing::warn!(
            "environment variable {skipped}: not a usable secret (a name is 1 to 64 of A-Z a-z 0-9 _ . -, a value UTF-8 of at most 64 KiB); ignored"
        );
    }
    if !b.secrets_file.is_empty() {
        secrets
            .add_file(Path::new(&b.secrets_file))
            .map_err(|e| key_err("broker.secrets_file", e.to_string()))?;
    }
    let (ledger, in_doubt) = OutcomeLedger::open(store.clone(), b.ledger_settings(), now_ms())
        .map_err(RunError::Ledger)?;
    if !in_doubt.is_empty() {
        tracing::warn!(
            records = in_doubt.len(),
            "the outcome ledger holds effects left in doubt by an earlier run (the node stopped while they ran); their idempotency keys are refused until resolved"
        );
    }
    tracing::info!(
        secrets = secrets.len(),
        "tool broker ready (secret names only are ever logged)"
    );
    Ok(Arc::new(Broker::new(secrets, Some(ledger))))
}

/// The `shell.exec` jail, checked and probed.
fn shell_jail(config: &Config) -> Result<ShellJail, ConfigError> {
    let b = &config.broker;
    ShellJail::new(b.shell_settings()?).map_err(|e| match &e {
        ShellError::BadAllowEntry { path, .. } => {
            let i = b
                .shell_allow
                .iter()
                .position(|p| Path::new(p) == path)
                .unwrap_or(0);
            key_err(&format!("broker.shell_allow[{i}]"), e.to_string())
        }
        _ => key_err("broker.shell_enabled", e.to_string()),
    })
}

/// Opens and checks what the agents' tools need, and builds each agent's
/// registry.
///
/// # Errors
/// [`RunError::Config`] naming the key (a secrets file others may read, an
/// fs root that cannot be opened, a shell that cannot be jailed, a skills
/// folder that cannot be read, a skill's manifest asking for a tool its
/// agent does not have); [`RunError::Ledger`] when the outcome ledger
/// cannot be opened.
pub(crate) fn build(config: &Config, store: &Arc<Store>) -> Result<Tools, RunError> {
    let b = &config.broker;
    let any_brokered = config.agents.iter().any(|a| {
        a.tools
            .iter()
            .any(|t| super::broker_config::BROKER_TOOLS.contains(&t.as_str()))
    });
    let broker = if any_brokered {
        Some(broker(config, store)?)
    } else {
        None
    };
    // Tools by name, each made once and shared by the agents that list it.
    let mut made: BTreeMap<String, Arc<dyn Tool>> = BTreeMap::new();
    if let Some(broker) = &broker {
        if ["fs.read", "fs.write", "fs.list", "fs.stat"]
            .iter()
            .any(|t| wanted(config, t))
        {
            let root = FsRoot::open(Path::new(&b.fs_root), b.fs_limits()).map_err(|e| {
                key_err(
                    "broker.fs_root",
                    format!("{:?} cannot be opened as a folder: {e}", b.fs_root),
                )
            })?;
            for t in fs_tools_with(root, broker.clone(), |name| b.limits(name)) {
                made.insert(t.name().to_owned(), t);
            }
        }
        if wanted(config, "http.fetch") {
            let fetcher = mxp_broker::http::HttpFetcher::new(
                b.http_settings()?,
                mxp_broker::http::SystemResolver,
            )
            .map_err(|e| key_err("broker.http_allow", e.to_string()))?;
            let tool = HttpTool::new(fetcher, broker.clone(), b.limits("http.fetch"));
            made.insert("http.fetch".into(), Arc::new(tool));
        }
    }
    if b.shell_enabled {
        let jail = shell_jail(config)?;
        if let Some(broker) = &broker {
            let tool = ShellTool::new(jail, broker.clone(), b.limits("shell.exec"));
            made.insert("shell.exec".into(), Arc::new(tool));
        }
    }
    let skills = if config.skills.enabled() {
        let service = SkillService::start(config.skills.settings())
            .map_err(|e| key_err("skills.dir", e.to_string()))?;
        let loaded: Vec<&str> = service.loaded().collect();
        tracing::info!(skills = ?loaded, "skills verified and loaded");
        Some(service)
    } else {
        None
    };
    let mut registries = Vec::with_capacity(config.agents.len());
    for (i, a) in config.agents.iter().enumerate() {
        let mut r = ToolRegistry::builtin();
        let key = format!("agents[{i}].tools");
        for t in &a.tools {
            if let Some(tool) = made.get(t) {
                r.register(tool.clone())
                    .map_err(|e| key_err(&key, e.to_string()))?;
            }
        }
        for t in &a.tools {
            let (Some(skill), Some(service)) = (t.strip_prefix(SKILL_PREFIX), &skills) else {
                continue;
            };
            let effect = match service.manifest(skill) {
                Some(m) => skill_effect(m, |u| {
                    if u.starts_with(SKILL_PREFIX) {
                        // A skill calling a skill: as strong as anything.
                        a.tools.iter().any(|x| x == u).then_some(EffectClass::ExternalWrite)
                    } else {
                        r.get(u).map(|tool| tool.effect())
                    }
                })
                .map_err(|missing| {
                    key_err(
                        &key,
                        format!(
                            "{t}'s manifest lists tool {missing:?}, which agent {:?} does not have: add it to this agent's tools, or remove it from the skill's manifest",
                            a.name
                        ),
                    )
                })?,
                None => {
                    tracing::warn!(
                        agent = %a.name,
                        "{t} is not loaded (refused when the skills were verified, see above): its calls fail until it verifies"
                    );
                    // Unknown powers: the strictest class.
                    EffectClass::ExternalWrite
                }
            };
            r.register(Arc::new(service.tool(skill, effect)))
                .map_err(|e| key_err(&key, e.to_string()))?;
        }
        registries.push(Arc::new(r));
    }
    let node_services = skills
        .into_iter()
        .map(|s| Arc::new(s) as Arc<dyn NodeService>)
        .collect();
    Ok(Tools {
        registries,
        node_services,
    })
}
