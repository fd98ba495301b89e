//! The brokered file tools on a real node over QUIC on loopback: secrets by
//! reference reach the act and nowhere else, and an effect's outcome is
//! recorded by idempotency key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use mxp_actors::*;
use mxp_broker::fs::{FsLimits, FsRoot};
use mxp_broker::outcome::{LedgerSettings, OutcomeLedger};
use mxp_broker::secret::SecretStore;
use mxp_broker::shell::{ShellJail, ShellSettings};
use mxp_broker::tools::{ShellTool, fs_tools};
use mxp_broker::{Broker, ToolLimits};
use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_transport::{Client, Limits, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

const AGENT: AgentId = AgentId::from_bytes([7; 16]);
const T: Duration = Duration::from_secs(20);
const CANARY: &str = "canary-Zq9/x+secret?value";

/// Allows every intent: these tests are about the broker, behind the gate.
struct AllowAll;
impl Policy for AllowAll {
    fn decide(&self, _: &Intent, _: &Facts) -> Outcome {
        Outcome::allow(vec!["test.allow_all".into()])
    }
    // Flows too: these tests are about what acts, not the flow rule.
    fn decide_flow(&self, _: &Intent, _: &FlowSource, _: &Facts) -> Outcome {
        Outcome::allow(vec!["test.allow_all".into()])
    }
}

/// Every log line of this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn rules() -> Vec<Rule> {
    ["fs.read", "fs.write", "fs.list", "fs.stat", "shell.exec"]
        .into_iter()
        .map(|t| Rule {
            method: t.into(),
            when: Default::default(),
            steps: vec![PlanStep {
                tool: t.into(),
                args: json!("$params"),
            }],
        })
        .collect()
}

async fn node(root: &std::path::Path, broker: Arc<Broker>) -> Node {
    node_with(root, broker.clone(), vec![]).await
}

async fn node_with(root: &std::path::Path, broker: Arc<Broker>, extra: Vec<Arc<dyn Tool>>) -> Node {
    let mut tools = ToolRegistry::builtin();
    for t in extra {
        tools.register(t).unwrap();
    }
    for t in fs_tools(
        FsRoot::open(root, FsLimits::default()).unwrap(),
        broker,
        ToolLimits::default(),
    ) {
        tools.register(t).unwrap();
    }
    let names = tools.names();
    let spec = AgentSpec {
        id: AGENT,
        name: "files".into(),
        capabilities: vec![],
        planner: Arc::new(
            RulePlanner::new(
                rules()
                    .into_iter()
                    .filter(|r| names.iter().any(|n| *n == r.method))
                    .collect(),
                &names,
            )
            .unwrap(),
        ),
        tools: Arc::new(tools),
        hooks: Arc::new(NoHooks),
    };
    let mut s = NodeSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        vec![spec],
    );
    s.gate = Gate::with_policy(Arc::new(AllowAll));
    Node::start(s).await.unwrap()
}

