//! The writer's checkpoint signer: every N records or T seconds (when the
//! log grew) it signs a C2SP checkpoint of the whole log with the node's
//! audit key and stores it with the consistency proof from the checkpoint
//! before it; it answers the latest checkpoint with a proof from any earlier
//! size, and takes witnesses' cosignatures of the checkpoints it signed.
//!
//! Before signing it checks that the log extends the last checkpoint it
//! signed (a consistency proof over its own tree, verified against the
//! stored root): a log cut or rewritten behind the node's back is named and
//! nothing more is signed for it.

use mxp_governance::audit::cosign::{CosignOutcome, accept_cosignatures, claimed_size};
use mxp_governance::audit::merkle::verify_consistency;
use mxp_governance::audit::note::{Note, NoteSigner, NoteVerifier};
use mxp_governance::audit::{Checkpoint, CheckpointSchedule, ChunkedLog, Hash, TreeHead};

use super::AuditError;
use super::tree::StoreChunks;
use crate::store::{Store, StoreError, StoredCheckpoint};

/// How a node signs its audit checkpoints.
#[derive(Clone)]
pub struct CheckpointSettings {
    /// The checkpoint origin line, also the key's name (e.g.
    /// `<node fingerprint>/audit`).
    pub origin: String,
    /// The node's audit key (Ed25519, note signature type `0x01`), named
    /// `origin`.
    pub signer: NoteSigner,
    /// When to sign.
    pub schedule: CheckpointSchedule,
    /// The witnesses whose cosignatures the node takes (type `0x04` keys).
    pub witnesses: Vec<NoteVerifier>,
}

impl std::fmt::Debug for CheckpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSettings")
            .field("origin", &self.origin)
            .field("vkey", &self.signer.verifier().to_vkey())
            .field("schedule", &self.schedule)
            .field("witnesses", &self.witnesses)
            .finish()
    }
}

/// The latest checkpoint and, if asked, the consistency proof to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointView {
    /// The latest checkpoint signed (`None`: none yet).
    pub latest: Option<StoredCheckpoint>,
    /// The consistency proof from the size asked for to the latest's size.
    pub proof: Option<Vec<Hash>>,
}

pub(crate) struct Checkpointer {
    settings: CheckpointSettings,
    verifier: NoteVerifier,
    /// The last checkpoint signed: its tree head and when.
    last: TreeHead,
    last_ms: u64,
    /// The size at which signing was last refused (logged once per size).
    refused: Option<u64>,
}

fn tree_of(note: &str) -> Option<TreeHead> {
    let n = Note::parse(note.as_bytes()).ok()?;
    Some(Checkpoint::parse(n.text()).ok()?.tree)
}

impl Checkpointer {
    /// The signer, resuming after the latest stored checkpoint (the time
    /// rule counts from `now_ms` when there is none).
    pub(crate) fn new(
        settings: CheckpointSettings,
        store: &Store,
        now_ms: u64,
    ) -> Result<Checkpointer, StoreError> {
        let (last, last_ms) = match store.latest_checkpoint()? {
            Some(cp) => {
                let tree = tree_of(&cp.note).ok_or_else(|| StoreError::Corrupt {
                    path: store.path().to_owned(),
                    tree: "checkpoints",
                    key: format!("checkpoint {}", cp.size),
                    reason: "the stored note is not a signed checkpoint".into(),
                })?;
                (tree, cp.time_ms)
            }
            None => (
                TreeHead {
                    size: 0,
                    root: mxp_governance::audit::EMPTY_ROOT,
                },
                now_ms,
            ),
        };
        let verifier = settings.signer.verifier();
        Ok(Checkpointer {
            settings,
            verifier,
            last,
            last_ms,
            refused: None,
        })
    }

    /// How long until the time rule may make a checkpoint due.
    pub(crate) fn schedule(&self) -> CheckpointSchedule {
        self.settings.schedule
    }

