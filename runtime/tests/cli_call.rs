//! Runs the real `mxp` binary against a real node: a `mxp_transport::Server`
//! in the test process with an echo agent and an agent that never answers.
//! `mxp call`, `mxp event` and `mxp identity`, their output and exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mxp_protocol::PrincipalId;
use mxp_protocol::{AgentId, Call, CallBody, EventBody, MessageType, TypedPayload};
use mxp_transport::{Bus, Limits, Mailbox, NodeIdentity, PeerId, PeerTrust, Server};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The longest a child `mxp` may run before the test fails (and kills it).
const CHILD_DEADLINE: Duration = Duration::from_secs(30);
/// The longest the test waits for the node to see something.
const SEEN_DEADLINE: Duration = Duration::from_secs(10);

const ECHO: AgentId = AgentId::from_bytes([0xe1; 16]);
const SILENT: AgentId = AgentId::from_bytes([0x51; 16]);
const MISSING: AgentId = AgentId::from_bytes([0x77; 16]);

/// What an agent of the test node received.
#[derive(Debug)]
enum Seen {
    Call {
        origin: PrincipalId,
        body: CallBody,
    },
    Event {
        origin: PrincipalId,
        body: EventBody,
    },
}

/// A node on 127.0.0.1 with the agents `ECHO` and `SILENT`.
struct Node {
    server: Server,
    addr: SocketAddr,
    fingerprint: PeerId,
    seen: mpsc::UnboundedReceiver<Seen>,
    _bus: Bus,
}

impl Node {
    fn start() -> Node {
        let bus = Bus::new(64);
        let (tx, seen) = mpsc::unbounded_channel();
        spawn_echo(bus.register(ECHO).unwrap(), tx.clone());
        spawn_silent(bus.register(SILENT).unwrap(), tx);
        let identity = NodeIdentity::generate().unwrap();
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            PeerTrust::AnyIdentified,
            Limits::default(),
            bus.clone(),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        Node {
            server,
            addr,
            fingerprint: identity.peer_id(),
            seen,
            _bus: bus,
        }
    }

    fn url(&self, agent: AgentId) -> String {
        format!("mxp://{}/{agent}", self.addr)
    }

    /// The next thing an agent received, within [`SEEN_DEADLINE`].
    async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(SEEN_DEADLINE, self.seen.recv())
            .await
            .expect("the node saw nothing in time")
            .expect("agents stopped")
    }

    async fn stop(self) {
        self.server.shutdown(Duration::from_secs(1)).await;
    }
}

/// Answers every Call with its params and reports Calls and Events.
fn spawn_echo(mut mailbox: Mailbox, seen: mpsc::UnboundedSender<Seen>) {
    tokio::spawn(async move {
        while let Some(mut env) = mailbox.recv().await {
            match env.frame().message_type() {
                MessageType::Call => {
                    let body = Call::from_frame(env.frame()).unwrap().parse_body().unwrap();
                    if let Some(reply) = env.take_reply() {
                        reply.ok(body.params.clone()).unwrap();
                    }
                    let _ = seen.send(Seen::Call {
                        origin: *env.principal().id(),
                        body,
                    });
                }
                MessageType::Event => {
                    let body = EventBody::from_frame(env.frame()).unwrap();
                    let _ = seen.send(Seen::Event {
                        origin: *env.principal().id(),
                        body,
                    });
                }
                other => panic!("unexpected {other}"),
            }
        }
    });
}

/// Keeps every Call's reply port without answering, and reports the Call.
fn spawn_silent(mut mailbox: Mailbox, seen: mpsc::UnboundedSender<Seen>) {
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(mut env) = mailbox.recv().await {
            let body = Call::from_frame(env.frame()).unwrap().parse_body().unwrap();
            let _ = seen.send(Seen::Call {
                origin: *env.principal().id(),
                body,
            });
            held.push(env.take_reply());
        }
    });
}

/// What a run of `mxp` left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `mxp args...` with `MXP_CONFIG_DIR=config`; fails the test (killing
/// the child) if it runs longer than [`CHILD_DEADLINE`].
async fn mxp(config: &Path, args: &[&str]) -> Run {
    let start = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mxp"))
        .args(args)
        .env("MXP_CONFIG_DIR", config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mxp");
    let out = tokio::time::timeout(CHILD_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("mxp {args:?} still running after {CHILD_DEADLINE:?}"))
        .unwrap();
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        took: start.elapsed(),
    }
}

