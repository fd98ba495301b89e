//! `mxp audit verify|tail|query|export <node>` (operators only): read and
//! verify a node's hash-chained audit log.

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::remote::{self, NodeTarget};
use super::{CliError, table, write_out};

pub mod follow;

/// The long help of `mxp audit`.
pub const LONG_ABOUT: &str = "Verify and read a node's audit log (operators only).\n\n\
    Every governed step (policy decisions, token mints and verifications, tool executions \
    with their output, lifecycle changes, actor restarts, approval requests and decisions, \
    kill-switch changes, policy reloads, the node's configuration digest at start) is a \
    record chained to the one before it by BLAKE3 (docs/AUDIT.md), durable before the step \
    goes on.\n\n\
    `verify` has the node check the whole chain from its first record, and against every \
    checkpoint it signed (each one's signature, the records up to its size against its \
    root, and none beyond the log's end), and prints the count, the last hash, the RFC 6962 \
    Merkle root and the checkpoints checked, or names the first bad record. `prove <seq>` \
    prints a record's inclusion proof (leaf, audit path, tree size and root). `tail` prints \
    the last records, `query` the records matching the filters, one line each; `export` \
    writes them as JSON lines. `follow` subscribes to the log and prints every record and \
    signed checkpoint as it arrives, verifying each; `checkpoint` prints the latest signed \
    checkpoint and who cosigned it.\n\n\
    Examples:\n  \
    mxp audit verify mxp://127.0.0.1:9000\n  \
    mxp audit prove mxp://127.0.0.1:9000 17\n  \
    mxp audit tail mxp://127.0.0.1:9000 -n 20\n  \
    mxp audit query mxp://127.0.0.1:9000 --decision deny --tool send\n  \
    mxp audit export mxp://127.0.0.1:9000 --session s-1 > session.jsonl\n  \
    mxp audit follow mxp://127.0.0.1:9000 --from 0\n  \
    mxp audit checkpoint mxp://127.0.0.1:9000\n\n\
    Exit codes: 0 success; 1 local failure or an answer that is not valid MXP; 2 bad \
    arguments; 3 the node answered with an Error frame (denied; the chain does not verify, \
    naming the first bad record); 4 no answer within --timeout; 5 the node could not be \
    reached.";

/// Arguments of `mxp audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// Which records.
#[derive(Debug, Clone, Default, Args)]
pub struct Filters {
    /// Only records of this session.
    #[arg(long)]
    pub session: Option<String>,
    /// Only records about this agent (its id in the record's data).
    #[arg(long)]
    pub agent: Option<String>,
    /// Only records caused by this principal (`peer:<fp>`, `operator:<fp>`, ...).
    #[arg(long)]
    pub principal: Option<String>,
    /// Only records about this tool or control method.
    #[arg(long)]
    pub tool: Option<String>,
    /// Only policy decisions with this effect: allow, deny or require_approval.
    #[arg(long, value_parser = ["allow", "deny", "require_approval"])]
    pub decision: Option<String>,
    /// Only records at or after this time, unix milliseconds.
    #[arg(long, value_name = "UNIX_MS")]
    pub since: Option<u64>,
    /// Only records before this time, unix milliseconds.
    #[arg(long, value_name = "UNIX_MS")]
    pub until: Option<u64>,
    /// Start at this sequence number.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
}

impl Filters {
    /// Whether record `r` (as `audit.read` gives it) passes.
    pub fn matches(&self, r: &Value) -> bool {
        let s = |v: &Value| v.as_str().map(str::to_owned);
        let eq = |want: &Option<String>, got: Option<String>| {
            want.as_ref()
                .is_none_or(|w| got.as_deref() == Some(w.as_str()))
        };
        let time = r.get("time_ms").and_then(Value::as_u64).unwrap_or(0);
        eq(&self.session, r.get("session").and_then(s))
            && eq(&self.principal, r.get("principal").and_then(s))
            && eq(&self.agent, r.pointer("/data/agent").and_then(s))
            && eq(&self.tool, r.pointer("/data/tool").and_then(s))
            && eq(&self.decision, r.pointer("/kind/effect").and_then(s))
            && self.since.is_none_or(|t| time >= t)
            && self.until.is_none_or(|t| time < t)
    }
}

