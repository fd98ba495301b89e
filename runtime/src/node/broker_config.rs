//! `[broker]` and `[skills]`: the tools beyond `echo` and `status`, and the
//! checks of their settings that need no file or socket (the rest happen
//! at start, in `node/tools.rs`). Every key is flat in its section, so
//! each has its `MXP_BROKER__<KEY>` / `MXP_SKILLS__<KEY>` variable.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::{ConfigError, key_err};

/// The brokered tools, by name.
pub const BROKER_TOOLS: &[&str] = &[
    "fs.read",
    "fs.write",
    "fs.list",
    "fs.stat",
    "http.fetch",
    "shell.exec",
];

/// `[broker]`: the tool broker (files, HTTP, shell, secrets, outcomes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// Longest any brokered act may take (ms), unless `tool_limits` says otherwise.
    pub tool_timeout_ms: u64,
    /// Largest output of a brokered act (bytes of JSON), unless `tool_limits` says otherwise.
    pub tool_max_output_bytes: usize,
    /// Per-tool `timeout_ms` and `max_output_bytes`, by tool name.
    pub tool_limits: BTreeMap<String, ToolLimitsSection>,
    /// A TOML file of `NAME = "value"` secrets (mode 0600 or 0400); empty: none.
    pub secrets_file: String,
    /// Finished outcome records are pruned after this long (ms).
    pub ledger_retention_ms: u64,
    /// Outcome records kept at most.
    pub ledger_max_records: usize,
    /// The folder the file tools act in; empty: no file tools.
    pub fs_root: String,
    /// Largest file `fs.read` returns.
    pub fs_max_read_bytes: u64,
    /// Largest content `fs.write` accepts.
    pub fs_max_write_bytes: u64,
    /// Most entries one `fs.list` returns.
    pub fs_max_list_entries: usize,
    /// Longest relative path, in bytes.
    pub fs_max_path_len: usize,
    /// Hosts `http.fetch` may reach: `host`, `host:port`, `[v6]:port`.
    pub http_allow: Vec<String>,
    /// Address classes allowed besides global unicast (`loopback`, `private`, ...).
    pub http_allowed_classes: Vec<String>,
    /// Methods allowed.
    pub http_methods: Vec<String>,
    /// Largest request body.
    pub http_max_request_body: usize,
    /// Largest response body.
    pub http_max_response_body: usize,
    /// Most headers, request and response each.
    pub http_max_headers: usize,
    /// Most bytes of header names and values, request and response each.
    pub http_max_header_bytes: usize,
    /// The whole exchange (ms).
    pub http_timeout_ms: u64,
    /// Resolve, connect and TLS handshake (ms).
    pub http_connect_timeout_ms: u64,
    /// Redirect hops followed, each checked like the first URL; 0: none.
    pub http_redirects: u8,
    /// Whether `shell.exec` runs at all.
    pub shell_enabled: bool,
    /// Absolute paths of the programs `shell.exec` may run.
    pub shell_allow: Vec<String>,
    /// Environment variables a request may pass, with their values.
    pub shell_env: BTreeMap<String, String>,
    /// CPU seconds of a run.
    pub shell_cpu_secs: u64,
    /// Address space of a run, in bytes.
    pub shell_memory_bytes: u64,
    /// Open files of a run.
    pub shell_open_files: u64,
    /// Processes of a run.
    pub shell_processes: u64,
    /// Wall-clock time of a run (ms).
    pub shell_timeout_ms: u64,
    /// Bytes of stdout kept.
    pub shell_max_stdout: usize,
    /// Bytes of stderr kept.
    pub shell_max_stderr: usize,
    /// Bytes of stdin a request may give.
    pub shell_max_stdin: usize,
    /// Arguments a request may give.
    pub shell_max_args: usize,
    /// Bytes of one argument.
    pub shell_max_arg_bytes: usize,
    /// `uid:gid` a root node's jail drops to; empty: 65534:65534.
    pub shell_run_as: String,
    /// Where `unshare` is.
    pub shell_unshare: String,
    /// Where `prlimit` is.
    pub shell_prlimit: String,
    /// Where `setpriv` is.
    pub shell_setpriv: String,
}

/// One entry of `broker.tool_limits`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolLimitsSection {
    /// Longest the tool's act may take (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Largest output (bytes of JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<usize>,
}

