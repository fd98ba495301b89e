//! The governed path on real nodes over QUIC on loopback: every effect of a
//! Call passes the gate, plan runs are concurrent, sessions belong to their
//! caller, and nothing in a payload sets a principal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use mxp_actors::*;
use mxp_protocol::{AgentId, CallBody, ErrorCode, PrincipalId, PrincipalKind, SessionId};
use mxp_transport::{Client, Limits, MxpUrl, NODE_AGENT, NodeIdentity, PeerId, PeerTrust};
use serde_json::{Value, json};
use tokio::sync::Barrier;

const AGENT: AgentId = AgentId::from_bytes([1; 16]);
const REMOTE: AgentId = AgentId::from_bytes([2; 16]);
const TIMEOUT: Duration = Duration::from_secs(20);

/// Allows everything, and writes down every intent it is asked about.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, EffectClass, PrincipalId)>>,
    deny: Option<&'static str>,
}

impl Policy for Recorder {
    fn decide(&self, intent: &Intent, _: &Facts) -> Outcome {
        self.seen.lock().unwrap().push((
            intent.tool.clone(),
            intent.effect,
            *intent.principal.id(),
        ));
        if self.deny == Some(intent.tool.as_str()) {
            return Outcome::deny(vec![format!("the test denies {}", intent.tool)], None);
        }
        Outcome::allow(vec!["test.recorder".into()])
    }
}

impl Recorder {
    fn tools(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _, _)| t.clone())
            .collect()
    }
}

/// Answers method "hook" itself (a hook reply); plans everything else.
struct ReplyingHooks;

impl AgentHooks for ReplyingHooks {
    fn on_message(&self, _: &AgentContext, call: &CallBody) -> MessageOutcome {
        if call.method == "hook" {
            MessageOutcome::Reply(json!("from the hook"))
        } else {
            MessageOutcome::Plan
        }
    }
}

/// A read-only tool that waits until `n` runs are inside it at once.
struct BarrierTool(Arc<Barrier>);

impl Tool for BarrierTool {
    fn name(&self) -> &str {
        "barrier"
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
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            self.0.wait().await;
            Ok(grant.args().clone())
        })
    }
}

fn spec(id: AgentId, tools: ToolRegistry, rules: Vec<Rule>) -> AgentSpec {
    let names = tools.names();
    AgentSpec {
        id,
        name: format!("agent-{}", id.as_bytes()[0]),
        capabilities: vec!["test".into()],
        planner: Arc::new(RulePlanner::new(rules, &names).unwrap()),
        tools: Arc::new(tools),
        hooks: Arc::new(ReplyingHooks),
    }
}

async fn node(
    agents: Vec<AgentSpec>,
    gate: Gate,
    seeds: Vec<MxpUrl>,
    operators: Vec<PeerId>,
) -> Node {
    let mut s = NodeSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        agents,
    );
    s.gate = gate;
    s.seeds = seeds;
    s.operators = operators;
    s.heartbeat_interval = Duration::from_millis(100);
    s.agent_ttl = Duration::from_secs(5);
    s.limits = Limits {
        peer_rate_per_sec: 1e9,
        peer_burst: 1e9,
        ..Limits::default()
    };
    Node::start(s).await.unwrap()
}

fn client(identity: &NodeIdentity) -> Client {
    Client::new(identity, PeerTrust::AnyIdentified, Limits::default()).unwrap()
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let end = tokio::time::Instant::now() + TIMEOUT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Without concurrent runs the barrier never opens: each of the 16 Calls
/// would wait for the others and time out. No timing is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_plan_runs_are_inside_one_tool_at_once() {
    let barrier = Arc::new(Barrier::new(16));
    let mut tools = ToolRegistry::builtin();
    tools.register(Arc::new(BarrierTool(barrier))).unwrap();
    let rules = vec![Rule {
        method: "wait".into(),
        when: Default::default(),
        steps: vec![PlanStep {
            tool: "barrier".into(),
            args: json!("$params"),
        }],
    }];
    // The barrier tool is a test tool: no shipped policy names it.
    let n = node(
        vec![spec(AGENT, tools, rules)],
        Gate::with_policy(Arc::new(Recorder::default())),
        vec![],
        vec![],
    )
    .await;
    let c = Arc::new(client(&NodeIdentity::generate().unwrap()));
    let url = n.url().clone().with_agent(AGENT);
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                c.call(&url, &CallBody::new("wait", json!(i)), TIMEOUT)
                    .await
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let r = call.await.unwrap().expect("every run passed the barrier");
        assert_eq!(r.parse_body().unwrap().result, json!(i));
    }
    n.shutdown(Duration::from_secs(2)).await;
}

