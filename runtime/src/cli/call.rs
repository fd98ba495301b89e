//! `mxp call`: one Call to an agent on a node, its result on stdout.

use std::io::{Read, Write};

use clap::Args;
use mxp_protocol::CallBody;
use mxp_protocol::payload::MAX_METHOD_LEN;
use mxp_transport::{Client, MxpUrl};
use serde_json::Value;

use super::remote::{self, ConnectArgs};
use super::{CliError, write_out};

/// The long help of `mxp call`.
pub const LONG_ABOUT: &str = concat!(
    "Call an agent on an MXP node and print the result.\n\n\
    The JSON argument is the Call body, {\"method\": \"...\", \"params\": ...}; with --method NAME \
    it is the params alone (and may be left out: params null). `-` reads it from stdin.\n\n\
    On success the Response's `result` is printed as pretty JSON (--raw-json: the whole \
    Response body on one line). On failure stderr gets `mxp: <code name> (<code number>): <message>`.\n\n\
    The CLI connects with its own identity (see `mxp identity`), created on first use. \
    Without --server-fingerprint any node key is accepted (development mode).\n\n\
    Examples:\n  \
    mxp call mxp://127.0.0.1:9000/<agent-id> '{\"method\":\"echo\",\"params\":{\"hello\":\"world\"}}'\n  \
    mxp call --method echo mxp://127.0.0.1:9000/<agent-id> '{\"hello\":\"world\"}' --timeout 2s\n  \
    mxp call --method status mxp://127.0.0.1:9000/<agent-id>\n\n",
    agent_id_note!(),
    " (The echo_node example, cargo run -p mxp-examples --example echo_node, hosts an agent \
    with the fixed id ec400000-0000-4000-8000-000000000001.)\n\n\
    Exit codes: 0 success; 1 local failure or an answer that is not valid MXP; 2 bad arguments \
    or input (URL, JSON, duration, fingerprint); 3 the node answered with an Error frame (stderr says \
    whether it is retriable); 4 no answer within --timeout; 5 the node could not be reached \
    (unreachable, refused, TLS handshake failed e.g. a fingerprint mismatch, connection lost)."
);

/// Arguments of `mxp call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The agent to call, `mxp://host:port/<agent-id>`.
    #[arg(value_name = "URL", value_parser = remote::parse_agent_url)]
    pub url: MxpUrl,
    /// The Call body {"method": "...", "params": ...}; with --method, the params alone. `-` reads stdin.
    #[arg(value_name = "JSON", allow_negative_numbers = true)]
    pub body: Option<String>,
    /// Call this method; JSON is then the params (null if left out).
    #[arg(long, value_name = "NAME")]
    pub method: Option<String>,
    /// Print the whole Response body ({"result": ...}) on one line instead of the pretty result.
    #[arg(long)]
    pub raw_json: bool,
    /// How to reach the node.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Builds the Call body from `--method` and the JSON argument, reading the
/// JSON from `input` when it is `-`.
///
/// Without `--method` the JSON must be an object with `method` and
/// optionally `params`, nothing else (other fields would be dropped on the
/// way, so they are refused as likely typos).
///
/// # Errors
/// [`CliError::Usage`] naming what is wrong, with line and column for JSON
/// that does not parse.
pub fn call_body(
    method: Option<&str>,
    json: Option<&str>,
    input: impl Read,
) -> Result<CallBody, CliError> {
    let body = match method {
        Some(method) => {
            let params = match json {
                Some(text) => remote::parse_json_arg("the params", text, input)?,
                None => Value::Null,
            };
            CallBody::new(method, params)
        }
        None => {
            let text = json.ok_or_else(|| {
                CliError::Usage(
                    "missing the Call body: give '{\"method\": \"...\", \"params\": ...}', or --method NAME".into(),
                )
            })?;
            let value = remote::parse_json_arg("the Call body", text, input)?;
            if let Some(obj) = value.as_object()
                && let Some(extra) = obj.keys().find(|k| *k != "method" && *k != "params")
            {
                return Err(CliError::Usage(format!(
                    "the Call body has an unknown field {extra:?}: expected {{\"method\": \"...\", \"params\": ...}}"
                )));
            }
            serde_json::from_value(value).map_err(|e| {
                CliError::Usage(format!(
                    "the Call body must be {{\"method\": \"...\", \"params\": ...}}: {e}"
                ))
            })?
        }
    };
    remote::check_text("method", &body.method, MAX_METHOD_LEN)?;
    Ok(body)
}

