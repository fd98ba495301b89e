//! Runs the real `mxp` binary as a child process: `mxp frame decode` and
//! `mxp frame encode`, against the conformance vectors and hand-built captures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use mxp_protocol::{Flags, FrameHeader, MessageType};
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../protocol/tests/vectors/mxp-v1-vectors.jsonl"
);

/// What a run of `mxp` left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout_text(&self) -> &str {
        std::str::from_utf8(&self.stdout).unwrap()
    }

    /// Every stdout line parsed as JSON.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }
}

/// Runs `mxp args...` with `stdin` as its standard input.
fn mxp(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mxp"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mxp");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Write from another thread so a child filling its stdout cannot deadlock us.
    let writer = std::thread::spawn(move || {
        // The child may exit before reading everything (e.g. on a usage error).
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: out.stdout,
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A folder in the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mxp-cli-frame-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vectors() -> Vec<Value> {
    std::fs::read_to_string(VECTORS)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const OK_KEYS: [&str; 8] = [
    "ok",
    "type",
    "type_byte",
    "flags",
    "message_id",
    "trace_id",
    "payload_len",
    "payload_hex",
];

/// Checks that `line` has exactly `keys`, in this order.
fn assert_key_order(line: &str, keys: &[&str]) {
    let value: Value = serde_json::from_str(line).unwrap();
    assert_eq!(value.as_object().unwrap().len(), keys.len(), "{line}");
    let mut last = 0;
    for key in keys {
        let pos = line
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        assert!(pos >= last, "{key} out of order in {line}");
        last = pos;
    }
    assert!(line.starts_with(&format!("{{\"{}\":", keys[0])), "{line}");
}

/// Checks one decoded line against an `ok` conformance vector.
fn assert_matches_ok_vector(line: &Value, v: &Value) {
    let name = &v["name"];
    let type_byte = v["message_type"].as_u64().unwrap();
    let expected_type = MessageType::from_byte(u8::try_from(type_byte).unwrap()).unwrap();
    let payload_hex = v["payload_hex"].as_str().unwrap();
    assert_eq!(line["ok"], true, "{name}: {line}");
    assert_eq!(line["type"], expected_type.name(), "{name}");
    assert_eq!(line["type_byte"], v["message_type"], "{name}");
    assert_eq!(line["flags"], v["flags"], "{name}");
    assert_eq!(line["message_id"], v["message_id"], "{name}");
    assert_eq!(line["trace_id"], v["trace_id"], "{name}");
    assert_eq!(line["payload_len"], payload_hex.len() / 2, "{name}");
    assert_eq!(line["payload_hex"], payload_hex, "{name}");
}

#[test]
fn decodes_every_conformance_vector() {
    let vectors = vectors();
    // A blank line is skipped by design, so the `empty` vector (frame_hex "")
    // cannot be given as a line; `an_empty_line_is_skipped` covers it.
    let fed: Vec<&Value> = vectors
        .iter()
        .filter(|v| !v["frame_hex"].as_str().unwrap().is_empty())
        .collect();
    assert!(
        fed.len() >= 80,
        "expected the whole vector file, got {}",
        fed.len()
    );
    let input: String = fed
        .iter()
        .map(|v| format!("{}\n", v["frame_hex"].as_str().unwrap()))
        .collect();

    let run = mxp(&["frame", "decode"], input.as_bytes());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let raw_lines: Vec<&str> = run.stdout_text().lines().collect();
    assert_eq!(raw_lines.len(), fed.len());
    let (mut oks, mut errors) = (0, 0);
    for (raw, v) in raw_lines.iter().zip(&fed) {
        let line: Value = serde_json::from_str(raw).unwrap();
        let name = &v["name"];
        match v["expect"].as_str().unwrap() {
            "ok" => {
                assert_key_order(raw, &OK_KEYS);
                assert_matches_ok_vector(&line, v);
                oks += 1;
            }
            "error" => {
                assert_key_order(raw, &["ok", "error", "detail"]);
                assert_eq!(line["ok"], false, "{name}: {raw}");
                assert!(!line["detail"].as_str().unwrap().is_empty(), "{name}");
                let class = v["error_class"].as_str().unwrap();
                if class != "any" {
                    assert_eq!(line["error"], class, "{name}: {raw}");
                }
                errors += 1;
            }
            other => panic!("{name}: unknown expectation {other}"),
        }
    }
    assert!(oks > 0 && errors > 0, "{oks} ok, {errors} errors");
}

#[test]
fn an_empty_line_is_skipped() {
    let run = mxp(&["frame", "decode"], b"\n   \n\t\n");
    assert_eq!(run.code, 0);
    assert_eq!(run.stdout, b"");
}

#[test]
fn conformance_ok_vectors_decode_from_a_raw_capture() {
    let oks: Vec<Value> = vectors()
        .into_iter()
        .filter(|v| v["expect"] == "ok")
        .collect();
    let capture: Vec<u8> = oks
        .iter()
        .flat_map(|v| hex::decode(v["frame_hex"].as_str().unwrap()).unwrap())
        .collect();
    let run = mxp(&["frame", "decode", "--raw"], &capture);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = run.json_lines();
    assert_eq!(lines.len(), oks.len());
    for (line, v) in lines.iter().zip(&oks) {
        assert_matches_ok_vector(line, v);
    }
}

/// Arguments of `mxp frame encode`, then the fields they must produce.
type RoundTrip<'a> = (&'a [&'a str], MessageType, Flags, u64, u64, &'a str);

#[test]
fn encode_then_decode_round_trip() {
    let cases: [RoundTrip<'_>; 4] = [
        (
            &[
                "--type",
                "call",
                "--flags",
                "requires_ack",
                "--message-id",
                "42",
                "--trace-id",
                "7",
                "--payload-hex",
                "68656C6C6F",
            ],
            MessageType::Call,
            Flags::REQUIRES_ACK,
            42,
            7,
            "68656c6c6f",
        ),
        (
            &[
                "--type",
                "0x11",
                "--flags",
                "requires_ack|final",
                "--message-id",
                "18446744073709551615",
                "--payload-hex",
                "",
            ],
            MessageType::Response,
            Flags::REQUIRES_ACK.with(Flags::FINAL),
            u64::MAX,
            0,
            "",
        ),
        (
            &[
                "--type",
                "agent_register",
                "--flags",
                "15",
                "--trace-id",
                "0xdeadbeef",
                "--payload-hex",
                "00ff",
            ],
            MessageType::AgentRegister,
            Flags::ALL,
            0,
            0xdead_beef,
            "00ff",
        ),
        (
            &["--type", "241", "--payload-hex", "7b7d"],
            MessageType::Error,
            Flags::EMPTY,
            0,
            0,
            "7b7d",
        ),
    ];
    for (args, t, flags, message_id, trace_id, payload_hex) in cases {
        let encode_args: Vec<&str> = ["frame", "encode"].iter().chain(args).copied().collect();
        let encoded = mxp(&encode_args, b"");
        assert_eq!(encoded.code, 0, "{args:?}: {}", encoded.stderr);
        assert_eq!(encoded.stderr, "");
        let text = encoded.stdout_text();
        let expected = FrameHeader::new(t)
            .with_flags(flags)
            .with_message_id(message_id)
            .with_trace_id(trace_id)
            .encode(&hex::decode(payload_hex).unwrap())
            .unwrap();
        assert_eq!(
            text,
            format!("{}\n", hex::encode(expected.as_bytes())),
            "{args:?}"
        );

        let decoded = mxp(&["frame", "decode"], &encoded.stdout);
        assert_eq!(decoded.code, 0, "{}", decoded.stderr);
        let lines = decoded.json_lines();
        assert_eq!(lines.len(), 1, "{args:?}");
        let line = &lines[0];
        assert_eq!(line["ok"], true);
        assert_eq!(line["type"], t.name());
        assert_eq!(line["type_byte"], t.as_byte());
        assert_eq!(line["flags"], flags.bits());
        assert_eq!(line["message_id"], message_id.to_string());
        assert_eq!(line["trace_id"], trace_id.to_string());
        assert_eq!(line["payload_len"], payload_hex.len() / 2);
        assert_eq!(line["payload_hex"], payload_hex);
    }
}

#[test]
fn raw_out_builds_a_capture_that_decodes() {
    let dir = TempDir::new("capture");
    let payload_path = dir.path().join("payload.json");
    std::fs::write(&payload_path, br#"{"topic":"t"}"#).unwrap();
    let payload_arg = payload_path.to_str().unwrap();
    let mut capture = Vec::new();
    for (id, args) in [
        ["--type", "event", "--payload-file", payload_arg],
        ["--type", "call", "--payload-hex", "0102"],
        ["--type", "ack", "--payload-file", "-"],
    ]
    .iter()
    .enumerate()
    {
        let id = (id + 1).to_string();
        let mut all = vec!["frame", "encode", "--raw-out", "--message-id", id.as_str()];
        all.extend_from_slice(args);
        let run = mxp(&all, b"stdin payload");
        assert_eq!(run.code, 0, "{}", run.stderr);
        capture.extend_from_slice(&run.stdout);
    }
    let capture_path = dir.path().join("capture.bin");
    std::fs::write(&capture_path, &capture).unwrap();

    let run = mxp(
        &["frame", "decode", "--raw"],
        &std::fs::read(&capture_path).unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["type"], "Event");
    assert_eq!(lines[0]["payload_hex"], hex::encode(br#"{"topic":"t"}"#));
    assert_eq!(lines[1]["type"], "Call");
    assert_eq!(lines[1]["message_id"], "2");
    assert_eq!(lines[1]["payload_hex"], "0102");
    assert_eq!(lines[2]["type"], "Ack");
    assert_eq!(lines[2]["payload_hex"], hex::encode(b"stdin payload"));
}

fn frame_bytes(t: MessageType, id: u64, payload: &[u8]) -> Vec<u8> {
    FrameHeader::new(t)
        .with_message_id(id)
        .encode(payload)
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// `ok <id>` for a valid frame, the class for an error.
fn summary(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            if l["ok"] == true {
                format!("ok {}", l["message_id"].as_str().unwrap())
            } else {
                l["error"].as_str().unwrap().to_owned()
            }
        })
        .collect()
}

#[test]
fn raw_capture_with_a_corrupt_frame_in_the_middle_reads_on() {
    let mut corrupt = frame_bytes(MessageType::Call, 2, &[0x55; 1000]);
    corrupt[500] ^= 0x01;
    let mut bad_type = frame_bytes(MessageType::Event, 3, &[0x66; 70_000]);
    bad_type[4] = 0x13;
    let capture = [
        frame_bytes(MessageType::Call, 1, b"first"),
        corrupt,
        bad_type,
        frame_bytes(MessageType::Response, 4, &[0x77; 100_000]),
        frame_bytes(MessageType::Event, 5, b""),
    ]
    .concat();
    let run = mxp(&["frame", "decode", "--raw"], &capture);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let lines = run.json_lines();
    assert_eq!(
        summary(&lines),
        [
            "ok 1",
            "checksum_mismatch",
            "invalid_message_type",
            "ok 4",
            "ok 5"
        ]
    );
    assert_eq!(lines[3]["payload_len"], 100_000);
}

#[test]
fn raw_capture_with_a_bad_magic_stops_with_exit_1() {
    let first = frame_bytes(MessageType::Call, 1, b"first");
    let mut bad = frame_bytes(MessageType::Call, 2, b"second");
    bad[..4].copy_from_slice(b"MXP1");
    let capture = [
        first.clone(),
        bad,
        frame_bytes(MessageType::Call, 3, b"third"),
    ]
    .concat();
    let run = mxp(&["frame", "decode", "--raw"], &capture);
    assert_eq!(run.code, 1);
    let lines = run.json_lines();
    assert_eq!(summary(&lines), ["ok 1", "invalid_magic"]);
    assert!(
        run.stderr
            .contains(&format!("framing lost at byte offset {}", first.len())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.starts_with("mxp: "), "{}", run.stderr);
}

#[test]
fn raw_truncated_last_frame_is_reported_and_exits_0() {
    let whole = frame_bytes(MessageType::Call, 1, b"first");
    let cut = frame_bytes(MessageType::Call, 2, b"second");
    let capture = [whole.as_slice(), &cut[..cut.len() - 3]].concat();
    let run = mxp(&["frame", "decode", "--raw"], &capture);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = run.json_lines();
    assert_eq!(summary(&lines), ["ok 1", "truncated"]);
}

#[test]
fn max_payload_limits_both_modes() {
    let small = frame_bytes(MessageType::Call, 1, &[1; 8]);
    let big = frame_bytes(MessageType::Call, 2, &[2; 9]);
    let input = format!("{}\n{}\n", hex::encode(&small), hex::encode(&big));
    let run = mxp(&["frame", "decode", "--max-payload", "8"], input.as_bytes());
    assert_eq!(run.code, 0);
    assert_eq!(summary(&run.json_lines()), ["ok 1", "payload_too_large"]);

    // In a capture an oversized length loses the framing.
    let run = mxp(
        &["frame", "decode", "--raw", "--max-payload", "8"],
        &[small.clone(), big].concat(),
    );
    assert_eq!(run.code, 1);
    assert_eq!(summary(&run.json_lines()), ["ok 1", "payload_too_large"]);
    assert!(
        run.stderr.contains(&format!("byte offset {}", small.len())),
        "{}",
        run.stderr
    );

    let run = mxp(&["frame", "decode", "--max-payload", "16777217"], b"");
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, b"");
}

#[test]
fn invalid_hex_line_is_reported_and_decoding_goes_on() {
    let good = hex::encode(frame_bytes(MessageType::Event, 9, b"{}"));
    let input = format!("# capture\nnot hex at all\n{good}\n31505\n");
    let run = mxp(&["frame", "decode"], input.as_bytes());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let raw: Vec<&str> = run.stdout_text().lines().collect();
    assert_eq!(raw.len(), 3);
    assert_key_order(raw[0], &["ok", "error", "detail"]);
    let lines = run.json_lines();
    assert_eq!(lines[0]["ok"], false);
    assert_eq!(lines[0]["error"], "invalid_hex");
    assert_eq!(
        lines[0]["detail"],
        "line 2: invalid hex character 'n' at column 1"
    );
    assert_eq!(lines[1]["ok"], true);
    assert_eq!(lines[1]["message_id"], "9");
    assert_eq!(lines[2]["error"], "invalid_hex");
    assert_eq!(lines[2]["detail"], "line 4: odd number of hex digits (5)");
}

#[test]
fn trailing_bytes_on_a_line_are_an_error() {
    let line = format!(
        "{}00",
        hex::encode(frame_bytes(MessageType::Event, 1, b"x"))
    );
    let run = mxp(&["frame", "decode"], line.as_bytes());
    assert_eq!(run.code, 0);
    assert_eq!(run.json_lines()[0]["error"], "trailing_bytes");
}

#[test]
fn unknown_type_is_a_usage_error_listing_the_known_types() {
    let run = mxp(
        &["frame", "encode", "--type", "teleport", "--payload-hex", ""],
        b"",
    );
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, b"");
    assert!(run.stderr.starts_with("mxp: "), "{}", run.stderr);
    assert!(run.stderr.contains("teleport"), "{}", run.stderr);
    for t in MessageType::ALL {
        assert!(run.stderr.contains(t.name()), "{t} missing: {}", run.stderr);
    }
}

#[test]
fn bad_encode_inputs_give_messages_and_exit_codes() {
    let run = mxp(
        &["frame", "encode", "--type", "call", "--payload-hex", "00g0"],
        b"",
    );
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "mxp: invalid --payload-hex: 'g' at position 3 is not a hex digit\n"
    );

    let run = mxp(
        &[
            "frame",
            "encode",
            "--type",
            "call",
            "--flags",
            "loud",
            "--payload-hex",
            "",
        ],
        b"",
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("loud"), "{}", run.stderr);

    let dir = TempDir::new("missing");
    let missing = dir.path().join("no-such-payload.bin");
    let run = mxp(
        &[
            "frame",
            "encode",
            "--type",
            "call",
            "--payload-file",
            missing.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.starts_with("mxp: "), "{}", run.stderr);
    assert!(
        run.stderr.contains(missing.to_str().unwrap()),
        "{}",
        run.stderr
    );

    // Over 16 MiB from stdin.
    let big = vec![0u8; 16 * 1024 * 1024 + 1];
    let run = mxp(
        &["frame", "encode", "--type", "call", "--payload-file", "-"],
        &big,
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("16777216"), "{}", run.stderr);
    assert_eq!(run.stdout, b"");
}

#[test]
fn exactly_one_payload_source_is_required() {
    let none = mxp(&["frame", "encode", "--type", "call"], b"");
    assert_eq!(none.code, 2);
    let both = mxp(
        &[
            "frame",
            "encode",
            "--type",
            "call",
            "--payload-hex",
            "",
            "--payload-file",
            "-",
        ],
        b"",
    );
    assert_eq!(both.code, 2);
    let empty = mxp(
        &["frame", "encode", "--type", "call", "--payload-hex", ""],
        b"",
    );
    assert_eq!(empty.code, 0, "{}", empty.stderr);
    assert_eq!(empty.stdout.len(), 2 * 40 + 1);
}

#[test]
fn help_mentions_the_subcommands() {
    let top = mxp(&["--help"], b"");
    assert_eq!(top.code, 0);
    assert!(top.stdout_text().contains("frame"), "{}", top.stdout_text());
    let frame = mxp(&["frame", "--help"], b"");
    assert_eq!(frame.code, 0);
    let text = frame.stdout_text();
    assert!(text.contains("decode") && text.contains("encode"), "{text}");
    let decode = mxp(&["frame", "decode", "--help"], b"");
    assert!(decode.stdout_text().contains("--raw"));
    assert!(decode.stdout_text().contains("--max-payload"));
    let encode = mxp(&["frame", "encode", "--help"], b"");
    for arg in [
        "--type",
        "--flags",
        "--message-id",
        "--trace-id",
        "--payload-hex",
        "--payload-file",
        "--raw-out",
    ] {
        assert!(encode.stdout_text().contains(arg), "{arg}");
    }
    assert_eq!(mxp(&["frobnicate"], b"").code, 2);
}

#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    let line = format!(
        "{}\n",
        hex::encode(frame_bytes(MessageType::Call, 1, &[0; 64]))
    );
    let input = line.repeat(20_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mxp"))
        .args(["frame", "decode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the child writes anything.
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
}
