//! `mxp frame decode`: validate frames and print one JSON line per frame.
//!
//! Two input forms:
//! * hex lines (default): each non-empty line is exactly one frame in hex;
//!   blank lines and lines starting with `#` are skipped. A line is decoded
//!   as it streams in and holds at most one frame's bytes (payload limit plus
//!   40) in memory; a longer line is classified from its header and its length.
//! * `--raw`: a binary capture of concatenated frames, cut with
//!   [`MxpCodec`] from 64 KiB reads.
//!
//! Output lines, keys always in this order:
//!
//! ```text
//! {"ok":true,"type":"Call","type_byte":16,"flags":4,"message_id":"42","trace_id":"7","payload_len":46,"payload_hex":"..."}
//! {"ok":false,"error":"<class>","detail":"<human text>"}
//! ```

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use clap::Args;
use mxp_protocol::{
    CodecError, DecodeError, FRAME_OVERHEAD, Frame, HEADER_LEN, MAX_PAYLOAD_LEN, MxpCodec,
};
use serde::Serialize;
use tokio_util::codec::Decoder;

use crate::cli::{CliError, flush_out, parse_u64, write_out};

/// Bytes read from the input at a time.
const CHUNK: usize = 64 * 1024;

/// The long help of `mxp frame decode`.
pub(super) const LONG_ABOUT: &str = "Validate MXP frames read from stdin and print one JSON line per frame.\n\n\
    By default each non-empty line of stdin is one frame in hex (upper or lower case; \
    surrounding whitespace ignored; blank lines and lines starting with '#' skipped). \
    With --raw, stdin is a binary capture of concatenated frames.\n\n\
    Each frame prints one line:\n  \
    {\"ok\":true,\"type\":\"Call\",\"type_byte\":16,\"flags\":4,\"message_id\":\"42\",\"trace_id\":\"7\",\"payload_len\":5,\"payload_hex\":\"68656c6c6f\"}\n\
    or\n  \
    {\"ok\":false,\"error\":\"checksum_mismatch\",\"detail\":\"...\"}\n\
    Error classes: invalid_hex, truncated, invalid_magic, invalid_message_type, invalid_flags, \
    reserved_nonzero, payload_too_large, checksum_mismatch, trailing_bytes.\n\n\
    Examples:\n  \
    mxp frame encode --type call --payload-hex 68656c6c6f | mxp frame decode\n  \
    mxp frame decode --raw < capture.bin\n\n\
    Exit codes: 0 when every frame was read, whatever the frames held; 1 when stdin cannot \
    be read, or with --raw when a bad magic or an oversized length loses the frame \
    boundaries (the error line is printed, then a message on stderr); 2 for bad arguments.";

/// Arguments of `mxp frame decode`.
#[derive(Debug, Clone, Args)]
pub struct DecodeArgs {
    /// Read stdin as a binary stream of concatenated frames (a capture) instead of hex lines.
    /// A frame with a bad checksum, type, flags or reserved bytes is reported and skipped;
    /// a bad magic or an oversized length ends decoding with exit code 1.
    #[arg(long)]
    pub raw: bool,

    /// Largest payload accepted, in bytes (decimal or 0x-hex, at most 16777216 = 16 MiB);
    /// a frame declaring more is reported as payload_too_large.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = MAX_PAYLOAD_LEN,
        value_parser = parse_max_payload
    )]
    pub max_payload: u64,
}

/// Parses `--max-payload`: a `u64` of at most 16 MiB.
fn parse_max_payload(text: &str) -> Result<u64, String> {
    let value = parse_u64(text)?;
    if value > MAX_PAYLOAD_LEN {
        Err(format!(
            "{value} is above the MXP limit of {MAX_PAYLOAD_LEN} bytes"
        ))
    } else {
        Ok(value)
    }
}

