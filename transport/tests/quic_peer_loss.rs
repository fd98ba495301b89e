//! A peer that disappears mid-call: the server is a child process (this test
//! binary run again) that is killed while a Call to it is in flight.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mxp_protocol::{AgentId, CallBody};
use mxp_transport::{Bus, CallError, Limits, PeerTrust};
use serde_json::json;
use tokio::sync::mpsc;

/// Set in the child's environment: run [`child_server_that_never_answers`] as
/// the server.
const CHILD_ENV: &str = "MXP_TEST_CHILD_SERVER";
const CHILD_TEST: &str = "child_server_that_never_answers";
const AGENT: AgentId = AgentId::from_bytes([0x5a; 16]);

/// Only does something in the child process: serves an agent that never
/// answers, prints `ADDR <addr>` once bound and `GOT_CALL` for each Call its
/// agent receives, and exits on its own after a minute at the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_server_that_never_answers() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let bus = Bus::new(64);
    let mut mailbox = bus.register(AGENT).unwrap();
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, Limits::default());
    println!("ADDR {}", server.local_addr().unwrap());
    let mut held = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(env) = mailbox.recv().await {
            println!("GOT_CALL");
            held.push(env);
        }
    })
    .await;
}

/// Kills the child process if the test ends early.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_fails_in_time_when_the_server_process_dies_mid_call() {
    const CALL_TIMEOUT: Duration = Duration::from_secs(3);
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The child's stdout, line by line, read on a thread of its own.
    let stdout = child.0.stdout.take().unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut next_line_starting = async |prefix: &str| -> String {
        loop {
            let line = lines.recv().await;
            let line = line.unwrap_or_else(|| panic!("the child exited before {prefix:?}"));
            // The harness may have printed "test <name> ... " on the same line.
            if let Some((_, rest)) = line.split_once(prefix) {
                return rest.trim().to_owned();
            }
        }
    };
    let addr = tokio::time::timeout(Duration::from_secs(30), next_line_starting("ADDR "))
        .await
        .expect("the child server never printed its address");
    let addr = addr.parse().unwrap();

    let client = common::client(Limits::default());
    let url = common::url(addr, AGENT);
    let t0 = Instant::now();
    let call = tokio::spawn(async move {
        let result = client
            .call(&url, &CallBody::new("wait", json!(null)), CALL_TIMEOUT)
            .await;
        (result, t0.elapsed(), client)
    });
    tokio::time::timeout(Duration::from_secs(30), next_line_starting("GOT_CALL"))
        .await
        .expect("the call never reached the child's agent");
    assert!(!call.is_finished(), "the call ended before the kill");
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let (result, took, client) = tokio::time::timeout(CALL_TIMEOUT * 3, call)
        .await
        .expect("the call outlived its deadline by far")
        .unwrap();
    match result {
        Err(CallError::Timeout(_) | CallError::Transport(_)) => {}
        other => panic!("expected a timeout or transport error, got {other:?}"),
    }
    assert!(
        took < CALL_TIMEOUT + Duration::from_secs(2),
        "the caller waited {took:?}"
    );
    let idle = common::eventually(Duration::from_secs(10), || {
        let s = client.stats();
        s.calls_in_flight == 0 && s.streams == 0
    })
    .await;
    assert!(
        idle,
        "the client still holds the call: {:?}",
        client.stats()
    );
}
