#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Usage (from anywhere; python3, standard library only):

    python3 fuzz/make_corpus.py

Each target folder is emptied and written anew, so run this to regenerate the
seeds, not while libFuzzer is adding its own inputs to the same folders.

Where the seeds come from:

* frame_parse: every conformance vector of
  protocol/tests/vectors/mxp-v1-vectors.jsonl (field frame_hex) whose frame is
  at most MAX_SEED bytes, named ok-<vector name> or err-<vector name>.
  protocol/tests/fuzz_corpus.rs checks that ok- seeds parse and err- seeds fail.
* stream_codec: a few byte streams glued from those vectors (good frames,
  skippable bad frames, a desynchronising frame, a stream cut short), each
  behind the read-size prefix the target expects (see stream_codec in
  src/lib.rs): a byte whose low three bits give k - 1, then k read sizes.
* typed payload targets: the payloads of the ok vectors of the matching
  message type (vec-<vector name>; mostly random bytes that fail to decode),
  plus hand-built encodings of the layouts documented in
  protocol/src/payload/*.rs: valid-* seeds must decode (the corpus test checks
  it), bad-* seeds each break one rule.
* json_payloads: JSON bodies of every schema (valid-*), a few broken ones, and
  the reproducers of the open issues listed in src/lib.rs (known-issue-*).

File names are the vector name or a short description; the content of a file
is raw bytes.
"""

import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "protocol", "tests", "vectors", "mxp-v1-vectors.jsonl")
CORPUS = os.path.join(HERE, "corpus")

# Larger vectors are left out to keep each corpus a few KB.
MAX_SEED = 512

MAGIC = b"\x31\x50\x58\x4d"

AGENT = bytes(range(0x10, 0x20))  # a 16-byte agent id
STREAM = bytes([0xA5] * 16)  # a 16-byte stream id


def load_vectors():
    with open(VECTORS, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def u16(n):
    return struct.pack("<H", n)


def u32(n):
    return struct.pack("<I", n)


def u64(n):
    return struct.pack("<Q", n)


def js(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def lp(text):
    """A u16 LE length-prefixed UTF-8 string."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return u16(len(raw)) + raw


def agent_register(agent_id, name, capabilities, ip, port):
    """AgentRegister: id, name, capability count and capabilities, IPv4, port (LE)."""
    out = agent_id + lp(name) + u16(len(capabilities))
    for c in capabilities:
        out += lp(c)
    return out + bytes(ip) + u16(port)


def header_only(message_type, flags, reserved, message_id, trace_id, declared):
    """A 32-byte header with any field values (no checksum: for broken frames)."""
    return (
        MAGIC
        + bytes([message_type, flags])
        + u16(reserved)
        + u64(message_id)
        + u64(trace_id)
        + u64(declared)
    )


def typed_seeds():
    """Hand-built payloads per typed target: name -> bytes."""
    demo = agent_register(AGENT, "demo", ["echo", "status"], [10, 0, 1, 5], 9000)
    call_body = js({"method": "echo", "params": {"text": "hi"}})
    return {
        "agent_register": {
            "valid-demo": demo,
            "valid-no-capabilities": agent_register(AGENT, "a", [], [0, 0, 0, 0], 0),
            "valid-utf8": agent_register(
                bytes(16), "résumé-agent ✓", ["fs.read", "http.fetch", "ü"], [127, 0, 0, 1], 65535
            ),
            "valid-name-256": agent_register(AGENT, "n" * 256, ["c" * 256], [192, 168, 0, 1], 443),
            "bad-empty-name": AGENT + u16(0) + u16(0) + bytes(6),
            "bad-name-257": AGENT + u16(257) + b"n" * 257 + u16(0) + bytes(6),
            "bad-utf8-name": AGENT + lp(b"\xff\xfe") + u16(0) + bytes(6),
            "bad-count-lie": AGENT + lp("demo") + u16(200) + bytes(6),
            "bad-count-257": AGENT + lp("demo") + u16(257) + bytes(6),
            "bad-empty-capability": AGENT + lp("demo") + u16(1) + u16(0) + bytes(6),
            "bad-trailing": demo + b"\x00",
            "bad-truncated": demo[:-1],
        },
        "call": {
            "valid-echo": AGENT + u32(5) + call_body,
            "valid-no-params": AGENT + u32(0) + js({"method": "status"}),
            "valid-nested": AGENT
            + u32(0xFFFFFFFF)
            + js({"method": "fs.read", "params": {"path": "/etc/motd", "opts": [1, 2.5, None, True]}}),
            "bad-empty-method": AGENT + u32(1) + js({"method": ""}),
            "bad-not-json": AGENT + u32(1) + b"{method: echo}",
            "bad-prefix-only": AGENT + u32(1),
            "bad-short": AGENT[:10],
        },
        "response": {
            "valid-result": u64(42) + js({"result": {"text": "hi"}}),
            "valid-null": u64(0xFFFFFFFFFFFFFFFF) + js({"result": None}),
            "valid-empty-object": u64(1) + b"{}",
            "bad-array": u64(1) + b"[1,2]",
            "bad-short": u64(1)[:7],
        },
        "error_payload": {
            "valid-unknown-agent": u64(42) + u16(200) + js({"message": "no agent here", "retriable": False}),
            "valid-with-class": u64(0)
            + u16(100)
            + js(
                {
                    "message": "checksum mismatch",
                    "retriable": False,
                    "class": "checksum_mismatch",
                    "details": {"carried": "0x1", "computed": "0x2"},
                }
            ),
            "valid-unknown-code": u64(7) + u16(7) + js({"message": "?"}),
            "bad-no-message": u64(7) + u16(900) + js({"retriable": True}),
            "bad-short": u64(7) + b"\x01",
        },
        "ack": {
            "valid-1": u64(1),
            "valid-max": u64(0xFFFFFFFFFFFFFFFF),
            "bad-7": u64(1)[:7],
            "bad-9": u64(1) + b"\x00",
        },
        "stream_open": {
            "valid-unidirectional": STREAM + AGENT + b"\x01",
            "valid-bidirectional": bytes(16) + bytes([0xFF] * 16) + b"\x02",
            "bad-type-3": STREAM + AGENT + b"\x03",
            "bad-32": STREAM + AGENT,
            "bad-34": STREAM + AGENT + b"\x01\x00",
        },
        "stream_chunk": {
            "valid-tok": STREAM + u64(7) + b"tok",
            "valid-empty": STREAM + u64(0),
            "valid-binary": STREAM + u64(0xFFFFFFFFFFFFFFFF) + bytes(range(256)),
            "bad-short": STREAM + u64(0)[:7],
        },
        "stream_close": {
            "valid-empty": STREAM,
            "valid-ok": STREAM + js({"status": "ok"}),
            "valid-error": STREAM + js({"status": "error", "message": "model backend went away"}),
            "valid-cancelled": STREAM + js({"status": "cancelled"}),
            "bad-status": STREAM + js({"status": "done"}),
            "bad-short": STREAM[:15],
        },
    }


def json_seeds():
    return {
        "valid-discover": js({"capability": "fs.read", "limit": 32}),
        "valid-discover-no-limit": js({"capability": "x"}),
        "valid-heartbeat": js({"agents": ["67e55044-10b1-426f-9247-bb680e5fe0c8"], "ttl_secs": 15}),
        "valid-heartbeat-empty": js({"agents": [], "ttl_secs": 0}),
        "valid-event": js({"topic": "audit.appended", "data": {"seq": 17}}),
        "valid-event-floats": js({"topic": "t", "data": [0.1, -2.5e-300, 1e300, 123456789012345678]}),
        "valid-call-body": js({"method": "echo", "params": "hi"}),
        "valid-response-body": js({"result": {"ok": True, "items": [1, "two", None]}}),
        "valid-error-body": js({"message": "denied", "retriable": False, "details": {"reason": "policy"}}),
        "valid-stream-close-body": js({"status": "error", "message": "boom"}),
        "valid-escapes": b'{"topic":"a\\u00e9\\ud83d\\ude00","method":"m\\n","capability":"\\"q\\""}',
        "bad-empty-topic": js({"topic": ""}),
        "bad-long-method": js({"method": "m" * 257}),
        "bad-heartbeat-uuid": js({"agents": ["not-a-uuid"], "ttl_secs": 1}),
        "bad-truncated": b'{"topic":"a',
        "bad-duplicate": b'{"topic":"a","topic":"b"}',
        "bad-empty": b"",
        # Open issues (see known_issues in src/lib.rs); fuzz_corpus.rs checks
        # that they still reproduce.
        "known-issue-float-round-trip": b'{"topic":"t","data":-2.5e-253}',
        "known-issue-array-body": b'["fs.read",32]',
    }


def stream_seed(sizes, frames):
    """The stream_codec input: a count byte, read sizes, then the stream."""
    assert 1 <= len(sizes) <= 8
    return bytes([len(sizes) - 1]) + bytes(sizes) + b"".join(frames)


def stream_seeds(by_name):
    def f(name):
        return bytes.fromhex(by_name[name]["frame_hex"])

    good = [f("call-empty"), f("call-json"), f("response-final"), f("event-all-flags")]
    # A header declaring 70,000 bytes: within MXP's 16 MiB, above the target's 64 KiB.
    over_limit = header_only(0x10, 0, 0, 1, 1, 70000)
    # An invalid type whose declared length runs past the end of the stream.
    cut_skip = header_only(0x13, 0, 0, 1, 1, 100) + b"\x00" * 20
    return {
        "good-1-byte-reads": stream_seed([0], good),
        "good-mixed-reads": stream_seed([6, 31, 0, 200, 40, 3, 191, 0xC1], good + good[::-1]),
        "skippable-errors": stream_seed(
            [16, 2], [good[0], f("bad-flags-10"), f("checksum-flip-last"), f("reserved-nonzero"), good[1]]
        ),
        "bad-magic-desyncs": stream_seed([5], [good[0], f("bad-magic"), good[1]]),
        "over-limit-desyncs": stream_seed([64], [good[2], over_limit, good[3]]),
        "cut-inside-frame": stream_seed([9, 1], [good[1], f("truncated-39")]),
        "cut-inside-header": stream_seed([0], [good[0], f("truncated-header")]),
        "cut-while-skipping": stream_seed([3], [good[3], cut_skip]),
        "chunk-4k-big-reads": stream_seed([0xC0, 0xFF], [f("chunk-4k"), good[0]]),
        "empty-stream": stream_seed([0], []),
    }


def write_dir(target, files):
    path = os.path.join(CORPUS, target)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    for name, data in sorted(files.items()):
        with open(os.path.join(path, name), "wb") as out:
            out.write(data)
    total = sum(len(d) for d in files.values())
    print(f"corpus/{target}: {len(files)} files, {total} bytes")


def main():
    vectors = load_vectors()
    by_name = {v["name"]: v for v in vectors}

    frames = {}
    for v in vectors:
        raw = bytes.fromhex(v["frame_hex"])
        if len(raw) <= MAX_SEED:
            frames[("ok-" if v["expect"] == "ok" else "err-") + v["name"]] = raw
    write_dir("frame_parse", frames)

    write_dir("stream_codec", stream_seeds(by_name))

    type_of_target = {
        "agent_register": 0x01,
        "call": 0x10,
        "response": 0x11,
        "stream_open": 0x20,
        "stream_chunk": 0x21,
        "stream_close": 0x22,
        "ack": 0xF0,
        "error_payload": 0xF1,
    }
    for target, seeds in typed_seeds().items():
        files = dict(seeds)
        for v in vectors:
            payload = bytes.fromhex(v.get("payload_hex", ""))
            if v["expect"] == "ok" and v["message_type"] == type_of_target[target] and len(payload) <= MAX_SEED:
                files["vec-" + v["name"]] = payload
        write_dir(target, files)

    files = json_seeds()
    for v in vectors:
        # Vectors of the JSON message types (AgentDiscover, AgentHeartbeat,
        # Event), and call-json, whose payload is a bare JSON object.
        payload = bytes.fromhex(v.get("payload_hex", ""))
        if v["expect"] == "ok" and (v["message_type"] in (0x02, 0x03, 0x12) or v["name"] == "call-json"):
            if len(payload) <= MAX_SEED:
                files["vec-" + v["name"]] = payload
    write_dir("json_payloads", files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
