//! Runs the `governance_agent` example as a child process against a real
//! node (in this process: QUIC on loopback, a store in a temporary
//! folder, the configuration a node file would give): it follows the log,
//! cosigns checkpoints as a witness the node takes, and, when a stranger's
//! denied control Calls burst, turns the kill switch on.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mxp_governance::audit::note::Cosigner;
use mxp_protocol::{CallBody, ErrorCode};
use mxp_runtime::node::{self, Config};
use mxp_transport::{Client, Limits, NODE_AGENT, NodeIdentity, PeerTrust};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(30);

/// `target/<profile>/examples/governance_agent`, built by `cargo test`.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("governance_agent{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test -p mxp-examples`, which builds the examples",
        path.display()
    );
    path
}

/// The child, its stdout lines, and what it printed so far; killed when
/// dropped.
struct Agent {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Agent {
    /// The next line that satisfies `pred`, within [`DEADLINE`].
    async fn line_where(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(end, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                _ => panic!(
                    "the agent printed no line {what}; it printed {:?}",
                    self.seen
                ),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_witnesses_and_trips_the_kill_switch_on_a_denial_burst() {
    let root = tempfile::tempdir().unwrap();
    let agent_dir = root.path().join("agent");
    let identity = NodeIdentity::load_or_create(&agent_dir).unwrap();
    // The witness seed the agent will use, so the node can list its key.
    let seed_file = root.path().join("witness.key");
    std::fs::write(&seed_file, [7u8; 32]).unwrap();
    let witness = Cosigner::new("governance-agent/witness", &[7u8; 32])
        .unwrap()
        .verifier()
        .to_vkey();

    // A node whose operator is the agent and whose witness is its key.
    let env = [
        ("MXP_NODE__LISTEN", "127.0.0.1:0".to_owned()),
        (
            "MXP_NODE__DATA_DIR",
            root.path().join("node").display().to_string(),
        ),
        (
            "MXP_NODE__OPERATORS",
            format!("[\"{}\"]", identity.peer_id()),
        ),
        ("MXP_METRICS__LISTEN", String::new()),
        ("MXP_AUDIT__WITNESSES", format!("[\"{witness}\"]")),
        ("MXP_AUDIT__CHECKPOINT_EVERY_EVENTS", "5".to_owned()),
        ("MXP_AUDIT__CHECKPOINT_EVERY_MS", "200".to_owned()),
    ];
    let config = Config::load(None, env.iter().map(|(k, v)| ((*k).to_owned(), v.clone()))).unwrap();
    let prepared = node::prepare(&config).unwrap();
    let vkey = prepared.audit_vkey.clone();
    let n = node::start(prepared).await.unwrap();
    let url = n.url().to_string();

    let mut child = Command::new(example_binary())
        .args([
            url.as_str(),
            "--identity-dir",
            agent_dir.to_str().unwrap(),
            "--vkey",
            &vkey,
            "--witness-key",
            seed_file.to_str().unwrap(),
            "--denials",
            "5",
            "--window",
            "60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut agent = Agent {
        child,
        lines,
        seen: Vec::new(),
    };
    agent
        .line_where("witness key", |l| {
            l == format!("witness key: {witness} (list it in the node's [audit] witnesses)")
        })
        .await;
    agent
        .line_where("following", |l| l.starts_with("following "))
        .await;
    // The node's first record, verified.
    agent
        .line_where("record 0", |l| l.starts_with("record 0 node_config"))
        .await;

    // A stranger probes the node's control: every Call is denied and
    // recorded as a denial.
    let stranger = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();
    let control = n.url().clone().with_agent(NODE_AGENT);
    for _ in 0..6 {
        let e = stranger
            .call(
                &control,
                &CallBody::new("killswitch.set", json!({ "on": false })),
                DEADLINE,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::DENIED, "{e}");
    }
    agent
        .line_where("a denial burst", |l| {
            l.starts_with("denial burst: 5 denials")
        })
        .await;
    let on = agent
        .line_where("the kill switch on", |l| l.starts_with("kill switch "))
        .await;
    assert_eq!(on, "kill switch ON (confirmed by every executor: true)");
    let status = n.control("node.status", Value::Null).await.unwrap();
    assert_eq!(status["kill_switch"], json!(true), "{status}");

    // As a witness: a checkpoint verified against the records, and the
    // node took its cosignature.
    let line = agent
        .line_where("a cosigned checkpoint", |l| {
            l.starts_with("checkpoint ") && l.contains("cosigned, the node lists")
        })
        .await;
    assert!(line.contains("verified against the records"), "{line}");
    let size: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let cp = n
        .control("audit.checkpoint", json!({ "size": size }))
        .await
        .unwrap();
    assert_eq!(
        cp["cosigned_by"],
        json!(["governance-agent/witness"]),
        "{cp}"
    );
    drop(agent);
    n.shutdown(Duration::from_secs(1)).await;
}
