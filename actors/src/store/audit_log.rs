//! The audit log: hash-chained records ([`mxp_governance::audit`]) in the
//! store's [`Tree::Audit`], keyed by big-endian sequence number
//! ([`seq_key`]), so key order is chain order.
//!
//! * **Append-only, one writer.** One [`AuditLog`] per [`Store`] at a time
//!   ([`StoreError::AuditBusy`] otherwise), and it only adds records after
//!   its last one.
//! * **Durable before it returns (group commit).** A batch of events is one
//!   atomic, durable engine write ([`Engine::put_batch`]): when
//!   [`AuditLog::append_batch`] returns, every record of the batch is on
//!   disk, so a step that must be audited may continue. A write that fails
//!   leaves the log poisoned ([`StoreError::AuditPoisoned`]) until it is
//!   reopened, because the write may or may not have landed.
//! * **Checked on open.** [`AuditLog::open`] resumes the chain from the last
//!   record after checking its key, its hash and its link to the record
//!   before it; a bad tail is [`StoreError::AuditCorrupt`] naming its
//!   sequence number. [`AuditLog::verify_all`] checks every record from
//!   genesis.
//!
//! The methods block on disk I/O (an fsync per batch): async callers run
//! them on a blocking thread.
//!
//! [`Engine::put_batch`]: super::Engine::put_batch

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mxp_governance::audit::{
    AppendError, AuditEvent, Chain, ChainError, ChainHead, ChainVerifier, GENESIS_PREV_HASH, Hash,
    Limits, Record, TreeHead, VerifiedRange,
};
use mxp_protocol::DecodeError;

use super::audit_file::SEARCH_WINDOW;
use super::{Engine, Entry, FrameFault, Store, StoreError, Tree};

/// How many records [`AuditLog::verify_all`] reads per engine call.
const PAGE: usize = 1024;

/// The key of the audit record with sequence number `seq`: its 8 bytes,
/// big-endian, so that key order is sequence order.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number an audit key encodes, or `None` if it is not 8 bytes.
pub fn seq_of_key(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// What is wrong with a stored audit record (see [`StoreError::AuditCorrupt`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditViolation {
    /// The bytes are not a record.
    #[error("the record does not decode: {0}")]
    Undecodable(DecodeError),
    /// The record's hash is not `BLAKE3(prev_hash ‖ encoding)`: it was altered.
    #[error("the record's hash does not match its contents")]
    BadHash,
    /// The record stored under this sequence number carries another one.
    #[error("the record stored under this sequence number carries seq {found}")]
    KeyMismatch {
        /// The sequence number inside the record.
        found: u64,
    },
    /// The record's `prev_hash` is not the hash of the record before it.
    #[error("the record does not link to the record before it")]
    PrevMismatch,
    /// The record is missing: the log has records after it, or the log's
    /// head says it was appended.
    #[error("the record is missing")]
    Missing,
    /// A record is stored beyond the head of the log (another writer), or
    /// at the last sequence number, which the chain never hands out.
    #[error("a record is stored beyond the head of the log")]
    Unexpected,
    /// The last record is not the one this log appended last.
    #[error("the last record is not the one this log appended")]
    Replaced,
    /// Any other chain rule (from [`ChainVerifier`]).
    #[error(transparent)]
    Chain(ChainError),
    /// The records from genesis up to a signed checkpoint's size do not
    /// hash to its root: a history rewritten (consistently) at or after
    /// this record, the first one no earlier checkpoint vouches for.
    #[error(
        "records up to {size} do not hash to the root of the node's signed checkpoint of size {size}: the history from this record on was rewritten"
    )]
    NotInCheckpoint {
        /// The checkpoint's tree size.
        size: u64,
    },
    /// A signed checkpoint covers more records than the log holds: the log
    /// was cut here.
    #[error("the node signed a checkpoint of {size} records, and the log ends here: it was cut")]
    CutBelowCheckpoint {
        /// The checkpoint's tree size.
        size: u64,
    },
    /// The record's frame in the audit file is damaged (read back after
    /// the file was opened: changed or cut behind the store's back).
    #[error("its frame at byte {offset} of the audit file is damaged: {fault}")]
    Frame {
        /// The frame's offset in the file.
        offset: u64,
        /// What is wrong with it.
        fault: FrameFault,
    },
    /// Found when the store was opened: the record's frame in the audit
    /// file is damaged and it is not a torn write at the end of the file
    /// (a whole frame follows it, or more bytes than a torn write could
    /// leave). The store was not opened; nothing was changed.
    #[error("{}", damaged(*offset, fault, *good_at))]
    Damaged {
        /// The frame's offset in the file.
        offset: u64,
        /// What is wrong with it.
        fault: FrameFault,
        /// Where the first whole frame after it starts, if one was found.
        good_at: Option<u64>,
    },
}

