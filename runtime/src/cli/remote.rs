//! What every command that talks to a node shares: the options that say how
//! to reach a node (deadline, the CLI's own identity, trust in the node),
//! node and agent URLs, one exchange with a node on a single-threaded tokio
//! runtime ([`with_node`]), Calls to the node agent ([`call_node_agent`]),
//! and turning transport failures into [`CliError`]s with their exit codes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use mxp_protocol::{CallBody, ErrorCode, Response};
use mxp_transport::{
    CallError, Client, Limits, MxpUrl, NODE_AGENT, NodeIdentity, PeerId, PeerTrust, TransportError,
    default_client_identity_dir,
};
use serde_json::Value;
use tokio::time::Instant;

use super::CliError;
use super::duration::{format_duration, parse_duration};

/// How long a command waits when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: &str = "10s";

/// Options of every command that talks to a node.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Deadline for the whole exchange (connecting, then the answer): 500ms, 5s, 2m, or plain seconds.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
    /// Folder of the CLI's own identity (created on first use) [default: $MXP_CONFIG_DIR/identity, else $XDG_CONFIG_HOME/mxp/identity, else ~/.config/mxp/identity].
    #[arg(long, value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,
    /// Accept only a node presenting this fingerprint (64 hex digits; may be repeated). Without it any node key is accepted (development mode).
    #[arg(long, value_name = "HEX", value_parser = parse_fingerprint)]
    pub server_fingerprint: Vec<PeerId>,
    /// Explain on stderr what is used: the CLI identity, the node's fingerprint, the trust mode.
    #[arg(short, long)]
    pub verbose: bool,
}

impl ConnectArgs {
    /// Pinned fingerprints if any were given, development mode otherwise.
    pub fn trust(&self) -> PeerTrust {
        if self.server_fingerprint.is_empty() {
            PeerTrust::AnyIdentified
        } else {
            PeerTrust::pinned(self.server_fingerprint.iter().copied())
        }
    }
}

/// The node a command asks (`mxp://host:port`), and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct NodeTarget {
    /// The node to ask, `mxp://host:port`.
    #[arg(value_name = "NODE", value_parser = parse_node_url)]
    pub node: MxpUrl,
    /// How to reach the node.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Checks a text field before it goes on the wire: not empty, at most `max`
/// bytes. `what` names it in errors, e.g. "topic".
///
/// # Errors
/// [`CliError::Usage`] saying which limit is broken.
pub fn check_text(what: &str, text: &str, max: usize) -> Result<(), CliError> {
    if text.is_empty() {
        return Err(CliError::Usage(format!("the {what} must not be empty")));
    }
    if text.len() > max {
        return Err(CliError::Usage(format!(
            "the {what} is {} bytes long; at most {max} are allowed",
            text.len()
        )));
    }
    Ok(())
}

/// Parses a `--server-fingerprint` (64 hex digits, optionally `sha256:`-prefixed).
///
/// # Errors
/// A message naming the text.
pub fn parse_fingerprint(text: &str) -> Result<PeerId, String> {
    text.parse::<PeerId>().map_err(|e| e.to_string())
}

/// Parses an `mxp://host:port/<agent-id>` URL that must name an agent.
///
/// # Errors
/// A message naming the URL and what is wrong with it.
pub fn parse_agent_url(text: &str) -> Result<MxpUrl, String> {
    let url: MxpUrl = text.parse().map_err(|e: TransportError| e.to_string())?;
    if url.agent().is_none() {
        return Err(format!(
            "{text:?} names no agent: expected mxp://host:port/<agent-id>"
        ));
    }
    Ok(url)
}

/// Parses an `mxp://host:port` URL that names a node, not an agent.
///
/// # Errors
/// A message naming the URL and what is wrong with it, e.g. an agent id in
/// the path.
pub fn parse_node_url(text: &str) -> Result<MxpUrl, String> {
    let url: MxpUrl = text.parse().map_err(|e: TransportError| e.to_string())?;
    if let Some(agent) = url.agent() {
        return Err(format!(
            "{text:?} names the agent {agent}: expected a node, mxp://host:port (without /<agent-id>)"
        ));
    }
    Ok(url)
}

