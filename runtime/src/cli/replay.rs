//! `mxp replay <node> <session> [--policy <dir>]` and the policy files it
//! and `mxp policy what-if` send (operators only).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};

use super::remote::{self, NodeTarget};
use super::{CliError, table, write_out};

/// Bytes of policy text one request may carry, in all (the node's limit).
pub const MAX_POLICY_TEXT: usize = 1 << 20;

/// The long help of `mxp replay`.
pub const LONG_ABOUT: &str = "Replay a recorded session on a node (operators only).\n\n\
    The node re-runs each recorded Call of the session through its agent's planner and the \
    node's current policy: the planner's steps (tool and arguments digest), the policy's \
    decisions (effect and determining policies) and the answer's digest are compared with \
    the audit log, with the recorded tool outputs, times and approvals as inputs (no tool \
    runs). It prints `identical`, or the first divergence: which Call, which plan step, \
    whether the step, a decision or the answer differs, with the recorded and replayed \
    values; or why the session cannot be replayed (an output recorded only as a digest, a \
    model-backed planner, ...).\n\n\
    With --policy <dir> it re-decides every recorded step of the session under the Cedar \
    files of that folder instead (what-if) and lists the decisions that would change. The \
    folder is validated here first, as `mxp policy check` does; its files (at most 256, 1 MiB \
    of text in all) are sent to the node, which changes nothing.\n\n\
    Examples:\n  \
    mxp replay mxp://127.0.0.1:9000 s-0123456789abcdef0123456789abcdef\n  \
    mxp replay mxp://127.0.0.1:9000 s-0123456789abcdef0123456789abcdef --policy ./new-policies\n\n\
    Exit codes: 0 identical (or, with --policy, no decision would change); 6 the report says \
    otherwise (diverged, cannot be replayed, decisions would change); 1 local failure or an \
    answer that is not valid MXP; 2 bad arguments or an invalid policy folder; 3 the node \
    answered with an Error frame (denied: not an operator; an unknown session; a session \
    too large to replay); 4 no answer within --timeout; 5 the node could not be reached.";

/// Arguments of `mxp replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The node.
    #[command(flatten)]
    pub target: NodeTarget,
    /// The session to replay (as the audit log names it).
    #[arg(value_name = "SESSION")]
    pub session: String,
    /// Re-decide the session under the Cedar files of this folder instead (what-if).
    #[arg(long, value_name = "DIR")]
    pub policy: Option<PathBuf>,
    /// Print the node's report as JSON, on one line.
    #[arg(long)]
    pub json: bool,
}