/// Plan runs past `supervision.max_runs` are answered `overloaded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_past_the_limit_are_overloaded() {
    let barrier = Arc::new(Barrier::new(3));
    let mut tools = ToolRegistry::builtin();
    tools
        .register(Arc::new(BarrierTool(barrier.clone())))
        .unwrap();
    let rules = vec![Rule {
        method: "wait".into(),
        when: Default::default(),
        steps: vec![PlanStep {
            tool: "barrier".into(),
            args: Value::Null,
        }],
    }];
    let mut s = NodeSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        vec![spec(AGENT, tools, rules)],
    );
    s.supervision.max_runs = 2;
    s.gate = Gate::with_policy(Arc::new(Recorder::default()));
    let n = Node::start(s).await.unwrap();
    let c = Arc::new(client(&NodeIdentity::generate().unwrap()));
    let url = n.url().clone().with_agent(AGENT);
    // Two runs enter the tool and wait there (the barrier needs a third party).
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                c.call(&url, &CallBody::new("wait", Value::Null), TIMEOUT)
                    .await
            })
        })
        .collect();
    // Wait until both are in flight in the agent.
    wait_for("two runs in flight", async || {
        n.control("agents.list", Value::Null).await.unwrap()["agents"][0]["in_flight"] == 2
    })
    .await;
    let err = c
        .call(&url, &CallBody::new("echo", json!(1)), TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::OVERLOADED, "{err}");
    assert!(err.to_string().contains("supervision.max_runs"), "{err}");
    barrier.wait().await;
    for h in held {
        h.await.unwrap().unwrap();
    }
    n.shutdown(Duration::from_secs(2)).await;
}

/// Plan steps, hook replies, control and forwards each pass the gate, with
/// the caller's authenticated principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_that_can_cause_an_effect_passes_the_gate() {
    let rec = Arc::new(Recorder::default());
    let gate = Gate::with_policy(rec.clone());
    let remote = node(
        vec![spec(REMOTE, ToolRegistry::builtin(), default_rules())],
        Gate::default(),
        vec![],
        vec![],
    )
    .await;
    let caller = NodeIdentity::generate().unwrap();
    let here = node(
        vec![spec(AGENT, ToolRegistry::builtin(), default_rules())],
        gate,
        vec![remote.url().clone()],
        vec![caller.peer_id()],
    )
    .await;
    let c = client(&caller);
    let agent = here.url().clone().with_agent(AGENT);
    let ctl = here.url().clone().with_agent(NODE_AGENT);

    // A plan step.
    c.call(&agent, &CallBody::new("echo", json!(1)), TIMEOUT)
        .await
        .unwrap();
    // A hook reply.
    let r = c
        .call(&agent, &CallBody::new("hook", Value::Null), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(r.parse_body().unwrap().result, json!("from the hook"));
    // Control: reading, then changing.
    c.call(&ctl, &CallBody::new("node.status", Value::Null), TIMEOUT)
        .await
        .unwrap();
    c.call(
        &ctl,
        &CallBody::new("agent.suspend", json!({"agent_id": AGENT})),
        TIMEOUT,
    )
    .await
    .unwrap();
    // A forward: once `here` knows the remote agent.
    let via_here = here.url().clone().with_agent(REMOTE);
    wait_for(
        "the remote agent to be reachable through here",
        async || {
            c.call(&via_here, &CallBody::new("echo", json!(2)), TIMEOUT)
                .await
                .is_ok()
        },
    )
    .await;

    let seen = rec.seen.lock().unwrap().clone();
    let me = PrincipalId::Operator(caller.peer_id().fingerprint());
    for (tool, effect) in [
        ("echo", EffectClass::ReadOnly),
        ("hook.reply", EffectClass::ReadOnly),
        ("node.status", EffectClass::ReadOnly),
        ("agent.suspend", EffectClass::Control),
        ("mesh.forward", EffectClass::Forward),
    ] {
        assert!(
            seen.iter()
                .any(|(t, e, p)| t == tool && *e == effect && *p == me),
            "{tool} ({effect}) by {me} not seen at the gate: {seen:?}"
        );
    }
    here.shutdown(Duration::from_secs(2)).await;
    remote.shutdown(Duration::from_secs(2)).await;
}