/// The node part of `url`, `mxp://host:port`, without the agent.
pub fn node_of(url: &MxpUrl) -> MxpUrl {
    MxpUrl::new(url.host(), url.port(), None)
}

/// Parses a JSON command-line argument, or reads it from `input` when it is
/// `-`. `what` names it in errors, e.g. "the Call body".
///
/// # Errors
/// [`CliError::Usage`] naming the line and column of a syntax error, or
/// [`CliError::Io`] if standard input cannot be read.
pub fn parse_json_arg(what: &str, text: &str, input: impl Read) -> Result<Value, CliError> {
    let read;
    let text = if text == "-" {
        read = read_all(input)?;
        read.as_str()
    } else {
        text
    };
    serde_json::from_str(text).map_err(|e| json_error(what, &e))
}

fn read_all(mut input: impl Read) -> Result<String, CliError> {
    let mut s = String::new();
    input
        .read_to_string(&mut s)
        .map_err(|e| CliError::Io(format!("cannot read standard input: {e}")))?;
    Ok(s)
}

/// A usage error for JSON that does not parse, naming where.
pub(crate) fn json_error(what: &str, e: &serde_json::Error) -> CliError {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let reason = full.strip_suffix(&position).unwrap_or(&full);
    let kind = match e.classify() {
        serde_json::error::Category::Data => "does not have the expected shape",
        _ => "is not valid JSON",
    };
    CliError::Usage(format!(
        "{what} {kind} at line {}, column {}: {reason}",
        e.line(),
        e.column()
    ))
}

/// The CLI's own identity: loaded from `dir` (or the default folder), created
/// there on first use. Returns it with the folder it lives in.
///
/// # Errors
/// [`CliError::Usage`] if there is no default folder (no `$HOME`),
/// [`CliError::Io`] if the identity cannot be read or created.
pub fn load_identity(dir: Option<&Path>) -> Result<(NodeIdentity, PathBuf), CliError> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => default_client_identity_dir().ok_or_else(|| {
            CliError::Usage(
                "no folder for the CLI identity: set MXP_CONFIG_DIR (or HOME), or pass --identity-dir".into(),
            )
        })?,
    };
    // Created 0700 (key 0600); a key others may read is refused, a folder
    // they may list is a warning on stderr.
    let (identity, warnings) =
        NodeIdentity::load_or_create_checked(&dir).map_err(|e| CliError::Io(e.to_string()))?;
    for w in warnings {
        eprintln!("mxp: warning: {w}");
    }
    Ok((identity, dir))
}

/// A current-thread tokio runtime for one command.
///
/// # Errors
/// [`CliError::Io`] if the runtime cannot start.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Io(format!("cannot start the async runtime: {e}")))
}

/// A client connected to the node `url` names, within `deadline`.
///
/// Connecting first, on its own, tells a node that cannot be reached
/// (exit code 5) from one that does not answer in time (exit code 4). Must
/// run inside a tokio runtime.
///
/// # Errors
/// [`CliError::Connection`] if the node cannot be reached, refuses the
/// connection or fails the TLS handshake (e.g. a fingerprint that does not
/// match `--server-fingerprint`) before the deadline; [`CliError::Io`] if
/// the client cannot be set up.
///
/// # Cancel safety
/// Cancel safe: a dropped connect leaves nothing behind.
pub async fn connect(
    args: &ConnectArgs,
    identity: &NodeIdentity,
    identity_dir: &Path,
    url: &MxpUrl,
    deadline: Instant,
) -> Result<Client, CliError> {
    connect_with(
        args,
        identity,
        identity_dir,
        url,
        deadline,
        Limits::default(),
    )
    .await
}