    /// Signs and stores a checkpoint of `tree` if one is due at `now_ms`,
    /// writing the chunk hashes from `persisted` on with it; returns its
    /// size.
    pub(crate) fn tick(
        &mut self,
        tree: &ChunkedLog,
        persisted: &mut u64,
        store: &Store,
        now_ms: u64,
    ) -> Option<u64> {
        let size = tree.size();
        if size < self.last.size {
            self.refuse(size, &format!(
                "the audit log holds {size} records but this node signed a checkpoint of {}: records were cut",
                self.last.size
            ));
            return None;
        }
        if !self
            .settings
            .schedule
            .due(self.last.size, self.last_ms, size, now_ms)
        {
            return None;
        }
        let head = tree.head();
        let proof = if self.last.size == 0 {
            Vec::new()
        } else {
            let mut src = StoreChunks::new(store);
            match tree.consistency_proof(self.last.size, size, &mut src) {
                Ok(p) => p,
                Err(e) => {
                    let why = src.error.map_or_else(|| e.to_string(), |s| s.to_string());
                    tracing::error!("cannot sign an audit checkpoint: {why}");
                    return None;
                }
            }
        };
        if self.last.size > 0 && verify_consistency(&self.last, &head, &proof).is_err() {
            self.refuse(size, &format!(
                "the audit log of {size} records does not extend the checkpoint of {} this node signed: its history was rewritten",
                self.last.size
            ));
            return None;
        }
        let note = match Checkpoint::new(&self.settings.origin, head).sign(&self.settings.signer) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot sign an audit checkpoint: {e}");
                return None;
            }
        };
        let chunks: Vec<(u64, Hash)> = (*persisted..tree.complete_chunks())
            .filter_map(|i| tree.chunk_hash(i).map(|h| (i, h)))
            .collect();
        let cp = StoredCheckpoint {
            size,
            time_ms: now_ms,
            prev_size: self.last.size,
            proof,
            note,
        };
        if let Err(e) = store.put_checkpoint(&cp, &chunks) {
            tracing::error!("the audit checkpoint of {size} records could not be stored: {e}");
            metrics::counter!("mxp_audit_checkpoint_failures_total").increment(1);
            return None;
        }
        *persisted = tree.complete_chunks();
        self.last = head;
        self.last_ms = now_ms;
        metrics::counter!("mxp_audit_checkpoints_total").increment(1);
        tracing::debug!(size, "audit checkpoint signed");
        Some(size)
    }

    fn refuse(&mut self, size: u64, why: &str) {
        if self.refused != Some(size) {
            self.refused = Some(size);
            metrics::counter!("mxp_audit_checkpoint_failures_total").increment(1);
            tracing::error!("no audit checkpoint is signed: {why}");
        }
    }

    /// The latest checkpoint (or the one of `size`), with the consistency
    /// proof from `from_size`.
    pub(crate) fn view(
        &self,
        tree: &ChunkedLog,
        store: &Store,
        size: Option<u64>,
        from_size: Option<u64>,
    ) -> Result<CheckpointView, AuditError> {
        let latest = match size {
            None => store.latest_checkpoint()?,
            Some(size) => Some(store.checkpoint(size)?.ok_or_else(|| {
                AuditError::Request(format!("this node signed no checkpoint of size {size}"))
            })?),
        };
        let proof = match (from_size, &latest) {
            (None, _) => None,
            (Some(from), None) => {
                return Err(AuditError::Request(format!(
                    "this node has signed no checkpoint yet, so there is no proof from size {from}"
                )));
            }
            (Some(from), Some(cp)) => Some(proof_between(tree, store, from, cp.size)?),
        };
        Ok(CheckpointView { latest, proof })
    }

    /// Every checkpoint stored, oldest first, each note's signature by
    /// this node's audit key checked (a forged or altered note is named).
    pub(crate) fn stored_heads(&self, store: &Store) -> Result<Vec<TreeHead>, AuditError> {
        let mut heads = Vec::new();
        let mut after = 0u64;
        while let Some(cp) = store.checkpoint_after(after)? {
            let bad = |reason: String| {
                AuditError::Store(StoreError::Corrupt {
                    path: store.path().to_owned(),
                    tree: "checkpoints",
                    key: format!("checkpoint {}", cp.size),
                    reason,
                })
            };
            let note = Note::parse(cp.note.as_bytes())
                .map_err(|e| bad(format!("the stored note does not parse: {e}")))?;
            note.verify(std::slice::from_ref(&self.verifier))
                .map_err(|e| bad(format!("not signed by this node's audit key: {e}")))?;
            let checkpoint = Checkpoint::parse(note.text())
                .map_err(|e| bad(format!("the note is not a checkpoint: {e}")))?;
            if checkpoint.tree.size != cp.size {
                return Err(bad(format!(
                    "stored under size {} but covers {} records",
                    cp.size, checkpoint.tree.size
                )));
            }
            heads.push(checkpoint.tree);
            after = cp.size;
        }
        Ok(heads)
    }

    /// Takes the cosignatures of `note` for a checkpoint this node signed.
    pub(crate) fn cosign(&self, store: &Store, note: &[u8]) -> Result<CosignOutcome, AuditError> {
        let size = claimed_size(note).map_err(AuditError::Cosign)?;
        let mut stored = store.checkpoint(size)?.ok_or(AuditError::Cosign(
            mxp_governance::audit::CosignRefusal::NotIssued { size },
        ))?;
        let outcome =
            accept_cosignatures(&stored.note, note, &self.verifier, &self.settings.witnesses)
                .map_err(AuditError::Cosign)?;
        if !outcome.added.is_empty() {
            stored.note.clone_from(&outcome.note);
            store.put_checkpoint(&stored, &[])?;
            metrics::counter!("mxp_audit_cosignatures_total").increment(outcome.added.len() as u64);
        }
        Ok(outcome)
    }
}

