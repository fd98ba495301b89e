//! `fs.read` through the broker beside `std::fs::read` of the same 4 KiB
//! file, side by side in one run (issue 10's goal: at most 1.2x).
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
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mxp_actors::gate::InFlight;
use mxp_actors::{
    AgentStatus, EffectClass, Facts, Gate, Intent, Outcome, Policy, Services, Tool, ToolContext,
};
use mxp_broker::Broker;
use mxp_broker::ToolLimits;
use mxp_broker::fs::{FsLimits, FsRoot};
use mxp_broker::secret::SecretStore;
use mxp_broker::tools::fs_tools;
use mxp_governance::token::args::args_digest;
use mxp_protocol::AgentId;
use mxp_transport::{Bus, PeerId};
use serde_json::json;

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

fn fs_read(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let content: String = (0..4096)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    std::fs::write(dir.path().join("doc.txt"), &content).unwrap();
    let path = dir.path().join("doc.txt");

    let auth = Bus::new(1)
        .take_authority(PeerId::from_spki(b"broker bench"), [])
        .unwrap();
    let services = Services::new(
        Arc::new(auth),
        Gate::with_policy(Arc::new(AllowAll)),
        1024,
        Duration::from_secs(600),
    );
    let agent = AgentId::from_bytes([1; 16]);
    let principal = services.authority().agent(AgentId::from_bytes([9; 16]));
    let session: mxp_protocol::SessionId = "s-bench".parse().unwrap();
    let broker = Arc::new(Broker::new(SecretStore::new(), None));
    let root = FsRoot::open(dir.path(), FsLimits::default()).unwrap();
    let tools = fs_tools(root, broker, ToolLimits::default());
    let read: Arc<dyn Tool> = tools.into_iter().find(|t| t.name() == "fs.read").unwrap();
    let idle = InFlight::default();
    let status = move || AgentStatus {
        agent_id: agent,
        name: "bench".into(),
        capabilities: Vec::new(),
        state: mxp_actors::LifecycleState::Active,
        in_flight: 0,
        calls_handled: 0,
        restarts: 0,
        uptime_secs: 0,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("fs_read_4k");
    g.bench_function("std_fs_read", |b| {
        b.iter(|| black_box(std::fs::read(black_box(&path)).unwrap()))
    });
    let mut i = 0u64;
    g.bench_function("broker", |b| {
        b.iter_batched(
            || {
                i += 1;
                services
                    .check(Intent {
                        principal,
                        agent,
                        session: Some(session.clone()),
                        tool: "fs.read".into(),
                        effect: EffectClass::ReadOnly,
                        args: json!({"path": "doc.txt"}),
                        trace_id: i,
                        message_id: i,
                    })
                    .unwrap()
            },
            |allowed| {
                let digest = args_digest(&allowed.intent().args);
                let grant = services
                    .enforcer()
                    .grant(&allowed, &digest, &idle, now_ms())
                    .unwrap();
                let ctx = ToolContext::new(agent, &principal, &session, &status);
                let out = rt.block_on(read.execute(&ctx, grant)).unwrap();
                black_box(out)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, fs_read);
criterion_main!(benches);
