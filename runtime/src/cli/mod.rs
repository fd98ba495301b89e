//! The `mxp` command-line tool: its arguments ([`Cli`]), its errors
//! ([`CliError`]) and the commands behind them.
//!
//! Every command reads from a generic [`Read`] and writes to a generic
//! [`Write`], so it can be run over in-memory buffers in tests; [`run`] wires
//! them to the process's locked, buffered standard streams. `mxp frame` is
//! synchronous; the commands that talk to a node (`mxp call`, `mxp event`,
//! `mxp agents`, `mxp discover`, `mxp node status`, `mxp agent ...`) build a
//! single-threaded tokio runtime for their network exchange.
//!
//! Exit codes (see [`CliError::exit_code`]): `0` success (also when stdout
//! was closed early, e.g. by `| head`), `1` I/O or local failure, a raw
//! stream whose framing was lost, or an answer that is not valid MXP, `2` bad
//! arguments or input, `3` the node answered with an Error frame, `4` no
//! answer before the deadline, `5` the node could not be reached.

use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit-code paragraph of the help of a command that asks a node
/// something: `$usage` gives examples of bad arguments, the optional
/// `$remote` examples of the node's Error frames.
macro_rules! node_exit_codes {
    ($usage:literal $(, $remote:literal)?) => {
        concat!(
            "Exit codes: 0 success; 1 local failure or an answer that is not valid MXP; \
            2 bad arguments (e.g. ",
            $usage,
            "); 3 the node answered with an Error frame",
            $(" (", $remote, ")",)?
            "; 4 no answer within --timeout; 5 the node could not be reached (unreachable, \
            refused, TLS handshake failed, connection lost)."
        )
    };
}

/// What `<agent-id>` in the help's examples stands for (a literal, for `concat!`).
macro_rules! agent_id_note {
    () => {
        "<agent-id> is the id of an agent on that node: mxp-node prints it at start \
        (`agent demo: <agent-id>`, and a ready-to-paste `try: mxp call ...` line; the demo \
        agent's id is derived from the node's identity, so every node's differs), and \
        `mxp agents mxp://127.0.0.1:9000` lists them."
    };
}

pub mod agent;
pub mod agents;
pub mod approvals;
pub mod audit;
pub mod call;
pub mod discover;
pub mod duration;
pub mod event;
pub mod frame;
pub mod identity;
pub mod killswitch;
pub mod node;
pub mod policy;
pub mod remote;
pub mod replay;
pub mod since;
pub mod skills;
pub mod table;

use mxp_protocol::ErrorCode;

/// Bytes of the output buffer in front of stdout.
const OUT_BUFFER: usize = 64 * 1024;