/// What the gate refuses does not happen: a denied hook reply, a denied
/// step, a denied control Call and a denied forward are answered `denied`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_gate_denies_does_not_happen() {
    for denied in ["hook.reply", "echo", "agent.suspend"] {
        let rec = Arc::new(Recorder {
            deny: Some(denied),
            ..Recorder::default()
        });
        let caller = NodeIdentity::generate().unwrap();
        let n = node(
            vec![spec(AGENT, ToolRegistry::builtin(), default_rules())],
            Gate::with_policy(rec.clone()),
            vec![],
            vec![caller.peer_id()],
        )
        .await;
        let c = client(&caller);
        let (url, body) = match denied {
            "hook.reply" => (
                n.url().clone().with_agent(AGENT),
                CallBody::new("hook", Value::Null),
            ),
            "echo" => (
                n.url().clone().with_agent(AGENT),
                CallBody::new("echo", json!("secret")),
            ),
            _ => (
                n.url().clone().with_agent(NODE_AGENT),
                CallBody::new("agent.suspend", json!({"agent_id": AGENT})),
            ),
        };
        let err = c.call(&url, &body, TIMEOUT).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DENIED, "{denied}: {err}");
        assert!(err.to_string().contains("the test denies"), "{err}");
        assert!(rec.tools().contains(&denied.to_owned()));
        // The agent is still active: the denied suspension did not happen.
        let list = n.control("agents.list", Value::Null).await.unwrap();
        assert_eq!(list["agents"][0]["state"], "active", "{denied}");
        n.shutdown(Duration::from_secs(2)).await;
    }
}

/// A forward the gate denies never leaves the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_forward_never_reaches_the_other_node() {
    let remote = node(
        vec![spec(REMOTE, ToolRegistry::builtin(), default_rules())],
        Gate::default(),
        vec![],
        vec![],
    )
    .await;
    let rec = Arc::new(Recorder {
        deny: Some("mesh.forward"),
        ..Recorder::default()
    });
    // `here` hosts an agent too: registering it is how `remote` learns of
    // `here`, and so registers its own agent there.
    let here = node(
        vec![spec(AGENT, ToolRegistry::builtin(), default_rules())],
        Gate::with_policy(rec.clone()),
        vec![remote.url().clone()],
        vec![],
    )
    .await;
    let c = client(&NodeIdentity::generate().unwrap());
    let via_here = here.url().clone().with_agent(REMOTE);
    wait_for("the forward to be decided", async || {
        match c
            .call(&via_here, &CallBody::new("echo", json!(1)), TIMEOUT)
            .await
        {
            Err(e) if e.code() == ErrorCode::DENIED => true,
            Err(e) if e.code() == ErrorCode::UNKNOWN_AGENT => false,
            other => panic!("{other:?}"),
        }
    })
    .await;
    let list = remote.control("agents.list", Value::Null).await.unwrap();
    let calls = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == json!(REMOTE))
        .expect("the remote agent is listed")["calls_handled"]
        .clone();
    assert_eq!(calls, json!(0), "the remote agent never saw the Call");
    here.shutdown(Duration::from_secs(2)).await;
    remote.shutdown(Duration::from_secs(2)).await;
}

