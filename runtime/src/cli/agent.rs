//! `mxp agent suspend|resume|retire`: an operator moves an agent through its
//! lifecycle (the node agent's `agent.suspend`, `agent.resume`,
//! `agent.retire`).

use std::io::Write;

use clap::{Args, Subcommand};
use mxp_protocol::ErrorCode;
use mxp_transport::MxpUrl;
use serde_json::json;

use super::remote::{self, ConnectArgs};
use super::{CliError, table, write_out};

/// What the three commands' help shares: the output, who may, the errors.
macro_rules! lifecycle_help {
    ($what:literal, $verb:literal) => {
        concat!(
            $what,
            "\n\n\
            AGENT-URL is mxp://host:port/<agent-id>: the command calls `agent.",
            $verb,
            "` with {\"agent_id\": \"<agent-id>\"} on that node's node agent (the nil agent id) \
            and prints `<agent-id>: <new state>`.\n\n\
            Only the node's operators may do this: a node with node.operators set refuses \
            everyone else (exit 3, `denied`); print this CLI's fingerprint with `mxp identity` \
            and add it there. A node without operators (the embedded default) refuses everyone \
            and says how to become one. A \
            transition the agent's state does not allow is refused (exit 3) with the node's \
            reason, e.g. \"cannot suspend an agent that is suspended\".\n\n\
            Lifecycle: active --suspend--> suspended --resume--> active; ready, active or \
            suspended --retire--> retiring --(in-flight Calls done)--> terminated, and gone.\n\n\
            Example:\n  \
            mxp agent ",
            $verb,
            " mxp://127.0.0.1:9000/<agent-id>\n\n",
            agent_id_note!(),
            "\n\n",
            node_exit_codes!(
                "a URL without an agent id",
                "denied, unknown agent, a transition the state does not allow"
            )
        )
    };
}

/// The long help of `mxp agent`.
pub const LONG_ABOUT: &str = concat!(
    "Suspend, resume or retire an agent on a node (operators only).\n\n\
    A suspended agent refuses Calls (agent_unavailable, retriable) until it is resumed; a \
    retiring agent refuses new Calls, finishes the ones under way, stops and leaves the node's \
    list (`mxp agents`).\n\n\
    Examples:\n  \
    mxp agent suspend mxp://127.0.0.1:9000/<agent-id>\n  \
    mxp agent resume mxp://127.0.0.1:9000/<agent-id>\n  \
    mxp agent retire mxp://127.0.0.1:9000/<agent-id>\n\n",
    agent_id_note!()
);

/// Arguments of `mxp agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The lifecycle change.
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// The `mxp agent` commands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Suspend an active agent: it refuses Calls until resumed.
    #[command(long_about = lifecycle_help!("Suspend an active agent: it refuses Calls (agent_unavailable, retriable) until it is resumed.", "suspend"))]
    Suspend(LifecycleArgs),
    /// Resume a suspended agent: it takes Calls again.
    #[command(long_about = lifecycle_help!("Resume a suspended agent: it takes Calls again.", "resume"))]
    Resume(LifecycleArgs),
    /// Retire an agent: it finishes the Calls under way, then stops for good.
    #[command(long_about = lifecycle_help!("Retire an agent: it refuses new Calls (agent_retired), finishes the ones under way, then stops for good and leaves the node.", "retire"))]
    Retire(LifecycleArgs),
}

impl AgentCommand {
    /// The node agent's method, e.g. `agent.suspend`, and the arguments.
    pub fn method(&self) -> (&'static str, &LifecycleArgs) {
        match self {
            AgentCommand::Suspend(a) => ("agent.suspend", a),
            AgentCommand::Resume(a) => ("agent.resume", a),
            AgentCommand::Retire(a) => ("agent.retire", a),
        }
    }
}

/// Arguments of `mxp agent suspend|resume|retire`.
#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// The agent, `mxp://host:port/<agent-id>`.
    #[arg(value_name = "AGENT-URL", value_parser = remote::parse_agent_url)]
    pub url: MxpUrl,
    /// How to reach the node.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Adds to a `denied` answer how to become an operator, unless the node's
