//! The node agent's replay methods (operators only, through the gate like
//! `audit.read`):
//!
//! * `audit.replay {"session": "...", "policies": [{"name", "text"}]?}`:
//!   replay a recorded session through the agents' planners and the node's
//!   current policy (`identical`, the first divergence, or why not); with
//!   `policies`, re-decide it under that set instead (what-if) and list the
//!   decisions that would change.
//! * `policy.what_if {"policies": [...], "since_ms": n}`: re-decide every
//!   recorded step decision of every session from `since_ms` on.
//!
//! The log is read in pages through the audit writer (appends go on
//! between pages), on a blocking thread; a replay holds at most
//! [`ReplayLimits`] of records, and at most [`MAX_REPLAYS`] run at once.
//! The pure comparison is [`crate::replay`].

use std::collections::BTreeMap;
use std::sync::Arc;

use mxp_governance::policy::{MAX_POLICY_FILES, PolicyEngine};
use mxp_protocol::{AgentId, SessionId};
use mxp_transport::Reply;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::agent::NodeAgentState;
use crate::audit::Auditor;
use crate::error::CallFailure;
use crate::gate::{CedarPolicy, Policy, Zone};
use crate::replay::{
    ReplayAgent, ReplayError, ReplayLimits, SessionRecords, WhatIf, replay_session,
};

/// Replays and what-ifs a node runs at once, at most; past it a request is
/// answered `overloaded`.
pub const MAX_REPLAYS: usize = 2;
/// Bytes of policy text a replay or what-if request may carry, in all.
pub const MAX_POLICY_TEXT: usize = 1 << 20;
/// Records read from the log per page.
const PAGE: usize = 256;

/// The replay slots of a node agent.
pub(crate) fn replay_slots() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_REPLAYS))
}

/// What a replay request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayRequest {
    /// `audit.replay` without policies.
    Replay {
        /// The session.
        session: SessionId,
    },
    /// `audit.replay` with policies, or `policy.what_if`.
    WhatIf {
        /// One session, or every session.
        session: Option<SessionId>,
        /// Records from this time on (unix ms).
        since_ms: u64,
        /// The policy files, `(name, text)`.
        policies: Vec<(String, String)>,
    },
}

impl ReplayRequest {
    /// Parses the params of `audit.replay` or `policy.what_if`, checking the
    /// policy files' count, names and total size (not their content).
    ///
    /// # Errors
    /// [`CallFailure::InvalidPayload`] naming what is wrong.
    pub fn parse(method: &str, params: &Value) -> Result<ReplayRequest, CallFailure> {
        let invalid = |what: String| CallFailure::InvalidPayload(format!("{method}: {what}"));
        let policies = match params.get("policies") {
            None | Some(Value::Null) => None,
            Some(Value::Array(files)) => Some(policy_files(files).map_err(invalid)?),
            Some(_) => {
                return Err(invalid(
                    "policies must be a list of {\"name\": \"x.cedar\", \"text\": \"...\"}".into(),
                ));
            }
        };
        if method == "audit.replay" {
            let session = match params.get("session").and_then(Value::as_str) {
                Some(s) => s
                    .parse::<SessionId>()
                    .map_err(|e| invalid(format!("session: {e}")))?,
                None => {
                    return Err(invalid(
                        "needs params {\"session\": \"<session id>\", \"policies\": [...]?}".into(),
                    ));
                }
            };
            return Ok(match policies {
                None => ReplayRequest::Replay { session },
                Some(policies) => ReplayRequest::WhatIf {
                    session: Some(session),
                    since_ms: 0,
                    policies,
                },
            });
        }
        let policies = policies.ok_or_else(|| {
            invalid(
                "needs params {\"policies\": [{\"name\", \"text\"}, ...], \"since_ms\": <unix ms>}"
                    .into(),
            )
        })?;
        let since_ms = match params.get("since_ms") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                invalid("since_ms must be unix milliseconds (a whole number)".into())
            })?,
        };
        Ok(ReplayRequest::WhatIf {
            session: None,
            since_ms,
            policies,
        })
    }
}

