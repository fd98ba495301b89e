//! MXP over QUIC under load and over time: Call/Response correlation with many
//! Calls in flight, no head-of-line blocking, cancellation reaching the agent,
//! deadlines on both sides, Events, and MXP streams with backpressure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mxp_protocol::PrincipalId;
use mxp_protocol::{
    AgentId, Call, CallBody, CloseStatus, ErrorCode, ErrorPayload, EventBody, Flags, MessageType,
    StreamChunk, StreamCloseBody, StreamId, StreamOpen, StreamType, TypedPayload,
};
use mxp_transport::{Bus, CallError, Limits, Mailbox, NodeIdentity, PeerTrust};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_with_256_in_flight_each_get_their_own_response() {
    const CALLS: u64 = 10_000;
    const IN_FLIGHT: usize = 256;
    let bus = Bus::new(1024);
    let agent = AgentId::from_bytes([1; 16]);
    common::spawn_echo(bus.register(agent).unwrap());
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, Limits::default());
    let url = common::url(server.local_addr().unwrap(), agent);
    let client = Arc::new(common::client(Limits::default()));
    // Open the one connection every Call below shares.
    client
        .call(&url, &CallBody::new("echo", json!(null)), WAIT)
        .await
        .unwrap();

    let mut answered = vec![false; CALLS as usize];
    let mut most_in_flight = 0;
    let mut check = |(n, result): (u64, Result<mxp_protocol::Response, CallError>)| {
        let response = result.unwrap_or_else(|e| panic!("call {n} failed: {e}"));
        let result = response.parse_body().unwrap().result;
        assert_eq!(
            result,
            json!({ "n": n }),
            "call {n} got another call's answer"
        );
        assert!(!answered[n as usize], "call {n} answered twice");
        answered[n as usize] = true;
    };
    let mut calls = JoinSet::new();
    for n in 0..CALLS {
        if calls.len() >= IN_FLIGHT {
            check(calls.join_next().await.unwrap().unwrap());
        }
        let (c, u) = (client.clone(), url.clone());
        calls.spawn(async move {
            let body = CallBody::new("echo", json!({ "n": n }));
            (n, c.call(&u, &body, Duration::from_secs(60)).await)
        });
        most_in_flight = most_in_flight.max(client.stats().calls_in_flight);
    }
    while let Some(joined) = calls.join_next().await {
        check(joined.unwrap());
    }
    assert!(answered.iter().all(|a| *a), "some calls got no answer");
    assert!(
        most_in_flight > 1,
        "calls never overlapped (at most {most_in_flight} in flight)"
    );

    let idle = common::eventually(WAIT, || {
        let (s, c) = (server.stats(), client.stats());
        s.calls_in_flight == 0 && s.streams == 0 && c.calls_in_flight == 0 && c.streams == 0
    })
    .await;
    assert!(
        idle,
        "server {:?} / client {:?} still hold calls or streams",
        server.stats(),
        client.stats()
    );
    assert_eq!(
        server.stats().connections,
        1,
        "the calls did not share one connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_to_a_node_share_one_connection() {
    // The node accepts a single connection: a client that opened one per
    // concurrent Call would be refused.
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let bus = Bus::new(1024);
    let agent = AgentId::from_bytes([9; 16]);
    common::spawn_echo(bus.register(agent).unwrap());
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, limits);
    let url = common::url(server.local_addr().unwrap(), agent);
    let client = Arc::new(common::client(Limits::default()));

    let mut calls = JoinSet::new();
    for n in 0..32u64 {
        let (client, url) = (client.clone(), url.clone());
        calls.spawn(async move {
            let body = CallBody::new("echo", json!(n));
            (n, client.call(&url, &body, Duration::from_secs(20)).await)
        });
    }
    let mut failed = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (n, result) = joined.unwrap();
        match result {
            Ok(r) => assert_eq!(r.parse_body().unwrap().result, json!(n)),
            Err(e) => failed.push(format!("call {n}: {e}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 32 concurrent first calls failed (refused connections: {}): {:?}",
        failed.len(),
        server.stats().refused_connections,
        failed.first()
    );
    assert_eq!(server.stats().refused_connections, 0);
    assert_eq!(server.stats().connections, 1);
}

/// An agent that answers every Call with its params at once, except "sleep",
/// which it answers after `params` ms unless the caller gives up first. It
/// reports each sleep it starts on `started` and each caller it sees give up
/// (its `Reply::closed` resolved) on `gave_up`.
fn spawn_cancel_aware(
    mut mailbox: Mailbox,
    started: mpsc::UnboundedSender<u64>,
    gave_up: mpsc::UnboundedSender<u64>,
) {
    tokio::spawn(async move {
        while let Some(mut env) = mailbox.recv().await {
            let (started, gave_up) = (started.clone(), gave_up.clone());
            tokio::spawn(async move {
                let mut reply = env.take_reply().unwrap();
                let body = Call::from_frame(env.frame()).unwrap().parse_body().unwrap();
                if body.method != "sleep" {
                    let _ = reply.ok(body.params);
                    return;
                }
                let ms = body.params.as_u64().unwrap();
                started.send(ms).unwrap();
                let slept = tokio::select! {
                    () = reply.closed() => false,
                    () = tokio::time::sleep(Duration::from_millis(ms)) => true,
                };
                if slept {
                    let _ = reply.ok(json!(ms));
                } else {
                    gave_up.send(ms).unwrap();
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_call_blocks_no_other_call_and_its_cancellation_reaches_the_agent() {
    let bus = Bus::new(1024);
    let agent = AgentId::from_bytes([2; 16]);
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (gave_up_tx, mut gave_up) = mpsc::unbounded_channel();
    spawn_cancel_aware(bus.register(agent).unwrap(), started_tx, gave_up_tx);
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, Limits::default());
    let url = common::url(server.local_addr().unwrap(), agent);
    let client = Arc::new(common::client(Limits::default()));

    let slow = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let body = CallBody::new("sleep", json!(10_000));
            client.call(&url, &body, Duration::from_secs(60)).await
        })
    };
    let ms = tokio::time::timeout(WAIT, started.recv()).await.unwrap();
    assert_eq!(ms, Some(10_000), "the slow call never reached the agent");

    // 50 quick Calls on the same connection, well inside the slow one's 10 s.
    let t0 = Instant::now();
    let mut quick = JoinSet::new();
    for n in 0..50u64 {
        let (client, url) = (client.clone(), url.clone());
        quick.spawn(async move {
            let body = CallBody::new("echo", json!(n));
            (n, client.call(&url, &body, Duration::from_secs(6)).await)
        });
    }
    while let Some(joined) = quick.join_next().await {
        let (n, result) = joined.unwrap();
        let response = result.unwrap_or_else(|e| panic!("quick call {n} failed: {e}"));
        assert_eq!(response.parse_body().unwrap().result, json!(n));
    }
    assert!(
        !slow.is_finished(),
        "the slow call finished before the quick ones were checked"
    );
    assert!(t0.elapsed() < Duration::from_secs(6));
    assert!(
        common::eventually(WAIT, || server.stats().calls_in_flight == 1).await,
        "the server should hold exactly the slow call: {:?}",
        server.stats()
    );

    // Cancel the slow call: dropping its future resets the stream.
    slow.abort();
    assert!(slow.await.unwrap_err().is_cancelled());
    let seen = tokio::time::timeout(WAIT, gave_up.recv()).await;
    assert_eq!(
        seen.expect("the agent's Reply never saw the caller give up"),
        Some(10_000)
    );
    let idle = common::eventually(WAIT, || {
        let (s, c) = (server.stats(), client.stats());
        s.calls_in_flight == 0 && s.streams == 0 && c.calls_in_flight == 0 && c.streams == 0
    })
    .await;
    assert!(
        idle,
        "server {:?} / client {:?} still hold the cancelled call",
        server.stats(),
        client.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_deadline_gives_timeout_and_server_deadline_gives_timeout_error_frame() {
    let bus = Bus::new(1024);
    let echo = AgentId::from_bytes([3; 16]);
    let silent = AgentId::from_bytes([4; 16]);
    common::spawn_echo(bus.register(echo).unwrap());
    common::spawn_silent(bus.register(silent).unwrap());
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, Limits::default());
    let addr = server.local_addr().unwrap();
    let client = common::client(Limits::default());

    // The caller's own deadline.
    let t0 = Instant::now();
    let err = client
        .call(
            &common::url(addr, echo),
            &CallBody::new("sleep", json!(5000)),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(3),
        "timed out only after {took:?}"
    );

    // The deadline the Call carries, enforced by the server: 1 s.
    let id = client.next_message_id();
    let frame = Call::json(silent, 1, &CallBody::new("anything", json!(null)))
        .unwrap()
        .to_frame(id, id, Flags::EMPTY)
        .unwrap();
    let t0 = Instant::now();
    let answer = client
        .exchange(&common::url(addr, silent), frame, Duration::from_secs(5))
        .await
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(answer.message_type(), MessageType::Error);
    let error = ErrorPayload::from_frame(&answer).unwrap();
    assert_eq!(error.code, ErrorCode::TIMEOUT);
    assert_eq!(error.in_reply_to, id);
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    assert!(
        common::eventually(WAIT, || client.stats().calls_in_flight == 0
            && server.stats().calls_in_flight == 0)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_reaches_its_target_agent_attributed_to_the_peer() {
    let bus = Bus::new(16);
    let agent = AgentId::from_bytes([5; 16]);
    let mut mailbox = bus.register(agent).unwrap();
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, Limits::default());
    let identity = NodeIdentity::generate().unwrap();
    let client = common::client_with(&identity, PeerTrust::AnyIdentified, Limits::default());

    let event = EventBody {
        target: Some(agent),
        topic: "test.hello".into(),
        data: json!({ "k": [1, 2, 3] }),
    };
    client
        .event(&common::url(server.local_addr().unwrap(), agent), &event)
        .await
        .unwrap();
    let mut env = tokio::time::timeout(WAIT, mailbox.recv())
        .await
        .expect("the event never arrived")
        .unwrap();
    assert_eq!(env.frame().message_type(), MessageType::Event);
    assert_eq!(
        *env.principal().id(),
        PrincipalId::Peer(identity.peer_id().fingerprint())
    );
    assert!(env.take_reply().is_none());
    assert_eq!(EventBody::from_frame(env.frame()).unwrap(), event);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mxp_stream_arrives_in_order_through_a_small_mailbox() {
    const CHUNKS: u64 = 200;
    const CAPACITY: usize = 4;
    // StreamOpen, the chunks, StreamClose.
    const FRAMES: usize = CHUNKS as usize + 2;
    let bus = Bus::new(CAPACITY);
    let agent = AgentId::from_bytes([6; 16]);
    let mut mailbox = bus.register(agent).unwrap();
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, Limits::default());
    let identity = NodeIdentity::generate().unwrap();
    let client = Arc::new(common::client_with(
        &identity,
        PeerTrust::AnyIdentified,
        Limits::default(),
    ));
    let url = common::url(server.local_addr().unwrap(), agent);
    let stream_id = StreamId::from_bytes([7; 16]);

    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut stream = client
                .open_stream(&url, stream_id, StreamType::Unidirectional)
                .await
                .unwrap();
            for seq in 0..CHUNKS {
                // 8 KiB per chunk, each byte its sequence number (mod 251).
                let data = Bytes::from(vec![(seq % 251) as u8; 8 * 1024]);
                stream.chunk(data).await.unwrap();
            }
            let close = StreamCloseBody {
                status: CloseStatus::Ok,
                message: None,
            };
            stream.close(&close).await
        })
    };

    // The agent reads slowly: for the first 20 frames it waits until the
    // mailbox is full before taking one, so the server has to hold the rest.
    let mut frames = Vec::new();
    let mut max_depth = 0;
    while frames.len() < FRAMES {
        if frames.len() < 20 {
            let full = common::eventually(WAIT, || mailbox.depth() >= CAPACITY).await;
            assert!(full, "the mailbox never filled: depth {}", mailbox.depth());
        }
        max_depth = max_depth.max(mailbox.depth());
        let env = tokio::time::timeout(WAIT, mailbox.recv())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} frames", frames.len()))
            .unwrap();
        assert_eq!(
            *env.principal().id(),
            PrincipalId::Peer(identity.peer_id().fingerprint())
        );
        frames.push(env.into_parts().0);
    }
    assert!(max_depth <= CAPACITY, "mailbox held {max_depth} frames");

    let answer = tokio::time::timeout(WAIT, sender).await.unwrap().unwrap();
    assert!(
        answer.unwrap().is_none(),
        "the node refused the stream with an Error frame"
    );

    let open = StreamOpen::from_frame(&frames[0]).unwrap();
    assert_eq!((open.stream_id, open.target), (stream_id, agent));
    for (seq, frame) in frames[1..=CHUNKS as usize].iter().enumerate() {
        let chunk = StreamChunk::from_frame(frame).unwrap();
        assert_eq!(chunk.stream_id, stream_id);
        assert_eq!(chunk.seq, seq as u64, "chunks out of order");
        assert_eq!(chunk.data.len(), 8 * 1024);
        assert!(chunk.data.iter().all(|b| u64::from(*b) == seq as u64 % 251));
    }
    let last = frames.last().unwrap();
    assert_eq!(last.message_type(), MessageType::StreamClose);
    let close = mxp_protocol::StreamClose::from_frame(last).unwrap();
    assert_eq!(close.parse_body().unwrap().status, CloseStatus::Ok);
    assert!(mailbox.depth() == 0);
    assert!(
        common::eventually(WAIT, || server.stats().streams == 0).await,
        "{:?}",
        server.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_an_unresponsive_node_does_not_hold_up_calls_to_another() {
    let bus = Bus::new(64);
    let agent = AgentId::from_bytes([8; 16]);
    common::spawn_echo(bus.register(agent).unwrap());
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, Limits::default());
    let healthy = common::url(server.local_addr().unwrap(), agent);
    // A UDP port that takes packets and never answers: a node that hangs.
    let black_hole = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hanging = common::url(black_hole.local_addr().unwrap(), agent);
    // handshake_timeout is 10 s by default.
    let client = Arc::new(common::client(Limits::default()));

    let stuck = {
        let client = client.clone();
        tokio::spawn(async move {
            let body = CallBody::new("echo", json!(0));
            client.call(&hanging, &body, Duration::from_secs(30)).await
        })
    };
    // The client's first handshake packet reached the hanging node.
    let mut buf = vec![0u8; 2048];
    tokio::time::timeout(WAIT, black_hole.recv_from(&mut buf))
        .await
        .expect("the client never tried the hanging node")
        .unwrap();

    // A Call to the healthy node is answered well before that handshake gives up.
    let t0 = Instant::now();
    let result = client
        .call(
            &healthy,
            &CallBody::new("echo", json!("other node")),
            Duration::from_secs(5),
        )
        .await;
    let took = t0.elapsed();
    assert!(
        result.is_ok(),
        "a handshake with another node held this Call up for {took:?}: {result:?}"
    );
    assert!(!stuck.is_finished());
    stuck.abort();
}