/// `mxp`: tools for MXP, the Mesh eXchange Protocol.
#[derive(Debug, Parser)]
#[command(
    name = "mxp",
    version,
    about = "Tools for MXP, the Mesh eXchange Protocol",
    long_about = "Tools for MXP, the Mesh eXchange Protocol.\n\n\
        Build, inspect and validate MXP v1 frames: a 32-byte little-endian header \
        (magic 31 50 58 4d, type, flags, message id, trace id, payload length), \
        a payload of at most 16 MiB and an XXH3-64 checksum.\n\n\
        Call agents on MXP nodes over QUIC with mutual TLS (`mxp call`, `mxp event`), \
        using the CLI's own identity (`mxp identity`). Ask a node what it knows (`mxp agents`, \
        `mxp discover`, `mxp node status`) and, as an operator, suspend, resume or retire its \
        agents (`mxp agent`), reload its policy (`mxp policy`), flip its kill switch \
        (`mxp killswitch`), decide approvals (`mxp approvals`), read the audit log (`mxp audit`), \
        replay a recorded session (`mxp replay`) and try a policy set on history \
        (`mxp policy what-if`). Check a policy folder offline with `mxp policy check <dir>`.\n\n\
        Examples:\n  \
        mxp frame encode --type call --message-id 42 --payload-hex 68656c6c6f | mxp frame decode\n  \
        mxp agents mxp://127.0.0.1:9000\n  \
        mxp call mxp://127.0.0.1:9000/<agent-id> '{\"method\":\"echo\",\"params\":{\"hello\":\"world\"}}'\n  \
        mxp discover mxp://127.0.0.1:9000 echo\n  \
        mxp node status mxp://127.0.0.1:9000\n  \
        mxp agent suspend mxp://127.0.0.1:9000/<agent-id>\n\n\
        <agent-id> is the id of an agent on that node: mxp-node prints it at start \
        (`agent demo: <agent-id>`, and a ready-to-paste `try: mxp call ...` line), and \
        `mxp agents` lists them.\n\n\
        Exit codes: 0 success; 1 I/O or local failure, lost framing, or an answer that is not valid MXP; \
        2 bad arguments or input; 3 the node answered with an Error frame; 4 no answer within --timeout; \
        5 the node could not be reached (unreachable, refused, TLS handshake failed, connection lost)."
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encode and decode single MXP frames (`mxp frame decode`, `mxp frame encode`).
    #[command(long_about = "Encode and decode MXP v1 frames.\n\n\
            `mxp frame decode` validates frames (hex lines, or a binary capture with --raw) \
            and prints one JSON line per frame; `mxp frame encode` builds a frame from its \
            fields and prints it as hex (or raw bytes with --raw-out).\n\n\
            Example:\n  \
            mxp frame encode --type event --payload-hex 7b7d | mxp frame decode")]
    Frame(frame::FrameArgs),
    /// Call an agent on a node and print the result (`mxp call mxp://host:port/<agent-id> '{"method":...}'`).
    #[command(long_about = call::LONG_ABOUT)]
    Call(call::CallArgs),
    /// Send an Event to an agent on a node (fire-and-forget).
    #[command(long_about = event::LONG_ABOUT)]
    Event(event::EventArgs),
    /// Print the fingerprint of the CLI's own identity (what a node pins) and its folder.
    #[command(long_about = identity::LONG_ABOUT)]
    Identity(identity::IdentityArgs),
    /// List the agents a node knows, hosted there or elsewhere in the mesh (`mxp agents mxp://host:port`).
    #[command(long_about = agents::LONG_ABOUT)]
    Agents(agents::AgentsArgs),
    /// Find agents with a capability (`mxp discover mxp://host:port <capability>`).
    #[command(long_about = discover::LONG_ABOUT)]
    Discover(discover::DiscoverArgs),
    /// Ask a node about itself (`mxp node status mxp://host:port`).
    Node(node::NodeArgs),
    /// Suspend, resume or retire an agent on a node, as an operator (`mxp agent suspend mxp://host:port/<agent-id>`).
    #[command(long_about = agent::LONG_ABOUT)]
    Agent(agent::AgentArgs),
    /// Check a Cedar policy folder offline, or make a node reload its set (`mxp policy check ./policies`).
    #[command(long_about = policy::LONG_ABOUT)]
    Policy(policy::PolicyArgs),
    /// Turn a node's kill switch on or off, confirmed by every executor (`mxp killswitch on mxp://host:port`).
    #[command(long_about = killswitch::LONG_ABOUT)]
    Killswitch(killswitch::KillSwitchArgs),
    /// List, show, approve or deny pending approvals, as an operator (`mxp approvals list mxp://host:port`).
    #[command(long_about = approvals::LONG_ABOUT)]
    Approvals(approvals::ApprovalsArgs),
    /// Verify and read a node's audit log, as an operator (`mxp audit verify mxp://host:port`).
    #[command(long_about = audit::LONG_ABOUT)]
    Audit(audit::AuditArgs),
    /// Replay a recorded session on a node, or re-decide it under another policy, as an operator (`mxp replay mxp://host:port <session>`).
    #[command(long_about = replay::LONG_ABOUT)]
    Replay(replay::ReplayArgs),
    /// List or verify a node's WebAssembly skills offline (`mxp skills verify --config node.toml`).
    #[command(long_about = skills::LONG_ABOUT)]
    Skills(skills::SkillsArgs),
}

