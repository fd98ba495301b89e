//! `mxp frame encode`: build one frame from its fields.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{ArgGroup, Args};
use mxp_protocol::{EncodeError, Flags, Frame, FrameHeader, MAX_PAYLOAD_LEN, MessageType};

use crate::cli::{CliError, parse_u64, write_out};

/// The long help of `mxp frame encode`.
pub(super) const LONG_ABOUT: &str = "Build one MXP v1 frame from its fields and print it as lower-case hex \
        followed by a newline (or, with --raw-out, as binary bytes).\n\n\
        Exactly one payload source is required: --payload-hex (may be empty: \
        --payload-hex '') or --payload-file (a path, or - for stdin). The payload is \
        at most 16 MiB.\n\n\
        Examples:\n  \
        mxp frame encode --type call --flags requires_ack --message-id 42 --trace-id 7 --payload-hex 68656c6c6f\n  \
        mxp frame encode --type 0x12 --payload-file event.json --raw-out >> capture.bin\n  \
        printf '{}' | mxp frame encode --type event --payload-file -\n\n\
        Errors are printed as 'mxp: <message>'; exit code 2 for bad arguments or input \
        (unknown type, bad hex, payload too large), 1 when a file cannot be read or \
        stdout cannot be written.";

/// Arguments of `mxp frame encode`.
#[derive(Debug, Clone, Args)]
#[command(
    group(ArgGroup::new("payload").required(true).args(["payload_hex", "payload_file"]))
)]
pub struct EncodeArgs {
    /// Message type: a name in any case, with or without '_' or '-' (call, Call,
    /// agent_register, stream-open), or its byte in decimal or hex (16, 0x10).
    #[arg(long = "type", value_name = "TYPE")]
    pub message_type: String,

    /// Flags: a number 0-15 (decimal or 0x-hex) or names joined by '|' or ','
    /// (compressed, encrypted, requires_ack, final), e.g. 'requires_ack|final'.
    #[arg(long, value_name = "FLAGS", default_value = "0")]
    pub flags: String,

    /// Message id, a u64 in decimal or 0x-hex.
    #[arg(long, value_name = "N", default_value = "0")]
    pub message_id: String,

    /// Trace id, a u64 in decimal or 0x-hex.
    #[arg(long, value_name = "N", default_value = "0")]
    pub trace_id: String,

    /// Payload as hex (upper or lower case, surrounding whitespace ignored); '' for an empty payload.
    #[arg(long, value_name = "HEX")]
    pub payload_hex: Option<String>,

    /// Read the payload from this file; '-' reads stdin.
    #[arg(long, value_name = "PATH")]
    pub payload_file: Option<PathBuf>,

    /// Write the frame's binary bytes to stdout instead of hex and a newline
    /// (to build captures for `mxp frame decode --raw`).
    #[arg(long)]
    pub raw_out: bool,
}

impl EncodeArgs {
    /// The header described by `--type`, `--flags`, `--message-id` and `--trace-id`.
    ///
    /// # Errors
    /// [`CliError::Usage`] naming the argument and what is wrong with it.
    pub fn header(&self) -> Result<FrameHeader, CliError> {
        let message_type: MessageType = self
            .message_type
            .parse()
            .map_err(|e| CliError::Usage(format!("invalid --type: {e}")))?;
        let flags: Flags = self
            .flags
            .parse()
            .map_err(|e| CliError::Usage(format!("invalid --flags: {e}")))?;
        let message_id = parse_u64(&self.message_id)
            .map_err(|e| CliError::Usage(format!("invalid --message-id: {e}")))?;
        let trace_id = parse_u64(&self.trace_id)
            .map_err(|e| CliError::Usage(format!("invalid --trace-id: {e}")))?;
        Ok(FrameHeader::new(message_type)
            .with_flags(flags)
            .with_message_id(message_id)
            .with_trace_id(trace_id))
    }

    /// The payload from `--payload-hex`, or from `--payload-file` (`-`: `stdin`).
    ///
    /// # Errors
    /// [`CliError::Usage`] for bad hex, a payload above 16 MiB or no payload
    /// source; [`CliError::Io`] when the file or stdin cannot be read.
    pub fn payload<R: Read>(&self, stdin: R) -> Result<Vec<u8>, CliError> {
        match (&self.payload_hex, &self.payload_file) {
            (Some(text), None) => decode_payload_hex(text),
            (None, Some(path)) if path.as_os_str() == "-" => read_limited(stdin, "stdin"),
            (None, Some(path)) => {
                let what = format!("payload file {}", path.display());
                let file = File::open(path)
                    .map_err(|e| CliError::Io(format!("cannot read {what}: {e}")))?;
                read_limited(file, &what)
            }
            _ => Err(CliError::Usage(
                "exactly one of --payload-hex and --payload-file is required".to_owned(),
            )),
        }
    }

