//! A whole node against the transport and the bus it is built on, two pairs
//! run side by side on the same runtime configuration:
//!
//! * `node_call`: a Call's round trip on loopback with a 256-byte JSON body
//!   `{"method":"echo","params":"aaa…"}`, at 1, 16 and 256 calls in flight:
//!   * `node`: `mxp_actors::Node` hosting one agent (`RulePlanner` default
//!     rules, `NoHooks`, `SupervisionPolicy::default()`): QUIC, the server's
//!     routing on the node's bus, the agent's bridge task, kernel (lifecycle
//!     check, hooks), planner (plan, the built-in `echo` tool) and the
//!     Response through the Reply port;
//!   * `transport`: `mxp_transport::Server` over a `Bus` with an echo task
//!     reading the Mailbox and answering `Reply::ok(params)`, exactly as the
//!     `mxp` contender of `quic.rs`;
//!
//!   both called with `Client::call_raw` and the same pre-built body; mutual
//!   TLS, `PeerTrust::AnyIdentified`; `Limits::default()` with the per-peer
//!   rate limit lifted on both servers and both clients.
//! * `node_frames`: Call frames moved into one agent and answered, in
//!   answers/s. One producer task sends 10 000 pre-built Call frames per
//!   iteration (cloned: a refcount bump), each with its own reply port,
//!   through an `AgentSender` into the agent's `Mailbox`; a collector task
//!   awaits every answer in order (at most 1024 answers outstanding):
//!   * `bus`: the bus alone; a consumer task reads the Mailbox with
//!     `recv_many` (256) and answers each Call with `Reply::ok(Value::Null)`;
//!   * `bus_echo` (diagnostic): the same consumer, but it parses each Call's
//!     body and answers with its params, as the `transport` echo does: the
//!     JSON work the agent also does, without actors;
//!   * `agent_batch64`: the same frames into an agent hosted by a `Node`, via
//!     `Node::bus()`: bridge, kernel, planner, `echo` tool, Response;
//!     `SupervisionPolicy::default()` (64 envelopes per ractor message);
//!   * `agent_batch1`: the same with `SupervisionPolicy { batch: 1, .. }`.
//! * `governed_call`: the `node_call` Call at 1 and 256 in flight against
//!   three servers side by side: `governed` (the node with the shipped
//!   Cedar set: kill switch, Cedar decision, budgets, MAC token minted at
//!   the gate and verified by the enforcer), `allow_all` (the same node
//!   whose policy allows everything without Cedar: still a token per
//!   Call, since no path bypasses the gate), `transport` (the echo above)
//!   and `audited` (the governed node recording every step in a durable
//!   audit log: the store's append-only audit file in a temporary folder,
//!   one `fdatasync` per group commit).
//!   The goal ratio is governed ÷ allow_all ≤ 1.25; audited is quoted
//!   beside governed.
//! * `node_rtt` (diagnostic): one Call at a time in-process, no QUIC,
//!   `bus_echo` against `agent_batch64`: what the agent's extra hops (bridge,
//!   kernel, planner) add to a round trip when nothing else is running.
//!
//! Everything (clients, servers, nodes, agents, producers) runs on one tokio
//! multi-thread runtime with 2 worker threads per group.
//!
//! Run: `cargo bench -p mxp-benches --bench node` (about 1 minute).
//!
//! Criterion reports time per call (or per answered frame) and its rate. The
//! `RESULT node …` lines on stderr are computed from this file's own samples
//! (warm-up included): p50, p99 and calls/s per contender and concurrency,
//! frames/s per `node_frames` contender, p50/p99 per `node_rtt` contender,
//! and the ratios against the goals:
//! node p50 ≤ 1.3 × transport p50; agent/bus-alone frames/s; batch 64 / 1.
//! Results: docs/BENCHMARKS-node.md.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use mxp_actors::{
    AgentSpec, Facts, Gate, Intent, NoHooks, Node, NodeSettings, Outcome, Policy, RulePlanner,
    SupervisionPolicy,
};
use mxp_benches::{CallFn, Samples, call_body, drive, percentile, runtime};
use mxp_protocol::{AgentId, Call, Flags, Frame, MessageType, TypedPayload};
use mxp_transport::{
    AgentSender, Bus, Client, Envelope, Limits, Mailbox, MxpUrl, NodeIdentity, PeerId, PeerTrust,
    Principal, Server,
};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

const INFLIGHT: [usize; 3] = [1, 16, 256];