/// Why a command failed, and with which exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A bad argument or bad input: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Reading or writing failed: exit code 1.
    #[error("{0}")]
    Io(String),
    /// A raw stream lost its frame boundaries: exit code 1.
    #[error(
        "framing lost at byte offset {offset} ({class}): no further frames can be read from this stream"
    )]
    FramingLost {
        /// Offset in the input of the first byte that could not be framed.
        offset: u64,
        /// The error class that lost the framing (`invalid_magic`, `payload_too_large`).
        class: &'static str,
    },
    /// Standard output was closed by its reader (`EPIPE`): stop quietly, exit code 0.
    #[error("standard output was closed")]
    OutputClosed,
    /// The node answered with an Error frame: exit code 3.
    #[error("{code}: {message} ({})", retriable_note(*.retriable))]
    Remote {
        /// The Error frame's code.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// Whether the same Call may succeed later.
        retriable: bool,
    },
    /// No answer before the deadline: exit code 4.
    #[error("{timeout}: {0}", timeout = ErrorCode::TIMEOUT)]
    Timeout(String),
    /// The node could not be reached, refused the connection, failed the TLS
    /// handshake or dropped the connection: exit code 5.
    #[error("{code}: {message}")]
    Connection {
        /// The code the failure maps to (`mxp_transport::CallError::code`).
        code: ErrorCode,
        /// What failed.
        message: String,
    },
    /// The node's answer is not valid MXP: exit code 1.
    #[error("{code}: {message}")]
    InvalidAnswer {
        /// The code the failure maps to.
        code: ErrorCode,
        /// What is wrong with the answer.
        message: String,
    },
    /// The command printed its report, and the report says the history
    /// differs: a replay that diverged or cannot be replayed, a what-if
    /// with decisions that would change. Exit code 6, so a script (or CI)
    /// can gate on it.
    #[error("{0}")]
    Differs(String),
}

fn retriable_note(retriable: bool) -> &'static str {
    if retriable {
        "retriable: the same call may succeed later"
    } else {
        "not retriable"
    }
}

impl CliError {
    /// The process exit code for this error.
    pub const fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Io(_) | CliError::FramingLost { .. } | CliError::InvalidAnswer { .. } => 1,
            CliError::OutputClosed => 0,
            CliError::Remote { .. } => 3,
            CliError::Timeout(_) => 4,
            CliError::Connection { .. } => 5,
            CliError::Differs(_) => 6,
        }
    }

    /// Maps a failed write to standard output: a closed pipe becomes
    /// [`CliError::OutputClosed`], anything else an I/O error.
    pub fn from_output(err: &io::Error) -> CliError {
        if err.kind() == io::ErrorKind::BrokenPipe {
            CliError::OutputClosed
        } else {
            CliError::Io(format!("cannot write to standard output: {err}"))
        }
    }
}

/// Writes `bytes` to standard output (or its stand-in), mapping errors with
/// [`CliError::from_output`].
pub(crate) fn write_out(out: &mut impl Write, bytes: &[u8]) -> Result<(), CliError> {
    out.write_all(bytes).map_err(|e| CliError::from_output(&e))
}

/// Flushes standard output (or its stand-in), mapping errors with
/// [`CliError::from_output`].
pub(crate) fn flush_out(out: &mut impl Write) -> Result<(), CliError> {
    out.flush().map_err(|e| CliError::from_output(&e))
}

/// Parses a `u64` written in decimal (`42`) or hex with a `0x` prefix (`0x2a`).
///
/// # Errors
/// A message naming the value, for any other text or a number above `u64::MAX`.
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            None
        } else {
            u64::from_str_radix(hex, 16).ok()
        }
    } else if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse().ok()
    } else {
        None
    };
    parsed.ok_or_else(|| {
        format!(
            "{text:?} is not a decimal or 0x-hex number from 0 to {}",
            u64::MAX
        )
    })
}