/// `[skills]`: WebAssembly skills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillsSection {
    /// The skills folder; empty: no skills.
    pub dir: String,
    /// Where tampered modules are moved (same filesystem as `dir`).
    pub quarantine_dir: String,
    /// The SHA-256 each skill's module must have, by skill name.
    pub pins: BTreeMap<String, String>,
    /// Skills running at once, at most (pool slots).
    pub max_instances: u32,
    /// The largest memory any skill may have, in bytes (each slot's size).
    pub max_memory_bytes: u64,
}

impl BrokerSection {
    /// The key that sets `tool`'s time limit, as an error names it.
    fn timeout_key(&self, tool: &str) -> String {
        match self.tool_limits.get(tool).and_then(|o| o.timeout_ms) {
            Some(_) => format!("broker.tool_limits.\"{tool}\".timeout_ms"),
            None => "broker.tool_timeout_ms".into(),
        }
    }

    /// The time and size limits of `tool`.
    pub fn limits(&self, tool: &str) -> mxp_broker::ToolLimits {
        let over = self.tool_limits.get(tool);
        mxp_broker::ToolLimits {
            timeout: Duration::from_millis(
                over.and_then(|o| o.timeout_ms)
                    .unwrap_or(self.tool_timeout_ms),
            ),
            max_output_bytes: over
                .and_then(|o| o.max_output_bytes)
                .unwrap_or(self.tool_max_output_bytes),
        }
    }

    /// The file tools' limits.
    pub fn fs_limits(&self) -> mxp_broker::fs::FsLimits {
        mxp_broker::fs::FsLimits {
            max_read_bytes: self.fs_max_read_bytes,
            max_write_bytes: self.fs_max_write_bytes,
            max_list_entries: self.fs_max_list_entries,
            max_path_len: self.fs_max_path_len,
        }
    }