async fn call(
    c: &Client,
    n: &Node,
    method: &str,
    params: Value,
) -> Result<Value, (ErrorCode, String)> {
    let mut body = CallBody::new(method, params);
    body.session = Some("s-broker".parse().unwrap());
    match c.call(&n.url().clone().with_agent(AGENT), &body, T).await {
        Ok(r) => {
            // The whole answer frame's body, as bytes: no secret in it.
            let raw = String::from_utf8_lossy(&r.body).into_owned();
            assert!(!raw.contains(CANARY), "a frame carried the secret: {raw}");
            Ok(r.parse_body().unwrap().result)
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                !text.contains(CANARY),
                "an error carried the secret: {text}"
            );
            Err((e.code(), text))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_act_and_no_answer_error_or_log_line() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    // Global: the node logs from its runtime's worker threads.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut secrets = SecretStore::new();
    secrets.insert("CANARY", CANARY.to_owned().into()).unwrap();
    let store = store::Store::open(&dir.path().join("store")).unwrap();
    let (ledger, _) = OutcomeLedger::open(store, LedgerSettings::default(), 0).unwrap();
    let broker = Arc::new(Broker::new(secrets, Some(ledger)));
    let n = node(&root, broker).await;
    let c = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();

    // The act gets the value: the file holds it.
    let w = call(
        &c,
        &n,
        "fs.write",
        json!({"path": "key.txt", "content": {"$secret": "CANARY"}}),
    )
    .await
    .unwrap();
    assert_eq!(w["bytes"], CANARY.len());
    assert_eq!(
        std::fs::read_to_string(root.join("key.txt")).unwrap(),
        CANARY
    );

    // Read back, raw and in encoded forms: redacted, and marked.
    let r = call(&c, &n, "fs.read", json!({"path": "key.txt"}))
        .await
        .unwrap();
    assert_eq!(r["content"], "[redacted:CANARY]");
    let encoded = format!(
        "hex {} b64 {}",
        hex_of(CANARY),
        base64::engine::general_purpose::STANDARD.encode(CANARY)
    );
    std::fs::write(root.join("enc.txt"), &encoded).unwrap();
    let r = call(&c, &n, "fs.read", json!({"path": "enc.txt"}))
        .await
        .unwrap();
    // (base64's last partial character and padding stay: they depend on
    // what follows the value and say almost nothing about it.)
    let content = r["content"].as_str().unwrap();
    assert!(
        content.starts_with("hex [redacted:CANARY] b64 [redacted:CANARY]") && content.len() < 50,
        "{content}"
    );

    // An error that would quote the value: redacted too.
    let (code, text) = call(&c, &n, "fs.read", json!({"path": {"$secret": "CANARY"}}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::INTERNAL, "{text}");
    assert!(text.contains("[redacted:CANARY]"), "{text}");

    // An unknown secret is named, not guessed.
    let (code, text) = call(
        &c,
        &n,
        "fs.write",
        json!({"path": "x", "content": {"$secret": "NOPE"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD, "{text}");
    assert!(text.contains("\"NOPE\" is not defined"), "{text}");

    // Refusals of the jail reach the caller as denials.
    let (code, text) = call(&c, &n, "fs.read", json!({"path": "../etc/passwd"}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");

    n.shutdown(Duration::from_secs(2)).await;
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(!logs.is_empty(), "the capture saw no log line at all");
    assert!(!logs.contains(CANARY), "a log line carried the secret");
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landed_write_with_the_same_key_is_answered_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let store = store::Store::open(&dir.path().join("store")).unwrap();
    let (ledger, _) = OutcomeLedger::open(store, LedgerSettings::default(), 0).unwrap();
    let n = node(
        &root,
        Arc::new(Broker::new(SecretStore::new(), Some(ledger))),
    )
    .await;
    let c = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();
    let first = call(
        &c,
        &n,
        "fs.write",
        json!({"path": "a", "content": "one", "$idempotency_key": "k1"}),
    )
    .await
    .unwrap();
    assert_eq!(first["bytes"], 3);
    // The same key again, with other content: the recorded answer, no write.
    let again = call(
        &c,
        &n,
        "fs.write",
        json!({"path": "a", "content": "two", "$idempotency_key": "k1"}),
    )
    .await
    .unwrap();
    assert_eq!(again["idempotent_replay"], true);
    assert_eq!(again["output"], first);
    assert_eq!(std::fs::read_to_string(root.join("a")).unwrap(), "one");
    // A new key acts.
    call(
        &c,
        &n,
        "fs.write",
        json!({"path": "a", "content": "two", "$idempotency_key": "k2"}),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(root.join("a")).unwrap(), "two");
    n.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_run_cut_off_at_its_timeout_is_in_doubt_and_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let store = store::Store::open(&dir.path().join("store")).unwrap();
    let (ledger, _) = OutcomeLedger::open(store.clone(), LedgerSettings::default(), 0).unwrap();
    let mut secrets = SecretStore::new();
    secrets.insert("CANARY", CANARY.to_owned().into()).unwrap();
    let broker = Arc::new(Broker::new(secrets, Some(ledger)));
    let mut settings = ShellSettings {
        enabled: true,
        allow: vec!["/bin/echo".into(), "/bin/sh".into()],
        ..ShellSettings::default()
    };
    settings.limits.timeout = Duration::from_secs(1);
    let shell = ShellTool::new(
        ShellJail::new(settings).unwrap(),
        broker.clone(),
        ToolLimits {
            timeout: Duration::from_secs(10),
            ..ToolLimits::default()
        },
    );
    let n = node_with(&root, broker, vec![Arc::new(shell)]).await;
    let c = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();

    // The program gets the value; the answer does not.
    let out = call(
        &c,
        &n,
        "shell.exec",
        json!({"program": "/bin/echo", "args": ["key=", {"$secret": "CANARY"}]}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"]["exit"], 0, "{out}");
    assert_eq!(out["stdout"], "key= [redacted:CANARY]\n");

    // Not allowlisted: denied, nothing runs.
    let (code, text) = call(&c, &n, "shell.exec", json!({"program": "/usr/bin/env"}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");

    // Cut off at its timeout: in doubt, recorded so, and the same key is
    // then refused rather than run again.
    let slow =
        json!({"program": "/bin/sh", "args": ["-c", "sleep 30"], "$idempotency_key": "job-1"});
    let (code, text) = call(&c, &n, "shell.exec", slow.clone()).await.unwrap_err();
    assert_eq!(code, ErrorCode::INTERNAL, "{text}");
    assert!(text.contains("in doubt"), "{text}");
    let (code, text) = call(&c, &n, "shell.exec", slow).await.unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");
    assert!(text.contains("not retried"), "{text}");
    n.shutdown(Duration::from_secs(2)).await;
}