/// A Call without a session gets a new one, named in the Response; the
/// caller may continue it; another principal may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_belong_to_the_principal_that_started_them() {
    let n = node(
        vec![spec(AGENT, ToolRegistry::builtin(), default_rules())],
        Gate::default(),
        vec![],
        vec![],
    )
    .await;
    let url = n.url().clone().with_agent(AGENT);
    let alice = client(&NodeIdentity::generate().unwrap());
    let mallory = client(&NodeIdentity::generate().unwrap());

    let first = alice
        .call(&url, &CallBody::new("echo", json!(1)), TIMEOUT)
        .await
        .unwrap()
        .parse_body()
        .unwrap();
    let session: SessionId = first.session.expect("the Response names the new session");
    let again = alice
        .call(
            &url,
            &CallBody::new("echo", json!(2)).in_session(session.clone()),
            TIMEOUT,
        )
        .await
        .unwrap()
        .parse_body()
        .unwrap();
    assert_eq!(again.session.as_ref(), Some(&session));
    assert_eq!(again.result, json!(2));
    // Another Call without a session starts another one.
    let other = alice
        .call(&url, &CallBody::new("echo", json!(3)), TIMEOUT)
        .await
        .unwrap()
        .parse_body()
        .unwrap();
    assert_ne!(other.session.as_ref(), Some(&session));

    let err = mallory
        .call(
            &url,
            &CallBody::new("echo", json!("hijack")).in_session(session.clone()),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DENIED, "{err}");
    assert!(err.to_string().contains("another principal"), "{err}");
    // A malformed session id is the caller's error, named.
    let err = alice
        .call_raw(
            &url,
            AGENT,
            bytes::Bytes::from_static(br#"{"method":"echo","session":"a b"}"#),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::INVALID_PAYLOAD, "{err}");
    assert!(err.to_string().contains("session id"), "{err}");
    n.shutdown(Duration::from_secs(2)).await;
}

/// Fields in a Call's body that look like identities change nothing: the
/// gate sees the TLS identity, and a stranger stays a stranger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_a_payload_sets_a_principal() {
    let rec = Arc::new(Recorder::default());
    let operator = NodeIdentity::generate().unwrap();
    let n = node(
        vec![spec(AGENT, ToolRegistry::builtin(), default_rules())],
        Gate::with_policy(rec.clone()),
        vec![],
        vec![operator.peer_id()],
    )
    .await;
    let stranger = NodeIdentity::generate().unwrap();
    let c = client(&stranger);
    let forged = format!(
        r#"{{"method":"echo","params":{{"principal":"operator:{op}"}},"principal":"operator:{op}","origin":"local"}}"#,
        op = operator.peer_id()
    );
    let _ = c
        .call_raw(
            &n.url().clone().with_agent(AGENT),
            AGENT,
            bytes::Bytes::from(forged),
            TIMEOUT,
        )
        .await;
    let seen = rec.seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the Call reached the gate");
    for (_, _, p) in &seen {
        assert_eq!(p.kind(), PrincipalKind::Peer, "{p}");
        assert_eq!(*p, PrincipalId::Peer(stranger.peer_id().fingerprint()));
    }
    n.shutdown(Duration::from_secs(2)).await;
}

/// JSON-level problems in a Call body are answered `invalid_payload` (101)
/// with the decode class in the Error body, as docs/PROTOCOL.md promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_level_errors_carry_their_class() {
    use mxp_protocol::{Call, ErrorPayload, Flags, MessageType, TypedPayload};
    let n = node(
        vec![spec(AGENT, ToolRegistry::builtin(), default_rules())],
        Gate::default(),
        vec![],
        vec![],
    )
    .await;
    let c = client(&NodeIdentity::generate().unwrap());
    let url = n.url().clone().with_agent(AGENT);
    let long = format!(r#"{{"method":"{}"}}"#, "m".repeat(257));
    for (body, class) in [
        (&b""[..], "invalid_json"),
        (br#"{"params":1}"#, "invalid_json"),
        (long.as_bytes(), "limit_exceeded"),
        (br#"{"method":""}"#, "invalid_value"),
    ] {
        let call = Call {
            target: AGENT,
            timeout_secs: 5,
            body: bytes::Bytes::copy_from_slice(body),
        };
        let id = c.next_message_id();
        let answer = c
            .exchange(&url, call.to_frame(id, id, Flags::EMPTY).unwrap(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(answer.message_type(), MessageType::Error);
        let err = ErrorPayload::from_frame(&answer).unwrap();
        assert_eq!(err.code, ErrorCode::INVALID_PAYLOAD);
        assert_eq!(
            err.parse_body().unwrap().class.as_deref(),
            Some(class),
            "{body:?}"
        );
    }
    n.shutdown(Duration::from_secs(2)).await;
}