/// A principal for in-process senders: the node's own, from a bus's authority.
fn me() -> Principal {
    Bus::new(1)
        .take_authority(PeerId::from_spki(b"bench node"), [])
        .unwrap()
        .node()
}
const TIMEOUT: Duration = Duration::from_secs(10);
const AGENT: AgentId = AgentId::from_bytes([1; 16]);
/// Call frames per criterion iteration in `node_frames`.
const FRAMES: u64 = 10_000;
/// Answers the `node_frames` collector may be waiting for at once.
const WINDOW: usize = 1024;
/// Envelopes the bus-alone consumers take per `recv_many`.
const BATCH: usize = 256;

/// The per-peer rate limit (50 000/s, burst 100 000 by default) would answer
/// part of this load with `rate_limited`: lift it, as `quic.rs` does.
fn limits() -> Limits {
    Limits {
        peer_rate_per_sec: 1e9,
        peer_burst: 1e9,
        ..Limits::default()
    }
}

fn spec() -> AgentSpec {
    AgentSpec {
        id: AGENT,
        name: "bench".into(),
        capabilities: vec!["echo".into()],
        planner: Arc::new(RulePlanner::default_rules()),
        tools: Arc::new(mxp_actors::ToolRegistry::builtin()),
        hooks: Arc::new(NoHooks),
    }
}

/// A node on loopback hosting one agent, with no seeds (no mesh traffic).
async fn start_node(supervision: SupervisionPolicy) -> Node {
    start_node_with(supervision, Gate::default()).await
}

/// Allows every intent at once: the gate's own work (token mint and
/// verify, budgets, kill switch) without a Cedar evaluation.
struct AllowAll;

impl Policy for AllowAll {
    fn decide(&self, _: &Intent, _: &Facts) -> Outcome {
        Outcome::allow(vec!["bench.allow_all".into()])
    }
}

/// As [`start_node`], deciding with `gate`.
async fn start_node_with(supervision: SupervisionPolicy, gate: Gate) -> Node {
    Node::start(NodeSettings {
        gate,
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        identity: NodeIdentity::generate().unwrap(),
        trust: PeerTrust::AnyIdentified,
        limits: limits(),
        seeds: vec![],
        heartbeat_interval: Duration::from_secs(5),
        agent_ttl: Duration::from_secs(15),
        operators: vec![],
        agents: vec![spec()],
        supervision,
        ..NodeSettings::new(
            "127.0.0.1:0".parse().unwrap(),
            NodeIdentity::generate().unwrap(),
            PeerTrust::AnyIdentified,
            vec![],
        )
    })
    .await
    .unwrap()
}

fn client(rt: &Runtime) -> Arc<Client> {
    let _guard = rt.enter();
    Arc::new(
        Client::new(
            &NodeIdentity::generate().unwrap(),
            PeerTrust::AnyIdentified,
            limits(),
        )
        .unwrap(),
    )
}

fn call_fn(client: &Arc<Client>, url: &MxpUrl, body: &Bytes) -> CallFn {
    let (client, url, body) = (client.clone(), url.clone(), body.clone());
    Arc::new(move || {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        Box::pin(async move {
            let r = client.call_raw(&url, AGENT, body, TIMEOUT).await.unwrap();
            assert!(!r.body.is_empty());
        })
    })
}

// ---- transport echo (quic.rs's `mxp` contender) -------------------------

/// Answers every Call at once with its params.
async fn echo_agent(mut mailbox: Mailbox) {
    let mut buf = Vec::with_capacity(256);
    while mailbox.recv_many(&mut buf, 256).await > 0 {
        for mut env in buf.drain(..) {
            let Some(reply) = env.take_reply() else {
                continue;
            };
            let call = Call::from_frame(env.frame()).unwrap();
            let params = call.parse_body().unwrap().params;
            let _ = reply.ok(params);
        }
    }
}

/// Answers every Call at once with `null`, without reading it.
async fn null_agent(mut mailbox: Mailbox) {
    let mut buf = Vec::with_capacity(BATCH);
    while mailbox.recv_many(&mut buf, BATCH).await > 0 {
        for mut env in buf.drain(..) {
            if let Some(reply) = env.take_reply() {
                let _ = reply.ok(Value::Null);
            }
        }
    }
}

fn transport_setup(rt: &Runtime) -> (Server, MxpUrl) {
    let _guard = rt.enter();
    let limits = limits();
    let bus = Bus::new(limits.mailbox_capacity);
    rt.spawn(echo_agent(bus.register(AGENT).unwrap()));
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        limits,
        bus,
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let url = MxpUrl::new(addr.ip().to_string(), addr.port(), Some(AGENT));
    (server, url)
}

