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
//!   verification are durable; its execution (outcome and output) is
//!   durable before anything that follows it can be seen: the next step's
//!   tool (whose decision is written after it) or the Call's answer (after
//!   `call_answered`, written after it);
//! * a denial is recorded before it is answered;
//! * a control change (lifecycle, reload, kill switch, vote) is answered
//!   once recorded.
//!
//! If the log cannot be written, the step fails closed: the Call is answered
//! `internal` (retriable) and nothing acts.
//!
//! The writer also keeps the Merkle tree of the whole log ([`tree`]), signs
//! checkpoints of it ([`checkpointer`]) and publishes the log's head, which
//! live subscribers follow ([`subscribe`]).

mod checkpointer;
pub mod follower;
pub mod subscribe;
mod tree;

use std::sync::Arc;

pub use checkpointer::{CheckpointSettings, CheckpointView};
pub use follower::{AuditFollower, FollowEvent, FollowFailure, FollowOptions};
use mxp_governance::audit::cosign::{CosignOutcome, CosignRefusal};
use mxp_governance::audit::{
    AuditEvent, ChainHead, ChunkedLog, EventData, Hash, Limits, Record, RecordedOutput,
    VerifiedRange,
};
pub use mxp_governance::audit::{CallAnswer, EventKind, PolicyEffect, ToolOutcome};
use mxp_governance::token::args::{ArgsDigest, args_digest};
use mxp_protocol::{PrincipalId, SessionId};
use serde_json::{Value, json};
pub use subscribe::{SubscribeRefused, SubscriptionLimits, Subscriptions};
use tokio::sync::{mpsc, oneshot, watch};

use crate::gate::now_unix_ms;
use crate::store::{AuditLog, Store, StoreError};

/// Batches waiting for the writer, at most; past it, callers wait.
const QUEUE: usize = 4096;
/// Events one group commit takes at most.
const MAX_GROUP: usize = 4096;
/// Tool output recorded verbatim up to this many bytes; a longer one is
/// recorded as its length and BLAKE3 digest.
pub const MAX_RECORDED_OUTPUT: usize = 16 * 1024;
/// The longest the writer waits between checks of the checkpoint schedule.
const MAX_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Why an event could not be recorded, or an audit request answered.
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
    /// This node signs no checkpoints (no audit key configured).
    #[error("this node signs no audit checkpoints")]
    NoCheckpoints,
    /// A cosigned note the node does not take.
    #[error("cosignature refused: {0}")]
    Cosign(CosignRefusal),
    /// A request that cannot be answered as asked (named).
    #[error("{0}")]
    Request(String),
    /// The writer thread could not be started.
    #[error("cannot start the audit writer: {0}")]
    Spawn(String),
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
        done: oneshot::Sender<Result<Verification, AuditError>>,
    },
    Prove {
        seq: u64,
        done: oneshot::Sender<Result<Inclusion, AuditError>>,
    },
    /// Time to look at the checkpoint schedule.
    Tick,
    Checkpoint {
        size: Option<u64>,
        from_size: Option<u64>,
        done: oneshot::Sender<Result<CheckpointView, AuditError>>,
    },
    Cosign {
        note: Vec<u8>,
        done: oneshot::Sender<Result<CosignOutcome, AuditError>>,
    },
    Consistency {
        old: u64,
        new: u64,
        done: oneshot::Sender<Result<Vec<Hash>, AuditError>>,
    },
}

/// What [`Auditor::verify`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The records verified from genesis, their head and Merkle root.
    pub range: VerifiedRange,
    /// Signed checkpoints the records were checked against.
    pub checkpoints: u64,
    /// The largest of them, if any.
    pub latest_checkpoint: Option<u64>,
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

/// What a node's audit log is beyond its records: how it signs
/// checkpoints, and how many live subscribers it serves.
#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    /// Checkpoint signing (`None`: no checkpoints).
    pub checkpoints: Option<CheckpointSettings>,
    /// Live subscriptions served at most.
    pub subscriptions: SubscriptionLimits,
}

/// The log's checkpoint identity, as subscribers and witnesses see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    /// The checkpoint origin line.
    pub origin: String,
    /// The node's audit verifier key, `<name>+<hex key ID>+<base64 key>`.
    pub vkey: String,
    /// The names of the witnesses whose cosignatures the node takes.
    pub witnesses: Vec<String>,
}

