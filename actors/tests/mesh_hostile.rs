//! Hostile peers against the mesh, on real nodes over QUIC on loopback: each
//! test is one attack that used to work, and the bound that now holds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use mxp_actors::registry::RegistryLimits;
use mxp_actors::*;
use mxp_protocol::{
    AgentId, AgentRegister, CallBody, DiscoverRequest, DiscoverResult, ErrorCode, Flags,
    TypedPayload,
};
use mxp_transport::{Client, Limits, MxpUrl, NODE_AGENT, NodeIdentity, PeerId, PeerTrust};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn spec(n: u8, name: &str, caps: &[&str]) -> AgentSpec {
    AgentSpec {
        id: AgentId::from_bytes([n; 16]),
        name: name.into(),
        capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        planner: Arc::new(RulePlanner::default_rules()),
        tools: Arc::new(ToolRegistry::builtin()),
        hooks: Arc::new(NoHooks),
    }
}

struct Opts {
    /// Pinned peers; `None`: accept any.
    pinned: Option<Vec<PeerId>>,
    seeds: Vec<MxpUrl>,
    operators: Vec<PeerId>,
    ttl: Duration,
    registry: RegistryLimits,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            pinned: None,
            seeds: vec![],
            operators: vec![],
            ttl: Duration::from_secs(2),
            registry: RegistryLimits::default(),
        }
    }
}

async fn node(agents: Vec<AgentSpec>, o: Opts) -> Node {
    node_as(NodeIdentity::generate().unwrap(), agents, o).await
}

async fn node_as(identity: NodeIdentity, agents: Vec<AgentSpec>, o: Opts) -> Node {
    let trust = match o.pinned {
        Some(p) => PeerTrust::pinned(p),
        None => PeerTrust::AnyIdentified,
    };
    let mut s = NodeSettings::new("127.0.0.1:0".parse().unwrap(), identity, trust, agents);
    s.seeds = o.seeds;
    s.operators = o.operators;
    s.heartbeat_interval = Duration::from_millis(100);
    s.agent_ttl = o.ttl;
    s.registry = o.registry;
    s.limits = Limits {
        peer_rate_per_sec: 1e9,
        peer_burst: 1e9,
        ..Limits::default()
    };
    Node::start(s).await.unwrap()
}

fn client(id: &NodeIdentity) -> Client {
    Client::new(id, PeerTrust::AnyIdentified, Limits::default()).unwrap()
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let end = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends an AgentRegister from `c`; the node's answer (Ok: its result).
async fn register(
    c: &Client,
    node: &MxpUrl,
    reg: &AgentRegister,
) -> Result<Value, (ErrorCode, String)> {
    let id = c.next_message_id();
    let frame = reg.to_frame(id, id, Flags::EMPTY).unwrap();
    let answer = c.exchange(node, frame, WAIT).await.unwrap();
    match mxp_transport::interpret_answer(&answer, id) {
        Ok(r) => Ok(r.parse_body().unwrap().result),
        Err(e) => Err((e.code(), e.to_string())),
    }
}

fn reg(n: u32, name: &str, endpoint: SocketAddrV4) -> AgentRegister {
    let mut id = [0xa0; 16];
    id[12..].copy_from_slice(&n.to_be_bytes());
    AgentRegister {
        agent_id: AgentId::from_bytes(id),
        name: name.into(),
        capabilities: vec!["demo".into()],
        endpoint,
    }
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("loopback v4 expected"),
    }
}

async fn list(n: &Node) -> Vec<Value> {
    n.control("agents.list", Value::Null).await.unwrap()["agents"]
        .as_array()
        .unwrap()
        .clone()
}

async fn status_of(n: &Node, id: AgentId) -> Option<String> {
    list(n)
        .await
        .into_iter()
        .find(|a| a["agent_id"] == json!(id))
        .map(|a| a["status"].as_str().unwrap_or_default().to_owned())
}

