//! Skills on a real node built from its configuration, called over QUIC on
//! loopback, under a Cedar policy that lets callers read only `notes.txt`:
//!
//! * a skill whose manifest grants `fs.read` reads `notes.txt` through its
//!   host (the host call is a governed intent, allowed by policy);
//! * the same skill asking for `secret.txt` gets `-1` (denied by policy);
//! * a skill whose manifest grants nothing cannot read a file: refused
//!   before the host is called;
//! * the audit log holds the skill's decision, the host call's allow and the
//!   host call's denial, in the Call's session, as the tools they name;
//! * an agent whose skill's manifest asks for a tool the agent does not
//!   have is refused at start, naming the agent and the tool;
//! * past `skills.max_instances` a skill Call fails at once while the node
//!   keeps serving (a held slot: a host call waiting for an operator's
//!   approval, which then lets it finish).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{call_wat, write_skill};
use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_runtime::node::{self, Config};
use mxp_transport::{Client, Limits, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);
const SESSION: &str = "s-skills";

/// Callers may run the two skills, and read `notes.txt` only.
const POLICY: &str = r#"@id("test.skills")
permit (
  principal,
  action in [Mxp::Action::"tool:skill.reader", Mxp::Action::"tool:skill.nogrant"],
  resource
);

@id("test.notes_only")
permit (principal, action == Mxp::Action::"tool:fs.read", resource)
when { context.args has path && context.args.path == "notes.txt" };
"#;

/// The configuration of a node whose agent has `tools` (TOML array text).
fn config(t: &Path, pins: &str, tools: &str) -> String {
    format!(
        "[node]\nlisten = \"127.0.0.1:0\"\ndata_dir = {data:?}\n[metrics]\nlisten = \"\"\n\
         [governance]\npolicy_dir = {policy:?}\n\
         [broker]\nfs_root = {files:?}\n\
         [skills]\ndir = {skills:?}\nquarantine_dir = {q:?}\npins = {pins}\n\
         [[agents]]\nname = \"skilled\"\ntools = {tools}\n\
         [[agents.rules]]\nmethod = \"reader\"\nsteps = [{{ tool = \"skill.reader\", args = {{ input = \"$params\" }} }}]\n\
         [[agents.rules]]\nmethod = \"nogrant\"\nsteps = [{{ tool = \"skill.nogrant\", args = {{ input = \"$params\" }} }}]\n",
        data = t.join("data"),
        policy = common::policies(t, POLICY),
        files = t.join("files"),
        skills = t.join("skills"),
        q = t.join("quarantine"),
    )
}

async fn call(
    c: &Client,
    n: &mxp_actors::Node,
    agent: AgentId,
    method: &str,
    params: Value,
) -> Result<Value, (ErrorCode, String)> {
    let mut body = CallBody::new(method, params);
    body.session = Some(SESSION.parse().unwrap());
    match c.call(&n.url().clone().with_agent(agent), &body, T).await {
        Ok(r) => Ok(r.parse_body().unwrap().result),
        Err(e) => Err((e.code(), e.to_string())),
    }
}