/// What live subscribers read: the store, the head and latest checkpoint
/// the writer publishes, the log's identity, and the subscription table.
#[derive(Debug, Clone)]
pub struct Feed {
    /// The node's store (records are read from it directly).
    pub store: Arc<Store>,
    /// Records durable in the log (the next sequence number).
    pub head: watch::Receiver<u64>,
    /// The size of the latest checkpoint signed (0: none).
    pub checkpoints: watch::Receiver<u64>,
    /// The checkpoint identity (`None`: no checkpoints).
    pub info: Option<Arc<LogInfo>>,
    /// Subscriptions served.
    pub subscriptions: Arc<Subscriptions>,
}

/// A handle to the audit writer (cheap to clone). [`Auditor::off`] records
/// nothing: for nodes without a store (tests, embedded use).
#[derive(Clone)]
pub struct Auditor {
    tx: Option<mpsc::Sender<Job>>,
    feed: Option<Feed>,
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

async fn ask<T>(
    tx: Option<&mpsc::Sender<Job>>,
    job: impl FnOnce(oneshot::Sender<Result<T, AuditError>>) -> Job,
) -> Result<T, AuditError> {
    let tx = tx.ok_or(AuditError::Off)?;
    let (done, rx) = oneshot::channel();
    tx.send(job(done)).await.map_err(|_| AuditError::Closed)?;
    rx.await.map_err(|_| AuditError::Closed)?
}

impl Auditor {
    /// No audit log: [`record`](Self::record) returns at once.
    pub fn off() -> Auditor {
        Auditor {
            tx: None,
            feed: None,
        }
    }

    /// Whether events are recorded.
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Starts the writer thread over `log`, without checkpoints.
    ///
    /// # Errors
    /// When the thread cannot be spawned or the log's Merkle tree cannot be
    /// read back.
    pub fn start(log: AuditLog) -> std::io::Result<Auditor> {
        Auditor::start_with(log, AuditSettings::default()).map_err(std::io::Error::other)
    }

