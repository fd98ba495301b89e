//! The live audit log as an operator meets it, over real processes: an
//! `mxp-node` child with its store in a temporary data folder, the `mxp`
//! CLI as a child (`mxp audit follow`, `mxp audit checkpoint`), and Calls
//! over real QUIC from this process.
//!
//! Covered: the audit key made once (mode 0600) and kept across restarts,
//! a key file others may read refused at start; `mxp audit follow`
//! printing verified records, refusing a node that presents another key
//! than `--vkey`, and naming a sequence number that does not exist; a
//! follower that survives the node being killed (SIGKILL) and restarted,
//! resuming with no gap and no repeat.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Lines, MXP_BIN, NODE_BIN};

use mxp_protocol::CallBody;
use mxp_transport::{Client, Limits, MxpUrl, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(45);

/// A child killed when dropped (a test that fails leaves nothing running).
struct Proc {
    child: Child,
    out: Lines,
    err: Lines,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Lines::read(child.stdout.take().unwrap());
        let err = Lines::read(child.stderr.take().unwrap());
        Proc { child, out, err }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for the exit; its code, stdout and stderr.
    fn finish(mut self) -> (i32, Vec<String>, Vec<String>) {
        let out = self.out.rest();
        let err = self.err.rest();
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), out, err)
    }
}

struct Env {
    root: tempfile::TempDir,
    port: u16,
    operator: String,
}

impl Env {
    fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        // A port free now, kept across the node's restarts.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let id = NodeIdentity::load_or_create(&root.path().join("cli")).unwrap();
        Env {
            port,
            operator: id.peer_id().to_string(),
            root,
        }
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn url(&self) -> String {
        format!("mxp://127.0.0.1:{}", self.port)
    }

    fn node(&self) -> Command {
        let mut cmd = Command::new(NODE_BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MXP_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("MXP_NODE__LISTEN", format!("127.0.0.1:{}", self.port))
            .env("MXP_NODE__DATA_DIR", self.data())
            .env("MXP_NODE__OPERATORS", format!("[\"{}\"]", self.operator))
            .env("MXP_METRICS__LISTEN", "")
            .env("MXP_AUDIT__CHECKPOINT_EVERY_EVENTS", "5")
            .env("MXP_AUDIT__CHECKPOINT_EVERY_MS", "200")
            .env("RUST_LOG", "warn");
        cmd
    }

    /// Starts the node; its process and the audit key it printed.
    fn start(&self) -> (Proc, String) {
        let mut p = Proc::spawn(self.node());
        p.out
            .wait("listening", |l| l.starts_with("mxp-node listening on "));
        let key = p
            .out
            .wait("with the audit key", |l| {
                l.starts_with("audit checkpoint key: ")
            })
            .trim_start_matches("audit checkpoint key: ")
            .to_owned();
        (p, key)
    }

    fn mxp(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(MXP_BIN);
        cmd.args(args)
            .args([
                "--identity-dir",
                self.root.path().join("cli").to_str().unwrap(),
            ])
            .env("MXP_CONFIG_DIR", self.root.path().join("cli-config"));
        cmd
    }

    fn run(&self, args: &[&str]) -> (i32, Vec<String>, Vec<String>) {
        Proc::spawn(self.mxp(args)).finish()
    }
}

/// `n` echo Calls to the node's demo agent, as a stranger.
fn echoes(node: &mut Proc, n: u64) {
    let agent: MxpUrl = node
        .out
        .wait("the try line", |l| l.starts_with("try: mxp call "))
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Client::new(
            &NodeIdentity::generate().unwrap(),
            PeerTrust::AnyIdentified,
            Limits::default(),
        )
        .unwrap();
        for i in 0..n {
            c.call(&agent, &CallBody::new("echo", json!({ "i": i })), DEADLINE)
                .await
                .unwrap();
        }
        c.close().await;
    });
}

/// The sequence number of a `mxp audit follow --json` record line.
fn seq_of(line: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(line).ok()?;
    v.pointer("/record/seq")?.as_u64()
}

