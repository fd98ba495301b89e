//! A Call answered by a stream of frames, over real QUIC on loopback: every
//! frame in order then the end; a caller that stops reading holds the agent
//! back (backpressure) and is cut off after `idle_timeout`; a caller that
//! leaves is seen by the agent; a refusal is an Error; an in-process Call
//! cannot take a stream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mxp_protocol::{
    AgentId, Call, CallBody, ErrorCode, EventBody, Flags, MessageType, TypedPayload,
};
use mxp_transport::{Bus, CallError, Envelope, Limits, Mailbox, PeerId, TransportError};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);
const AGENT: AgentId = AgentId::from_bytes([7; 16]);

/// What the streaming agent reports: frames it sent on a stream before the
/// stream closed under it.
#[derive(Debug)]
struct Closed {
    sent: u64,
}

/// Answers `count` {n} with n Events then the end, `forever` {bytes} with
/// Events of that many bytes until the caller is gone (reporting how many it
/// sent), `refuse` with an Error, and reports on `in_process` whether a
/// reply could become a stream.
fn spawn_streamer(
    mut mailbox: Mailbox,
    closed: mpsc::UnboundedSender<Closed>,
    in_process: mpsc::UnboundedSender<bool>,
) {
    tokio::spawn(async move {
        while let Some(env) = mailbox.recv().await {
            tokio::spawn(serve(env, closed.clone(), in_process.clone()));
        }
    });
}

