//! Bounds no hostile peer can exhaust, each attack with real sockets on
//! loopback and a real attack client (raw quinn), and a legitimate peer
//! served meanwhile: connections with fresh identities from one process,
//! many connections with one identity, frames sent all but their last byte.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mxp_protocol::{AgentId, CallBody, ErrorCode, ErrorPayload, Frame, MessageType, TypedPayload};
use mxp_transport::{Bus, Client, Limits, MxpUrl, PeerTrust, Server, codes};
use quinn::VarInt;
use serde_json::json;
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(20);
const AGENT: AgentId = AgentId::from_bytes([9; 16]);

fn echo_node(limits: Limits) -> (Server, MxpUrl) {
    let bus = Bus::new(1024);
    common::spawn_echo(bus.register(AGENT).unwrap());
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, limits);
    let url = common::url(server.local_addr().unwrap(), AGENT);
    (server, url)
}

async fn echo(client: &Client, url: &MxpUrl, n: u64) {
    let r = client
        .call(url, &CallBody::new("echo", json!(n)), WAIT)
        .await
        .unwrap_or_else(|e| panic!("the legitimate peer's call {n} failed: {e}"));
    assert_eq!(r.parse_body().unwrap().result, json!(n));
}

fn is_refused(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ConnectionClosed(c)
        if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED)
}

/// The attack that held 1,024 connections and got 32 of 70 legitimate Calls
/// refused: one process opening 2,000 connections, each with a fresh
/// identity, and keeping them. With the default limits it holds at most
/// `max_connections_per_ip` (64); every other attempt is refused before its
/// TLS handshake; 70 legitimate Calls from another address are all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_with_fresh_identities_cannot_crowd_out_a_legitimate_peer() {
    let limits = Limits::default();
    let per_ip = limits.max_connections_per_ip;
    let (server, url) = echo_node(limits);
    let addr = server.local_addr().unwrap();

    // The attacker: one UDP socket on another loopback address.
    let attacker = common::raw::endpoint("127.0.0.3:0");
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let attack = {
        let (held, refused) = (held.clone(), refused.clone());
        tokio::spawn(async move {
            let mut attempts = JoinSet::new();
            for i in 0..2000 {
                if attempts.len() >= 64 {
                    attempts.join_next().await;
                }
                let config = common::raw::client_config(Some(common::raw::fresh_identity()));
                let (attacker, held, refused) = (attacker.clone(), held.clone(), refused.clone());
                attempts.spawn(async move {
                    match common::raw::try_connect(&attacker, config, addr).await {
                        Ok(conn) => held.lock().unwrap().push(conn),
                        Err(e) if is_refused(&e) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("attempt {i}: not refused but {e:?}"),
                    }
                });
            }
            while attempts.join_next().await.is_some() {}
        })
    };

    // Meanwhile: 70 legitimate Calls, each on a fresh connection from
    // 127.0.0.1 with its own identity, as many short-lived clients would.
    for n in 0..70 {
        let client = common::client(Limits::default());
        echo(&client, &url, n).await;
        client.close().await;
    }
    tokio::time::timeout(Duration::from_secs(120), attack)
        .await
        .expect("the attack did not finish")
        .unwrap();
    let held = held.lock().unwrap().len();
    assert!(held <= per_ip, "the attacker holds {held} connections");
    assert_eq!(held + refused.load(Ordering::Relaxed), 2000);
    assert!(
        server.stats().connections <= per_ip + 1,
        "{:?}",
        server.stats()
    );
    assert!(
        server.stats().refused_connections >= (2000 - per_ip) as u64,
        "{:?}",
        server.stats()
    );
    // And with the attacker's 64 still open, a new legitimate peer is served.
    echo(&common::client(Limits::default()), &url, 1000).await;
}

