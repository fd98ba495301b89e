//! `mxp node status`: what a node says about itself (the node agent's
//! `node.status`).

use std::io::Write;

use clap::{Args, Subcommand};
use mxp_actors::{LifecycleState, NodeStatus};
use serde::Deserialize;
use serde_json::Value;

use super::CliError;
use super::remote::{self, NodeTarget};

/// The long help of `mxp node status`.
pub const STATUS_LONG_ABOUT: &str = concat!(
    "Print what a node says about itself.\n\n\
    Calls `node.status` on the node agent (the nil agent id \
    00000000-0000-0000-0000-000000000000) and prints `key: value` lines:\n  \
    fingerprint: <the node's 64 hex digits, what --server-fingerprint pins>\n  \
    url: <mxp://host:port other nodes reach it at>\n  \
    uptime: <e.g. 1h 2m 3s>\n  \
    local agents: <count> (<state>: <count>, ...)\n  \
    remote agents: <n> online, <n> offline\n  \
    mesh nodes: <URLs, comma-separated, or none>\n  \
    connections, streams, calls in flight, frames in, frames out, malformed frames, \
    refused connections, rate-limited frames: <the transport's counters>\n\
    With --json the node's result is printed on one line.\n\n\
    NODE is mxp://host:port, without an agent id.\n\n\
    Examples:\n  \
    mxp node status mxp://127.0.0.1:9000\n  \
    mxp node status mxp://127.0.0.1:9000 --json | jq .transport\n\n\
    ",
    node_exit_codes!("a URL with an agent id")
);

/// Arguments of `mxp node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// What to do with the node.
    #[command(subcommand)]
    pub command: NodeCommand,
}

/// The `mxp node` commands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Print the node's fingerprint, URL, uptime, agents, mesh and transport counters.
    #[command(long_about = STATUS_LONG_ABOUT)]
    Status(StatusArgs),
}

/// Arguments of `mxp node status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node to ask and how to reach it.
    #[command(flatten)]
    pub target: NodeTarget,
    /// Print the node's result as JSON on one line instead of `key: value` lines.
    #[arg(long)]
    pub json: bool,
}

/// `3723` → `1h 2m 3s`; the largest unit first, from days down to seconds.
pub fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Local agents by state, in lifecycle order (states this CLI does not know
/// last, by name): `2 (active: 1, suspended: 1)`, or `0`.
fn format_local(status: &NodeStatus) -> String {
    let total: usize = status.local_agents.values().sum();
    let mut states: Vec<(&str, usize)> = LifecycleState::ALL
        .iter()
        .filter_map(|s| status.local_agents.get(s.name()).map(|n| (s.name(), *n)))
        .collect();
    let mut unknown: Vec<(&str, usize)> = status
        .local_agents
        .iter()
        .filter(|(k, _)| !LifecycleState::ALL.iter().any(|s| s.name() == k.as_str()))
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    unknown.sort_unstable();
    states.extend(unknown);
    if states.is_empty() {
        return total.to_string();
    }
    let by_state: Vec<String> = states
        .iter()
        .map(|(s, n)| format!("{}: {n}", super::table::cell(s)))
        .collect();
    format!("{total} ({})", by_state.join(", "))
}

/// The `key: value` lines for a node's status.
pub fn format_status(status: &NodeStatus) -> String {
    let t = &status.transport;
    let nodes = if status.nodes.is_empty() {
        "none".to_owned()
    } else {
        super::table::cell(&status.nodes.join(", "))
    };
    let lines = [
        ("fingerprint", super::table::cell(&status.peer_id)),
        ("url", super::table::cell(&status.url)),
        ("uptime", format_uptime(status.uptime_secs)),
        ("local agents", format_local(status)),
        (
            "remote agents",
            format!(
                "{} online, {} offline",
                status.remote_online, status.remote_offline
            ),
        ),
        ("mesh nodes", nodes),
        (
            "kill switch",
            (if status.kill_switch { "ON" } else { "off" }).to_owned(),
        ),
        ("approvals pending", status.approvals_pending.to_string()),
        ("audit subscribers", status.audit_subscribers.to_string()),
        ("connections", t.connections.to_string()),
        ("streams", t.streams.to_string()),
        ("calls in flight", t.calls_in_flight.to_string()),
        ("frames in", t.frames_in.to_string()),
        ("frames out", t.frames_out.to_string()),
        ("malformed frames", t.malformed.to_string()),
        ("refused connections", t.refused_connections.to_string()),
        ("rate-limited frames", t.rate_limited.to_string()),
    ];
    lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// Runs `mxp node <command>`.
///
/// # Errors
/// See [`CliError`] and the exit codes in [`STATUS_LONG_ABOUT`].
pub fn run<W: Write>(args: &NodeArgs, out: &mut W) -> Result<(), CliError> {
    let NodeCommand::Status(args) = &args.command;
    let result = remote::call_node_agent(
        &args.target.connect,
        &args.target.node,
        "node.status",
        Value::Null,
    )?;
    remote::print_result(out, args.json, &result, |result| {
        let status =
            NodeStatus::deserialize(result).map_err(|e| remote::unexpected("node.status", e))?;
        Ok(format_status(&status))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn status() -> NodeStatus {
        NodeStatus {
            peer_id: "ab".repeat(32),
            url: "mxp://127.0.0.1:9000".into(),
            uptime_secs: 3723,
            local_agents: HashMap::from([
                ("suspended".to_owned(), 1),
                ("active".to_owned(), 2),
                ("zombie".to_owned(), 1),
            ]),
            remote_online: 3,
            remote_offline: 1,
            nodes: vec!["mxp://10.0.0.2:9000".into(), "mxp://10.0.0.3:9000".into()],
            transport: mxp_transport::StatsSnapshot {
                connections: 1,
                streams: 2,
                calls_in_flight: 3,
                frames_in: 40,
                frames_out: 39,
                malformed: 5,
                refused_connections: 6,
                rate_limited: 7,
            },
            kill_switch: true,
            approvals_pending: 2,
            audit_subscribers: 1,
        }
    }

    #[test]
    fn key_value_lines() {
        let text = format_status(&status());
        let fp = "ab".repeat(32);
        assert_eq!(
            text,
            format!(
                "fingerprint: {fp}\n\
                 url: mxp://127.0.0.1:9000\n\
                 uptime: 1h 2m 3s\n\
                 local agents: 4 (active: 2, suspended: 1, zombie: 1)\n\
                 remote agents: 3 online, 1 offline\n\
                 mesh nodes: mxp://10.0.0.2:9000, mxp://10.0.0.3:9000\n\
                 kill switch: ON\n\
                 approvals pending: 2\n\
                 audit subscribers: 1\n\
                 connections: 1\n\
                 streams: 2\n\
                 calls in flight: 3\n\
                 frames in: 40\n\
                 frames out: 39\n\
                 malformed frames: 5\n\
                 refused connections: 6\n\
                 rate-limited frames: 7\n"
            )
        );
    }

    #[test]
    fn an_empty_node() {
        let mut s = status();
        s.local_agents.clear();
        s.nodes.clear();
        let text = format_status(&s);
        assert!(text.contains("\nlocal agents: 0\n"), "{text}");
        assert!(text.contains("\nmesh nodes: none\n"), "{text}");
    }

    #[test]
    fn uptimes() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m 0s"),
            (3600, "1h 0m 0s"),
            (3723, "1h 2m 3s"),
            (90_061, "1d 1h 1m 1s"),
        ] {
            assert_eq!(format_uptime(secs), text);
        }
    }
}