/// Runs `mxp frame decode`.
///
/// # Errors
/// [`CliError::Io`] when the input cannot be read or the output written,
/// [`CliError::OutputClosed`] when the output pipe was closed,
/// [`CliError::FramingLost`] when a raw stream cannot be framed any further.
pub fn run<R: Read, W: Write>(args: &DecodeArgs, input: R, out: &mut W) -> Result<(), CliError> {
    if args.raw {
        decode_raw(input, out, args.max_payload)
    } else {
        decode_lines(input, out, args.max_payload)
    }
}

/// The JSON line of a valid frame; field order is the output format.
#[derive(Serialize)]
struct OkLine<'a> {
    ok: bool,
    #[serde(rename = "type")]
    message_type: &'a str,
    type_byte: u8,
    flags: u8,
    message_id: String,
    trace_id: String,
    payload_len: usize,
    payload_hex: String,
}

/// The JSON line of an invalid frame; field order is the output format.
#[derive(Serialize)]
struct ErrorLine<'a> {
    ok: bool,
    error: &'a str,
    detail: &'a str,
}

fn write_json<W: Write, T: Serialize>(out: &mut W, line: &T) -> Result<(), CliError> {
    serde_json::to_writer(&mut *out, line).map_err(|e| match e.io_error_kind() {
        Some(kind) => CliError::from_output(&io::Error::from(kind)),
        None => CliError::Io(format!("cannot format a JSON line: {e}")),
    })?;
    write_out(out, b"\n")
}

/// Writes the `{"ok":true,...}` line of `frame`, ending in a newline.
///
/// # Errors
/// [`CliError::OutputClosed`] or [`CliError::Io`] when the write fails.
pub fn write_frame_line<W: Write>(out: &mut W, frame: &Frame) -> Result<(), CliError> {
    let message_type = frame.message_type();
    write_json(
        out,
        &OkLine {
            ok: true,
            message_type: message_type.name(),
            type_byte: message_type.as_byte(),
            flags: frame.flags().bits(),
            message_id: frame.message_id().to_string(),
            trace_id: frame.trace_id().to_string(),
            payload_len: frame.payload_len(),
            payload_hex: hex::encode(frame.payload_slice()),
        },
    )
}

/// Writes the `{"ok":false,"error":class,"detail":detail}` line, ending in a newline.
///
/// # Errors
/// [`CliError::OutputClosed`] or [`CliError::Io`] when the write fails.
pub fn write_error_line<W: Write>(out: &mut W, class: &str, detail: &str) -> Result<(), CliError> {
    write_json(
        out,
        &ErrorLine {
            ok: false,
            error: class,
            detail,
        },
    )
}

/// Reads up to `buf.len()` bytes, retrying on `Interrupted`; 0 means end of input.
fn read_chunk<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize, CliError> {
    loop {
        match input.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CliError::Io(format!("cannot read standard input: {e}"))),
        }
    }
}

/// Decodes hex lines from `input`, one frame per non-empty, non-comment line.
///
/// Output is flushed before every read, so lines typed by hand are answered
/// at once.
///
/// # Errors
/// [`CliError::Io`] when the input cannot be read or the output written,
/// [`CliError::OutputClosed`] when the output pipe was closed.
pub fn decode_lines<R: Read, W: Write>(
    mut input: R,
    out: &mut W,
    max_payload: u64,
) -> Result<(), CliError> {
    let mut chunk = vec![0u8; CHUNK];
    let mut line = HexLine::new(max_payload);
    loop {
        flush_out(out)?;
        let n = read_chunk(&mut input, &mut chunk)?;
        if n == 0 {
            break;
        }
        let mut segments = chunk
            .get(..n)
            .unwrap_or_default()
            .split(|&b| b == b'\n')
            .peekable();
        while let Some(segment) = segments.next() {
            line.feed(segment);
            if segments.peek().is_some() {
                line.finish(out)?;
            }
        }
    }
    // A last line without a newline.
    line.finish(out)
}

/// What the current line holds so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Only whitespace.
    Blank,
    /// Starts with `#`: skipped.
    Comment,
    /// Hex digits (or garbage).
    Hex,
}

