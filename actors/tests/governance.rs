//! Governance on real nodes over QUIC on loopback, with Cedar policy files
//! and the approval and kill-switch store in temporary folders: deny by
//! default, typed denials, approvals (bound to the exact intent, single
//! use, eligible voters only, the two-person rule, expiry), the kill switch
//! and its confirmations, budgets, policy reloads racing Calls, and
//! principals that come only from authentication.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use mxp_actors::gate::{BudgetLimits, CedarPolicy, GateSettings, PolicySource, Zone};
use mxp_actors::*;
use mxp_protocol::{AgentId, CallBody, ErrorCode, SessionId};
use mxp_transport::{
    CallError, Client, Limits, MxpUrl, NODE_AGENT, NodeIdentity, PeerId, PeerTrust,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{Semaphore, watch};

const AGENT: AgentId = AgentId::from_bytes([1; 16]);
const TIMEOUT: Duration = Duration::from_secs(20);

const APPROVAL_CEDAR: &str = include_str!("../../governance/policy/default/approval.cedar");
const NODE_CEDAR: &str = include_str!("../../governance/policy/default/node.cedar");
const TOOLS_CEDAR: &str = include_str!("../../governance/policy/default/tools.cedar");

/// Lets anyone ask for the external-write tool `send`; the default
/// approval forbid still sends it to an operator.
const PERMIT_SEND: &str = r#"@id("test.permit_send")
permit (principal, action == Mxp::Action::"tool:send", resource);
"#;

/// The two-person rule on `send`.
const TWO_PERSON_SEND: &str = r#"@id("test.two_person_send")
@approval("operator")
@approvers("2")
forbid (principal, action == Mxp::Action::"tool:send", resource)
unless { context.approved };
"#;

/// The shipped default set as files, plus `extra`.
fn default_plus(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut files = vec![
        ("approval.cedar".to_owned(), APPROVAL_CEDAR.to_owned()),
        ("node.cedar".to_owned(), NODE_CEDAR.to_owned()),
        ("tools.cedar".to_owned(), TOOLS_CEDAR.to_owned()),
    ];
    files.extend(
        extra
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
    );
    files
}

/// A tool of any effect class that counts the runs that entered it and
/// those that finished, and answers with its arguments. With `hold`, each
/// run waits for a permit of that semaphore before finishing.
struct Probe {
    name: String,
    effect: EffectClass,
    entered: watch::Sender<usize>,
    finished: AtomicUsize,
    hold: Option<Arc<Semaphore>>,
}

impl Probe {
    fn new(name: &str, effect: EffectClass) -> Arc<Probe> {
        Arc::new(Probe {
            name: name.to_owned(),
            effect,
            entered: watch::Sender::new(0),
            finished: AtomicUsize::new(0),
            hold: None,
        })
    }

    fn holding(name: &str, effect: EffectClass, hold: Arc<Semaphore>) -> Arc<Probe> {
        Arc::new(Probe {
            name: name.to_owned(),
            effect,
            entered: watch::Sender::new(0),
            finished: AtomicUsize::new(0),
            hold: Some(hold),
        })
    }

    /// Runs that entered the tool.
    fn runs(&self) -> usize {
        *self.entered.borrow()
    }

    fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// Waits until `n` runs entered the tool.
    async fn entered(&self, n: usize) {
        let mut rx = self.entered.subscribe();
        tokio::time::timeout(TIMEOUT, rx.wait_for(|v| *v >= n))
            .await
            .unwrap_or_else(|_| panic!("{} was not entered {n} times", self.name))
            .unwrap();
    }
}

impl Tool for Probe {
    fn name(&self) -> &str {
        &self.name
    }
    fn effect(&self) -> EffectClass {
        self.effect
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
            self.entered.send_modify(|v| *v += 1);
            if let Some(hold) = &self.hold {
                hold.acquire().await.unwrap().forget();
            }
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(json!({ "tool": self.name, "args": grant.args() }))
        })
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

/// A rule: `method` runs `tool` on the Call's params.
fn rule(method: &str, tool: &str) -> Rule {
    Rule {
        method: method.into(),
        when: Default::default(),
        steps: vec![PlanStep {
            tool: tool.into(),
            args: json!("$params"),
        }],
    }
}

/// A node under test: its gate (a clone sharing the node's state), its
/// policy folder and the temporary folder holding both.
struct Fixture {
    node: Node,
    gate: Gate,
    policy: PathBuf,
    _tmp: TempDir,
}

impl Fixture {
    fn agent(&self) -> MxpUrl {
        self.node.url().clone().with_agent(AGENT)
    }

    fn control(&self) -> MxpUrl {
        self.node.url().clone().with_agent(NODE_AGENT)
    }

    async fn stop(self) {
        self.node.shutdown(Duration::from_secs(2)).await;
    }
}

fn write_files(dir: &Path, files: &[(String, String)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Starts a node hosting [`AGENT`] with the builtin tools plus `tools`
/// (method `<name>` runs tool `<name>`), deciding with the Cedar files
/// `files` written to a policy folder (also its `policy.reload` source),
/// with the approval and kill-switch store in the temporary folder.
async fn start(
    files: &[(String, String)],
    settings: GateSettings,
    operators: Vec<PeerId>,
    tools: &[Arc<Probe>],
) -> Fixture {
    let tmp = TempDir::new().unwrap();
    let policy = tmp.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    write_files(&policy, files);
    let engine = PolicySource::Dir(policy.clone()).load().unwrap();
    let store = store::Store::open(&tmp.path().join("store")).unwrap();
    let gate = Gate::new(
        Arc::new(CedarPolicy::new(engine, Zone::Sandbox)),
        settings,
        Some(store),
    )
    .unwrap();
    let mut registry = ToolRegistry::builtin();
    let mut rules = default_rules();
    for t in tools {
        registry.register(t.clone()).unwrap();
        rules.push(rule(&t.name, &t.name));
    }
    let names = registry.names();
    let spec = AgentSpec {
        id: AGENT,
        name: "governed".into(),
        capabilities: vec!["test".into()],
        planner: Arc::new(RulePlanner::new(rules, &names).unwrap()),
        tools: Arc::new(registry),
        hooks: Arc::new(ReplyingHooks),
    };
    let mut s = NodeSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        vec![spec],
    );
    s.gate = gate.clone();
    s.policy_source = PolicySource::Dir(policy.clone());
    s.zone = Zone::Sandbox;
    s.operators = operators;
    s.heartbeat_interval = Duration::from_millis(100);
    s.agent_ttl = Duration::from_secs(5);
    s.limits = Limits {
        peer_rate_per_sec: 1e9,
        peer_burst: 1e9,
        ..Limits::default()
    };
    let node = Node::start(s).await.unwrap();
    Fixture {
        node,
        gate,
        policy,
        _tmp: tmp,
    }
}

fn client(identity: &NodeIdentity) -> Arc<Client> {
    Arc::new(Client::new(identity, PeerTrust::AnyIdentified, Limits::default()).unwrap())
}

fn identity() -> NodeIdentity {
    NodeIdentity::generate().unwrap()
}

fn session(name: &str) -> SessionId {
    SessionId::from_str(name).unwrap()
}

/// Calls and returns the Response's result.
async fn call(c: &Client, url: &MxpUrl, body: &CallBody) -> Result<Value, CallError> {
    c.call(url, body, TIMEOUT)
        .await
        .map(|r| r.parse_body().unwrap().result)
}

/// Calls a node control method.
async fn ctl(c: &Client, f: &Fixture, method: &str, params: Value) -> Result<Value, CallError> {
    call(c, &f.control(), &CallBody::new(method, params)).await
}

/// The code, message and details of a remote Error.
fn remote(r: Result<Value, CallError>) -> (u16, String, Value) {
    match r {
        Err(CallError::Remote {
            code,
            message,
            details,
            ..
        }) => (code.0, message, details.unwrap_or(Value::Null)),
        other => panic!("expected an Error answer, got {other:?}"),
    }
}

/// The reasons of an Error's details, as strings.
fn reasons(details: &Value) -> Vec<String> {
    details["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no reasons in {details}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

/// Polls `f` until it gives a value, for up to [`TIMEOUT`].
async fn wait_until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every approval the node lists, as an operator sees them.
async fn approvals(op: &Client, f: &Fixture) -> Vec<Value> {
    ctl(op, f, "approvals.list", json!({})).await.unwrap()["approvals"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits for a pending approval of `tool` whose id is not in `known`.
async fn new_pending(op: &Client, f: &Fixture, tool: &str, known: &[String]) -> Value {
    wait_until("a new pending approval", async || {
        approvals(op, f).await.into_iter().find(|a| {
            a["state"] == "pending"
                && a["tool"] == tool
                && !known.iter().any(|k| a["id"] == k.as_str())
        })
    })
    .await
}

async fn vote(op: &Client, f: &Fixture, id: &str, approve: bool) -> Result<Value, CallError> {
    ctl(
        op,
        f,
        "approvals.decide",
        json!({ "id": id, "approve": approve }),
    )
    .await
}

/// The state of approval `id`.
async fn approval(op: &Client, f: &Fixture, id: &str) -> Value {
    ctl(op, f, "approvals.list", json!({ "id": id }))
        .await
        .unwrap()
}

fn settings(approval_wait: Duration) -> GateSettings {
    GateSettings {
        approval_wait,
        ..GateSettings::default()
    }
}

fn send(params: Value, s: &SessionId) -> CallBody {
    CallBody::new("send", params).in_session(s.clone())
}

/// A small deterministic generator (an LCG), so runs are reproducible.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> usize {
        usize::try_from(self.next() % n).unwrap()
    }

    fn word(&mut self) -> String {
        const WORDS: [&str; 8] = [
            "/etc/passwd",
            "example.com",
            "operator",
            "rm -rf /",
            "",
            "ünïcödé",
            "tool:echo",
            "secret",
        ];
        WORDS[self.below(8)].to_owned()
    }

    /// Arguments of every JSON shape, naming the attributes policies see
    /// and some that try to pass as identities.
    fn args(&mut self, op: &str) -> Value {
        match self.below(7) {
            0 => Value::Null,
            1 => json!(self.next()),
            2 => json!(self.word()),
            3 => json!([self.word(), self.next(), null, true]),
            4 => json!({
                "path": self.word(),
                "host": self.word(),
                "count": self.next(),
                "recursive": self.below(2) == 0,
            }),
            5 => json!({
                "principal": format!("operator:{op}"),
                "caller": op,
                "text": self.word(),
                "nested": { "size": self.next(), "url": self.word() },
            }),
            _ => json!({ "command": self.word(), "value": -1.5, "name": self.word() }),
        }
    }
}

/// 1. With no policy file at all, nothing is allowed: over 200 generated
/// Calls to tools of every effect class, hook replies, and every control
/// method from an operator are all answered `denied`, and no tool ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_policy_set_denies_everything() {
    let probes = [
        Probe::new("read", EffectClass::ReadOnly),
        Probe::new("local", EffectClass::LocalWrite),
        Probe::new("external", EffectClass::ExternalWrite),
        Probe::new("control", EffectClass::Control),
        Probe::new("forward", EffectClass::Forward),
    ];
    let op = identity();
    let f = start(&[], GateSettings::default(), vec![op.peer_id()], &probes).await;
    let opc = client(&op);
    let peer = client(&identity());
    let op_fp = op.peer_id().fingerprint().to_string();
    let methods = [
        "read", "local", "external", "control", "forward", "echo", "status", "hook",
    ];
    let control: Vec<(&str, Value)> = vec![
        ("node.status", Value::Null),
        ("agents.list", json!({})),
        ("agent.suspend", json!({ "agent_id": AGENT })),
        ("agent.resume", json!({ "agent_id": AGENT })),
        ("agent.retire", json!({ "agent_id": AGENT })),
        ("policy.reload", Value::Null),
        ("killswitch.set", json!({ "on": true, "mesh": false })),
        ("approvals.list", json!({})),
        (
            "approvals.list",
            json!({ "id": "ap-0123456789abcdef0123456789abcdef" }),
        ),
        (
            "approvals.decide",
            json!({ "id": "ap-0123456789abcdef0123456789abcdef", "approve": true }),
        ),
    ];
    let mut g = Gen(0x5eed);
    let (mut agent_calls, mut control_calls) = (0, 0);
    for i in 0..240 {
        // Control Calls come from the operator, interleaved: one that
        // wrongly succeeded (a suspend, a retire) would also change what
        // the agent Calls after it are answered.
        let (who, url, body) = if i % 6 == 5 {
            let (m, p) = control[g.below(control.len() as u64)].clone();
            control_calls += 1;
            (&opc, f.control(), CallBody::new(m, p))
        } else {
            let m = methods[g.below(methods.len() as u64)];
            let mut body = CallBody::new(m, g.args(&op_fp));
            let (who, name) = if g.below(2) == 0 {
                (&opc, "op")
            } else {
                (&peer, "peer")
            };
            // Half in a new session, half in one of a few reused ones.
            if g.below(2) == 0 {
                body = body.in_session(session(&format!("gen-{name}-{}", g.below(4))));
            }
            agent_calls += 1;
            (who, f.agent(), body)
        };
        let (code, message, details) = remote(call(who, &url, &body).await);
        assert_eq!(
            code,
            ErrorCode::DENIED.0,
            "{} {}: {message}",
            body.method,
            body.params
        );
        assert!(details["reasons"].is_array(), "{details}");
    }
    assert!(agent_calls >= 200 && control_calls >= 30);
    for p in &probes {
        assert_eq!(p.runs(), 0, "tool {} ran", p.name);
    }
    assert!(!f.gate.kill_switch().is_on());
    assert_eq!(f.gate.approvals().pending_count(), 0);
    f.stop().await;
}

/// 2. A denial names why: an unpermitted tool's details carry the remedy
/// `missing_permission` with its action and resource; a forbid's carry its
/// @id in `reasons`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_carry_their_policies_and_a_typed_remedy() {
    let note = Probe::new("note", EffectClass::LocalWrite);
    let forbid = r#"@id("test.no_secret_echo")
forbid (principal, action == Mxp::Action::"tool:echo", resource)
when { context.args has text && context.args.text == "secret" };
"#;
    let f = start(
        &default_plus(&[("secret.cedar", forbid)]),
        GateSettings::default(),
        vec![],
        std::slice::from_ref(&note),
    )
    .await;
    let c = client(&identity());
    let node_fp = f.node.peer_id().fingerprint();

    let (code, message, d) =
        remote(call(&c, &f.agent(), &CallBody::new("note", json!({"text": "x"}))).await);
    assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    assert_eq!(reasons(&d), Vec::<String>::new(), "{d}");
    assert_eq!(d["tool"], "note");
    assert_eq!(d["effect"], "local_write");
    assert_eq!(
        d["remedy"],
        json!({
            "kind": "missing_permission",
            "action": "tool:note",
            "resource": format!("Mxp::Agent::\"agent:{AGENT}@{node_fp}\""),
        }),
        "{d}"
    );
    assert_eq!(note.runs(), 0);

    // Node control on a node without operators: no permit determined it
    // either, and the message says how to configure one.
    let (code, message, d) =
        remote(ctl(&c, &f, "agent.suspend", json!({ "agent_id": AGENT })).await);
    assert_eq!(code, ErrorCode::DENIED.0);
    assert_eq!(reasons(&d), Vec::<String>::new(), "{d}");
    assert_eq!(d["tool"], "agent.suspend", "{d}");
    assert!(message.contains("no operators are configured"), "{message}");
    assert!(message.contains("node.operators"), "{message}");

    // A forbid: its id is the reason, and approval cannot lift it.
    let (code, message, d) = remote(
        call(
            &c,
            &f.agent(),
            &CallBody::new("echo", json!({"text": "secret"})),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    assert_eq!(reasons(&d), vec!["test.no_secret_echo"], "{d}");
    assert!(message.contains("test.no_secret_echo"), "{message}");
    assert!(d.get("remedy").is_none(), "{d}");
    // Other arguments are permitted.
    let ok = call(
        &c,
        &f.agent(),
        &CallBody::new("echo", json!({"text": "fine"})),
    )
    .await
    .unwrap();
    assert_eq!(ok, json!({"text": "fine"}));
    f.stop().await;
}

/// 3. An external write waits for an operator: the operator lists it,
/// pending, approves it, and the waiting Call runs the tool once. The
/// approval is used up: the same Call again needs a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_external_write_runs_once_and_the_approval_is_single_use() {
    let send_tool = Probe::new("send", EffectClass::ExternalWrite);
    let op = identity();
    let requester = identity();
    let f = start(
        &default_plus(&[("send.cedar", PERMIT_SEND)]),
        settings(Duration::from_secs(15)),
        vec![op.peer_id()],
        std::slice::from_ref(&send_tool),
    )
    .await;
    let (opc, rc) = (client(&op), client(&requester));
    let s = session("approval-once");
    let body = send(json!({"to": "ops@example.com"}), &s);

    let waiting = {
        let (rc, url, body) = (rc.clone(), f.agent(), body.clone());
        tokio::spawn(async move { call(&rc, &url, &body).await })
    };
    let pending = new_pending(&opc, &f, "send", &[]).await;
    let id = pending["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pending["principal"],
        format!("peer:{}", requester.peer_id().fingerprint())
    );
    assert_eq!(pending["session"], "approval-once");
    assert_eq!(
        pending["reasons"],
        json!(["default.external_write.operator_approval"])
    );
    assert_eq!(
        pending["approvers"],
        json!([{"kind": "operator", "count": 1}])
    );
    assert_eq!(send_tool.runs(), 0, "the write waits for its approval");
    assert!(!waiting.is_finished());

    let voted = vote(&opc, &f, &id, true).await.unwrap();
    assert_eq!(voted["state"], "approved", "{voted}");
    let out = waiting.await.unwrap().unwrap();
    assert_eq!(out["args"], json!({"to": "ops@example.com"}));
    assert_eq!(send_tool.runs(), 1);
    assert_eq!(approval(&opc, &f, &id).await["state"], "consumed");

    // The same Call again: a new approval, and the tool does not run.
    let again = {
        let (rc, url, body) = (rc.clone(), f.agent(), body.clone());
        tokio::spawn(async move { call(&rc, &url, &body).await })
    };
    let second = new_pending(&opc, &f, "send", std::slice::from_ref(&id)).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_ne!(second_id, id);
    assert_eq!(send_tool.runs(), 1);
    // Denying it answers the waiting Call `denied`.
    let voted = vote(&opc, &f, &second_id, false).await.unwrap();
    assert_eq!(voted["state"], "denied");
    let (code, message, _) = remote(again.await.unwrap());
    assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    assert!(message.contains("was denied"), "{message}");
    assert_eq!(send_tool.runs(), 1);
    f.stop().await;
}

/// 4. An approval binds the exact intent: approving arguments A does not
/// allow arguments B, nor A in another session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_binds_the_exact_intent() {
    let send_tool = Probe::new("send", EffectClass::ExternalWrite);
    let op = identity();
    let requester = identity();
    let f = start(
        &default_plus(&[("send.cedar", PERMIT_SEND)]),
        settings(Duration::from_millis(300)),
        vec![op.peer_id()],
        std::slice::from_ref(&send_tool),
    )
    .await;
    let (opc, rc) = (client(&op), client(&requester));
    let s = session("bound");
    let a = json!({"to": "a@example.com", "amount": 1});
    let b = json!({"to": "a@example.com", "amount": 1000});

    let (code, message, d) = remote(call(&rc, &f.agent(), &send(a.clone(), &s)).await);
    assert_eq!(code, ErrorCode::APPROVAL_REQUIRED.0, "{message}");
    let id_a = d["approval"].as_str().unwrap().to_owned();
    assert_eq!(d["remedy"]["kind"], "approval", "{d}");
    assert_eq!(
        vote(&opc, &f, &id_a, true).await.unwrap()["state"],
        "approved"
    );

    // Arguments B, same session: their own approval.
    let (code, message, d) = remote(call(&rc, &f.agent(), &send(b.clone(), &s)).await);
    assert_eq!(code, ErrorCode::APPROVAL_REQUIRED.0, "{message}");
    let id_b = d["approval"].as_str().unwrap().to_owned();
    assert_ne!(id_b, id_a);
    // Arguments A, another session: their own approval too.
    let (code, _, d) =
        remote(call(&rc, &f.agent(), &send(a.clone(), &session("bound-other"))).await);
    assert_eq!(code, ErrorCode::APPROVAL_REQUIRED.0);
    assert_ne!(d["approval"], json!(id_a));
    assert_eq!(send_tool.runs(), 0);
    assert_eq!(approval(&opc, &f, &id_a).await["state"], "approved");
    assert_eq!(approval(&opc, &f, &id_b).await["state"], "pending");

    // The approved intent itself runs, with exactly its arguments.
    let out = call(&rc, &f.agent(), &send(a.clone(), &s)).await.unwrap();
    assert_eq!(out["args"], a);
    assert_eq!(send_tool.runs(), 1);
    assert_eq!(approval(&opc, &f, &id_a).await["state"], "consumed");
    assert_eq!(approval(&opc, &f, &id_b).await["state"], "pending");
    f.stop().await;
}

/// 5. Only eligible votes count: a peer that is not an operator is denied,
/// the requester (an operator here) cannot vote on its own intent, and an
/// operator cannot vote twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_other_operators_vote_and_each_once() {
    let send_tool = Probe::new("send", EffectClass::ExternalWrite);
    let (op1, op2, op3) = (identity(), identity(), identity());
    let stranger = identity();
    let f = start(
        &default_plus(&[("send.cedar", PERMIT_SEND), ("two.cedar", TWO_PERSON_SEND)]),
        settings(Duration::from_millis(300)),
        vec![op1.peer_id(), op2.peer_id(), op3.peer_id()],
        std::slice::from_ref(&send_tool),
    )
    .await;
    let (c1, c2, c3, sc) = (client(&op1), client(&op2), client(&op3), client(&stranger));
    let s = session("votes");
    let body = send(json!({"to": "x"}), &s);

    // The requester is operator 1.
    let (code, _, d) = remote(call(&c1, &f.agent(), &body).await);
    assert_eq!(code, ErrorCode::APPROVAL_REQUIRED.0);
    let id = d["approval"].as_str().unwrap().to_owned();
    assert_eq!(
        d["remedy"]["approvers"],
        json!([{"kind": "operator", "count": 2}])
    );

    let (code, message, _) = remote(vote(&sc, &f, &id, true).await);
    assert_eq!(code, ErrorCode::DENIED.0, "a stranger's vote: {message}");
    let (code, message, _) = remote(vote(&c1, &f, &id, true).await);
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD.0, "{message}");
    assert!(message.contains("cannot vote on it"), "{message}");

    assert_eq!(vote(&c2, &f, &id, true).await.unwrap()["state"], "pending");
    for again in [true, false] {
        let (code, message, _) = remote(vote(&c2, &f, &id, again).await);
        assert_eq!(code, ErrorCode::INVALID_PAYLOAD.0, "{message}");
        assert!(message.contains("already voted"), "{message}");
    }
    let a = approval(&c1, &f, &id).await;
    assert_eq!(a["state"], "pending", "{a}");
    let votes = a["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 1, "only operator 2's first vote counts: {a}");
    assert_eq!(
        votes[0]["by"],
        format!("operator:{}", op2.peer_id().fingerprint())
    );
    // The Call still needs its approval: asked again, it is answered with
    // the same pending one.
    let (code, _, d) = remote(call(&c1, &f.agent(), &body).await);
    assert_eq!(code, ErrorCode::APPROVAL_REQUIRED.0);
    assert_eq!(d["approval"], json!(id));
    assert_eq!(send_tool.runs(), 0);

    assert_eq!(vote(&c3, &f, &id, true).await.unwrap()["state"], "approved");
    let (code, message, _) = remote(vote(&c3, &f, &id, true).await);
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD.0, "{message}");
    // Asking again uses it, once.
    let out = call(&c1, &f.agent(), &body).await.unwrap();
    assert_eq!(out["args"], json!({"to": "x"}));
    assert_eq!(send_tool.runs(), 1);
    assert_eq!(approval(&c1, &f, &id).await["state"], "consumed");
    f.stop().await;
}