    /// Builds the frame.
    ///
    /// # Errors
    /// As [`EncodeArgs::header`] and [`EncodeArgs::payload`].
    pub fn frame<R: Read>(&self, stdin: R) -> Result<Frame, CliError> {
        let header = self.header()?;
        let payload = self.payload(stdin)?;
        header.encode(&payload).map_err(|e| match e {
            EncodeError::PayloadTooLarge { .. } => CliError::Usage(e.to_string()),
            other => CliError::Usage(format!("cannot encode the frame: {other}")),
        })
    }
}

/// Reads at most 16 MiB; more is a usage error, found without reading it all.
fn read_limited<R: Read>(source: R, what: &str) -> Result<Vec<u8>, CliError> {
    let mut payload = Vec::new();
    source
        .take(MAX_PAYLOAD_LEN + 1)
        .read_to_end(&mut payload)
        .map_err(|e| CliError::Io(format!("cannot read {what}: {e}")))?;
    if payload.len() as u64 > MAX_PAYLOAD_LEN {
        return Err(CliError::Usage(format!(
            "{what} holds more than {MAX_PAYLOAD_LEN} bytes, the MXP payload limit"
        )));
    }
    Ok(payload)
}

/// Decodes `--payload-hex`, naming the position of the first bad character.
fn decode_payload_hex(text: &str) -> Result<Vec<u8>, CliError> {
    let digits = text.trim();
    let offset = text.len() - text.trim_start().len();
    hex::decode(digits).map_err(|e| {
        CliError::Usage(match e {
            hex::FromHexError::InvalidHexCharacter { c, index } => format!(
                "invalid --payload-hex: {c:?} at position {} is not a hex digit",
                offset + index + 1
            ),
            hex::FromHexError::OddLength => format!(
                "invalid --payload-hex: odd number of hex digits ({})",
                digits.len()
            ),
            other => format!("invalid --payload-hex: {other}"),
        })
    })
}

