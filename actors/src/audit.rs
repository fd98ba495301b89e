//! The audit actor: every governed step becomes a durable, hash-chained
//! event in the node's [`AuditLog`] before the step goes on.
//!
//! One writer thread owns the log (its writes are blocking I/O). Callers
//! hand it batches of events and wait for them to be durable; the writer
//! takes every batch waiting at once and appends them with one durable
//! write (group commit), so many Calls in flight share one flush.
//!
//! What waits for what (docs/GUARANTEES.md):
//! * a tool runs only once its policy decision, token mint and token
//!   verification are durable; its answer goes out only once its
//!   execution (outcome and output) is durable;
//! * a denial is recorded before it is answered;
//! * a control change (lifecycle, reload, kill switch, vote) is answered
//!   once recorded.
//!
//! If the log cannot be written, the step fails closed: the Call is answered
//! `internal` (retriable) and nothing acts.

use mxp_governance::audit::{
    AuditEvent, ChainHead, EventData, Limits, Record, RecordedOutput, VerifiedRange, merkle,
};
pub use mxp_governance::audit::{CallAnswer, EventKind, PolicyEffect, ToolOutcome};
use mxp_governance::token::args::{ArgsDigest, args_digest};
use mxp_protocol::{PrincipalId, SessionId};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::gate::now_unix_ms;
use crate::store::{AuditLog, StoreError};

/// Batches waiting for the writer, at most; past it, callers wait.
const QUEUE: usize = 4096;
/// Events one group commit takes at most.
const MAX_GROUP: usize = 4096;
/// Tool output recorded verbatim up to this many bytes; a longer one is
/// recorded as its length and BLAKE3 digest.
pub const MAX_RECORDED_OUTPUT: usize = 16 * 1024;

/// Why an event could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The store refused or failed the write.
    #[error("the audit log could not record this step: {0}")]
    Store(#[from] StoreError),
    /// The writer is gone (the node is stopping).
    #[error("the audit log is closed")]
    Closed,
    /// The log has no record of this sequence number.
    #[error("no audit record {seq}: the log holds records 0 to {}", size.saturating_sub(1))]
    NoSuchRecord {
        /// The sequence number asked for.
        seq: u64,
        /// Records in the log.
        size: u64,
    },
    /// This node keeps no audit log.
    #[error("this node keeps no audit log")]
    Off,
}

enum Job {
    Append {
        events: Vec<AuditEvent>,
        done: Option<oneshot::Sender<Result<u64, AuditError>>>,
    },
    Read {
        from: u64,
        limit: usize,
        done: oneshot::Sender<Result<(Vec<Record>, ChainHead), AuditError>>,
    },
    Verify {
        done: oneshot::Sender<Result<VerifiedRange, AuditError>>,
    },
    Prove {
        seq: u64,
        done: oneshot::Sender<Result<Inclusion, AuditError>>,
    },
}

/// An RFC 6962 inclusion proof of one record in the log as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inclusion {
    /// The record's sequence number (its leaf index).
    pub seq: u64,
    /// The tree size the proof is for (records in the log).
    pub size: u64,
    /// The record's leaf hash (SHA-256 with the 0x00 prefix over its chain
    /// hash, docs/AUDIT.md).
    pub leaf: [u8; 32],
    /// The audit path, bottom up.
    pub proof: Vec<[u8; 32]>,
    /// The Merkle root of the `size` records.
    pub root: [u8; 32],
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Job::Append { events, .. } => events.len(),
            _ => 0,
        }
    }
}

/// A handle to the audit writer (cheap to clone). [`Auditor::off`] records
/// nothing: for nodes without a store (tests, embedded use).
#[derive(Clone)]
pub struct Auditor {
    tx: Option<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("on", &self.tx.is_some())
            .finish()
    }
}

impl Default for Auditor {
    fn default() -> Auditor {
        Auditor::off()
    }
}

impl Auditor {
    /// No audit log: [`record`](Self::record) returns at once.
    pub fn off() -> Auditor {
        Auditor { tx: None }
    }

    /// Whether events are recorded.
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Starts the writer thread over `log`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(log: AuditLog) -> std::io::Result<Auditor> {
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("mxp-audit".into())
            .spawn(move || writer(log, rx))?;
        Ok(Auditor { tx: Some(tx) })
    }

