//! Governance as an operator meets it, over real processes: `mxp-node`
//! children on loopback with a Cedar policy folder and a redb store in a
//! temporary data folder, the `mxp` CLI as a child with its own identities,
//! and Calls over real QUIC from this process.
//!
//! Covered: an approval that survives restarts, is decided by an operator
//! (recorded in its votes), is bound to one intent and is used once;
//! approvals, the kill switch and policy reloads refused to non-operators;
//! the kill switch persisted across restarts; `mxp policy check`; a node
//! refusing to start on an invalid or missing policy folder; and
//! `mxp policy reload` swapping a valid set in and keeping the old set when
//! the new one is invalid.
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
use std::time::{Duration, Instant};

use mxp_protocol::{CallBody, SessionId};
use mxp_transport::{CallError, Client, Limits, MxpUrl, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

/// How long a Call that needs an approval waits for it on the test nodes.
const APPROVAL_WAIT_MS: &str = "300";

/// Makes `tool:echo` need one operator's approval.
const ECHO_NEEDS_APPROVAL: &str = r#"@id("test.echo_needs_approval")
@approval("operator")
forbid (principal, action == Mxp::Action::"tool:echo", resource) unless { context.approved };
"#;

/// A syntax error: the comparison on line 3 has no right-hand side; the
/// parser meets `}` at line 3, column 26.
const BROKEN: &str = r#"// A permit whose condition is cut short.
permit (principal, action == Mxp::Action::"tool:echo", resource)
when { context.effect == };
"#;
const BROKEN_AT: &str = "broken.cedar:3:26: ";

/// Well-formed, but `Mxp::Ghost` (line 2, column 22) is not an entity type
/// of the schema.
const GHOST: &str = r#"@id("test.ghost")
permit (principal is Mxp::Ghost, action == Mxp::Action::"tool:echo", resource);
"#;
const GHOST_AT: &str = "ghost.cedar:2:22: ";

// ---------------------------------------------------------------- files

fn default_policy_files() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../governance/policy/default")
}

/// Makes `dir` a policy folder: the three default files, plus `extra`
/// (file name, text).
fn policy_dir(dir: &Path, extra: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(default_policy_files()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("cedar") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            copied += 1;
        }
    }
    assert_eq!(copied, 3, "the default set is approval, node and tools");
    for (name, text) in extra {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir.to_path_buf()
}

// ---------------------------------------------------------------- children

/// `mxp args...`, with `MXP_CONFIG_DIR` inside `root` so no default
/// identity outside the test is touched.
fn mxp(root: &Path, args: &[&str]) -> Run {
    let child = Command::new(MXP_BIN)
        .args(args)
        .env("MXP_CONFIG_DIR", root.join("cli-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, &format!("mxp {args:?}"))
}

/// `mxp args... --identity-dir identity`.
fn mxp_as(root: &Path, identity: &Path, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--identity-dir", identity.to_str().unwrap()]);
    mxp(root, &all)
}

/// `mxp args... --identity-dir identity`, which must succeed; its stdout.
fn mxp_ok(root: &Path, identity: &Path, args: &[&str]) -> String {
    let run = mxp_as(root, identity, args);
    assert_eq!(run.code, 0, "mxp {args:?}: {run:?}");
    run.stdout
}

/// The fingerprint `mxp identity --identity-dir identity` prints (the
/// identity is created on first use).
fn fingerprint(root: &Path, identity: &Path) -> String {
    let out = mxp_ok(root, identity, &["identity"]);
    let fp = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("fingerprint: "))
        .unwrap_or_else(|| panic!("{out:?}"))
        .to_owned();
    assert_eq!(fp.len(), 64, "{out}");
    assert!(
        out.contains(&format!("MXP_NODE__OPERATORS='[\"{fp}\"]'")),
        "{out}"
    );
    fp
}

/// How a test node is configured.
struct NodeConfig {
    data: PathBuf,
    /// `governance.policy_dir`; `None`: the embedded default set.
    policy_dir: Option<PathBuf>,
    /// `node.operators`, fingerprints.
    operators: Vec<String>,
}

impl NodeConfig {
    fn command(&self) -> Command {
        let mut cmd = Command::new(NODE_BIN);
        // Nothing from the environment the tests run in decides the node.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MXP_") {
                cmd.env_remove(k);
            }
        }
        let operators: Vec<String> = self.operators.iter().map(|o| format!("\"{o}\"")).collect();
        cmd.env("MXP_NODE__LISTEN", "127.0.0.1:0")
            .env("MXP_NODE__DATA_DIR", &self.data)
            .env("MXP_NODE__OPERATORS", format!("[{}]", operators.join(",")))
            .env("MXP_METRICS__LISTEN", "127.0.0.1:0")
            .env("MXP_GOVERNANCE__APPROVAL_WAIT_MS", APPROVAL_WAIT_MS)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.policy_dir {
            cmd.env("MXP_GOVERNANCE__POLICY_DIR", dir);
        }
        cmd
    }
}