/// 6. The two-person rule: one operator's approval leaves the intent
/// pending; a second, distinct operator's approval lets the waiting Call
/// run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_person_rule_needs_two_distinct_operators() {
    let send_tool = Probe::new("send", EffectClass::ExternalWrite);
    let (op1, op2) = (identity(), identity());
    let requester = identity();
    let f = start(
        &default_plus(&[("send.cedar", PERMIT_SEND), ("two.cedar", TWO_PERSON_SEND)]),
        settings(Duration::from_secs(15)),
        vec![op1.peer_id(), op2.peer_id()],
        std::slice::from_ref(&send_tool),
    )
    .await;
    let (c1, c2, rc) = (client(&op1), client(&op2), client(&requester));
    let body = send(json!({"to": "both"}), &session("two-person"));
    let mut waiting = {
        let (rc, url, body) = (rc.clone(), f.agent(), body.clone());
        tokio::spawn(async move { call(&rc, &url, &body).await })
    };
    let pending = new_pending(&c1, &f, "send", &[]).await;
    let id = pending["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pending["approvers"],
        json!([{"kind": "operator", "count": 2}])
    );
    let mut policies: Vec<String> = serde_json::from_value(pending["reasons"].clone()).unwrap();
    policies.sort();
    assert_eq!(
        policies,
        vec![
            "default.external_write.operator_approval",
            "test.two_person_send"
        ]
    );

    let first = vote(&c1, &f, &id, true).await.unwrap();
    assert_eq!(first["state"], "pending", "{first}");
    assert_eq!(first["votes"].as_array().unwrap().len(), 1);
    // The woken Call looks again and keeps waiting (a bounded look; the
    // approval's state above is what the gate decides on).
    tokio::select! {
        r = &mut waiting => panic!("answered after one approval: {r:?}"),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    assert_eq!(send_tool.runs(), 0);
    let (code, message, _) = remote(vote(&c1, &f, &id, true).await);
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD.0, "{message}");

    let second = vote(&c2, &f, &id, true).await.unwrap();
    assert_eq!(second["state"], "approved", "{second}");
    let out = tokio::time::timeout(TIMEOUT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(out["args"], json!({"to": "both"}));
    assert_eq!(send_tool.runs(), 1);
    f.stop().await;
}