/// The consistency proof from `old` to `new` records of `tree` (empty from
/// 0 or between equal sizes).
pub(crate) fn proof_between(
    tree: &ChunkedLog,
    store: &Store,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, AuditError> {
    if old > new {
        return Err(AuditError::Request(format!(
            "a consistency proof goes from a smaller tree to a larger one: {old} is above {new}"
        )));
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut src = StoreChunks::new(store);
    tree.consistency_proof(old, new, &mut src)
        .map_err(|e| match src.error {
            Some(s) => AuditError::Store(s),
            None => AuditError::Request(e.to_string()),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mxp_governance::audit::{AuditEvent, EventData, EventKind};

    use super::super::tree;
    use super::*;
    use crate::store::AuditLog;

    fn settings() -> CheckpointSettings {
        CheckpointSettings {
            origin: "t/audit".into(),
            signer: NoteSigner::new("t/audit", &[1; 32]).unwrap(),
            schedule: CheckpointSchedule {
                every_events: 10,
                every_ms: u64::MAX,
            },
            witnesses: Vec::new(),
        }
    }

    fn append(log: &mut AuditLog, n: u64, salt: u64) {
        let events = (0..n)
            .map(|i| {
                AuditEvent::new(
                    i,
                    EventKind::PolicyReload,
                    EventData::from_value(&serde_json::json!({ "i": i, "salt": salt })).unwrap(),
                )
            })
            .collect();
        log.append_batch(events).unwrap();
    }

    /// Signs what is due over the log in `path`; the latest checkpoint's size.
    fn sign(path: &std::path::Path) -> Option<u64> {
        let store = Store::open(path).unwrap();
        let log = AuditLog::open(store.clone()).unwrap();
        let (tree, mut persisted) = tree::restore(&store, log.head().next_seq).unwrap();
        let mut c = Checkpointer::new(settings(), &store, 0).unwrap();
        c.tick(&tree, &mut persisted, &store, 1);
        store.latest_checkpoint().unwrap().map(|cp| cp.size)
    }

    /// Replaces the log in `path` by `n` other records (its audit file cut
    /// to its header, then appended to).
    fn rewrite(path: &std::path::Path, n: u64) {
        crate::store::tamper::cut(path, crate::store::tamper::HEADER);
        let store = Store::open(path).unwrap();
        let mut log = AuditLog::open(store).unwrap();
        append(&mut log, n, 99);
    }

    #[test]
    fn checkpoints_chain_and_a_rewritten_or_cut_log_gets_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            let mut log = AuditLog::open(store).unwrap();
            append(&mut log, 300, 0);
        }
        assert_eq!(sign(&path), Some(300));
        {
            let store = Store::open(&path).unwrap();
            let mut log = AuditLog::open(store.clone()).unwrap();
            append(&mut log, 10, 1);
            drop(log);
            let cp = store.checkpoint(300).unwrap().unwrap();
            assert_eq!((cp.prev_size, cp.proof.len()), (0, 0));
        }
        assert_eq!(sign(&path), Some(310));
        {
            let store = Store::open(&path).unwrap();
            let cp = store.checkpoint(310).unwrap().unwrap();
            assert_eq!(cp.prev_size, 300);
            let old = tree_of(&store.checkpoint(300).unwrap().unwrap().note).unwrap();
            verify_consistency(&old, &tree_of(&cp.note).unwrap(), &cp.proof).unwrap();
            // One chunk hash was stored with the first checkpoint.
            assert_eq!(store.chunk_hashes().unwrap().len(), 1);
        }
        // Another history of more records: no checkpoint extends 310.
        rewrite(&path, 400);
        assert_eq!(sign(&path), Some(310));
        // A cut log: none either.
        rewrite(&path, 20);
        assert_eq!(sign(&path), Some(310));
    }
}