/// Runs a parsed command line against the given input and output, returning
/// what went wrong, if anything. Output is flushed on success.
///
/// # Errors
/// See [`CliError`].
pub fn execute<R: Read, W: Write>(cli: Cli, input: R, out: &mut W) -> Result<(), CliError> {
    match cli.command {
        Command::Frame(args) => frame::run(args, input, out)?,
        Command::Call(args) => call::run(&args, input, out)?,
        Command::Event(args) => event::run(&args, input, out)?,
        Command::Identity(args) => identity::run(&args, out)?,
        Command::Agents(args) => agents::run(&args, out)?,
        Command::Discover(args) => discover::run(&args, out)?,
        Command::Node(args) => node::run(&args, out)?,
        Command::Agent(args) => agent::run(&args, out)?,
        Command::Policy(args) => policy::run(&args, out)?,
        Command::Killswitch(args) => killswitch::run(&args, out)?,
        Command::Approvals(args) => approvals::run(&args, out)?,
        Command::Audit(args) => audit::run(&args, out)?,
        Command::Replay(args) => replay::run(&args, out)?,
        Command::Skills(args) => skills::run(&args, out)?,
    }
    flush_out(out)
}

/// Runs a parsed command line on the process's standard streams and returns
/// its exit code; errors are written to standard error as `mxp: <message>`.
pub fn run(cli: Cli) -> ExitCode {
    let stdin = io::stdin().lock();
    let mut out = BufWriter::with_capacity(OUT_BUFFER, io::stdout().lock());
    let result = execute(cli, stdin, &mut out);
    let code = match result {
        Ok(()) => 0,
        Err(err) => {
            // Whatever was printed before the error goes out before the message.
            let _ = out.flush();
            if !matches!(err, CliError::OutputClosed) {
                let _ = writeln!(io::stderr().lock(), "mxp: {err}");
            }
            err.exit_code()
        }
    };
    ExitCode::from(code)
}