    /// Starts the writer thread over `log`: it restores the log's Merkle
    /// tree (from the chunk hashes stored with checkpoints and the records
    /// after them), and with `settings.checkpoints` signs checkpoints on
    /// their schedule (a ticker thread wakes it at most every second).
    ///
    /// # Errors
    /// [`AuditError::Store`] if the tree or the latest checkpoint cannot be
    /// read; [`AuditError::Spawn`].
    pub fn start_with(log: AuditLog, settings: AuditSettings) -> Result<Auditor, AuditError> {
        let store = log.store().clone();
        let size = log.head().next_seq;
        let (tree, persisted) = tree::restore(&store, size)?;
        let signer = settings
            .checkpoints
            .clone()
            .map(|c| checkpointer::Checkpointer::new(c, &store, now_unix_ms()))
            .transpose()?;
        let latest = store.latest_checkpoint()?.map_or(0, |c| c.size);
        let info = settings.checkpoints.as_ref().map(|c| {
            Arc::new(LogInfo {
                origin: c.origin.clone(),
                vkey: c.signer.verifier().to_vkey(),
                witnesses: c.witnesses.iter().map(|w| w.name().to_owned()).collect(),
            })
        });
        let (head_tx, head) = watch::channel(size);
        let (cp_tx, checkpoints) = watch::channel(latest);
        let (tx, rx) = mpsc::channel(QUEUE);
        let tick = signer
            .as_ref()
            .map(|s| std::time::Duration::from_millis(s.schedule().every_ms.max(10)).min(MAX_TICK));
        let writer = Writer {
            log,
            store: store.clone(),
            tree,
            persisted,
            signer,
            head: head_tx,
            checkpoints: cp_tx,
        };
        std::thread::Builder::new()
            .name("mxp-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Spawn(e.to_string()))?;
        if let Some(period) = tick {
            let ticks = tx.downgrade();
            std::thread::Builder::new()
                .name("mxp-audit-tick".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(period);
                        let Some(tx) = ticks.upgrade() else { return };
                        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Job::Tick) {
                            return;
                        }
                    }
                })
                .map_err(|e| AuditError::Spawn(e.to_string()))?;
        }
        Ok(Auditor {
            tx: Some(tx),
            feed: Some(Feed {
                store,
                head,
                checkpoints,
                info,
                subscriptions: Subscriptions::new(settings.subscriptions),
            }),
        })
    }

    /// What live subscribers read (`None` without a log).
    pub fn feed(&self) -> Option<&Feed> {
        self.feed.as_ref()
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
        if self.tx.is_none() || events.is_empty() {
            return Ok(0);
        }
        ask(self.tx.as_ref(), |done| Job::Append {
            events,
            done: Some(done),
        })
        .await
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
        ask(self.tx.as_ref(), |done| Job::Read { from, limit, done }).await
    }

    /// The inclusion proof of record `seq` in the whole log (from the
    /// writer's tree: reads at most one chunk of 256 records).
    ///
    /// # Errors
    /// [`AuditError::Off`]; [`AuditError::NoSuchRecord`]; the store's error.
    ///
    /// # Cancel safety
    /// Cancel safe: proving changes nothing.
    pub async fn prove(&self, seq: u64) -> Result<Inclusion, AuditError> {
        ask(self.tx.as_ref(), |done| Job::Prove { seq, done }).await
    }

    /// Verifies the whole chain from genesis, and against every checkpoint
    /// this node signed (each note's signature by the node's audit key,
    /// then the records up to its size against its root; a log shorter
    /// than a checkpoint was cut).
    ///
    /// # Errors
    /// [`AuditError::Off`]; the store's error naming the first bad record;
    /// [`AuditError::Store`] naming a stored checkpoint whose signature
    /// does not verify.
    ///
    /// # Cancel safety
    /// Cancel safe: verifying changes nothing.
    pub async fn verify(&self) -> Result<Verification, AuditError> {
        ask(self.tx.as_ref(), |done| Job::Verify { done }).await
    }

    /// The latest signed checkpoint (or the one of `size`) and, with
    /// `from_size`, the consistency proof from that size to it.
    ///
    /// # Errors
    /// [`AuditError::Off`], [`AuditError::NoCheckpoints`],
    /// [`AuditError::Request`] for a size the node signed no checkpoint of,
    /// or a `from_size` above the checkpoint's.
    ///
    /// # Cancel safety
    /// Cancel safe: reading changes nothing.
    pub async fn checkpoint(
        &self,
        size: Option<u64>,
        from_size: Option<u64>,
    ) -> Result<CheckpointView, AuditError> {
        ask(self.tx.as_ref(), |done| Job::Checkpoint {
            size,
            from_size,
            done,
        })
        .await
    }

    /// Takes a witness's cosigned `note` for a checkpoint this node signed
    /// and stores the new cosignatures.
    ///
    /// # Errors
    /// [`AuditError::Cosign`] naming why it is refused (nothing is stored
    /// then); [`AuditError::NoCheckpoints`]; the store's error.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the note: it is still taken.
    pub async fn cosign(&self, note: Vec<u8>) -> Result<CosignOutcome, AuditError> {
        ask(self.tx.as_ref(), |done| Job::Cosign { note, done }).await
    }

    /// The consistency proof from `old` to `new` records of the log.
    ///
    /// # Errors
    /// [`AuditError::Request`] for sizes that do not fit the log.
    ///
    /// # Cancel safety
    /// Cancel safe: proving changes nothing.
    pub async fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        ask(self.tx.as_ref(), |done| Job::Consistency { old, new, done }).await
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

/// The writer thread's state.
struct Writer {
    log: AuditLog,
    store: Arc<Store>,
    tree: ChunkedLog,
    /// Chunk hashes of `tree` the store holds already.
    persisted: u64,
    signer: Option<checkpointer::Checkpointer>,
    head: watch::Sender<u64>,
    checkpoints: watch::Sender<u64>,
}

