//! `mxp policy check <dir>` (offline), `mxp policy reload <node>` and
//! `mxp policy what-if <node> --policy <dir> --since <time>` (operators).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::remote::{self, NodeTarget};
use super::{CliError, write_out};

/// The long help of `mxp policy`.
pub const LONG_ABOUT: &str = "Check a Cedar policy set offline, or make a node reload its own.\n\n\
    A policy set is a folder of *.cedar files, validated against the node's schema \
    (docs/POLICY.md). `check` needs no node: it prints the number of policies, or every \
    problem with its file, line, column and reason. `reload` asks a node (operators only) to \
    load its governance.policy_dir again and swap it in at once; a set that does not validate \
    is refused and the old one stays. `what-if` (operators only) tries a set on history before \
    it is rolled out: the node re-decides every recorded plan step of every session since \
    --since under that set (nothing changes on the node) and lists the decisions that would \
    change (docs/POLICY.md).\n\n\
    Examples:\n  \
    mxp policy check ./policies\n  \
    mxp policy reload mxp://127.0.0.1:9000\n  \
    mxp policy what-if mxp://127.0.0.1:9000 --policy ./new-policies --since 24h\n\n\
    Exit codes: 0 success (for what-if: no decision would change); 6 what-if found decisions \
    that would change; 1 local failure; 2 bad arguments or an invalid policy set (check, \
    what-if); \
    3 the node answered with an Error frame (denied, an invalid set: the message says where); \
    4 no answer within --timeout; 5 the node could not be reached.";

/// Arguments of `mxp policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The `mxp policy` commands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate the *.cedar files of a folder against the schema, without a node.
    Check {
        /// The folder.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Make a node load its policy folder again (operators only).
    Reload(NodeTarget),
    /// Re-decide a node's recorded history under another policy folder and list what would change (operators only).
    WhatIf {
        /// The node.
        #[command(flatten)]
        target: NodeTarget,
        /// The Cedar policy folder to try (validated here first, as `check` does).
        #[arg(long, value_name = "DIR")]
        policy: PathBuf,
        /// From when: an RFC 3339 time (2025-06-01T12:00:00Z), unix milliseconds, or a duration ago (90s, 30m, 1h, 7d).
        #[arg(long, value_name = "TIME")]
        since: String,
        /// Print the node's report as JSON, on one line.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `mxp policy ...`.
///
/// # Errors
/// [`CliError::Usage`] (exit 2) for an invalid set, naming where; the
/// node's errors as [`remote::call_node_agent`].
pub fn run<W: Write>(args: &PolicyArgs, out: &mut W) -> Result<(), CliError> {
    match &args.command {
        PolicyCommand::Check { dir } => {
            let s = mxp_governance::policy::PolicyEngine::load_dir(dir)
                .map(|engine| engine.summary().clone())
                .map_err(|e| {
                    CliError::Usage(format!("policy set {} is invalid: {e}", dir.display()))
                })?;
            let line = format!(
                "ok: {} policies in {} files ({})\n",
                s.policies,
                s.files,
                dir.display()
            );
            write_out(out, line.as_bytes())
        }
        PolicyCommand::Reload(t) => {
            let r = remote::call_node_agent(&t.connect, &t.node, "policy.reload", Value::Null)?;
            let line = format!(
                "reloaded: {} policies from {}\n",
                r.get("policies").unwrap_or(&json!("?")),
                r.get("source").and_then(Value::as_str).unwrap_or("?")
            );
            write_out(out, line.as_bytes())
        }
        PolicyCommand::WhatIf {
            target,
            policy,
            since,
            json: as_json,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let since_ms = super::since::parse_since(since, now)
                .map_err(|e| CliError::Usage(format!("--since: {e}")))?;
            let policies = super::replay::policy_files(policy)?;
            let r = remote::call_node_agent(
                &target.connect,
                &target.node,
                "policy.what_if",
                json!({ "policies": policies, "since_ms": since_ms }),
            )?;
            let text = if *as_json {
                serde_json::to_string(&r).unwrap_or_default() + "\n"
            } else {
                super::replay::format_what_if(&r)
            };
            write_out(out, text.as_bytes())?;
            super::replay::what_if_verdict(&r)
        }
    }
}
