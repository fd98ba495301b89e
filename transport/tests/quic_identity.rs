//! Peer identity over QUIC: pinned fingerprints on both sides, the
//! development mode that identifies every peer by its certificate, and a node
//! identity that survives a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use mxp_protocol::PrincipalId;
use mxp_protocol::{AgentId, Call, CallBody, TypedPayload};
use mxp_transport::{
    Bus, CallError, Client, Limits, Mailbox, MxpUrl, NodeIdentity, PeerTrust, Server,
    TransportError,
};
use serde_json::json;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const AGENT: AgentId = AgentId::from_bytes([7; 16]);

/// Answers every Call with its params and reports who sent it.
fn spawn_recording(mut mailbox: Mailbox) -> mpsc::UnboundedReceiver<PrincipalId> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut env) = mailbox.recv().await {
            tx.send(*env.principal().id()).unwrap();
            if let Some(reply) = env.take_reply() {
                let body = Call::from_frame(env.frame()).unwrap().parse_body().unwrap();
                let _ = reply.ok(body.params);
            }
        }
    });
    rx
}

fn recording_node(
    trust: PeerTrust,
) -> (
    Server,
    NodeIdentity,
    MxpUrl,
    mpsc::UnboundedReceiver<PrincipalId>,
) {
    let bus = Bus::new(64);
    let origins = spawn_recording(bus.register(AGENT).unwrap());
    let (server, id) = common::server(&bus, trust, Limits::default());
    let url = common::url(server.local_addr().unwrap(), AGENT);
    (server, id, url, origins)
}

async fn echo(client: &Client, url: &MxpUrl) -> Result<(), CallError> {
    let r = client
        .call(url, &CallBody::new("echo", json!("hi")), WAIT)
        .await?;
    assert_eq!(r.parse_body().unwrap().result, json!("hi"));
    Ok(())
}

fn is_refused(err: &CallError) -> bool {
    matches!(
        err,
        CallError::Transport(TransportError::Connect { .. } | TransportError::ConnectionLost(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_node_serves_its_pinned_client_and_refuses_others() {
    let allowed = NodeIdentity::generate().unwrap();
    let stranger = NodeIdentity::generate().unwrap();
    let (_server, _, url, mut origins) = recording_node(PeerTrust::pinned([allowed.peer_id()]));

    let good = common::client_with(&allowed, PeerTrust::AnyIdentified, Limits::default());
    echo(&good, &url).await.unwrap();
    let bad = common::client_with(&stranger, PeerTrust::AnyIdentified, Limits::default());
    let err = echo(&bad, &url).await.unwrap_err();
    assert!(
        is_refused(&err),
        "expected a refused connection, got {err:?}"
    );
    // The pinned client is still served, and the agent only ever saw it.
    echo(&good, &url).await.unwrap();
    for _ in 0..2 {
        let origin = tokio::time::timeout(WAIT, origins.recv()).await.unwrap();
        assert_eq!(
            origin,
            Some(PrincipalId::Peer(allowed.peer_id().fingerprint()))
        );
    }
    assert!(
        origins.try_recv().is_err(),
        "the agent saw a call from the stranger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_node_whose_fingerprint_it_did_not_pin() {
    let (_server, server_id, url, _origins) = recording_node(PeerTrust::AnyIdentified);
    let me = NodeIdentity::generate().unwrap();

    let elsewhere = NodeIdentity::generate().unwrap().peer_id();
    let wary = common::client_with(&me, PeerTrust::pinned([elsewhere]), Limits::default());
    match echo(&wary, &url).await {
        Err(CallError::Transport(TransportError::Connect { .. })) => {}
        other => panic!("expected a connect error, got {other:?}"),
    }

    let pinned = common::client_with(
        &me,
        PeerTrust::pinned([server_id.peer_id()]),
        Limits::default(),
    );
    echo(&pinned, &url).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_mode_attributes_each_call_to_the_callers_certificate() {
    let (_server, server_id, url, mut origins) = recording_node(PeerTrust::AnyIdentified);
    let alice = NodeIdentity::generate().unwrap();
    let bob = NodeIdentity::generate().unwrap();
    let alice_client = common::client_with(&alice, PeerTrust::AnyIdentified, Limits::default());
    let bob_client = common::client_with(&bob, PeerTrust::AnyIdentified, Limits::default());

    // The client learns the node's identity from TLS too.
    let (_, peer) = alice_client.connect(&url).await.unwrap();
    assert_eq!(peer, server_id.peer_id());

    // Alice claims in her payload to be Bob: the agent still sees Alice.
    let claim = json!({ "origin": bob.peer_id().to_string(), "peer": bob.peer_id().to_string() });
    alice_client
        .call(&url, &CallBody::new("echo", claim), WAIT)
        .await
        .unwrap();
    let origin = tokio::time::timeout(WAIT, origins.recv()).await.unwrap();
    assert_eq!(
        origin,
        Some(PrincipalId::Peer(alice.peer_id().fingerprint()))
    );

    echo(&bob_client, &url).await.unwrap();
    let origin = tokio::time::timeout(WAIT, origins.recv()).await.unwrap();
    assert_eq!(origin, Some(PrincipalId::Peer(bob.peer_id().fingerprint())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_identity_persists_across_loads_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity");
    let first = NodeIdentity::load_or_create(&path).unwrap();
    let second = NodeIdentity::load_or_create(&path).unwrap();
    assert_eq!(first.peer_id(), second.peer_id());
    assert_eq!(first.certificate(), second.certificate());

    let bus = Bus::new(64);
    let _origins = spawn_recording(bus.register(AGENT).unwrap());
    let bind = |id: &NodeIdentity| {
        Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            id,
            PeerTrust::AnyIdentified,
            Limits::default(),
            bus.clone(),
        )
        .unwrap()
    };
    let client = common::client_with(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::pinned([first.peer_id()]),
        Limits::default(),
    );

    let before = bind(&first);
    let before_addr = before.local_addr().unwrap();
    echo(&client, &common::url(before_addr, AGENT))
        .await
        .unwrap();
    before.shutdown(Duration::from_secs(1)).await;

    // Restarted from the folder, on another port: the same fingerprint.
    let reloaded = NodeIdentity::load_or_create(&path).unwrap();
    let after = bind(&reloaded);
    let after_addr = after.local_addr().unwrap();
    assert_ne!(after_addr, before_addr);
    echo(&client, &common::url(after_addr, AGENT))
        .await
        .unwrap();

    // A node with a new identity is refused by the same client.
    let impostor = bind(&NodeIdentity::generate().unwrap());
    let err = echo(&client, &common::url(impostor.local_addr().unwrap(), AGENT))
        .await
        .unwrap_err();
    assert!(is_refused(&err), "{err:?}");
}