/// One input line, decoded from hex as its bytes arrive.
#[derive(Debug)]
struct HexLine {
    max_payload: u64,
    /// The most bytes kept: one frame of `max_payload`.
    cap: usize,
    /// 1-based number of the current line.
    line_no: u64,
    /// Bytes of the current line seen so far.
    column: u64,
    content: Content,
    /// Column of the first whitespace after the first hex digit.
    whitespace_at: Option<u64>,
    /// A high nibble waiting for its low nibble.
    high: Option<u8>,
    digits: u64,
    bytes: Vec<u8>,
    /// Decoded bytes beyond `cap`, counted but not kept.
    overflow: u64,
    /// The first hex error of the line.
    bad: Option<String>,
}

impl HexLine {
    fn new(max_payload: u64) -> HexLine {
        let max_payload = max_payload.min(MAX_PAYLOAD_LEN);
        HexLine {
            max_payload,
            cap: usize::try_from(max_payload)
                .unwrap_or(usize::MAX)
                .saturating_add(FRAME_OVERHEAD),
            line_no: 1,
            column: 0,
            content: Content::Blank,
            whitespace_at: None,
            high: None,
            digits: 0,
            bytes: Vec::new(),
            overflow: 0,
            bad: None,
        }
    }

    /// Feeds bytes of the current line (no newline among them).
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            self.column += 1;
            if self.bad.is_some() || self.content == Content::Comment {
                continue;
            }
            if b.is_ascii_whitespace() {
                if self.content == Content::Hex && self.whitespace_at.is_none() {
                    self.whitespace_at = Some(self.column);
                }
                continue;
            }
            if self.content == Content::Blank {
                if b == b'#' {
                    self.content = Content::Comment;
                    continue;
                }
                self.content = Content::Hex;
            }
            if let Some(at) = self.whitespace_at {
                self.bad = Some(format!("whitespace inside the hex digits at column {at}"));
                continue;
            }
            let Some(nibble) = hex_value(b) else {
                self.bad = Some(format!(
                    "invalid hex character {} at column {}",
                    describe_byte(b),
                    self.column
                ));
                continue;
            };
            self.digits += 1;
            if let Some(high) = self.high.take() {
                if self.bytes.len() < self.cap {
                    self.bytes.push(high << 4 | nibble);
                } else {
                    self.overflow += 1;
                }
            } else {
                self.high = Some(nibble);
            }
        }
    }

    /// Ends the current line: writes its JSON line (if it is not blank or a
    /// comment) and starts the next.
    fn finish<W: Write>(&mut self, out: &mut W) -> Result<(), CliError> {
        let n = self.line_no;
        let result = if self.content != Content::Hex {
            Ok(())
        } else if let Some(msg) = self.bad.take() {
            write_error_line(out, "invalid_hex", &format!("line {n}: {msg}"))
        } else if self.high.is_some() {
            let digits = self.digits;
            write_error_line(
                out,
                "invalid_hex",
                &format!("line {n}: odd number of hex digits ({digits})"),
            )
        } else {
            let parsed = if self.overflow > 0 {
                Err(self.classify_oversized())
            } else {
                Frame::parse_with_limit(
                    Bytes::from(std::mem::take(&mut self.bytes)),
                    self.max_payload,
                )
            };
            match parsed {
                Ok(frame) => write_frame_line(out, &frame),
                Err(err) => write_error_line(out, err.class(), &format!("line {n}: {err}")),
            }
        };
        *self = HexLine {
            line_no: n + 1,
            ..HexLine::new(self.max_payload)
        };
        result
    }

    /// The error of a line holding more bytes than any allowed frame: what
    /// [`Frame::parse_with_limit`] would say of the whole line, computed from
    /// the header and the byte count.
    fn classify_oversized(&self) -> DecodeError {
        let total = self.bytes.len() as u64 + self.overflow;
        let header = self.bytes.get(..HEADER_LEN).unwrap_or_default();
        match Frame::parse_with_limit(Bytes::copy_from_slice(header), self.max_payload) {
            // The header is valid and only the length is short: the line is
            // longer than the frame the header declares.
            Err(DecodeError::Truncated { .. }) | Ok(_) => {
                let declared = mxp_protocol::HeaderPeek::read(header).map_or(0, |h| h.payload_len);
                let frame_len = FRAME_OVERHEAD as u64 + declared;
                DecodeError::TrailingBytes {
                    frame_len,
                    extra: total.saturating_sub(frame_len),
                }
            }
            Err(err) => err,
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `'z'` for a printable ASCII byte, `byte 0xc3` for anything else.
fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("{:?}", char::from(b))
    } else {
        format!("byte {b:#04x}")
    }
}

