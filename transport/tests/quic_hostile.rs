//! Hostile or greedy peers: bytes that are not frames, oversized headers,
//! repeat offenders, slow loris, too many connections, too many frames. Each
//! test also checks that a well-behaved peer is served meanwhile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mxp_protocol::{
    AgentId, Call, CallBody, ErrorCode, ErrorPayload, Flags, Frame, FrameHeader, MAX_PAYLOAD_LEN,
    MessageType, Response, TypedPayload,
};
use mxp_transport::{
    Bus, CallError, Client, Limits, MxpUrl, NodeIdentity, PeerTrust, TransportError, codes,
};
use quinn::VarInt;
use serde_json::json;
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(10);
const AGENT: AgentId = AgentId::from_bytes([9; 16]);

fn echo_node(limits: Limits) -> (mxp_transport::Server, MxpUrl) {
    let bus = Bus::new(1024);
    common::spawn_echo(bus.register(AGENT).unwrap());
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, limits);
    let url = common::url(server.local_addr().unwrap(), AGENT);
    (server, url)
}

async fn echo(client: &Client, url: &MxpUrl, n: u64) -> Result<(), CallError> {
    let r = client
        .call(url, &CallBody::new("echo", json!(n)), WAIT)
        .await?;
    assert_eq!(r.parse_body().unwrap().result, json!(n));
    Ok(())
}

/// Sends `bytes` on a new stream of `conn`, finishes it, and returns the one
/// frame the node answers with.
async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Frame {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .expect("no answer")
        .unwrap();
    Frame::parse(Bytes::from(answer)).unwrap()
}

fn error_of(frame: &Frame) -> (ErrorCode, Option<String>, u64) {
    assert_eq!(frame.message_type(), MessageType::Error, "{frame:?}");
    let e = ErrorPayload::from_frame(frame).unwrap();
    (e.code, e.parse_body().unwrap().class, e.in_reply_to)
}

