//! The jailed core of `shell.exec`.
//!
//! Off by default ([`ShellSettings::enabled`] is `false`). When on, a
//! request names an absolute program that must be on the allowlist (each
//! configured path is canonicalised once, at [`ShellJail::new`]; `PATH` is
//! never searched) and gives its arguments as an array (never a shell
//! string). The child starts with an empty environment plus only the
//! variables the settings grant and the request names. It runs inside a
//! jail built from util-linux tools, so no unsafe code is needed:
//!
//! ```text
//! setpriv --reuid=U --regid=G --clear-groups --pdeathsig KILL --   (only when the node runs as root)
//!   unshare --user --map-root-user --mount --pid --net --fork --kill-child --mount-proc --
//!     prlimit --cpu=S --as=B --nofile=N --nproc=P --
//!       /abs/program args...
//! ```
//!
//! - new user, mount, pid and network namespaces: the child sees only its
//!   own processes (it is pid 1's child) and only a loopback interface that
//!   is down;
//! - rlimits on CPU seconds, address space, open files and processes;
//! - a wall-clock timeout that kills the `unshare` process: `--kill-child`
//!   then kills the pid namespace's init, and the kernel kills everything
//!   else inside the namespace with it;
//! - stdout and stderr each read up to their cap (the rest is drained and
//!   discarded, so the child never blocks on a full pipe) and flagged
//!   truncated;
//! - a fresh empty working directory, removed afterwards.
//!
//! `RLIMIT_NPROC` is not enforced for the real root user, so a node running
//! as root first drops to [`ShellSettings::run_as`] (default `65534:65534`,
//! `nobody`). The process limit counts processes of that uid: on kernels
//! since 5.14 per user namespace (so per run), on older ones machine-wide
//! (so concurrent runs share it); give `run_as` a uid used for nothing
//! else. A node that does not run as root runs the jail as itself (no
//! `setpriv`).
//!
//! Not covered: no filesystem isolation beyond the mount namespace and the
//! unprivileged uid (the host's files are visible with that uid's
//! permissions), no seccomp filter, no cgroups, no bubblewrap.

mod argv;
mod error;
mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use argv::{command_line, validate};
pub use error::ShellError;

/// The uid and gid a root node drops to when `run_as` is not set.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// The paths of the util-linux tools the jail is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailTools {
    /// `unshare`, for the namespaces.
    pub unshare: PathBuf,
    /// `prlimit`, for the rlimits.
    pub prlimit: PathBuf,
    /// `setpriv`, to drop root.
    pub setpriv: PathBuf,
}

impl Default for JailTools {
    fn default() -> Self {
        Self {
            unshare: PathBuf::from("/usr/bin/unshare"),
            prlimit: PathBuf::from("/usr/bin/prlimit"),
            setpriv: PathBuf::from("/usr/bin/setpriv"),
        }
    }
}

/// The resource limits of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellLimits {
    /// CPU seconds (`RLIMIT_CPU`): the child gets `SIGXCPU` when it uses them.
    pub cpu_secs: u64,
    /// Address space in bytes (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Processes of the jail's uid (`RLIMIT_NPROC`).
    pub processes: u64,
    /// Wall-clock time before the whole jail is killed.
    pub timeout: Duration,
    /// Bytes of stdout kept.
    pub max_stdout: usize,
    /// Bytes of stderr kept.
    pub max_stderr: usize,
    /// Bytes of stdin a request may give.
    pub max_stdin: usize,
    /// Arguments after the program.
    pub max_args: usize,
    /// Bytes of one argument.
    pub max_arg_bytes: usize,
}

impl Default for ShellLimits {
    fn default() -> Self {
        Self {
            cpu_secs: 10,
            memory_bytes: 512 * 1024 * 1024,
            open_files: 64,
            processes: 32,
            timeout: Duration::from_secs(30),
            max_stdout: 1024 * 1024,
            max_stderr: 64 * 1024,
            max_stdin: 1024 * 1024,
            max_args: 256,
            max_arg_bytes: 64 * 1024,
        }
    }
}

/// The settings of `shell.exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellSettings {
    /// Whether `shell.exec` runs at all; `false` by default.
    pub enabled: bool,
    /// The programs that may run, as absolute paths.
    pub allow: Vec<PathBuf>,
    /// The environment variables a request may pass, with their values.
    pub env: BTreeMap<String, String>,
    /// The resource limits.
    pub limits: ShellLimits,
    /// The uid and gid to drop to when the node runs as root
    /// (default [`NOBODY`]); ignored otherwise.
    pub run_as: Option<(u32, u32)>,
    /// Where the jail tools are.
    pub tools: JailTools,
}

/// One `shell.exec` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellRequest {
    /// The absolute path of the program.
    pub program: String,
    /// Its arguments (not including the program itself).
    pub args: Vec<String>,
    /// Names of granted environment variables to pass.
    pub env: Vec<String>,
    /// Bytes written to the child's standard input, if any.
    pub stdin: Option<String>,
}

impl ShellRequest {
    /// Reads a request from the tool's JSON arguments:
    /// `{"program": "/bin/echo", "args": ["a"], "env": ["LANG"], "stdin": "..."}`;
    /// `args`, `env` and `stdin` are optional.
    ///
    /// # Errors
    ///
    /// [`ShellError::BadRequest`] names the field that is missing or of the
    /// wrong type, or an unknown field.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ShellError> {
        let bad = |reason: &str| ShellError::BadRequest {
            reason: reason.to_owned(),
        };
        let obj = value
            .as_object()
            .ok_or_else(|| bad("the arguments must be a JSON object"))?;
        if let Some(key) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "program" | "args" | "env" | "stdin"))
        {
            return Err(ShellError::BadRequest {
                reason: format!("unknown field {key:?}"),
            });
        }
        let program = obj
            .get("program")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| bad("`program` must be a string"))?
            .to_owned();
        let strings = |key: &str| -> Result<Vec<String>, ShellError> {
            match obj.get(key) {
                None => Ok(Vec::new()),
                Some(v) => v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|s| s.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| ShellError::BadRequest {
                        reason: format!("`{key}` must be an array of strings"),
                    }),
            }
        };
        let stdin = match obj.get("stdin") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| bad("`stdin` must be a string"))?
                    .to_owned(),
            ),
        };
        Ok(Self {
            program,
            args: strings("args")?,
            env: strings("env")?,
            stdin,
        })
    }
}