/// 7. A pending approval that expires while its Call waits answers that
/// Call `denied`, saying it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_expires_while_waiting_denies_the_call() {
    let send_tool = Probe::new("send", EffectClass::ExternalWrite);
    let op = identity();
    let f = start(
        &default_plus(&[("send.cedar", PERMIT_SEND)]),
        GateSettings {
            approval_wait: Duration::from_secs(2),
            approval_ttl: Duration::from_millis(300),
            ..GateSettings::default()
        },
        vec![op.peer_id()],
        std::slice::from_ref(&send_tool),
    )
    .await;
    let (opc, rc) = (client(&op), client(&identity()));
    let r = call(
        &rc,
        &f.agent(),
        &send(json!({"to": "late"}), &session("expiry")),
    )
    .await;
    let (code, message, d) = remote(r);
    assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    assert!(message.contains("expired"), "{message}");
    assert_eq!(
        reasons(&d),
        vec!["default.external_write.operator_approval"]
    );
    let all = approvals(&opc, &f).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["state"], "expired");
    // Too late to approve it.
    let id = all[0]["id"].as_str().unwrap();
    let (code, message, _) = remote(vote(&opc, &f, id, true).await);
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD.0, "{message}");
    assert!(message.contains("expired"), "{message}");
    assert_eq!(send_tool.runs(), 0);
    f.stop().await;
}

