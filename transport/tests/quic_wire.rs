//! The wire as docs/PROTOCOL.md states it, checked with a raw quinn peer:
//! trace ids of Errors for malformed frames, trailing bytes, message id 0,
//! REQUIRES_ACK, the `class` of decode errors agents answer, the TLS alert a
//! client without a certificate gets, the malformed threshold, MXP stream
//! sequence numbers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use mxp_protocol::{
    Ack, AgentId, Call, ErrorCode, ErrorPayload, EventBody, Flags, Frame, FrameHeader, MessageType,
    StreamChunk, StreamId, StreamOpen, TypedPayload,
};
use mxp_transport::{Bus, Envelope, Limits, PeerTrust, Server, codes};
use quinn::VarInt;
use serde_json::json;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const AGENT: AgentId = AgentId::from_bytes([9; 16]);

/// A node whose agent answers Calls like the echo agent (a body that does
/// not parse: `Reply::decode_error`) and passes every other envelope on.
fn node(limits: Limits) -> (Server, mpsc::UnboundedReceiver<Envelope>) {
    let bus = Bus::new(1024);
    let mut mailbox = bus.register(AGENT).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut env) = mailbox.recv().await {
            let Some(reply) = env.take_reply() else {
                let _ = tx.send(env);
                continue;
            };
            let parsed = Call::from_frame(env.frame()).and_then(|c| c.parse_body());
            match parsed {
                Ok(body) if body.method == "sleep" => {
                    let _ = tx.send(env);
                    tokio::spawn(async move {
                        let mut reply = reply;
                        reply.closed().await;
                    });
                }
                Ok(body) => reply.ok(body.params).unwrap(),
                Err(e) => reply.decode_error(&e).unwrap(),
            }
        }
    });
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, limits);
    (server, rx)
}

fn call(id: u64, trace: u64, body: &[u8]) -> Frame {
    Call {
        target: AGENT,
        timeout_secs: 5,
        body: Bytes::copy_from_slice(body),
    }
    .to_frame(id, trace, Flags::EMPTY)
    .unwrap()
}

async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Frame {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .expect("no answer")
        .unwrap();
    Frame::parse(Bytes::from(answer)).unwrap()
}

