//! Three nodes on loopback: they register their agents with each other,
//! discover across the mesh, forward Calls, and mark a stopped node's agents
//! offline within the TTL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use mxp_actors::*;
use mxp_protocol::{
    AgentId, CallBody, DiscoverRequest, DiscoverResult, ErrorCode, Flags, TypedPayload,
};
use mxp_transport::{Client, Limits, MxpUrl, NODE_AGENT, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

fn spec(n: u8, capability: &str) -> AgentSpec {
    AgentSpec {
        id: AgentId::from_bytes([n; 16]),
        name: format!("agent-{n}"),
        capabilities: vec![capability.to_owned(), "shared".to_owned()],
        planner: Arc::new(RulePlanner::default_rules()),
        tools: Arc::new(ToolRegistry::builtin()),
        hooks: Arc::new(NoHooks),
    }
}

async fn node(agents: Vec<AgentSpec>, seeds: Vec<MxpUrl>) -> Node {
    node_with_operators(agents, seeds, vec![]).await
}

async fn node_with_operators(
    agents: Vec<AgentSpec>,
    seeds: Vec<MxpUrl>,
    operators: Vec<mxp_transport::PeerId>,
) -> Node {
    Node::start(NodeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        identity: NodeIdentity::generate().unwrap(),
        trust: PeerTrust::AnyIdentified,
        limits: Limits::default(),
        seeds,
        heartbeat_interval: Duration::from_millis(100),
        agent_ttl: Duration::from_millis(600),
        operators,
        agents,
        supervision: SupervisionPolicy::default(),
        gate: Gate::default(),
        policy_source: Default::default(),
        zone: gate::Zone::Sandbox,
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

async fn discover(client: &Client, node: &MxpUrl, capability: &str) -> DiscoverResult {
    let id = client.next_message_id();
    let frame = DiscoverRequest {
        capability: capability.into(),
        limit: None,
        after: None,
    }
    .to_frame(id, id, Flags::EMPTY)
    .unwrap();
    let answer = client
        .exchange(node, frame, Duration::from_secs(5))
        .await
        .unwrap();
    let r = mxp_transport::interpret_answer(&answer, id).unwrap();
    serde_json::from_value(r.parse_body().unwrap().result).unwrap()
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_discover_and_call_across_the_mesh() {
    let a = node(vec![spec(1, "alpha")], vec![]).await;
    let seed = a.url().clone();
    let b = node(vec![spec(2, "beta")], vec![seed.clone()]).await;
    let c = node(vec![spec(3, "gamma")], vec![seed]).await;
    let client = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();

    // Every node comes to know all three agents (B learns of C through A).
    for n in [&a, &b, &c] {
        let url = n.url().clone();
        wait_for("all agents discoverable everywhere", async || {
            discover(&client, &url, "shared")
                .await
                .agents
                .iter()
                .filter(|x| x.status == "online")
                .count()
                == 3
        })
        .await;
    }
    let found = discover(&client, b.url(), "gamma").await;
    assert_eq!(found.agents.len(), 1);
    assert_eq!(found.agents[0].agent_id, AgentId::from_bytes([3; 16]));
    assert_eq!(
        found.agents[0].endpoint,
        c.url()
            .clone()
            .with_agent(AgentId::from_bytes([3; 16]))
            .to_string()
    );

    // A Call sent to B for the agent on C is forwarded and answered.
    let via_b = b.url().clone().with_agent(AgentId::from_bytes([3; 16]));
    let r = client
        .call(
            &via_b,
            &CallBody::new("echo", json!({"hop": "b->c"})),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(r.parse_body().unwrap().result, json!({"hop": "b->c"}));
    let status = client
        .call(
            &via_b,
            &CallBody::new("status", Value::Null),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .parse_body()
        .unwrap()
        .result;
    assert_eq!(status["name"], "agent-3", "answered by the agent on C");

    // Stop C: its agent goes offline at A and B within the TTL.
    c.shutdown(Duration::from_secs(2)).await;
    for n in [&a, &b] {
        let url = n.url().clone();
        wait_for("agent on the stopped node offline", async || {
            discover(&client, &url, "gamma")
                .await
                .agents
                .first()
                .is_some_and(|x| x.status == "offline")
        })
        .await;
    }
    // A Call to it now fails cleanly; the other nodes keep serving.
    let err = client
        .call(
            &via_b,
            &CallBody::new("echo", json!(1)),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    // Known to the mesh, but offline: retriable, not "unknown".
    assert_eq!(err.code(), ErrorCode::AGENT_UNAVAILABLE, "{err}");
    assert!(err.to_string().contains("offline"), "{err}");
    let r = client
        .call(
            &a.url().clone().with_agent(AgentId::from_bytes([2; 16])),
            &CallBody::new("echo", json!(2)),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(r.parse_body().unwrap().result, json!(2));

    a.shutdown(Duration::from_secs(2)).await;
    b.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_methods_suspend_resume_retire_and_list() {
    let operator = NodeIdentity::generate().unwrap();
    let a = node_with_operators(vec![spec(1, "alpha")], vec![], vec![operator.peer_id()]).await;
    let id = AgentId::from_bytes([1; 16]).to_string();
    let client = Client::new(&operator, PeerTrust::AnyIdentified, Limits::default()).unwrap();
    let node_url = a.url().clone().with_agent(NODE_AGENT);
    let agent_url = a.url().clone().with_agent(AgentId::from_bytes([1; 16]));
    let ctl = async |method: &str, params: Value| {
        client
            .call(
                &node_url,
                &CallBody::new(method, params),
                Duration::from_secs(5),
            )
            .await
            .map(|r| r.parse_body().unwrap().result)
    };

    let list = ctl("agents.list", Value::Null).await.unwrap();
    assert_eq!(list["agents"][0]["state"], "active");
    assert_eq!(
        ctl("agent.suspend", json!({"agent_id": id})).await.unwrap()["state"],
        "suspended"
    );
    let err = client
        .call(
            &agent_url,
            &CallBody::new("echo", json!(1)),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AGENT_UNAVAILABLE);
    let bad = ctl("agent.suspend", json!({"agent_id": id}))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("cannot suspend"), "{bad}");
    assert_eq!(
        ctl("agent.resume", json!({"agent_id": id})).await.unwrap()["state"],
        "active"
    );
    client
        .call(
            &agent_url,
            &CallBody::new("echo", json!(1)),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let status = ctl("node.status", Value::Null).await.unwrap();
    assert_eq!(status["peer_id"], a.peer_id().to_string());
    assert_eq!(status["local_agents"]["active"], 1);
    assert_eq!(
        ctl("agent.retire", json!({"agent_id": id})).await.unwrap()["state"],
        "retiring"
    );
    wait_for("retired agent gone", async || {
        client
            .call(
                &agent_url,
                &CallBody::new("echo", json!(1)),
                Duration::from_secs(5),
            )
            .await
            .is_err_and(|e| e.code() == ErrorCode::UNKNOWN_AGENT)
    })
    .await;
    assert_eq!(
        ctl("agent.resume", json!({"agent_id": "not-a-uuid"}))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::INVALID_PAYLOAD
    );
    assert_eq!(
        ctl("no.such", Value::Null).await.unwrap_err().code(),
        ErrorCode::UNSUPPORTED
    );
    a.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_only_when_configured() {
    let operator = NodeIdentity::generate().unwrap();
    let n = Node::start(NodeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        identity: NodeIdentity::generate().unwrap(),
        trust: PeerTrust::AnyIdentified,
        limits: Limits::default(),
        seeds: vec![],
        heartbeat_interval: Duration::from_millis(100),
        agent_ttl: Duration::from_millis(600),
        operators: vec![operator.peer_id()],
        agents: vec![spec(1, "alpha")],
        supervision: SupervisionPolicy::default(),
        gate: Gate::default(),
        policy_source: Default::default(),
        zone: gate::Zone::Sandbox,
        audit: Default::default(),
        config_digest: None,
        max_sessions: 1024,
        session_ttl: Duration::from_secs(600),
        max_body_bytes: DEFAULT_NODE_BODY_BYTES,
        registry: Default::default(),
        node_services: Vec::new(),
    })
    .await
    .unwrap();
    let url = n.url().clone().with_agent(NODE_AGENT);
    let body = CallBody::new(
        "agent.suspend",
        json!({"agent_id": AgentId::from_bytes([1; 16])}),
    );
    let stranger = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();
    assert_eq!(
        stranger
            .call(&url, &body, Duration::from_secs(5))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DENIED
    );
    let op = Client::new(&operator, PeerTrust::AnyIdentified, Limits::default()).unwrap();
    op.call(&url, &body, Duration::from_secs(5)).await.unwrap();
    n.shutdown(Duration::from_secs(2)).await;
}

/// Identity comes from TLS: a peer cannot register an agent id that another
/// peer (or the node itself) owns, whatever the payload says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_register_an_id_another_peer_owns() {
    use mxp_protocol::AgentRegister;
    let n = node(vec![spec(1, "alpha")], vec![]).await;
    let register = async |client: &Client, id: AgentId| {
        let reg = AgentRegister {
            agent_id: id,
            name: "claimed".into(),
            capabilities: vec!["x".into()],
            endpoint: "127.0.0.1:9999".parse().unwrap(),
        };
        let msg = client.next_message_id();
        let answer = client
            .exchange(
                n.url(),
                reg.to_frame(msg, msg, Flags::EMPTY).unwrap(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        mxp_transport::interpret_answer(&answer, msg)
    };
    let first = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();
    let second = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();
    let id = AgentId::from_bytes([9; 16]);
    register(&first, id).await.unwrap();
    // The same peer may register it again (e.g. after a restart of its agent).
    register(&first, id).await.unwrap();
    let err = register(&second, id).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DENIED);
    assert!(
        err.to_string().contains("registered by another peer"),
        "{err}"
    );
    // Nor can a peer claim an agent that runs on the node itself.
    let err = register(&second, AgentId::from_bytes([1; 16]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DENIED);
    // The node's discovery still names the first peer's registration.
    let found = discover(&second, n.url(), "x").await;
    assert_eq!(found.agents.len(), 1);
    assert_eq!(
        found.agents[0].endpoint,
        format!("mxp://127.0.0.1:9999/{id}")
    );
    n.shutdown(Duration::from_secs(2)).await;
}

/// The attack of the seam issue, on the mesh: once a node's agent is
/// retired, another node configured with the same id cannot register it
/// there, so Calls for it are never answered by an impostor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_agents_id_cannot_be_claimed_by_another_node() {
    let operator = NodeIdentity::generate().unwrap();
    let victim =
        node_with_operators(vec![spec(1, "alpha")], vec![], vec![operator.peer_id()]).await;
    let client = Client::new(&operator, PeerTrust::AnyIdentified, Limits::default()).unwrap();
    let id = AgentId::from_bytes([1; 16]);
    let r = client
        .call(
            &victim.url().clone().with_agent(NODE_AGENT),
            &CallBody::new("agent.retire", json!({"agent_id": id})),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(r.parse_body().unwrap().result["state"], "retiring");
    wait_for("the agent to be gone", async || {
        victim.control("agents.list", Value::Null).await.unwrap()["agents"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
    // The impostor hosts an agent with the same id, and a probe agent whose
    // registration follows the stolen id's in the same mesh round (agents
    // register in id order): once the probe is registered, the stolen id's
    // registration was tried and refused.
    let impostor = node(
        vec![spec(1, "alpha"), spec(9, "probe")],
        vec![victim.url().clone()],
    )
    .await;
    wait_for("the probe's agent registered at the victim", async || {
        victim.control("agents.list", Value::Null).await.unwrap()["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "agent-9"))
    })
    .await;
    let list = victim.control("agents.list", Value::Null).await.unwrap();
    assert!(
        !list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["agent_id"] == json!(id)),
        "the retired id was claimed: {list}"
    );
    let err = client
        .call(
            &victim.url().clone().with_agent(id),
            &CallBody::new("echo", json!({"card": "4111"})),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNKNOWN_AGENT, "{err}");
    impostor.shutdown(Duration::from_secs(2)).await;
    victim.shutdown(Duration::from_secs(2)).await;
}
