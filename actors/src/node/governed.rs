//! The node agent's governance methods: policy reload, the kill switch with
//! its confirmations, and approvals. Each arrives as a control Call that the
//! gate already allowed (operators only, by the default policy).

use std::time::Duration;

use bytes::Bytes;
use mxp_governance::approval::{Approval, ApprovalId};
use mxp_protocol::{AgentId, CallBody};
use mxp_transport::{MxpUrl, NODE_AGENT, Principal, Reply};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::agent::NodeAgentState;
use crate::AgentMsg;
use crate::audit;
use crate::error::CallFailure;
use crate::gate::{CedarPolicy, PolicySource, now_unix_ms, remedy_json};

/// How long each executor (and each mesh node) has to confirm the kill
/// switch.
pub const KILL_SWITCH_CONFIRM: Duration = Duration::from_secs(5);

/// The JSON form of an approval, for `approvals.list`.
pub fn approval_json(a: &Approval) -> Value {
    let key = a.key();
    json!({
        "id": a.id().to_string(),
        "state": a.state().name(),
        "principal": key.principal.to_string(),
        "agent": key.agent,
        "session": key.session.as_str(),
        "tool": key.tool,
        "args_digest": key.args.to_string(),
        "reasons": a.reasons(),
        "approvers": remedy_json(&crate::gate::Remedy::Approval {
            requirements: a.requirements().to_vec(),
        })
        .get("approvers")
        .cloned()
        .unwrap_or_default(),
        "votes": a.votes().iter().map(|v| json!({
            "by": v.by.to_string(), "approve": v.approve, "at_unix_ms": v.at_unix_ms,
        })).collect::<Vec<_>>(),
        "created_unix_ms": a.created_unix_ms(),
        "expires_unix_ms": a.expires_unix_ms(),
    })
}

