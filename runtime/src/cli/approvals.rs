//! `mxp approvals list|show|approve|deny` (operators only).

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::remote::{self, NodeTarget};
use super::{CliError, table, write_out};

/// The long help of `mxp approvals`.
pub const LONG_ABOUT: &str = "List, show and decide a node's approvals (operators only).\n\n\
    When a policy answers require_approval (an @approval forbid, docs/POLICY.md), the node \
    records a pending approval bound to that exact intent (caller, agent, session, tool and \
    a digest of the arguments) and the Call waits up to governance.approval_wait_ms, then \
    answers approval_required with the id. An approval applies to that intent only: changed \
    arguments need a new one. A policy may ask for two distinct operators (@approvers(\"2\")). \
    Approvals survive restarts; an undecided one expires (governance.approval_ttl_ms) and the \
    intent is denied.\n\n\
    Examples:\n  \
    mxp approvals list mxp://127.0.0.1:9000\n  \
    mxp approvals show mxp://127.0.0.1:9000 ap-0123456789abcdef0123456789abcdef\n  \
    mxp approvals approve mxp://127.0.0.1:9000 ap-0123456789abcdef0123456789abcdef\n  \
    mxp approvals deny mxp://127.0.0.1:9000 ap-0123456789abcdef0123456789abcdef\n\n\
    Exit codes: 0 success; 1 local failure or an answer that is not valid MXP; 2 bad \
    arguments; 3 the node answered with an Error frame (denied: not an operator; an unknown, \
    expired or decided approval; the same operator voting twice); 4 no answer within \
    --timeout; 5 the node could not be reached.";

/// Arguments of `mxp approvals`.
#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ApprovalsCommand,
}

/// One approval on a node.
#[derive(Debug, Args)]
pub struct ApprovalTarget {
    /// The node.
    #[command(flatten)]
    pub target: NodeTarget,
    /// The approval, `ap-<32 hex digits>`.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// The `mxp approvals` commands.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List the node's approvals, pending and decided, oldest first.
    List(NodeTarget),
    /// Show one approval as JSON.
    Show(ApprovalTarget),
    /// Approve: the intent runs when it is asked again (or at once, if its Call still waits).
    Approve(ApprovalTarget),
    /// Deny: the waiting Call is answered denied.
    Deny(ApprovalTarget),
}

fn check_id(id: &str) -> Result<(), CliError> {
    id.parse::<mxp_governance::approval::ApprovalId>()
        .map(|_| ())
        .map_err(|e| CliError::Usage(format!("{id:?} is not an approval id: {e}")))
}

/// One line per approval: id, state, tool, caller, expiry.
pub fn format_list(result: &Value) -> Result<String, CliError> {
    let items = result
        .get("approvals")
        .and_then(Value::as_array)
        .ok_or_else(|| remote::unexpected("approvals.list", "no \"approvals\" in the result"))?;
    let mut out = String::new();
    if items.is_empty() {
        out.push_str("no approvals\n");
    }
    for a in items {
        let f = |k: &str| table::cell(a.get(k).and_then(Value::as_str).unwrap_or("?"));
        out.push_str(&format!(
            "{} {} {} by {} ({} votes)\n",
            f("id"),
            f("state"),
            f("tool"),
            f("principal"),
            a.get("votes").and_then(Value::as_array).map_or(0, Vec::len)
        ));
    }
    Ok(out)
}

/// Runs `mxp approvals ...`.
///
/// # Errors
/// As [`remote::call_node_agent`]; [`CliError::Usage`] for a malformed id.
pub fn run<W: Write>(args: &ApprovalsArgs, out: &mut W) -> Result<(), CliError> {
    match &args.command {
        ApprovalsCommand::List(t) => {
            let r = remote::call_node_agent(&t.connect, &t.node, "approvals.list", json!({}))?;
            write_out(out, format_list(&r)?.as_bytes())
        }
        ApprovalsCommand::Show(a) => {
            check_id(&a.id)?;
            let r = remote::call_node_agent(
                &a.target.connect,
                &a.target.node,
                "approvals.list",
                json!({ "id": a.id }),
            )?;
            let text = serde_json::to_string_pretty(&r).unwrap_or_default() + "\n";
            write_out(out, text.as_bytes())
        }
        ApprovalsCommand::Approve(a) | ApprovalsCommand::Deny(a) => {
            check_id(&a.id)?;
            let approve = matches!(args.command, ApprovalsCommand::Approve(_));
            let r = remote::call_node_agent(
                &a.target.connect,
                &a.target.node,
                "approvals.decide",
                json!({ "id": a.id, "approve": approve }),
            )?;
            let line = format!(
                "{}: {}\n",
                table::cell(&a.id),
                table::cell(r.get("state").and_then(Value::as_str).unwrap_or("?"))
            );
            write_out(out, line.as_bytes())
        }
    }
}