async fn serve(
    mut env: Envelope,
    closed: mpsc::UnboundedSender<Closed>,
    in_process: mpsc::UnboundedSender<bool>,
) {
    let reply = env.take_reply().unwrap();
    let body = Call::from_frame(env.frame()).unwrap().parse_body().unwrap();
    if body.method == "refuse" {
        let _ = reply.error(ErrorCode::DENIED, "not for you");
        return;
    }
    let stream = match reply.into_stream() {
        Ok(s) => s,
        Err(reply) => {
            let _ = in_process.send(reply.can_stream());
            let _ = reply.error(ErrorCode::UNSUPPORTED, "needs a stream of its own");
            return;
        }
    };
    stream
        .respond(json!({"accepted": body.method}))
        .await
        .unwrap();
    match body.method.as_str() {
        "count" => {
            for n in 0..body.params["n"].as_u64().unwrap() {
                stream.event("test.n", json!({ "n": n })).await.unwrap();
            }
        }
        "forever" => {
            let pad = "x".repeat(body.params["bytes"].as_u64().unwrap() as usize);
            let sent = AtomicU64::new(0);
            loop {
                let n = sent.load(Ordering::Relaxed);
                if stream
                    .event("test.pad", json!({ "n": n, "pad": pad }))
                    .await
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let _ = closed.send(Closed {
                sent: sent.load(Ordering::Relaxed),
            });
        }
        "wait" => {
            stream.closed().await;
            let _ = closed.send(Closed { sent: 0 });
        }
        other => panic!("{other}"),
    }
}

struct Setup {
    server: mxp_transport::Server,
    bus: Bus,
    closed: mpsc::UnboundedReceiver<Closed>,
    in_process: mpsc::UnboundedReceiver<bool>,
}

fn setup(limits: Limits) -> Setup {
    let bus = Bus::new(64);
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let (ip_tx, in_process) = mpsc::unbounded_channel();
    spawn_streamer(bus.register(AGENT).unwrap(), closed_tx, ip_tx);
    let (server, _) = common::server(&bus, mxp_transport::PeerTrust::AnyIdentified, limits);
    Setup {
        server,
        bus,
        closed,
        in_process,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_arrives_in_order_after_the_response_then_the_stream_ends() {
    let s = setup(Limits::default());
    let url = common::url(s.server.local_addr().unwrap(), AGENT);
    let client = common::client(Limits::default());
    let mut stream = client
        .call_stream(&url, &CallBody::new("count", json!({"n": 2000})), WAIT)
        .await
        .unwrap();
    let accepted = stream.response().unwrap().parse_body().unwrap().result;
    assert_eq!(accepted, json!({"accepted": "count"}));
    let mut trace = None;
    for n in 0..2000u64 {
        let f = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended after {n} events"));
        assert_eq!(f.message_type(), MessageType::Event);
        assert!(!f.flags().contains(Flags::FINAL));
        let t = *trace.get_or_insert(f.trace_id());
        assert_eq!(f.trace_id(), t, "every frame carries the Call's trace id");
        let ev = EventBody::from_frame(&f).unwrap();
        assert_eq!(
            (ev.topic.as_str(), ev.data["n"].as_u64()),
            ("test.n", Some(n))
        );
    }
    assert!(
        tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "the agent dropped its stream: FIN"
    );
    // The connection serves Calls as before.
    let again = client
        .call_stream(&url, &CallBody::new("count", json!({"n": 1})), WAIT)
        .await
        .unwrap();
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_reads_nothing_holds_the_agent_back_and_is_cut_off() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut s = setup(limits.clone());
    let url = common::url(s.server.local_addr().unwrap(), AGENT);
    let client = common::client(limits);
    const BYTES: u64 = 64 * 1024;
    let mut stream = client
        .call_stream(
            &url,
            &CallBody::new("forever", json!({"bytes": BYTES})),
            WAIT,
        )
        .await
        .unwrap();
    // Read nothing: the node stops writing once QUIC's flow-control window
    // is full, the agent waits for room, and after idle_timeout without a
    // frame taken the node resets the stream.
    let closed = tokio::time::timeout(WAIT, s.closed.recv())
        .await
        .expect("the stalled stream was cut off")
        .unwrap();
    eprintln!("{} frames sent to a reader that read none", closed.sent);
    // quinn's stream window (1.25 MB) plus the frames queued toward it:
    // nothing like the gigabytes an unbounded sender would have queued.
    assert!(
        closed.sent * BYTES <= 4 * 1024 * 1024,
        "{} frames of 64 KiB left the agent for a reader that read none",
        closed.sent
    );
    // What was in the window can still be read; then the reset shows.
    let mut read = 0;
    let end = loop {
        match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
            Ok(Some(_)) => read += 1,
            other => break other,
        }
    };
    assert!(
        matches!(end, Err(TransportError::ConnectionLost(ref e)) if e.contains('3')),
        "{end:?} after {read} frames"
    );
    assert!(read <= closed.sent + 1, "{read} > {}", closed.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_is_seen_by_the_agent_and_the_server_lets_go() {
    let mut s = setup(Limits::default());
    let url = common::url(s.server.local_addr().unwrap(), AGENT);
    let client = common::client(Limits::default());
    let stream = client
        .call_stream(&url, &CallBody::new("wait", Value::Null), WAIT)
        .await
        .unwrap();
    assert_eq!(s.server.stats().calls_in_flight, 1);
    drop(stream);
    tokio::time::timeout(WAIT, s.closed.recv())
        .await
        .expect("the agent saw its caller leave")
        .unwrap();
    assert!(
        common::eventually(WAIT, || s.server.stats().calls_in_flight == 0).await,
        "{:?}",
        s.server.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_an_error_and_an_in_process_call_cannot_take_a_stream() {
    let mut s = setup(Limits::default());
    let url = common::url(s.server.local_addr().unwrap(), AGENT);
    let client = common::client(Limits::default());
    let e = client
        .call_stream(&url, &CallBody::new("refuse", Value::Null), WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Remote { code, message, .. } if *code == ErrorCode::DENIED && message == "not for you"),
        "{e:?}"
    );
    let me = s
        .bus
        .take_authority(PeerId::from_spki(b"node"), [])
        .unwrap()
        .node();
    let call = Call::json(AGENT, 5, &CallBody::new("count", json!({"n": 3}))).unwrap();
    let frame = call
        .to_frame(s.bus.next_message_id(), 1, Flags::EMPTY)
        .unwrap();
    let e = s.bus.call(frame, &me, WAIT).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::UNSUPPORTED, "{e}");
    assert_eq!(s.in_process.recv().await, Some(false));
}
