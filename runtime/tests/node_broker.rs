//! A real node built from its configuration, as `mxp-node` builds it
//! (`prepare`, `install_metrics`, `start`), called over QUIC on loopback:
//!
//! * a canary secret (in a 0600 secrets file) reaches the file and the
//!   loopback HTTP server the Calls send it to, and appears in no answer
//!   frame, error, log line of any thread, or /metrics scrape; a skill
//!   reading it through its host gets it redacted too;
//! * a skill tampered with before the start is quarantined, counted in
//!   `mxp_skills_quarantined_total` and recorded in the audit log, and the
//!   other skills serve;
//! * SSRF through the node's `http.fetch`: every spelling of a local or
//!   metadata address is denied, and a loopback sink sees 0 connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{call_wat, echo_wat, policies, tamper, write_skill};
use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_runtime::node::{self, Config};
use mxp_transport::{Client, Limits, NodeIdentity, PeerTrust};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CANARY: &str = "canary-Wq7/zP+secret?v=1&x";
const T: Duration = Duration::from_secs(20);

/// Every log line of this test binary, from every thread.
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

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        // Global: the node logs from its runtime's worker threads, the
        // audit writer, and the blocking threads skills run on.
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

/// A loopback HTTP server that answers each request with the head it read,
/// keeping every head and counting connections.
struct Mirror {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
}