/// The policy files of a request: at most [`MAX_POLICY_FILES`], names
/// `*.cedar` without a path, at most [`MAX_POLICY_TEXT`] bytes of text in all.
fn policy_files(files: &[Value]) -> Result<Vec<(String, String)>, String> {
    if files.len() > MAX_POLICY_FILES {
        return Err(format!(
            "{} policy files, more than the {MAX_POLICY_FILES} a set may have (MAX_POLICY_FILES)",
            files.len()
        ));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let name = f.get("name").and_then(Value::as_str);
        let text = f.get("text").and_then(Value::as_str);
        let (Some(name), Some(text)) = (name, text) else {
            return Err(format!(
                "policies[{i}] needs {{\"name\": \"x.cedar\", \"text\": \"...\"}}"
            ));
        };
        let plain = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with('.')
            && name.ends_with(".cedar")
            && !name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(format!(
                "policies[{i}]: name {:?} is not a file name ending in .cedar",
                name.chars().take(80).collect::<String>()
            ));
        }
        total = total.saturating_add(text.len());
        if total > MAX_POLICY_TEXT {
            return Err(format!(
                "the policy files hold more than {MAX_POLICY_TEXT} bytes of text in all"
            ));
        }
        out.push((name.to_owned(), text.to_owned()));
    }
    Ok(out)
}

/// What a replay job takes from the node agent.
struct Job {
    auditor: Auditor,
    agents: BTreeMap<AgentId, ReplayAgent>,
    policy: Arc<dyn Policy>,
    node: mxp_protocol::Fingerprint,
    zone: Zone,
}

impl NodeAgentState {
    /// `audit.replay` and `policy.what_if`, once the gate allowed them.
    pub(super) fn replay(&self, method: &str, params: &Value, reply: Reply) {
        let request = match ReplayRequest::parse(method, params) {
            Ok(r) => r,
            Err(f) => return f.answer(reply),
        };
        if !self.services.auditor().is_on() {
            return CallFailure::InvalidPayload("this node keeps no audit log".into())
                .answer(reply);
        }
        let Ok(permit) = self.replays.clone().try_acquire_owned() else {
            return CallFailure::Overloaded(format!(
                "{MAX_REPLAYS} replays are running on this node, its limit; try again when one ends"
            ))
            .answer(reply);
        };
        let job = Job {
            auditor: self.services.auditor().clone(),
            agents: self
                .hosted
                .iter()
                .map(|(id, h)| (*id, h.replay.clone()))
                .collect(),
            policy: self.services.gate().current_policy(),
            node: self.services.node(),
            zone: self.zone,
        };
        let rt = tokio::runtime::Handle::current();
        // Reading pages and deciding is long, blocking work: off the actor
        // and off the async workers.
        tokio::task::spawn_blocking(move || {
            let answer = job.run(&rt, request, &reply);
            drop(permit);
            match answer {
                Ok(v) => {
                    let _ = reply.ok(v);
                }
                Err(f) => f.answer(reply),
            }
        });
    }
}

impl Job {
    fn run(
        self,
        rt: &tokio::runtime::Handle,
        request: ReplayRequest,
        reply: &Reply,
    ) -> Result<Value, CallFailure> {
        let agents = &self.agents;
        let lookup = move |id: AgentId| agents.get(&id).cloned();
        let limits = ReplayLimits::default();
        let failed = |e: ReplayError| CallFailure::InvalidPayload(e.to_string());
        match request {
            ReplayRequest::Replay { session } => {
                let mut records = SessionRecords::new(session.clone(), limits);
                self.scan(rt, reply, 0, |e| records.push(e).map_err(failed))?;
                if records.events().is_empty() {
                    return Err(failed(ReplayError::UnknownSession(session)));
                }
                let report = replay_session(
                    &session,
                    records.events(),
                    &lookup,
                    &*self.policy,
                    self.node,
                );
                Ok(report.to_json())
            }
            ReplayRequest::WhatIf {
                session,
                since_ms,
                policies,
            } => {
                let engine = PolicyEngine::load(&policies).map_err(|e| {
                    CallFailure::InvalidPayload(format!("the what-if policy set is invalid: {e}"))
                })?;
                let policy = CedarPolicy::new(engine, self.zone);
                let mut w = WhatIf::new(&lookup, &policy, self.node, limits);
                let mut v = match &session {
                    Some(s) => {
                        let mut records = SessionRecords::new(s.clone(), limits);
                        self.scan(rt, reply, since_ms, |e| records.push(e).map_err(failed))?;
                        if records.events().is_empty() {
                            return Err(failed(ReplayError::UnknownSession(s.clone())));
                        }
                        for e in records.events() {
                            w.push(e.clone()).map_err(failed)?;
                        }
                        let mut v = w.finish().to_json();
                        if let Some(m) = v.as_object_mut() {
                            m.insert("session".into(), json!(s.as_str()));
                        }
                        v
                    }
                    None => {
                        self.scan(rt, reply, since_ms, |e| w.push(e).map_err(failed))?;
                        w.finish().to_json()
                    }
                };
                if let Some(m) = v.as_object_mut() {
                    m.insert("since_ms".into(), json!(since_ms));
                    m.insert("policies".into(), json!(policies.len()));
                }
                Ok(v)
            }
        }
    }