/// As [`connect`], with the client's transport `limits` (the handshake
/// timeout is `--timeout`).
///
/// # Errors
/// As [`connect`].
///
/// # Cancel safety
/// Cancel safe: a dropped connect leaves nothing behind.
pub async fn connect_with(
    args: &ConnectArgs,
    identity: &NodeIdentity,
    identity_dir: &Path,
    url: &MxpUrl,
    deadline: Instant,
    limits: Limits,
) -> Result<Client, CliError> {
    let limits = Limits {
        handshake_timeout: args.timeout,
        ..limits
    };
    let client =
        Client::new(identity, args.trust(), limits).map_err(|e| CliError::Io(e.to_string()))?;
    if args.verbose {
        eprintln!(
            "mxp: client identity {} (folder {})",
            identity.peer_id(),
            identity_dir.display()
        );
    }
    let node = match tokio::time::timeout_at(deadline, client.connect(url)).await {
        Ok(Ok((_, node))) => node,
        Ok(Err(e)) => return Err(connection_error(&e.into(), args)),
        Err(_) => {
            return Err(CliError::Connection {
                code: ErrorCode::UNREACHABLE,
                message: format!(
                    "cannot connect to {}: no connection within {}",
                    url.authority(),
                    format_duration(args.timeout)
                ),
            });
        }
    };
    if args.verbose {
        if args.server_fingerprint.is_empty() {
            eprintln!(
                "mxp: development mode: node key {node} accepted without pinning; pass --server-fingerprint {node} to pin it"
            );
        } else {
            eprintln!("mxp: node key {node} matches --server-fingerprint");
        }
    }
    Ok(client)
}