/// message says it already; other errors pass.
pub fn explain_denied(err: CliError) -> CliError {
    match err {
        CliError::Remote {
            code,
            message,
            retriable,
        } if code == ErrorCode::DENIED && !message.contains("node.operators") => CliError::Remote {
            code,
            message: format!(
                "{message}; only the node's operators may suspend, resume or retire agents: \
                     print this CLI's fingerprint with `mxp identity` and add it to node.operators \
                     in the node's configuration (or use --identity-dir with an operator's identity)"
            ),
            retriable,
        },
        other => other,
    }
}

/// The line for the node's answer, `<agent-id>: <new state>`.
///
/// # Errors
/// [`CliError::InvalidAnswer`] if the result has no `state`.
pub fn format_changed(
    method: &str,
    requested: &str,
    result: &serde_json::Value,
) -> Result<String, CliError> {
    let state = result
        .get("state")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| remote::unexpected(method, "no \"state\" in the result"))?;
    let agent = result
        .get("agent_id")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(requested);
    Ok(format!("{}: {}\n", table::cell(agent), table::cell(state)))
}

/// Runs `mxp agent <command>`.
///
/// # Errors
/// See [`CliError`] and the exit codes in the commands' help.
pub fn run<W: Write>(args: &AgentArgs, out: &mut W) -> Result<(), CliError> {
    let (method, args) = args.command.method();
    let agent = args
        .url
        .agent()
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{} names no agent: expected mxp://host:port/<agent-id>",
                args.url
            ))
        })?
        .to_string();
    let result = remote::call_node_agent(
        &args.connect,
        &args.url,
        method,
        json!({ "agent_id": agent }),
    )
    .map_err(explain_denied)?;
    let line = format_changed(method, &agent, &result)?;
    write_out(out, line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(subcommand)]
        command: AgentCommand,
    }

    const URL: &str = "mxp://127.0.0.1:9000/ec400000-0000-4000-8000-000000000001";

    #[test]
    fn each_verb_calls_its_method() {
        for (verb, method) in [
            ("suspend", "agent.suspend"),
            ("resume", "agent.resume"),
            ("retire", "agent.retire"),
        ] {
            let cmd = Cmd::try_parse_from(["t", verb, URL, "--timeout", "2s"]).unwrap();
            let (m, args) = cmd.command.method();
            assert_eq!(m, method);
            assert_eq!(args.url.to_string(), URL);
            assert_eq!(args.connect.timeout, std::time::Duration::from_secs(2));
        }
        for bad in [
            &["t", "suspend"][..],
            &["t", "suspend", "mxp://127.0.0.1:9000"],
            &["t", "pause", URL],
        ] {
            let err = Cmd::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn the_new_state_is_printed_after_the_agent_id() {
        let id = "ec400000-0000-4000-8000-000000000001";
        let line = format_changed(
            "agent.suspend",
            id,
            &json!({"agent_id": id, "state": "suspended"}),
        )
        .unwrap();
        assert_eq!(line, format!("{id}: suspended\n"));
        let err = format_changed("agent.suspend", id, &json!({"agent_id": id})).unwrap_err();
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn denied_says_how_to_become_an_operator() {
        let err = explain_denied(CliError::Remote {
            code: ErrorCode::DENIED,
            message: "peer x is not an operator of this node".into(),
            retriable: false,
        });
        assert_eq!(err.exit_code(), 3);
        let text = err.to_string();
        assert!(
            text.starts_with("denied (501): peer x is not an operator"),
            "{text}"
        );
        assert!(text.contains("`mxp identity`"), "{text}");
        assert!(text.contains("node.operators"), "{text}");
        let other = explain_denied(CliError::Remote {
            code: ErrorCode::INVALID_PAYLOAD,
            message: "cannot suspend an agent that is suspended".into(),
            retriable: false,
        });
        assert_eq!(
            other.to_string(),
            "invalid_payload (101): cannot suspend an agent that is suspended (not retriable)"
        );
    }
}