/// 8. The kill switch beats an approval: an approved external write asked
/// again while the switch is on is denied `kill_switch`; reading still
/// works; once off, a fresh approval lets a write run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_beats_an_approval() {
    let send_tool = Probe::new("send", EffectClass::ExternalWrite);
    let op = identity();
    let f = start(
        &default_plus(&[("send.cedar", PERMIT_SEND)]),
        settings(Duration::from_millis(300)),
        vec![op.peer_id()],
        std::slice::from_ref(&send_tool),
    )
    .await;
    let (opc, rc) = (client(&op), client(&identity()));
    let s = session("kill");
    let body = send(json!({"to": "world"}), &s);
    let (code, _, d) = remote(call(&rc, &f.agent(), &body).await);
    assert_eq!(code, ErrorCode::APPROVAL_REQUIRED.0);
    let id = d["approval"].as_str().unwrap().to_owned();
    assert_eq!(
        vote(&opc, &f, &id, true).await.unwrap()["state"],
        "approved"
    );

    let on = ctl(&opc, &f, "killswitch.set", json!({"on": true}))
        .await
        .unwrap();
    assert_eq!(on["on"], true, "{on}");
    assert_eq!(on["applied"], true, "{on}");
    assert_eq!(on["confirmed"], json!([AGENT.to_string()]), "{on}");
    assert_eq!(on["unconfirmed"], json!([]), "{on}");
    let status = ctl(&opc, &f, "node.status", Value::Null).await.unwrap();
    assert_eq!(status["kill_switch"], true, "{status}");

    let (code, message, d) = remote(call(&rc, &f.agent(), &body).await);
    assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    assert_eq!(reasons(&d), vec!["kill_switch"], "{d}");
    assert_eq!(send_tool.runs(), 0);
    let echoed = call(&rc, &f.agent(), &CallBody::new("echo", json!("still here")))
        .await
        .unwrap();
    assert_eq!(echoed, json!("still here"));

    let off = ctl(&opc, &f, "killswitch.set", json!({"on": false}))
        .await
        .unwrap();
    assert_eq!(off["on"], false, "{off}");
    assert_eq!(off["applied"], true, "{off}");
    assert!(!f.gate.kill_switch().is_on());

    // A fresh intent needs, and gets, a fresh approval, then runs.
    let fresh = send(json!({"to": "world", "again": true}), &s);
    let (code, _, d) = remote(call(&rc, &f.agent(), &fresh).await);
    assert_eq!(code, ErrorCode::APPROVAL_REQUIRED.0);
    let fresh_id = d["approval"].as_str().unwrap().to_owned();
    assert_ne!(fresh_id, id);
    assert_eq!(send_tool.runs(), 0);
    vote(&opc, &f, &fresh_id, true).await.unwrap();
    let out = call(&rc, &f.agent(), &fresh).await.unwrap();
    assert_eq!(out["args"], json!({"to": "world", "again": true}));
    assert_eq!(send_tool.runs(), 1);
    f.stop().await;
}

