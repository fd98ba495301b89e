//! Generated checks: the empty set denies everything, and the action index
//! decides exactly as Cedar's whole-set evaluation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use cedar_policy::Authorizer;
use mxp_governance::policy::{
    Action, Arguments, Decision, EffectClass, PolicyEngine, Request, RequestContext, Resource, Zone,
};
use mxp_protocol::{AgentId, Fingerprint, PrincipalId};
use proptest::prelude::*;
use serde_json::json;

const TOOLS: usize = 20;

fn tool(i: usize) -> String {
    format!("Mxp::Action::\"tool:a{i}\"")
}

fn action_constraint() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("action".to_owned()),
        (0..TOOLS).prop_map(|i| format!("action == {}", tool(i))),
        prop::collection::vec(0..TOOLS, 1..4).prop_map(|is| {
            let list: Vec<String> = is.into_iter().map(tool).collect();
            format!("action in [{}]", list.join(", "))
        }),
        Just("action == Mxp::Action::\"node.status\"".to_owned()),
        Just("action in [Mxp::Action::\"node.status\", Mxp::Action::\"tool:a0\"]".to_owned()),
        Just("action in Mxp::Action::\"tool\"".to_owned()),
        Just("action in [Mxp::Action::\"tool\", Mxp::Action::\"tool:a1\"]".to_owned()),
    ]
}

fn principal_constraint() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => Just("principal"),
        1 => Just("principal is Mxp::Operator"),
        1 => Just("principal is Mxp::Agent"),
        1 => Just("principal in Mxp::Node::\"node:0303030303030303030303030303030303030303030303030303030303030303\""),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        1 => (0i64..100).prop_map(|n| format!(" when {{ context.budget_spent > {n} }}")),
        1 => prop_oneof![Just("sandbox"), Just("supervised"), Just("high_stakes")]
            .prop_map(|z| format!(" when {{ context.zone == \"{z}\" }}")),
        1 => Just(" unless { context.approved }".to_owned()),
        1 => prop_oneof![Just("read_only"), Just("external_write")]
            .prop_map(|e| format!(" when {{ context.effect == \"{e}\" }}")),
        // Errors at run time when `count` is a string.
        1 => (0i64..10).prop_map(|n| format!(" when {{ context.args has count && context.args.count > {n} }}")),
        1 => Just(" when { resource is Mxp::Path && resource.name like \"/tmp/*\" }".to_owned()),
    ]
}

fn policy() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        principal_constraint(),
        action_constraint(),
        condition(),
    )
        .prop_map(|(permit, p, a, c)| {
            let effect = if permit { "permit" } else { "forbid" };
            format!("{effect}({p}, {a}, resource){c};")
        })
}

fn policy_files() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(prop::collection::vec(policy(), 0..12), 0..4).prop_map(|files| {
        files
            .into_iter()
            .enumerate()
            .map(|(i, ps)| (format!("f{i}.cedar"), ps.join("\n")))
            .collect()
    })
}

fn principal() -> impl Strategy<Value = PrincipalId> {
    (0u8..4, 0u8..3).prop_map(|(kind, n)| {
        let fp = Fingerprint([n + 1; 32]);
        match kind {
            0 => PrincipalId::Peer(fp),
            1 => PrincipalId::Operator(fp),
            2 => PrincipalId::Node(fp),
            _ => PrincipalId::Agent {
                agent: AgentId::from_bytes([n; 16]),
                node: Fingerprint([3; 32]),
            },
        }
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..TOOLS).prop_map(|i| Action::tool(&format!("a{i}")).unwrap()),
        1 => Just(Action::tool("unnamed").unwrap()),
        1 => Just("node.status".parse().unwrap()),
        1 => Just("agent.suspend".parse().unwrap()),
    ]
}