/// One identity may hold `max_connections_per_peer` connections; the next is
/// closed right after its handshake with application code 3, and other
/// identities are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_is_capped_at_its_connection_limit() {
    let limits = Limits {
        max_connections_per_peer: 3,
        ..Limits::default()
    };
    let (server, url) = echo_node(limits);
    let addr = server.local_addr().unwrap();
    let (chain, key) = common::raw::fresh_identity();
    let config = || common::raw::client_config(Some((chain.clone(), key.clone_key())));
    let endpoint = common::raw::endpoint("127.0.0.1:0");
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(
            common::raw::try_connect(&endpoint, config(), addr)
                .await
                .unwrap(),
        );
    }
    // Each of the three is served.
    for (i, conn) in conns.iter().enumerate() {
        let call = mxp_protocol::Call::json(AGENT, 5, &CallBody::new("echo", json!(i)))
            .unwrap()
            .to_frame(1 + i as u64, 1, mxp_protocol::Flags::EMPTY)
            .unwrap();
        let answer = exchange(conn, call.as_bytes()).await;
        assert_eq!(
            answer.message_type(),
            MessageType::Response,
            "connection {i}"
        );
    }
    // The fourth is closed with code 3 (the client may see its handshake
    // complete first: TLS 1.3 servers verify the client last).
    let reason = match common::raw::try_connect(&endpoint, config(), addr).await {
        Ok(conn) => tokio::time::timeout(WAIT, conn.closed()).await.unwrap(),
        Err(e) => e,
    };
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code,
                VarInt::from_u32(codes::CLOSE_PEER_CONNECTIONS)
            );
        }
        other => panic!("expected application close 3, got {other:?}"),
    }
    // Another identity is served meanwhile.
    echo(&common::client(Limits::default()), &url, 7).await;
    // One closes: the identity may connect again.
    conns.pop().unwrap().close(VarInt::from_u32(0), b"bye");
    let again = common::eventually_async(WAIT, || async {
        match common::raw::try_connect(&endpoint, config(), addr).await {
            Ok(c) => {
                let call = mxp_protocol::Call::json(AGENT, 5, &CallBody::new("echo", json!(9)))
                    .unwrap()
                    .to_frame(9, 9, mxp_protocol::Flags::EMPTY)
                    .unwrap();
                try_exchange(&c, call.as_bytes()).await.is_some()
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(
        again,
        "the identity could not connect again after one closed"
    );
}

async fn try_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Option<Frame> {
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(bytes).await.ok()?;
    send.finish().ok()?;
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .ok()?
        .ok()?;
    Frame::parse(Bytes::from(answer)).ok()
}

async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Frame {
    try_exchange(conn, bytes).await.expect("no answer")
}

/// Opens `n` streams on `conn`, each sending all but the last byte of a
/// Call frame declaring `payload` bytes; counts the streams answered
/// `overloaded` (retriable) in `refused`.
fn all_but_one_byte(
    conn: &quinn::Connection,
    n: usize,
    payload: u64,
    refused: Arc<AtomicUsize>,
    tasks: &mut JoinSet<()>,
) {
    for i in 0..n {
        let (conn, refused) = (conn.clone(), refused.clone());
        tasks.spawn(async move {
            let Ok((mut send, mut recv)) = conn.open_bi().await else {
                return;
            };
            let mut bytes = common::raw_header(0x10, 100 + i as u64, payload).to_vec();
            bytes.resize(32 + payload as usize + 8 - 1, 0xab);
            // A refused stream is stopped: the write fails, the answer is there.
            let _ = send.write_all(&bytes).await;
            if let Ok(answer) = recv.read_to_end(1 << 16).await
                && let Ok(frame) = Frame::parse(Bytes::from(answer))
            {
                let e = ErrorPayload::from_frame(&frame).unwrap();
                assert_eq!(e.code, ErrorCode::OVERLOADED);
                assert_eq!(e.in_reply_to, 100 + i as u64);
                assert_eq!(frame.trace_id(), 100 + i as u64);
                assert!(e.parse_body().unwrap().retriable);
                refused.fetch_add(1, Ordering::Relaxed);
            }
            // A held stream waits here until the test ends.
            let _ = send.stopped().await;
        });
    }
}

/// The attack that held 566 MB: streams each sending all but one byte of a
/// large frame. The bytes held for partly read frames stay within
/// `max_buffered_bytes_per_connection` per connection and
/// `max_buffered_bytes` in all; frames past the budget are answered
/// `overloaded` from their header alone; a legitimate peer is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_sent_frames_are_bounded_per_connection_and_per_node() {
    const MIB: u64 = 1 << 20;
    let frame = MIB + 40;
    let limits = Limits {
        max_frame_payload: MIB,
        max_buffered_bytes_per_connection: 4 * MIB,
        max_buffered_bytes: 6 * MIB,
        // The held streams must outlive the test's checks.
        request_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let (server, url) = echo_node(limits);
    let addr = server.local_addr().unwrap();
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        // Samples the node's count while the attack runs.
        let (peak, stop) = (peak.clone(), stop.clone());
        let server = Arc::new(server);
        let s = server.clone();
        let h = tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(s.buffered_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        (server, h)
    };
    let server = watcher.0.clone();

    let mut tasks = JoinSet::new();
    // Connection A: 32 streams; 3 frames fit its 4 MiB.
    let a = common::raw::connect(addr).await;
    let refused_a = Arc::new(AtomicUsize::new(0));
    all_but_one_byte(&a, 32, MIB, refused_a.clone(), &mut tasks);
    assert!(
        common::eventually(WAIT, || refused_a.load(Ordering::Relaxed) == 29
            && server.buffered_bytes() == 3 * frame)
        .await,
        "connection A: {} refused, {} bytes held",
        refused_a.load(Ordering::Relaxed),
        server.buffered_bytes()
    );
    // Connection B: 32 streams; the node's 6 MiB has room for 2 more.
    let b = common::raw::connect(addr).await;
    let refused_b = Arc::new(AtomicUsize::new(0));
    all_but_one_byte(&b, 32, MIB, refused_b.clone(), &mut tasks);
    assert!(
        common::eventually(WAIT, || refused_b.load(Ordering::Relaxed) == 30
            && server.buffered_bytes() == 5 * frame)
        .await,
        "connection B: {} refused, {} bytes held",
        refused_b.load(Ordering::Relaxed),
        server.buffered_bytes()
    );
    assert_eq!(server.read_budget_refusals(), 59);
    // A legitimate peer's small Call still fits.
    echo(&common::client(Limits::default()), &url, 1).await;
    stop.store(true, Ordering::Relaxed);
    watcher.1.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 6 * MIB, "the node held {peak} bytes");
    // The attacker leaves: every byte is given back. (Its CONNECTION_CLOSE
    // may be lost on a loaded loopback, whose socket buffers the attack
    // filled; then the node's idle timeout ends the connections: wait past it.)
    a.close(VarInt::from_u32(0), b"");
    b.close(VarInt::from_u32(0), b"");
    let gone = Limits::default().idle_timeout * 2;
    assert!(
        common::eventually(gone, || server.buffered_bytes() == 0).await,
        "{} bytes still held",
        server.buffered_bytes()
    );
    tasks.abort_all();
}