/// Reads and validates the policy folder as `mxp policy check` does, and
/// checks that it fits one request; the files as `{"name", "text"}`.
///
/// # Errors
/// [`CliError::Usage`] naming the folder and what is wrong (for an invalid
/// set, every problem as `file:line:column: reason`).
pub fn policy_files(dir: &Path) -> Result<Value, CliError> {
    let invalid = |e: &dyn std::fmt::Display| {
        CliError::Usage(format!("policy set {} is invalid: {e}", dir.display()))
    };
    let files = mxp_governance::policy::read_policy_dir(dir).map_err(|e| invalid(&e))?;
    mxp_governance::policy::check(&files).map_err(|e| invalid(&e))?;
    let total: usize = files.iter().map(|(_, t)| t.len()).sum();
    if total > MAX_POLICY_TEXT {
        return Err(CliError::Usage(format!(
            "policy set {} holds {total} bytes of text, more than the {MAX_POLICY_TEXT} one request may carry",
            dir.display()
        )));
    }
    Ok(Value::Array(
        files
            .into_iter()
            .map(|(name, text)| json!({ "name": name, "text": text }))
            .collect(),
    ))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A step or decision value in words.
fn describe(v: &Value) -> String {
    if let Some(effect) = v.get("effect").and_then(Value::as_str) {
        let ids: Vec<String> = v
            .get("policy_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        return format!("{effect} [{}]", ids.join(", "));
    }
    if let Some(tool) = v.get("tool").and_then(Value::as_str) {
        let mut s = format!(
            "tool {} args {}",
            table::cell(tool),
            v.get("args_digest").map(text).unwrap_or_default()
        );
        if let Some(r) = v.get("refused").and_then(Value::as_str) {
            s.push_str(&format!(" (refused: {r})"));
        }
        return s;
    }
    if let Some(d) = v.get("answer_digest").and_then(Value::as_str) {
        return format!("answer {d}");
    }
    if let Some(e) = v.get("error") {
        return format!("error {}", text(e));
    }
    if let Some(n) = v.get("none").and_then(Value::as_str) {
        return format!("no step: {n}");
    }
    if v.is_null() {
        return "nothing recorded".into();
    }
    v.to_string()
}

/// The report of `audit.replay` (without policies) in words.
pub fn format_replay(r: &Value) -> String {
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let session = r.get("session").and_then(Value::as_str).unwrap_or("?");
    let counts = format!(
        "{} calls, {} steps, {} decisions",
        n("calls"),
        n("steps"),
        n("decisions")
    );
    match r.get("result").and_then(Value::as_str) {
        Some("identical") => {
            let mut s = format!("identical: session {session}: {counts} replayed");
            if n("unanswered") > 0 {
                s.push_str(&format!(
                    " ({} never answered, identical as far as recorded)",
                    n("unanswered")
                ));
            }
            s + "\n"
        }
        Some("diverged") => {
            let d = r.get("divergence").cloned().unwrap_or_default();
            let step = match d.get("step").and_then(Value::as_u64) {
                Some(s) => format!("step {s}"),
                None => "the answer".into(),
            };
            let what = d.get("what").and_then(Value::as_str).unwrap_or("?");
            format!(
                "diverged: session {session}, call {} (trace {}), {step} (record {}): the {what} differs\n  recorded: {}\n  replayed: {}\n",
                d.get("call").map(text).unwrap_or_default(),
                d.get("trace_id").map(text).unwrap_or_default(),
                d.get("seq").map(text).unwrap_or_default(),
                describe(d.get("recorded").unwrap_or(&Value::Null)),
                describe(d.get("replayed").unwrap_or(&Value::Null)),
            )
        }
        _ => {
            let c = r.get("cannot_replay").cloned().unwrap_or_default();
            let at = match (
                c.get("call").and_then(Value::as_u64),
                c.get("step").and_then(Value::as_u64),
            ) {
                (Some(call), Some(step)) => format!("call {call}, step {step}"),
                (Some(call), None) => format!("call {call}"),
                _ => "the session".into(),
            };
            format!(
                "cannot replay: session {session}, {at} (record {}): {}\n",
                c.get("seq").map(text).unwrap_or_default(),
                c.get("reason").and_then(Value::as_str).unwrap_or("?"),
            )
        }
    }
}

/// The report of a what-if (`policy.what_if`, or `audit.replay` with
/// policies) in words: the counts, then one line per changed decision and
/// per skipped Call.
pub fn format_what_if(r: &Value) -> String {
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut out = format!(
        "{} decisions of {} calls re-decided; {} would change\n",
        n("decisions"),
        n("calls"),
        n("changed_total")
    );
    let empty = Vec::new();
    let changed = r.get("changed").and_then(Value::as_array).unwrap_or(&empty);
    for c in changed {
        let g = |k: &str| c.get(k).map(text).unwrap_or_default();
        out.push_str(&format!(
            "  session {} call@{} (trace {}) step {} (record {}) tool {}: {} -> {}\n",
            table::cell(&g("session")),
            g("call_seq"),
            g("trace_id"),
            g("step"),
            g("seq"),
            table::cell(&g("tool")),
            describe(c.get("recorded").unwrap_or(&Value::Null)),
            describe(c.get("new").unwrap_or(&Value::Null)),
        ));
    }
    if (changed.len() as u64) < n("changed_total") {
        out.push_str(&format!(
            "  ... and {} more (the node lists the first {})\n",
            n("changed_total") - changed.len() as u64,
            changed.len()
        ));
    }
    if n("skipped_total") > 0 {
        out.push_str(&format!("{} not re-decided:\n", n("skipped_total")));
        for s in r.get("skipped").and_then(Value::as_array).unwrap_or(&empty) {
            let g = |k: &str| s.get(k).map(text).unwrap_or_default();
            out.push_str(&format!(
                "  session {} record {}{}: {}\n",
                table::cell(&g("session")),
                g("seq"),
                s.get("step")
                    .and_then(Value::as_u64)
                    .map(|st| format!(" step {st}"))
                    .unwrap_or_default(),
                g("reason"),
            ));
        }
    }
    out
}

/// Runs `mxp replay ...`.
///
/// # Errors
/// [`CliError::Usage`] for an invalid policy folder; the node's errors as
/// [`remote::call_node_agent`].
pub fn run<W: Write>(args: &ReplayArgs, out: &mut W) -> Result<(), CliError> {
    let mut params = json!({ "session": args.session });
    if let Some(dir) = &args.policy
        && let Some(m) = params.as_object_mut()
    {
        m.insert("policies".into(), policy_files(dir)?);
    }
    let t = &args.target;
    let r = remote::call_node_agent(&t.connect, &t.node, "audit.replay", params)?;
    let text = if args.json {
        serde_json::to_string(&r).unwrap_or_default() + "\n"
    } else if args.policy.is_some() {
        format_what_if(&r)
    } else {
        format_replay(&r)
    };
    write_out(out, text.as_bytes())?;
    if args.policy.is_some() {
        what_if_verdict(&r)
    } else {
        replay_verdict(&r)
    }
}

/// Exit 6 unless the replay was identical.
fn replay_verdict(r: &Value) -> Result<(), CliError> {
    match r.get("result").and_then(Value::as_str) {
        Some("identical") => Ok(()),
        Some("diverged") => Err(CliError::Differs(
            "the replay diverged from the record".into(),
        )),
        _ => Err(CliError::Differs("the session cannot be replayed".into())),
    }
}

/// Exit 6 when a decision would change.
pub(crate) fn what_if_verdict(r: &Value) -> Result<(), CliError> {
    match r.get("changed_total").and_then(Value::as_u64) {
        Some(0) => Ok(()),
        Some(n) => Err(CliError::Differs(format!(
            "{n} recorded decisions would change under that policy"
        ))),
        None => Err(CliError::Differs(
            "the node's report does not say how many decisions would change".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_as_sentences() {
        let r = json!({"session": "s-1", "result": "identical", "calls": 2, "steps": 3, "decisions": 3, "unanswered": 0});
        assert_eq!(
            format_replay(&r),
            "identical: session s-1: 2 calls, 3 steps, 3 decisions replayed\n"
        );
        let r = json!({"session": "s-1", "result": "diverged", "calls": 1, "divergence": {
            "call": 1, "trace_id": 7, "step": 1, "seq": 4, "what": "decision",
            "recorded": {"effect": "allow", "policy_ids": ["a"]},
            "replayed": {"effect": "deny", "policy_ids": ["b", "c"]}}});
        assert_eq!(
            format_replay(&r),
            "diverged: session s-1, call 1 (trace 7), step 1 (record 4): the decision differs\n  recorded: allow [a]\n  replayed: deny [b, c]\n"
        );
        let r = json!({"session": "s-1", "result": "cannot_replay", "cannot_replay": {
            "call": 2, "step": 1, "seq": 9, "reason": "cannot replay past this step: its output was recorded as a digest"}});
        assert_eq!(
            format_replay(&r),
            "cannot replay: session s-1, call 2, step 1 (record 9): cannot replay past this step: its output was recorded as a digest\n"
        );
        let r = json!({"calls": 2, "decisions": 3, "changed_total": 1, "changed": [{
            "session": "s-1", "call_seq": 6, "trace_id": 2, "step": 2, "seq": 11, "tool": "echo",
            "recorded": {"effect": "allow", "policy_ids": ["a"]},
            "new": {"effect": "deny", "policy_ids": ["b"]}}],
            "skipped_total": 1, "skipped": [{"session": "s-2", "seq": 3, "step": null, "reason": "why"}]});
        assert_eq!(
            format_what_if(&r),
            "3 decisions of 2 calls re-decided; 1 would change\n  session s-1 call@6 (trace 2) step 2 (record 11) tool echo: allow [a] -> deny [b]\n1 not re-decided:\n  session s-2 record 3: why\n"
        );
    }
}