/// The `mxp audit` commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the whole chain on the node and print its head and Merkle root.
    Verify(NodeTarget),
    /// Print the RFC 6962 inclusion proof of one record in the whole log.
    Prove {
        /// The node.
        #[command(flatten)]
        target: NodeTarget,
        /// The record's sequence number.
        #[arg(value_name = "SEQ")]
        seq: u64,
    },
    /// Print the last records, one line each.
    Tail {
        /// The node.
        #[command(flatten)]
        target: NodeTarget,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
    },
    /// Print the records matching the filters, one line each.
    Query {
        /// The node.
        #[command(flatten)]
        target: NodeTarget,
        /// Which records.
        #[command(flatten)]
        filters: Filters,
    },
    /// Write the records matching the filters as JSON lines.
    Export {
        /// The node.
        #[command(flatten)]
        target: NodeTarget,
        /// Which records.
        #[command(flatten)]
        filters: Filters,
    },
    /// Follow the log live, verifying every record and checkpoint as it arrives.
    #[command(long_about = follow::LONG_ABOUT)]
    Follow(follow::FollowArgs),
    /// Print the node's latest signed checkpoint, its key and who cosigned it.
    Checkpoint {
        /// The node.
        #[command(flatten)]
        target: NodeTarget,
        /// Also print the consistency proof from this tree size.
        #[arg(long, value_name = "SIZE")]
        from_size: Option<u64>,
    },
}

/// One line for a record.
pub fn line(r: &Value) -> String {
    let g = |p: &str| r.pointer(p).and_then(Value::as_str).unwrap_or("-");
    let mut out = format!(
        "{} {} {}",
        r.get("seq").and_then(Value::as_u64).unwrap_or(0),
        r.get("time_ms").and_then(Value::as_u64).unwrap_or(0),
        g("/kind/name"),
    );
    for (label, path) in [
        ("effect", "/kind/effect"),
        ("outcome", "/kind/outcome"),
        ("tool", "/data/tool"),
        ("session", "/session"),
        ("by", "/principal"),
    ] {
        if let Some(v) = r.pointer(path).and_then(Value::as_str) {
            out.push_str(&format!(" {label}={}", table::cell(v)));
        }
    }
    if let Some(ids) = r.pointer("/kind/policy_ids").and_then(Value::as_array)
        && !ids.is_empty()
    {
        let ids: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!(" policies={}", table::cell(&ids.join(","))));
    }
    out.push('\n');
    out
}

/// Pages through the records from `from`, calling `each` on those passing
/// `filters`.
fn scan(
    t: &NodeTarget,
    filters: &Filters,
    mut each: impl FnMut(&Value) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut from = filters.from;
    loop {
        let page = remote::call_node_agent(
            &t.connect,
            &t.node,
            "audit.read",
            json!({ "from": from, "limit": 1000 }),
        )?;
        let records = page
            .get("records")
            .and_then(Value::as_array)
            .ok_or_else(|| remote::unexpected("audit.read", "no \"records\""))?;
        for r in records {
            if filters.matches(r) {
                each(r)?;
            }
        }
        let next = page.get("next_seq").and_then(Value::as_u64).unwrap_or(0);
        from = from.saturating_add(records.len() as u64);
        if records.is_empty() || from >= next {
            return Ok(());
        }
    }
}

