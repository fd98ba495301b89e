//! Replay and what-if as an operator meets them, over real processes: an
//! `mxp-node` child on loopback with a redb store in a temporary data
//! folder, Cedar policy folders in temporary folders, Calls over real QUIC
//! from this process, and the `mxp` CLI as a child (the operator).
//!
//! Covered: a recorded session replays `identical` (denied steps too);
//! after a restart with other planner rules over the same data folder, the
//! first divergent step is named; `mxp replay --policy` and `mxp policy
//! what-if` list exactly the decisions a stricter set would change; an
//! unknown session, an invalid what-if set (locally and at the node, which
//! writes nothing but the decision on the request), an output recorded as
//! a digest and params too large to record each get a clear message; a
//! non-operator is refused; the node keeps serving Calls during replays.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Lines, MXP_BIN, NODE_BIN, Run, finish};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mxp_protocol::{CallBody, ErrorCode, SessionId};
use mxp_transport::{CallError, Client, Limits, MxpUrl, NODE_AGENT, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

/// The demo agent's rules: `echo`, and `twice`, two echo steps.
const RULES_V1: &str = r#"
[[agents]]
name = "demo"

[[agents.rules]]
method = "echo"
steps = [{ tool = "echo", args = "$params" }]

[[agents.rules]]
method = "twice"
steps = [{ tool = "echo", args = { count = 1, text = "$params.text" } }, { tool = "echo", args = { count = 2 } }]
"#;

/// The same, but `twice`'s second step echoes count 3.
const RULES_V2: &str = r#"
[[agents]]
name = "demo"

[[agents.rules]]
method = "echo"
steps = [{ tool = "echo", args = "$params" }]

[[agents.rules]]
method = "twice"
steps = [{ tool = "echo", args = { count = 1, text = "$params.text" } }, { tool = "echo", args = { count = 3 } }]
"#;

/// The node's own extra policy: echoing the text "forbidden" is denied.
const NO_FORBIDDEN_TEXT: &str = r#"@id("test.no_forbidden_text")
forbid (principal, action == Mxp::Action::"tool:echo", resource)
when { context.args has text && context.args.text == "forbidden" };
"#;

/// A stricter set to try: echoing count 2 is denied too.
const NO_COUNT_2: &str = r#"@id("test.no_count_2")
forbid (principal, action == Mxp::Action::"tool:echo", resource)
when { context.args has count && context.args.count == 2 };
"#;

/// A syntax error at line 3, column 26.
const BROKEN: &str = r#"// A permit whose condition is cut short.
permit (principal, action == Mxp::Action::"tool:echo", resource)
when { context.effect == };
"#;

fn default_policy_files() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../governance/policy/default")
}