fn resource() -> impl Strategy<Value = Resource> {
    prop_oneof![
        Just(Resource::Node(Fingerprint([3; 32]))),
        Just(Resource::Agent {
            agent: AgentId::from_bytes([1; 16]),
            node: Fingerprint([3; 32])
        }),
        Just(Resource::Path("/tmp/a".into())),
        Just(Resource::Path("/etc/a".into())),
        Just(Resource::Host("example.org".into())),
    ]
}

fn context() -> impl Strategy<Value = RequestContext> {
    (
        prop_oneof![
            Just(Zone::Sandbox),
            Just(Zone::Supervised),
            Just(Zone::HighStakes)
        ],
        prop_oneof![
            Just(EffectClass::ReadOnly),
            Just(EffectClass::LocalWrite),
            Just(EffectClass::ExternalWrite),
            Just(EffectClass::Control),
            Just(EffectClass::Forward),
        ],
        0u64..120,
        prop::bool::ANY,
        prop_oneof![
            Just(json!({})),
            (0i64..12).prop_map(|n| json!({ "count": n })),
            Just(json!({ "count": "7" })),
        ],
    )
        .prop_map(|(zone, effect, spent, approved, args)| {
            let c = RequestContext::new("s-1".parse().unwrap(), zone, effect, 1_700_000_000)
                .with_budget_spent(spent)
                .with_args(Arguments::from_json(&args).unwrap());
            if approved {
                c.approved_by(vec![PrincipalId::Operator(Fingerprint([2; 32]))])
            } else {
                c
            }
        })
}

fn request() -> impl Strategy<Value = Request> {
    (principal(), action(), resource(), context()).prop_map(|(p, a, r, c)| Request::new(p, a, r, c))
}

fn sorted<I: IntoIterator<Item = String>>(it: I) -> Vec<String> {
    let mut v: Vec<String> = it.into_iter().collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_empty_set_denies_every_intent(reqs in prop::collection::vec(request(), 1..64)) {
        let engines = [
            PolicyEngine::empty(),
            PolicyEngine::load(&[]).unwrap(),
            PolicyEngine::load(&[("only-comments.cedar".to_owned(), "// nothing\n".to_owned())]).unwrap(),
        ];
        for engine in &engines {
            for req in &reqs {
                let out = engine.decide(req);
                prop_assert_eq!(out.decision, Decision::Deny);
                prop_assert!(out.reasons.is_empty());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_index_decides_as_the_whole_set(
        files in policy_files(),
        reqs in prop::collection::vec(request(), 1..24),
    ) {
        // Every generated set is valid against the schema.
        let engine = PolicyEngine::load(&files).unwrap();
        let authorizer = Authorizer::new();
        for req in &reqs {
            let (cedar_req, entities) = engine.cedar_request(req).unwrap();
            let whole = authorizer.is_authorized(&cedar_req, engine.policy_set(), &entities);
            let indexed = engine.authorize(req).unwrap();
            prop_assert_eq!(indexed.decision(), whole.decision());
            let reasons = sorted(whole.diagnostics().reason().map(ToString::to_string));
            prop_assert_eq!(
                sorted(indexed.diagnostics().reason().map(ToString::to_string)),
                reasons.clone()
            );
            let errors = sorted(whole.diagnostics().errors().map(ToString::to_string));
            prop_assert_eq!(
                sorted(indexed.diagnostics().errors().map(ToString::to_string)),
                errors.clone()
            );

            // decide() is the whole set's answer, failing closed on errors.
            let out = engine.decide(req);
            if !errors.is_empty() {
                prop_assert_eq!(out.decision, Decision::Deny);
                prop_assert_eq!(out.reasons, errors);
            } else {
                let expect = match whole.decision() {
                    cedar_policy::Decision::Allow => Decision::Allow,
                    cedar_policy::Decision::Deny => Decision::Deny,
                };
                prop_assert_eq!(out.decision, expect);
                prop_assert_eq!(out.reasons, reasons);
            }
        }
    }
}