// ---- node_call -------------------------------------------------------------

fn node_call(c: &mut Criterion) {
    let rt = runtime();
    let body = call_body();
    let node = rt.block_on(start_node(SupervisionPolicy::default()));
    let node_url = node.url().clone().with_agent(AGENT);
    let (server, transport_url) = transport_setup(&rt);
    let (node_client, transport_client) = (client(&rt), client(&rt));
    eprintln!(
        "RESULT node setup body_bytes={} runtime=multi_thread(2 workers) mailbox_capacity={}",
        body.len(),
        limits().mailbox_capacity
    );

    let mut group = c.benchmark_group("node_call");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for inflight in INFLIGHT {
        let mut results = Vec::new();
        for (name, call) in [
            ("node", call_fn(&node_client, &node_url, &body)),
            (
                "transport",
                call_fn(&transport_client, &transport_url, &body),
            ),
        ] {
            // Open the connection before measuring.
            rt.block_on(drive((inflight * 4) as u64, inflight, call.clone()));
            let mut samples = Samples::default();
            group.bench_function(
                BenchmarkId::new(name, format!("inflight={inflight}")),
                |b| {
                    b.iter_custom(|iters| {
                        let (wall, lat) = rt.block_on(drive(iters, inflight, call.clone()));
                        samples.calls += iters;
                        samples.wall += wall;
                        samples.latencies.extend(lat);
                        wall
                    })
                },
            );
            results.push(samples.report("node call", name, inflight));
        }
        if let [(node_p50, node_rate), (tr_p50, tr_rate)] = results[..]
            && node_p50.is_finite()
            && tr_p50.is_finite()
        {
            eprintln!(
                "RESULT node call ratio inflight={inflight} node_p50/transport_p50={:.2} (goal <= 1.3) node_calls/transport_calls={:.2}",
                node_p50 / tr_p50,
                node_rate / tr_rate
            );
        }
    }
    group.finish();
    rt.block_on(async {
        node.shutdown(Duration::from_secs(1)).await;
        server.shutdown(Duration::from_secs(1)).await;
        node_client.close().await;
        transport_client.close().await;
    });
}

// ---- governed_call ---------------------------------------------------------

/// The governed Call against the same node with a policy that allows
/// everything, and against the transport echo, at 1 and 256 in flight.
fn governed_call(c: &mut Criterion) {
    let rt = runtime();
    let body = call_body();
    let governed = rt.block_on(start_node(SupervisionPolicy::default()));
    let allow_all = rt.block_on(start_node_with(
        SupervisionPolicy::default(),
        Gate::with_policy(Arc::new(AllowAll)),
    ));
    // The governed node again, recording every step in a durable audit
    // log (redb, one fsync'ed commit per group commit) in a temporary folder.
    let audit_dir = tempfile::tempdir().unwrap();
    let audited = rt.block_on(async {
        let store = mxp_actors::store::Store::open(&audit_dir.path().join("store")).unwrap();
        let log = mxp_actors::store::AuditLog::open(store.clone()).unwrap();
        let gate = Gate::new(
            Arc::new(mxp_actors::CedarPolicy::default_set()),
            mxp_actors::GateSettings::default(),
            Some(store),
        )
        .unwrap();
        let mut s = NodeSettings::new(
            "127.0.0.1:0".parse().unwrap(),
            NodeIdentity::generate().unwrap(),
            PeerTrust::AnyIdentified,
            vec![spec()],
        );
        s.limits = limits();
        s.gate = gate;
        s.audit = mxp_actors::audit::Auditor::start(log).unwrap();
        Node::start(s).await.unwrap()
    });
    let (server, transport_url) = transport_setup(&rt);
    let clients = [client(&rt), client(&rt), client(&rt), client(&rt)];
    let urls = [
        governed.url().clone().with_agent(AGENT),
        allow_all.url().clone().with_agent(AGENT),
        transport_url,
        audited.url().clone().with_agent(AGENT),
    ];
    let mut group = c.benchmark_group("governed_call");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for inflight in [1, 256] {
        let mut results = Vec::new();
        for (i, name) in ["governed", "allow_all", "transport", "audited"]
            .into_iter()
            .enumerate()
        {
            let call = call_fn(&clients[i], &urls[i], &body);
            rt.block_on(drive((inflight * 4) as u64, inflight, call.clone()));
            let mut samples = Samples::default();
            group.bench_function(
                BenchmarkId::new(name, format!("inflight={inflight}")),
                |b| {
                    b.iter_custom(|iters| {
                        let (wall, lat) = rt.block_on(drive(iters, inflight, call.clone()));
                        samples.calls += iters;
                        samples.wall += wall;
                        samples.latencies.extend(lat);
                        wall
                    })
                },
            );
            results.push(samples.report("governed call", name, inflight));
        }
        if let [(g, g_rate), (a, a_rate), (t, _), (au, au_rate)] = results[..]
            && g.is_finite()
            && a.is_finite()
            && t.is_finite()
        {
            eprintln!(
                "RESULT governed call ratio inflight={inflight} governed_p50/allow_all_p50={:.2} (goal <= 1.25) allow_all_calls/governed_calls={:.2} governed_p50/transport_p50={:.2}",
                g / a,
                a_rate / g_rate,
                g / t
            );
            eprintln!(
                "RESULT governed call audit inflight={inflight} audited_p50/governed_p50={:.2} governed_calls/audited_calls={:.2}",
                au / g,
                g_rate / au_rate
            );
        }
    }
    group.finish();
    rt.block_on(async {
        governed.shutdown(Duration::from_secs(1)).await;
        allow_all.shutdown(Duration::from_secs(1)).await;
        audited.shutdown(Duration::from_secs(1)).await;
        server.shutdown(Duration::from_secs(1)).await;
        for c in &clients {
            c.close().await;
        }
    });
}