fn damaged(offset: u64, fault: &FrameFault, good_at: Option<u64>) -> String {
    let why = match good_at {
        Some(good) => format!(
            "a whole frame follows at byte {good}: this is damage inside the log, not a torn \
             write at its end. The store was not opened and nothing was changed: restore the \
             audit file from a backup"
        ),
        None => format!(
            "more than {} bytes follow it with no whole frame among them, more than a torn \
             write at the end leaves. The store was not opened and nothing was changed: \
             restore the audit file from a backup (if the machine crashed during a very large \
             write, keep a copy of the file and cut it to {offset} bytes)",
            SEARCH_WINDOW
        ),
    };
    format!("its frame at byte {offset} of the audit file is damaged ({fault}), and {why}")
}

/// A batch ready to write: the engine entries, their sequence numbers and
/// chain hashes, and the chain after them.
#[derive(Debug)]
struct Batch {
    entries: Vec<Entry>,
    seqs: Vec<u64>,
    hashes: Vec<Hash>,
    chain: Chain,
}

/// Chains `events` after `chain` (which is left as it is) and encodes them
/// as engine entries: key [`seq_key`], value [`Record::encode`].
///
/// # Errors
/// The first event's [`AppendError`]: the batch is refused as a whole.
fn build_batch(chain: &Chain, events: Vec<AuditEvent>) -> Result<Batch, AppendError> {
    let mut chain = chain.clone();
    let mut entries = Vec::with_capacity(events.len());
    let mut seqs = Vec::with_capacity(events.len());
    let mut hashes = Vec::with_capacity(events.len());
    for event in events {
        let record = chain.append(event)?;
        seqs.push(record.seq());
        hashes.push(*record.hash());
        entries.push((seq_key(record.seq()).to_vec(), record.encode()));
    }
    Ok(Batch {
        entries,
        seqs,
        hashes,
        chain,
    })
}

/// The node's audit log over a [`Store`]: see the module documentation.
#[derive(Debug)]
pub struct AuditLog {
    store: Arc<Store>,
    chain: Chain,
    limits: Limits,
    poisoned: bool,
}

impl AuditLog {
    /// Opens the audit log of `store` with the default [`Limits`], resuming
    /// the chain from its last record.
    ///
    /// # Errors
    /// [`StoreError::AuditBusy`] if another [`AuditLog`] over `store` is
    /// open; [`StoreError::AuditCorrupt`] naming the last record if it does
    /// not decode, is under another key, carries a bad hash or does not
    /// link to the record before it (or that one is missing);
    /// [`StoreError::Corrupt`] for a key that is not a sequence number;
    /// [`StoreError::Engine`].
    pub fn open(store: Arc<Store>) -> Result<AuditLog, StoreError> {
        AuditLog::open_with_limits(store, Limits::default())
    }