/// (decision, tool) of every policy decision of the session, in order.
fn decisions(audit: &Value) -> Vec<(String, String)> {
    audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"]["name"] == "policy_decision" && r["session"] == SESSION)
        .map(|r| {
            (
                r["kind"]["effect"].as_str().unwrap().to_owned(),
                r["data"]["tool"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_calls_are_governed_intents_decided_and_recorded_like_plan_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir_all(t.join("files")).unwrap();
    std::fs::write(t.join("files/notes.txt"), "meeting at noon").unwrap();
    std::fs::write(t.join("files/secret.txt"), "the vault code").unwrap();
    let skills = t.join("skills");
    let reader = write_skill(&skills, "reader", &call_wat("fs.read"), &["fs.read"]);
    let nogrant = write_skill(&skills, "nogrant", &call_wat("fs.read"), &[]);
    let pins = format!("{{ reader = \"{reader}\", nogrant = \"{nogrant}\" }}");
    let text = config(
        t,
        &pins,
        "[\"fs.read\", \"skill.reader\", \"skill.nogrant\"]",
    );
    let config = Config::load(Some(("node.toml", &text)), []).unwrap();
    let prepared = node::prepare(&config).unwrap();
    let agent = prepared.agents[0].0;
    let n = node::start(prepared).await.unwrap();
    let c = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();

    // Allowed by policy: the skill gets the file through its host.
    let out = call(&c, &n, agent, "reader", json!({"path": "notes.txt"}))
        .await
        .unwrap();
    assert_eq!(out["output"]["content"], "meeting at noon", "{out}");
    assert_eq!(out["host_calls"], 1);

    // Not allowed by policy: the host call is denied, the skill gets -1
    // (and reports it), and nothing of the file comes back.
    let (code, text) = call(&c, &n, agent, "reader", json!({"path": "secret.txt"}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::INTERNAL, "{text}");
    assert!(text.contains("failure code -1"), "{text}");
    assert!(
        text.contains("fs.read") && text.contains("denied"),
        "{text}"
    );
    assert!(!text.contains("vault"), "{text}");

    // No grant in its manifest: refused before the host is called.
    let (code, text) = call(&c, &n, agent, "nogrant", json!({"path": "notes.txt"}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::DENIED, "{text}");
    assert!(text.contains("does not list"), "{text}");

    // In the audit log, as the tools they name: each skill call, the host
    // call allowed, the host call denied; the skill without a grant made
    // no host call at all.
    let audit = n
        .control("audit.read", json!({"from": 0, "limit": 1000}))
        .await
        .unwrap();
    let d = decisions(&audit);
    let pair = |e: &str, t: &str| (e.to_owned(), t.to_owned());
    assert_eq!(
        d,
        vec![
            pair("allow", "skill.reader"),
            pair("allow", "fs.read"),
            pair("allow", "skill.reader"),
            pair("deny", "fs.read"),
            pair("allow", "skill.nogrant"),
        ],
        "{audit}"
    );
    // The denied host call was never executed; the allowed one was.
    let executed: Vec<String> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"]["name"] == "tool_execution" && r["session"] == SESSION)
        .map(|r| {
            format!(
                "{} {}",
                r["data"]["tool"].as_str().unwrap(),
                r["kind"]["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        executed,
        [
            "fs.read landed",
            "skill.reader landed",
            "skill.reader failed",
            "skill.nogrant failed"
        ],
        "{audit}"
    );
    n.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skill_asking_for_a_tool_its_agent_lacks_stops_the_node_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir_all(t.join("files")).unwrap();
    let skills = t.join("skills");
    let reader = write_skill(&skills, "reader", &call_wat("fs.read"), &["fs.read"]);
    let nogrant = write_skill(&skills, "nogrant", &call_wat("fs.read"), &[]);
    let pins = format!("{{ reader = \"{reader}\", nogrant = \"{nogrant}\" }}");
    // The agent has the skill but not fs.read, which its manifest lists.
    let text = config(t, &pins, "[\"skill.reader\", \"skill.nogrant\"]");
    let config = Config::load(Some(("node.toml", &text)), []).unwrap();
    let e = node::prepare(&config)
        .err()
        .expect("the node must refuse to start");
    assert_eq!(e.exit_code(), 2);
    let e = e.to_string();
    assert!(e.contains("agents[0].tools"), "{e}");
    assert!(
        e.contains("skill.reader's manifest lists tool \"fs.read\""),
        "{e}"
    );
    assert!(e.contains("\"skilled\" does not have"), "{e}");
}

/// Polls `f` until it gives a value, for up to 20 s.
async fn wait_until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_past_the_pool_fail_at_once_and_the_node_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let skills = t.join("skills");
    // waiter's host call (echo) needs an operator's approval: it holds the
    // runner's one slot until the approval is given.
    let waiter = write_skill(&skills, "waiter", &call_wat("echo"), &["echo"]);
    let greeter = write_skill(&skills, "greeter", &common::echo_wat(), &[]);
    let policy = common::policies(
        t,
        r#"@id("test.skills")
permit (principal, action in [Mxp::Action::"tool:skill.waiter", Mxp::Action::"tool:skill.greeter"], resource);

@id("test.echo_needs_approval")
@approval("operator")
forbid (principal, action == Mxp::Action::"tool:echo", resource) unless { context.approved };
"#,
    );
    let operator = NodeIdentity::generate().unwrap();
    let text = format!(
        "[node]\nlisten = \"127.0.0.1:0\"\ndata_dir = {data:?}\noperators = [\"{op}\"]\n[metrics]\nlisten = \"\"\n\
         [governance]\npolicy_dir = {policy:?}\napproval_wait_ms = 60000\n\
         [skills]\ndir = {skills:?}\nquarantine_dir = {q:?}\nmax_instances = 1\n\
         pins = {{ waiter = \"{waiter}\", greeter = \"{greeter}\" }}\n\
         [[agents]]\nname = \"pool\"\ntools = [\"skill.waiter\", \"skill.greeter\"]\n\
         [[agents.rules]]\nmethod = \"wait\"\nsteps = [{{ tool = \"skill.waiter\", args = {{ input = \"$params\" }} }}]\n\
         [[agents.rules]]\nmethod = \"greet\"\nsteps = [{{ tool = \"skill.greeter\", args = {{ input = \"$params\" }} }}]\n\
         [[agents.rules]]\nmethod = \"status\"\nsteps = [{{ tool = \"status\" }}]\n",
        data = t.join("data"),
        op = operator.peer_id(),
        q = t.join("quarantine"),
    );
    let config = Config::load(Some(("node.toml", &text)), []).unwrap();
    let prepared = node::prepare(&config).unwrap();
    let agent = prepared.agents[0].0;
    let n = std::sync::Arc::new(node::start(prepared).await.unwrap());
    let c = std::sync::Arc::new(
        Client::new(
            &NodeIdentity::generate().unwrap(),
            PeerTrust::AnyIdentified,
            Limits::default(),
        )
        .unwrap(),
    );

    // The first skill takes the only slot and waits in its host call.
    let held = {
        let (c, n) = (c.clone(), n.clone());
        tokio::spawn(async move { call(&c, &n, agent, "wait", json!({"n": 1})).await })
    };
    let pending = wait_until("the host call's pending approval", async || {
        let list = n.control("approvals.list", json!({})).await.unwrap();
        list["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["state"] == "pending" && a["tool"] == "echo")
            .cloned()
    })
    .await;

    // Another skill: refused at once, naming the setting; the node serves
    // everything else.
    let (code, text) = call(&c, &n, agent, "greet", json!("hi")).await.unwrap_err();
    assert_eq!(code, ErrorCode::INTERNAL, "{text}");
    assert!(text.contains("busy (skills.max_instances)"), "{text}");
    let status = call(&c, &n, agent, "status", Value::Null).await.unwrap();
    assert_eq!(status["name"], "pool", "{status}");

    // The operator approves the host call: the held skill finishes with
    // the tool's answer, and the slot is free again.
    let op = Client::new(&operator, PeerTrust::AnyIdentified, Limits::default()).unwrap();
    let body = CallBody::new(
        "approvals.decide",
        json!({"id": pending["id"], "approve": true}),
    );
    op.call(
        &n.url().clone().with_agent(mxp_transport::NODE_AGENT),
        &body,
        T,
    )
    .await
    .unwrap();
    let out = held.await.unwrap().unwrap();
    assert_eq!(out["output"], json!({"n": 1}), "{out}");
    assert_eq!(out["host_calls"], 1);
    let out = call(&c, &n, agent, "greet", json!("hi")).await.unwrap();
    assert_eq!(out["output"], "hi");
    std::sync::Arc::try_unwrap(n)
        .unwrap()
        .shutdown(Duration::from_secs(2))
        .await;
}