/// Starts a node with a `send` tool held on `hold`, and gets one approved
/// `send` Call into the tool. Returns the fixture, the operator's client,
/// the requester's client and the Call in flight.
async fn write_in_flight(
    send_tool: &Arc<Probe>,
) -> (
    Fixture,
    Arc<Client>,
    Arc<Client>,
    tokio::task::JoinHandle<Result<Value, CallError>>,
) {
    let op = identity();
    let f = start(
        &default_plus(&[("send.cedar", PERMIT_SEND)]),
        settings(Duration::from_secs(15)),
        vec![op.peer_id()],
        std::slice::from_ref(send_tool),
    )
    .await;
    let (opc, rc) = (client(&op), client(&identity()));
    let body = send(json!({"to": "slow"}), &session("in-flight"));
    let write = {
        let (rc, url) = (rc.clone(), f.agent());
        tokio::spawn(async move { call(&rc, &url, &body).await })
    };
    let pending = new_pending(&opc, &f, "send", &[]).await;
    vote(&opc, &f, pending["id"].as_str().unwrap(), true)
        .await
        .unwrap();
    send_tool.entered(1).await;
    (f, opc, rc, write)
}

/// 9a. Turning the kill switch on is answered only once the external
/// write in flight has finished: then `applied: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_is_confirmed_only_after_the_write_in_flight_ends() {
    let hold = Arc::new(Semaphore::new(0));
    let send_tool = Probe::holding("send", EffectClass::ExternalWrite, hold.clone());
    let (f, opc, rc, write) = write_in_flight(&send_tool).await;

    let mut kill = {
        let (opc, url) = (opc.clone(), f.control());
        tokio::spawn(async move {
            call(
                &opc,
                &url,
                &CallBody::new("killswitch.set", json!({"on": true})),
            )
            .await
        })
    };
    // The switch is on at the node (status reads it) ...
    wait_until("the kill switch to be on", async || {
        let st = ctl(&opc, &f, "node.status", Value::Null).await.unwrap();
        (st["kill_switch"] == true).then_some(())
    })
    .await;
    // ... and a new write is refused by it ...
    let (code, _, d) = remote(
        call(
            &rc,
            &f.agent(),
            &send(json!({"to": "new"}), &session("other")),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::DENIED.0);
    assert_eq!(reasons(&d), vec!["kill_switch"]);
    // ... but while the first write is inside the tool, no confirmation.
    tokio::select! {
        r = &mut kill => panic!("the kill switch answered while a write was in flight: {r:?}"),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    assert_eq!((send_tool.runs(), send_tool.finished()), (1, 0));
    assert!(!write.is_finished());

    hold.add_permits(1);
    let answer = tokio::time::timeout(TIMEOUT, kill)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        send_tool.finished(),
        1,
        "confirmed before the write finished"
    );
    assert_eq!(answer["applied"], true, "{answer}");
    assert_eq!(answer["confirmed"], json!([AGENT.to_string()]), "{answer}");
    assert_eq!(answer["unconfirmed"], json!([]), "{answer}");
    // The write that was granted before the switch went on completes.
    let out = write.await.unwrap().unwrap();
    assert_eq!(out["args"], json!({"to": "slow"}));
    f.stop().await;
}