    /// Feeds every record from the first page on, skipping those before
    /// `since_ms`, to `each`; stops early if the caller gave up.
    fn scan(
        &self,
        rt: &tokio::runtime::Handle,
        reply: &Reply,
        since_ms: u64,
        mut each: impl FnMut(mxp_governance::audit::AuditEvent) -> Result<(), CallFailure>,
    ) -> Result<(), CallFailure> {
        let mut from = 0u64;
        loop {
            if reply.is_closed() {
                return Err(CallFailure::Internal("the caller gave up".into()));
            }
            let (page, head) = rt
                .block_on(self.auditor.read(from, PAGE))
                .map_err(|e| CallFailure::Internal(e.to_string()))?;
            let n = page.len() as u64;
            for r in page {
                if r.event().time_ms >= since_ms {
                    each(r.event().clone())?;
                }
            }
            from = from.saturating_add(n);
            if n == 0 || from >= head.next_seq {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mxp_protocol::ErrorCode;

    #[test]
    fn requests_parse_and_bad_ones_name_what_is_wrong() {
        let files = json!([{"name": "a.cedar", "text": "permit(principal, action, resource);"}]);
        assert_eq!(
            ReplayRequest::parse("audit.replay", &json!({"session": "s-1"})),
            Ok(ReplayRequest::Replay {
                session: "s-1".parse().unwrap()
            })
        );
        assert!(matches!(
            ReplayRequest::parse(
                "audit.replay",
                &json!({"session": "s-1", "policies": files})
            ),
            Ok(ReplayRequest::WhatIf {
                session: Some(_),
                since_ms: 0,
                ..
            })
        ));
        assert_eq!(
            ReplayRequest::parse("policy.what_if", &json!({"policies": files, "since_ms": 5})),
            Ok(ReplayRequest::WhatIf {
                session: None,
                since_ms: 5,
                policies: vec![(
                    "a.cedar".into(),
                    "permit(principal, action, resource);".into()
                )],
            })
        );
        let bad = |method: &str, params: Value, says: &str| {
            let e = ReplayRequest::parse(method, &params).unwrap_err();
            assert_eq!(e.code(), ErrorCode::INVALID_PAYLOAD);
            assert!(e.to_string().contains(says), "{e}");
        };
        bad("audit.replay", json!({}), "needs params");
        bad("audit.replay", json!({"session": "no spaces"}), "session");
        bad("policy.what_if", json!({"since_ms": 1}), "needs params");
        bad(
            "policy.what_if",
            json!({"policies": files, "since_ms": -1}),
            "since_ms",
        );
        bad("policy.what_if", json!({"policies": {}}), "must be a list");
        bad(
            "policy.what_if",
            json!({"policies": [{"name": "a.cedar"}]}),
            "policies[0] needs",
        );
        for name in ["../a.cedar", "a.txt", ".cedar", "a/b.cedar", ""] {
            bad(
                "policy.what_if",
                json!({"policies": [{"name": name, "text": ""}]}),
                "not a file name",
            );
        }
        let many: Vec<Value> = (0..=MAX_POLICY_FILES)
            .map(|i| json!({"name": format!("p{i}.cedar"), "text": ""}))
            .collect();
        bad(
            "policy.what_if",
            json!({ "policies": many }),
            "MAX_POLICY_FILES",
        );
        let half = "x".repeat(MAX_POLICY_TEXT / 2 + 1);
        bad(
            "policy.what_if",
            json!({"policies": [{"name": "a.cedar", "text": half}, {"name": "b.cedar", "text": half}]}),
            "bytes of text",
        );
    }
}
