//! Reports as JSON: the answers of `audit.replay` and `policy.what_if`
//! (docs/PROTOCOL.md gives their fields).

use serde_json::{Value, json};

use super::{CallOutcome, CallReplay, SessionReplay, Verdict, WhatIfReport};

impl CallReplay {
    /// `{"call", "trace_id", "seq", "steps", "decisions", "outcome", ...}`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "call": self.call,
            "trace_id": self.trace_id,
            "seq": self.seq,
            "steps": self.steps,
            "decisions": self.decisions,
        });
        let extra = match &self.outcome {
            Verdict::Done(o) => json!({ "outcome": match o {
                CallOutcome::Identical => "identical",
                CallOutcome::Unanswered => "unanswered",
                _ => "followed",
            }}),
            Verdict::Diverged(d) => json!({
                "outcome": "diverged",
                "divergence": {
                    "step": d.step,
                    "seq": d.seq,
                    "what": d.what.name(),
                    "recorded": d.recorded,
                    "replayed": d.replayed,
                },
            }),
            Verdict::CannotReplay { step, seq, why } => json!({
                "outcome": "cannot_replay",
                "cannot_replay": { "step": step, "seq": seq, "reason": why.to_string() },
            }),
        };
        if let (Some(m), Some(x)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(x.clone());
        }
        v
    }
}

impl SessionReplay {
    /// The answer of `audit.replay`: `{"session", "result", "records",
    /// "calls", "steps", "decisions", "unanswered"}` plus, for
    /// `diverged`, `"divergence": {"call", "trace_id", "step", "seq",
    /// "what", "recorded", "replayed"}`, and for `cannot_replay`,
    /// `"cannot_replay": {"call", "trace_id", "step", "seq", "reason"}`.
    pub fn to_json(&self) -> Value {
        let steps: usize = self.calls.iter().map(|c| c.steps).sum();
        let decisions: usize = self.calls.iter().map(|c| c.decisions).sum();
        let unanswered = self
            .calls
            .iter()
            .filter(|c| matches!(c.outcome, Verdict::Done(CallOutcome::Unanswered)))
            .count();
        let mut v = json!({
            "session": self.session.as_str(),
            "records": self.records,
            "calls": self.calls.len(),
            "steps": steps,
            "decisions": decisions,
            "unanswered": unanswered,
            "result": "identical",
        });
        let extra = match (self.calls.last().map(|c| (c, &c.outcome)), &self.problem) {
            (Some((c, Verdict::Diverged(d))), _) => json!({
                "result": "diverged",
                "divergence": {
                    "call": c.call,
                    "trace_id": c.trace_id,
                    "step": d.step,
                    "seq": d.seq,
                    "what": d.what.name(),
                    "recorded": d.recorded,
                    "replayed": d.replayed,
                },
            }),
            (Some((c, Verdict::CannotReplay { step, seq, why })), _) => json!({
                "result": "cannot_replay",
                "cannot_replay": {
                    "call": c.call,
                    "trace_id": c.trace_id,
                    "step": step,
                    "seq": seq,
                    "reason": why.to_string(),
                },
            }),
            (_, Some((seq, why))) => json!({
                "result": "cannot_replay",
                "cannot_replay": { "call": null, "step": null, "seq": seq, "reason": why.to_string() },
            }),
            _ => json!({}),
        };
        if let (Some(m), Some(x)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(x.clone());
        }
        v
    }
}

impl WhatIfReport {
    /// The answer of `policy.what_if` (and of `audit.replay` with
    /// policies): `{"calls", "decisions", "changed_total", "changed":
    /// [{"session", "call_seq", "trace_id", "step", "seq", "tool",
    /// "args_digest", "recorded", "new"}], "skipped_total", "skipped":
    /// [{"session", "seq", "step", "reason"}]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "calls": self.calls,
            "decisions": self.decisions,
            "changed_total": self.changed_total,
            "changed": self.changed.iter().map(|c| json!({
                "session": c.session.as_str(),
                "call_seq": c.call_seq,
                "trace_id": c.trace_id,
                "step": c.change.step,
                "seq": c.change.seq,
                "tool": c.change.tool,
                "args_digest": c.change.args_digest,
                "recorded": c.change.recorded,
                "new": c.change.new,
            })).collect::<Vec<_>>(),
            "skipped_total": self.skipped_total,
            "skipped": self.skipped.iter().map(|s| json!({
                "session": s.session.as_str(),
                "seq": s.seq,
                "step": s.step,
                "reason": s.why.to_string(),
            })).collect::<Vec<_>>(),
        })
    }
}