/// Runs `mxp audit ...`.
///
/// # Errors
/// As [`remote::call_node_agent`].
pub fn run<W: Write>(args: &AuditArgs, out: &mut W) -> Result<(), CliError> {
    match &args.command {
        AuditCommand::Verify(t) => {
            let r = remote::call_node_agent(
                &t.connect,
                &t.node,
                "audit.read",
                json!({ "verify": true }),
            )?;
            let checkpoints = match (
                r.get("checkpoints").and_then(Value::as_u64),
                r.get("latest_checkpoint").and_then(Value::as_u64),
            ) {
                (Some(n), Some(latest)) if n > 0 => {
                    format!("; {n} signed checkpoints match (latest of {latest} records)")
                }
                _ => "; no signed checkpoint yet".to_owned(),
            };
            let text = format!(
                "ok: {} records verified; head {}; merkle root {}{checkpoints}\n",
                r.get("verified").unwrap_or(&json!(0)),
                r.get("head").and_then(Value::as_str).unwrap_or("-"),
                r.get("root").and_then(Value::as_str).unwrap_or("-"),
            );
            write_out(out, text.as_bytes())
        }
        AuditCommand::Prove { target, seq } => {
            let r = remote::call_node_agent(
                &target.connect,
                &target.node,
                "audit.read",
                json!({ "prove": seq }),
            )?;
            let text = serde_json::to_string_pretty(&r).unwrap_or_default() + "\n";
            write_out(out, text.as_bytes())
        }
        AuditCommand::Tail { target, lines } => {
            let head = remote::call_node_agent(
                &target.connect,
                &target.node,
                "audit.read",
                json!({ "from": 0, "limit": 1 }),
            )?;
            let next = head.get("next_seq").and_then(Value::as_u64).unwrap_or(0);
            let filters = Filters {
                from: next.saturating_sub(*lines),
                ..Filters::default()
            };
            scan(target, &filters, |r| write_out(out, line(r).as_bytes()))
        }
        AuditCommand::Query { target, filters } => {
            scan(target, filters, |r| write_out(out, line(r).as_bytes()))
        }
        AuditCommand::Follow(args) => follow::run(args, out),
        AuditCommand::Checkpoint { target, from_size } => {
            let r = remote::call_node_agent(
                &target.connect,
                &target.node,
                "audit.checkpoint",
                json!({ "from_size": from_size }),
            )?;
            let text = serde_json::to_string_pretty(&r).unwrap_or_default() + "\n";
            write_out(out, text.as_bytes())
        }
        AuditCommand::Export { target, filters } => scan(target, filters, |r| {
            let mut text = serde_json::to_string(r).unwrap_or_default();
            text.push('\n');
            write_out(out, text.as_bytes())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_select_on_every_field() {
        let r = json!({
            "seq": 3, "time_ms": 1000, "session": "s-1", "principal": "peer:ab",
            "kind": {"name": "policy_decision", "effect": "deny", "policy_ids": ["p1"]},
            "data": {"tool": "send", "agent": "a-1"},
        });
        assert!(Filters::default().matches(&r));
        let f = |f: Filters| f.matches(&r);
        assert!(f(Filters {
            decision: Some("deny".into()),
            ..Default::default()
        }));
        assert!(!f(Filters {
            decision: Some("allow".into()),
            ..Default::default()
        }));
        assert!(f(Filters {
            tool: Some("send".into()),
            session: Some("s-1".into()),
            ..Default::default()
        }));
        assert!(!f(Filters {
            agent: Some("a-2".into()),
            ..Default::default()
        }));
        assert!(!f(Filters {
            principal: Some("peer:cd".into()),
            ..Default::default()
        }));
        assert!(f(Filters {
            since: Some(1000),
            until: Some(1001),
            ..Default::default()
        }));
        assert!(!f(Filters {
            since: Some(1001),
            ..Default::default()
        }));
        let text = line(&r);
        assert!(
            text.starts_with(
                "3 1000 policy_decision effect=deny tool=send session=s-1 by=peer:ab policies=p1"
            ),
            "{text}"
        );
    }
}
