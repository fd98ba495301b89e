//! What a plan run records for replay, on a real node over QUIC with a
//! real redb store: `call_received` (agent, method, params), each step
//! decision's arguments digest, effect class and facts, `call_answered`
//! (the answer's digest, or the error code); and `audit.replay` of that
//! session answering `identical` to an operator, or naming a session the
//! log does not hold.
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
use mxp_governance::policy::{PolicyEngine, Zone, default_files};
use mxp_governance::token::args::args_digest;
use mxp_protocol::{AgentId, CallBody, ErrorCode, SessionId};
use mxp_transport::{Client, Limits, NODE_AGENT, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);
const AGENT: AgentId = AgentId::from_bytes([6; 16]);

/// Echoing the text "no" is denied.
const NO_TEXT: &str = r#"@id("test.no_text")
forbid (principal, action == Mxp::Action::"tool:echo", resource)
when { context.args has text && context.args.text == "no" };
"#;

fn spec() -> AgentSpec {
    AgentSpec {
        id: AGENT,
        name: "recorded".into(),
        capabilities: vec![],
        planner: Arc::new(RulePlanner::default_rules()),
        tools: Arc::new(ToolRegistry::builtin()),
        hooks: Arc::new(NoHooks),
    }
}

async fn control(
    c: &Client,
    n: &Node,
    method: &str,
    params: Value,
) -> Result<Value, mxp_transport::CallError> {
    c.call(
        &n.url().clone().with_agent(NODE_AGENT),
        &CallBody::new(method, params),
        T,
    )
    .await
    .map(|r| r.parse_body().unwrap().result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_run_records_what_replay_needs_and_replays_identical() {
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
    let mut files = default_files();
    files.push(("no_text.cedar".into(), NO_TEXT.into()));
    let policy = CedarPolicy::new(PolicyEngine::load(&files).unwrap(), Zone::Sandbox);
    s.gate = Gate::new(Arc::new(policy), GateSettings::default(), Some(store)).unwrap();
    s.audit = auditor;
    let n = Node::start(s).await.unwrap();
    let caller = NodeIdentity::generate().unwrap();
    let client = Client::new(&caller, PeerTrust::AnyIdentified, Limits::default()).unwrap();
    let op_client = Client::new(&op, PeerTrust::AnyIdentified, Limits::default()).unwrap();
    let url = n.url().clone().with_agent(AGENT);
    let session: SessionId = "s-recorded".parse().unwrap();

    let params = json!({"text": "yes", "z": [1, 2]});
    let answer = client
        .call(
            &url,
            &CallBody::new("echo", params.clone()).in_session(session.clone()),
            T,
        )
        .await
        .unwrap()
        .parse_body()
        .unwrap()
        .result;
    assert_eq!(answer, params);
    let denied = client
        .call(
            &url,
            &CallBody::new("echo", json!({"text": "no"})).in_session(session.clone()),
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(denied.code(), ErrorCode::DENIED, "{denied}");

    let page = control(
        &op_client,
        &n,
        "audit.read",
        json!({"from": 0, "limit": 1000}),
    )
    .await
    .unwrap();
    let ours: Vec<&Value> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["session"] == json!("s-recorded"))
        .collect();
    let kinds: Vec<&str> = ours
        .iter()
        .map(|r| r["kind"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "call_received",
            "policy_decision",
            "token_mint",
            "token_verification",
            "tool_execution",
            "call_answered",
            "call_received",
            "policy_decision",
            "call_answered",
        ]
    );
    let caller_id = format!("peer:{}", caller.peer_id());
    for r in &ours {
        assert_eq!(r["principal"], json!(caller_id));
    }
    assert_eq!(ours[0]["trace_id"], ours[5]["trace_id"]);
    let received = &ours[0]["data"];
    assert_eq!(received["agent"], json!(AGENT.to_string()));
    assert_eq!(received["method"], "echo");
    assert_eq!(received["params"], params);
    assert!(received["message_id"].as_u64().unwrap() > 0);
    let allow = &ours[1];
    assert_eq!(allow["kind"]["effect"], "allow");
    assert_eq!(
        allow["data"]["args_digest"],
        json!(args_digest(&params).to_string())
    );
    assert_eq!(allow["data"]["effect"], "read_only");
    let now_s = allow["data"]["now_s"].as_u64().unwrap();
    // The gate read the clock just before the record was made.
    let time_s = allow["time_ms"].as_u64().unwrap() / 1000;
    assert!((time_s - 1..=time_s).contains(&now_s), "{now_s} {time_s}");
    assert_eq!(allow["data"]["budget_spent"], 0);
    assert_eq!(
        ours[5]["kind"]["answer_digest"],
        json!(args_digest(&answer).to_string())
    );
    let deny = &ours[7];
    assert_eq!(deny["kind"]["effect"], "deny");
    assert_eq!(deny["kind"]["policy_ids"], json!(["test.no_text"]));
    assert_eq!(
        deny["data"]["args_digest"],
        json!(args_digest(&json!({"text": "no"})).to_string())
    );
    assert_eq!(ours[8]["kind"]["error_code"], 501);
    assert_eq!(ours[8]["kind"]["error"], "denied");

    // The session replays identical; an unknown one is named; a
    // non-operator is refused.
    let r = control(
        &op_client,
        &n,
        "audit.replay",
        json!({"session": "s-recorded"}),
    )
    .await
    .unwrap();
    assert_eq!(r["result"], "identical", "{r}");
    assert_eq!(
        (r["calls"].as_u64(), r["decisions"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    let unknown = control(&op_client, &n, "audit.replay", json!({"session": "s-none"}))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), ErrorCode::INVALID_PAYLOAD, "{unknown}");
    assert!(
        unknown
            .to_string()
            .contains("the audit log has no record of session s-none"),
        "{unknown}"
    );
    let refused = control(
        &client,
        &n,
        "audit.replay",
        json!({"session": "s-recorded"}),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::DENIED, "{refused}");
    // A what-if with the default set alone: the denial would be an allow.
    let files: Vec<Value> = default_files()
        .into_iter()
        .map(|(name, text)| json!({"name": name, "text": text}))
        .collect();
    let w = control(
        &op_client,
        &n,
        "audit.replay",
        json!({"session": "s-recorded", "policies": files}),
    )
    .await
    .unwrap();
    assert_eq!(w["changed_total"], 1, "{w}");
    assert_eq!(w["changed"][0]["recorded"]["effect"], "deny");
    assert_eq!(w["changed"][0]["new"]["effect"], "allow");
    n.shutdown(Duration::from_secs(1)).await;
}
