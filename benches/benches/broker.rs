//! The broker's tools beside what they wrap, side by side in one run:
//!
//! * `fs_read_4k`: `fs.read` through the broker beside `std::fs::read` of
//!   the same 4 KiB file (issue 10's goal: at most 1.2x), and two of its
//!   parts alone: the jailed read (`FsRoot::read`) and the enforcer's token
//!   verification;
//! * `http_fetch_loopback_get`: a GET of a keep-alive loopback server
//!   through `http.fetch` (the tool: token verified, `Broker::run`, the
//!   fetch), through its core alone (`HttpFetcher`: the checks, the
//!   filtering resolver, the bounded body read), and with a bare reqwest
//!   client, with and without the broker's timeouts (goal: at most 1.1x).
//!   The tool runs here without the outcome ledger: a node's ledger adds two
//!   durable writes per external effect, priced by `audit_store`'s single
//!   durable append.
//!
//! The broker's side is what a plan step pays once the gate has allowed
//! it: the enforcer verifies the capability token against the arguments
//! (digest recomputed, MAC checked, nonce spent) into a `Grant`, and the
//! `fs.read` tool runs its act through `Broker::run` (idempotency split,
//! secret references resolved, the jailed read under the root, redaction,
//! output bound) and returns JSON. The gate's decision and mint happen in
//! the untimed setup of each iteration (`benches/gate.rs` measures them).
//!
//! Run: `cargo bench -p mxp-benches --bench broker`
//! The fetches reach loopback only because the settings allow the
//! Loopback class explicitly.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mxp_actors::gate::InFlight;
use mxp_actors::{
    AgentStatus, Allowed, EffectClass, Facts, Gate, GateSettings, Intent, Outcome, Policy,
    Services, Tool, ToolContext,
};
use mxp_broker::Broker;
use mxp_broker::ToolLimits;
use mxp_broker::addr::AddrClass;
use mxp_broker::fs::{FsLimits, FsRoot};
use mxp_broker::http::{FetchRequest, HostRule, HttpFetcher, HttpSettings, StaticResolver};
use mxp_broker::secret::SecretStore;
use mxp_broker::tools::HttpTool;
use mxp_broker::tools::fs_tools;
use mxp_governance::token::args::args_digest;
use mxp_protocol::AgentId;
use mxp_transport::{Bus, PeerId};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct AllowAll;