/// Decodes a binary capture of concatenated frames from `input`, reading
/// 64 KiB at a time and cutting frames with [`MxpCodec`].
///
/// A frame the codec can skip (bad checksum, type, flags or reserved bytes)
/// prints its error line and decoding goes on. A truncated last frame prints
/// its error line and counts as success: every byte was read.
///
/// # Errors
/// [`CliError::FramingLost`] after printing the error line of a bad magic or
/// an oversized length; [`CliError::Io`] when the input cannot be read or the
/// output written; [`CliError::OutputClosed`] when the output pipe was closed.
pub fn decode_raw<R: Read, W: Write>(
    mut input: R,
    out: &mut W,
    max_payload: u64,
) -> Result<(), CliError> {
    let mut codec = MxpCodec::with_max_payload(max_payload);
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut chunk = vec![0u8; CHUNK];
    // Input bytes the codec has consumed: the offset of `buf[0]`.
    let mut consumed: u64 = 0;
    loop {
        loop {
            let before = buf.len();
            let result = codec.decode(&mut buf);
            consumed += before.saturating_sub(buf.len()) as u64;
            match result {
                Ok(Some(frame)) => write_frame_line(out, &frame)?,
                Ok(None) => break,
                Err(err) => report_codec_error(out, &codec, err, consumed)?,
            }
        }
        flush_out(out)?;
        let n = read_chunk(&mut input, &mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    loop {
        let before = buf.len();
        let result = codec.decode_eof(&mut buf);
        consumed += before.saturating_sub(buf.len()) as u64;
        match result {
            Ok(Some(frame)) => write_frame_line(out, &frame)?,
            Ok(None) => return Ok(()),
            Err(CodecError::Decode(err @ DecodeError::Truncated { .. })) => {
                // The input ended inside a frame; every byte was read.
                return write_error_line(out, err.class(), &err.to_string());
            }
            Err(err) => report_codec_error(out, &codec, err, consumed)?,
        }
    }
}

/// Prints the error line of a codec error; fails when the stream cannot go on.
fn report_codec_error<W: Write>(
    out: &mut W,
    codec: &MxpCodec,
    err: CodecError,
    offset: u64,
) -> Result<(), CliError> {
    match err {
        CodecError::Decode(err) => {
            write_error_line(out, err.class(), &err.to_string())?;
            if codec.can_continue() {
                Ok(())
            } else {
                Err(CliError::FramingLost {
                    offset,
                    class: err.class(),
                })
            }
        }
        CodecError::Desynchronised => Err(CliError::FramingLost {
            offset,
            class: "desynchronised",
        }),
        other => Err(CliError::Io(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use mxp_protocol::{Flags, FrameHeader, MessageType};

    use crate::cli::frame::FrameCommand;
    use crate::cli::{Cli, Command};

    /// The `call-json` conformance vector.
    const CALL_JSON: &str = "3150584d100400002a0000000000000007000000000000002e000000000000007b22746f6f6c223a2266732e72656164222c2261726773223a7b2270617468223a222f6574632f6d6f7464227d7d2a9fa1daf40aa1ff";

    fn lines(out: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn decode_text(input: &str, max_payload: u64) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        decode_lines(input.as_bytes(), &mut out, max_payload).unwrap();
        lines(&out)
    }

    fn frame(t: MessageType, id: u64, payload: &[u8]) -> Frame {
        FrameHeader::new(t)
            .with_message_id(id)
            .encode(payload)
            .unwrap()
    }

    #[test]
    fn ok_line_has_exact_keys_and_order() {
        let frame = Frame::parse(hex::decode(CALL_JSON).unwrap().into()).unwrap();
        let mut out = Vec::new();
        write_frame_line(&mut out, &frame).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"ok":true,"type":"Call","type_byte":16,"flags":4,"message_id":"42","trace_id":"7","#,
                r#""payload_len":46,"payload_hex":"7b22746f6f6c223a2266732e72656164222c2261726773223a7b2270617468223a222f6574632f6d6f7464227d7d"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn ok_line_prints_u64_ids_as_decimal_strings() {
        let frame = FrameHeader::new(MessageType::AgentRegister)
            .with_message_id(u64::MAX)
            .with_trace_id(1 << 60)
            .with_flags(Flags::FINAL)
            .encode(b"")
            .unwrap();
        let mut out = Vec::new();
        write_frame_line(&mut out, &frame).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ok\":true,\"type\":\"AgentRegister\",\"type_byte\":1,\"flags\":8,\
             \"message_id\":\"18446744073709551615\",\"trace_id\":\"1152921504606846976\",\
             \"payload_len\":0,\"payload_hex\":\"\"}\n"
        );
    }

    #[test]
    fn error_line_escapes_its_detail() {
        let mut out = Vec::new();
        write_error_line(&mut out, "invalid_hex", "line 3: \"quoted\"\nand \\ back").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ok\":false,\"error\":\"invalid_hex\",\"detail\":\"line 3: \\\"quoted\\\"\\nand \\\\ back\"}\n"
        );
    }

    #[test]
    fn lines_skip_blanks_and_comments_and_accept_any_case_and_padding() {
        let input = format!(
            "\n   \n# a comment\n  #indented comment\n\t{}  \r\n{}\n\n",
            CALL_JSON.to_uppercase(),
            CALL_JSON
        );
        let out = decode_text(&input, MAX_PAYLOAD_LEN);
        assert_eq!(out.len(), 2);
        for line in out {
            assert_eq!(line["ok"], true);
            assert_eq!(line["message_id"], "42");
            assert_eq!(line["payload_len"], 46);
        }
    }

    #[test]
    fn last_line_without_newline_is_decoded() {
        let out = decode_text(CALL_JSON, MAX_PAYLOAD_LEN);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["type"], "Call");
    }

    #[test]
    fn invalid_hex_names_line_and_column() {
        let out = decode_text("# header\n\n  31zz\n", MAX_PAYLOAD_LEN);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["ok"], false);
        assert_eq!(out[0]["error"], "invalid_hex");
        assert_eq!(
            out[0]["detail"],
            "line 3: invalid hex character 'z' at column 5"
        );

        let out = decode_text("3150 584d\n", MAX_PAYLOAD_LEN);
        assert_eq!(out[0]["error"], "invalid_hex");
        assert_eq!(
            out[0]["detail"],
            "line 1: whitespace inside the hex digits at column 5"
        );

        let out = decode_text("315\n", MAX_PAYLOAD_LEN);
        assert_eq!(out[0]["detail"], "line 1: odd number of hex digits (3)");

        let out = decode_text("31\u{e9}\n", MAX_PAYLOAD_LEN);
        assert_eq!(
            out[0]["detail"],
            "line 1: invalid hex character byte 0xc3 at column 3"
        );
    }

    #[test]
    fn frame_errors_carry_class_and_line() {
        let good = frame(MessageType::Event, 1, b"{}");
        let mut extra = hex::encode(good.as_bytes());
        extra.push_str("00");
        let short = hex::encode(good.as_bytes().get(..20).unwrap());
        let input = format!("{extra}\n{short}\nzz\n{}\n", hex::encode(good.as_bytes()));
        let out = decode_text(&input, MAX_PAYLOAD_LEN);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0]["error"], "trailing_bytes");
        assert!(out[0]["detail"].as_str().unwrap().starts_with("line 1: "));
        assert_eq!(out[1]["error"], "truncated");
        assert!(out[1]["detail"].as_str().unwrap().starts_with("line 2: "));
        assert_eq!(out[2]["error"], "invalid_hex");
        assert_eq!(out[3]["ok"], true, "decoding goes on after errors");
    }

    #[test]
    fn max_payload_applies_to_lines() {
        let f = frame(MessageType::Call, 1, &[7; 10]);
        let line = hex::encode(f.as_bytes());
        assert_eq!(decode_text(&line, 10)[0]["ok"], true);
        let out = decode_text(&line, 9);
        assert_eq!(out[0]["error"], "payload_too_large");
    }

    #[test]
    fn a_line_longer_than_any_frame_is_classified_without_keeping_it() {
        // Limit 4: at most 44 bytes are kept.
        let ok = frame(MessageType::Call, 1, &[1; 4]);
        let long_tail = format!("{}{}", hex::encode(ok.as_bytes()), "ab".repeat(1000));
        let mut line = HexLine::new(4);
        line.feed(long_tail.as_bytes());
        assert_eq!(line.bytes.len(), 44);
        assert_eq!(line.overflow, 1000);
        let mut out = Vec::new();
        line.finish(&mut out).unwrap();
        let out = lines(&out);
        assert_eq!(out[0]["error"], "trailing_bytes");
        assert_eq!(
            out[0]["detail"],
            "line 1: 1000 trailing bytes after a complete 44-byte frame"
        );

        // A header declaring more than the limit is payload_too_large, as
        // Frame::parse_with_limit would say.
        let big = frame(MessageType::Call, 1, &[1; 100]);
        let out = decode_text(&hex::encode(big.as_bytes()), 4);
        assert_eq!(out[0]["error"], "payload_too_large");

        // A bad magic stays a bad magic.
        let mut bad = big.as_bytes().to_vec();
        bad[0] = 0;
        let out = decode_text(&hex::encode(&bad), 4);
        assert_eq!(out[0]["error"], "invalid_magic");

        // The state is reset for the next line.
        let out = decode_text(&format!("{long_tail}\n{}\n", hex::encode(ok.as_bytes())), 4);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1]["ok"], true);
    }

    /// A reader returning one byte per call, to cut input at every position.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn lines_split_across_reads_decode_the_same() {
        let input = format!("# c\n{CALL_JSON}\r\n\nzz\n{CALL_JSON}");
        let mut whole = Vec::new();
        decode_lines(input.as_bytes(), &mut whole, MAX_PAYLOAD_LEN).unwrap();
        let mut trickled = Vec::new();
        decode_lines(Trickle(input.as_bytes()), &mut trickled, MAX_PAYLOAD_LEN).unwrap();
        assert_eq!(whole, trickled);
        assert_eq!(lines(&whole).len(), 3);
    }

    fn capture(frames: &[&[u8]]) -> Vec<u8> {
        frames.concat()
    }

    #[test]
    fn raw_skips_bad_frames_and_reads_on() {
        let a = frame(MessageType::Call, 1, b"first");
        let mut bad_sum = frame(MessageType::Event, 2, b"second").as_bytes().to_vec();
        bad_sum[33] ^= 1;
        let mut bad_flags = frame(MessageType::Event, 3, &[0; 300]).as_bytes().to_vec();
        bad_flags[5] = 0x40;
        let d = frame(MessageType::Response, 4, b"");
        let input = capture(&[a.as_bytes(), &bad_sum, &bad_flags, d.as_bytes()]);
        for trickle in [false, true] {
            let mut out = Vec::new();
            if trickle {
                decode_raw(Trickle(&input), &mut out, MAX_PAYLOAD_LEN).unwrap();
            } else {
                decode_raw(input.as_slice(), &mut out, MAX_PAYLOAD_LEN).unwrap();
            }
            let out = lines(&out);
            let summary: Vec<String> = out
                .iter()
                .map(|l| {
                    if l["ok"] == true {
                        format!("ok {}", l["message_id"].as_str().unwrap())
                    } else {
                        l["error"].as_str().unwrap().to_owned()
                    }
                })
                .collect();
            assert_eq!(
                summary,
                ["ok 1", "checksum_mismatch", "invalid_flags", "ok 4"],
                "trickle={trickle}"
            );
        }
    }

    #[test]
    fn raw_bad_magic_loses_framing_at_its_offset() {
        let a = frame(MessageType::Call, 1, b"first");
        let mut b = frame(MessageType::Call, 2, b"second").as_bytes().to_vec();
        b[0] = b'M';
        let c = frame(MessageType::Call, 3, b"third");
        let input = capture(&[a.as_bytes(), &b, c.as_bytes()]);
        let mut out = Vec::new();
        let err = decode_raw(input.as_slice(), &mut out, MAX_PAYLOAD_LEN).unwrap_err();
        match err {
            CliError::FramingLost { offset, class } => {
                assert_eq!(offset, a.wire_len() as u64);
                assert_eq!(class, "invalid_magic");
            }
            other => panic!("{other:?}"),
        }
        let out = lines(&out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["ok"], true);
        assert_eq!(out[1]["error"], "invalid_magic");
    }

    #[test]
    fn raw_oversized_length_loses_framing() {
        let a = frame(MessageType::Call, 1, b"x");
        let b = frame(MessageType::Call, 2, &[0; 64]);
        let input = capture(&[a.as_bytes(), b.as_bytes()]);
        let mut out = Vec::new();
        let err = decode_raw(input.as_slice(), &mut out, 16).unwrap_err();
        assert!(
            matches!(
                err,
                CliError::FramingLost {
                    offset: 41,
                    class: "payload_too_large"
                }
            ),
            "{err:?}"
        );
        assert_eq!(lines(&out)[1]["error"], "payload_too_large");
    }

    #[test]
    fn raw_truncated_last_frame_is_reported_and_succeeds() {
        let a = frame(MessageType::Call, 1, b"first");
        let b = frame(MessageType::Call, 2, b"second");
        let input = capture(&[a.as_bytes(), b.as_bytes().get(..45).unwrap()]);
        let mut out = Vec::new();
        decode_raw(input.as_slice(), &mut out, MAX_PAYLOAD_LEN).unwrap();
        let out = lines(&out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1]["error"], "truncated");
        assert_eq!(out[1]["detail"], "truncated frame: need 46 bytes, have 45");
    }

    #[test]
    fn raw_empty_input_prints_nothing() {
        let mut out = Vec::new();
        decode_raw(&b""[..], &mut out, MAX_PAYLOAD_LEN).unwrap();
        assert!(out.is_empty());
    }

    /// A writer whose reader has gone away.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_output_is_reported_as_such() {
        let err = decode_lines(CALL_JSON.as_bytes(), &mut ClosedPipe, MAX_PAYLOAD_LEN).unwrap_err();
        assert!(matches!(err, CliError::OutputClosed), "{err:?}");
        let bytes = hex::decode(CALL_JSON).unwrap();
        let err = decode_raw(bytes.as_slice(), &mut ClosedPipe, MAX_PAYLOAD_LEN).unwrap_err();
        assert!(matches!(err, CliError::OutputClosed), "{err:?}");
    }

    fn parse_decode(args: &[&str]) -> Result<DecodeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["mxp", "frame", "decode"].iter().chain(args))?;
        match cli.command {
            Command::Frame(f) => match f.command {
                FrameCommand::Decode(d) => Ok(d),
                other => panic!("{other:?}"),
            },
            other => panic!("not a frame command: {other:?}"),
        }
    }

    #[test]
    fn decode_arguments() {
        let d = parse_decode(&[]).unwrap();
        assert!(!d.raw);
        assert_eq!(d.max_payload, MAX_PAYLOAD_LEN);
        let d = parse_decode(&["--raw", "--max-payload", "0x100"]).unwrap();
        assert!(d.raw);
        assert_eq!(d.max_payload, 256);
        for bad in ["16777217", "-1", "lots"] {
            let err = parse_decode(&["--max-payload", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
        assert_eq!(parse_decode(&["--bogus"]).unwrap_err().exit_code(), 2);
    }
}