/// A running `mxp-node`.
struct NodeProc {
    child: Child,
    out: Lines,
    err: Lines,
    /// `mxp://127.0.0.1:PORT`.
    url: String,
    /// The demo agent.
    agent: MxpUrl,
}

impl NodeProc {
    /// Starts a node and waits until it prints its URL and the demo agent's.
    fn start(config: &NodeConfig) -> NodeProc {
        let mut child = config.command().spawn().unwrap();
        let mut out = Lines::read(child.stdout.take().unwrap());
        let err = Lines::read(child.stderr.take().unwrap());
        // mxp-node listening on mxp://127.0.0.1:PORT (QUIC, ALPN mxp/1)
        let listening = out.wait("starting \"mxp-node listening on \"", |l| {
            l.starts_with("mxp-node listening on ")
        });
        let url = listening.split_whitespace().nth(3).unwrap().to_owned();
        // try: mxp call mxp://127.0.0.1:PORT/ID '{...}'
        let try_line = out.wait("starting \"try: mxp call \"", |l| {
            l.starts_with("try: mxp call ")
        });
        let agent: MxpUrl = try_line.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(
            agent.to_string().starts_with(&format!("{url}/")),
            "{agent} is not on {url}"
        );
        NodeProc {
            child,
            out,
            err,
            url,
            agent,
        }
    }

    /// SIGTERM; waits for the exit, which must be clean (code 0, `stopped`).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        // The child closes stdout when it exits: the end of the stream.
        let out = self.out.rest();
        let status = self.child.wait().unwrap();
        let err = self.err.rest();
        assert_eq!(
            status.code(),
            Some(0),
            "mxp-node after SIGTERM: {out:?} {err:?}"
        );
        assert!(out.iter().any(|l| l == "stopped"), "{out:?}");
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- Calls

/// A Call of `echo` with `params` in `session`, from `caller`: the result,
/// or the error.
fn echo(
    caller: &NodeIdentity,
    agent: &MxpUrl,
    session: &SessionId,
    params: &Value,
) -> Result<Value, CallError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(caller, PeerTrust::AnyIdentified, Limits::default()).unwrap();
        let body = CallBody::new("echo", params.clone()).in_session(session.clone());
        client
            .call(agent, &body, Duration::from_secs(15))
            .await
            .map(|r| r.parse_body().unwrap().result)
    })
}