/// The `mxp` binary: parses the command line (clap exits with code 2 on usage
/// errors, 0 for `--help`) and calls [`run`].
pub fn main() -> ExitCode {
    run(Cli::parse())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn u64_accepts_decimal_and_hex() {
        assert_eq!(parse_u64("0"), Ok(0));
        assert_eq!(parse_u64("42"), Ok(42));
        assert_eq!(parse_u64(" 42 "), Ok(42));
        assert_eq!(parse_u64("0x2a"), Ok(42));
        assert_eq!(parse_u64("0X2A"), Ok(42));
        assert_eq!(parse_u64("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_u64("0xffffffffffffffff"), Ok(u64::MAX));
    }

    #[test]
    fn u64_rejects_everything_else() {
        for bad in [
            "",
            "-1",
            "+1",
            "0x",
            "0x+1",
            "1.5",
            "abc",
            "18446744073709551616",
            "0x10000000000000000",
        ] {
            let err = parse_u64(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage(String::new()).exit_code(), 2);
        assert_eq!(CliError::Io(String::new()).exit_code(), 1);
        assert_eq!(
            CliError::FramingLost {
                offset: 3,
                class: "invalid_magic"
            }
            .exit_code(),
            1
        );
        assert_eq!(CliError::OutputClosed.exit_code(), 0);
        let remote = CliError::Remote {
            code: ErrorCode::UNKNOWN_AGENT,
            message: String::new(),
            retriable: false,
        };
        assert_eq!(remote.exit_code(), 3);
        assert_eq!(CliError::Timeout(String::new()).exit_code(), 4);
        let conn = CliError::Connection {
            code: ErrorCode::INTERNAL,
            message: String::new(),
        };
        assert_eq!(conn.exit_code(), 5);
        let invalid = CliError::InvalidAnswer {
            code: ErrorCode::MALFORMED_FRAME,
            message: String::new(),
        };
        assert_eq!(invalid.exit_code(), 1);
        let broken = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(matches!(
            CliError::from_output(&broken),
            CliError::OutputClosed
        ));
        let other = io::Error::other("disk full");
        assert!(
            matches!(CliError::from_output(&other), CliError::Io(m) if m.contains("disk full"))
        );
    }

    #[test]
    fn top_level_help_lists_the_frame_command() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("frame"), "{help}");
        assert!(help.contains("Example"), "{help}");
    }

    #[test]
    fn help_documents_every_exit_code() {
        let help = Cli::command().render_long_help().to_string();
        for code in [
            "0 success",
            "1 I/O",
            "2 bad",
            "3 the node",
            "4 no answer",
            "5 the node",
        ] {
            assert!(help.contains(code), "{code}: {help}");
        }
        for path in [
            &["call"][..],
            &["event"],
            &["agents"],
            &["discover"],
            &["node", "status"],
            &["agent", "suspend"],
            &["agent", "resume"],
            &["agent", "retire"],
        ] {
            let help = subcommand_help(path);
            for code in ["Exit codes", "2 bad", "4 ", "5 the node", "Example"] {
                assert!(help.contains(code), "{path:?} {code}: {help}");
            }
        }
        for path in [&["agents"][..], &["discover"], &["node", "status"]] {
            let help = subcommand_help(path);
            assert!(help.contains("3 the node answered"), "{path:?}: {help}");
        }
    }

    /// The long help of the subcommand at `path`, e.g. `["node", "status"]`.
    fn subcommand_help(path: &[&str]) -> String {
        let mut cmd = Cli::command();
        let mut sub = &mut cmd;
        for name in path {
            sub = sub.find_subcommand_mut(name).unwrap();
        }
        sub.render_long_help().to_string()
    }

    /// Every command's long help, by path (the top level is `[]`).
    fn every_help() -> Vec<(Vec<String>, String)> {
        fn walk(cmd: &mut clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
            out.push((path.clone(), cmd.render_long_help().to_string()));
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|c| c.get_name().to_owned())
                .collect();
            for name in names {
                let mut p = path.clone();
                p.push(name.clone());
                if let Some(sub) = cmd.find_subcommand_mut(&name) {
                    walk(sub, p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&mut Cli::command(), Vec::new(), &mut out);
        out
    }

    #[test]
    fn help_examples_use_agent_ids_a_default_node_prints() {
        let helps = every_help();
        assert!(helps.len() > 10, "{}", helps.len());
        let mut with_agents = 0;
        for (path, help) in &helps {
            let mut uses = 0;
            for (at, _) in help.match_indices("mxp://127.0.0.1:9000/") {
                let after = &help[at + "mxp://127.0.0.1:9000/".len()..];
                assert!(
                    after.starts_with("<agent-id>"),
                    "{path:?}: an example names an agent a default node does not have: {}",
                    after.lines().next().unwrap_or_default()
                );
                uses += 1;
            }
            if uses > 0 {
                with_agents += 1;
                assert!(
                    help.contains("mxp-node prints it at start") && help.contains("mxp agents"),
                    "{path:?}: <agent-id> is not explained: {help}"
                );
            }
        }
        // mxp, call, event, agent and its three verbs.
        assert!(with_agents >= 7, "{with_agents}");
    }

    #[test]
    fn operator_help_names_the_identity_and_the_operators_setting() {
        for verb in ["suspend", "resume", "retire"] {
            let help = subcommand_help(&["agent", verb]);
            assert!(help.contains("`mxp identity`"), "{verb}: {help}");
            assert!(help.contains("node.operators"), "{verb}: {help}");
            assert!(help.contains(&format!("agent.{verb}")), "{verb}: {help}");
            assert!(
                help.contains(&format!("mxp agent {verb} mxp://")),
                "{verb}: {help}"
            );
        }
    }

    #[test]
    fn node_commands_take_a_node_url_and_agent_commands_an_agent_url() {
        let node = "mxp://127.0.0.1:9000";
        let agent = "mxp://127.0.0.1:9000/ec400000-0000-4000-8000-000000000001";
        let cli = Cli::try_parse_from(["mxp", "agents", node, "--json", "-v"]).unwrap();
        let Command::Agents(a) = cli.command else {
            panic!("not agents")
        };
        assert_eq!(a.target.node.to_string(), node);
        assert!(a.json && a.target.connect.verbose);
        assert_eq!(a.target.connect.timeout, std::time::Duration::from_secs(10));

        let cli = Cli::try_parse_from(["mxp", "discover", node, "echo", "--limit", "2"]).unwrap();
        let Command::Discover(d) = cli.command else {
            panic!("not discover")
        };
        assert_eq!(
            (d.capability.as_str(), d.limit, d.json),
            ("echo", Some(2), false)
        );

        let cli = Cli::try_parse_from(["mxp", "node", "status", node, "--timeout", "3s"]).unwrap();
        let Command::Node(n) = cli.command else {
            panic!("not node")
        };
        let node::NodeCommand::Status(st) = n.command;
        assert_eq!(st.target.node.to_string(), node);
        assert_eq!(st.target.connect.timeout, std::time::Duration::from_secs(3));

        let cli = Cli::try_parse_from(["mxp", "agent", "retire", agent]).unwrap();
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        let (method, args) = a.command.method();
        assert_eq!(
            (method, args.url.to_string().as_str()),
            ("agent.retire", agent)
        );

        for (bad, why) in [
            (&["mxp", "agents", agent][..], "names the agent"),
            (&["mxp", "discover", agent, "echo"], "names the agent"),
            (&["mxp", "node", "status", agent], "names the agent"),
            (&["mxp", "agents", "http://h:1"], "mxp://"),
            (&["mxp", "agent", "suspend", node], "names no agent"),
            (&["mxp", "node", "status"], "NODE"),
            (&["mxp", "node"], "status"),
            (&["mxp", "agent"], "suspend"),
            (&["mxp", "discover", node], "CAPABILITY"),
        ] {
            let err = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            let text = err.to_string();
            assert!(text.contains(why), "{bad:?}: {text}");
        }
    }

    #[test]
    fn call_event_and_identity_arguments() {
        let url = "mxp://127.0.0.1:9000/ec400000-0000-4000-8000-000000000001";
        let cli = Cli::try_parse_from([
            "mxp",
            "call",
            url,
            "--method",
            "echo",
            "-1",
            "--timeout",
            "2m",
            "--raw-json",
        ])
        .unwrap();
        let Command::Call(c) = cli.command else {
            panic!("not a call")
        };
        assert_eq!(c.url.to_string(), url);
        assert_eq!(c.method.as_deref(), Some("echo"));
        assert_eq!(c.body.as_deref(), Some("-1"));
        assert!(c.raw_json);
        assert_eq!(c.connect.timeout, std::time::Duration::from_secs(120));

        let cli = Cli::try_parse_from(["mxp", "event", url, "--topic", "t", "{}", "-v"]).unwrap();
        let Command::Event(e) = cli.command else {
            panic!("not an event")
        };
        assert_eq!((e.topic.as_str(), e.data.as_deref()), ("t", Some("{}")));
        assert!(e.connect.verbose);

        let cli = Cli::try_parse_from(["mxp", "identity", "--identity-dir", "/x"]).unwrap();
        let Command::Identity(i) = cli.command else {
            panic!("not identity")
        };
        assert_eq!(i.identity_dir.as_deref(), Some(std::path::Path::new("/x")));

        for bad in [
            &["mxp", "call", "mxp://127.0.0.1:9000", "{}"][..],
            &["mxp", "call", "not-a-url", "{}"],
            &["mxp", "call", url, "{}", "--timeout", "soon"],
            &["mxp", "event", url],
            &["mxp", "call", url, "{}", "--server-fingerprint", "xyz"],
        ] {
            let err = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn a_subcommand_is_required() {
        let err = Cli::try_parse_from(["mxp"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
