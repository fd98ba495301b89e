//! `mxp policy check <dir>` (offline) and `mxp policy reload <node>`
//! (operators).

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
    is refused and the old one stays.\n\n\
    Examples:\n  \
    mxp policy check ./policies\n  \
    mxp policy reload mxp://127.0.0.1:9000\n\n\
    Exit codes: 0 success; 1 local failure; 2 bad arguments or an invalid policy set (check); \
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
    }
}
