//! The gate's own cost per tool intent, without sockets or actors: the
//! shipped Cedar set against a policy that allows everything, each with
//! the token minted at the gate and verified by the enforcer.
//!
//! Run: `cargo bench -p mxp-benches --bench gate`
//! * `gate/cedar_check` ÷ `gate/allow_all_check`: what the Cedar decision
//!   adds to a check;
//! * `gate/*_check_and_grant`: check plus the enforcer's verification.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mxp_actors::gate::InFlight;
use mxp_actors::{CedarPolicy, EffectClass, Facts, Gate, Intent, Outcome, Policy, Services};
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

fn services(policy: Arc<dyn Policy>) -> Services {
    let auth = Bus::new(1)
        .take_authority(PeerId::from_spki(b"gate bench"), [])
        .unwrap();
    Services::new(
        Arc::new(auth),
        Gate::with_policy(policy),
        1024,
        Duration::from_secs(600),
    )
}

fn intent(s: &Services, i: u64) -> Intent {
    Intent {
        principal: s.authority().agent(AgentId::from_bytes([9; 16])),
        agent: AgentId::from_bytes([1; 16]),
        session: Some(format!("s-{}", i % 64).parse().unwrap()),
        tool: "echo".into(),
        effect: EffectClass::ReadOnly,
        args: json!("a".repeat(200)),
        trace_id: i,
        message_id: i,
    }
}

fn gate(c: &mut Criterion) {
    let mut g = c.benchmark_group("gate");
    for (name, policy) in [
        (
            "cedar",
            Arc::new(CedarPolicy::default_set()) as Arc<dyn Policy>,
        ),
        ("allow_all", Arc::new(AllowAll)),
    ] {
        let s = services(policy);
        let mut i = 0u64;
        g.bench_function(format!("{name}_check"), |b| {
            b.iter(|| {
                i += 1;
                black_box(s.check(intent(&s, i)).unwrap());
            })
        });
        let idle = InFlight::default();
        g.bench_function(format!("{name}_check_and_grant"), |b| {
            b.iter(|| {
                i += 1;
                let allowed = s.check(intent(&s, i)).unwrap();
                let digest = args_digest(&allowed.intent().args);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let grant = s.enforcer().grant(&allowed, &digest, &idle, now).unwrap();
                black_box(grant.args());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gate);
criterion_main!(benches);
