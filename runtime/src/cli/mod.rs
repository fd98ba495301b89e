//! The `mxp` command-line tool: its arguments ([`Cli`]), its errors
//! ([`CliError`]) and the commands behind them.
//!
//! Every command reads from a generic [`Read`] and writes to a generic
//! [`Write`], so it can be run over in-memory buffers in tests; [`run`] wires
//! them to the process's locked, buffered standard streams.
//!
//! Exit codes: `0` success (also when stdout was closed early, e.g. by
//! `| head`), `1` I/O failure or a raw stream whose framing was lost, `2` bad
//! arguments or input.

use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod frame;

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
        Example:\n  \
        mxp frame encode --type call --message-id 42 --payload-hex 68656c6c6f | mxp frame decode\n\n\
        Exit codes: 0 success, 1 I/O failure or lost framing, 2 bad arguments or input."
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
}

impl CliError {
    /// The process exit code for this error.
    pub const fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Io(_) | CliError::FramingLost { .. } => 1,
            CliError::OutputClosed => 0,
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
    fn a_subcommand_is_required() {
        let err = Cli::try_parse_from(["mxp"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
