//! Runs the `echo_node` example as a child process and talks to it over QUIC
//! the way its printed instructions say: the ready-to-paste line, echo,
//! status, an unsupported method, an event, then Ctrl-C.
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
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mxp_protocol::{CallBody, ErrorCode, EventBody};
use mxp_transport::{CallError, Client, Limits, MxpUrl, NodeIdentity, PeerId, PeerTrust};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);
const ECHO_AGENT: &str = "ec400000-0000-4000-8000-000000000001";

/// `target/<profile>/examples/echo_node`, which `cargo test` builds before
/// running tests.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("echo_node{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test -p mxp-examples`, which builds the examples",
        path.display()
    );
    path
}

/// The child and its stdout lines; kills the child if the test fails.
struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// The next stdout line that satisfies `pred`, within [`DEADLINE`].
    fn line_where(&self, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("the node printed nothing expected in time");
            if pred(&line) {
                return line;
            }
        }
    }

    /// Waits for the child to exit, within [`DEADLINE`].
    fn wait(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "the node did not stop in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn echo_node_does_what_it_prints() {
    let data = std::env::temp_dir().join(format!("mxp-echo-node-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut child = Command::new(example_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut node = Node { child, lines };

    let fingerprint: PeerId = node
        .line_where(|l| l.starts_with("node fingerprint: "))
        .trim_start_matches("node fingerprint: ")
        .parse()
        .unwrap();
    let paste = node.line_where(|l| l.trim_start().starts_with("mxp call mxp://"));
    let url_text = paste.split_whitespace().nth(2).unwrap();
    let url: MxpUrl = url_text.parse().unwrap();
    assert_eq!(url.agent().unwrap().to_string(), ECHO_AGENT);
    assert_eq!(
        paste.trim(),
        format!("mxp call {url_text} '{{\"method\":\"echo\",\"params\":{{\"hello\":\"world\"}}}}'")
    );
    node.line_where(|l| l.contains("Ctrl-C"));
    assert!(data.join("identity").join("cert.der").is_file());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(
            &NodeIdentity::generate().unwrap(),
            PeerTrust::pinned([fingerprint]),
            Limits::default(),
        )
        .unwrap();
        let call = |method: &str, params| {
            let body = CallBody::new(method, params);
            let client = &client;
            let url = &url;
            async move { client.call(url, &body, DEADLINE).await }
        };
        // The event goes first: the Calls that follow give the node time to
        // take it before `close` (see mxp-runtime's `mxp event` for why).
        let event = EventBody {
            target: url.agent(),
            topic: "greeting".into(),
            data: json!({"hello": "world"}),
        };
        client.event(&url, &event).await.unwrap();

        let echo = call("echo", json!({"hello": "world"})).await.unwrap();
        assert_eq!(echo.parse_body().unwrap().result, json!({"hello": "world"}));

        let status = call("status", json!(null)).await.unwrap();
        let status = status.parse_body().unwrap().result;
        assert_eq!(status["agent"], ECHO_AGENT);
        assert_eq!(status["calls"], 2);

        match call("nope", json!(null)).await {
            Err(CallError::Remote { code, message, .. }) => {
                assert_eq!(code, ErrorCode::UNSUPPORTED);
                assert!(message.contains("nope"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        client.close().await;
    });
    node.line_where(|l| l == r#"event greeting: {"hello":"world"}"#);

    // Ctrl-C: the node closes its connections and exits successfully.
    let pid = node.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    node.line_where(|l| l == "stopping");
    assert!(node.wait().success());
    let _ = std::fs::remove_dir_all(&data);
}