    /// As [`AuditLog::open`], decoding and appending within `limits`.
    ///
    /// # Errors
    /// As [`AuditLog::open`].
    pub fn open_with_limits(store: Arc<Store>, limits: Limits) -> Result<AuditLog, StoreError> {
        if store
            .audit_open
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(StoreError::AuditBusy {
                path: store.engine.path().to_owned(),
            });
        }
        // From here on, dropping `log` (also on an error) releases the store.
        let mut log = AuditLog {
            store,
            chain: Chain::resume(ChainHead::GENESIS, limits),
            limits,
            poisoned: false,
        };
        let head = log.tail_head()?;
        log.chain = Chain::resume(head, limits);
        Ok(log)
    }

    /// Where the chain stands: the next sequence number and the last hash.
    pub fn head(&self) -> ChainHead {
        self.chain.head()
    }

    /// The store the log lives in (others read durable records from it).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Appends `events` as one atomic, durable write (group commit) and
    /// returns their sequence numbers, which are durable when this returns.
    /// Each event's `seq` is overwritten with the one it gets. An empty
    /// batch writes nothing.
    ///
    /// # Errors
    /// [`StoreError::AuditRefused`] (nothing written) if an event is over
    /// the limits; [`StoreError::AuditPoisoned`] after an earlier failed
    /// write; [`StoreError::Engine`] if the write fails, which may or may
    /// not have landed (as a whole): the log is then poisoned.
    pub fn append_batch(&mut self, events: Vec<AuditEvent>) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .append_batch_hashed(events)?
            .into_iter()
            .map(|(seq, _)| seq)
            .collect())
    }

    /// As [`AuditLog::append_batch`], returning each record's sequence
    /// number and chain hash (its Merkle leaf data).
    ///
    /// # Errors
    /// As [`AuditLog::append_batch`].
    pub fn append_batch_hashed(
        &mut self,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        if self.poisoned {
            return Err(StoreError::AuditPoisoned { path: self.path() });
        }
        let batch =
            build_batch(&self.chain, events).map_err(|source| StoreError::AuditRefused {
                path: self.path(),
                source,
            })?;
        if batch.seqs.is_empty() {
            return Ok(Vec::new());
        }
        if let Err(e) = self.engine().put_batch(Tree::Audit, &batch.entries) {
            self.poisoned = true;
            return Err(e);
        }
        self.chain = batch.chain;
        Ok(batch.seqs.into_iter().zip(batch.hashes).collect())
    }

    /// Appends one event durably and returns its sequence number.
    ///
    /// # Errors
    /// As [`AuditLog::append_batch`].
    pub fn append(&mut self, event: AuditEvent) -> Result<u64, StoreError> {
        let seq = self.chain.head().next_seq;
        self.append_batch(vec![event])?;
        Ok(seq)
    }

    /// Up to `limit` records from `from_seq` on, in order, stopping at the
    /// head. Records are decoded and their keys checked, not their hashes
    /// (that is [`AuditLog::verify_all`]).
    ///
    /// # Errors
    /// [`StoreError::AuditCorrupt`] naming the first record that is missing,
    /// does not decode or is under another key; [`StoreError::Corrupt`];
    /// [`StoreError::Engine`].
    pub fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let available = self.head().next_seq.saturating_sub(from_seq);
        let want = usize::try_from(available).map_or(limit, |a| a.min(limit));
        if want == 0 {
            return Ok(Vec::new());
        }
        let mut records = Vec::with_capacity(want.min(PAGE));
        let mut expected = from_seq;
        // An engine may return fewer rows than asked before a damaged one
        // (Engine::range): ask again from there, until none come.
        while records.len() < want {
            let rows =
                self.engine()
                    .range(Tree::Audit, &seq_key(expected), want - records.len())?;
            if rows.is_empty() {
                return Err(self.corrupt(expected, AuditViolation::Missing));
            }
            for (key, value) in rows {
                let seq = self.key_seq(&key)?;
                if seq != expected {
                    return Err(self.corrupt(expected, AuditViolation::Missing));
                }
                records.push(self.decode(seq, &value)?);
                expected = expected.saturating_add(1);
            }
        }
        Ok(records)
    }

    /// Verifies every record from genesis (hash, sequence number, link, key)
    /// and that the chain ends at this log's head, returning the range and
    /// its Merkle tree head.
    ///
    /// # Errors
    /// [`StoreError::AuditCorrupt`] naming the first bad or missing record;
    /// [`StoreError::Corrupt`]; [`StoreError::Engine`].
    pub fn verify_all(&self) -> Result<VerifiedRange, StoreError> {
        self.verify_all_against(&[])
    }

    /// As [`AuditLog::verify_all`], and against `checkpoints` (tree heads
    /// the node signed, oldest first): the records up to each one's size
    /// must hash to its root, and the log must hold at least as many
    /// records as the largest covers. A chain rewritten consistently (every
    /// hash recomputed) or cut is caught here, named at the first record no
    /// earlier checkpoint vouches for.
    ///
    /// # Errors
    /// As [`AuditLog::verify_all`]; [`AuditViolation::NotInCheckpoint`];
    /// [`AuditViolation::CutBelowCheckpoint`].
    pub fn verify_all_against(
        &self,
        checkpoints: &[TreeHead],
    ) -> Result<VerifiedRange, StoreError> {
        let mut pending = checkpoints.iter().filter(|c| c.size > 0).peekable();
        // The first record the last matching checkpoint does not cover.
        let mut vouched = 0u64;
        let mut verifier = ChainVerifier::from_genesis(self.limits);
        let mut next = 0u64;
        loop {
            // Until a page comes back empty: an engine may return a short
            // page before a damaged record (Engine::range).
            let rows = self.engine().range(Tree::Audit, &seq_key(next), PAGE)?;
            if rows.is_empty() {
                break;
            }
            for (key, value) in rows {
                let seq = self.key_seq(&key)?;
                if seq != next {
                    return Err(self.corrupt(next, AuditViolation::Missing));
                }
                let record = self.decode(seq, &value)?;
                verifier.push_record(record).map_err(|e| {
                    let violation = match e {
                        ChainError::BadHash { .. } => AuditViolation::BadHash,
                        ChainError::PrevMismatch { .. } => AuditViolation::PrevMismatch,
                        other => AuditViolation::Chain(other),
                    };
                    self.corrupt(seq, violation)
                })?;
                next = verifier.head().next_seq;
                while let Some(cp) = pending.next_if(|c| c.size <= next) {
                    if cp.size < next {
                        // Out of order or repeated: already passed.
                        continue;
                    }
                    if verifier.tree_head().map(|t| t.root) != Some(cp.root) {
                        return Err(self
                            .corrupt(vouched, AuditViolation::NotInCheckpoint { size: cp.size }));
                    }
                    vouched = cp.size;
                }
            }
        }
        if let Some(cp) = pending.find(|c| c.size > next) {
            return Err(self.corrupt(next, AuditViolation::CutBelowCheckpoint { size: cp.size }));
        }
        let range = verifier
            .finish()
            .map_err(|e| self.corrupt(next, AuditViolation::Chain(e)))?;
        let head = self.head();
        if range.end.next_seq < head.next_seq {
            return Err(self.corrupt(range.end.next_seq, AuditViolation::Missing));
        }
        if range.end.next_seq > head.next_seq {
            return Err(self.corrupt(head.next_seq, AuditViolation::Unexpected));
        }
        if range.end.last_hash != head.last_hash {
            let last = head.next_seq.saturating_sub(1);
            return Err(self.corrupt(last, AuditViolation::Replaced));
        }
        Ok(range)
    }

    /// The head after the last stored record, checked.
    fn tail_head(&self) -> Result<ChainHead, StoreError> {
        let Some((key, value)) = self.engine().last(Tree::Audit)? else {
            return Ok(ChainHead::GENESIS);
        };
        let seq = self.key_seq(&key)?;
        let record = self.decode(seq, &value)?;
        if !record.hash_is_valid() {
            return Err(self.corrupt(seq, AuditViolation::BadHash));
        }
        let prev_hash = match seq.checked_sub(1) {
            None => GENESIS_PREV_HASH,
            Some(prev) => match self.engine().get(Tree::Audit, &seq_key(prev))? {
                None => return Err(self.corrupt(prev, AuditViolation::Missing)),
                Some(bytes) => *self.decode(prev, &bytes)?.hash(),
            },
        };
        if *record.prev_hash() != prev_hash {
            return Err(self.corrupt(seq, AuditViolation::PrevMismatch));
        }
        let Some(next_seq) = seq.checked_add(1) else {
            return Err(self.corrupt(seq, AuditViolation::Unexpected));
        };
        Ok(ChainHead {
            next_seq,
            last_hash: *record.hash(),
        })
    }

    /// Decodes the record stored under `seq`, checking it carries `seq`.
    fn decode(&self, seq: u64, bytes: &[u8]) -> Result<Record, StoreError> {
        let record = Record::decode(bytes, &self.limits)
            .map_err(|e| self.corrupt(seq, AuditViolation::Undecodable(e)))?;
        if record.seq() != seq {
            return Err(self.corrupt(
                seq,
                AuditViolation::KeyMismatch {
                    found: record.seq(),
                },
            ));
        }
        Ok(record)
    }

    fn key_seq(&self, key: &[u8]) -> Result<u64, StoreError> {
        seq_of_key(key).ok_or_else(|| {
            self.store.corrupt(
                Tree::Audit,
                key,
                "an audit key is an 8-byte big-endian sequence number",
            )
        })
    }

    fn engine(&self) -> &dyn Engine {
        self.store.engine.as_ref()
    }

    fn path(&self) -> String {
        self.engine().path().to_owned()
    }

    fn corrupt(&self, seq: u64, violation: AuditViolation) -> StoreError {
        StoreError::AuditCorrupt {
            path: self.path(),
            seq,
            violation,
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.store.audit_open.store(false, Ordering::Release);
    }
}

