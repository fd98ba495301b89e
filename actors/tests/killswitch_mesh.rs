//! `killswitch.set` with `mesh`: the node sets the switch of every mesh node
//! it knows, as itself, and names each node that did not confirm.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use mxp_actors::*;
use mxp_protocol::{AgentId, CallBody};
use mxp_transport::{Client, Limits, MxpUrl, NODE_AGENT, NodeIdentity, PeerId, PeerTrust};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

fn spec(n: u8) -> AgentSpec {
    AgentSpec {
        id: AgentId::from_bytes([n; 16]),
        name: format!("agent-{n}"),
        capabilities: vec!["k".into()],
        planner: Arc::new(RulePlanner::default_rules()),
        tools: Arc::new(ToolRegistry::builtin()),
        hooks: Arc::new(NoHooks),
    }
}

async fn node(
    identity: NodeIdentity,
    agent: u8,
    seeds: Vec<MxpUrl>,
    operators: Vec<PeerId>,
) -> Node {
    let mut s = NodeSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        identity,
        PeerTrust::AnyIdentified,
        vec![spec(agent)],
    );
    s.seeds = seeds;
    s.operators = operators;
    s.heartbeat_interval = Duration::from_millis(100);
    s.agent_ttl = Duration::from_secs(5);
    Node::start(s).await.unwrap()
}

async fn status(n: &Node) -> Value {
    n.control("node.status", Value::Null).await.unwrap()
}

async fn set(client: &Client, n: &Node, on: bool, mesh: bool) -> Value {
    client
        .call(
            &n.url().clone().with_agent(NODE_AGENT),
            &CallBody::new("killswitch.set", json!({ "on": on, "mesh": mesh })),
            T,
        )
        .await
        .unwrap()
        .parse_body()
        .unwrap()
        .result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_kill_switch_reaches_nodes_that_accept_this_node_as_operator() {
    let op = NodeIdentity::generate().unwrap();
    let a_id = NodeIdentity::generate().unwrap();
    let a_peer = a_id.peer_id();
    // B accepts A as an operator; C does not.
    let b = node(NodeIdentity::generate().unwrap(), 2, vec![], vec![a_peer]).await;
    let c = node(NodeIdentity::generate().unwrap(), 3, vec![], vec![]).await;
    let a = node(
        a_id,
        1,
        vec![b.url().clone(), c.url().clone()],
        vec![op.peer_id()],
    )
    .await;
    let client = Client::new(&op, PeerTrust::AnyIdentified, Limits::default()).unwrap();

    let r = set(&client, &a, true, true).await;
    assert_eq!(r["on"], json!(true));
    assert_eq!(r["applied"], json!(false), "C refused: {r}");
    assert_eq!(
        r["confirmed"],
        json!([AgentId::from_bytes([1; 16]).to_string()])
    );
    assert_eq!(r["nodes_confirmed"], json!([b.url().to_string()]), "{r}");
    let refused = r["nodes_unconfirmed"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{r}");
    assert_eq!(refused[0]["node"], json!(c.url().to_string()));
    assert!(
        refused[0]["reason"].as_str().unwrap().contains("denied"),
        "{r}"
    );
    assert_eq!(status(&a).await["kill_switch"], json!(true));
    assert_eq!(status(&b).await["kill_switch"], json!(true));
    assert_eq!(status(&c).await["kill_switch"], json!(false));

    // Off, on the mesh too.
    let r = set(&client, &a, false, true).await;
    assert_eq!(r["on"], json!(false));
    assert_eq!(status(&a).await["kill_switch"], json!(false));
    assert_eq!(status(&b).await["kill_switch"], json!(false));

    // A node that is gone is named, not skipped.
    let b_url = b.url().to_string();
    b.shutdown(Duration::from_secs(1)).await;
    let r = set(&client, &a, true, true).await;
    let names: Vec<&str> = r["nodes_unconfirmed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert!(names.contains(&b_url.as_str()), "{r}");
    a.shutdown(Duration::from_secs(1)).await;
    c.shutdown(Duration::from_secs(1)).await;
}
