//! The flow rule on a real node built from its configuration, called over
//! QUIC on loopback, with a real file root, a real loopback HTTP server
//! that counts connections, Cedar policy files and the node's audit log:
//!
//! * reading a file, then fetching a URL that carries its content, is
//!   denied, the denial names the source step, the server sees no
//!   connection, and the audit log holds the denial with its source;
//! * the same fetch without the content goes through (content mode), and
//!   is denied in run mode;
//! * a flow the policy permits (files under `public/`) goes through;
//! * a secret by reference reaching `http.fetch` is denied unless permitted;
//! * a skill that reads a file through its host and then fetches is denied
//!   at its second host call: a skill is opaque, so what it read reaches
//!   everything it sends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::write_skill;
use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_runtime::node::{self, Config};
use mxp_transport::{Client, Limits, NodeIdentity, PeerTrust};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(20);
const SECRET_TEXT: &str = "quarterly revenue 4,211,009 is embargoed until Friday";

/// A loopback HTTP server answering 200 to anything, counting connections.
async fn sink() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    (port, accepted)
}

/// The default node and tool policies, the tools, and `extra`.
fn policies(dir: &Path, extra: &str) -> PathBuf {
    common::policies(
        dir,
        &format!(
            r#"@id("test.tools")
permit (
  principal,
  action in [Mxp::Action::"tool:fs.read", Mxp::Action::"tool:http.fetch", Mxp::Action::"tool:skill.relay"],
  resource
);
{extra}"#
        ),
    )
}

/// A skill whose `run` reads the file its input names (`fs.read` with the
/// input as arguments), then fetches `fetch_args` (a fixed request that
/// carries none of the file): the answer is the fetch's result or the
/// host's negative code.
fn relay_wat(fetch_args: &str) -> String {
    let escaped = fetch_args.replace('"', "\\22");
    format!(
        r#"(module
          (import "mxp" "call_tool" (func $call (param i32 i32 i32 i32) (result i64)))
          (memory (export "memory") 1)
          (global $bump (mut i32) (i32.const 4096))
          (func (export "alloc") (param $len i32) (result i32)
            (local $p i32)
            (local.set $p (global.get $bump))
            (global.set $bump (i32.add (global.get $bump) (local.get $len)))
            (local.get $p))
          (data (i32.const 16) "fs.read")
          (data (i32.const 32) "http.fetch")
          (data (i32.const 64) "{escaped}")
          (func (export "run") (param $p i32) (param $l i32) (result i64)
            (drop (call $call (i32.const 16) (i32.const 7) (local.get $p) (local.get $l)))
            (call $call (i32.const 32) (i32.const 10) (i32.const 64) (i32.const {len}))))"#,
        len = fetch_args.len()
    )
}