/// Runs one exchange with the node `url` names: loads (or creates) the CLI's
/// identity, connects within `--timeout`, runs `work` with the client and the
/// time left before the deadline, then closes the connection.
///
/// # Errors
/// What [`load_identity`], [`runtime`] and [`connect`] return, or what
/// `work` returns (map transport failures with [`call_error`]).
pub fn with_node<T>(
    args: &ConnectArgs,
    url: &MxpUrl,
    work: impl AsyncFnOnce(&Client, Duration) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let (identity, dir) = load_identity(args.identity_dir.as_deref())?;
    let rt = runtime()?;
    rt.block_on(async {
        let deadline = Instant::now() + args.timeout;
        let client = connect(args, &identity, &dir, url, deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let result = work(&client, left).await;
        // Closing is safe: the node serves every stream that arrived before
        // the close, so an acknowledged event is not lost.
        client.close().await;
        result
    })
}

/// The JSON body of a Response (`{"result": ...}`).
///
/// # Errors
/// [`CliError::InvalidAnswer`] if the body is not JSON.
pub fn response_json(answer: &Response) -> Result<Value, CliError> {
    serde_json::from_slice(&answer.body).map_err(|e| CliError::InvalidAnswer {
        code: ErrorCode::MALFORMED_FRAME,
        message: format!("the Response body is not JSON: {e}"),
    })
}

/// The `result` of a Response's JSON body (null if it has none).
///
/// # Errors
/// [`CliError::InvalidAnswer`] if the body is not JSON.
pub fn response_result(answer: &Response) -> Result<Value, CliError> {
    let mut body = response_json(answer)?;
    Ok(body
        .get_mut("result")
        .map(Value::take)
        .unwrap_or(Value::Null))
}

/// Writes a node's `result`: with `--json` as JSON on one line, otherwise
/// as `human` renders it for people.
///
/// # Errors
/// What `human` returns, or a failed write.
pub fn print_result<W: std::io::Write>(
    out: &mut W,
    json: bool,
    result: &Value,
    human: impl FnOnce(&Value) -> Result<String, CliError>,
) -> Result<(), CliError> {
    let text = if json {
        format!("{result}\n")
    } else {
        human(result)?
    };
    super::write_out(out, text.as_bytes())
}

/// Calls the control method `method` of the node agent (the nil agent id)
/// on the node `node` names, and returns the Response's `result`.
///
/// # Errors
/// As [`with_node`] and [`call_error`]; [`CliError::InvalidAnswer`] for an
/// answer without a JSON body.
pub fn call_node_agent(
    args: &ConnectArgs,
    node: &MxpUrl,
    method: &str,
    params: Value,
) -> Result<Value, CliError> {
    let url = node_of(node).with_agent(NODE_AGENT);
    let body = CallBody::new(method, params);
    let answer = with_node(args, &url, async |client: &Client, left| {
        client
            .call(&url, &body, left)
            .await
            .map_err(|e| call_error(e, args))
    })?;
    response_result(&answer)
}

/// An answer of the node that does not have the shape its method promises.
pub(crate) fn unexpected(what: &str, detail: impl std::fmt::Display) -> CliError {
    CliError::InvalidAnswer {
        code: ErrorCode::INVALID_PAYLOAD,
        message: format!("unexpected answer to {what}: {detail}"),
    }
}

fn connection_error(err: &CallError, args: &ConnectArgs) -> CliError {
    let mut message = err.to_string();
    if !args.server_fingerprint.is_empty() && message.contains("certificate") {
        message.push_str(" (the node's key does not match --server-fingerprint)");
    }
    CliError::Connection {
        code: err.code(),
        message,
    }
}

/// The node's message, with the determining policies of a denial appended
/// when the message does not name them already.
fn with_remedy(message: String, details: Option<&Value>) -> String {
    let Some(reasons) = details
        .and_then(|d| d.get("reasons"))
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
    else {
        return message;
    };
    let names: Vec<&str> = reasons.iter().filter_map(Value::as_str).collect();
    if names.iter().all(|n| message.contains(n)) {
        return message;
    }
    format!("{message} [policies: {}]", names.join(", "))
}

/// Maps a failed Call or Event to the CLI error with its exit code:
/// the node's Error frame → 3, no answer by the deadline → 4, a node that
/// cannot be reached or drops the connection → 5, an answer that is not
/// valid MXP or a local failure → 1, an input the transport refuses → 2.
pub fn call_error(err: CallError, args: &ConnectArgs) -> CliError {
    match err {
        CallError::Remote {
            code,
            message,
            retriable,
            details,
        } => CliError::Remote {
            code,
            message: with_remedy(message, details.as_ref()),
            retriable,
        },
        CallError::Timeout(_) => CliError::Timeout(format!(
            "no answer within {}",
            format_duration(args.timeout)
        )),
        CallError::Transport(
            TransportError::Connect { .. } | TransportError::ConnectionLost(_),
        ) => connection_error(&err, args),
        CallError::Transport(
            TransportError::Encode(_)
            | TransportError::InvalidUrl { .. }
            | TransportError::InvalidFingerprint { .. },
        ) => CliError::Usage(err.to_string()),
        CallError::InvalidResponse(_) | CallError::Transport(TransportError::Decode(_)) => {
            CliError::InvalidAnswer {
                code: err.code(),
                message: err.to_string(),
            }
        }
        other => CliError::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        connect: ConnectArgs,
    }

    fn args(extra: &[&str]) -> ConnectArgs {
        let mut argv = vec!["t"];
        argv.extend_from_slice(extra);
        Cmd::try_parse_from(argv).unwrap().connect
    }

    const FP: &str = "8f1b3c5e7a9d0b2c4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d";

    #[test]
    fn defaults_are_ten_seconds_and_development_mode() {
        let a = args(&[]);
        assert_eq!(a.timeout, Duration::from_secs(10));
        assert_eq!(a.identity_dir, None);
        assert_eq!(a.trust(), PeerTrust::AnyIdentified);
        assert!(!a.verbose);
    }

    #[test]
    fn fingerprints_pin_the_node() {
        let a = args(&["--server-fingerprint", FP, "-v", "--timeout", "500ms"]);
        let fp: PeerId = FP.parse().unwrap();
        assert_eq!(a.trust(), PeerTrust::pinned([fp]));
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert!(a.verbose);
        let prefixed = format!("sha256:{FP}");
        let a = args(&["--server-fingerprint", &prefixed]);
        assert_eq!(a.server_fingerprint, vec![fp]);
    }

    #[test]
    fn bad_options_are_usage_errors() {
        for bad in [
            &["--timeout", "5x"][..],
            &["--timeout", "0"],
            &["--server-fingerprint", "abcd"],
        ] {
            let mut argv = vec!["t"];
            argv.extend_from_slice(bad);
            let err = Cmd::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            let text = err.to_string();
            assert!(text.contains(bad[1]), "{bad:?}: {text}");
        }
    }

    #[test]
    fn agent_urls() {
        let url =
            parse_agent_url("mxp://127.0.0.1:9000/ec400000-0000-4000-8000-000000000001").unwrap();
        assert_eq!(url.port(), 9000);
        let e = parse_agent_url("mxp://127.0.0.1:9000").unwrap_err();
        assert!(e.contains("names no agent"), "{e}");
        let e = parse_agent_url("http://x/1").unwrap_err();
        assert!(e.contains("mxp://"), "{e}");
    }

    #[test]
    fn json_errors_name_line_and_column() {
        let e = parse_json_arg("the Call body", "{\n  \"a\": 1,\n}", std::io::empty())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the Call body is not valid JSON at line 3, column 1: "),
            "{e}"
        );
        assert!(!e.contains("at line 3 column 1"), "position twice: {e}");
        let v = parse_json_arg("params", "-", &b"[1, 2]"[..]).unwrap();
        assert_eq!(v, serde_json::json!([1, 2]));
    }

    #[test]
    fn call_errors_map_to_exit_codes() {
        let a = args(&["--timeout", "500ms"]);
        let remote = call_error(
            CallError::Remote {
                code: ErrorCode::UNKNOWN_AGENT,
                message: "no agent x".into(),
                retriable: false,
                details: None,
            },
            &a,
        );
        assert_eq!(remote.exit_code(), 3);
        assert_eq!(
            remote.to_string(),
            "unknown_agent (200): no agent x (not retriable)"
        );
        let retriable = call_error(
            CallError::Remote {
                code: ErrorCode::OVERLOADED,
                message: "busy".into(),
                retriable: true,
                details: None,
            },
            &a,
        );
        assert_eq!(
            retriable.to_string(),
            "overloaded (400): busy (retriable: the same call may succeed later)"
        );
        let timeout = call_error(CallError::Timeout(Duration::from_millis(123)), &a);
        assert_eq!(timeout.exit_code(), 4);
        assert_eq!(timeout.to_string(), "timeout (300): no answer within 500ms");
        let refused = call_error(
            CallError::Transport(TransportError::Connect {
                addr: "127.0.0.1:1".into(),
                reason: "no handshake within 500ms".into(),
            }),
            &a,
        );
        assert_eq!(refused.exit_code(), 5);
        assert!(refused.to_string().contains("127.0.0.1:1"), "{refused}");
        let lost = call_error(
            CallError::Transport(TransportError::ConnectionLost("reset".into())),
            &a,
        );
        assert_eq!(lost.exit_code(), 5);
        let invalid = call_error(CallError::InvalidResponse("odd".into()), &a);
        assert_eq!(invalid.exit_code(), 1);
        assert!(invalid.to_string().starts_with("malformed_frame (100): "));
        let local = call_error(
            CallError::Transport(TransportError::Config("bad".into())),
            &a,
        );
        assert_eq!(local.exit_code(), 1);
    }

    #[test]
    fn a_pin_mismatch_says_so() {
        let a = args(&["--server-fingerprint", FP]);
        let e = call_error(
            CallError::Transport(TransportError::Connect {
                addr: "h:1".into(),
                reason: "the cryptographic handshake failed: invalid peer certificate".into(),
            }),
            &a,
        );
        assert!(
            e.to_string()
                .contains("does not match --server-fingerprint"),
            "{e}"
        );
    }
}
