//! The gate without actors or sockets: tokens bound to the exact intent,
//! the kill switch at the gate and at the enforcer, budgets, fail-closed
//! policy errors.

use std::sync::Arc;
use std::time::Duration;

use mxp_governance::policy::PolicyEngine;
use mxp_governance::token::args::args_digest;
use mxp_protocol::{AgentId, SessionId};
use mxp_transport::{Bus, NodeAuthority, PeerId};
use serde_json::{Value, json};

use super::*;

fn authority() -> NodeAuthority {
    Bus::new(1)
        .take_authority(PeerId::from_spki(b"gate test node"), [])
        .unwrap()
}

const AGENT: AgentId = AgentId::from_bytes([7; 16]);

fn intent(auth: &NodeAuthority, tool: &str, effect: EffectClass, args: Value) -> Intent {
    Intent {
        principal: auth.agent(AgentId::from_bytes([9; 16])),
        agent: AGENT,
        session: Some("s-1".parse::<SessionId>().unwrap()),
        tool: tool.into(),
        effect,
        args,
        trace_id: 1,
        message_id: 1,
    }
}

/// Allows everything: isolates the gate's own checks from Cedar.
struct AllowAll;

impl Policy for AllowAll {
    fn decide(&self, _: &Intent, _: &Facts) -> Outcome {
        Outcome::allow(vec!["test.allow_all".into()])
    }
}

fn gate_with(policy: Arc<dyn Policy>, settings: GateSettings) -> (Gate, Minter, Enforcer) {
    let gate = Gate::new(policy, settings, None).unwrap();
    let auth = authority();
    let (minter, enforcer) = keys(
        *auth.node().id().fingerprint(),
        gate.kill_switch().clone(),
        1024,
    )
    .unwrap();
    (gate, minter, enforcer)
}

fn token_code(e: EnforceError) -> &'static str {
    match e {
        EnforceError::Token { code, .. } => code,
        other => panic!("expected a token refusal, got {other:?}"),
    }
}

#[test]
fn a_token_verifies_for_its_own_intent_once_and_for_nothing_else() {
    let auth = authority();
    let (gate, minter, enforcer) = gate_with(Arc::new(AllowAll), GateSettings::default());
    let args = json!({"path": "/tmp/a"});
    let allowed = gate
        .check(
            intent(&auth, "send", EffectClass::ReadOnly, args.clone()),
            &minter,
        )
        .unwrap();
    assert!(allowed.token().is_some(), "a tool intent carries a token");
    let idle = InFlight::default();
    let other = args_digest(&json!({"path": "/tmp/b"}));
    let refused = enforcer
        .grant(&allowed, &other, &idle, now_unix_ms())
        .unwrap_err();
    assert_eq!(token_code(refused), "wrong_arguments");
    let digest = args_digest(&args);
    let grant = enforcer
        .grant(&allowed, &digest, &idle, now_unix_ms())
        .unwrap();
    assert_eq!(grant.args(), &args);
    assert_eq!(grant.token().tool(), "send");
    drop(grant);
    let replay = enforcer
        .grant(&allowed, &digest, &idle, now_unix_ms())
        .unwrap_err();
    assert_eq!(token_code(replay), "replayed");
}

#[test]
fn an_expired_token_is_refused() {
    let auth = authority();
    let settings = GateSettings {
        token_ttl: Duration::from_millis(1),
        ..GateSettings::default()
    };
    let (gate, minter, enforcer) = gate_with(Arc::new(AllowAll), settings);
    let allowed = gate
        .check(
            intent(&auth, "send", EffectClass::ReadOnly, json!(1)),
            &minter,
        )
        .unwrap();
    let digest = args_digest(&json!(1));
    let later = now_unix_ms() + 10_000;
    let e = enforcer
        .grant(&allowed, &digest, &InFlight::default(), later)
        .unwrap_err();
    assert_eq!(token_code(e), "expired");
}

#[test]
fn another_nodes_key_does_not_verify() {
    let auth = authority();
    let (gate, minter, _) = gate_with(Arc::new(AllowAll), GateSettings::default());
    // Same node identity, another process's key: the MAC does not verify.
    let (_, stranger) = keys(
        *auth.node().id().fingerprint(),
        gate.kill_switch().clone(),
        1024,
    )
    .unwrap();
    let allowed = gate
        .check(
            intent(&auth, "send", EffectClass::ReadOnly, json!(1)),
            &minter,
        )
        .unwrap();
    let e = stranger
        .grant(
            &allowed,
            &args_digest(&json!(1)),
            &InFlight::default(),
            now_unix_ms(),
        )
        .unwrap_err();
    assert_eq!(token_code(e), "bad_mac");
}