// ---- node_frames -----------------------------------------------------------

/// Sends `n` copies of `frame`, each with a reply port of `bus`, through
/// `sender`, from one task; a second task awaits the answers in order.
/// Returns the time until the last answer arrived.
async fn pump(bus: Bus, sender: AgentSender, frame: Frame, n: u64) -> Duration {
    let (tx, mut rx) = mpsc::channel::<oneshot::Receiver<Frame>>(WINDOW);
    let start = Instant::now();
    let collector = tokio::spawn(async move {
        let mut got = 0u64;
        while let Some(answer) = rx.recv().await {
            let f = answer.await.expect("the agent dropped a call");
            assert_eq!(f.message_type(), MessageType::Response);
            got += 1;
        }
        got
    });
    let me = me();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            let (reply, answer) = bus.reply_port(i + 1, i + 1);
            sender
                .send(Envelope::new(frame.clone(), me, Some(reply)))
                .await
                .unwrap();
            tx.send(answer).await.unwrap();
        }
    });
    producer.await.unwrap();
    assert_eq!(collector.await.unwrap(), n);
    start.elapsed()
}

/// Where `node_frames` and `node_rtt` send their Calls: a bare Mailbox with
/// a consumer task, or a hosted agent; the node (if any) and the consumer
/// are kept alive until `stop`.
struct Target {
    bus: Bus,
    sender: AgentSender,
    node: Option<Node>,
    consumer: Option<tokio::task::JoinHandle<()>>,
}

impl Target {
    fn start(rt: &Runtime, name: &str) -> Target {
        rt.block_on(async {
            let (bus, node, consumer) = if name.starts_with("bus") {
                let bus = Bus::new(limits().mailbox_capacity);
                let mailbox = bus.register(AGENT).unwrap();
                let consumer = if name == "bus" {
                    tokio::spawn(null_agent(mailbox))
                } else {
                    tokio::spawn(echo_agent(mailbox))
                };
                (bus, None, Some(consumer))
            } else {
                let policy = SupervisionPolicy {
                    batch: if name == "agent_batch1" { 1 } else { 64 },
                    ..SupervisionPolicy::default()
                };
                let node = start_node(policy).await;
                (node.bus().clone(), Some(node), None)
            };
            let sender = bus.sender(AGENT).unwrap();
            Target {
                bus,
                sender,
                node,
                consumer,
            }
        })
    }

    fn stop(self, rt: &Runtime) {
        if let Some(c) = self.consumer {
            c.abort();
        }
        if let Some(node) = self.node {
            rt.block_on(node.shutdown(Duration::from_secs(1)));
        }
    }
}

fn call_frame() -> Frame {
    Call {
        target: AGENT,
        timeout_secs: 10,
        body: call_body(),
    }
    .to_frame(1, 1, Flags::EMPTY)
    .unwrap()
}