/// The approval id of an `approval_required` answer.
fn approval_of(answer: Result<Value, CallError>) -> String {
    match answer {
        Err(CallError::Remote {
            code,
            message,
            details,
            ..
        }) => {
            assert_eq!(
                (code.0, code.name()),
                (502, "approval_required"),
                "{message} {details:?}"
            );
            let id = details
                .as_ref()
                .and_then(|d| d.get("approval"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no approval in {details:?}"))
                .to_owned();
            assert!(
                id.starts_with("ap-") && id.len() == 35,
                "{id}: not ap-<32 hex digits>"
            );
            id
        }
        other => panic!("expected approval_required, got {other:?}"),
    }
}

/// `mxp approvals show`, parsed.
fn show(root: &Path, identity: &Path, node: &str, id: &str) -> Value {
    let out = mxp_ok(root, identity, &["approvals", "show", node, id]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The `key: value` line `key` of `mxp node status`.
fn status_line(root: &Path, identity: &Path, node: &str, key: &str) -> String {
    let out = mxp_ok(root, identity, &["node", "status", node]);
    out.lines()
        .find(|l| l.starts_with(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key:?} in {out}"))
        .to_owned()
}

fn session(byte: u8) -> SessionId {
    SessionId::from_random([byte; 16])
}

// ---------------------------------------------------------------- tests

/// An intent needing approval is answered `approval_required`; the pending
/// approval survives a restart, an operator approves it (the vote names
/// them), it survives another restart, and then exactly that intent (same
/// caller, agent, session, tool, arguments) runs, once.
#[test]
fn approval_survives_restarts_binds_one_intent_and_is_used_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let operator = root.join("operator");
    let op_fp = fingerprint(root, &operator);
    let config = NodeConfig {
        data: root.join("data"),
        policy_dir: Some(policy_dir(
            &root.join("policies"),
            &[("echo_approval.cedar", ECHO_NEEDS_APPROVAL)],
        )),
        operators: vec![op_fp.clone()],
    };
    let caller = NodeIdentity::generate().unwrap();
    let caller_principal = format!("peer:{}", caller.peer_id());
    let s = session(0x5e);
    let args = json!({"x": 1});

    // First run: the Call waits approval_wait_ms, then gets the id.
    let node = NodeProc::start(&config);
    let started = Instant::now();
    let id = approval_of(echo(&caller, &node.agent, &s, &args));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered before approval_wait_ms: {:?}",
        started.elapsed()
    );
    assert_eq!(
        status_line(root, &operator, &node.url, "approvals pending"),
        "approvals pending: 1"
    );
    let agent = node.agent.clone();
    node.stop();

    // Second run, same data folder, a new port: the approval is still pending.
    let node = NodeProc::start(&config);
    assert_eq!(node.agent.agent(), agent.agent(), "same demo agent id");
    let list = mxp_ok(root, &operator, &["approvals", "list", &node.url]);
    let line = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed after a restart: {list}"));
    assert_eq!(
        line,
        format!("{id} pending echo by {caller_principal} (0 votes)"),
        "{list}"
    );
    let out = mxp_ok(root, &operator, &["approvals", "approve", &node.url, &id]);
    assert_eq!(out, format!("{id}: approved\n"));
    node.stop();

    // Third run: approved, and the vote names the operator.
    let node = NodeProc::start(&config);
    let a = show(root, &operator, &node.url, &id);
    assert_eq!(a["id"], json!(id), "{a}");
    assert_eq!(a["state"], "approved", "{a}");
    assert_eq!(a["tool"], "echo", "{a}");
    assert_eq!(a["principal"], json!(caller_principal), "{a}");
    assert_eq!(a["session"], json!(s.as_str()), "{a}");
    let votes = a["votes"].as_array().unwrap_or_else(|| panic!("{a}"));
    assert_eq!(votes.len(), 1, "{a}");
    assert_eq!(votes[0]["by"], json!(format!("operator:{op_fp}")), "{a}");
    assert_eq!(votes[0]["approve"], json!(true), "{a}");

    // Other arguments are another intent: not covered by the approval,
    // which stays unused.
    let other = approval_of(echo(&caller, &node.agent, &s, &json!({"x": 2})));
    assert_ne!(other, id);
    // So is the same Call in another session.
    let elsewhere = approval_of(echo(&caller, &node.agent, &session(0x77), &args));
    assert_ne!(elsewhere, id);
    // Another caller cannot even ask in this session: it is the caller's.
    let stranger = NodeIdentity::generate().unwrap();
    match echo(&stranger, &node.agent, &s, &args) {
        Err(CallError::Remote { code, message, .. }) => {
            assert_eq!(code.name(), "denied", "{message}");
            assert!(
                message.contains("belongs to another principal"),
                "{message}"
            );
        }
        other => panic!("another caller in the session: {other:?}"),
    }
    assert_eq!(show(root, &operator, &node.url, &id)["state"], "approved");

    // The approved intent runs, once.
    let result = echo(&caller, &node.agent, &s, &args).unwrap();
    assert_eq!(result, args);
    assert_eq!(show(root, &operator, &node.url, &id)["state"], "consumed");
    let again = approval_of(echo(&caller, &node.agent, &s, &args));
    assert_ne!(again, id, "a used approval is not handed out again");
    assert_eq!(show(root, &operator, &node.url, &again)["state"], "pending");
    node.stop();
}

/// Only operators decide or read approvals: another identity's vote is
/// refused `denied` (exit 3) and not recorded.
#[test]
fn approvals_by_a_non_operator_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let operator = root.join("operator");
    let stranger = root.join("stranger");
    let op_fp = fingerprint(root, &operator);
    let stranger_fp = fingerprint(root, &stranger);
    assert_ne!(op_fp, stranger_fp);
    let config = NodeConfig {
        data: root.join("data"),
        policy_dir: Some(policy_dir(
            &root.join("policies"),
            &[("echo_approval.cedar", ECHO_NEEDS_APPROVAL)],
        )),
        operators: vec![op_fp],
    };
    let node = NodeProc::start(&config);
    let caller = NodeIdentity::generate().unwrap();
    let s = session(0x21);
    let id = approval_of(echo(&caller, &node.agent, &s, &json!({"x": 1})));

    for args in [
        vec!["approvals", "approve", &node.url, &id],
        vec!["approvals", "deny", &node.url, &id],
        vec!["approvals", "list", &node.url],
        vec!["approvals", "show", &node.url, &id],
    ] {
        let run = mxp_as(root, &stranger, &args);
        assert_eq!(run.code, 3, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("mxp: denied"), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }

    // Nothing changed: still pending, no vote; the Call still needs it.
    let a = show(root, &operator, &node.url, &id);
    assert_eq!(a["state"], "pending", "{a}");
    assert_eq!(a["votes"], json!([]), "{a}");
    assert_eq!(
        approval_of(echo(&caller, &node.agent, &s, &json!({"x": 1}))),
        id,
        "the same intent waits on the same pending approval"
    );

    // The operator's denial, by contrast, is taken.
    let out = mxp_ok(root, &operator, &["approvals", "deny", &node.url, &id]);
    assert_eq!(out, format!("{id}: denied\n"));
    node.stop();
}

/// `mxp killswitch on` is confirmed by the node's executor, shows in
/// `mxp node status`, stays on across a restart, and `off` releases it
/// (also persisted). A non-operator cannot turn it on.
#[test]
fn kill_switch_persists_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let operator = root.join("operator");
    let stranger = root.join("stranger");
    let config = NodeConfig {
        data: root.join("data"),
        policy_dir: None,
        operators: vec![fingerprint(root, &operator)],
    };
    let caller = NodeIdentity::generate().unwrap();
    let s = session(0x33);

    let node = NodeProc::start(&config);
    assert_eq!(
        status_line(root, &operator, &node.url, "kill switch"),
        "kill switch: off"
    );
    let run = mxp_as(root, &stranger, &["killswitch", "on", &node.url]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("mxp: denied"), "{run:?}");
    assert_eq!(
        status_line(root, &operator, &node.url, "kill switch"),
        "kill switch: off"
    );

    let out = mxp_ok(root, &operator, &["killswitch", "on", &node.url]);
    assert_eq!(out, "kill switch on: 1 executors confirmed\n");
    assert_eq!(
        status_line(root, &operator, &node.url, "kill switch"),
        "kill switch: ON"
    );
    // It stops external writes only: the read-only echo still runs.
    assert_eq!(
        echo(&caller, &node.agent, &s, &json!({"k": 1})).unwrap(),
        json!({"k": 1})
    );
    node.stop();

    let mut node = NodeProc::start(&config);
    assert_eq!(
        status_line(root, &operator, &node.url, "kill switch"),
        "kill switch: ON",
        "the kill switch did not survive the restart"
    );
    node.err.wait("warning that the kill switch is ON", |l| {
        l.contains("the kill switch is ON (persisted)")
    });
    let out = mxp_ok(root, &operator, &["killswitch", "off", &node.url]);
    assert_eq!(out, "kill switch off: 1 executors confirmed\n");
    assert_eq!(
        status_line(root, &operator, &node.url, "kill switch"),
        "kill switch: off"
    );
    node.stop();

    let node = NodeProc::start(&config);
    assert_eq!(
        status_line(root, &operator, &node.url, "kill switch"),
        "kill switch: off",
        "released, and that was persisted too"
    );
    node.stop();
}

/// `mxp policy check <dir>`, offline: the count for a valid folder, and the
/// file, line and column of a syntax error, the file of a validation error.
#[test]
fn policy_check_counts_a_valid_set_and_locates_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    let defaults = policy_dir(&root.join("defaults"), &[]);
    let run = mxp(root, &["policy", "check", defaults.to_str().unwrap()]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (
            0,
            format!("ok: 6 policies in 3 files ({})\n", defaults.display()).as_str(),
            ""
        ),
        "{run:?}"
    );

    let with_approval = policy_dir(
        &root.join("with-approval"),
        &[("echo_approval.cedar", ECHO_NEEDS_APPROVAL)],
    );
    let run = mxp(root, &["policy", "check", with_approval.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        format!("ok: 7 policies in 4 files ({})\n", with_approval.display())
    );

    let broken = policy_dir(&root.join("broken"), &[("broken.cedar", BROKEN)]);
    let run = mxp(root, &["policy", "check", broken.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    let diagnostic = run
        .stderr
        .lines()
        .find(|l| l.contains("broken.cedar"))
        .unwrap_or_else(|| panic!("broken.cedar not named: {run:?}"));
    let reason = diagnostic
        .split_once(BROKEN_AT)
        .unwrap_or_else(|| panic!("not at {BROKEN_AT:?}: {run:?}"))
        .1;
    assert!(!reason.trim().is_empty(), "no reason: {run:?}");
    assert!(
        run.stderr.contains(&broken.display().to_string()),
        "the folder is not named: {run:?}"
    );
    assert!(
        !run.stderr.contains("node.cedar"),
        "valid files are not blamed: {run:?}"
    );

    let ghost = policy_dir(&root.join("ghost"), &[("ghost.cedar", GHOST)]);
    let run = mxp(root, &["policy", "check", ghost.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(GHOST_AT) && l.contains("unrecognized entity type `Mxp::Ghost`")),
        "the unknown entity type is not located in ghost.cedar: {run:?}"
    );
}

/// `mxp-node` refuses to start on an invalid policy folder (exit 2, the
/// file, line, column and reason on stderr) or a missing one (exit 2, the
/// folder named).
#[test]
fn node_refuses_an_invalid_or_missing_policy_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let broken = policy_dir(&root.join("broken"), &[("broken.cedar", BROKEN)]);
    let config = NodeConfig {
        data: root.join("data"),
        policy_dir: Some(broken.clone()),
        operators: vec![],
    };
    let run = finish(config.command().spawn().unwrap(), "mxp-node (broken set)");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!run.stdout.contains("listening"), "{run:?}");
    assert!(
        run.stderr.contains("governance.policy_dir"),
        "the setting is not named: {run:?}"
    );
    assert!(
        run.stderr.contains(&broken.display().to_string()),
        "the folder is not named: {run:?}"
    );
    let diagnostic = run
        .stderr
        .lines()
        .find(|l| l.contains("broken.cedar"))
        .unwrap_or_else(|| panic!("broken.cedar not named: {run:?}"));
    let reason = diagnostic
        .split_once(BROKEN_AT)
        .unwrap_or_else(|| panic!("not at {BROKEN_AT:?}: {run:?}"))
        .1;
    assert!(!reason.trim().is_empty(), "no reason: {run:?}");

    let missing = root.join("no-such-policies");
    let config = NodeConfig {
        data: root.join("data"),
        policy_dir: Some(missing.clone()),
        operators: vec![],
    };
    let run = finish(config.command().spawn().unwrap(), "mxp-node (missing set)");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!run.stdout.contains("listening"), "{run:?}");
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "the missing folder is not named: {run:?}"
    );
    assert!(run.stderr.contains("governance.policy_dir"), "{run:?}");
}

