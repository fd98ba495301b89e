//! Runs the real `mxp` binary against a real node (`mxp_actors::Node` in the
//! test process): `mxp agents`, `mxp discover`, `mxp node status` and
//! `mxp agent suspend|resume|retire`, their output and exit codes, and a
//! node whose operators do not include the CLI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxp_actors::{
    AgentSpec, DEFAULT_NODE_BODY_BYTES, NoHooks, Node, NodeSettings, NodeStatus, RulePlanner,
    SupervisionPolicy,
};
use mxp_protocol::{AgentId, DiscoverResult};
use mxp_transport::{Limits, NodeIdentity, PeerId, PeerTrust};
use serde_json::{Value, json};

/// The longest a child `mxp` may run before the test fails (and kills it).
const CHILD_DEADLINE: Duration = Duration::from_secs(30);
/// The longest the test polls for the node to reach a state.
const POLL_DEADLINE: Duration = Duration::from_secs(20);

const ECHO: AgentId = AgentId::from_bytes([0xe1; 16]);
const OTHER: AgentId = AgentId::from_bytes([0x02; 16]);
const MISSING: AgentId = AgentId::from_bytes([0x77; 16]);

const HELLO: &str = r#"{"method":"echo","params":{"hello":"world"}}"#;

fn spec(id: AgentId, name: &str, capabilities: &[&str]) -> AgentSpec {
    AgentSpec {
        id,
        name: name.to_owned(),
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        planner: Arc::new(RulePlanner::default_rules()),
        tools: Arc::new(mxp_actors::ToolRegistry::builtin()),
        hooks: Arc::new(NoHooks),
    }
}

/// A node on 127.0.0.1 hosting `agents`; `operators` empty: nobody may
/// suspend, resume or retire.
async fn start(agents: Vec<AgentSpec>, operators: Vec<PeerId>) -> Node {
    Node::start(NodeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        identity: NodeIdentity::generate().unwrap(),
        trust: PeerTrust::AnyIdentified,
        limits: Limits::default(),
        seeds: vec![],
        heartbeat_interval: Duration::from_millis(200),
        agent_ttl: Duration::from_secs(2),
        operators,
        agents,
        supervision: SupervisionPolicy::default(),
        gate: mxp_actors::Gate::default(),
        policy_source: Default::default(),
        zone: mxp_actors::gate::Zone::Sandbox,
        audit: Default::default(),
        config_digest: None,
        max_sessions: 1024,
        session_ttl: Duration::from_secs(600),
        max_body_bytes: DEFAULT_NODE_BODY_BYTES,
        registry: Default::default(),
        node_services: Vec::new(),
    })
    .await
    .unwrap()
}

fn echo_node() -> Vec<AgentSpec> {
    vec![spec(ECHO, "echo-agent", &["echo", "demo"])]
}

/// `mxp://host:port` of the node.
fn node_url(node: &Node) -> String {
    node.url().to_string()
}

/// `mxp://host:port/<agent>` on the node.
fn agent_url(node: &Node, agent: AgentId) -> String {
    node.url().clone().with_agent(agent).to_string()
}

/// What a run of `mxp` left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `mxp args...` with `MXP_CONFIG_DIR=config`; fails the test (killing
/// the child) if it runs longer than [`CHILD_DEADLINE`].
async fn mxp(config: &Path, args: &[&str]) -> Run {
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
    }
}

/// Runs `mxp args...` and asserts it succeeded; its stdout.
async fn mxp_ok(config: &Path, args: &[&str]) -> String {
    let run = mxp(config, args).await;
    assert_eq!(run.code, 0, "mxp {args:?}: {run:?}");
    run.stdout
}

/// The fields of the `mxp agents` row of `agent`, if it is listed.
fn row_of(table: &str, agent: AgentId) -> Option<Vec<String>> {
    let id = agent.to_string();
    table
        .lines()
        .find(|l| l.starts_with(&id))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
}