/// (code, class, in_reply_to, trace id of the Error frame).
fn error_of(frame: &Frame) -> (ErrorCode, Option<String>, u64, u64) {
    assert_eq!(frame.message_type(), MessageType::Error, "{frame:?}");
    let e = ErrorPayload::from_frame(frame).unwrap();
    (
        e.code,
        e.parse_body().unwrap().class,
        e.in_reply_to,
        frame.trace_id(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_for_malformed_frames_carry_the_headers_message_and_trace_ids() {
    let (server, _rx) = node(Limits::default());
    let conn = common::raw::connect(server.local_addr().unwrap()).await;
    // A bad checksum: the header is readable.
    let mut bytes = call(5, 99, br#"{"method":"echo"}"#).as_bytes().to_vec();
    *bytes.last_mut().unwrap() ^= 0xff;
    let (code, class, in_reply_to, trace) = error_of(&exchange(&conn, &bytes).await);
    assert_eq!(code, ErrorCode::MALFORMED_FRAME);
    assert_eq!(class.as_deref(), Some("checksum_mismatch"));
    assert_eq!((in_reply_to, trace), (5, 99));
    // An oversized declared length.
    let mut h = common::raw_header(0x10, 6, mxp_protocol::MAX_PAYLOAD_LEN + 1);
    h[16..24].copy_from_slice(&77u64.to_le_bytes());
    let (_, class, in_reply_to, trace) = error_of(&exchange(&conn, &h).await);
    assert_eq!(class.as_deref(), Some("payload_too_large"));
    assert_eq!((in_reply_to, trace), (6, 77));
    // No header at all: both 0.
    let (_, class, in_reply_to, trace) = error_of(&exchange(&conn, b"MXP").await);
    assert_eq!(class.as_deref(), Some("truncated"));
    assert_eq!((in_reply_to, trace), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_call_are_trailing_bytes_and_the_call_is_not_delivered() {
    let (server, mut rx) = node(Limits::default());
    let conn = common::raw::connect(server.local_addr().unwrap()).await;
    // Junk after the Call, in the same write.
    let mut bytes = call(7, 70, br#"{"method":"sleep"}"#).as_bytes().to_vec();
    bytes.extend_from_slice(b"junk");
    let (code, class, in_reply_to, trace) = error_of(&exchange(&conn, &bytes).await);
    assert_eq!(code, ErrorCode::MALFORMED_FRAME);
    assert_eq!(class.as_deref(), Some("trailing_bytes"));
    assert_eq!((in_reply_to, trace), (7, 70));
    // A second whole frame after the Call.
    let mut bytes = call(8, 80, br#"{"method":"echo"}"#).as_bytes().to_vec();
    bytes.extend_from_slice(call(9, 80, br#"{"method":"echo"}"#).as_bytes());
    let (_, class, in_reply_to, _) = error_of(&exchange(&conn, &bytes).await);
    assert_eq!(class.as_deref(), Some("trailing_bytes"));
    assert_eq!(in_reply_to, 8);
    assert!(
        rx.try_recv().is_err(),
        "a Call with trailing bytes reached the agent"
    );
    // Junk that comes while the Call is with the agent: the Call is answered
    // `trailing_bytes` all the same, and the agent sees its caller leave.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(call(10, 100, br#"{"method":"sleep"}"#).as_bytes())
        .await
        .unwrap();
    let env = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.frame().message_id(), 10);
    send.write_all(b"late junk").await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap();
    let (_, class, in_reply_to, _) = error_of(&Frame::parse(Bytes::from(answer)).unwrap());
    assert_eq!(class.as_deref(), Some("trailing_bytes"));
    assert_eq!(in_reply_to, 10);
    // A clean Call on the same connection is answered.
    let answer = exchange(
        &conn,
        call(11, 110, br#"{"method":"echo","params":1}"#).as_bytes(),
    )
    .await;
    assert_eq!(answer.message_type(), MessageType::Response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_message_id_zero_is_refused() {
    let (server, mut rx) = node(Limits::default());
    let conn = common::raw::connect(server.local_addr().unwrap()).await;
    let (code, class, in_reply_to, trace) =
        error_of(&exchange(&conn, call(0, 3, br#"{"method":"echo"}"#).as_bytes()).await);
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD);
    assert_eq!(class.as_deref(), Some("reserved_message_id"));
    assert_eq!((in_reply_to, trace), (0, 3));
    assert!(rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_requires_ack_on_a_bidirectional_stream_is_acked() {
    let (server, mut rx) = node(Limits::default());
    let conn = common::raw::connect(server.local_addr().unwrap()).await;
    let event = |target: Option<AgentId>, flags| {
        EventBody {
            target,
            topic: "t.x".into(),
            data: json!(1),
        }
        .to_frame(21, 210, flags)
        .unwrap()
    };
    let answer = exchange(&conn, event(Some(AGENT), Flags::REQUIRES_ACK).as_bytes()).await;
    assert_eq!(answer.message_type(), MessageType::Ack);
    assert_eq!(Ack::from_frame(&answer).unwrap().acked, 21);
    assert_eq!(answer.trace_id(), 210);
    let env = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.frame().message_type(), MessageType::Event);
    // Not delivered: an Error says why.
    let other = AgentId::from_bytes([3; 16]);
    let (code, _, in_reply_to, _) =
        error_of(&exchange(&conn, event(Some(other), Flags::REQUIRES_ACK).as_bytes()).await);
    assert_eq!((code, in_reply_to), (ErrorCode::UNKNOWN_AGENT, 21));
    // Without REQUIRES_ACK: delivered, and the stream ends with no frame.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(event(Some(AGENT), Flags::EMPTY).as_bytes())
        .await
        .unwrap();
    send.finish().unwrap();
    let rest = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_level_invalid_payloads_carry_their_class() {
    let (server, _rx) = node(Limits::default());
    let conn = common::raw::connect(server.local_addr().unwrap()).await;
    let long = format!(r#"{{"method":"{}"}}"#, "m".repeat(257));
    let cases: [(&[u8], &str); 4] = [
        (b"", "invalid_json"),
        (br#"{"params":1}"#, "invalid_json"),
        (b"{\"method\":\"\xff\"}", "invalid_json"),
        (long.as_bytes(), "limit_exceeded"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let id = 30 + i as u64;
        let (code, class, in_reply_to, trace) =
            error_of(&exchange(&conn, call(id, id * 10, body).as_bytes()).await);
        assert_eq!(code, ErrorCode::INVALID_PAYLOAD, "case {i}");
        assert_eq!(class.as_deref(), Some(*want), "case {i}");
        assert_eq!((in_reply_to, trace), (id, id * 10), "case {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_gets_the_tls_alert_certificate_required() {
    let (server, _rx) = node(Limits::default());
    let endpoint = common::raw::endpoint("127.0.0.1:0");
    let config = common::raw::client_config(None);
    let reason =
        match common::raw::try_connect(&endpoint, config, server.local_addr().unwrap()).await {
            // TLS 1.3: the client may finish first; the server then refuses.
            Ok(conn) => tokio::time::timeout(WAIT, conn.closed()).await.unwrap(),
            Err(e) => e,
        };
    match reason {
        quinn::ConnectionError::ConnectionClosed(c) => {
            // CRYPTO_ERROR 0x100 + TLS alert 116 (certificate_required).
            assert_eq!(
                c.error_code,
                quinn::TransportErrorCode::crypto(116),
                "{c:?}"
            );
        }
        other => panic!("expected a TLS alert, got {other:?}"),
    }
    assert_eq!(server.stats().frames_in, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_threshold_the_connection_closes_at_once_and_nothing_more_is_answered() {
    let limits = Limits {
        malformed_threshold: 3,
        ..Limits::default()
    };
    let (server, _rx) = node(limits);
    let conn = common::raw::connect(server.local_addr().unwrap()).await;
    // Eight bad frames at once, none of their answers read before all are sent.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(b"not a frame, not at all, no")
            .await
            .unwrap();
        let _ = send.finish();
        streams.push(recv);
    }
    let reason = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, VarInt::from_u32(codes::CLOSE_MALFORMED));
        }
        other => panic!("closed for another reason: {other:?}"),
    }
    let mut answered = 0;
    for mut recv in streams {
        if let Ok(bytes) = recv.read_to_end(1 << 16).await
            && Frame::parse(Bytes::from(bytes)).is_ok()
        {
            answered += 1;
        }
    }
    assert!(answered <= 3, "{answered} bad frames were answered");
    assert!(server.stats().malformed >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mxp_stream_chunks_out_of_sequence_are_refused() {
    let (server, mut rx) = node(Limits::default());
    let conn = common::raw::connect(server.local_addr().unwrap()).await;
    let sid = StreamId::from_bytes([4; 16]);
    let open = StreamOpen {
        stream_id: sid,
        target: AGENT,
        stream_type: mxp_protocol::StreamType::Bidirectional,
    }
    .to_frame(40, 400, Flags::EMPTY)
    .unwrap();
    let chunk = |seq, id| {
        StreamChunk {
            stream_id: sid,
            seq,
            data: Bytes::from_static(b"tok"),
        }
        .to_frame(id, 400, Flags::EMPTY)
        .unwrap()
    };
    let mut bytes = open.as_bytes().to_vec();
    bytes.extend_from_slice(chunk(0, 41).as_bytes());
    bytes.extend_from_slice(chunk(2, 42).as_bytes());
    let (code, class, in_reply_to, _) = error_of(&exchange(&conn, &bytes).await);
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD);
    assert_eq!(class.as_deref(), Some("out_of_sequence"));
    assert_eq!(in_reply_to, 42);
    // The open and chunk 0 were delivered, in order; chunk 2 was not.
    let types: Vec<u64> = [
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap(),
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap(),
    ]
    .iter()
    .map(|e| e.frame().message_id())
    .collect();
    assert_eq!(types, [40, 41]);
    assert!(rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_call_prefix_still_answers_with_its_trace_id() {
    let (server, _rx) = node(Limits::default());
    let conn = common::raw::connect(server.local_addr().unwrap()).await;
    let frame = FrameHeader::new(MessageType::Call)
        .with_message_id(50)
        .with_trace_id(500)
        .encode(&[1; 10])
        .unwrap();
    let (code, class, in_reply_to, trace) = error_of(&exchange(&conn, frame.as_bytes()).await);
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD);
    assert_eq!(class.as_deref(), Some("truncated"));
    assert_eq!((in_reply_to, trace), (50, 500));
}