/// Runs `mxp call`: validates the input, then connects, calls and prints.
///
/// # Errors
/// See [`CliError`] and the exit codes in [`LONG_ABOUT`].
pub fn run<R: Read, W: Write>(args: &CallArgs, input: R, out: &mut W) -> Result<(), CliError> {
    let body = call_body(args.method.as_deref(), args.body.as_deref(), input)?;
    let answer = remote::with_node(&args.connect, &args.url, async |client: &Client, left| {
        client
            .call(&args.url, &body, left)
            .await
            .map_err(|e| remote::call_error(e, &args.connect))
    })?;
    let body = remote::response_json(&answer)?;
    let text = if args.raw_json {
        body.to_string()
    } else {
        let result = body.get("result").unwrap_or(&Value::Null);
        serde_json::to_string_pretty(result).map_err(|e| CliError::Io(e.to_string()))?
    };
    write_out(out, text.as_bytes())?;
    write_out(out, b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(method: Option<&str>, json: Option<&str>) -> Result<CallBody, CliError> {
        call_body(method, json, std::io::empty())
    }

    #[test]
    fn the_json_is_the_whole_body() {
        let b = body(
            None,
            Some(r#"{"method":"echo","params":{"hello":"world"}}"#),
        )
        .unwrap();
        assert_eq!(b, CallBody::new("echo", json!({"hello": "world"})));
        let b = body(None, Some(r#"{"method":"status"}"#)).unwrap();
        assert_eq!(b, CallBody::new("status", Value::Null));
    }

    #[test]
    fn with_method_the_json_is_the_params() {
        let b = body(Some("echo"), Some(r#"{"hello":"world"}"#)).unwrap();
        assert_eq!(b, CallBody::new("echo", json!({"hello": "world"})));
        assert_eq!(
            body(Some("status"), None).unwrap(),
            CallBody::new("status", Value::Null)
        );
        assert_eq!(
            body(Some("add"), Some("-3")).unwrap(),
            CallBody::new("add", json!(-3))
        );
        let b = call_body(Some("echo"), Some("-"), &b"[1]"[..]).unwrap();
        assert_eq!(b.params, json!([1]));
    }

    #[test]
    fn bad_bodies_are_usage_errors_that_say_why() {
        for (method, json, why) in [
            (None, None, "missing the Call body"),
            (None, Some(r#"{"method": "echo",}"#), "line 1, column 19"),
            (None, Some("{\n\"method\": echo}"), "line 2, column 11"),
            (
                Some("m"),
                Some("{"),
                "the params is not valid JSON at line 1, column 1",
            ),
            (None, Some(r#"{"params": 1}"#), "missing field `method`"),
            (None, Some(r#"[1]"#), "must be {\"method\""),
            (
                None,
                Some(r#"{"method":"e","parms":1}"#),
                "unknown field \"parms\"",
            ),
            (None, Some(r#"{"method":""}"#), "must not be empty"),
            (Some(""), None, "must not be empty"),
        ] {
            let err = body(method, json).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(why), "{json:?}: {err}");
        }
        let long = "m".repeat(MAX_METHOD_LEN + 1);
        let err = body(Some(&long), None).unwrap_err().to_string();
        assert!(err.contains("at most 256"), "{err}");
        assert!(body(Some(&long[1..]), None).is_ok());
    }
}
