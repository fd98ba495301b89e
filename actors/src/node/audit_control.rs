//! The node agent's live-audit methods: `audit.subscribe` (a stream of the
//! log's records and checkpoints), `audit.checkpoint` (the latest signed
//! checkpoint, with a consistency proof) and `audit.cosign` (a witness's
//! cosignature). Each arrives as a control Call the gate already allowed.

use mxp_governance::audit::hex32;
use mxp_governance::audit::note::{Note, NoteVerifier};
use mxp_transport::{Principal, Reply};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::agent::NodeAgentState;
use crate::audit::subscribe::{self, SubscribeRequest};
use crate::audit::{AuditError, Feed, LogInfo};
use crate::error::CallFailure;

/// How an audit request that failed is answered.
fn failure(method: &str, e: AuditError) -> CallFailure {
    match e {
        AuditError::Request(m) => CallFailure::InvalidPayload(format!("{method}: {m}")),
        AuditError::Cosign(r) => CallFailure::InvalidPayload(format!("{method} refused: {r}")),
        AuditError::Off | AuditError::NoCheckpoints => {
            CallFailure::Unsupported(format!("{method}: {e}"))
        }
        other => CallFailure::Internal(format!("{method}: {other}")),
    }
}

/// The witnesses (keys other than the node's) that signed `note`.
fn cosigners(note: &str, info: Option<&LogInfo>) -> Vec<String> {
    let (Ok(n), Some(node)) = (
        Note::parse(note.as_bytes()),
        info.and_then(|i| NoteVerifier::parse(&i.vkey).ok()),
    ) else {
        return Vec::new();
    };
    mxp_governance::audit::cosign::cosigners(&n, &node)
}

impl NodeAgentState {
    fn feed(&self, method: &str) -> Result<Feed, CallFailure> {
        self.services
            .auditor()
            .feed()
            .cloned()
            .ok_or_else(|| failure(method, AuditError::Off))
    }

    /// `audit.subscribe`: checks the request and the limits, turns the
    /// Call's reply into a stream and serves the subscription on its own
    /// task.
    pub(super) fn audit_subscribe(
        &self,
        principal: Principal,
        request: SubscribeRequest,
        reply: Reply,
    ) {
        let feed = match self.feed("audit.subscribe") {
            Ok(f) => f,
            Err(f) => return f.answer(reply),
        };
        let head = *feed.head.borrow();
        let SubscribeRequest { from, checkpoint } = request;
        if from > head {
            return CallFailure::InvalidPayload(format!(
                "audit.subscribe: no audit record {from}: the log holds {head} records, so subscribe from {head} (the next record) or below"
            ))
            .answer(reply);
        }
        if let Some(size) = checkpoint.filter(|size| *size > from) {
            return CallFailure::InvalidPayload(format!(
                "audit.subscribe: checkpoint {size} is above from {from}: the last checkpoint a subscriber accepted covers only records it holds"
            ))
            .answer(reply);
        }
        let slot = match feed.subscriptions.admit(*principal.id()) {
            Ok(s) => s,
            Err(e) => {
                warn!(by = %principal, "audit subscription refused: {e}");
                return CallFailure::Overloaded(format!("audit.subscribe: {e}")).answer(reply);
            }
        };
        let out = match reply.into_stream() {
            Ok(s) => s,
            Err(reply) => {
                return CallFailure::Unsupported(
                    "audit.subscribe is answered by a stream of Events: call it over QUIC, where the Call has a stream of its own"
                        .into(),
                )
                .answer(reply);
            }
        };
        info!(by = %principal, from, "audit subscription");
        let auditor = self.services.auditor().clone();
        tokio::spawn(subscribe::serve(auditor, feed, out, request, slot));
    }

    /// `audit.checkpoint`: the latest checkpoint (or the one of `size`),
    /// who cosigned it, and the consistency proof from `from_size`.
    pub(super) fn audit_checkpoint(&self, size: Option<u64>, from_size: Option<u64>, reply: Reply) {
        let auditor = self.services.auditor().clone();
        let info = auditor.feed().and_then(|f| f.info.clone());
        tokio::spawn(async move {
            match auditor.checkpoint(size, from_size).await {
                Ok(view) => {
                    let latest = view.latest.as_ref();
                    let mut out = json!({
                        "origin": info.as_ref().map(|i| i.origin.clone()),
                        "vkey": info.as_ref().map(|i| i.vkey.clone()),
                        "witnesses": info.as_ref().map(|i| i.witnesses.clone()).unwrap_or_default(),
                        "size": latest.map_or(0, |c| c.size),
                        "time_ms": latest.map(|c| c.time_ms),
                        "note": latest.map(|c| c.note.clone()),
                        "cosigned_by": latest.map(|c| cosigners(&c.note, info.as_deref())).unwrap_or_default(),
                    });
                    if let (Some(obj), Some(proof)) = (out.as_object_mut(), view.proof) {
                        obj.insert("from_size".into(), json!(from_size));
                        obj.insert(
                            "proof".into(),
                            Value::from(proof.iter().map(hex32).collect::<Vec<_>>()),
                        );
                    }
                    let _ = reply.ok(out);
                }
                Err(e) => failure("audit.checkpoint", e).answer(reply),
            }
        });
    }

    /// `audit.cosign`: takes a witness's cosignature of a checkpoint this
    /// node signed, or refuses it naming why.
    pub(super) fn audit_cosign(&self, principal: Principal, note: String, reply: Reply) {
        let auditor = self.services.auditor().clone();
        tokio::spawn(async move {
            match auditor.cosign(note.into_bytes()).await {
                Ok(o) => {
                    info!(by = %principal, added = ?o.added, "audit checkpoint cosigned");
                    let _ = reply.ok(json!({
                        "added": o.added,
                        "cosigned_by": o.cosigned_by,
                        "note": o.note,
                    }));
                }
                Err(e) => {
                    warn!(by = %principal, "audit cosignature refused: {}", e.to_string().escape_debug());
                    failure("audit.cosign", e).answer(reply);
                }
            }
        });
    }
}