/// 9b. A write that never finishes keeps its agent from confirming: after
/// the confirmation deadline the answer is `applied: false` naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_never_ends_leaves_the_kill_switch_unconfirmed() {
    let hold = Arc::new(Semaphore::new(0));
    let send_tool = Probe::holding("send", EffectClass::ExternalWrite, hold);
    let (f, opc, _rc, write) = write_in_flight(&send_tool).await;
    let answer = ctl(&opc, &f, "killswitch.set", json!({"on": true}))
        .await
        .unwrap();
    assert_eq!(answer["on"], true, "{answer}");
    assert_eq!(answer["applied"], false, "{answer}");
    assert_eq!(
        answer["unconfirmed"],
        json!([AGENT.to_string()]),
        "{answer}"
    );
    assert_eq!(answer["confirmed"], json!([]), "{answer}");
    assert!(
        f.gate.kill_switch().is_on(),
        "the switch is on all the same"
    );
    assert_eq!(send_tool.finished(), 0);
    write.abort();
    f.stop().await;
}

/// 10. A session's call budget: the third Call in a window is denied
/// `budget_exceeded` with when it resets; another session is not
/// affected; once the window passes, the first session works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_session_budget_denies_until_its_window_ends() {
    const WINDOW_MS: u64 = 1000;
    let f = start(
        &default_plus(&[]),
        GateSettings {
            session_budget: BudgetLimits {
                calls: Some(2),
                window_ms: WINDOW_MS,
                ..BudgetLimits::default()
            },
            ..GateSettings::default()
        },
        vec![],
        &[],
    )
    .await;
    let c = client(&identity());
    let echo = |s: &SessionId, v: Value| CallBody::new("echo", v).in_session(s.clone());
    // Three Calls within one window. On a machine so slow that the window
    // ends before the third, the round proves nothing; take another.
    let mut spent = None;
    for round in 0..5 {
        let s = session(&format!("budget-{round}"));
        let started = std::time::Instant::now();
        call(&c, &f.agent(), &echo(&s, json!(1))).await.unwrap();
        call(&c, &f.agent(), &echo(&s, json!(2))).await.unwrap();
        let third = call(&c, &f.agent(), &echo(&s, json!(3))).await;
        let within = started.elapsed() < Duration::from_millis(WINDOW_MS);
        match third {
            Err(e) => {
                spent = Some((s, e));
                break;
            }
            Ok(v) => assert!(!within, "the third Call within the window ran: {v}"),
        }
    }
    let (s, e) = spent.expect("three Calls within one window");
    let now_secs = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let (code, message, d) = remote(Err(e));
    assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    assert_eq!(reasons(&d), vec!["budget_exceeded"], "{d}");
    assert_eq!(d["remedy"]["kind"], "budget_exceeded", "{d}");
    let resets_at = d["remedy"]["resets_at"].as_i64().unwrap();
    assert!(
        resets_at >= now_secs - 1 && resets_at <= now_secs + 2,
        "resets_at {resets_at}, now {now_secs}"
    );
    // Another session of the same caller has its own budget.
    let other = session("budget-other");
    assert_eq!(
        call(&c, &f.agent(), &echo(&other, json!("other")))
            .await
            .unwrap(),
        json!("other")
    );
    // Denied Calls are not charged: once the window ends, it works again.
    let back = wait_until("the budget window to end", async || {
        call(&c, &f.agent(), &echo(&s, json!(4))).await.ok()
    })
    .await;
    assert_eq!(back, json!(4));
    f.stop().await;
}