/// Runs `mxp frame encode`: prints the frame as hex and a newline, or its
/// bytes with `--raw-out`.
///
/// # Errors
/// As [`EncodeArgs::frame`]; [`CliError::OutputClosed`] or [`CliError::Io`]
/// when stdout cannot be written.
pub fn run<R: Read, W: Write>(args: &EncodeArgs, stdin: R, out: &mut W) -> Result<(), CliError> {
    let frame = args.frame(stdin)?;
    if args.raw_out {
        write_out(out, frame.as_bytes())
    } else {
        let mut text = hex::encode(frame.as_bytes());
        text.push('\n');
        write_out(out, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::cli::frame::FrameCommand;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<EncodeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["mxp", "frame", "encode"].iter().chain(args))?;
        match cli.command {
            Command::Frame(f) => match f.command {
                FrameCommand::Encode(e) => Ok(e),
                other => panic!("{other:?}"),
            },
            other => panic!("not a frame command: {other:?}"),
        }
    }

    fn usage_message(result: Result<impl std::fmt::Debug, CliError>) -> String {
        match result {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_names() {
        let a = parse(&["--type", "call", "--payload-hex", "6869"]).unwrap();
        let h = a.header().unwrap();
        assert_eq!(h, FrameHeader::new(MessageType::Call));
        assert!(!a.raw_out);

        let a = parse(&[
            "--type",
            "agent_register",
            "--flags",
            "requires_ack|final",
            "--message-id",
            "0x2a",
            "--trace-id",
            "18446744073709551615",
            "--payload-hex",
            "",
            "--raw-out",
        ])
        .unwrap();
        let h = a.header().unwrap();
        assert_eq!(h.message_type, MessageType::AgentRegister);
        assert_eq!(h.flags, Flags::REQUIRES_ACK | Flags::FINAL);
        assert_eq!(h.message_id, 42);
        assert_eq!(h.trace_id, u64::MAX);
        assert!(a.raw_out);
        assert_eq!(a.payload(&b""[..]).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn type_accepts_numbers_and_spellings() {
        for (text, t) in [
            ("16", MessageType::Call),
            ("0x10", MessageType::Call),
            ("Call", MessageType::Call),
            ("stream-open", MessageType::StreamOpen),
            ("0xF1", MessageType::Error),
        ] {
            let a = parse(&["--type", text, "--payload-hex", ""]).unwrap();
            assert_eq!(a.header().unwrap().message_type, t, "{text}");
        }
    }

    #[test]
    fn bad_header_fields_are_usage_errors_naming_the_argument() {
        let m = usage_message(
            parse(&["--type", "bogus", "--payload-hex", ""])
                .unwrap()
                .header(),
        );
        assert!(m.starts_with("invalid --type"), "{m}");
        assert!(
            m.contains("bogus") && m.contains("AgentRegister") && m.contains("Error"),
            "{m}"
        );

        let m = usage_message(
            parse(&["--type", "0x13", "--payload-hex", ""])
                .unwrap()
                .header(),
        );
        assert!(m.contains("0x13"), "{m}");

        let m = usage_message(
            parse(&["--type", "call", "--flags", "0x10", "--payload-hex", ""])
                .unwrap()
                .header(),
        );
        assert!(m.starts_with("invalid --flags"), "{m}");

        let m = usage_message(
            parse(&["--type", "call", "--message-id=-3", "--payload-hex", ""])
                .unwrap()
                .header(),
        );
        assert!(m.starts_with("invalid --message-id"), "{m}");

        let m = usage_message(
            parse(&[
                "--type",
                "call",
                "--trace-id",
                "0x1ffffffffffffffff",
                "--payload-hex",
                "",
            ])
            .unwrap()
            .header(),
        );
        assert!(m.starts_with("invalid --trace-id"), "{m}");
    }

    #[test]
    fn exactly_one_payload_source_is_required() {
        let err = parse(&["--type", "call"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err =
            parse(&["--type", "call", "--payload-hex", "", "--payload-file", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(parse(&["--payload-hex", ""]).is_err(), "--type is required");
    }

    #[test]
    fn payload_hex_errors_name_the_position() {
        let a = parse(&["--type", "call", "--payload-hex", " 00zz"]).unwrap();
        let m = usage_message(a.payload(&b""[..]));
        assert_eq!(
            m,
            "invalid --payload-hex: 'z' at position 4 is not a hex digit"
        );
        let a = parse(&["--type", "call", "--payload-hex", "abc"]).unwrap();
        let m = usage_message(a.payload(&b""[..]));
        assert_eq!(m, "invalid --payload-hex: odd number of hex digits (3)");
        let a = parse(&["--type", "call", "--payload-hex", " AbCd\n"]).unwrap();
        assert_eq!(a.payload(&b""[..]).unwrap(), vec![0xab, 0xcd]);
    }

    #[test]
    fn payload_from_stdin_is_bounded() {
        let a = parse(&["--type", "call", "--payload-file", "-"]).unwrap();
        assert_eq!(a.payload(&b"hello"[..]).unwrap(), b"hello");
        let exact = vec![0u8; MAX_PAYLOAD_LEN as usize];
        assert_eq!(a.payload(exact.as_slice()).unwrap().len(), exact.len());
        let over = vec![0u8; MAX_PAYLOAD_LEN as usize + 1];
        let m = usage_message(a.payload(over.as_slice()));
        assert!(m.contains("16777216"), "{m}");
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_its_path() {
        let a = parse(&[
            "--type",
            "call",
            "--payload-file",
            "/nonexistent/mxp/payload.bin",
        ])
        .unwrap();
        match a.payload(&b""[..]) {
            Err(CliError::Io(m)) => assert!(m.contains("/nonexistent/mxp/payload.bin"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_prints_hex_or_raw_bytes() {
        let a = parse(&[
            "--type",
            "event",
            "--message-id",
            "5",
            "--payload-hex",
            "7b7d",
        ])
        .unwrap();
        let mut out = Vec::new();
        run(&a, &b""[..], &mut out).unwrap();
        let expected = FrameHeader::new(MessageType::Event)
            .with_message_id(5)
            .encode(b"{}")
            .unwrap();
        assert_eq!(
            out,
            format!("{}\n", hex::encode(expected.as_bytes())).into_bytes()
        );

        let a = parse(&[
            "--type",
            "event",
            "--message-id",
            "5",
            "--payload-hex",
            "7b7d",
            "--raw-out",
        ])
        .unwrap();
        let mut out = Vec::new();
        run(&a, &b""[..], &mut out).unwrap();
        assert_eq!(out, expected.as_bytes().to_vec());
    }
}