#[test]
fn follow_verifies_the_live_log_and_resumes_after_the_node_is_killed() {
    let env = Env::new();
    let (mut node, key) = env.start();
    let key_file = env.data().join("identity").join("audit.key");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600, "{}", key_file.display());
    assert!(key.contains("/audit+"), "{key}");
    echoes(&mut node, 3);
    let url = env.url();

    // A bounded follow prints verified records from the first one.
    let (code, out, err) = env.run(&["audit", "follow", &url, "--count", "6", "--vkey", &key]);
    assert_eq!(code, 0, "{out:?} {err:?}");
    let records: Vec<&String> = out
        .iter()
        .filter(|l| !l.starts_with("checkpoint "))
        .collect();
    assert_eq!(records.len(), 6, "{out:?}");
    for (i, l) in records.iter().enumerate() {
        assert!(l.starts_with(&format!("{i} ")), "{l}");
    }
    assert!(records[0].contains("node_config"), "{}", records[0]);

    // Another key than the one pinned: refused, exit 1.
    let other = mxp_governance::audit::note::NoteSigner::new("x/audit", &[5; 32])
        .unwrap()
        .verifier()
        .to_vkey();
    let (code, _, err) = env.run(&["audit", "follow", &url, "--vkey", &other]);
    assert_eq!(code, 1, "{err:?}");
    assert!(err.join("\n").contains("not the pinned"), "{err:?}");
    // A sequence number the log does not have: exit 3, naming it.
    let (code, _, err) = env.run(&["audit", "follow", &url, "--from", "999999"]);
    assert_eq!(code, 3, "{err:?}");
    assert!(err.join("\n").contains("no audit record 999999"), "{err:?}");
    // `mxp audit checkpoint` names the same key.
    let (code, out, err) = env.run(&["audit", "checkpoint", &url]);
    assert_eq!(code, 0, "{err:?}");
    let cp: Value = serde_json::from_str(&out.join("\n")).unwrap();
    assert_eq!(cp["vkey"], json!(key));

    // A follower that keeps running while the node is killed and restarted.
    let mut follower = Proc::spawn(env.mxp(&["audit", "follow", &url, "--vkey", &key, "--json"]));
    follower
        .out
        .wait("a first record", |l| seq_of(l) == Some(0));
    node.signal("-KILL");
    drop(node);
    let (mut node, again) = env.start();
    assert_eq!(again, key, "the audit key is kept across restarts");
    echoes(&mut node, 4);
    // Every record the restarted node holds reaches the follower.
    let head = {
        let (code, out, err) = env.run(&["audit", "tail", &url, "-n", "1"]);
        assert_eq!(code, 0, "{err:?}");
        out[0]
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    follower.out.wait("the last record after the restart", |l| {
        seq_of(l) == Some(head)
    });
    follower
        .err
        .wait("a resumption", |l| l.contains("resumed from record"));
    let seqs: Vec<u64> = follower
        .out
        .seen()
        .iter()
        .filter_map(|l| seq_of(l))
        .collect();
    assert_eq!(
        seqs,
        (0..=head).collect::<Vec<_>>(),
        "no gap and no repeat across the crash"
    );
    let checkpoints = follower
        .out
        .seen()
        .iter()
        .filter(|l| l.contains("\"checkpoint\""))
        .count();
    assert!(checkpoints >= 1, "{:?}", follower.out.seen());
    drop(follower);
    node.signal("-TERM");
    let (code, _, _) = node.finish();
    assert_eq!(code, 0);
}

#[test]
fn an_audit_key_others_may_read_is_refused_at_start() {
    let env = Env::new();
    let (node, _) = env.start();
    node.signal("-TERM");
    assert_eq!(node.finish().0, 0);
    let key_file = env.data().join("identity").join("audit.key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (code, _, err) = Proc::spawn(env.node()).finish();
    assert_eq!(code, 2, "{err:?}");
    let text = err.join("\n");
    assert!(
        text.contains("audit.key") && text.contains("chmod 600"),
        "{text}"
    );
    // A witness key that is not one: exit 2, naming the setting.
    let mut cmd = env.node();
    cmd.env("MXP_AUDIT__WITNESSES", "[\"not-a-key\"]");
    let (code, _, err) = Proc::spawn(cmd).finish();
    assert_eq!(code, 2, "{err:?}");
    assert!(err.join("\n").contains("audit.witnesses[0]"), "{err:?}");
}