#[cfg(test)]
#[path = "audit_tamper_tests.rs"]
mod tamper_tests;

#[cfg(test)]
#[path = "audit_checkpoint_tests.rs"]
mod checkpoint_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use mxp_governance::audit::{EventData, EventKind, verify};

    use super::super::Records;
    use super::*;

    fn event(i: u64) -> AuditEvent {
        AuditEvent::new(
            1_000 + i,
            EventKind::KillSwitch {
                engaged: i.is_multiple_of(2),
            },
            EventData::from_value(&serde_json::json!({"i": i})).unwrap(),
        )
        .with_trace(i)
    }

    fn events(range: std::ops::Range<u64>) -> Vec<AuditEvent> {
        range.map(event).collect()
    }

    fn over_limit() -> AuditEvent {
        let big = "x".repeat(Limits::default().max_data_bytes + 1);
        AuditEvent::new(
            0,
            EventKind::PolicyReload,
            EventData::from_value(&serde_json::json!({ "big": big })).unwrap(),
        )
    }

    type MemTree = BTreeMap<Vec<u8>, Vec<u8>>;

    /// An in-memory engine whose writes can be made to fail.
    #[derive(Default)]
    struct MemEngine {
        trees: Mutex<BTreeMap<&'static str, MemTree>>,
        fail_writes: Arc<AtomicBool>,
    }

    impl MemEngine {
        fn with<R>(&self, tree: Tree, f: impl FnOnce(&mut MemTree) -> R) -> R {
            f(self.trees.lock().unwrap().entry(tree.name()).or_default())
        }

        fn check(&self) -> Result<(), StoreError> {
            if self.fail_writes.load(Ordering::Relaxed) {
                return Err(StoreError::Engine {
                    path: "mem".into(),
                    reason: "disk full".into(),
                });
            }
            Ok(())
        }
    }

    impl Engine for MemEngine {
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.with(tree, |t| t.get(key).cloned()))
        }
        fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.check()?;
            self.with(tree, |t| t.insert(key.to_vec(), value.to_vec()));
            Ok(())
        }
        fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
            self.check()?;
            self.with(tree, |t| t.remove(key));
            Ok(())
        }
        fn put_batch(&self, tree: Tree, entries: &[Entry]) -> Result<(), StoreError> {
            self.check()?;
            self.with(tree, |t| t.extend(entries.iter().cloned()));
            Ok(())
        }
        fn scan(&self, tree: Tree) -> Result<Records, StoreError> {
            Ok(self.with(tree, |t| t.clone().into_iter().collect()))
        }
        fn range(&self, tree: Tree, from: &[u8], limit: usize) -> Result<Records, StoreError> {
            Ok(self.with(tree, |t| {
                t.range(from.to_vec()..)
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }))
        }
        fn last(&self, tree: Tree) -> Result<Option<Entry>, StoreError> {
            Ok(self.with(tree, |t| {
                t.last_key_value().map(|(k, v)| (k.clone(), v.clone()))
            }))
        }
        fn path(&self) -> &str {
            "mem"
        }
    }

    fn mem_store() -> (Arc<Store>, Arc<AtomicBool>) {
        let engine = MemEngine::default();
        let fail = engine.fail_writes.clone();
        (Arc::new(Store::new(Box::new(engine))), fail)
    }

    fn seq_of(e: &StoreError) -> Option<(u64, AuditViolation)> {
        match e {
            StoreError::AuditCorrupt { seq, violation, .. } => Some((*seq, violation.clone())),
            _ => None,
        }
    }

    #[test]
    fn keys_are_big_endian_so_key_order_is_sequence_order() {
        assert_eq!(seq_key(0x0102_0304_0506_0708), [1, 2, 3, 4, 5, 6, 7, 8]);
        let seqs = [0u64, 1, 255, 256, 65_535, 1 << 40, u64::MAX - 1, u64::MAX];
        for w in seqs.windows(2) {
            assert!(seq_key(w[0]) < seq_key(w[1]), "{w:?}");
        }
        for s in seqs {
            assert_eq!(seq_of_key(&seq_key(s)), Some(s));
        }
        assert_eq!(seq_of_key(&[1; 7]), None);
        assert_eq!(seq_of_key(&[1; 9]), None);
        assert_eq!(seq_of_key(&[]), None);
    }

    #[test]
    fn a_batch_chains_after_the_head_and_leaves_the_chain_alone() {
        let mut chain = Chain::new();
        chain.append(event(0)).unwrap();
        let before = chain.head();
        let batch = build_batch(&chain, events(1..5)).unwrap();
        assert_eq!(chain.head(), before, "the chain given is not advanced");
        assert_eq!(batch.seqs, vec![1, 2, 3, 4]);
        assert_eq!(batch.chain.head().next_seq, 5);
        let mut verifier = ChainVerifier::from_head(before, Limits::default());
        for ((key, value), seq) in batch.entries.iter().zip(&batch.seqs) {
            assert_eq!(key.as_slice(), seq_key(*seq));
            let record = verifier.push(value).unwrap();
            assert_eq!(record.event().trace_id, *seq, "events keep their order");
        }
        assert_eq!(verifier.head(), batch.chain.head());

        let empty = build_batch(&chain, Vec::new()).unwrap();
        assert!(empty.entries.is_empty() && empty.seqs.is_empty());
        assert_eq!(empty.chain.head(), before);

        // One event over the limits refuses the batch as a whole.
        let mut bad = events(1..3);
        bad.push(over_limit());
        assert!(matches!(
            build_batch(&chain, bad),
            Err(AppendError::OverLimit(_))
        ));
    }

    #[test]
    fn appends_read_back_verify_and_resume_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            let mut log = AuditLog::open(store.clone()).unwrap();
            assert_eq!(log.head(), ChainHead::GENESIS);
            assert_eq!(log.verify_all().unwrap().count(), 0);
            assert_eq!(log.append(event(0)).unwrap(), 0);
            assert_eq!(
                log.append_batch(events(1..40)).unwrap(),
                (1..40).collect::<Vec<_>>()
            );
            assert_eq!(log.append_batch(Vec::new()).unwrap(), Vec::<u64>::new());
            // The other trees are untouched by the audit tree.
            store.set_kill_switch(true).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(store.kill_switch().unwrap());
        let mut log = AuditLog::open(store.clone()).unwrap();
        assert_eq!(log.head().next_seq, 40);
        let all = log.read(0, usize::MAX).unwrap();
        assert_eq!(all.len(), 40);
        for (i, r) in all.iter().enumerate() {
            let mut want = event(i as u64);
            want.seq = i as u64;
            assert_eq!(r.event(), &want);
        }
        assert_eq!(log.head().last_hash, *all[39].hash());
        let range = log.verify_all().unwrap();
        let encoded: Vec<Vec<u8>> = all.iter().map(Record::encode).collect();
        assert_eq!(range, verify(&encoded, &Limits::default()).unwrap());
        assert_eq!(log.append(event(40)).unwrap(), 40, "the chain resumed");
        assert_eq!(log.verify_all().unwrap().count(), 41);
        assert_eq!(
            log.read(38, 2)
                .unwrap()
                .iter()
                .map(Record::seq)
                .collect::<Vec<_>>(),
            vec![38, 39]
        );
        assert_eq!(log.read(40, 10).unwrap().len(), 1);
        assert!(log.read(41, 10).unwrap().is_empty());
        assert!(log.read(u64::MAX, 10).unwrap().is_empty());
        assert!(log.read(0, 0).unwrap().is_empty());
    }

    #[test]
    fn one_writer_at_a_time() {
        let (store, _) = mem_store();
        let log = AuditLog::open(store.clone()).unwrap();
        let e = AuditLog::open(store.clone()).unwrap_err();
        assert!(matches!(e, StoreError::AuditBusy { .. }), "{e}");
        drop(log);
        let _again = AuditLog::open(store.clone()).unwrap();
        // A failed open releases the store too.
        let (store, _) = mem_store();
        store.engine.put(Tree::Audit, &seq_key(0), b"junk").unwrap();
        assert!(AuditLog::open(store.clone()).is_err());
        assert!(matches!(
            AuditLog::open(store.clone()).unwrap_err(),
            StoreError::AuditCorrupt { seq: 0, .. }
        ));
    }

    #[test]
    fn a_refused_batch_writes_nothing_and_a_failed_write_poisons() {
        let (store, fail) = mem_store();
        let mut log = AuditLog::open(store.clone()).unwrap();
        log.append_batch(events(0..3)).unwrap();
        let head = log.head();
        let mut bad = events(3..5);
        bad.push(over_limit());
        let e = log.append_batch(bad).unwrap_err();
        assert!(matches!(e, StoreError::AuditRefused { .. }), "{e}");
        assert_eq!(log.head(), head);
        assert_eq!(log.verify_all().unwrap().end, head);

        fail.store(true, Ordering::Relaxed);
        let e = log.append(event(3)).unwrap_err();
        assert!(matches!(e, StoreError::Engine { .. }), "{e}");
        fail.store(false, Ordering::Relaxed);
        let e = log.append(event(3)).unwrap_err();
        assert!(matches!(e, StoreError::AuditPoisoned { .. }), "{e}");
        assert!(e.to_string().contains("reopen"), "{e}");
        drop(log);
        let mut log = AuditLog::open(store).unwrap();
        assert_eq!(log.head(), head);
        assert_eq!(log.append(event(3)).unwrap(), 3);
    }

    #[test]
    fn a_bad_tail_is_refused_on_open_naming_its_seq() {
        let setup = || {
            let (store, _) = mem_store();
            let mut log = AuditLog::open(store.clone()).unwrap();
            log.append_batch(events(0..5)).unwrap();
            drop(log);
            store
        };
        let tail = |store: &Store| store.engine.get(Tree::Audit, &seq_key(4)).unwrap().unwrap();

        // A flipped byte in the tail's data: the hash no longer matches.
        let store = setup();
        let mut bytes = tail(&store);
        let at = bytes.windows(4).position(|w| w == b"\"i\":").unwrap() + 4;
        bytes[at] = b'9';
        store.engine.put(Tree::Audit, &seq_key(4), &bytes).unwrap();
        let e = AuditLog::open(store).unwrap_err();
        assert_eq!(seq_of(&e), Some((4, AuditViolation::BadHash)), "{e}");
        assert!(e.to_string().contains("audit record 4"), "{e}");

        // Truncated bytes do not decode.
        let store = setup();
        let bytes = tail(&store);
        store
            .engine
            .put(Tree::Audit, &seq_key(4), &bytes[..bytes.len() - 1])
            .unwrap();
        let e = AuditLog::open(store).unwrap_err();
        assert!(
            matches!(seq_of(&e), Some((4, AuditViolation::Undecodable(_)))),
            "{e}"
        );

        // The tail moved to another key.
        let store = setup();
        let bytes = tail(&store);
        store.engine.put(Tree::Audit, &seq_key(9), &bytes).unwrap();
        let e = AuditLog::open(store).unwrap_err();
        assert_eq!(
            seq_of(&e),
            Some((9, AuditViolation::KeyMismatch { found: 4 })),
            "{e}"
        );

        // A valid record of another history at the tail does not link.
        let store = setup();
        let mut other = Chain::new();
        let mut foreign = None;
        for e in events(100..105) {
            foreign = Some(other.append(e).unwrap());
        }
        store
            .engine
            .put(Tree::Audit, &seq_key(4), &foreign.unwrap().encode())
            .unwrap();
        let e = AuditLog::open(store).unwrap_err();
        assert_eq!(seq_of(&e), Some((4, AuditViolation::PrevMismatch)), "{e}");

        // The record before the tail is gone.
        let store = setup();
        store.engine.delete(Tree::Audit, &seq_key(3)).unwrap();
        let e = AuditLog::open(store).unwrap_err();
        assert_eq!(seq_of(&e), Some((3, AuditViolation::Missing)), "{e}");

        // A key that is no sequence number.
        let store = setup();
        store.engine.put(Tree::Audit, &[0xff; 9], b"x").unwrap();
        let e = AuditLog::open(store).unwrap_err();
        assert!(
            matches!(e, StoreError::Corrupt { tree: "audit", .. }),
            "{e}"
        );
    }

    #[test]
    fn verify_all_and_read_name_the_first_bad_record() {
        let (store, _) = mem_store();
        let mut log = AuditLog::open(store.clone()).unwrap();
        // More than a page, so the paging is exercised.
        for start in (0..2_100u64).step_by(300) {
            log.append_batch(events(start..start + 300)).unwrap();
        }
        assert_eq!(log.verify_all().unwrap().count(), 2_100);
        let good = store
            .engine
            .get(Tree::Audit, &seq_key(1_500))
            .unwrap()
            .unwrap();

        // An altered record in the middle (the tail check on open cannot see it).
        let mut bytes = good.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        store
            .engine
            .put(Tree::Audit, &seq_key(1_500), &bytes)
            .unwrap();
        let e = log.verify_all().unwrap_err();
        assert_eq!(seq_of(&e), Some((1_500, AuditViolation::BadHash)), "{e}");
        drop(log);
        let log = AuditLog::open(store.clone()).unwrap();
        assert!(log.verify_all().is_err());
        assert_eq!(log.read(1_499, 3).unwrap().len(), 3, "read does not hash");

        // A missing record.
        store
            .engine
            .put(Tree::Audit, &seq_key(1_500), &good)
            .unwrap();
        assert_eq!(log.verify_all().unwrap().count(), 2_100);
        store.engine.delete(Tree::Audit, &seq_key(1_024)).unwrap();
        let e = log.verify_all().unwrap_err();
        assert_eq!(seq_of(&e), Some((1_024, AuditViolation::Missing)), "{e}");
        let e = log.read(1_000, 100).unwrap_err();
        assert_eq!(seq_of(&e), Some((1_024, AuditViolation::Missing)), "{e}");
        let moved = store.engine.get(Tree::Audit, &seq_key(1_023)).unwrap();
        store.engine.delete(Tree::Audit, &seq_key(1_023)).unwrap();
        let e = log.read(1_023, 1).unwrap_err();
        assert_eq!(seq_of(&e), Some((1_023, AuditViolation::Missing)), "{e}");
        store
            .engine
            .put(Tree::Audit, &seq_key(1_023), &moved.unwrap())
            .unwrap();

        // Records dropped from the tail behind the log's back.
        let (store, _) = mem_store();
        let mut log = AuditLog::open(store.clone()).unwrap();
        log.append_batch(events(0..10)).unwrap();
        store.engine.delete(Tree::Audit, &seq_key(9)).unwrap();
        let e = log.verify_all().unwrap_err();
        assert_eq!(seq_of(&e), Some((9, AuditViolation::Missing)), "{e}");
        let e = log.read(5, 10).unwrap_err();
        assert_eq!(seq_of(&e), Some((9, AuditViolation::Missing)), "{e}");
    }
}