impl Policy for AllowAll {
    fn decide(&self, _: &Intent, _: &Facts) -> Outcome {
        Outcome::allow(vec!["bench.allow_all".into()])
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

const BODY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nhello, world\n";

/// A keep-alive HTTP/1.1 server answering every request with `BODY`.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    match s.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        if s.write_all(BODY).await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                    if have == buf.len() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The node's services behind an allow-all gate, one agent, one session:
/// what a tool call needs once the gate has allowed it.
struct Env {
    services: Services,
    agent: AgentId,
    principal: mxp_transport::Principal,
    session: mxp_protocol::SessionId,
}

impl Env {
    fn new() -> Env {
        let auth = Bus::new(1)
            .take_authority(PeerId::from_spki(b"broker bench"), [])
            .unwrap();
        // Tokens live 2 s here: at the bench's rate (hundreds of
        // thousands a second) a node's 30 s would fill the nonce ledger
        // (2^20 live nonces), which then refuses new tokens (fail closed).
        let settings = GateSettings {
            token_ttl: Duration::from_secs(2),
            ..GateSettings::default()
        };
        let gate = Gate::new(Arc::new(AllowAll), settings, None).unwrap();
        let services = Services::new(Arc::new(auth), gate, 1024, Duration::from_secs(600));
        let principal = services.authority().agent(AgentId::from_bytes([9; 16]));
        Env {
            services,
            agent: AgentId::from_bytes([1; 16]),
            principal,
            session: "s-bench".parse().unwrap(),
        }
    }

    /// The gate's allow (decision and token mint) for one intent: the
    /// untimed part of an iteration.
    fn allowed(&self, tool: &str, effect: EffectClass, args: Value, i: u64) -> Allowed {
        self.services
            .check(Intent {
                principal: self.principal,
                agent: self.agent,
                session: Some(self.session.clone()),
                tool: tool.into(),
                effect,
                args,
                trace_id: i,
                message_id: i,
            })
            .unwrap()
    }

    fn status(&self) -> impl Fn() -> AgentStatus + Send + Sync + use<> {
        let agent = self.agent;
        move || AgentStatus {
            agent_id: agent,
            name: "bench".into(),
            capabilities: Vec::new(),
            state: mxp_actors::LifecycleState::Active,
            in_flight: 0,
            calls_handled: 0,
            restarts: 0,
            uptime_secs: 0,
        }
    }
}

fn fs_read(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let content: String = (0..4096)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    std::fs::write(dir.path().join("doc.txt"), &content).unwrap();
    let path = dir.path().join("doc.txt");
    let env = Env::new();
    let broker = Arc::new(Broker::new(SecretStore::new(), None));
    let root = FsRoot::open(dir.path(), FsLimits::default()).unwrap();
    let tools = fs_tools(root, broker, ToolLimits::default());
    let read: Arc<dyn Tool> = tools.into_iter().find(|t| t.name() == "fs.read").unwrap();
    let idle = InFlight::default();
    let status = env.status();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("fs_read_4k");
    g.bench_function("std_fs_read", |b| {
        b.iter(|| black_box(std::fs::read(black_box(&path)).unwrap()))
    });
    // The parts of the broker's path, to see where its cost is: the jailed
    // read alone, and the enforcer's verification alone.
    let jail = FsRoot::open(dir.path(), FsLimits::default()).unwrap();
    g.bench_function("jail_read_only", |b| {
        b.iter(|| black_box(jail.read(black_box("doc.txt")).unwrap()))
    });
    let mut k = 0u64;
    g.bench_function("token_verify_only", |b| {
        b.iter_batched(
            || {
                k += 1;
                env.allowed(
                    "fs.read",
                    EffectClass::ReadOnly,
                    json!({"path": "doc.txt"}),
                    u64::MAX / 2 + k,
                )
            },
            |allowed| {
                let digest = args_digest(&allowed.intent().args);
                let grant = env
                    .services
                    .enforcer()
                    .grant(&allowed, &digest, &idle, now_ms())
                    .unwrap();
                black_box(grant.args().is_object())
            },
            BatchSize::SmallInput,
        )
    });
    let mut i = 0u64;
    g.bench_function("broker", |b| {
        b.iter_batched(
            || {
                i += 1;
                env.allowed(
                    "fs.read",
                    EffectClass::ReadOnly,
                    json!({"path": "doc.txt"}),
                    i,
                )
            },
            |allowed| {
                let digest = args_digest(&allowed.intent().args);
                let grant = env
                    .services
                    .enforcer()
                    .grant(&allowed, &digest, &idle, now_ms())
                    .unwrap();
                let ctx = ToolContext::new(env.agent, &env.principal, &env.session, &status);
                let out = rt.block_on(read.execute(&ctx, grant)).unwrap();
                black_box(out)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn http_fetch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(server());
    let port = addr.port();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let fetcher = rt.block_on(async {
        HttpFetcher::new(
            HttpSettings {
                allow: vec![HostRule {
                    host: "bench.test".into(),
                    port: Some(port),
                }],
                allowed_classes: vec![AddrClass::Loopback],
                ..HttpSettings::default()
            },
            StaticResolver::new().with("bench.test", &[loopback]),
        )
        .unwrap()
    });
    let url = format!("http://bench.test:{port}/");
    let bare_url = format!("http://127.0.0.1:{port}/");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let settings = HttpSettings::default();
    let bare = rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .tls_backend_preconfigured(tls.clone())
            .build()
            .unwrap()
    });
    // The same client with the broker's default timeouts: reqwest arms a
    // timer per request for the total timeout.
    let bare_timed = rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .tls_backend_preconfigured(tls)
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .build()
            .unwrap()
    });

    let mut g = c.benchmark_group("http_fetch_loopback_get");
    g.bench_function("broker_fetch", |b| {
        b.to_async(&rt).iter(|| async {
            let req = FetchRequest::from_json(&serde_json::json!({ "url": url })).unwrap();
            let r = fetcher.fetch(req).await.unwrap();
            black_box(r.body.len())
        })
    });
    g.bench_function("bare_reqwest_get", |b| {
        b.to_async(&rt).iter(|| async {
            let r = bare.get(&bare_url).send().await.unwrap();
            let body = r.bytes().await.unwrap();
            black_box(body.len())
        })
    });
    g.bench_function("bare_reqwest_get_with_timeouts", |b| {
        b.to_async(&rt).iter(|| async {
            let r = bare_timed.get(&bare_url).send().await.unwrap();
            let body = r.bytes().await.unwrap();
            black_box(body.len())
        })
    });
    // The tool: what a plan step pays once the gate allowed it.
    let tool: Arc<dyn Tool> = Arc::new(HttpTool::new(
        rt.block_on(async {
            HttpFetcher::new(
                HttpSettings {
                    allow: vec![HostRule {
                        host: "bench.test".into(),
                        port: Some(port),
                    }],
                    allowed_classes: vec![AddrClass::Loopback],
                    ..HttpSettings::default()
                },
                StaticResolver::new().with("bench.test", &[loopback]),
            )
            .unwrap()
        }),
        Arc::new(Broker::new(SecretStore::new(), None)),
        ToolLimits::default(),
    ));
    let env = Env::new();
    let idle = InFlight::default();
    let mut i = 0u64;
    g.bench_function("broker_tool", |b| {
        b.to_async(&rt).iter_batched(
            || {
                i += 1;
                env.allowed(
                    "http.fetch",
                    EffectClass::ExternalWrite,
                    json!({ "url": url }),
                    i,
                )
            },
            |allowed| {
                let (env, tool, idle) = (&env, &tool, &idle);
                async move {
                    let digest = args_digest(&allowed.intent().args);
                    let grant = env
                        .services
                        .enforcer()
                        .grant(&allowed, &digest, idle, now_ms())
                        .unwrap();
                    let status = env.status();
                    let ctx = ToolContext::new(env.agent, &env.principal, &env.session, &status);
                    black_box(tool.execute(&ctx, grant).await.unwrap())
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, fs_read, http_fetch);
criterion_main!(benches);