/// Row 4: one peer registering agents in a loop is stopped at its bound,
/// and the list is paged so no answer can outgrow a frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_registering_in_a_loop_is_bounded_and_lists_are_paged() {
    let n = node(
        vec![spec(1, "demo", &["demo"])],
        Opts {
            registry: RegistryLimits {
                max_agents_per_peer: 40,
                ..RegistryLimits::default()
            },
            ..Opts::default()
        },
    )
    .await;
    let c = client(&NodeIdentity::generate().unwrap());
    let url = n.url().clone().with_agent(NODE_AGENT);
    let ep = SocketAddrV4::new([127, 0, 0, 1].into(), 1);
    let mut refused = None;
    for i in 0..60 {
        match register(&c, &url, &reg(i, "flood", ep)).await {
            Ok(_) => assert!(i < 40, "registration {i} accepted past the bound"),
            Err(e) => {
                refused.get_or_insert((i, e));
            }
        }
    }
    let (first, (code, message)) = refused.expect("the flood was stopped");
    assert_eq!(first, 40);
    assert_eq!(code, ErrorCode::DENIED);
    assert!(message.contains("max_agents_per_peer"), "{message}");
    // Paged: 41 agents (40 remote + the local one), 16 a page.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = n
            .control("agents.list", json!({"after": after, "limit": 16}))
            .await
            .unwrap();
        let agents = page["agents"].as_array().unwrap().clone();
        assert!(agents.len() <= 16);
        seen.extend(agents);
        if page["next"].is_null() {
            break;
        }
        after = page["next"].clone();
    }
    assert_eq!(seen.len(), 41);
    // Discovery pages too, in id order, with owner and locality.
    let d = discover(&c, &url, "demo", None, Some(30)).await;
    assert_eq!(d.agents.len(), 30);
    let rest = discover(&c, &url, "demo", d.next, Some(30)).await;
    assert_eq!(rest.agents.len(), 11);
    assert!(rest.next.is_none());
    n.shutdown(Duration::from_secs(2)).await;
}

async fn discover(
    c: &Client,
    url: &MxpUrl,
    capability: &str,
    after: Option<AgentId>,
    limit: Option<u32>,
) -> DiscoverResult {
    let id = c.next_message_id();
    let frame = DiscoverRequest {
        capability: capability.into(),
        limit,
        after,
    }
    .to_frame(id, id, Flags::EMPTY)
    .unwrap();
    let answer = c.exchange(url, frame, WAIT).await.unwrap();
    let r = mxp_transport::interpret_answer(&answer, id).unwrap();
    serde_json::from_value(r.parse_body().unwrap().result).unwrap()
}

/// Row 5: an agent registered at the node's own address is refused, so a
/// Call for it is never forwarded to the node itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_at_the_nodes_own_address_is_refused() {
    let n = node(vec![spec(1, "demo", &["demo"])], Opts::default()).await;
    let c = client(&NodeIdentity::generate().unwrap());
    let url = n.url().clone().with_agent(NODE_AGENT);
    let own = v4(n.local_addr());
    let (code, message) = register(&c, &url, &reg(1, "z", own)).await.unwrap_err();
    assert_eq!(code, ErrorCode::DENIED);
    assert!(message.contains("own address"), "{message}");
    let err = c
        .call(
            &n.url().clone().with_agent(reg(1, "z", own).agent_id),
            &CallBody::new("echo", json!(1)),
            WAIT,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNKNOWN_AGENT, "{err}");
    assert_eq!(n.transport_stats().calls_in_flight, 0);
    n.shutdown(Duration::from_secs(2)).await;
}

/// Row 3: registrations naming many endpoints do not turn the node into a
/// dialer of addresses the peer chose: one identity has one endpoint, and
/// the nodes dialled are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_cannot_make_the_node_dial_hundreds_of_addresses() {
    let n = node(
        vec![spec(1, "demo", &["demo"])],
        Opts {
            registry: RegistryLimits {
                max_nodes: 8,
                ..RegistryLimits::default()
            },
            ..Opts::default()
        },
    )
    .await;
    let url = n.url().clone().with_agent(NODE_AGENT);
    // One identity, 100 endpoints: it keeps one.
    let c = client(&NodeIdentity::generate().unwrap());
    for i in 0..100u16 {
        let ep = SocketAddrV4::new([127, 0, 0, 1].into(), 20_000 + i);
        register(&c, &url, &reg(u32::from(i), "a", ep))
            .await
            .unwrap();
    }
    let status = n.control("node.status", Value::Null).await.unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 1, "{status}");
    // Twenty identities: at most max_nodes are kept.
    let mut refused = 0;
    for k in 0..20u16 {
        let c = client(&NodeIdentity::generate().unwrap());
        let ep = SocketAddrV4::new([127, 0, 0, 1].into(), 21_000 + k);
        if register(&c, &url, &reg(1000 + u32::from(k), "b", ep))
            .await
            .is_err()
        {
            refused += 1;
        }
    }
    assert!(refused >= 12, "{refused} of 20 refused");
    let status = n.control("node.status", Value::Null).await.unwrap();
    assert!(status["nodes"].as_array().unwrap().len() <= 8, "{status}");
    n.shutdown(Duration::from_secs(2)).await;
}

