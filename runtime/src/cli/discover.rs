//! `mxp discover`: agents with a capability, as a node knows them (an
//! AgentDiscover frame to the node agent).

use std::io::Write;

use clap::Args;
use mxp_protocol::payload::MAX_CAPABILITY_LEN;
use mxp_protocol::{DiscoverRequest, DiscoverResult, Flags, TypedPayload};
use mxp_transport::{Client, interpret_answer};
use serde::Deserialize;

use super::remote::{self, NodeTarget};
use super::{CliError, table};

/// The long help of `mxp discover`.
pub const LONG_ABOUT: &str = concat!(
    "Find agents with a capability: the node answers from what it \
    hosts and what the mesh registered with it.\n\n\
    Sends an AgentDiscover frame to the node and prints one line per agent, online ones first, \
    columns aligned:\n  \
    <endpoint URL>  <name>  <status>  <capabilities>\n\
    The endpoint URL (mxp://host:port/<agent-id>) is what `mxp call` takes; status is online or \
    offline (its heartbeats stopped); capabilities are comma-separated. No match prints nothing \
    and exits 0 (-v says so on stderr). With --json the node's result, {\"agents\": [...]}, is \
    printed on one line, also when it is empty.\n\n\
    NODE is mxp://host:port, without an agent id. --limit caps the answer (the node's default \
    is 100, its maximum 1000).\n\n\
    Examples:\n  \
    mxp discover mxp://127.0.0.1:9000 echo\n  \
    mxp call \"$(mxp discover mxp://127.0.0.1:9000 echo --limit 1 | cut -d' ' -f1)\" --method echo '{\"hi\":1}'\n\n\
    ",
    node_exit_codes!("a URL with an agent id, an empty capability")
);

/// Arguments of `mxp discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The node to ask and how to reach it.
    #[command(flatten)]
    pub target: NodeTarget,
    /// The capability wanted, 1 to 256 bytes, matched exactly.
    #[arg(value_name = "CAPABILITY")]
    pub capability: String,
    /// At most this many agents (1 or more) [default: the node's, 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Print the node's result ({"agents": [...]}) as JSON on one line.
    #[arg(long)]
    pub json: bool,
}

/// The AgentDiscover request for `capability`.
///
/// # Errors
/// [`CliError::Usage`] for an empty capability or one longer than 256 bytes.
pub fn request(capability: &str, limit: Option<u32>) -> Result<DiscoverRequest, CliError> {
    remote::check_text("capability", capability, MAX_CAPABILITY_LEN)?;
    Ok(DiscoverRequest {
        capability: capability.to_owned(),
        limit,
        after: None,
    })
}

/// One line per agent: endpoint URL, name, status, capabilities; nothing
/// for no agents.
pub fn format_found(found: &DiscoverResult) -> String {
    let rows: Vec<Vec<String>> = found
        .agents
        .iter()
        .map(|a| {
            vec![
                a.endpoint.clone(),
                a.name.clone(),
                a.status.clone(),
                a.capabilities.join(","),
            ]
        })
        .collect();
    table::render(None, &rows)
}

/// Runs `mxp discover`.
///
/// # Errors
/// See [`CliError`] and the exit codes in [`LONG_ABOUT`].
pub fn run<W: Write>(args: &DiscoverArgs, out: &mut W) -> Result<(), CliError> {
    let req = request(&args.capability, args.limit)?;
    let NodeTarget { node, connect } = &args.target;
    let answer = remote::with_node(connect, node, async |client: &Client, left| {
        let id = client.next_message_id();
        let frame = req
            .to_frame(id, id, Flags::EMPTY)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let answer = client
            .exchange(node, frame, left)
            .await
            .map_err(|e| remote::call_error(e, connect))?;
        interpret_answer(&answer, id).map_err(|e| remote::call_error(e, connect))
    })?;
    let result = remote::response_result(&answer)?;
    let found =
        DiscoverResult::deserialize(&result).map_err(|e| remote::unexpected("AgentDiscover", e))?;
    if found.agents.is_empty() && connect.verbose {
        eprintln!(
            "mxp: no agent with the capability {:?} on {}",
            args.capability, node
        );
    }
    remote::print_result(out, args.json, &result, |_| Ok(format_found(&found)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use mxp_protocol::{AgentId, AgentInfo};

    #[test]
    fn one_aligned_line_per_agent_and_nothing_for_none() {
        let id = AgentId::from_bytes([1; 16]);
        let found = DiscoverResult {
            agents: vec![
                AgentInfo {
                    agent_id: id,
                    name: "echo".into(),
                    capabilities: vec!["echo".into(), "demo".into()],
                    endpoint: format!("mxp://127.0.0.1:9000/{id}"),
                    status: "online".into(),
                    owner: String::new(),
                    local: false,
                },
                AgentInfo {
                    agent_id: id,
                    name: "echo-2".into(),
                    capabilities: vec!["echo".into()],
                    endpoint: format!("mxp://10.0.0.20:9000/{id}"),
                    status: "offline".into(),
                    owner: String::new(),
                    local: false,
                },
            ],
            next: None,
        };
        assert_eq!(
            format_found(&found),
            format!(
                "mxp://127.0.0.1:9000/{id}  echo    online   echo,demo\n\
                 mxp://10.0.0.20:9000/{id}  echo-2  offline  echo\n"
            )
        );
        assert_eq!(
            format_found(&DiscoverResult {
                agents: vec![],
                next: None
            }),
            ""
        );
    }

    #[test]
    fn the_capability_is_checked_before_sending() {
        assert_eq!(
            request("echo", Some(5)).unwrap(),
            DiscoverRequest {
                capability: "echo".into(),
                limit: Some(5),
                after: None,
            }
        );
        let err = request("", None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = request(&"c".repeat(MAX_CAPABILITY_LEN + 1), None).unwrap_err();
        assert!(err.to_string().contains("at most 256"), "{err}");
        assert!(request(&"c".repeat(MAX_CAPABILITY_LEN), None).is_ok());
    }

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: DiscoverArgs,
    }

    #[test]
    fn arguments() {
        let cmd =
            Cmd::try_parse_from(["t", "mxp://h:1", "echo", "--limit", "3", "--json"]).unwrap();
        assert_eq!(cmd.args.target.node.to_string(), "mxp://h:1");
        assert_eq!(cmd.args.capability, "echo");
        assert_eq!(cmd.args.limit, Some(3));
        assert!(cmd.args.json);
        let cmd = Cmd::try_parse_from(["t", "mxp://h:1", "echo"]).unwrap();
        assert_eq!(cmd.args.limit, None);
        for bad in [
            &["t", "mxp://h:1"][..],
            &["t", "mxp://h:1", "echo", "--limit", "0"],
            &["t", "mxp://h:1", "echo", "--limit", "-1"],
            &[
                "t",
                "mxp://h:1/01010101-0101-0101-0101-010101010101",
                "echo",
            ],
        ] {
            let err = Cmd::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