/// `mxp policy reload` (operators): an invalid folder is refused (exit 3,
/// the file named) and the old set stays in force; a valid one is swapped
/// in at once, and Calls follow it.
#[test]
fn policy_reload_swaps_a_valid_set_and_keeps_the_old_one_on_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let operator = root.join("operator");
    let stranger = root.join("stranger");
    let dir = policy_dir(
        &root.join("policies"),
        &[("echo_approval.cedar", ECHO_NEEDS_APPROVAL)],
    );
    let config = NodeConfig {
        data: root.join("data"),
        policy_dir: Some(dir.clone()),
        operators: vec![fingerprint(root, &operator)],
    };
    let node = NodeProc::start(&config);
    let caller = NodeIdentity::generate().unwrap();
    let s = session(0x44);
    let args = json!({"x": 1});
    approval_of(echo(&caller, &node.agent, &s, &args));

    // The approval file gone but a broken file added: refused, and echo
    // still needs approval (the old set, not the new files).
    std::fs::remove_file(dir.join("echo_approval.cedar")).unwrap();
    std::fs::write(dir.join("broken.cedar"), BROKEN).unwrap();
    let run = mxp_as(root, &operator, &["policy", "reload", &node.url]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    assert!(run.stderr.contains(BROKEN_AT), "{run:?}");
    assert!(run.stderr.contains("old set stays"), "{run:?}");
    approval_of(echo(&caller, &node.agent, &s, &args));

    // Not an operator: denied, whatever the files say.
    std::fs::remove_file(dir.join("broken.cedar")).unwrap();
    let run = mxp_as(root, &stranger, &["policy", "reload", &node.url]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("mxp: denied"), "{run:?}");
    approval_of(echo(&caller, &node.agent, &s, &args));

    // The default files alone: swapped in, echo runs without approval.
    let out = mxp_ok(root, &operator, &["policy", "reload", &node.url]);
    assert_eq!(
        out,
        format!("reloaded: 6 policies from {}\n", dir.display())
    );
    assert_eq!(echo(&caller, &node.agent, &s, &args).unwrap(), args);

    // Approval file back, plus an invalid one: refused, echo keeps running
    // without approval.
    std::fs::write(dir.join("echo_approval.cedar"), ECHO_NEEDS_APPROVAL).unwrap();
    std::fs::write(dir.join("ghost.cedar"), GHOST).unwrap();
    let run = mxp_as(root, &operator, &["policy", "reload", &node.url]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains(GHOST_AT), "{run:?}");
    assert_eq!(echo(&caller, &node.agent, &s, &args).unwrap(), args);
    node.stop();
}
