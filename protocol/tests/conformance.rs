//! Every MXP v1 conformance vector (checked against the public reference
//! codec) decodes to exactly its fields or its error class, and every ok
//! vector re-encodes byte for byte.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::{Bytes, BytesMut};
use mxp_protocol::{Frame, FrameHeader, MxpCodec};
use serde_json::Value;
use tokio_util::codec::Decoder;

const VECTORS: &str = include_str!("vectors/mxp-v1-vectors.jsonl");

const CLASSES: &[&str] = &[
    "invalid_magic",
    "invalid_message_type",
    "invalid_flags",
    "reserved_nonzero",
    "checksum_mismatch",
    "truncated",
    "payload_too_large",
    "trailing_bytes",
];

struct Vector {
    name: String,
    v: Value,
    bytes: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let all: Vec<Vector> = VECTORS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let name = v["name"].as_str().unwrap().to_owned();
            let bytes = hex::decode(v["frame_hex"].as_str().unwrap()).unwrap();
            Vector { name, v, bytes }
        })
        .collect();
    assert_eq!(all.len(), 91, "the vector file changed: review this test");
    all
}

fn str_u64(v: &Value) -> u64 {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn ok_vectors_decode_to_every_field_and_reencode_byte_for_byte() {
    let mut checked = 0;
    for vec in vectors().iter().filter(|x| x.v["expect"] == "ok") {
        let (name, v) = (&vec.name, &vec.v);
        let frame =
            Frame::parse(Bytes::from(vec.bytes.clone())).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            u64::from(frame.message_type().as_byte()),
            v["message_type"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            u64::from(frame.flags().bits()),
            v["flags"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(frame.message_id(), str_u64(&v["message_id"]), "{name}");
        assert_eq!(frame.trace_id(), str_u64(&v["trace_id"]), "{name}");
        let payload = hex::decode(v["payload_hex"].as_str().unwrap()).unwrap();
        assert_eq!(frame.payload().as_ref(), payload.as_slice(), "{name}");
        assert_eq!(frame.payload_len(), payload.len(), "{name}");
        let checksum = u64::from_le_bytes(vec.bytes[vec.bytes.len() - 8..].try_into().unwrap());
        assert_eq!(frame.checksum(), checksum, "{name}");

        // Re-encode from the decoded fields alone.
        let header = FrameHeader::new(frame.message_type())
            .with_flags(frame.flags())
            .with_message_id(frame.message_id())
            .with_trace_id(frame.trace_id());
        let again = header.encode(&payload).unwrap();
        assert_eq!(
            again.as_bytes().as_ref(),
            vec.bytes.as_slice(),
            "{name}: encode"
        );
        let mut buf = BytesMut::new();
        header.encode_into(&payload, &mut buf).unwrap();
        assert_eq!(&buf[..], vec.bytes.as_slice(), "{name}: encode_into");
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} ok vectors");
}

#[test]
fn error_vectors_give_their_class() {
    let mut checked = 0;
    for vec in vectors().iter().filter(|x| x.v["expect"] == "error") {
        let (name, v) = (&vec.name, &vec.v);
        let expected = v["error_class"].as_str().unwrap();
        let err = match Frame::parse(Bytes::from(vec.bytes.clone())) {
            Ok(f) => panic!("{name}: accepted a bad frame: {f:?}"),
            Err(e) => e,
        };
        assert!(
            CLASSES.contains(&err.class()),
            "{name}: unknown class {}",
            err.class()
        );
        if expected != "any" {
            assert_eq!(err.class(), expected, "{name}: {err}");
        }
        assert!(!err.to_string().is_empty());
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} error vectors");
}

/// The stream codec agrees with `Frame::parse` on every vector, whole or
/// split byte by byte.
#[test]
fn stream_codec_agrees_with_parse_on_every_vector() {
    for vec in vectors() {
        if vec.bytes.is_empty() {
            // An empty stream is a stream of no frames, not a truncated one.
            let mut buf = BytesMut::new();
            assert_eq!(MxpCodec::new().decode_eof(&mut buf).unwrap(), None);
            continue;
        }
        let expected = Frame::parse(Bytes::from(vec.bytes.clone())).map_err(|e| e.class());
        for step in [vec.bytes.len().max(1), 1] {
            let mut codec = MxpCodec::new();
            let mut buf = BytesMut::new();
            let mut got = None;
            for chunk in vec.bytes.chunks(step) {
                buf.extend_from_slice(chunk);
                match codec.decode(&mut buf) {
                    Ok(None) => {}
                    Ok(Some(f)) => got = Some(Ok(f)),
                    Err(e) => got = Some(Err(class_of(e))),
                }
                if got.is_some() {
                    break;
                }
            }
            let got = got.unwrap_or_else(|| match codec.decode_eof(&mut buf) {
                Ok(Some(f)) => Ok(f),
                Ok(None) => Err("nothing"),
                Err(e) => Err(class_of(e)),
            });
            assert_eq!(got, expected, "{} split by {step}", vec.name);
        }
    }
}

fn class_of(e: mxp_protocol::CodecError) -> &'static str {
    match e {
        mxp_protocol::CodecError::Decode(d) => d.class(),
        other => panic!("unexpected {other}"),
    }
}
