//! `mxp agents`: the agents a node knows, hosted there or elsewhere in the
//! mesh (the node agent's `agents.list`).

use std::io::Write;

use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use super::remote::{self, NodeTarget};
use super::{CliError, table};

/// The long help of `mxp agents`.
pub const LONG_ABOUT: &str = concat!(
    "List the agents a node knows: the ones it hosts and the ones \
    other nodes of the mesh registered with it.\n\n\
    Calls `agents.list` on the node agent (the nil agent id \
    00000000-0000-0000-0000-000000000000) and prints a table:\n  \
    AGENT ID  NAME  STATE  LOCATION  CAPABILITIES\n\
    STATE is a hosted agent's lifecycle state (init, ready, active, suspended, retiring, \
    terminated) and a remote agent's status (online, or offline once its heartbeats stopped); \
    LOCATION is `local` or the URL of the node that hosts the agent; CAPABILITIES are \
    comma-separated. The node answers in pages of up to 1,000 agents; every page is fetched. \
    With --json the agents, {\"agents\": [...]}, are printed on one line.\n\n\
    NODE is mxp://host:port, without an agent id. The CLI connects with its own identity \
    (see `mxp identity`).\n\n\
    Examples:\n  \
    mxp agents mxp://127.0.0.1:9000\n  \
    mxp agents mxp://127.0.0.1:9000 --json | jq -r '.agents[].agent_id'\n\n\
    ",
    node_exit_codes!("a URL with an agent id")
);

/// Arguments of `mxp agents`.
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// The node to ask and how to reach it.
    #[command(flatten)]
    pub target: NodeTarget,
    /// Print the node's result ({"agents": [...]}) as JSON on one line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The header of the table.
pub const HEADER: [&str; 5] = ["AGENT ID", "NAME", "STATE", "LOCATION", "CAPABILITIES"];

/// One entry of `agents.list`, as much of it as the table shows.
#[derive(Debug, Deserialize)]
struct Listed {
    agent_id: String,
    #[serde(default)]
    name: String,
    /// A hosted agent's lifecycle state.
    #[serde(default)]
    state: Option<String>,
    /// `online` or `offline`.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
}

/// The table for the result of `agents.list`.
///
/// # Errors
/// [`CliError::InvalidAnswer`] if the result is not `{"agents": [...]}`
/// with an `agent_id` in every entry.
pub fn format_agents(result: &Value) -> Result<String, CliError> {
    let agents = result
        .get("agents")
        .ok_or_else(|| remote::unexpected("agents.list", "no \"agents\" in the result"))?;
    let agents =
        Vec::<Listed>::deserialize(agents).map_err(|e| remote::unexpected("agents.list", e))?;
    let rows: Vec<Vec<String>> = agents
        .into_iter()
        .map(|a| {
            vec![
                a.agent_id,
                a.name,
                a.state.or(a.status).unwrap_or_default(),
                a.location.unwrap_or_default(),
                a.capabilities.join(","),
            ]
        })
        .collect();
    Ok(table::render(Some(&HEADER), &rows))
}

/// Runs `mxp agents`.
///
/// # Errors
/// See [`CliError`] and the exit codes in [`LONG_ABOUT`].
pub fn run<W: Write>(args: &AgentsArgs, out: &mut W) -> Result<(), CliError> {
    // The node answers one page at a time; follow `next` to the last, at most
    // MAX_PAGES pages (a node that keeps answering `next` cannot loop us).
    let mut agents: Vec<Value> = Vec::new();
    let mut after = Value::Null;
    for _ in 0..MAX_PAGES {
        let page = remote::call_node_agent(
            &args.target.connect,
            &args.target.node,
            "agents.list",
            serde_json::json!({ "after": after }),
        )?;
        if let Some(list) = page.get("agents").and_then(Value::as_array) {
            agents.extend(list.iter().cloned());
        } else {
            return Err(remote::unexpected(
                "agents.list",
                "no \"agents\" in the result",
            ));
        }
        match page.get("next") {
            Some(next) if !next.is_null() && *next != after => after = next.clone(),
            _ => break,
        }
    }
    let result = serde_json::json!({ "agents": agents });
    remote::print_result(out, args.json, &result, format_agents)
}

/// Pages of `agents.list` followed at most (1,000 agents a page).
const MAX_PAGES: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn local_agents_show_their_state_remote_ones_their_status() {
        let result = json!({"agents": [
            {"agent_id": "01010101-0101-0101-0101-010101010101", "name": "echo",
             "capabilities": ["echo", "demo"], "state": "active", "in_flight": 0,
             "calls_handled": 3, "restarts": 0, "uptime_secs": 9,
             "status": "online", "location": "local"},
            {"agent_id": "02020202-0202-0202-0202-020202020202", "name": "far-away",
             "capabilities": [], "status": "offline", "location": "mxp://10.0.0.2:9000"},
        ]});
        let text = format_agents(&result).unwrap();
        assert_eq!(
            text,
            "AGENT ID                              NAME      STATE    LOCATION             CAPABILITIES\n\
             01010101-0101-0101-0101-010101010101  echo      active   local                echo,demo\n\
             02020202-0202-0202-0202-020202020202  far-away  offline  mxp://10.0.0.2:9000  -\n"
        );
    }

    #[test]
    fn no_agents_is_just_the_header() {
        let text = format_agents(&json!({"agents": []})).unwrap();
        assert_eq!(text, "AGENT ID  NAME  STATE  LOCATION  CAPABILITIES\n");
    }

    #[test]
    fn a_result_of_another_shape_is_an_invalid_answer() {
        for bad in [
            json!(null),
            json!({"agents": 3}),
            json!({"agents": [{"name": "no id"}]}),
            json!({"agents": [{"agent_id": "x", "capabilities": "echo"}]}),
        ] {
            let err = format_agents(&bad).unwrap_err();
            assert_eq!(err.exit_code(), 1, "{bad}: {err}");
            assert!(err.to_string().contains("agents.list"), "{err}");
        }
    }
}