const GARBAGE: &[u8] = b"GET / HTTP/1.1\r\nHost: not-an-mxp-node\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_answered_with_error_frames() {
    let (server, url) = echo_node(Limits::default());
    let addr = server.local_addr().unwrap();
    let conn = common::raw::connect(addr).await;

    // Bytes that are not a frame at all.
    let answer = raw_exchange(&conn, GARBAGE).await;
    let (code, class, _) = error_of(&answer);
    assert_eq!(code, ErrorCode::MALFORMED_FRAME);
    assert_eq!(class.as_deref(), Some("invalid_magic"));

    // A header declaring 16 MiB + 1: refused on the header alone. Only the 32
    // header bytes are sent and the stream is left open.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&common::raw_header(0x10, 4242, MAX_PAYLOAD_LEN + 1))
        .await
        .unwrap();
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .expect("no answer to an oversized header")
        .unwrap();
    let (code, class, in_reply_to) = error_of(&Frame::parse(Bytes::from(answer)).unwrap());
    assert_eq!(code, ErrorCode::MALFORMED_FRAME);
    assert_eq!(class.as_deref(), Some("payload_too_large"));
    assert_eq!(in_reply_to, 4242);
    // The node stops reading the rest instead of waiting for 16 MiB.
    let stopped = tokio::time::timeout(WAIT, send.stopped()).await.unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");

    // A Call frame whose payload stops inside the 20-byte Call prefix: the
    // target agent id is all there, the timeout is cut short.
    let client = common::client(Limits::default());
    let mut truncated = AGENT.as_bytes().to_vec();
    truncated.extend_from_slice(&[5, 0]);
    let frame = FrameHeader::new(MessageType::Call)
        .with_message_id(77)
        .with_trace_id(77)
        .encode(&truncated)
        .unwrap();
    let answer = client.exchange(&url, frame, WAIT).await.unwrap();
    let (code, class, in_reply_to) = error_of(&answer);
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD);
    assert_eq!(class.as_deref(), Some("truncated"));
    assert_eq!(in_reply_to, 77);

    // Below the threshold (8) the connection stays open and is served.
    assert!(conn.close_reason().is_none());
    let call = Call::json(AGENT, 5, &CallBody::new("echo", json!("still here")))
        .unwrap()
        .to_frame(5, 5, Flags::EMPTY)
        .unwrap();
    let answer = raw_exchange(&conn, call.as_bytes()).await;
    let response = Response::from_frame(&answer).unwrap();
    assert_eq!(response.in_reply_to, 5);
    assert_eq!(response.parse_body().unwrap().result, json!("still here"));
    assert!(server.stats().malformed >= 3, "{:?}", server.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_offender_is_disconnected_and_other_peers_never_notice() {
    let limits = Limits {
        malformed_threshold: 3,
        ..Limits::default()
    };
    let (server, url) = echo_node(limits);
    let addr = server.local_addr().unwrap();

    // A well-behaved peer calling all along.
    let good = Arc::new(common::client(Limits::default()));
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let (good, url, answered, stop) =
            (good.clone(), url.clone(), answered.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                echo(&good, &url, n)
                    .await
                    .unwrap_or_else(|e| panic!("the good peer's call {n} failed: {e}"));
                answered.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        })
    };
    assert!(common::eventually(WAIT, || answered.load(Ordering::Relaxed) > 0).await);

    let conn = common::raw::connect(addr).await;
    for _ in 0..2 {
        let (code, class, _) = error_of(&raw_exchange(&conn, GARBAGE).await);
        assert_eq!(code, ErrorCode::MALFORMED_FRAME);
        assert_eq!(class.as_deref(), Some("invalid_magic"));
        assert!(conn.close_reason().is_none(), "closed below the threshold");
    }
    // The third: the node closes the connection (the Error frame may be lost).
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(GARBAGE).await.unwrap();
    let _ = send.finish();
    let reason = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("the node kept the offender's connection open");
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, VarInt::from_u32(codes::CLOSE_MALFORMED));
        }
        other => panic!("closed for another reason: {other:?}"),
    }

    // The good peer goes on being answered.
    let before = answered.load(Ordering::Relaxed);
    assert!(common::eventually(WAIT, || answered.load(Ordering::Relaxed) >= before + 5).await);
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(WAIT, caller).await.unwrap().unwrap();
    assert!(server.stats().malformed >= 3, "{:?}", server.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_streams_are_reset_and_others_are_served() {
    let limits = Limits {
        request_timeout: Duration::from_millis(500),
        max_streams_per_connection: 8,
        ..Limits::default()
    };
    let (server, url) = echo_node(limits);
    let addr = server.local_addr().unwrap();
    let good = common::client(Limits::default());
    echo(&good, &url, 0).await.unwrap();

    // Eight streams: the first four carry nothing at all (the peer learns of
    // them because later streams are used), the last four half a header.
    let conn = common::raw::connect(addr).await;
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(conn.open_bi().await.unwrap());
    }
    let half = &common::raw_header(0x10, 1, 100)[..16];
    for (send, _) in &mut streams[4..] {
        send.write_all(half).await.unwrap();
    }
    assert!(
        common::eventually(WAIT, || server.stats().streams >= 8).await,
        "the node never saw the streams: {:?}",
        server.stats()
    );

    // Meanwhile another peer is served.
    echo(&good, &url, 1).await.unwrap();

    let reset = VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT);
    for (i, (send, recv)) in streams.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(WAIT, recv.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stream {i} was never reset"));
        match read {
            Err(quinn::ReadError::Reset(code)) => assert_eq!(code, reset, "stream {i}"),
            other => panic!("stream {i}: expected a reset, got {other:?}"),
        }
        let stopped = tokio::time::timeout(WAIT, send.stopped()).await.unwrap();
        assert_eq!(stopped.unwrap(), Some(reset), "stream {i}");
    }
    assert!(
        common::eventually(WAIT, || server.stats().streams == 0).await,
        "{:?}",
        server.stats()
    );

    // The slots are free again: the same connection can make a real Call.
    drop(streams);
    let call = Call::json(AGENT, 5, &CallBody::new("echo", json!("ok")))
        .unwrap()
        .to_frame(3, 3, Flags::EMPTY)
        .unwrap();
    let answer = raw_exchange(&conn, call.as_bytes()).await;
    assert_eq!(
        Response::from_frame(&answer)
            .unwrap()
            .parse_body()
            .unwrap()
            .result,
        json!("ok")
    );
    echo(&good, &url, 2).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_limit_are_refused_until_one_closes() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (server, url) = echo_node(limits);
    let first = common::client(Limits::default());
    let second = common::client(Limits::default());
    echo(&first, &url, 1).await.unwrap();
    echo(&second, &url, 2).await.unwrap();

    let third = common::client(Limits::default());
    match echo(&third, &url, 3).await {
        Err(CallError::Transport(TransportError::Connect { .. })) => {}
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(
        server.stats().refused_connections >= 1,
        "{:?}",
        server.stats()
    );
    // The two admitted peers are still served.
    echo(&first, &url, 4).await.unwrap();
    echo(&second, &url, 5).await.unwrap();

    first.close().await;
    assert!(
        common::eventually(WAIT, || server.stats().connections < 2).await,
        "the node never noticed the closed connection: {:?}",
        server.stats()
    );
    echo(&third, &url, 6).await.unwrap();
    echo(&second, &url, 7).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_over_its_rate_is_refused_and_other_peers_are_not() {
    let limits = Limits {
        peer_rate_per_sec: 1.0,
        peer_burst: 5.0,
        ..Limits::default()
    };
    let (server, url) = echo_node(limits);
    let client = Arc::new(common::client(Limits::default()));

    // The burst: the first five Calls are served.
    for n in 0..5 {
        echo(&client, &url, n)
            .await
            .unwrap_or_else(|e| panic!("call {n} of the burst failed: {e}"));
    }
    // Fifteen more at once: at most one token (a second's worth) can have
    // come back meanwhile.
    let mut calls = JoinSet::new();
    for n in 5..20 {
        let (client, url) = (client.clone(), url.clone());
        calls.spawn(async move { echo(&client, &url, n).await });
    }
    let mut limited = 0;
    while let Some(joined) = calls.join_next().await {
        match joined.unwrap() {
            Ok(()) => {}
            Err(CallError::Remote { code, .. }) if code == ErrorCode::RATE_LIMITED => limited += 1,
            Err(other) => panic!("unexpected failure: {other:?}"),
        }
    }
    assert!(
        limited >= 14,
        "only {limited} of 20 calls were rate limited"
    );
    assert!(server.stats().rate_limited >= 14, "{:?}", server.stats());

    // Another identity has its own budget.
    let other = common::client(Limits::default());
    echo(&other, &url, 100).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_not_reset_by_reconnecting() {
    // One token per 100 s: nothing comes back during the test.
    let limits = Limits {
        peer_rate_per_sec: 0.01,
        peer_burst: 2.0,
        ..Limits::default()
    };
    let (server, url) = echo_node(limits);
    let identity = NodeIdentity::generate().unwrap();
    let client = common::client_with(&identity, PeerTrust::AnyIdentified, Limits::default());
    echo(&client, &url, 1).await.unwrap();
    echo(&client, &url, 2).await.unwrap();
    let err = echo(&client, &url, 3).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::RATE_LIMITED);

    // The same identity reconnects: its budget is still spent.
    client.close().await;
    assert!(common::eventually(WAIT, || server.stats().connections == 0).await);
    let again = common::client_with(&identity, PeerTrust::AnyIdentified, Limits::default());
    match echo(&again, &url, 4).await {
        Err(e) if e.code() == ErrorCode::RATE_LIMITED => {}
        other => panic!(
            "reconnecting gave the peer a fresh budget: expected rate_limited, got {other:?}"
        ),
    }
}