/// Makes `dir` a policy folder: the default files plus `extra`.
fn policy_dir(dir: &Path, extra: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(default_policy_files()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("cedar") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    for (name, text) in extra {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir.to_path_buf()
}

// ---------------------------------------------------------------- children

/// `mxp args...` as the operator (its identity under `root`).
fn mxp(root: &Path, args: &[&str]) -> Run {
    let child = Command::new(MXP_BIN)
        .args(args)
        .args(["--timeout", "30s"])
        .env("MXP_CONFIG_DIR", root.join("cli-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, &format!("mxp {args:?}"))
}

fn mxp_ok(root: &Path, args: &[&str]) -> String {
    mxp_exit(root, args, 0)
}

/// Runs `mxp args` and checks its exit code (6: the report says the
/// history differs).
fn mxp_exit(root: &Path, args: &[&str], code: i32) -> String {
    let run = mxp(root, args);
    assert_eq!(run.code, code, "mxp {args:?}: {run:?}");
    run.stdout
}

fn operator_fingerprint(root: &Path) -> String {
    let child = Command::new(MXP_BIN)
        .arg("identity")
        .env("MXP_CONFIG_DIR", root.join("cli-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = finish(child, "mxp identity");
    run.stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("fingerprint: "))
        .unwrap_or_else(|| panic!("{run:?}"))
        .to_owned()
}

/// A running `mxp-node`.
struct NodeProc {
    child: Child,
    out: Lines,
    _err: Lines,
    url: String,
    agent: MxpUrl,
}

impl NodeProc {
    /// A node over `data`, deciding with `policies`, hosting the agent of
    /// `rules`, with the operator `operator`.
    fn start(root: &Path, data: &Path, policies: &Path, rules: &str, operator: &str) -> NodeProc {
        let config = root.join("node.toml");
        std::fs::write(&config, rules).unwrap();
        let mut cmd = Command::new(NODE_BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MXP_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .arg("--config")
            .arg(&config)
            .env("MXP_NODE__LISTEN", "127.0.0.1:0")
            .env("MXP_NODE__DATA_DIR", data)
            .env("MXP_NODE__OPERATORS", format!("[\"{operator}\"]"))
            .env("MXP_METRICS__LISTEN", "")
            .env("MXP_GOVERNANCE__POLICY_DIR", policies)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = Lines::read(child.stdout.take().unwrap());
        let err = Lines::read(child.stderr.take().unwrap());
        let listening = out.wait("\"mxp-node listening on\"", |l| {
            l.starts_with("mxp-node listening on ")
        });
        let url = listening.split_whitespace().nth(3).unwrap().to_owned();
        let try_line = out.wait("\"try: mxp call\"", |l| l.starts_with("try: mxp call "));
        let agent: MxpUrl = try_line.split_whitespace().nth(3).unwrap().parse().unwrap();
        NodeProc {
            child,
            out,
            _err: err,
            url,
            agent,
        }
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let out = self.out.rest();
        assert_eq!(self.child.wait().unwrap().code(), Some(0), "{out:?}");
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- Calls

/// Calls `method` with `params` on `url` in `session` (if any) as `caller`.
fn call(
    caller: &NodeIdentity,
    url: &MxpUrl,
    session: Option<&SessionId>,
    method: &str,
    params: Value,
) -> Result<Value, CallError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(caller, PeerTrust::AnyIdentified, Limits::default()).unwrap();
        let mut body = CallBody::new(method, params);
        body.session = session.cloned();
        let r = client
            .call(url, &body, Duration::from_secs(30))
            .await
            .map(|r| r.parse_body().unwrap().result);
        client.close().await;
        r
    })
}

fn node_agent(node: &NodeProc) -> MxpUrl {
    node.url.parse::<MxpUrl>().unwrap().with_agent(NODE_AGENT)
}

/// Records in the node's log, as an `audit.read` by `op` says (its own
/// decision included: it is recorded before the read).
fn log_size(op: &NodeIdentity, node: &NodeProc) -> u64 {
    let r = call(
        op,
        &node_agent(node),
        None,
        "audit.read",
        json!({"from": 0, "limit": 1}),
    )
    .unwrap();
    r["next_seq"].as_u64().unwrap()
}

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    policies: PathBuf,
    operator: String,
    caller: NodeIdentity,
    session: SessionId,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let operator = operator_fingerprint(&root);
    let policies = policy_dir(&root.join("policies"), &[("text.cedar", NO_FORBIDDEN_TEXT)]);
    World {
        data: root.join("data"),
        policies,
        operator,
        caller: NodeIdentity::generate().unwrap(),
        session: SessionId::from_random([0x5e; 16]),
        root,
        _tmp: tmp,
    }
}

impl World {
    fn start(&self, rules: &str) -> NodeProc {
        NodeProc::start(
            &self.root,
            &self.data,
            &self.policies,
            rules,
            &self.operator,
        )
    }

    /// The session: an echo, a two-step Call, and a denied echo.
    fn record(&self, node: &NodeProc) {
        let s = Some(&self.session);
        let a = call(
            &self.caller,
            &node.agent,
            s,
            "echo",
            json!({"hello": "replay"}),
        )
        .unwrap();
        assert_eq!(a, json!({"hello": "replay"}));
        let b = call(&self.caller, &node.agent, s, "twice", json!({"text": "hi"})).unwrap();
        assert_eq!(b["result"], json!({"count": 2}));
        let denied = call(
            &self.caller,
            &node.agent,
            s,
            "echo",
            json!({"text": "forbidden"}),
        )
        .unwrap_err();
        assert_eq!(denied.code(), ErrorCode::DENIED, "{denied}");
    }
}

#[test]
fn a_session_replays_identical_and_a_changed_planner_diverges_at_its_first_step() {
    let w = world();
    let node = w.start(RULES_V1);
    w.record(&node);
    let s = w.session.as_str();

    let out = mxp_ok(&w.root, &["replay", &node.url, s]);
    assert_eq!(
        out,
        format!("identical: session {s}: 3 calls, 4 steps, 4 decisions replayed\n")
    );
    let out = mxp_ok(&w.root, &["replay", &node.url, s, "--json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["result"], "identical", "{r}");
    // echo 6 records, twice 10, the denied echo 3.
    assert_eq!(r["records"].as_u64(), Some(6 + 10 + 3), "{r}");

    // Unknown session: the node says so (exit 3).
    let run = mxp(&w.root, &["replay", &node.url, "s-nope"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains("the audit log has no record of session s-nope"),
        "{run:?}"
    );
    // Not an operator: denied.
    let refused = call(
        &w.caller,
        &node_agent(&node),
        None,
        "audit.replay",
        json!({"session": s}),
    )
    .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::DENIED, "{refused}");
    node.stop();

    // The same data folder, other rules: `twice`'s second step changed.
    let node = w.start(RULES_V2);
    let out = mxp_exit(&w.root, &["replay", &node.url, s], 6);
    let count2 = mxp_governance::token::args::args_digest(&json!({"count": 2})).to_string();
    let count3 = mxp_governance::token::args::args_digest(&json!({"count": 3})).to_string();
    let head = format!("diverged: session {s}, call 2 (trace ");
    assert!(out.starts_with(&head), "{out}");
    assert!(out.contains("step 2 (record "), "{out}");
    assert!(out.contains("): the step differs\n"), "{out}");
    assert!(
        out.contains(&format!("  recorded: tool echo args {count2}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("  replayed: tool echo args {count3}\n")),
        "{out}"
    );
    node.stop();
}

#[test]
fn what_if_lists_exactly_the_decisions_a_stricter_set_changes() {
    let w = world();
    let node = w.start(RULES_V1);
    w.record(&node);
    let s = w.session.as_str();
    let strict = policy_dir(
        &w.root.join("strict"),
        &[
            ("text.cedar", NO_FORBIDDEN_TEXT),
            ("count.cedar", NO_COUNT_2),
        ],
    );
    let strict = strict.to_str().unwrap();

    // One session.
    let out = mxp_exit(&w.root, &["replay", &node.url, s, "--policy", strict], 6);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("4 decisions of 3 calls re-decided; 1 would change")
    );
    let change = lines.next().unwrap();
    assert!(change.starts_with(&format!("  session {s} call@")), "{out}");
    assert!(
        change.contains(" step 2 (record ")
            && change.ends_with(
                "tool echo: allow [default.tools.read_only_builtins] -> deny [test.no_count_2]"
            ),
        "{out}"
    );
    assert_eq!(lines.next(), None, "{out}");

    // Every session of the last hour: another session's Call counts too.
    let other = SessionId::from_random([0x07; 16]);
    call(
        &w.caller,
        &node.agent,
        Some(&other),
        "twice",
        json!({"text": "x"}),
    )
    .unwrap();
    let out = mxp_exit(
        &w.root,
        &[
            "policy", "what-if", &node.url, "--policy", strict, "--since", "1h", "--json",
        ],
        6,
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["calls"].as_u64(), r["decisions"].as_u64()),
        (Some(4), Some(6)),
        "{r}"
    );
    assert_eq!(r["changed_total"], 2, "{r}");
    let sessions: Vec<&str> = r["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["session"].as_str().unwrap())
        .collect();
    assert_eq!(sessions, [s, other.as_str()], "{r}");
    for c in r["changed"].as_array().unwrap() {
        assert_eq!(c["step"], 2);
        assert_eq!(
            c["new"],
            json!({"effect": "deny", "policy_ids": ["test.no_count_2"]})
        );
    }
    assert_eq!(r["skipped_total"], 0, "{r}");
    // Since a time after every record: nothing to re-decide.
    let future = "2999-01-01T00:00:00Z";
    let out = mxp_ok(
        &w.root,
        &[
            "policy", "what-if", &node.url, "--policy", strict, "--since", future,
        ],
    );
    assert_eq!(out, "0 decisions of 0 calls re-decided; 0 would change\n");
    // The node's own set, unchanged by any of this.
    let allowed = call(&w.caller, &node.agent, None, "echo", json!({"count": 2}));
    assert_eq!(allowed.unwrap(), json!({"count": 2}));

    // An invalid set: refused here, naming file:line:column, nothing sent.
    let bad = policy_dir(&w.root.join("bad"), &[("broken.cedar", BROKEN)]);
    let op = NodeIdentity::load_or_create(&w.root.join("cli-config/identity")).unwrap();
    let before = log_size(&op, &node);
    let run = mxp(
        &w.root,
        &[
            "policy",
            "what-if",
            &node.url,
            "--policy",
            bad.to_str().unwrap(),
            "--since",
            "1h",
        ],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("broken.cedar:3:26: "), "{run:?}");
    // Sent to the node anyway, by a client that does not check: the node
    // refuses it the same way and records only the request's decision.
    let after_cli = log_size(&op, &node);
    assert_eq!(after_cli, before + 1, "only audit.read's own decision");
    let refused = call(
        &op,
        &node_agent(&node),
        None,
        "policy.what_if",
        json!({"policies": [{"name": "broken.cedar", "text": BROKEN}], "since_ms": 0}),
    )
    .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::INVALID_PAYLOAD, "{refused}");
    assert!(
        refused.to_string().contains("broken.cedar:3:26: "),
        "{refused}"
    );
    assert_eq!(
        log_size(&op, &node),
        after_cli + 2,
        "the what-if's decision and audit.read's, nothing else"
    );
    node.stop();
}

#[test]
fn digests_and_large_params_are_named_and_the_node_serves_during_replays() {
    let w = world();
    let node = w.start(RULES_V1);
    let s = w.session.as_str();
    // An output over 16 KiB is recorded as its digest.
    let big = json!({"text": "y".repeat(20_000)});
    assert_eq!(
        call(
            &w.caller,
            &node.agent,
            Some(&w.session),
            "echo",
            big.clone()
        )
        .unwrap(),
        big
    );
    let out = mxp_exit(&w.root, &["replay", &node.url, s], 6);
    assert!(
        out.starts_with(&format!(
            "cannot replay: session {s}, call 1, step 1 (record "
        )),
        "{out}"
    );
    assert!(out.contains("its output was recorded as a digest"), "{out}");
    // Params over the audit data limit are recorded as their digest.
    let other = SessionId::from_random([0x0a; 16]);
    let huge = json!({"text": "z".repeat(70_000)});
    // (Its step is denied too: arguments over the policy's MAX_ARGS_BYTES.)
    let denied = call(&w.caller, &node.agent, Some(&other), "echo", huge).unwrap_err();
    assert_eq!(denied.code(), ErrorCode::DENIED, "{denied}");
    let out = mxp_exit(&w.root, &["replay", &node.url, other.as_str()], 6);
    assert!(
        out.starts_with(&format!("cannot replay: session {other}, call 1 (record ")),
        "{out}"
    );
    assert!(
        out.contains("params were recorded as a digest only"),
        "{out}"
    );
    assert!(out.contains("over the audit data limit of 65536"), "{out}");

    // Replays in a loop on one thread, Calls on this one: every Call is
    // answered and every replay reports.
    let served = SessionId::from_random([0x0b; 16]);
    call(
        &w.caller,
        &node.agent,
        Some(&served),
        "echo",
        json!({"n": 0}),
    )
    .unwrap();
    let (root, url, sess) = (w.root.clone(), node.url.clone(), served.to_string());
    let replays = std::thread::spawn(move || {
        (0..5)
            .map(|_| mxp(&root, &["replay", &url, &sess]))
            .collect::<Vec<Run>>()
    });
    for n in 1..=30 {
        let r = call(
            &w.caller,
            &node.agent,
            Some(&served),
            "echo",
            json!({"n": n}),
        )
        .unwrap();
        assert_eq!(r, json!({"n": n}));
    }
    for run in replays.join().unwrap() {
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.starts_with("identical: "), "{run:?}");
    }
    let out = mxp_ok(&w.root, &["replay", &node.url, served.as_str()]);
    assert_eq!(
        out,
        format!("identical: session {served}: 31 calls, 31 steps, 31 decisions replayed\n")
    );
    node.stop();
}