/// A registered endpoint is bound to its registrant: a peer that registers
/// an agent at another node's address does not get Calls delivered there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_reaches_only_a_node_presenting_the_registrants_identity() {
    let bystander = node(vec![spec(2, "bystander", &["x"])], Opts::default()).await;
    let n = node(vec![spec(1, "demo", &["demo"])], Opts::default()).await;
    let liar = client(&NodeIdentity::generate().unwrap());
    let victim_ep = v4(bystander.local_addr());
    let stolen = reg(7, "stolen", victim_ep);
    register(&liar, &n.url().clone().with_agent(NODE_AGENT), &stolen)
        .await
        .unwrap();
    let c = client(&NodeIdentity::generate().unwrap());
    let err = c
        .call(
            &n.url().clone().with_agent(stolen.agent_id),
            &CallBody::new("echo", json!(1)),
            WAIT,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNREACHABLE, "{err}");
    assert!(err.to_string().contains("not"), "{err}");
    assert_eq!(
        bystander.transport_stats().frames_in,
        0,
        "no frame reached the bystander"
    );
    n.shutdown(Duration::from_secs(2)).await;
    bystander.shutdown(Duration::from_secs(2)).await;
}

/// Row 7: names are not keys. A squatter's `!demo` is listed beside the
/// real `demo` by id, each with its owner and whether it is local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_shows_owner_and_locality_so_a_squatter_cannot_shadow() {
    let n = node(vec![spec(1, "demo", &["demo"])], Opts::default()).await;
    let squatter = NodeIdentity::generate().unwrap();
    let c = client(&squatter);
    let url = n.url().clone().with_agent(NODE_AGENT);
    register(
        &c,
        &url,
        &reg(0, "!demo", SocketAddrV4::new([127, 0, 0, 1].into(), 1)),
    )
    .await
    .unwrap();
    let found = discover(&c, &url, "demo", None, None).await;
    let real = found.agents.iter().find(|a| a.name == "demo").unwrap();
    let fake = found.agents.iter().find(|a| a.name == "!demo").unwrap();
    assert!(real.local);
    assert_eq!(real.owner, n.peer_id().to_string());
    assert!(!fake.local);
    assert_eq!(fake.owner, squatter.peer_id().to_string());
    n.shutdown(Duration::from_secs(2)).await;
}

/// A node that shuts down gracefully tells its peers, which mark its agents
/// offline at once, not after the TTL; a suspended agent shows offline on
/// the other nodes likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_suspension_are_seen_across_the_mesh_before_the_ttl() {
    let operator = NodeIdentity::generate().unwrap();
    let long = Duration::from_secs(120);
    let a = node(
        vec![spec(1, "a", &["a"])],
        Opts {
            ttl: long,
            ..Opts::default()
        },
    )
    .await;
    let b = node(
        vec![spec(2, "b", &["b"]), spec(3, "b2", &["b"])],
        Opts {
            seeds: vec![a.url().clone()],
            operators: vec![operator.peer_id()],
            ttl: long,
            ..Opts::default()
        },
    )
    .await;
    let (b1, b2) = (AgentId::from_bytes([2; 16]), AgentId::from_bytes([3; 16]));
    wait_for("a to know b's agents", async || {
        status_of(&a, b1).await.as_deref() == Some("online")
            && status_of(&a, b2).await.as_deref() == Some("online")
    })
    .await;
    // Suspended on b: offline on a within seconds, well inside the 120 s TTL.
    client(&operator)
        .call(
            &b.url().clone().with_agent(NODE_AGENT),
            &CallBody::new("agent.suspend", json!({"agent_id": b1})),
            WAIT,
        )
        .await
        .unwrap();
    wait_for("a to see b1 suspended", async || {
        status_of(&a, b1).await.as_deref() == Some("offline")
    })
    .await;
    assert_eq!(status_of(&a, b2).await.as_deref(), Some("online"));
    // b stops: a marks its agents offline at once.
    b.shutdown(Duration::from_secs(2)).await;
    wait_for("a to see b's agents offline", async || {
        status_of(&a, b2).await.as_deref() == Some("offline")
    })
    .await;
    a.shutdown(Duration::from_secs(2)).await;
}