/// The policy files of set `name` (`a` or `b`): two forbids on `echo`,
/// `<name>1` and `<name>2`.
fn forbids(name: &str) -> String {
    format!(
        r#"@id("{name}1")
forbid (principal, action == Mxp::Action::"tool:echo", resource);

@id("{name}2")
forbid (principal, action == Mxp::Action::"tool:echo", resource)
when {{ context.effect == "read_only" }};
"#
    )
}

/// 11. Reloads racing 1,000 Calls: each decision sees one whole set, never
/// a mix; an invalid set is refused naming file and line, and the old set
/// keeps deciding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_racing_calls_never_mix_two_sets() {
    let op = identity();
    let a = forbids("a");
    let f = start(
        &default_plus(&[("forbid.cedar", &a)]),
        GateSettings::default(),
        vec![op.peer_id()],
        &[],
    )
    .await;
    let opc = client(&op);
    let callers: Vec<Arc<Client>> = (0..4).map(|_| client(&identity())).collect();

    // The reloader swaps sets until the Calls are done; the Calls go out in
    // 20 batches, batch k once k reloads are done, so at least 20 reloads
    // happen while Calls are in flight, however fast either side is.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (reloaded, mut reloads_seen) = watch::channel(0usize);
    let reloader = {
        let (opc, url, dir, done) = (opc.clone(), f.control(), f.policy.clone(), done.clone());
        tokio::spawn(async move {
            let mut reloads = 0usize;
            while !done.load(Ordering::SeqCst) {
                let set = if reloads.is_multiple_of(2) { "b" } else { "a" };
                std::fs::write(dir.join("forbid.cedar"), forbids(set)).unwrap();
                let r = call(&opc, &url, &CallBody::new("policy.reload", Value::Null))
                    .await
                    .unwrap();
                assert!(r["policies"].as_u64().unwrap() >= 6, "{r}");
                reloads += 1;
                reloaded.send_replace(reloads);
            }
            reloads
        })
    };
    let limit = Arc::new(Semaphore::new(64));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000u64 {
        if i % 50 == 0 {
            let batch = usize::try_from(i / 50).unwrap() + 1;
            tokio::time::timeout(TIMEOUT, reloads_seen.wait_for(|n| *n >= batch))
                .await
                .expect("the reloads go on")
                .unwrap();
        }
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (c, url) = (callers[(i % 4) as usize].clone(), f.agent());
        calls.spawn(async move {
            let r = call(&c, &url, &CallBody::new("echo", json!(i))).await;
            drop(permit);
            r
        });
    }
    let (mut seen_a, mut seen_b) = (0, 0);
    while let Some(r) = calls.join_next().await {
        let (code, message, d) = remote(r.unwrap());
        assert_eq!(code, ErrorCode::DENIED.0, "{message}");
        match reasons(&d).as_slice() {
            [x, y] if x == "a1" && y == "a2" => seen_a += 1,
            [x, y] if x == "b1" && y == "b2" => seen_b += 1,
            other => panic!("a decision mixed two sets: {other:?}"),
        }
    }
    done.store(true, Ordering::SeqCst);
    let reloads = reloader.await.unwrap();
    assert!(reloads >= 20, "{reloads} reloads");
    assert_eq!(seen_a + seen_b, 1000);
    assert!(
        seen_a > 0 && seen_b > 0,
        "the reloads raced the Calls: a {seen_a}, b {seen_b}"
    );

    // Settle on set A, then break the folder: the reload is refused.
    std::fs::write(f.policy.join("forbid.cedar"), forbids("a")).unwrap();
    ctl(&opc, &f, "policy.reload", Value::Null).await.unwrap();
    std::fs::write(
        f.policy.join("bad.cedar"),
        "// a broken policy\n\npermit (principal, action resource);\n",
    )
    .unwrap();
    let (code, message, _) = remote(ctl(&opc, &f, "policy.reload", Value::Null).await);
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD.0, "{message}");
    assert!(message.contains("bad.cedar:3:"), "{message}");
    assert!(message.contains("old set stays"), "{message}");
    let (code, _, d) = remote(call(&opc, &f.agent(), &CallBody::new("echo", json!(1))).await);
    assert_eq!(code, ErrorCode::DENIED.0);
    assert_eq!(reasons(&d), vec!["a1", "a2"]);
    f.stop().await;
}