/// The fingerprint `mxp identity` prints.
async fn cli_fingerprint(config: &Path) -> PeerId {
    let out = mxp_ok(config, &["identity"]).await;
    out.lines()
        .next()
        .and_then(|l| l.strip_prefix("fingerprint: "))
        .unwrap_or_else(|| panic!("{out:?}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_lists_and_agent_moves_an_agent_through_its_lifecycle() {
    let config = tempfile::tempdir().unwrap();
    let config = config.path();
    let node = start(echo_node(), vec![cli_fingerprint(config).await]).await;
    let (nurl, aurl) = (node_url(&node), agent_url(&node, ECHO));

    // The table: header, then the hosted agent with its lifecycle state.
    let table = mxp_ok(config, &["agents", &nurl]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split("  ").collect();
    let header: Vec<&str> = header
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .collect();
    assert_eq!(
        header,
        ["AGENT ID", "NAME", "STATE", "LOCATION", "CAPABILITIES"],
        "{table}"
    );
    assert_eq!(
        row_of(&table, ECHO).unwrap_or_else(|| panic!("{table}")),
        [
            &ECHO.to_string(),
            "echo-agent",
            "active",
            "local",
            "echo,demo"
        ],
        "{table}"
    );
    assert_eq!(table.lines().count(), 2, "{table}");

    // --json: the node's result on one line.
    let out = mxp_ok(config, &["agents", &nurl, "--json"]).await;
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["agents"][0]["agent_id"], json!(ECHO.to_string()));
    assert_eq!(v["agents"][0]["state"], "active");

    // Suspended: Calls are refused as agent_unavailable.
    let out = mxp_ok(config, &["agent", "suspend", &aurl]).await;
    assert_eq!(out, format!("{ECHO}: suspended\n"));
    let run = mxp(config, &["call", &aurl, HELLO]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("mxp: agent_unavailable"), "{run:?}");
    let table = mxp_ok(config, &["agents", &nurl]).await;
    assert_eq!(row_of(&table, ECHO).unwrap()[2], "suspended", "{table}");

    // A transition the state does not allow: exit 3 with the node's reason.
    let run = mxp(config, &["agent", "suspend", &aurl]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("cannot suspend an agent that is suspended"),
        "{run:?}"
    );

    // Resumed: Calls are answered again.
    let out = mxp_ok(config, &["agent", "resume", &aurl]).await;
    assert_eq!(out, format!("{ECHO}: active\n"));
    let out = mxp_ok(config, &["call", &aurl, HELLO]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"hello": "world"})
    );
    let run = mxp(config, &["agent", "resume", &aurl]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("cannot resume an agent that is active"),
        "{run:?}"
    );

    // An agent the node does not host.
    let run = mxp(config, &["agent", "suspend", &agent_url(&node, MISSING)]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("mxp: unknown_agent"), "{run:?}");

    // Retired: it drains, stops and leaves the list.
    let out = mxp_ok(config, &["agent", "retire", &aurl]).await;
    assert_eq!(out, format!("{ECHO}: retiring\n"));
    let end = Instant::now() + POLL_DEADLINE;
    loop {
        let table = mxp_ok(config, &["agents", &nurl]).await;
        if row_of(&table, ECHO).is_none() {
            assert_eq!(table.lines().count(), 1, "only the header: {table}");
            break;
        }
        assert!(
            Instant::now() < end,
            "still listed after {POLL_DEADLINE:?}: {table}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = mxp(config, &["agent", "resume", &aurl]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("mxp: unknown_agent"), "{run:?}");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_finds_agents_by_capability() {
    let node = start(
        vec![
            spec(ECHO, "echo-agent", &["echo", "demo"]),
            spec(OTHER, "other-agent", &["demo"]),
        ],
        vec![],
    )
    .await;
    let config = tempfile::tempdir().unwrap();
    let config = config.path();
    let nurl = node_url(&node);

    // One line per agent: endpoint URL, name, status, capabilities.
    let out = mxp_ok(config, &["discover", &nurl, "echo"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [[
            agent_url(&node, ECHO).as_str(),
            "echo-agent",
            "online",
            "echo,demo"
        ]],
        "{out}"
    );

    // The endpoint URL is what `mxp call` takes.
    let endpoint = lines[0][0];
    let answer = mxp_ok(config, &["call", endpoint, HELLO]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({"hello": "world"})
    );

    let out = mxp_ok(config, &["discover", &nurl, "demo"]).await;
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = mxp_ok(config, &["discover", &nurl, "demo", "--limit", "1"]).await;
    assert_eq!(out.lines().count(), 1, "{out}");

    let out = mxp_ok(config, &["discover", &nurl, "demo", "--json"]).await;
    assert_eq!(out.lines().count(), 1, "{out}");
    let found: DiscoverResult = serde_json::from_str(&out).unwrap();
    let mut ids: Vec<AgentId> = found.agents.iter().map(|a| a.agent_id).collect();
    ids.sort();
    assert_eq!(ids, [OTHER, ECHO]);

    // No match: nothing on stdout, exit 0; -v says so on stderr.
    let run = mxp(config, &["discover", &nurl, "teleportation"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    let run = mxp(config, &["discover", &nurl, "teleportation", "-v"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");
    assert!(
        run.stderr
            .contains("no agent with the capability \"teleportation\""),
        "{run:?}"
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_status_shows_the_nodes_fingerprint() {
    let node = start(echo_node(), vec![]).await;
    let config = tempfile::tempdir().unwrap();
    let config = config.path();
    let nurl = node_url(&node);
    let fingerprint = node.peer_id().to_string();

    let out = mxp_ok(config, &["node", "status", &nurl]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("fingerprint: {fingerprint}"), "{out}");
    assert_eq!(lines[1], format!("url: {nurl}"), "{out}");
    assert!(lines[2].starts_with("uptime: "), "{out}");
    assert_eq!(lines[3], "local agents: 1 (active: 1)", "{out}");
    assert_eq!(lines[4], "remote agents: 0 online, 0 offline", "{out}");
    assert_eq!(lines[5], "mesh nodes: none", "{out}");
    for key in [
        "connections: ",
        "streams: ",
        "calls in flight: ",
        "frames in: ",
        "frames out: ",
        "malformed frames: ",
        "refused connections: ",
        "rate-limited frames: ",
    ] {
        assert!(lines.iter().any(|l| l.starts_with(key)), "{key}: {out}");
    }

    // --json, with the node pinned by the fingerprint it reports.
    let out = mxp_ok(
        config,
        &[
            "node",
            "status",
            &nurl,
            "--json",
            "--server-fingerprint",
            &fingerprint,
        ],
    )
    .await;
    assert_eq!(out.lines().count(), 1, "{out}");
    let status: NodeStatus = serde_json::from_str(&out).unwrap();
    assert_eq!(status.peer_id, fingerprint);
    assert_eq!(status.local_agents.get("active"), Some(&1));
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operators_may_change_agents() {
    let config = tempfile::tempdir().unwrap();
    let config = config.path();
    let stranger = NodeIdentity::generate().unwrap().peer_id();

    // No operators (the embedded default): nobody may retire, suspend or
    // resume; the denial says how to become an operator, and the agent
    // keeps answering.
    let node = start(echo_node(), vec![]).await;
    let aurl = agent_url(&node, ECHO);
    for verb in ["retire", "suspend", "resume"] {
        let run = mxp(config, &["agent", verb, &aurl]).await;
        assert_eq!(run.code, 3, "{verb}: {run:?}");
        assert!(run.stderr.starts_with("mxp: denied"), "{verb}: {run:?}");
        assert!(
            run.stderr.contains("no operators are configured"),
            "{run:?}"
        );
        assert!(run.stderr.contains("node.operators"), "{run:?}");
    }
    let out = mxp_ok(config, &["call", &aurl, HELLO]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"hello": "world"})
    );
    node.shutdown(Duration::from_secs(1)).await;

    // Operators set to another identity: refused, the agent stays active.
    let node = start(echo_node(), vec![stranger]).await;
    let (nurl, aurl) = (node_url(&node), agent_url(&node, ECHO));
    let run = mxp(config, &["agent", "suspend", &aurl]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("mxp: denied"), "{run:?}");
    assert!(run.stderr.contains("`mxp identity`"), "{run:?}");
    assert!(run.stderr.contains("node.operators"), "{run:?}");
    // Reading is open to everyone.
    let table = mxp_ok(config, &["agents", &nurl]).await;
    assert_eq!(row_of(&table, ECHO).unwrap()[2], "active", "{table}");
    node.shutdown(Duration::from_secs(1)).await;

    // Operators listing the CLI's fingerprint: accepted.
    let me = cli_fingerprint(config).await;
    let node = start(echo_node(), vec![stranger, me]).await;
    let out = mxp_ok(config, &["agent", "suspend", &agent_url(&node, ECHO)]).await;
    assert_eq!(out, format!("{ECHO}: suspended\n"));
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_urls_exit_2_before_touching_the_network() {
    let config = tempfile::tempdir().unwrap();
    let config = config.path();
    let node = "mxp://127.0.0.1:9";
    let agent = format!("{node}/{ECHO}");
    for (args, why) in [
        (vec!["agents", agent.as_str()], "names the agent"),
        (vec!["discover", &agent, "echo"], "names the agent"),
        (vec!["node", "status", &agent], "names the agent"),
        (vec!["agent", "suspend", node], "names no agent"),
        (vec!["agent", "retire", "http://h/x"], "mxp://"),
        (vec!["discover", node, ""], "must not be empty"),
        (vec!["discover", node, "echo", "--limit", "0"], "0"),
    ] {
        let run = mxp(config, &args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains(why), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
    assert!(
        !config.join("identity").exists(),
        "no identity created for bad input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_exits_5() {
    // A UDP socket that never answers QUIC: packets are swallowed.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let node = format!("mxp://{}", socket.local_addr().unwrap());
    let agent = format!("{node}/{ECHO}");
    let config = tempfile::tempdir().unwrap();
    for args in [
        vec!["agents", node.as_str()],
        vec!["discover", &node, "echo"],
        vec!["node", "status", &node],
        vec!["agent", "suspend", &agent],
    ] {
        let mut args = args;
        args.extend(["--timeout", "300ms"]);
        let run = mxp(config.path(), &args).await;
        assert_eq!(run.code, 5, "{args:?}: {run:?}");
        assert!(run.stderr.contains("cannot connect"), "{args:?}: {run:?}");
    }
    drop(socket);
}