    /// Appends `events` and returns once they are durable, with the last
    /// one's sequence number (0 when audit is off or `events` is empty).
    ///
    /// # Errors
    /// [`AuditError`] when they could not be recorded.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the events: they are still
    /// written; only the wait is abandoned.
    pub async fn record(&self, events: Vec<AuditEvent>) -> Result<u64, AuditError> {
        let Some(tx) = &self.tx else {
            return Ok(0);
        };
        if events.is_empty() {
            return Ok(0);
        }
        let (done, rx) = oneshot::channel();
        tx.send(Job::Append {
            events,
            done: Some(done),
        })
        .await
        .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Up to `limit` records from `from` on, and the log's head.
    ///
    /// # Errors
    /// [`AuditError::Off`] without a log; the store's error.
    ///
    /// # Cancel safety
    /// Cancel safe: reading changes nothing.
    pub async fn read(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<Record>, ChainHead), AuditError> {
        let tx = self.tx.as_ref().ok_or(AuditError::Off)?;
        let (done, rx) = oneshot::channel();
        tx.send(Job::Read { from, limit, done })
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// The inclusion proof of record `seq` in the whole log. Reads every
    /// record's leaf (32 bytes per record in memory while it runs).
    ///
    /// # Errors
    /// [`AuditError::Off`]; [`AuditError::NoSuchRecord`]; the store's error.
    ///
    /// # Cancel safety
    /// Cancel safe: proving changes nothing.
    pub async fn prove(&self, seq: u64) -> Result<Inclusion, AuditError> {
        let tx = self.tx.as_ref().ok_or(AuditError::Off)?;
        let (done, rx) = oneshot::channel();
        tx.send(Job::Prove { seq, done })
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Verifies the whole chain from genesis.
    ///
    /// # Errors
    /// [`AuditError::Off`]; the store's error naming the first bad record.
    ///
    /// # Cancel safety
    /// Cancel safe: verifying changes nothing.
    pub async fn verify(&self) -> Result<VerifiedRange, AuditError> {
        let tx = self.tx.as_ref().ok_or(AuditError::Off)?;
        let (done, rx) = oneshot::channel();
        tx.send(Job::Verify { done })
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Queues `events` behind every event queued before them, waiting for
    /// room in the writer's queue but not for the write: they become durable
    /// with the next [`record`](Self::record) of the same task at the latest
    /// (the writer keeps the order), so a step that records durably later
    /// makes these durable first. Never dropped.
    ///
    /// # Errors
    /// [`AuditError::Closed`] when the writer is gone.
    ///
    /// # Cancel safety
    /// Dropping the future before it is ready leaves the events unqueued;
    /// once ready they are queued and written.
    pub async fn enqueue(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        if events.is_empty() {
            return Ok(());
        }
        tx.send(Job::Append { events, done: None })
            .await
            .map_err(|_| AuditError::Closed)
    }

    /// Appends `events` without waiting (for events of steps that cannot
    /// wait, e.g. a supervisor restarting an actor). Dropped, and counted
    /// in `mxp_audit_dropped_total`, if the writer's queue is full.
    pub fn record_detached(&self, events: Vec<AuditEvent>) {
        if let Some(tx) = &self.tx
            && tx.try_send(Job::Append { events, done: None }).is_err()
        {
            metrics::counter!("mxp_audit_dropped_total").increment(1);
        }
    }
}

fn writer(mut log: AuditLog, mut rx: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Waiting> = Vec::new();
    let mut next = rx.blocking_recv();
    while let Some(job) = next.take() {
        let mut n = job.len();
        let mut pending = Some(job);
        // Take every append waiting (up to MAX_GROUP events); a read or a
        // verification waits for the appends before it.
        while let Some(j) = pending.take() {
            match j {
                Job::Append { events, done } => jobs.push((events, done)),
                other => {
                    next = Some(other);
                    break;
                }
            }
            if n >= MAX_GROUP {
                break;
            }
            if let Ok(j) = rx.try_recv() {
                n += j.len();
                pending = Some(j);
            }
        }
        if !jobs.is_empty() {
            commit(&mut log, &mut jobs, n);
        }
        match next.take() {
            Some(Job::Read { from, limit, done }) => {
                let _ = done.send(
                    log.read(from, limit)
                        .map(|r| (r, log.head()))
                        .map_err(AuditError::Store),
                );
            }
            Some(Job::Verify { done }) => {
                let _ = done.send(log.verify_all().map_err(AuditError::Store));
            }
            Some(Job::Prove { seq, done }) => {
                let _ = done.send(prove(&log, seq));
            }
            Some(append) => {
                next = Some(append);
                continue;
            }
            None => {}
        }
        next = rx.blocking_recv();
    }
}

fn prove(log: &AuditLog, seq: u64) -> Result<Inclusion, AuditError> {
    let size = log.head().next_seq;
    if seq >= size {
        return Err(AuditError::NoSuchRecord { seq, size });
    }
    let mut leaves = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 20));
    let mut from = 0;
    while from < size {
        let page = log.read(from, 1024)?;
        if page.is_empty() {
            break;
        }
        from += page.len() as u64;
        leaves.extend(page.iter().map(Record::leaf_hash));
    }
    let leaf = leaves
        .get(usize::try_from(seq).unwrap_or(usize::MAX))
        .copied()
        .ok_or(AuditError::NoSuchRecord { seq, size })?;
    let proof = merkle::inclusion_proof(&leaves, seq)
        .map_err(|_| AuditError::NoSuchRecord { seq, size })?;
    Ok(Inclusion {
        seq,
        size: leaves.len() as u64,
        leaf,
        proof,
        root: merkle::root(&leaves),
    })
}

type Waiting = (
    Vec<AuditEvent>,
    Option<oneshot::Sender<Result<u64, AuditError>>>,
);

fn commit(log: &mut AuditLog, jobs: &mut Vec<Waiting>, n: usize) {
    {
        let mut all = Vec::with_capacity(n);
        let mut ends = Vec::with_capacity(jobs.len());
        for (events, _) in jobs.iter_mut() {
            all.append(events);
            ends.push(all.len());
        }
        let started = std::time::Instant::now();
        let result = log.append_batch(all);
        metrics::histogram!("mxp_audit_commit_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(seqs) => {
                metrics::counter!("mxp_audit_events_total").increment(seqs.len() as u64);
                for ((_, done), end) in jobs.drain(..).zip(ends) {
                    let last = end
                        .checked_sub(1)
                        .and_then(|i| seqs.get(i))
                        .copied()
                        .unwrap_or(0);
                    if let Some(done) = done {
                        let _ = done.send(Ok(last));
                    }
                }
            }
            Err(e) => {
                tracing::error!("audit log write failed, steps fail closed: {e}");
                metrics::counter!("mxp_audit_failures_total").increment(1);
                for (_, done) in jobs.drain(..) {
                    if let Some(done) = done {
                        let _ = done.send(Err(AuditError::Store(e.clone())));
                    }
                }
            }
        }
    }
}

/// An event now, in `session`, caused by `principal`, in trace `trace_id`.
pub fn event(
    kind: EventKind,
    data: Value,
    principal: Option<&PrincipalId>,
    session: Option<&SessionId>,
    trace_id: u64,
) -> AuditEvent {
    // Data is built here from JSON objects: it always converts; if it did
    // not, the event keeps `{}` rather than being lost.
    let data = EventData::from_value(&data).unwrap_or_else(|_| EventData::empty());
    let mut e = AuditEvent::new(now_unix_ms(), kind, data).with_trace(trace_id);
    if let Some(p) = principal {
        e = e.with_principal(*p);
    }
    if let Some(s) = session {
        e = e.with_session(s.clone());
    }
    e
}

/// The policy decision of `tool` with its determining policies.
pub fn decision(
    effect: PolicyEffect,
    reasons: &[String],
    tool: &str,
    agent: &mxp_protocol::AgentId,
) -> (EventKind, Value) {
    (
        EventKind::PolicyDecision {
            effect,
            policy_ids: reasons
                .iter()
                .map(|r| r.chars().take(256).collect())
                .collect(),
        },
        json!({ "tool": tool, "agent": agent.to_string() }),
    )
}

/// The policy decision of a plan step: `decision`'s data plus what a replay
/// needs to decide again: the arguments' digest (the token's), the effect
/// class, and, for an allow, the facts the policy decided with (`now_s`,
/// `budget_spent`, `approved_by`).
pub fn step_decision(
    effect: PolicyEffect,
    reasons: &[String],
    tool: &str,
    agent: &mxp_protocol::AgentId,
    class: crate::tool::EffectClass,
    digest: Option<&ArgsDigest>,
    facts: Option<&crate::gate::Facts>,
) -> (EventKind, Value) {
    let (kind, mut data) = decision(effect, reasons, tool, agent);
    if let Some(map) = data.as_object_mut() {
        if let Some(d) = digest {
            map.insert("args_digest".into(), json!(d.to_string()));
        }
        map.insert("effect".into(), json!(class.name()));
        if let Some(f) = facts {
            map.insert("now_s".into(), json!(f.now_unix_secs));
            map.insert("budget_spent".into(), json!(f.budget_spent));
            if let Some(by) = &f.approved_by {
                let by: Vec<String> = by.iter().map(ToString::to_string).collect();
                map.insert("approved_by".into(), json!(by));
            }
        }
    }
    (kind, data)
}

/// The data of a `call_received` event: the agent, the method, the
/// message id and the params, verbatim when the data fits the audit log's
/// data limit (64 KiB) and nesting (32 levels), else the params' digest
/// and length with `params_omitted` saying why (such a Call cannot be
/// replayed).
pub fn call_received(
    agent: &mxp_protocol::AgentId,
    method: &str,
    params: &Value,
    message_id: u64,
) -> Value {
    let full = json!({
        "agent": agent.to_string(),
        "method": method,
        "message_id": message_id,
        "params": params,
    });
    let limit = Limits::default().max_data_bytes;
    let why = match EventData::from_value(&full) {
        Ok(d) if d.as_bytes().len() <= limit => return full,
        Ok(d) => format!(
            "the call's audit data would be {} bytes, over the audit data limit of {limit}",
            d.as_bytes().len()
        ),
        Err(e) => e.to_string(),
    };
    json!({
        "agent": agent.to_string(),
        "method": method,
        "message_id": message_id,
        "params_digest": args_digest(params).to_string(),
        "params_len": serde_json::to_vec(params).map_or(0, |v| v.len()),
        "params_omitted": why,
    })
}

/// The kind of a `call_answered` event: the answer's digest (as
/// [`args_digest`]), or the error code.
pub fn call_answered(answer: Result<&Value, mxp_protocol::ErrorCode>) -> EventKind {
    EventKind::CallAnswered {
        answer: match answer {
            Ok(v) => CallAnswer::Answered {
                digest: *args_digest(v).as_bytes(),
            },
            Err(code) => CallAnswer::Failed { code: code.0 },
        },
    }
}

/// A tool's execution: its outcome and its output (verbatim up to
/// [`MAX_RECORDED_OUTPUT`] bytes, else its length and digest).
pub fn execution(outcome: ToolOutcome, output: &[u8]) -> EventKind {
    let output = if output.len() <= MAX_RECORDED_OUTPUT {
        RecordedOutput::Recorded(output.to_vec())
    } else {
        RecordedOutput::Redacted {
            len: output.len() as u64,
            blake3: *mxp_governance::token::blake3::hash(output).as_bytes(),
        }
    };
    EventKind::ToolExecution { outcome, output }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record as JSON (`audit.read`, `mxp audit export`): sequence number,
/// time, trace, session, principal, kind with its fields, data, and the
/// record's `prev_hash` and `hash` in hex.
pub fn record_json(r: &Record) -> Value {
    let e = r.event();
    let mut kind = json!({ "name": e.kind.tag().name() });
    let extra = match &e.kind {
        EventKind::PolicyDecision { effect, policy_ids } => json!({
            "effect": match effect {
                PolicyEffect::Allow => "allow",
                PolicyEffect::Deny => "deny",
                _ => "require_approval",
            },
            "policy_ids": policy_ids,
        }),
        EventKind::TokenVerification { accepted } => json!({ "accepted": accepted }),
        EventKind::ToolExecution { outcome, output } => json!({
            "outcome": match outcome {
                ToolOutcome::Landed => "landed",
                ToolOutcome::Failed => "failed",
                _ => "in_doubt",
            },
            "output": match output {
                RecordedOutput::Recorded(bytes) => json!({
                    "recorded": String::from_utf8_lossy(bytes),
                }),
                RecordedOutput::Redacted { len, blake3 } => json!({
                    "redacted": true, "len": len, "blake3": hex(blake3),
                }),
            },
        }),
        EventKind::ApprovalDecision { approved } => json!({ "approved": approved }),
        EventKind::KillSwitch { engaged } => json!({ "engaged": engaged }),
        EventKind::NodeConfig { digest } => json!({ "digest": hex(digest) }),
        EventKind::CallAnswered { answer } => match answer {
            CallAnswer::Answered { digest } => json!({ "answer_digest": hex(digest) }),
            CallAnswer::Failed { code } => json!({
                "error_code": code,
                "error": mxp_protocol::ErrorCode(*code).name(),
            }),
            _ => json!({}),
        },
        _ => json!({}),
    };
    if let (Some(k), Some(x)) = (kind.as_object_mut(), extra.as_object()) {
        k.extend(x.clone());
    }
    let data: Value = serde_json::from_slice(e.data.as_bytes()).unwrap_or(Value::Null);
    json!({
        "seq": r.seq(),
        "time_ms": e.time_ms,
        "trace_id": e.trace_id,
        "session": e.session.as_ref().map(SessionId::as_str),
        "principal": e.principal.as_ref().map(ToString::to_string),
        "kind": kind,
        "data": data,
        "prev_hash": hex(r.prev_hash()),
        "hash": hex(r.hash()),
    })
}