fn node_frames(c: &mut Criterion) {
    let rt = runtime();
    let frame = call_frame();
    eprintln!(
        "RESULT node frames setup call_frame_bytes={} frames_per_iteration={FRAMES} window={WINDOW} runtime=multi_thread(2 workers)",
        frame.as_bytes().len()
    );
    let mut group = c.benchmark_group("node_frames");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(FRAMES));

    let mut rates = Vec::new();
    for name in ["bus", "bus_echo", "agent_batch64", "agent_batch1"] {
        let t = Target::start(&rt, name);
        rt.block_on(pump(
            t.bus.clone(),
            t.sender.clone(),
            frame.clone(),
            WINDOW as u64,
        ));
        let (mut frames, mut wall) = (0u64, Duration::ZERO);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let n = iters * FRAMES;
                let elapsed = rt.block_on(pump(t.bus.clone(), t.sender.clone(), frame.clone(), n));
                frames += n;
                wall += elapsed;
                elapsed
            })
        });
        if frames > 0 {
            let rate = frames as f64 / wall.as_secs_f64();
            eprintln!(
                "RESULT node frames {name} frames_per_s={rate:.0} ns_per_frame={:.1} frames={frames}",
                1e9 / rate
            );
            rates.push((name, rate));
        }
        t.stop(&rt);
    }
    let rate = |n: &str| rates.iter().find(|(k, _)| *k == n).map(|(_, r)| *r);
    if let (Some(bus), Some(echo), Some(b64), Some(b1)) = (
        rate("bus"),
        rate("bus_echo"),
        rate("agent_batch64"),
        rate("agent_batch1"),
    ) {
        eprintln!(
            "RESULT node frames ratio agent_batch64/bus={:.2} agent_batch1/bus={:.2} agent_batch64/bus_echo={:.2} bus_echo/bus={:.2} batch64/batch1={:.2}",
            b64 / bus,
            b1 / bus,
            b64 / echo,
            echo / bus,
            b64 / b1
        );
    }
    group.finish();
}

/// `iters` Calls one after the other from one task; every round trip in ns.
async fn round_trips(bus: Bus, sender: AgentSender, frame: Frame, iters: u64) -> Vec<u64> {
    let me = me();
    tokio::spawn(async move {
        let mut lat = Vec::with_capacity(usize::try_from(iters).unwrap_or(0));
        for i in 0..iters {
            let t = Instant::now();
            let (reply, answer) = bus.reply_port(i + 1, i + 1);
            sender
                .send(Envelope::new(frame.clone(), me, Some(reply)))
                .await
                .unwrap();
            let f = answer.await.expect("the agent dropped a call");
            assert_eq!(f.message_type(), MessageType::Response);
            lat.push(t.elapsed().as_nanos() as u64);
        }
        lat
    })
    .await
    .unwrap()
}

/// Diagnostic: one Call at a time in-process, no QUIC: what the agent's
/// hops (bridge, kernel, planner) add to a round trip over the bus echo.
fn node_rtt(c: &mut Criterion) {
    let rt = runtime();
    let frame = call_frame();
    let mut group = c.benchmark_group("node_rtt");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    let mut p50s = Vec::new();
    for name in ["bus_echo", "agent_batch64"] {
        let t = Target::start(&rt, name);
        rt.block_on(round_trips(
            t.bus.clone(),
            t.sender.clone(),
            frame.clone(),
            100,
        ));
        let mut lat: Vec<u64> = Vec::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let samples = rt.block_on(round_trips(
                    t.bus.clone(),
                    t.sender.clone(),
                    frame.clone(),
                    iters,
                ));
                let total = Duration::from_nanos(samples.iter().sum());
                lat.extend(samples);
                total
            })
        });
        if !lat.is_empty() {
            lat.sort_unstable();
            let (p50, p99) = (percentile(&lat, 50), percentile(&lat, 99));
            eprintln!(
                "RESULT node rtt {name} p50_ns={p50} p99_ns={p99} samples={}",
                lat.len()
            );
            p50s.push(p50);
        }
        t.stop(&rt);
    }
    if let [echo, agent] = p50s[..] {
        eprintln!(
            "RESULT node rtt ratio agent_p50/bus_echo_p50={:.2} agent_p50-bus_echo_p50_ns={}",
            agent as f64 / echo.max(1) as f64,
            agent.saturating_sub(echo)
        );
    }
    group.finish();
}

criterion_group!(benches, node_call, governed_call, node_frames, node_rtt);
criterion_main!(benches);
