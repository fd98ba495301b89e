//! Attack: eight concurrent Calls, each a 16 MiB JSON body of small array
//! elements, at a real `mxp-node` child on embedded defaults. Before byte
//! budgets and bounded parsing this took the node to 2.6 GiB of RSS (about
//! 350 MB a Call); the node must now stay under 512 MiB and keep answering.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_transport::{Client, Limits, MxpUrl, NodeIdentity, PeerTrust};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_mxp-node");
const MIB: usize = 1 << 20;

struct Node {
    child: Child,
    url: MxpUrl,
    agent: AgentId,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path) -> Node {
    let mut child = Command::new(BIN)
        .env("MXP_NODE__LISTEN", "127.0.0.1:0")
        .env("MXP_NODE__DATA_DIR", data)
        .env("MXP_METRICS__LISTEN", "")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut url, mut agent) = (None, None);
    let end = Instant::now() + Duration::from_secs(30);
    while url.is_none() || agent.is_none() {
        let line = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("mxp-node printed its URL and agent");
        if let Some(rest) = line.strip_prefix("mxp-node listening on ") {
            url = rest
                .split_whitespace()
                .next()
                .map(|u| u.parse::<MxpUrl>().unwrap());
        }
        if let Some(rest) = line.strip_prefix("agent demo: ") {
            agent = Some(rest.trim().parse().unwrap());
        }
    }
    Node {
        child,
        url: url.unwrap(),
        agent: agent.unwrap(),
    }
}

/// Peak resident set of `pid`, from /proc (Linux).
fn peak_rss(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `{"method":"echo","params":[1,1,1,…]}` of about `len` bytes.
fn small_elements_body(len: usize) -> Bytes {
    let mut body = Vec::with_capacity(len + 64);
    body.extend_from_slice(br#"{"method":"echo","params":[1"#);
    while body.len() < len - 2 {
        body.extend_from_slice(b",1");
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_16_mib_bodies_stay_under_512_mib_and_the_node_keeps_answering() {
    if peak_rss(std::process::id()).is_none() {
        eprintln!("no /proc here: the RSS bound cannot be read; skipping");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let node = start(data.path());
    let url = node.url.clone().with_agent(node.agent);
    let limits = Limits {
        peer_rate_per_sec: 1e6,
        peer_burst: 1e6,
        ..Limits::default()
    };
    // The largest frame payload is 16 MiB: the body fills it, less the
    // 20-byte Call prefix.
    let body = small_elements_body(16 * MIB - 64);
    let attackers: Vec<_> = (0..8)
        .map(|_| {
            let client = Arc::new(
                Client::new(
                    &NodeIdentity::generate().unwrap(),
                    PeerTrust::AnyIdentified,
                    limits.clone(),
                )
                .unwrap(),
            );
            let (url, body, agent) = (url.clone(), body.clone(), node.agent);
            tokio::spawn(async move {
                client
                    .call_raw(&url, agent, body, Duration::from_secs(60))
                    .await
            })
        })
        .collect();
    // Meanwhile a legitimate caller is answered.
    let me = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        limits.clone(),
    )
    .unwrap();
    let r = me
        .call(
            &url,
            &CallBody::new("echo", json!({"still": "here"})),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(r.parse_body().unwrap().result, json!({"still": "here"}));
    for a in attackers {
        // Each is refused: too many JSON values, or over a byte budget.
        let err = a
            .await
            .unwrap()
            .expect_err("a 16 MiB body of 8M values is refused");
        assert!(
            [ErrorCode::INVALID_PAYLOAD, ErrorCode::OVERLOADED].contains(&err.code()),
            "{err}"
        );
    }
    let r = me
        .call(
            &url,
            &CallBody::new("echo", json!(1)),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(r.parse_body().unwrap().result, json!(1));
    let peak = peak_rss(node.child.id()).unwrap();
    eprintln!("peak RSS of the attacked node: {} MiB", peak / MIB);
    assert!(
        peak < 512 * MIB,
        "peak RSS {} MiB, over the 512 MiB bound",
        peak / MIB
    );
}