/// A folder in the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mxp-cli-call-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fingerprint `mxp identity` prints.
async fn cli_fingerprint(config: &Path) -> PeerId {
    let run = mxp(config, &["identity"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let line = run.stdout.lines().next().unwrap();
    line.strip_prefix("fingerprint: ")
        .unwrap_or_else(|| panic!("{run:?}"))
        .parse()
        .unwrap()
}

const HELLO: &str = r#"{"method":"echo","params":{"hello":"world"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_the_result_using_the_cli_identity_created_on_first_use() {
    let mut node = Node::start();
    let config = TempDir::new("identity");
    let identity_dir = config.path().join("identity");
    assert!(!identity_dir.exists());

    let run = mxp(config.path(), &["call", &node.url(ECHO), HELLO]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        json!({"hello": "world"})
    );
    assert!(run.stdout.contains("\n  \"hello\""), "pretty: {run:?}");
    assert_eq!(run.stderr, "", "stderr stays quiet by default");
    assert!(identity_dir.join("cert.der").is_file(), "identity created");
    let Seen::Call { origin, body } = node.next_seen().await else {
        panic!("not a call")
    };
    assert_eq!(body, CallBody::new("echo", json!({"hello": "world"})));

    // `mxp identity` prints the key the node saw, and the same one every time.
    let fingerprint = cli_fingerprint(config.path()).await;
    assert_eq!(origin, PrincipalId::Peer(fingerprint.fingerprint()));
    assert_eq!(cli_fingerprint(config.path()).await, fingerprint);
    let run = mxp(config.path(), &["identity"]).await;
    assert!(
        run.stdout
            .contains(&format!("folder: {}", identity_dir.display())),
        "{run:?}"
    );

    // A second call from the same folder presents the same identity.
    let run = mxp(config.path(), &["call", &node.url(ECHO), HELLO]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let Seen::Call { origin, .. } = node.next_seen().await else {
        panic!("not a call")
    };
    assert_eq!(origin, PrincipalId::Peer(fingerprint.fingerprint()));

    // --identity-dir overrides the default folder.
    let other = config.path().join("elsewhere");
    let run = mxp(
        config.path(),
        &[
            "call",
            &node.url(ECHO),
            HELLO,
            "--identity-dir",
            other.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let Seen::Call { origin, .. } = node.next_seen().await else {
        panic!("not a call")
    };
    let other_id = NodeIdentity::load_or_create(&other).unwrap().peer_id();
    assert_eq!(origin, PrincipalId::Peer(other_id.fingerprint()));
    assert_ne!(other_id, fingerprint);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_json_and_the_method_flag() {
    let node = Node::start();
    let config = TempDir::new("raw");
    let run = mxp(
        config.path(),
        &["call", &node.url(ECHO), HELLO, "--raw-json"],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "{\"result\":{\"hello\":\"world\"}}\n");

    let run = mxp(
        config.path(),
        &["call", &node.url(ECHO), "--method", "echo", "[1, -2]"],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        json!([1, -2])
    );

    let run = mxp(
        config.path(),
        &["call", &node.url(ECHO), "--method", "status"],
    )
    .await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "null\n"), "{run:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_agent_exits_3_naming_the_code() {
    let node = Node::start();
    let config = TempDir::new("unknown");
    let run = mxp(config.path(), &["call", &node.url(MISSING), HELLO]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with("mxp: unknown_agent (200): "),
        "{run:?}"
    );
    assert!(run.stderr.contains(&MISSING.to_string()), "{run:?}");
    assert!(run.stderr.contains("not retriable"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_answers_exits_4_after_the_timeout() {
    let mut node = Node::start();
    let config = TempDir::new("silent");
    let run = mxp(
        config.path(),
        &["call", &node.url(SILENT), HELLO, "--timeout", "500ms"],
    )
    .await;
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(
        run.stderr, "mxp: timeout (300): no answer within 500ms\n",
        "{run:?}"
    );
    assert!(run.took >= Duration::from_millis(500), "{run:?}");
    assert!(run.took < Duration::from_secs(10), "{run:?}");
    // The call did reach the agent: this was a timeout, not a lost call.
    assert!(matches!(node.next_seen().await, Seen::Call { .. }));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_exits_5() {
    // A UDP socket that never answers QUIC: packets are swallowed.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("mxp://{}/{ECHO}", socket.local_addr().unwrap());
    let config = TempDir::new("nothing");
    let run = mxp(config.path(), &["call", &url, HELLO, "--timeout", "500ms"]).await;
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.starts_with("mxp: "), "{run:?}");
    assert!(run.stderr.contains("cannot connect"), "{run:?}");
    assert!(run.took < Duration::from_secs(10), "{run:?}");

    let run = mxp(
        config.path(),
        &["event", &url, "--topic", "t", "--timeout", "500ms"],
    )
    .await;
    assert_eq!(run.code, 5, "{run:?}");
    drop(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_before_touching_the_network_or_the_identity() {
    let config = TempDir::new("usage");
    let url = format!("mxp://127.0.0.1:9/{ECHO}");
    for (args, why) in [
        (
            vec!["call", &url, r#"{"method": "echo",}"#],
            "line 1, column 19",
        ),
        (
            vec!["call", &url, "--method", "echo", "{\n\"a\": tru}"],
            "line 2, column 9",
        ),
        (vec!["call", &url, r#"{"params": 1}"#], "method"),
        (vec!["call", "mxp://127.0.0.1:9", "{}"], "names no agent"),
        (vec!["call", "http://x/y", "{}"], "mxp://"),
        (
            vec!["call", &url, HELLO, "--timeout", "5 parsecs"],
            "5 parsecs",
        ),
        (
            vec!["call", &url, HELLO, "--server-fingerprint", "abc"],
            "fingerprint",
        ),
        (vec!["event", &url, "--topic", ""], "topic"),
        (
            vec!["event", &url, "--topic", "t", "{x"],
            "line 1, column 2",
        ),
    ] {
        let run = mxp(config.path(), &args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains(why), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
    assert!(
        !config.path().join("identity").exists(),
        "no identity created for bad input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fingerprint_pins_the_node() {
    let mut node = Node::start();
    let config = TempDir::new("pin");
    let stranger = NodeIdentity::generate().unwrap().peer_id().to_string();
    let run = mxp(
        config.path(),
        &[
            "call",
            &node.url(ECHO),
            HELLO,
            "--server-fingerprint",
            &stranger,
            "--timeout",
            "5s",
        ],
    )
    .await;
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr.contains("does not match --server-fingerprint"),
        "{run:?}"
    );

    let real = node.fingerprint.to_string();
    let run = mxp(
        config.path(),
        &[
            "call",
            &node.url(ECHO),
            HELLO,
            "--server-fingerprint",
            &real,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");
    assert!(matches!(node.next_seen().await, Seen::Call { .. }));

    // -v says which key was accepted and how.
    let run = mxp(
        config.path(),
        &[
            "call",
            &node.url(ECHO),
            HELLO,
            "--server-fingerprint",
            &real,
            "-v",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("node key {real} matches --server-fingerprint")),
        "{run:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_mode_is_noted_only_with_verbose() {
    let node = Node::start();
    let config = TempDir::new("verbose");
    let run = mxp(config.path(), &["call", &node.url(ECHO), HELLO, "-v"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let notes: Vec<_> = run
        .stderr
        .lines()
        .filter(|l| l.contains("development mode"))
        .collect();
    assert_eq!(notes.len(), 1, "{run:?}");
    assert!(notes[0].contains(&node.fingerprint.to_string()), "{run:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_reaches_the_agents_mailbox() {
    let mut node = Node::start();
    let config = TempDir::new("event");
    let run = mxp(
        config.path(),
        &[
            "event",
            &node.url(ECHO),
            "--topic",
            "greeting.sent",
            r#"{"hello":"world"}"#,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    let Seen::Event { origin, body } = node.next_seen().await else {
        panic!("not an event")
    };
    assert_eq!(body.target, Some(ECHO));
    assert_eq!(body.topic, "greeting.sent");
    assert_eq!(body.data, json!({"hello": "world"}));
    assert_eq!(
        origin,
        PrincipalId::Peer(cli_fingerprint(config.path()).await.fingerprint())
    );
    node.stop().await;
}
