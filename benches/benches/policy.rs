//! Policy decisions: `PolicyEngine::decide` (building Cedar's request,
//! context and entities from typed values, then evaluating the action's
//! index group) beside bare `cedar_policy::Authorizer::is_authorized` over
//! the whole set with a request and entities built beforehand.
//!
//! Run: `cargo bench -p mxp-benches --bench policy`
//! Ratios (printed at the end of the run from p50s, and readable from
//! criterion's figures):
//! * `decide/10` ÷ `is_authorized/10`  (goal ≤ 1.0)
//! * `decide/1000` ÷ `decide/10`  (goal ≤ 1.5; 1,000 policies over 100 actions)
//! * `decide/1000` ÷ `is_authorized/1000`  (the index's gain)
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use mxp_benches::percentile;
use mxp_governance::policy::cedar::{self as cedar_policy, Authorizer, Entities};
use mxp_governance::policy::{
    Action, Arguments, EffectClass, PolicyEngine, Request, RequestContext, Resource, Zone,
};
use mxp_protocol::{AgentId, Fingerprint, PrincipalId};

/// `actions` tool actions, `per_action` policies each (permits with
/// conditions, every fifth a forbid), plus two unconstrained forbids: the
/// default approval rule and a high-stakes rule.
fn policy_set(actions: usize, per_action: usize) -> Vec<(String, String)> {
    let mut text = String::from(
        "@id(\"approval\") @approval(\"operator\")\n\
         forbid(principal, action, resource) when { context.effect == \"external_write\" } unless { context.approved };\n\
         @id(\"high_stakes\")\n\
         forbid(principal, action, resource) when { context.zone == \"high_stakes\" && context.budget_spent > 1000 };\n",
    );
    let mut n = 2;
    'out: for a in 0..actions {
        for k in 0..per_action {
            if n >= actions * per_action {
                break 'out;
            }
            n += 1;
            let effect = if k % 5 == 4 { "forbid" } else { "permit" };
            text.push_str(&format!(
                "{effect}(principal, action == Mxp::Action::\"tool:t{a}\", resource is Mxp::Path)\n  \
                 when {{ resource.name like \"/tmp/{k}/*\" && context.budget_spent < {} }};\n",
                100 + k
            ));
        }
    }
    vec![("bench.cedar".to_owned(), text)]
}

fn request() -> Request {
    let principal = PrincipalId::Agent {
        agent: AgentId::from_bytes([4; 16]),
        node: Fingerprint([3; 32]),
    };
    let args =
        Arguments::from_json(&serde_json::json!({ "path": "/tmp/0/report.txt", "count": 3 }))
            .unwrap();
    let context = RequestContext::new(
        "s-bench".parse().unwrap(),
        Zone::Supervised,
        EffectClass::ReadOnly,
        1_700_000_000,
    )
    .with_budget_spent(40)
    .with_args(args);
    Request::new(
        principal,
        Action::tool("t3").unwrap(),
        Resource::Path("/tmp/0/report.txt".into()),
        context,
    )
}

struct Case {
    engine: PolicyEngine,
    cedar: (cedar_policy::Request, Entities),
}

fn case(actions: usize, per_action: usize) -> Case {
    let engine = PolicyEngine::load(&policy_set(actions, per_action)).unwrap();
    assert_eq!(engine.summary().policies, actions * per_action);
    let cedar = engine.cedar_request(&request()).unwrap();
    Case { engine, cedar }
}

fn bare(authorizer: &Authorizer, case: &Case) -> cedar_policy::Decision {
    let (req, entities) = &case.cedar;
    authorizer
        .is_authorized(req, case.engine.policy_set(), entities)
        .decision()
}

/// p50 in ns of `f`, timed in batches of 32 calls.
fn p50(mut f: impl FnMut()) -> f64 {
    const BATCH: u32 = 32;
    for _ in 0..2_000 {
        f();
    }
    let mut samples: Vec<u64> = (0..3_000)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..BATCH {
                f();
            }
            (start.elapsed().as_nanos() / u128::from(BATCH)) as u64
        })
        .collect();
    samples.sort_unstable();
    percentile(&samples, 50) as f64
}

fn bench(c: &mut Criterion) {
    let small = case(10, 1);
    let large = case(100, 10);
    let req = request();
    let authorizer = Authorizer::new();
    assert_eq!(
        small.engine.decide(&req).decision,
        mxp_governance::policy::Decision::Allow
    );
    assert_eq!(bare(&authorizer, &small), cedar_policy::Decision::Allow);

    let mut g = c.benchmark_group("policy");
    g.bench_function("decide/10", |b| {
        b.iter(|| black_box(small.engine.decide(black_box(&req))))
    });
    g.bench_function("is_authorized/10", |b| {
        b.iter(|| black_box(bare(&authorizer, black_box(&small))))
    });
    g.bench_function("decide/1000", |b| {
        b.iter(|| black_box(large.engine.decide(black_box(&req))))
    });
    g.bench_function("is_authorized/1000", |b| {
        b.iter(|| black_box(bare(&authorizer, black_box(&large))))
    });
    g.finish();

    let d10 = p50(|| {
        black_box(small.engine.decide(black_box(&req)));
    });
    let a10 = p50(|| {
        black_box(bare(&authorizer, black_box(&small)));
    });
    let d1000 = p50(|| {
        black_box(large.engine.decide(black_box(&req)));
    });
    let a1000 = p50(|| {
        black_box(bare(&authorizer, black_box(&large)));
    });
    eprintln!(
        "\npolicy p50: decide/10 {d10:.0} ns, is_authorized/10 {a10:.0} ns, decide/1000 {d1000:.0} ns, is_authorized/1000 {a1000:.0} ns"
    );
    eprintln!(
        "  decide/10 ÷ is_authorized/10     = {:.2}x (goal ≤ 1.0)",
        d10 / a10
    );
    eprintln!(
        "  decide/1000 ÷ decide/10          = {:.2}x (goal ≤ 1.5)",
        d1000 / d10
    );
    eprintln!(
        "  decide/1000 ÷ is_authorized/1000 = {:.3}x (the index's gain: {:.0}x faster)",
        d1000 / a1000,
        a1000 / d1000
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = bench
}
criterion_main!(benches);