async fn mirror() -> Mirror {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (h, a) = (heads.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
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
    Mirror {
        port,
        heads,
        accepted,
    }
}

/// A planner rule in TOML; `args` is TOML text.
fn rule(method: &str, tool: &str, args: &str) -> String {
    format!(
        "[[agents.rules]]\nmethod = \"{method}\"\nsteps = [{{ tool = \"{tool}\", args = {args} }}]\n"
    )
}

/// Calls `method` of `agent`; checks that the answer frame's bytes, or the
/// error's text, do not carry the canary.
async fn call(
    c: &Client,
    n: &mxp_actors::Node,
    agent: AgentId,
    method: &str,
    params: Value,
) -> Result<Value, (ErrorCode, String)> {
    let mut body = CallBody::new(method, params);
    body.session = Some("s-broker".parse().unwrap());
    match c.call(&n.url().clone().with_agent(agent), &body, T).await {
        Ok(r) => {
            let raw = String::from_utf8_lossy(&r.body).into_owned();
            assert!(
                !raw.contains(CANARY),
                "an answer frame carried the secret: {raw}"
            );
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

/// GET /metrics over a plain socket; the body.
fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

fn client() -> Client {
    Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_reaches_its_targets_and_no_answer_error_log_or_metric() {
    let logs = logs();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let files = t.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let secrets = t.join("secrets.toml");
    std::fs::write(&secrets, format!("CANARY = \"{CANARY}\"\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let skills = t.join("skills");
    let reader = write_skill(&skills, "reader", &call_wat("fs.read"), &["fs.read"]);
    let greeter = write_skill(&skills, "greeter", &echo_wat(), &[]);
    let tampered = write_skill(&skills, "tampered", &echo_wat(), &[]);
    tamper(&skills, "tampered");
    let policy = policies(
        t,
        r#"@id("test.tools")
permit (
  principal,
  action in [Mxp::Action::"tool:fs.read", Mxp::Action::"tool:fs.write", Mxp::Action::"tool:http.fetch",
             Mxp::Action::"tool:skill.reader", Mxp::Action::"tool:skill.greeter", Mxp::Action::"tool:skill.tampered"],
  resource
);
// The flow rule: the canary may be sent by http.fetch, by reference.
@id("test.canary_to_http")
permit (principal, action == Mxp::Action::"flow", resource)
when { resource.kind == "secret" && resource.name == "CANARY" && context has sink && context.sink == "http.fetch" };
"#,
    );
    let mirror = mirror().await;
    let text = format!(
        "[node]\nlisten = \"127.0.0.1:0\"\ndata_dir = {data:?}\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [governance]\npolicy_dir = {policy:?}\n\
         [broker]\nfs_root = {files:?}\nsecrets_file = {secrets:?}\n\
         http_allow = [\"127.0.0.1:{port}\"]\nhttp_allowed_classes = [\"loopback\"]\n\
         [skills]\ndir = {skills:?}\nquarantine_dir = {quarantine:?}\n\
         pins = {{ reader = \"{reader}\", greeter = \"{greeter}\", tampered = \"{tampered}\" }}\n\
         [[agents]]\nname = \"worker\"\n\
         tools = [\"fs.read\", \"fs.write\", \"http.fetch\", \"skill.reader\", \"skill.greeter\", \"skill.tampered\"]\n{rules}",
        data = t.join("data"),
        files = files,
        port = mirror.port,
        quarantine = t.join("quarantine"),
        rules = [
            rule("read", "fs.read", "\"$params\""),
            rule("write", "fs.write", "\"$params\""),
            rule("fetch", "http.fetch", "\"$params\""),
            rule("reader", "skill.reader", "{ input = \"$params\" }"),
            rule("greeter", "skill.greeter", "{ input = \"$params\" }"),
            rule("tampered", "skill.tampered", "{ input = \"$params\" }"),
        ]
        .concat(),
    );
    let config = Config::load(Some(("node.toml", &text)), []).unwrap();
    let endpoint = node::install_metrics(node::metrics_addr(&config).unwrap().unwrap()).unwrap();
    let prepared = node::prepare(&config).unwrap();
    let agent = prepared.agents[0].0;
    let n = node::start(prepared).await.unwrap();
    let c = client();

    // The write gets the value: the file holds it.
    let w = call(
        &c,
        &n,
        agent,
        "write",
        json!({"path": "key.txt", "content": {"$secret": "CANARY"}}),
    )
    .await
    .unwrap();
    assert_eq!(w["bytes"], CANARY.len());
    assert_eq!(
        std::fs::read_to_string(files.join("key.txt")).unwrap(),
        CANARY
    );
    // Read back: redacted.
    let r = call(&c, &n, agent, "read", json!({"path": "key.txt"}))
        .await
        .unwrap();
    assert_eq!(r["content"], "[redacted:CANARY]");
    // An error that would quote it: redacted.
    let (code, text) = call(
        &c,
        &n,
        agent,
        "read",
        json!({"path": {"$secret": "CANARY"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(code, ErrorCode::INTERNAL, "{text}");
    assert!(text.contains("[redacted:CANARY]"), "{text}");

    // The fetch sends it to the loopback server; the answer (which echoes
    // the request head) comes back redacted.
    let url = format!("http://127.0.0.1:{}/hook", mirror.port);
    let f = call(
        &c,
        &n,
        agent,
        "fetch",
        json!({"url": url, "headers": {"x-key": {"$secret": "CANARY"}}}),
    )
    .await
    .unwrap();
    assert_eq!(f["status"], 200, "{f}");
    assert!(
        f["body"]
            .as_str()
            .unwrap()
            .contains("x-key: [redacted:CANARY]"),
        "{f}"
    );
    assert!(mirror.heads.lock().unwrap()[0].contains(CANARY));
    assert_eq!(mirror.accepted.load(Ordering::SeqCst), 1);

    // A skill reading the file through its host gets what the broker
    // answers: redacted.
    let s = call(&c, &n, agent, "reader", json!({"path": "key.txt"}))
        .await
        .unwrap();
    assert_eq!(s["output"]["content"], "[redacted:CANARY]", "{s}");
    assert_eq!(s["host_calls"], 1);

    // The tampered skill was refused at start; the others serve.
    let g = call(&c, &n, agent, "greeter", json!("hello"))
        .await
        .unwrap();
    assert_eq!(g["output"], "hello");
    let (code, text) = call(&c, &n, agent, "tampered", json!("x"))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::INTERNAL, "{text}");
    assert!(text.contains("not loaded"), "{text}");
    let moved: Vec<String> = std::fs::read_dir(t.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(moved[0].starts_with("tampered-"), "{moved:?}");
    let audit = n
        .control("audit.read", json!({"from": 0, "limit": 1000}))
        .await
        .unwrap();
    let q: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"]["name"] == "skill_quarantine")
        .collect();
    assert_eq!(q.len(), 1, "{audit}");
    assert_eq!(q[0]["data"]["name"], "tampered");
    assert_eq!(q[0]["data"]["expected"], tampered.as_str());
    assert_ne!(q[0]["data"]["actual"], tampered.as_str());
    assert!(
        q[0]["data"]["quarantined_to"]
            .as_str()
            .unwrap()
            .ends_with(&moved[0])
    );
    // Nor does the audit log hold the secret.
    assert!(!audit.to_string().contains(CANARY));

    // /metrics: the quarantine counted, the secret nowhere.
    let metrics = scrape(endpoint.addr.port());
    assert!(!metrics.contains(CANARY), "a metric carried the secret");
    let quarantined = metrics
        .lines()
        .find(|l| l.starts_with("mxp_skills_quarantined_total"))
        .unwrap_or_else(|| panic!("no quarantine counter in {metrics}"));
    assert!(quarantined.ends_with(" 1"), "{quarantined}");

    n.shutdown(Duration::from_secs(2)).await;
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("skill module does not match its pin"),
        "no quarantine log line"
    );
    assert!(!logs.contains(CANARY), "a log line carried the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_the_nodes_http_fetch_makes_no_connection() {
    // Its log lines go to the same capture (set up once per process).
    let _logs = logs();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let sink = mirror().await;
    let p = sink.port;
    // Every host is allowlisted on the sink's port: the address rules alone
    // must refuse them (no address class is allowed beyond global unicast).
    let hosts = [
        "127.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "169.254.169.254",
        "2130706433",
        "0x7f.1",
        "017700000001",
        "127.1",
        "[fd00::1]",
        "100.64.0.1",
    ];
    let allow: Vec<String> = hosts.iter().map(|h| format!("{h}:{p}")).collect();
    let policy = policies(
        t,
        r#"@id("test.fetch")
permit (principal, action == Mxp::Action::"tool:http.fetch", resource);
"#,
    );
    let text = format!(
        "[node]\nlisten = \"127.0.0.1:0\"\ndata_dir = {data:?}\n[metrics]\nlisten = \"\"\n\
         [governance]\npolicy_dir = {policy:?}\n\
         [broker]\nhttp_allow = {allow:?}\n\
         [[agents]]\nname = \"fetcher\"\ntools = [\"http.fetch\"]\n{rule}",
        data = t.join("data"),
        rule = rule("fetch", "http.fetch", "\"$params\""),
    );
    let config = Config::load(Some(("node.toml", &text)), []).unwrap();
    let prepared = node::prepare(&config).unwrap();
    let agent = prepared.agents[0].0;
    let n = node::start(prepared).await.unwrap();
    let c = client();
    let mut urls: Vec<String> = hosts.iter().map(|h| format!("http://{h}:{p}/")).collect();
    // `localhost` names are refused by name, allowlisted or not.
    urls.push(format!("http://localhost.:{p}/"));
    for url in &urls {
        let (code, text) = call(&c, &n, agent, "fetch", json!({"url": url}))
            .await
            .unwrap_err();
        assert_eq!(code, ErrorCode::DENIED, "{url}: {text}");
        assert!(
            text.contains("not allowed") || text.contains("names this machine"),
            "{url}: {text}"
        );
    }
    // Positive control: a connection the test makes itself is counted, and
    // connections are accepted in order, so the count is exact: only it.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        sink.accepted.load(Ordering::SeqCst),
        1,
        "http.fetch reached the sink"
    );
    n.shutdown(Duration::from_secs(2)).await;
}
