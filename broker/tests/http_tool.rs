//! `http.fetch` as a brokered tool on a real node over QUIC on loopback,
//! against real loopback HTTP servers: a secret header reaches the
//! allowlisted server and no answer; a host off the allowlist is denied
//! with no connection; a failure after the request was sent is in doubt
//! and its idempotency key is then refused; a failure before sending is
//! not in doubt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, read_head, sink};
use mxp_actors::*;
use mxp_broker::addr::AddrClass;
use mxp_broker::http::{HostRule, HttpFetcher, HttpSettings, SystemResolver};
use mxp_broker::outcome::{LedgerSettings, OutcomeLedger};
use mxp_broker::secret::SecretStore;
use mxp_broker::tools::HttpTool;
use mxp_broker::{Broker, ToolLimits};
use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_transport::{Client, Limits, NodeIdentity, PeerTrust};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const AGENT: AgentId = AgentId::from_bytes([8; 16]);
const T: Duration = Duration::from_secs(20);
const TOKEN: &str = "tok-7f3a9c2e51d04b6e";

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

/// A server that answers each request with the request head it read as
/// its body, and keeps every head.
async fn mirror() -> (Server, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, c) = (heads.clone(), count.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let h = h.clone();
            tokio::spawn(async move {
                let head = String::from_utf8_lossy(&read_head(&mut s).await).into_owned();
                h.lock().unwrap().push(head.clone());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                    head.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (Server::from_parts(addr, count), heads)
}

/// A server that reads the request and never answers.
async fn silent() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            read_head(&mut s).await;
            held.push(s);
        }
    });
    Server::from_parts(addr, count)
}

async fn node(allow: Vec<HostRule>, dir: &std::path::Path) -> Node {
    let mut secrets = SecretStore::new();
    secrets.insert("TOKEN", TOKEN.to_owned().into()).unwrap();
    let store = store::Store::open(&dir.join("store")).unwrap();
    let (ledger, _) = OutcomeLedger::open(store, LedgerSettings::default(), 0).unwrap();
    let broker = Arc::new(Broker::new(secrets, Some(ledger)));
    let fetcher = HttpFetcher::new(
        HttpSettings {
            allow,
            allowed_classes: vec![AddrClass::Loopback],
            timeout: Duration::from_millis(500),
            ..HttpSettings::default()
        },
        SystemResolver,
    )
    .unwrap();
    let tool = HttpTool::new(
        fetcher,
        broker,
        ToolLimits {
            timeout: Duration::from_secs(10),
            ..ToolLimits::default()
        },
    );
    let mut tools = ToolRegistry::builtin();
    tools.register(Arc::new(tool)).unwrap();
    let rule = Rule {
        method: "fetch".into(),
        when: Default::default(),
        steps: vec![PlanStep {
            tool: "http.fetch".into(),
            args: json!("$params"),
        }],
    };
    let spec = AgentSpec {
        id: AGENT,
        name: "fetcher".into(),
        capabilities: vec![],
        planner: Arc::new(RulePlanner::new(vec![rule], &tools.names()).unwrap()),
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

async fn fetch(c: &Client, n: &Node, params: Value) -> Result<Value, (ErrorCode, String)> {
    let mut body = CallBody::new("fetch", params);
    body.session = Some("s-http".parse().unwrap());
    match c.call(&n.url().clone().with_agent(AGENT), &body, T).await {
        Ok(r) => {
            let raw = String::from_utf8_lossy(&r.body).into_owned();
            assert!(!raw.contains(TOKEN), "an answer carried the secret: {raw}");
            Ok(r.parse_body().unwrap().result)
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains(TOKEN), "an error carried the secret: {text}");
            Err((e.code(), text))
        }
    }
}

fn rule(port: u16) -> HostRule {
    HostRule {
        host: "127.0.0.1".into(),
        port: Some(port),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_reach_only_the_allowlist_and_a_failure_after_sending_is_in_doubt() {
    let dir = tempfile::tempdir().unwrap();
    let (mirror, heads) = mirror().await;
    let hush = silent().await;
    let other = sink().await;
    // A port that refuses: bound, then closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let n = node(
        vec![rule(mirror.port()), rule(hush.port()), rule(closed)],
        dir.path(),
    )
    .await;
    let c = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();

    // The secret header reaches the server; the answer (the server echoes
    // the head) comes back redacted.
    let url = format!("http://127.0.0.1:{}/x?y=1", mirror.port());
    let r = fetch(
        &c,
        &n,
        json!({"url": url, "headers": {"authorization": {"$secret": "TOKEN"}}}),
    )
    .await
    .unwrap();
    assert_eq!(r["status"], 200, "{r}");
    let body = r["body"].as_str().unwrap();
    assert!(body.starts_with("GET /x?y=1 HTTP/1.1"), "{body}");
    assert!(body.contains("[redacted:TOKEN]"), "{body}");
    assert!(heads.lock().unwrap()[0].contains(TOKEN));
    assert_eq!(mirror.accepted(), 1);

    // Off the allowlist (another port on the same address): denied, and
    // the server there never sees a connection.
    let (code, text) = fetch(
        &c,
        &n,
        json!({"url": format!("http://127.0.0.1:{}/", other.port())}),
    )
    .await
    .unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");
    assert!(text.contains("allowlist"), "{text}");
    // A method the settings do not allow: denied before any connection.
    let (code, text) = fetch(&c, &n, json!({"url": url, "method": "POST"}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");
    assert_eq!(mirror.accepted(), 1);

    // Refused at connect: nothing was sent, so it failed (not in doubt)
    // and the same key may try again.
    let down = json!({"url": format!("http://127.0.0.1:{closed}/"), "$idempotency_key": "d-1"});
    for _ in 0..2 {
        let (code, text) = fetch(&c, &n, down.clone()).await.unwrap_err();
        assert_eq!(code, ErrorCode::INTERNAL, "{text}");
        assert!(!text.contains("in doubt"), "{text}");
    }

    // Sent, then no answer within http's timeout: in doubt; the same key is
    // then refused rather than sent again.
    let slow =
        json!({"url": format!("http://127.0.0.1:{}/", hush.port()), "$idempotency_key": "k-1"});
    let (code, text) = fetch(&c, &n, slow.clone()).await.unwrap_err();
    assert_eq!(code, ErrorCode::INTERNAL, "{text}");
    assert!(text.contains("in doubt"), "{text}");
    let (code, text) = fetch(&c, &n, slow).await.unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");
    assert!(text.contains("not retried"), "{text}");
    assert_eq!(hush.accepted(), 1, "the in-doubt request was sent again");

    // Nothing reached the server off the allowlist: a positive control
    // there (accepted in order) makes the count exact.
    let probe = reqwest_free_get(other.port()).await;
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
    assert_eq!(other.accepted(), 1);
    n.shutdown(Duration::from_secs(2)).await;
}

/// A plain GET with a raw socket: the control connection to a sink.
async fn reqwest_free_get(port: u16) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