struct Flow {
    node: mxp_actors::Node,
    agent: AgentId,
    client: Client,
    port: u16,
    accepted: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

async fn start(mode: &str, extra_policy: &str) -> Flow {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    let files = t.join("files");
    std::fs::create_dir_all(files.join("public")).unwrap();
    std::fs::write(files.join("notes.txt"), SECRET_TEXT).unwrap();
    std::fs::write(
        files.join("public/menu.txt"),
        "soup of the day is pumpkin with toasted seeds",
    )
    .unwrap();
    let secrets = t.join("secrets.toml");
    std::fs::write(&secrets, "API_KEY = \"k-0123456789abcdef\"\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (port, accepted) = sink().await;
    let skills = t.join("skills");
    let relay = write_skill(
        &skills,
        "relay",
        &relay_wat(&format!(r#"{{"url":"http://127.0.0.1:{port}/ping"}}"#)),
        &["fs.read", "http.fetch"],
    );
    let policy = policies(t, extra_policy);
    let text = format!(
        r#"[node]
listen = "127.0.0.1:0"
data_dir = {data:?}
[metrics]
listen = ""
[governance]
policy_dir = {policy:?}
flow_mode = "{mode}"
[broker]
fs_root = {files:?}
secrets_file = {secrets:?}
http_allow = ["127.0.0.1:{port}"]
http_allowed_classes = ["loopback"]
[skills]
dir = {skills:?}
quarantine_dir = {quarantine:?}
pins = {{ relay = "{relay}" }}
[[agents]]
name = "worker"
tools = ["fs.read", "http.fetch", "skill.relay"]
[[agents.rules]]
method = "share"
steps = [
  {{ tool = "fs.read", args = {{ path = "$params.path" }} }},
  {{ tool = "http.fetch", args = {{ url = "http://127.0.0.1:{port}/upload?text=${{steps.0.content}}" }} }},
]
[[agents.rules]]
method = "ping_after_read"
steps = [
  {{ tool = "fs.read", args = {{ path = "$params.path" }} }},
  {{ tool = "http.fetch", args = {{ url = "http://127.0.0.1:{port}/ping" }} }},
]
[[agents.rules]]
method = "fetch"
steps = [{{ tool = "http.fetch", args = "$params" }}]
[[agents.rules]]
method = "relay"
steps = [{{ tool = "skill.relay", args = {{ input = {{ path = "$params.path" }} }} }}]
"#,
        data = t.join("data"),
        quarantine = t.join("quarantine"),
    );
    let config = Config::load(Some(("node.toml", &text)), []).unwrap();
    let prepared = node::prepare(&config).unwrap();
    let agent = prepared.agents[0].0;
    let node = node::start(prepared).await.unwrap();
    let client = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();
    Flow {
        node,
        agent,
        client,
        port,
        accepted,
        _dir: dir,
    }
}

impl Flow {
    async fn call(&self, method: &str, params: Value) -> Result<Value, (ErrorCode, String)> {
        let body = CallBody::new(method, params);
        match self
            .client
            .call(&self.node.url().clone().with_agent(self.agent), &body, T)
            .await
        {
            Ok(r) => Ok(r.parse_body().unwrap().result),
            Err(e) => Err((e.code(), e.to_string())),
        }
    }

    async fn audit(&self) -> Vec<Value> {
        let a = self
            .node
            .control("audit.read", json!({"from": 0, "limit": 1000}))
            .await
            .unwrap();
        a["records"].as_array().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_file_carried_into_a_fetch_is_denied_naming_its_step() {
    let f = start("content", "").await;
    let (code, text) = f
        .call("share", json!({"path": "notes.txt"}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");
    assert!(
        text.contains("step 0 (fs.read \"notes.txt\") reaches its arguments"),
        "{text}"
    );
    assert!(text.contains("flow"), "{text}");
    assert_eq!(f.connections(), 0, "the denied fetch reached the server");

    // The audit log holds the read, and the fetch's denial naming its source.
    let records = f.audit().await;
    let denial = records
        .iter()
        .find(|r| {
            r["kind"]["name"] == "policy_decision"
                && r["kind"]["effect"] == "deny"
                && r["data"]["tool"] == "http.fetch"
        })
        .expect("the flow denial is in the audit log");
    assert_eq!(denial["data"]["flow"]["source"], "fs.read:notes.txt");
    assert_eq!(denial["data"]["flow"]["step"], 0);
    assert_eq!(
        denial["kind"]["policy_ids"],
        json!(["flow_not_permitted"]),
        "{denial}"
    );
    // No token was minted for it and nothing ran.
    let ran = records
        .iter()
        .filter(|r| r["kind"]["name"] == "tool_execution")
        .count();
    assert_eq!(ran, 1, "only the read ran");

    // A fetch that carries none of the file goes through in content mode.
    let ok = f
        .call("ping_after_read", json!({"path": "notes.txt"}))
        .await
        .unwrap();
    assert_eq!(ok["result"]["status"], 200, "{ok}");
    assert_eq!(f.connections(), 1);
    f.node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_mode_carries_every_label_to_every_later_sink() {
    let f = start("run", "").await;
    let (code, text) = f
        .call("ping_after_read", json!({"path": "notes.txt"}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");
    assert!(text.contains("step 0 (fs.read \"notes.txt\")"), "{text}");
    assert_eq!(f.connections(), 0);
    f.node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permitted_flow_goes_through_and_others_stay_denied() {
    let f = start(
        "content",
        r#"@id("test.public_files")
permit (principal, action == Mxp::Action::"flow", resource)
when { resource.kind == "fs.read" && resource.name like "public/*" };
"#,
    )
    .await;
    let ok = f
        .call("share", json!({"path": "public/menu.txt"}))
        .await
        .unwrap();
    assert_eq!(ok["result"]["status"], 200, "{ok}");
    assert_eq!(f.connections(), 1);
    let (code, text) = f
        .call("share", json!({"path": "notes.txt"}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");
    assert_eq!(f.connections(), 1);
    f.node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_a_fetch_only_where_policy_permits() {
    let permit = r#"@id("test.key_to_ping")
permit (principal, action == Mxp::Action::"flow", resource)
when {
  resource.kind == "secret" && resource.name == "API_KEY" &&
  context has sink && context.sink == "http.fetch" &&
  context.args has url && context.args.url like "http://127.0.0.1:*/ping"
};
"#;
    let f = start("content", permit).await;
    let port = f.port;
    let before = f.connections();
    let with_key = |path: &str| {
        json!({
            "url": format!("http://127.0.0.1:{port}/{path}"),
            "headers": {"authorization": {"$secret": "API_KEY"}},
        })
    };
    let (code, text) = f.call("fetch", with_key("elsewhere")).await.unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");
    assert!(
        text.contains("secret \"API_KEY\" reaches its arguments"),
        "{text}"
    );
    assert_eq!(f.connections(), before);
    let ok = f.call("fetch", with_key("ping")).await.unwrap();
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(f.connections(), before + 1);
    f.node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_skill_read_reaches_everything_it_sends() {
    let f = start("content", "").await;
    let (code, text) = f
        .call("relay", json!({"path": "notes.txt"}))
        .await
        .unwrap_err();
    // The skill got -1 (denied) for its fetch and answered with it.
    let _ = code;
    assert!(text.contains("-1") || text.contains("denied"), "{text}");
    assert_eq!(f.connections(), 0, "the skill's fetch reached the server");
    let records = f.audit().await;
    let denial = records
        .iter()
        .find(|r| r["kind"]["effect"] == "deny" && r["data"]["tool"] == "http.fetch")
        .expect("the skill's fetch was denied in the audit log");
    assert_eq!(denial["data"]["flow"]["source"], "fs.read:notes.txt");
    f.node.shutdown(Duration::from_secs(2)).await;
}