/// How the jailed program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitStatus {
    /// It exited with this code.
    Exit {
        /// The exit code.
        code: i32,
    },
    /// It was killed by this signal (`SIGXCPU` = 24 for the CPU limit).
    ///
    /// `unshare --fork` reports its child's death by a signal by raising the
    /// same signal on itself; util-linux 2.38 fails to (it prints
    /// `unshare: sigprocmask unblock failed` and exits 1), so with that
    /// version such a death shows as `Exit { code: 1 }` with that line on
    /// stderr.
    Signal {
        /// The signal number.
        sig: i32,
    },
    /// The wall-clock timeout passed and the jail was killed.
    TimedOut,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output, at most `limits.max_stdout` bytes.
    pub stdout: Vec<u8>,
    /// Standard error, at most `limits.max_stderr` bytes.
    pub stderr: Vec<u8>,
    /// Whether stdout was longer than its cap.
    pub stdout_truncated: bool,
    /// Whether stderr was longer than its cap.
    pub stderr_truncated: bool,
}

/// An allowlist entry: as configured, and the program it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    /// The path as configured.
    pub configured: String,
    /// Its canonical form, the file actually run.
    pub canonical: String,
}

/// A checked `shell.exec` jail, ready to run requests.
#[derive(Debug, Clone)]
pub struct ShellJail {
    settings: ShellSettings,
    allow: Vec<AllowEntry>,
    run_as: Option<(u32, u32)>,
}

impl ShellJail {
    /// Checks the settings and the machine: the allowlist entries resolve
    /// to files, the jail tools exist, and the kernel lets the jail's uid
    /// create the namespaces (one probe run of the jail).
    ///
    /// # Errors
    ///
    /// [`ShellError::Disabled`] when `enabled` is false;
    /// [`ShellError::BadAllowEntry`] for an entry that is relative, missing
    /// or not UTF-8; [`ShellError::JailUnavailable`] when a tool is missing
    /// or the probe fails.
    pub fn new(settings: ShellSettings) -> Result<Self, ShellError> {
        if !settings.enabled {
            return Err(ShellError::Disabled);
        }
        let allow = settings
            .allow
            .iter()
            .map(|p| resolve_allow(p))
            .collect::<Result<Vec<_>, _>>()?;
        for tool in [&settings.tools.unshare, &settings.tools.prlimit] {
            if !tool.is_file() {
                return Err(ShellError::JailUnavailable {
                    what: format!("{} is not installed", tool.display()),
                });
            }
        }
        let run_as = if run::euid_is_root()? {
            if !settings.tools.setpriv.is_file() {
                return Err(ShellError::JailUnavailable {
                    what: format!(
                        "{} is not installed (needed to drop root)",
                        settings.tools.setpriv.display()
                    ),
                });
            }
            Some(settings.run_as.unwrap_or(NOBODY))
        } else {
            None
        };
        run::probe(&settings.tools, run_as)?;
        Ok(Self {
            settings,
            allow,
            run_as,
        })
    }

    /// The allowlist as resolved at start.
    pub fn allowlist(&self) -> &[AllowEntry] {
        &self.allow
    }

    /// Runs one request in the jail and returns its capped output.
    ///
    /// # Errors
    ///
    /// Any [`validate`] error for a refused request;
    /// [`ShellError::Workdir`] or [`ShellError::Spawn`] when the jail could
    /// not run.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills the jail (the child is `kill_on_drop`, and
    /// killing `unshare` kills everything in its pid namespace) and removes
    /// the working directory; the run's output is lost.
    pub async fn exec(&self, req: &ShellRequest) -> Result<ShellOutput, ShellError> {
        let program = validate(&self.settings, &self.allow, req)?;
        let line = command_line(
            &self.settings.tools,
            &self.settings.limits,
            self.run_as,
            &program,
            &req.args,
        );
        let env: Vec<(&str, &str)> = req
            .env
            .iter()
            .filter_map(|n| {
                self.settings
                    .env
                    .get_key_value(n)
                    .map(|(k, v)| (k.as_str(), v.as_str()))
            })
            .collect();
        run::run(
            &line,
            &env,
            req.stdin.as_deref(),
            &self.settings.limits,
            self.run_as,
        )
        .await
    }
}

fn resolve_allow(path: &Path) -> Result<AllowEntry, ShellError> {
    let bad = |reason: String| ShellError::BadAllowEntry {
        path: path.to_owned(),
        reason,
    };
    if !path.is_absolute() {
        return Err(bad("it is not an absolute path".to_owned()));
    }
    let configured = path
        .to_str()
        .ok_or_else(|| bad("it is not UTF-8".to_owned()))?
        .to_owned();
    let canonical = path.canonicalize().map_err(|e| bad(e.to_string()))?;
    if !canonical.is_file() {
        return Err(bad("it is not a file".to_owned()));
    }
    let canonical = canonical
        .to_str()
        .ok_or_else(|| bad("its canonical path is not UTF-8".to_owned()))?
        .to_owned();
    Ok(AllowEntry {
        configured,
        canonical,
    })
}
