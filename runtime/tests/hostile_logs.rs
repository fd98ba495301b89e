//! Attack: an agent name with a newline and terminal escapes, registered at
//! a real `mxp-node` child. Before, the node's log showed a forged
//! "operator changed agent lifecycle" line and raw escapes; peer-controlled
//! strings are now escaped in every log line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mxp_protocol::{AgentId, AgentRegister, Flags, TypedPayload};
use mxp_transport::{Client, Limits, MxpUrl, NODE_AGENT, NodeIdentity, PeerTrust};

const BIN: &str = env!("CARGO_BIN_EXE_mxp-node");
const FORGED: &str =
    "2026-01-01T00:00:00.000000Z  INFO mxp_actors::node: operator changed agent lifecycle";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_controlled_names_cannot_forge_log_lines_or_drive_the_terminal() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env("MXP_NODE__LISTEN", "127.0.0.1:0")
        .env("MXP_NODE__DATA_DIR", data.path())
        .env("MXP_METRICS__LISTEN", "")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    let mut lines = Vec::new();
    let next = |lines: &mut Vec<String>, want: &dyn Fn(&str) -> bool| -> String {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let l = rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no such line in {lines:#?}"));
            lines.push(l.clone());
            if want(&l) {
                return l;
            }
        }
    };
    let listening = next(&mut lines, &|l| l.starts_with("mxp-node listening on "));
    let url: MxpUrl = listening
        .strip_prefix("mxp-node listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let evil = format!("evil\n{FORGED}\u{1b}[2J\u{1b}]0;owned\u{7}");
    let reg = AgentRegister {
        agent_id: AgentId::from_bytes([0x5e; 16]),
        name: evil,
        capabilities: vec!["x\u{1b}[31m".into()],
        endpoint: SocketAddrV4::new([127, 0, 0, 1].into(), 1),
    };
    let c = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();
    let id = c.next_message_id();
    let answer = c
        .exchange(
            &url.clone().with_agent(NODE_AGENT),
            reg.to_frame(id, id, Flags::EMPTY).unwrap(),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    mxp_transport::interpret_answer(&answer, id).expect("registered");
    let logged = next(&mut lines, &|l| l.contains("remote agent registered"));
    assert!(
        logged.contains("evil\\n"),
        "the newline is escaped: {logged}"
    );
    let _ = child.kill();
    let _ = child.wait();
    // Whatever else was printed before the kill, nothing forged and no escape.
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    for l in &lines {
        assert!(!l.starts_with(FORGED), "a forged line: {l}");
        assert!(!l.contains('\u{1b}'), "a raw escape: {l:?}");
        assert!(!l.contains('\u{7}'), "a raw bell: {l:?}");
    }
}