impl NodeAgentState {
    /// `policy.reload`: loads the configured set again; an invalid set
    /// keeps the old one and the answer says why.
    pub(super) fn policy_reload(&self, principal: Principal, reply: Reply) {
        let source = self.policy_source.clone();
        let zone = self.zone;
        let services = self.services.clone();
        // Reading and validating files is blocking work: off the actor.
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || match source.load() {
            Ok(engine) => {
                let policies = engine.summary().policies;
                let recorded = rt.block_on(services.auditor().record(vec![audit::event(
                    audit::EventKind::PolicyReload,
                    json!({ "policies": policies, "source": source.to_string() }),
                    Some(principal.id()),
                    None,
                    0,
                )]));
                if let Err(e) = recorded {
                    return CallFailure::Internal(format!("the reload was not applied: {e}"))
                        .answer(reply);
                }
                services
                    .gate()
                    .replace_policy(std::sync::Arc::new(CedarPolicy::new(engine, zone)));
                metrics::counter!("mxp_policy_reloads_total", "outcome" => "ok").increment(1);
                info!(by = %principal, policies, source = %source, "policy reloaded");
                let _ = reply.ok(json!({ "policies": policies, "source": source.to_string() }));
            }
            Err(e) => {
                metrics::counter!("mxp_policy_reloads_total", "outcome" => "invalid").increment(1);
                warn!(by = %principal, source = %source, "policy reload refused, the old set stays: {e}");
                CallFailure::InvalidPayload(format!(
                    "the policy set in {source} is invalid, so the old set stays: {e}"
                ))
                .answer(reply);
            }
        });
    }

    /// `killswitch.set`: persists and applies the switch, then answers once
    /// every executor (and, with `mesh`, every reachable node) confirmed,
    /// naming those that did not within [`KILL_SWITCH_CONFIRM`].
    pub(super) fn kill_switch(&self, on: bool, mesh: bool, principal: Principal, reply: Reply) {
        if let Err(e) = self.services.gate().kill_switch().set(on) {
            return CallFailure::Internal(format!(
                "the kill switch was not changed: its state could not be persisted: {e}"
            ))
            .answer(reply);
        }
        warn!(by = %principal, on, mesh, "kill switch {}", if on { "ON" } else { "off" });
        let agents: Vec<(AgentId, ractor::ActorRef<AgentMsg>)> = self
            .hosted
            .iter()
            .map(|(id, h)| (*id, h.actor.clone()))
            .collect();
        let nodes: Vec<String> = if mesh { self.dialer.all() } else { Vec::new() };
        let client = self.client.clone();
        let auditor = self.services.auditor().clone();
        tokio::spawn(async move {
            let recorded = auditor
                .record(vec![audit::event(
                    audit::EventKind::KillSwitch { engaged: on },
                    json!({ "mesh": mesh }),
                    Some(principal.id()),
                    None,
                    0,
                )])
                .await;
            if let Err(e) = recorded {
                // The switch is applied (safety first) but the answer says
                // the record is missing.
                return CallFailure::Internal(format!(
                    "the kill switch is {}, but the audit log could not record it: {e}",
                    if on { "on" } else { "off" }
                ))
                .answer(reply);
            }
            let confirmations = agents.into_iter().map(|(id, actor)| async move {
                // Releasing needs no confirmation: nothing must stop.
                if !on {
                    return (id, true);
                }
                let ok = matches!(
                    actor
                        .call(AgentMsg::ConfirmKillSwitch, Some(KILL_SWITCH_CONFIRM))
                        .await,
                    Ok(ractor::rpc::CallResult::Success(()))
                );
                (id, ok)
            });
            let remote = nodes.into_iter().map(|url| {
                let client = client.clone();
                async move {
                    let outcome = remote_kill_switch(&client, &url, on).await;
                    (url, outcome)
                }
            });
            let (agents, nodes) = tokio::join!(
                futures_util::future::join_all(confirmations),
                futures_util::future::join_all(remote)
            );
            let unconfirmed: Vec<String> = agents
                .iter()
                .filter(|(_, ok)| !ok)
                .map(|(id, _)| id.to_string())
                .collect();
            let confirmed: Vec<String> = agents
                .iter()
                .filter(|(_, ok)| *ok)
                .map(|(id, _)| id.to_string())
                .collect();
            let nodes_failed: Vec<Value> = nodes
                .iter()
                .filter_map(|(url, r)| r.as_ref().err().map(|e| json!({"node": url, "reason": e})))
                .collect();
            let nodes_ok: Vec<&String> = nodes
                .iter()
                .filter(|(_, r)| r.is_ok())
                .map(|(u, _)| u)
                .collect();
            let applied = unconfirmed.is_empty() && nodes_failed.is_empty();
            if !applied {
                warn!(?unconfirmed, nodes = ?nodes_failed, "kill switch not confirmed everywhere");
            }
            let _ = reply.ok(json!({
                "on": on,
                "applied": applied,
                "confirmed": confirmed,
                "unconfirmed": unconfirmed,
                "nodes_confirmed": nodes_ok,
                "nodes_unconfirmed": nodes_failed,
            }));
        });
    }

    /// `approvals.list`: all approvals, or one.
    pub(super) fn approvals_list(&self, id: Option<ApprovalId>, reply: Reply) {
        let approvals = self.services.gate().approvals();
        let now = now_unix_ms();
        match id {
            Some(id) => match approvals.get(&id, now) {
                Some(a) => {
                    let _ = reply.ok(approval_json(&a));
                }
                None => CallFailure::InvalidPayload(format!("no approval {id} on this node"))
                    .answer(reply),
            },
            None => {
                let all: Vec<Value> = approvals.list(now).iter().map(approval_json).collect();
                let _ = reply.ok(json!({ "approvals": all }));
            }
        }
    }

    /// `audit.read`: a page of records (`{"records": [...], "next_seq"}`,
    /// each record its event as JSON plus its hashes), or, with `verify`,
    /// the whole chain verified (`{"verified": n, "root": hex}`) or the
    /// first bad record named.
    pub(super) fn audit_read(
        &self,
        from: u64,
        limit: usize,
        verify: bool,
        prove: Option<u64>,
        reply: Reply,
    ) {
        let auditor = self.services.auditor().clone();
        tokio::spawn(async move {
            if let Some(seq) = prove {
                match auditor.prove(seq).await {
                    Ok(p) => {
                        let _ = reply.ok(json!({
                            "seq": p.seq,
                            "size": p.size,
                            "leaf": hex32(&p.leaf),
                            "proof": p.proof.iter().map(hex32).collect::<Vec<_>>(),
                            "root": hex32(&p.root),
                        }));
                    }
                    Err(e) => CallFailure::InvalidPayload(e.to_string()).answer(reply),
                }
                return;
            }
            if verify {
                match auditor.verify().await {
                    Ok(v) => {
                        let _ = reply.ok(json!({
                            "verified": v.range.count(),
                            "head": hex32(&v.range.end.last_hash),
                            "root": v.range.tree.map(|t| hex32(&t.root)),
                            "checkpoints": v.checkpoints,
                            "latest_checkpoint": v.latest_checkpoint,
                        }));
                    }
                    Err(e) => CallFailure::Internal(e.to_string()).answer(reply),
                }
                return;
            }
            match auditor.read(from, limit).await {
                Ok((records, head)) => {
                    let records: Vec<Value> = records.iter().map(audit::record_json).collect();
                    let _ = reply.ok(json!({ "records": records, "next_seq": head.next_seq }));
                }
                Err(e) => CallFailure::InvalidPayload(e.to_string()).answer(reply),
            }
        });
    }

    /// `approvals.decide`: records an operator's vote.
    pub(super) fn approvals_decide(
        &self,
        id: ApprovalId,
        approve: bool,
        principal: Principal,
        reply: Reply,
    ) {
        match self
            .services
            .gate()
            .approvals()
            .vote(&id, principal.id(), approve, now_unix_ms())
        {
            Ok(a) => {
                info!(by = %principal, %id, approve, state = a.state().name(), "approval vote");
                metrics::counter!("mxp_approval_votes_total", "vote" => if approve { "approve" } else { "deny" })
                    .increment(1);
                let auditor = self.services.auditor().clone();
                let session = a.key().session.clone();
                tokio::spawn(async move {
                    let recorded = auditor
                        .record(vec![audit::event(
                            audit::EventKind::ApprovalDecision { approved: approve },
                            json!({ "approval": id.to_string(), "state": a.state().name() }),
                            Some(principal.id()),
                            Some(&session),
                            0,
                        )])
                        .await;
                    match recorded {
                        Ok(_) => {
                            let _ = reply.ok(approval_json(&a));
                        }
                        Err(e) => CallFailure::Internal(format!(
                            "the vote counts, but the audit log could not record it: {e}"
                        ))
                        .answer(reply),
                    }
                });
            }
            Err(e) => {
                CallFailure::InvalidPayload(format!("vote on {id} refused: {e}")).answer(reply)
            }
        }
    }
}

/// Sets the kill switch of the node at `url` (its node agent), and checks
/// that it confirmed.
async fn remote_kill_switch(
    client: &mxp_transport::Client,
    url: &str,
    on: bool,
) -> Result<(), String> {
    let url: MxpUrl = url.parse().map_err(|e| format!("{e}"))?;
    let body = serde_json::to_vec(&CallBody::new(
        "killswitch.set",
        json!({ "on": on, "mesh": false }),
    ))
    .map_err(|e| e.to_string())?;
    let r = client
        .call_raw(&url, NODE_AGENT, Bytes::from(body), KILL_SWITCH_CONFIRM * 2)
        .await
        .map_err(|e| e.to_string())?;
    let body = r.parse_body().map_err(|e| e.to_string())?;
    match body.result.get("applied") {
        Some(Value::Bool(true)) => Ok(()),
        _ => Err(format!("it did not confirm: {}", body.result)),
    }
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::Default => f.write_str("the embedded default set"),
            PolicySource::Dir(d) => write!(f, "{}", d.display()),
        }
    }
}

fn hex32(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