/// A mesh node is a peer with agents registered here: its Calls for another
/// node's agents are not forwarded again (one hop), and the answer says
/// where the agent runs; a peer that registers nothing is forwarded for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_nodes_calls_go_one_hop_and_name_the_agents_node() {
    let n = node(vec![spec(1, "demo", &["demo"])], Opts::default()).await;
    let url = n.url().clone().with_agent(NODE_AGENT);
    let other = client(&NodeIdentity::generate().unwrap());
    let far = reg(1, "far", SocketAddrV4::new([127, 0, 0, 1].into(), 7));
    register(&other, &url, &far).await.unwrap();
    let meshy = client(&NodeIdentity::generate().unwrap());
    register(
        &meshy,
        &url,
        &reg(2, "mine", SocketAddrV4::new([127, 0, 0, 1].into(), 8)),
    )
    .await
    .unwrap();
    let err = meshy
        .call(
            &n.url().clone().with_agent(far.agent_id),
            &CallBody::new("echo", json!(1)),
            WAIT,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNKNOWN_AGENT, "{err}");
    assert!(err.to_string().contains("127.0.0.1:7"), "{err}");
    // A plain client is forwarded for (here: the node at :7 is not there).
    let plain = client(&NodeIdentity::generate().unwrap());
    let err = plain
        .call(
            &n.url().clone().with_agent(far.agent_id),
            &CallBody::new("echo", json!(1)),
            WAIT,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNREACHABLE, "{err}");
    n.shutdown(Duration::from_secs(2)).await;
}

/// Row 6: B trusts only A; a stranger calling B's agent through A is not
/// answered: B sees the forwarder and the caller, takes A's word for who
/// the caller is, and the caller is not one B trusts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_peers_hold_end_to_end_through_a_forward() {
    let a = node(vec![spec(1, "a", &["a"])], Opts::default()).await;
    let trusted = NodeIdentity::generate().unwrap();
    let b = node(
        vec![spec(2, "b", &["b"])],
        Opts {
            pinned: Some(vec![a.peer_id(), trusted.peer_id()]),
            seeds: vec![a.url().clone()],
            ..Opts::default()
        },
    )
    .await;
    let b_agent = AgentId::from_bytes([2; 16]);
    wait_for("a to know b's agent", async || {
        status_of(&a, b_agent).await.as_deref() == Some("online")
    })
    .await;
    let via_a = a.url().clone().with_agent(b_agent);
    let stranger = client(&NodeIdentity::generate().unwrap());
    let err = stranger
        .call(&via_a, &CallBody::new("echo", json!("let me in")), WAIT)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNAUTHENTICATED, "{err}");
    assert!(err.to_string().contains("trusted peers"), "{err}");
    // A caller b trusts is answered through a, as itself.
    let r = client(&trusted)
        .call(&via_a, &CallBody::new("echo", json!("hello")), WAIT)
        .await
        .unwrap();
    assert_eq!(r.parse_body().unwrap().result, json!("hello"));
    // A caller forging the caller field gains nothing: a's own member wins.
    let forged = format!(
        r#"{{"method":"echo","params":1,"caller":"{}"}}"#,
        trusted.peer_id()
    );
    let err = stranger
        .call_raw(&via_a, b_agent, bytes::Bytes::from(forged), WAIT)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNAUTHENTICATED, "{err}");
    b.shutdown(Duration::from_secs(2)).await;
    a.shutdown(Duration::from_secs(2)).await;
}