#[test]
fn the_kill_switch_denies_external_writes_at_the_gate_and_at_the_enforcer() {
    let auth = authority();
    let (gate, minter, enforcer) = gate_with(Arc::new(AllowAll), GateSettings::default());
    let write = || {
        intent(
            &auth,
            "send",
            EffectClass::ExternalWrite,
            json!({"to": "x"}),
        )
    };
    // Allowed before the switch, enforced after it: refused at the enforcer.
    let allowed = gate.check(write(), &minter).unwrap();
    gate.kill_switch().set(true).unwrap();
    let in_flight = InFlight::default();
    let e = enforcer
        .grant(
            &allowed,
            &args_digest(&json!({"to": "x"})),
            &in_flight,
            now_unix_ms(),
        )
        .unwrap_err();
    assert!(matches!(e, EnforceError::KillSwitch(_)), "{e:?}");
    assert_eq!(in_flight.count(), 0, "a refused write is not left counted");
    match gate.check(write(), &minter) {
        Err(Refusal::Denied(d)) => assert_eq!(d.reasons, [KILL_SWITCH]),
        other => panic!("{other:?}"),
    }
    // Other effects go on.
    assert!(
        gate.check(
            intent(&auth, "echo", EffectClass::ReadOnly, json!(1)),
            &minter
        )
        .is_ok()
    );
    gate.kill_switch().set(false).unwrap();
    assert!(gate.check(write(), &minter).is_ok());
}

#[tokio::test]
async fn confirmation_waits_for_writes_in_flight() {
    let in_flight = Arc::new(InFlight::default());
    let guard_owner = in_flight.clone();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let _g = guard_owner.enter();
        let _ = entered_tx.send(());
        let _ = release_rx.await;
    });
    entered_rx.await.unwrap();
    let waiter = {
        let f = in_flight.clone();
        tokio::spawn(async move { f.wait_idle().await })
    };
    // The waiter cannot finish while the write holds its guard: it ends
    // only after the release below (a lost wake-up would hang to the
    // deadline and fail).
    assert_eq!(in_flight.count(), 1);
    release_tx.send(()).unwrap();
    writer.await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("confirmed once the write finished")
        .unwrap();
    assert_eq!(in_flight.count(), 0);
}

#[test]
fn session_budgets_deny_with_when_they_reset() {
    let auth = authority();
    let settings = GateSettings {
        session_budget: BudgetLimits {
            calls: Some(2),
            ..BudgetLimits::default()
        },
        ..GateSettings::default()
    };
    let (gate, minter, _) = gate_with(Arc::new(AllowAll), settings);
    for _ in 0..2 {
        gate.check(
            intent(&auth, "echo", EffectClass::ReadOnly, json!(1)),
            &minter,
        )
        .unwrap();
    }
    match gate.check(
        intent(&auth, "echo", EffectClass::ReadOnly, json!(1)),
        &minter,
    ) {
        Err(Refusal::Denied(d)) => {
            assert_eq!(d.reasons, [BUDGET_EXCEEDED]);
            assert!(
                matches!(d.remedy.as_deref(), Some(Remedy::BudgetExceeded { resets_at }) if *resets_at > 0),
                "{d:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Another session has its own budget.
    let mut other = intent(&auth, "echo", EffectClass::ReadOnly, json!(1));
    other.session = Some("s-2".parse().unwrap());
    assert!(gate.check(other, &minter).is_ok());
}

#[test]
fn the_empty_set_denies_and_evaluation_errors_deny() {
    let auth = authority();
    let empty = CedarPolicy::new(PolicyEngine::empty(), Zone::Sandbox);
    let (gate, minter, _) = gate_with(Arc::new(empty), GateSettings::default());
    for (i, effect) in [
        EffectClass::ReadOnly,
        EffectClass::LocalWrite,
        EffectClass::ExternalWrite,
        EffectClass::Control,
        EffectClass::Forward,
    ]
    .into_iter()
    .enumerate()
    {
        for tool in ["echo", "status", "fs.write", "http.fetch", "x"] {
            let r = gate.check(intent(&auth, tool, effect, json!({ "i": i })), &minter);
            assert!(
                matches!(r, Err(Refusal::Denied(_))),
                "{tool} {effect:?}: {r:?}"
            );
        }
    }
    // A tool name Cedar cannot name is denied, naming why.
    let (gate, minter, _) = gate_with(
        Arc::new(CedarPolicy::default_set()),
        GateSettings::default(),
    );
    match gate.check(
        intent(&auth, "bad name!", EffectClass::ReadOnly, json!(1)),
        &minter,
    ) {
        Err(Refusal::Denied(d)) => assert!(d.to_string().contains("bad name"), "{d}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reload_swaps_the_whole_set_at_once() {
    let auth = authority();
    let (gate, minter, _) = gate_with(
        Arc::new(CedarPolicy::default_set()),
        GateSettings::default(),
    );
    let echo = || intent(&auth, "echo", EffectClass::ReadOnly, json!(1));
    assert!(gate.check(echo(), &minter).is_ok());
    gate.replace_policy(Arc::new(CedarPolicy::new(
        PolicyEngine::empty(),
        Zone::Sandbox,
    )));
    assert!(gate.check(echo(), &minter).is_err());
}

#[test]
fn without_limits_no_budget_is_tracked_so_fresh_sessions_cannot_fill_it() {
    let auth = authority();
    let settings = GateSettings {
        max_budget_entries: 2,
        ..GateSettings::default()
    };
    let (gate, minter, _) = gate_with(Arc::new(AllowAll), settings);
    for i in 0..100 {
        let mut it = intent(&auth, "echo", EffectClass::ReadOnly, json!(i));
        it.session = Some(format!("s-{i}").parse().unwrap());
        assert!(gate.check(it, &minter).is_ok(), "call {i}");
    }
}
