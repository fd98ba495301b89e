//! The writer's Merkle tree of the whole log ([`ChunkedLog`]): restored at
//! start from the chunk hashes the store keeps (and the records after the
//! last of them), extended as records are appended, its chunk leaves read
//! back from the store when a proof needs them.

use mxp_governance::audit::{CHUNK_LEAVES, ChunkLeaves, ChunkedLog, Hash};

use crate::store::{Store, StoreError};

/// The leaves of complete chunks, read from the store's records. The first
/// read error is kept, to report instead of "chunk unavailable".
pub(crate) struct StoreChunks<'a> {
    store: &'a Store,
    pub(crate) error: Option<StoreError>,
}

impl<'a> StoreChunks<'a> {
    pub(crate) fn new(store: &'a Store) -> StoreChunks<'a> {
        StoreChunks { store, error: None }
    }
}

impl ChunkLeaves for StoreChunks<'_> {
    fn chunk_leaves(&mut self, index: u64) -> Option<Vec<Hash>> {
        match self
            .store
            .audit_leaves(index.checked_mul(CHUNK_LEAVES)?, CHUNK_LEAVES as usize)
        {
            Ok(leaves) => Some(leaves),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }
}

/// The tree of the `size` records in `store`, and how many of its chunk
/// hashes the store holds already (the rest are written with the next
/// checkpoint). Stored chunk hashes beyond the log's records (the log was
/// cut) are ignored: the next checkpoint's self-check names the cut.
///
/// # Errors
/// [`StoreError`] reading chunk hashes or records.
pub(crate) fn restore(store: &Store, size: u64) -> Result<(ChunkedLog, u64), StoreError> {
    let complete = size / CHUNK_LEAVES;
    let stored = store.chunk_hashes()?;
    let mut tree = ChunkedLog::new();
    let mut persisted = 0u64;
    for hash in stored
        .into_iter()
        .take(usize::try_from(complete).unwrap_or(usize::MAX))
    {
        // The tail is empty between chunks: this cannot fail.
        let _ = tree.push_chunk(hash);
        persisted += 1;
    }
    let mut next = persisted * CHUNK_LEAVES;
    while next < size {
        let n = (size - next).min(64 * CHUNK_LEAVES);
        for leaf in store.audit_leaves(next, usize::try_from(n).unwrap_or(usize::MAX))? {
            tree.append(leaf);
        }
        next += n;
    }
    Ok((tree, persisted))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mxp_governance::audit::{AuditEvent, EventData, EventKind, MerkleLog, Record};

    use super::*;
    use crate::store::{AuditLog, StoredCheckpoint};

    #[test]
    fn a_tree_restored_from_chunk_hashes_and_records_is_the_log_s_tree() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let mut log = AuditLog::open(store.clone()).unwrap();
        let events = (0..700u64)
            .map(|i| {
                AuditEvent::new(
                    i,
                    EventKind::PolicyReload,
                    EventData::from_value(&serde_json::json!({ "i": i })).unwrap(),
                )
            })
            .collect();
        log.append_batch(events).unwrap();
        let mut full = MerkleLog::new();
        for r in log.read(0, 1000).unwrap() {
            full.append(Record::leaf_hash(&r));
        }
        // Nothing stored yet: every chunk from the records.
        let (tree, persisted) = restore(&store, 700).unwrap();
        assert_eq!((tree.head(), persisted), (full.head(), 0));
        // One chunk hash stored: it is used, the rest recomputed.
        let cp = StoredCheckpoint {
            size: 300,
            time_ms: 0,
            prev_size: 0,
            proof: vec![],
            note: String::new(),
        };
        store
            .put_checkpoint(&cp, &[(0, tree.chunk_hash(0).unwrap())])
            .unwrap();
        let (again, persisted) = restore(&store, 700).unwrap();
        assert_eq!((again.head(), persisted), (full.head(), 1));
        // Proofs read chunk leaves back from the store.
        let mut src = StoreChunks::new(&store);
        assert_eq!(
            again.consistency_proof(100, 700, &mut src).unwrap(),
            full.consistency_proof(100, 700).unwrap()
        );
        // A log cut below a stored chunk: the hash beyond it is ignored.
        let (short, persisted) = restore(&store, 200).unwrap();
        assert_eq!(
            (short.head(), persisted),
            (
                mxp_governance::audit::TreeHead {
                    size: 200,
                    root: full.root_at(200).unwrap()
                },
                0
            )
        );
    }
}
