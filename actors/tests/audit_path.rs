//! The audit log on a real node over QUIC: every governed step of a Call is
//! a durable record before the step goes on, control changes are recorded,
//! the chain verifies, and `audit.read` is for operators only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use mxp_actors::audit::Auditor;
use mxp_actors::store::{AuditLog, Store};
use mxp_actors::*;
use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_transport::{Client, Limits, NODE_AGENT, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);
const AGENT: AgentId = AgentId::from_bytes([1; 16]);

/// A tool no shipped policy permits.
struct Send;

impl Tool for Send {
    fn name(&self) -> &str {
        "send"
    }
    fn effect(&self) -> EffectClass {
        EffectClass::ReadOnly
    }
    fn args(&self) -> ArgSchema {
        ArgSchema::Any
    }
    fn execute<'a>(
        &'a self,
        _: &'a ToolContext<'a>,
        grant: Grant<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(std::future::ready(Ok(grant.args().clone())))
    }
}

fn spec() -> AgentSpec {
    let mut rules = default_rules();
    // A step naming a tool no policy permits: denied.
    rules.push(Rule {
        method: "forbidden".into(),
        when: Default::default(),
        steps: vec![PlanStep {
            tool: "send".into(),
            args: json!({"x": 1}),
        }],
    });
    AgentSpec {
        id: AGENT,
        name: "audited".into(),
        capabilities: vec![],
        planner: Arc::new(RulePlanner::new(rules, &["echo", "send", "status"]).unwrap()),
        tools: Arc::new({
            let mut t = ToolRegistry::builtin();
            t.register(Arc::new(Send)).unwrap();
            t
        }),
        hooks: Arc::new(NoHooks),
    }
}

async fn read(c: &Client, n: &Node, params: Value) -> Result<Value, mxp_transport::CallError> {
    c.call(
        &n.url().clone().with_agent(NODE_AGENT),
        &CallBody::new("audit.read", params),
        T,
    )
    .await
    .map(|r| r.parse_body().unwrap().result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_governed_step_is_recorded_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let auditor = Auditor::start(AuditLog::open(store.clone()).unwrap()).unwrap();
    let op = NodeIdentity::generate().unwrap();
    let mut s = NodeSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        vec![spec()],
    );
    s.operators = vec![op.peer_id()];
    s.gate = Gate::new(
        Arc::new(CedarPolicy::default_set()),
        GateSettings::default(),
        Some(store),
    )
    .unwrap();
    s.audit = auditor;
    s.config_digest = Some([7; 32]);
    let n = Node::start(s).await.unwrap();
    let op_client = Client::new(&op, PeerTrust::AnyIdentified, Limits::default()).unwrap();
    let stranger = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        Limits::default(),
    )
    .unwrap();
    let url = n.url().clone().with_agent(AGENT);

    let mut echo = CallBody::new("echo", json!({"hello": "audit"}));
    echo.session = Some("s-audit".parse().unwrap());
    stranger.call(&url, &echo, T).await.unwrap();
    let denied = stranger
        .call(&url, &CallBody::new("forbidden", Value::Null), T)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), ErrorCode::DENIED, "{denied}");
    let ks = op_client
        .call(
            &n.url().clone().with_agent(NODE_AGENT),
            &CallBody::new("killswitch.set", json!({"on": true})),
            T,
        )
        .await
        .unwrap();
    assert_eq!(ks.parse_body().unwrap().result["applied"], json!(true));

    // Only operators read the log.
    let refused = read(&stranger, &n, json!({})).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::DENIED, "{refused}");

    let page = read(&op_client, &n, json!({"from": 0, "limit": 1000}))
        .await
        .unwrap();
    let records = page["records"].as_array().unwrap().clone();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "node_config", "{kinds:?}");
    assert_eq!(records[0]["kind"]["digest"], json!("07".repeat(32)));
    // The echo: decision, mint, verification (one durable batch, before the
    // tool ran), then the execution with its output.
    let at = kinds
        .iter()
        .position(|k| *k == "token_mint")
        .expect("a token mint");
    assert_eq!(kinds[at - 1], "policy_decision");
    assert_eq!(records[at - 1]["kind"]["effect"], json!("allow"));
    assert_eq!(
        records[at - 1]["kind"]["policy_ids"],
        json!(["default.tools.read_only_builtins"])
    );
    assert_eq!(records[at - 1]["session"], json!("s-audit"));
    assert_eq!(kinds[at + 1], "token_verification");
    assert_eq!(records[at + 1]["kind"]["accepted"], json!(true));
    assert_eq!(kinds[at + 2], "tool_execution");
    assert_eq!(records[at + 2]["kind"]["outcome"], json!("landed"));
    assert_eq!(
        records[at + 2]["kind"]["output"]["recorded"],
        json!(r#"{"hello":"audit"}"#)
    );
    // The denial, with no tool run for it.
    let denial = records
        .iter()
        .find(|r| r["kind"]["effect"] == json!("deny") && r["data"]["tool"] == json!("send"))
        .expect("the denial is recorded");
    assert_eq!(
        denial["principal"].as_str().unwrap().split(':').next(),
        Some("peer")
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "tool_execution").count(),
        1,
        "only the allowed step ran: {kinds:?}"
    );
    assert!(kinds.contains(&"kill_switch"), "{kinds:?}");
    // Chained: each record names the hash of the one before.
    for w in records.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1
        );
    }
    let verified = read(&op_client, &n, json!({"verify": true})).await.unwrap();
    assert!(verified["verified"].as_u64().unwrap() >= records.len() as u64);
    assert_eq!(verified["root"].as_str().unwrap().len(), 64);

    // An inclusion proof of the echo's execution verifies against the root.
    let seq = records[at + 2]["seq"].as_u64().unwrap();
    let p = read(&op_client, &n, json!({"prove": seq})).await.unwrap();
    let h = |v: &Value| -> [u8; 32] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let proof: Vec<[u8; 32]> = p["proof"].as_array().unwrap().iter().map(h).collect();
    mxp_governance::audit::merkle::verify_inclusion(
        &h(&p["leaf"]),
        seq,
        p["size"].as_u64().unwrap(),
        &proof,
        &h(&p["root"]),
    )
    .unwrap();
    let missing = read(&op_client, &n, json!({"prove": 1_000_000}))
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("no audit record 1000000"),
        "{missing}"
    );

    let bad = read(&op_client, &n, json!({"limit": 0})).await.unwrap_err();
    assert_eq!(bad.code(), ErrorCode::INVALID_PAYLOAD, "{bad}");
    n.shutdown(Duration::from_secs(1)).await;
}