/// 12. Identities in payload fields count for nothing: a stranger whose
/// body says it is an operator can neither suspend an agent nor approve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_in_payload_fields_are_ignored() {
    let send_tool = Probe::new("send", EffectClass::ExternalWrite);
    let op = identity();
    let f = start(
        &default_plus(&[("send.cedar", PERMIT_SEND)]),
        settings(Duration::from_millis(300)),
        vec![op.peer_id()],
        std::slice::from_ref(&send_tool),
    )
    .await;
    let stranger = identity();
    let (opc, sc) = (client(&op), client(&stranger));
    let op_fp = op.peer_id().fingerprint().to_string();
    let forged = |method: &str, params: Value| {
        let mut params = params;
        params["principal"] = json!(format!("operator:{op_fp}"));
        params["caller"] = json!(op_fp);
        bytes::Bytes::from(
            serde_json::to_vec(&json!({
                "method": method,
                "params": params,
                "principal": format!("operator:{op_fp}"),
                "caller": op_fp,
                "origin": "local",
            }))
            .unwrap(),
        )
    };
    let r = sc
        .call_raw(
            &f.control(),
            NODE_AGENT,
            forged("agent.suspend", json!({"agent_id": AGENT})),
            TIMEOUT,
        )
        .await
        .map(|r| r.parse_body().unwrap().result);
    let (code, message, _) = remote(r);
    assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    assert!(
        message.contains(&format!("peer:{}", stranger.peer_id().fingerprint())),
        "the denial names the real caller: {message}"
    );
    let list = f.node.control("agents.list", Value::Null).await.unwrap();
    assert_eq!(list["agents"][0]["state"], "active");

    // A pending approval the stranger tries to decide.
    let rc = client(&identity());
    let body = send(json!({"to": "x"}), &session("forged"));
    let (code, _, d) = remote(call(&rc, &f.agent(), &body).await);
    assert_eq!(code, ErrorCode::APPROVAL_REQUIRED.0);
    let id = d["approval"].as_str().unwrap().to_owned();
    let r = sc
        .call_raw(
            &f.control(),
            NODE_AGENT,
            forged("approvals.decide", json!({"id": id, "approve": true})),
            TIMEOUT,
        )
        .await
        .map(|r| r.parse_body().unwrap().result);
    let (code, message, _) = remote(r);
    assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    let a = approval(&opc, &f, &id).await;
    assert_eq!(a["state"], "pending", "{a}");
    assert_eq!(a["votes"], json!([]), "{a}");
    assert_eq!(send_tool.runs(), 0);
    f.stop().await;
}

/// 13. Reloading the policy and setting the kill switch are for operators
/// only: a peer's attempts are denied and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operators_reload_policy_or_set_the_kill_switch() {
    let op = identity();
    let f = start(
        &default_plus(&[]),
        GateSettings::default(),
        vec![op.peer_id()],
        &[],
    )
    .await;
    let peer = client(&identity());
    // A set that would forbid echo, waiting in the folder for a reload.
    std::fs::write(f.policy.join("forbid.cedar"), forbids("x")).unwrap();
    let (code, message, _) = remote(ctl(&peer, &f, "policy.reload", Value::Null).await);
    assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    assert!(message.contains("not an operator"), "{message}");
    assert_eq!(
        call(&peer, &f.agent(), &CallBody::new("echo", json!("open")))
            .await
            .unwrap(),
        json!("open"),
        "the set was not reloaded"
    );
    for mesh in [false, true] {
        let (code, message, _) = remote(
            ctl(
                &peer,
                &f,
                "killswitch.set",
                json!({"on": true, "mesh": mesh}),
            )
            .await,
        );
        assert_eq!(code, ErrorCode::DENIED.0, "{message}");
    }
    assert!(!f.gate.kill_switch().is_on());
    let st = ctl(&peer, &f, "node.status", Value::Null).await.unwrap();
    assert_eq!(st["kill_switch"], false);
    // The operator may do both (so the denials above were the caller's).
    let opc = client(&op);
    ctl(&opc, &f, "policy.reload", Value::Null).await.unwrap();
    let (code, _, d) = remote(call(&peer, &f.agent(), &CallBody::new("echo", json!(1))).await);
    assert_eq!(code, ErrorCode::DENIED.0);
    assert_eq!(reasons(&d), vec!["x1", "x2"]);
    let on = ctl(&opc, &f, "killswitch.set", json!({"on": true}))
        .await
        .unwrap();
    assert_eq!(on["applied"], true);
    assert!(f.gate.kill_switch().is_on());
    f.stop().await;
}
