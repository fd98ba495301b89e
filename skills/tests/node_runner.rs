//! Skills in a real node over QUIC on loopback: a skill is an agent's tool,
//! run by the supervised skill-runner actor. Killed, the runner is started
//! again by the node supervisor and verifies the skills again: a module
//! tampered with since is refused, quarantined and recorded in the audit
//! log, and the others keep serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{default_limits, dirs, echo_wat, pins, write_skill};
use mxp_actors::audit::{Auditor, record_json};
use mxp_actors::store::{AuditLog, Store};
use mxp_actors::*;
use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_skills::{RunnerConfig, SkillService, SkillsSettings};
use mxp_transport::{Client, Limits, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

const AGENT: AgentId = AgentId::from_bytes([9; 16]);
const T: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_secs(10);

struct AllowAll;
impl Policy for AllowAll {
    fn decide(&self, _: &Intent, _: &Facts) -> Outcome {
        Outcome::allow(vec!["test.allow_all".into()])
    }
    // Flows too: these tests are about what acts, not the flow rule.
    fn decide_flow(&self, _: &Intent, _: &FlowSource, _: &Facts) -> Outcome {
        Outcome::allow(vec!["test.allow_all".into()])
    }
}

async fn call(
    c: &Client,
    n: &Node,
    method: &str,
    params: Value,
) -> Result<Value, (ErrorCode, String)> {
    let mut body = CallBody::new(method, params);
    body.session = Some("s-skills".parse().unwrap());
    match c.call(&n.url().clone().with_agent(AGENT), &body, T).await {
        Ok(r) => Ok(r.parse_body().unwrap().result),
        Err(e) => Err((e.code(), e.to_string())),
    }
}

/// Polls `f` until it holds, for up to [`DEADLINE`].
async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_restarts_and_verifies_the_skills_again() {
    let d = dirs();
    let a = write_skill(&d.skills, "alpha", &echo_wat(), &[], &default_limits());
    let b = write_skill(&d.skills, "beta", &echo_wat(), &[], &default_limits());
    let service = SkillService::start(SkillsSettings {
        dir: d.skills.clone(),
        quarantine: d.quarantine.clone(),
        pins: pins(&[("alpha", &a), ("beta", &b)]),
        runner: RunnerConfig::default(),
    })
    .unwrap();
    assert_eq!(service.loaded().collect::<Vec<_>>(), ["alpha", "beta"]);

    let mut tools = ToolRegistry::builtin();
    for s in ["alpha", "beta"] {
        tools
            .register(Arc::new(service.tool(s, EffectClass::ReadOnly)))
            .unwrap();
    }
    let rules = ["alpha", "beta"]
        .into_iter()
        .map(|s| Rule {
            method: s.into(),
            when: Default::default(),
            steps: vec![PlanStep {
                tool: format!("skill.{s}"),
                args: json!("$params"),
            }],
        })
        .collect();
    let spec = AgentSpec {
        id: AGENT,
        name: "skilled".into(),
        capabilities: vec![],
        planner: Arc::new(RulePlanner::new(rules, &tools.names()).unwrap()),
        tools: Arc::new(tools),
        hooks: Arc::new(NoHooks),
    };
    let store_dir = tempfile::tempdir().unwrap();
    let audit =
        Auditor::start(AuditLog::open(Store::open(store_dir.path()).unwrap()).unwrap()).unwrap();
    let mut s = NodeSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        vec![spec],
    );
    s.gate = Gate::with_policy(Arc::new(AllowAll));
    s.audit = audit.clone();
    s.node_services = vec![Arc::new(service.clone())];
    let n = Node::start(s).await.unwrap();
    let c = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();

    let out = call(&c, &n, "beta", json!({"input": {"hello": "world"}}))
        .await
        .unwrap();
    assert_eq!(out["output"], json!({"hello": "world"}), "{out}");
    assert_eq!(out["host_calls"], 0);

    // Tamper with beta's module on disk, then kill the runner: its restart
    // verifies the folder again.
    let module = d.skills.join("beta").join("skill.wasm");
    let mut bytes = std::fs::read(&module).unwrap();
    bytes.push(0);
    std::fs::write(&module, &bytes).unwrap();
    let first = service.actor().expect("the runner runs");
    first.kill();
    wait_for("the runner to restart", async || {
        service
            .actor()
            .is_some_and(|c| c.get_id() != first.get_id())
            && service.is_running()
    })
    .await;

    // beta is refused now and its module quarantined; alpha still serves.
    let (code, text) = call(&c, &n, "beta", json!({"input": "x"}))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::INTERNAL, "{text}");
    assert!(text.contains("not loaded"), "{text}");
    assert!(!module.exists());
    let quarantined: Vec<_> = std::fs::read_dir(&d.quarantine)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(quarantined[0].starts_with("beta-"), "{quarantined:?}");
    let out = call(&c, &n, "alpha", json!({"input": "still here"}))
        .await
        .unwrap();
    assert_eq!(out["output"], "still here");

    // The quarantine and the restart are in the audit log (the restart's
    // record is written once the supervisor has restarted the runner).
    let records = async || -> Vec<Value> {
        let (records, _) = audit.read(0, 10_000).await.unwrap();
        records.iter().map(record_json).collect()
    };
    wait_for("the restart's audit record", async || {
        records().await.iter().any(|r| {
            r["kind"]["name"] == "actor_restart"
                && r["data"]["actor"] == "skill_runner"
                && r["data"]["restarted"] == true
        })
    })
    .await;
    let all = records().await;
    let q: Vec<&Value> = all
        .iter()
        .filter(|r| r["kind"]["name"] == "skill_quarantine")
        .collect();
    assert_eq!(q.len(), 1, "{all:#?}");
    assert_eq!(q[0]["data"]["name"], "beta");
    assert_eq!(q[0]["data"]["expected"], b);
    assert!(
        q[0]["data"]["quarantined_to"]
            .as_str()
            .unwrap()
            .contains(&quarantined[0])
    );
    n.shutdown(Duration::from_secs(2)).await;
}