type Waiting = (
    Vec<AuditEvent>,
    Option<oneshot::Sender<Result<u64, AuditError>>>,
);

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut jobs: Vec<Waiting> = Vec::new();
        let mut next = rx.blocking_recv();
        while let Some(job) = next.take() {
            let mut n = job.len();
            let mut pending = Some(job);
            // Take every append waiting (up to MAX_GROUP events); any other
            // job waits for the appends before it.
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
                self.commit(&mut jobs, n);
                self.tick();
            }
            match next.take() {
                Some(Job::Append { events, done }) => {
                    next = Some(Job::Append { events, done });
                    continue;
                }
                Some(other) => self.serve(other),
                None => {}
            }
            next = rx.blocking_recv();
        }
    }

    fn serve(&mut self, job: Job) {
        match job {
            Job::Append { .. } => {}
            Job::Read { from, limit, done } => {
                let _ = done.send(
                    self.log
                        .read(from, limit)
                        .map(|r| (r, self.log.head()))
                        .map_err(AuditError::Store),
                );
            }
            Job::Verify { done } => {
                let _ = done.send(self.verify());
            }
            Job::Prove { seq, done } => {
                let _ = done.send(self.prove(seq));
            }
            Job::Tick => self.tick(),
            Job::Checkpoint {
                size,
                from_size,
                done,
            } => {
                let _ = done.send(match &self.signer {
                    Some(s) => s.view(&self.tree, &self.store, size, from_size),
                    None => Err(AuditError::NoCheckpoints),
                });
            }
            Job::Cosign { note, done } => {
                let _ = done.send(match &self.signer {
                    Some(s) => s.cosign(&self.store, &note),
                    None => Err(AuditError::NoCheckpoints),
                });
            }
            Job::Consistency { old, new, done } => {
                let size = self.tree.size();
                let _ = done.send(if new > size {
                    Err(AuditError::Request(format!(
                        "the log holds {size} records, fewer than {new}"
                    )))
                } else {
                    checkpointer::proof_between(&self.tree, &self.store, old, new)
                });
            }
        }
    }

    /// Signs a checkpoint if one is due, and tells subscribers.
    fn tick(&mut self) {
        let Some(signer) = self.signer.as_mut() else {
            return;
        };
        if let Some(size) = signer.tick(&self.tree, &mut self.persisted, &self.store, now_unix_ms())
        {
            self.checkpoints.send_replace(size);
        }
    }

    /// The chain from genesis, against every checkpoint this node stored.
    fn verify(&self) -> Result<Verification, AuditError> {
        let heads = match &self.signer {
            Some(s) => s.stored_heads(&self.store)?,
            // Without its key the node cannot tell its own checkpoints.
            None => Vec::new(),
        };
        let range = self.log.verify_all_against(&heads)?;
        Ok(Verification {
            range,
            checkpoints: heads.len() as u64,
            latest_checkpoint: heads.last().map(|h| h.size),
        })
    }

    fn prove(&self, seq: u64) -> Result<Inclusion, AuditError> {
        let size = self.tree.size();
        if seq >= size {
            return Err(AuditError::NoSuchRecord { seq, size });
        }
        let leaf = self
            .store
            .audit_leaves(seq, 1)?
            .first()
            .copied()
            .ok_or(AuditError::NoSuchRecord { seq, size })?;
        let mut src = tree::StoreChunks::new(&self.store);
        let proof = self
            .tree
            .inclusion_proof(seq, size, &mut src)
            .map_err(|e| match src.error.take() {
                Some(s) => AuditError::Store(s),
                None => AuditError::Request(e.to_string()),
            })?;
        Ok(Inclusion {
            seq,
            size,
            leaf,
            proof,
            root: self.tree.root(),
        })
    }

    fn commit(&mut self, jobs: &mut Vec<Waiting>, n: usize) {
        let mut all = Vec::with_capacity(n);
        let mut ends = Vec::with_capacity(jobs.len());
        for (events, _) in jobs.iter_mut() {
            all.append(events);
            ends.push(all.len());
        }
        let started = std::time::Instant::now();
        let result = self.log.append_batch_hashed(all);
        metrics::histogram!("mxp_audit_commit_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(appended) => {
                metrics::counter!("mxp_audit_events_total").increment(appended.len() as u64);
                for (_, hash) in &appended {
                    self.tree
                        .append(mxp_governance::audit::merkle::leaf_hash(hash));
                }
                self.head.send_replace(self.log.head().next_seq);
                for ((_, done), end) in jobs.drain(..).zip(ends) {
                    let last = end
                        .checked_sub(1)
                        .and_then(|i| appended.get(i))
                        .map_or(0, |(seq, _)| *seq);
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