    /// `http.fetch`'s settings.
    ///
    /// # Errors
    /// [`ConfigError::Key`] naming the entry that does not parse.
    pub fn http_settings(&self) -> Result<mxp_broker::http::HttpSettings, ConfigError> {
        use mxp_broker::addr::AddrClass;
        use mxp_broker::http::{HostRule, Method};
        let allow = self
            .http_allow
            .iter()
            .enumerate()
            .map(|(i, e)| {
                HostRule::parse(e).map_err(|why| {
                    key_err(&format!("broker.http_allow[{i}]"), format!("{e:?}: {why}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut classes = Vec::new();
        for (i, name) in self.http_allowed_classes.iter().enumerate() {
            let key = format!("broker.http_allowed_classes[{i}]");
            match AddrClass::from_name(name) {
                Some(c @ (AddrClass::Ipv4InIpv6 | AddrClass::Nat64)) => {
                    return Err(key_err(
                        &key,
                        format!(
                            "{:?} is always refused: the IPv4 address such an address reaches is never checked",
                            c.name()
                        ),
                    ));
                }
                Some(c) => classes.push(c),
                None => {
                    return Err(key_err(
                        &key,
                        format!(
                            "{name:?} is not an address class: use loopback, private, link_local, shared_cgnat, metadata, multicast, unspecified or reserved"
                        ),
                    ));
                }
            }
        }
        let methods = self
            .http_methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Method::from_bytes(m.as_bytes())
                    .ok()
                    .filter(|_| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()))
                    .ok_or_else(|| {
                        key_err(
                            &format!("broker.http_methods[{i}]"),
                            format!("{m:?} is not an HTTP method in upper case (e.g. GET)"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(mxp_broker::http::HttpSettings {
            allow,
            allowed_classes: classes,
            methods,
            max_request_body: self.http_max_request_body,
            max_response_body: self.http_max_response_body,
            max_headers: self.http_max_headers,
            max_header_bytes: self.http_max_header_bytes,
            timeout: Duration::from_millis(self.http_timeout_ms),
            connect_timeout: Duration::from_millis(self.http_connect_timeout_ms),
            redirects: (self.http_redirects > 0).then_some(self.http_redirects),
        })
    }

    /// `shell.exec`'s settings.
    ///
    /// # Errors
    /// [`ConfigError::Key`] for a `run_as` that is not `uid:gid`.
    pub fn shell_settings(&self) -> Result<mxp_broker::shell::ShellSettings, ConfigError> {
        use mxp_broker::shell::{JailTools, ShellLimits, ShellSettings};
        let run_as = if self.shell_run_as.is_empty() {
            None
        } else {
            let parsed = self
                .shell_run_as
                .split_once(':')
                .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)));
            Some(parsed.ok_or_else(|| {
                key_err(
                    "broker.shell_run_as",
                    format!(
                        "{:?} is not uid:gid (numbers, e.g. 65534:65534)",
                        self.shell_run_as
                    ),
                )
            })?)
        };
        Ok(ShellSettings {
            enabled: self.shell_enabled,
            allow: self.shell_allow.iter().map(PathBuf::from).collect(),
            env: self.shell_env.clone(),
            limits: ShellLimits {
                cpu_secs: self.shell_cpu_secs,
                memory_bytes: self.shell_memory_bytes,
                open_files: self.shell_open_files,
                processes: self.shell_processes,
                timeout: Duration::from_millis(self.shell_timeout_ms),
                max_stdout: self.shell_max_stdout,
                max_stderr: self.shell_max_stderr,
                max_stdin: self.shell_max_stdin,
                max_args: self.shell_max_args,
                max_arg_bytes: self.shell_max_arg_bytes,
            },
            run_as,
            tools: JailTools {
                unshare: PathBuf::from(&self.shell_unshare),
                prlimit: PathBuf::from(&self.shell_prlimit),
                setpriv: PathBuf::from(&self.shell_setpriv),
            },
        })
    }

    /// The outcome ledger's settings.
    pub fn ledger_settings(&self) -> mxp_broker::outcome::LedgerSettings {
        mxp_broker::outcome::LedgerSettings {
            retention_ms: self.ledger_retention_ms,
            max_records: self.ledger_max_records,
        }
    }

    /// Checks what needs no file or socket.
    ///
    /// # Errors
    /// [`ConfigError::Key`] naming the key and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("broker.tool_timeout_ms", self.tool_timeout_ms),
            (
                "broker.tool_max_output_bytes",
                self.tool_max_output_bytes as u64,
            ),
            ("broker.ledger_retention_ms", self.ledger_retention_ms),
            ("broker.ledger_max_records", self.ledger_max_records as u64),
            ("broker.fs_max_read_bytes", self.fs_max_read_bytes),
            ("broker.fs_max_write_bytes", self.fs_max_write_bytes),
            (
                "broker.fs_max_list_entries",
                self.fs_max_list_entries as u64,
            ),
            ("broker.fs_max_path_len", self.fs_max_path_len as u64),
            (
                "broker.http_max_response_body",
                self.http_max_response_body as u64,
            ),
            ("broker.http_max_headers", self.http_max_headers as u64),
            (
                "broker.http_max_header_bytes",
                self.http_max_header_bytes as u64,
            ),
            ("broker.http_timeout_ms", self.http_timeout_ms),
            (
                "broker.http_connect_timeout_ms",
                self.http_connect_timeout_ms,
            ),
            ("broker.shell_cpu_secs", self.shell_cpu_secs),
            ("broker.shell_memory_bytes", self.shell_memory_bytes),
            ("broker.shell_open_files", self.shell_open_files),
            ("broker.shell_processes", self.shell_processes),
            ("broker.shell_timeout_ms", self.shell_timeout_ms),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(key_err(key, "must be greater than zero"));
            }
        }
        for (tool, l) in &self.tool_limits {
            let key = format!("broker.tool_limits.\"{tool}\"");
            if !BROKER_TOOLS.contains(&tool.as_str()) {
                return Err(key_err(
                    &key,
                    format!(
                        "no brokered tool is named {tool:?} (they are: {})",
                        BROKER_TOOLS.join(", ")
                    ),
                ));
            }
            if l.timeout_ms == Some(0) || l.max_output_bytes == Some(0) {
                return Err(key_err(
                    &key,
                    "timeout_ms and max_output_bytes must be greater than zero",
                ));
            }
        }
        if !self.fs_root.is_empty() && !Path::new(&self.fs_root).is_absolute() {
            return Err(key_err(
                "broker.fs_root",
                format!("{:?} is not an absolute path", self.fs_root),
            ));
        }
        self.http_settings()?;
        let fetch = self.limits("http.fetch").timeout;
        if fetch <= Duration::from_millis(self.http_timeout_ms) {
            return Err(key_err(
                &self.timeout_key("http.fetch"),
                format!(
                    "http.fetch's broker time limit ({} ms) must be longer than broker.http_timeout_ms ({} ms), which ends a fetch first and says whether it was sent",
                    fetch.as_millis(),
                    self.http_timeout_ms
                ),
            ));
        }
        for (i, p) in self.shell_allow.iter().enumerate() {
            if !Path::new(p).is_absolute() {
                return Err(key_err(
                    &format!("broker.shell_allow[{i}]"),
                    format!("{p:?} is not an absolute path: shell.exec never searches PATH"),
                ));
            }
        }
        for (key, p) in [
            ("broker.shell_unshare", &self.shell_unshare),
            ("broker.shell_prlimit", &self.shell_prlimit),
            ("broker.shell_setpriv", &self.shell_setpriv),
        ] {
            if !Path::new(p).is_absolute() {
                return Err(key_err(key, format!("{p:?} is not an absolute path")));
            }
        }
        self.shell_settings()?;
        let exec = self.limits("shell.exec").timeout;
        if exec <= Duration::from_millis(self.shell_timeout_ms) {
            return Err(key_err(
                &self.timeout_key("shell.exec"),
                format!(
                    "shell.exec's broker time limit ({} ms) must be longer than broker.shell_timeout_ms ({} ms), which kills the jail first and reports what it printed",
                    exec.as_millis(),
                    self.shell_timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Whether `inner` is `outer` or lies under it, comparing the paths as
/// written (`.` components dropped).
fn within(inner: &Path, outer: &Path) -> bool {
    let clean = |p: &Path| -> Vec<String> {
        p.components()
            .filter(|c| !matches!(c, Component::CurDir))
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect()
    };
    let (i, o) = (clean(inner), clean(outer));
    i.len() >= o.len() && i.iter().zip(&o).all(|(a, b)| a == b)
}

impl SkillsSection {
    /// Whether skills are configured.
    pub fn enabled(&self) -> bool {
        !self.dir.is_empty()
    }

    /// The skills' settings.
    pub fn settings(&self) -> mxp_skills::SkillsSettings {
        mxp_skills::SkillsSettings {
            dir: PathBuf::from(&self.dir),
            quarantine: PathBuf::from(&self.quarantine_dir),
            pins: self.pins.clone(),
            runner: mxp_skills::RunnerConfig {
                max_instances: self.max_instances,
                max_memory_bytes: self.max_memory_bytes,
            },
        }
    }

    /// Checks what needs no file.
    ///
    /// # Errors
    /// [`ConfigError::Key`] naming the key and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, hash) in &self.pins {
            let key = format!("skills.pins.{name}");
            if !mxp_skills::manifest::valid_skill_name(name) {
                return Err(key_err(
                    &key,
                    "a skill name is 1 to 64 of a-z 0-9 _ -, starting with a letter or digit",
                ));
            }
            if !mxp_skills::manifest::valid_hash(hash) {
                return Err(key_err(
                    &key,
                    format!(
                        "{hash:?} is not a SHA-256 in 64 lower-case hex digits (`mxp skills list` prints each module's)"
                    ),
                ));
            }
        }
        if self.max_instances == 0 || self.max_instances > 10_000 {
            return Err(key_err("skills.max_instances", "must be 1 to 10000"));
        }
        let (min, max) = (
            mxp_skills::manifest::MIN_MEMORY_BYTES,
            mxp_skills::manifest::MAX_MEMORY_BYTES,
        );
        if !(min..=max).contains(&self.max_memory_bytes) {
            return Err(key_err(
                "skills.max_memory_bytes",
                format!("must be {min} to {max} (64 KiB to 256 MiB)"),
            ));
        }
        if self.dir.is_empty() {
            return Ok(());
        }
        if self.quarantine_dir.is_empty() {
            return Err(key_err(
                "skills.quarantine_dir",
                "must be set when skills.dir is: tampered modules are moved there (a folder on the same filesystem, outside skills.dir)",
            ));
        }
        if within(Path::new(&self.quarantine_dir), Path::new(&self.dir)) {
            return Err(key_err(
                "skills.quarantine_dir",
                "must be outside skills.dir (every folder there is read as a skill)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_compares_components() {
        assert!(within(Path::new("/a/b/c"), Path::new("/a/b")));
        assert!(within(Path::new("./skills/q"), Path::new("skills")));
        assert!(within(Path::new("/a/b"), Path::new("/a/b")));
        assert!(!within(Path::new("/a/bc"), Path::new("/a/b")));
        assert!(!within(Path::new("/a"), Path::new("/a/b")));
    }
}
