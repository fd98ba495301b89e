//! `echo_node`: the smallest useful MXP node. One agent, reachable over QUIC.
//!
//! ```text
//! cargo run -p mxp-examples --example echo_node -- [--listen 127.0.0.1:9000] [--data-dir ./mxp-data]
//! ```
//!
//! It keeps its identity (key and certificate) in `<data-dir>/identity`,
//! accepts any client key (development mode: clients are identified, not
//! trusted), and serves one agent with the well-known id [`ECHO_AGENT`],
//! `ec400000-0000-4000-8000-000000000001`:
//!
//! * `{"method": "echo", "params": X}` answers with result `X`;
//! * `{"method": "status"}` answers with a small status object;
//! * any other method gets an Error `unsupported` (102). The Call itself is
//!   well-formed, so `invalid_payload` (101, "the payload does not match its
//!   schema") would wrongly tell the caller its encoder is broken; this agent
//!   simply does not offer that method. A body that does not parse as
//!   `{"method": ..., "params": ...}` does get `invalid_payload`.
//!
//! Events sent to the agent (`mxp event`) are printed. Ctrl-C stops the node.
//!
//! `mxp` is this workspace's command-line tool: `cargo run -p mxp-runtime
//! --bin mxp -- call ...`, or install it with `cargo install --path runtime`.

use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mxp_protocol::{AgentId, Call, ErrorCode, EventBody, MessageType, TypedPayload};
use mxp_transport::{
    Bus, Envelope, Limits, Mailbox, MxpUrl, NodeIdentity, PeerTrust, Reply, Server,
};
use serde_json::json;

/// The echo agent's id, the same on every run so the `mxp call` line can be
/// pasted: `ec400000-0000-4000-8000-000000000001`.
const ECHO_AGENT: AgentId = AgentId::from_bytes([
    0xec, 0x40, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
]);

const USAGE: &str = "usage: echo_node [--listen ADDR] [--data-dir DIR]
  --listen ADDR    UDP address to serve QUIC on (default 127.0.0.1:9000)
  --data-dir DIR   folder of the node's data; identity in DIR/identity (default ./mxp-data)";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    // 1. Arguments: two options, parsed by hand.
    let mut listen: SocketAddr = "127.0.0.1:9000".parse()?;
    let mut data_dir = PathBuf::from("mxp-data");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or(USAGE)?;
                listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value:?}: {e}"))?;
            }
            "--data-dir" => data_dir = args.next().ok_or(USAGE)?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }

    // 2. The node's identity: created on first run, the same key afterwards.
    let identity = NodeIdentity::load_or_create(&data_dir.join("identity"))?;

    // 3. The bus, the agent's mailbox on it, and the QUIC server in front.
    let bus = Bus::new(1024);
    let mailbox = bus.register(ECHO_AGENT)?;
    let server = Server::bind(
        listen,
        &identity,
        PeerTrust::AnyIdentified,
        Limits::default(),
        bus.clone(),
    )?;
    let agent = tokio::spawn(echo_agent(mailbox));

    // 4. Tell the operator how to reach it.
    let addr = server.local_addr()?;
    let host = match addr.ip() {
        ip if !ip.is_unspecified() => ip.to_string(),
        IpAddr::V4(_) => "127.0.0.1".to_owned(),
        IpAddr::V6(_) => "::1".to_owned(),
    };
    let url = MxpUrl::new(host, addr.port(), Some(ECHO_AGENT));
    let fingerprint = identity.peer_id();
    println!("echo node listening on {addr} (QUIC, development trust mode)");
    println!("node fingerprint: {fingerprint}");
    println!("try:");
    println!("  mxp call {url} '{{\"method\":\"echo\",\"params\":{{\"hello\":\"world\"}}}}'");
    println!("  mxp call --server-fingerprint {fingerprint} {url} '{{\"method\":\"status\"}}'");
    println!("  mxp event {url} --topic greeting '{{\"hello\":\"world\"}}'");
    println!("Ctrl-C stops the node.");

    // 5. Run until Ctrl-C, then close every connection cleanly.
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    server.shutdown(Duration::from_secs(2)).await;
    agent.abort();
    Ok(())
}

/// The agent: reads its mailbox and answers each Call.
async fn echo_agent(mut mailbox: Mailbox) {
    let started = Instant::now();
    let mut calls: u64 = 0;
    while let Some(envelope) = mailbox.recv().await {
        match envelope.frame().message_type() {
            MessageType::Call => {
                calls += 1;
                answer(envelope, started, calls);
            }
            MessageType::Event => match EventBody::from_frame(envelope.frame()) {
                Ok(event) => println!("event {}: {}", event.topic, event.data),
                Err(e) => println!("unreadable event: {e}"),
            },
            other => println!("ignoring a {other} frame"),
        }
    }
}

/// Answers one Call: echo, status, or an Error.
fn answer(envelope: Envelope, started: Instant, calls: u64) {
    let (frame, _sender, reply) = envelope.into_parts();
    let Some(reply) = reply else { return };
    let body = match Call::from_frame(&frame).and_then(|call| call.parse_body()) {
        Ok(body) => body,
        Err(e) => return send_error(reply, ErrorCode::INVALID_PAYLOAD, e.to_string()),
    };
    let result = match body.method.as_str() {
        "echo" => body.params,
        "status" => json!({
            "agent": ECHO_AGENT.to_string(),
            "uptime_secs": started.elapsed().as_secs(),
            "calls": calls,
            "version": env!("CARGO_PKG_VERSION"),
        }),
        other => {
            let message = format!("the echo agent has no method {other:?}; it knows echo, status");
            return send_error(reply, ErrorCode::UNSUPPORTED, message);
        }
    };
    if let Err(e) = reply.ok(result) {
        println!("cannot answer: {e}");
    }
}

fn send_error(reply: Reply, code: ErrorCode, message: String) {
    if let Err(e) = reply.error(code, message) {
        println!("cannot answer: {e}");
    }
}
