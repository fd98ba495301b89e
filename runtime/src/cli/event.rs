//! `mxp event`: one Event (fire-and-forget) to an agent on a node.

use std::io::{Read, Write};

use clap::Args;
use mxp_protocol::EventBody;
use mxp_protocol::payload::MAX_TOPIC_LEN;
use mxp_transport::{Client, MxpUrl};
use serde_json::Value;

use super::CliError;
use super::duration::format_duration;
use super::remote::{self, ConnectArgs};

/// The long help of `mxp event`.
pub const LONG_ABOUT: &str = concat!(
    "Send an Event to an agent on an MXP node (fire-and-forget).\n\n\
    The Event's target is the URL's agent, its data the JSON argument (null if left out; `-` \
    reads stdin). The command exits 0 once the node has acknowledged the data; that says the \
    node received it, not that an agent handled it (a node drops events for agents it does not \
    have, or whose mailbox is full). Nothing is printed on success.\n\n\
    Example:\n  \
    mxp event mxp://127.0.0.1:9000/<agent-id> --topic greeting '{\"hello\":\"world\"}'\n\n",
    agent_id_note!(),
    "\n\n\
    Exit codes: 0 the node has the event; 1 local failure; 2 bad arguments or input; 4 not \
    acknowledged within --timeout; 5 the node could not be reached (unreachable, refused, TLS \
    handshake failed, connection lost)."
);

/// Arguments of `mxp event`.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// The agent the event is for, `mxp://host:port/<agent-id>`.
    #[arg(value_name = "URL", value_parser = remote::parse_agent_url)]
    pub url: MxpUrl,
    /// What the event is about, 1 to 256 bytes (dot-separated by convention, e.g. audit.appended).
    #[arg(long, short = 't', value_name = "TOPIC")]
    pub topic: String,
    /// The event's data, any JSON value (null if left out). `-` reads stdin.
    #[arg(value_name = "JSON", allow_negative_numbers = true)]
    pub data: Option<String>,
    /// How to reach the node.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Builds the Event body for the agent `url` names.
///
/// # Errors
/// [`CliError::Usage`] for an empty or over-long topic, a URL without an
/// agent, or data that is not JSON (naming line and column).
pub fn event_body(
    url: &MxpUrl,
    topic: &str,
    data: Option<&str>,
    input: impl Read,
) -> Result<EventBody, CliError> {
    remote::check_text("topic", topic, MAX_TOPIC_LEN)?;
    let target = url.agent().ok_or_else(|| {
        CliError::Usage(format!(
            "{url} names no agent: expected mxp://host:port/<agent-id>"
        ))
    })?;
    let data = match data {
        Some(text) => remote::parse_json_arg("the event data", text, input)?,
        None => Value::Null,
    };
    Ok(EventBody {
        target: Some(target),
        topic: topic.to_owned(),
        data,
    })
}

/// Runs `mxp event`: validates the input, then connects and sends.
///
/// # Errors
/// See [`CliError`] and the exit codes in [`LONG_ABOUT`].
pub fn run<R: Read, W: Write>(args: &EventArgs, input: R, _out: &mut W) -> Result<(), CliError> {
    let body = event_body(&args.url, &args.topic, args.data.as_deref(), input)?;
    remote::with_node(&args.connect, &args.url, async |client: &Client, left| {
        match tokio::time::timeout(left, client.event(&args.url, &body)).await {
            Ok(Ok(())) => {
                if args.connect.verbose {
                    eprintln!("mxp: the node acknowledged the event");
                }
                Ok(())
            }
            Ok(Err(e)) => Err(remote::call_error(e.into(), &args.connect)),
            Err(_) => Err(CliError::Timeout(format!(
                "the node did not acknowledge the event within {}",
                format_duration(args.connect.timeout)
            ))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL: &str = "mxp://127.0.0.1:9000/ec400000-0000-4000-8000-000000000001";

    #[test]
    fn the_target_is_the_urls_agent() {
        let url: MxpUrl = URL.parse().unwrap();
        let ev = event_body(&url, "greeting", Some(r#"{"hi":1}"#), std::io::empty()).unwrap();
        assert_eq!(ev.target, url.agent());
        assert_eq!(ev.topic, "greeting");
        assert_eq!(ev.data, json!({"hi": 1}));
        let ev = event_body(&url, "t", None, std::io::empty()).unwrap();
        assert_eq!(ev.data, Value::Null);
    }

    #[test]
    fn bad_events_are_usage_errors() {
        let url: MxpUrl = URL.parse().unwrap();
        let long = "t".repeat(MAX_TOPIC_LEN + 1);
        for (url, topic, data, why) in [
            (url.clone(), "", None, "must not be empty"),
            (url.clone(), long.as_str(), None, "at most 256"),
            (url.clone(), "t", Some("{x"), "line 1, column 2"),
            (
                "mxp://127.0.0.1:9000".parse().unwrap(),
                "t",
                None,
                "names no agent",
            ),
        ] {
            let err = event_body(&url, topic, data, std::io::empty()).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(why), "{topic}: {err}");
        }
    }
}
