//! Shared test scaffolding: a node on loopback with an echo agent.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::time::Duration;

use mxp_protocol::AgentId;
use mxp_transport::{
    Bus, Client, Envelope, Limits, Mailbox, MxpUrl, NodeIdentity, PeerTrust, Server,
};

/// A server on 127.0.0.1:0 serving `bus`.
pub fn server(bus: &Bus, trust: PeerTrust, limits: Limits) -> (Server, NodeIdentity) {
    let id = NodeIdentity::generate().unwrap();
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &id,
        trust,
        limits,
        bus.clone(),
    )
    .unwrap();
    (server, id)
}

/// A client in development trust mode.
pub fn client(limits: Limits) -> Client {
    Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        limits,
    )
    .unwrap()
}

pub fn url(addr: SocketAddr, agent: AgentId) -> MxpUrl {
    MxpUrl::new(addr.ip().to_string(), addr.port(), Some(agent))
}

/// Answers every Call with its own params as the result, concurrently.
pub fn spawn_echo(mut mailbox: Mailbox) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(env) = mailbox.recv().await {
            tokio::spawn(answer_echo(env));
        }
    })
}

async fn answer_echo(env: Envelope) {
    let Some(reply) = env.reply else { return };
    let call = <mxp_protocol::Call as mxp_protocol::TypedPayload>::from_frame(&env.frame).unwrap();
    let body = call.parse_body().unwrap();
    if body.method == "sleep" {
        let ms = body.params.as_u64().unwrap_or(60_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let _ = reply.ok(body.params);
}

/// Polls `f` until it is true or `deadline` passes.
pub async fn eventually(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
