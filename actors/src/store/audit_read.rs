//! Reading stored audit records without the log's writer: pages of record
//! bytes for live subscribers (who verify them), and the Merkle leaves of a
//! range of records for proofs. Reads see only what an append made durable;
//! callers bound them by the head the writer published.

use mxp_governance::audit::{Hash, merkle};

use super::audit_log::{AuditViolation, seq_key, seq_of_key};
use super::{Store, StoreError, Tree};

/// A record's bytes end with its 32-byte chain hash (docs/AUDIT.md).
const HASH_LEN: usize = 32;

impl Store {
    /// Up to `limit` records from `from` on and before `until`, as stored
    /// (sequence number, bytes), stopping once they hold more than
    /// `max_bytes` (at least one is returned). Keys are checked to be the
    /// sequence numbers due; contents are not (subscribers verify them).
    ///
    /// # Errors
    /// [`StoreError::AuditCorrupt`] naming a missing record;
    /// [`StoreError::Corrupt`] for a key that is not a sequence number;
    /// [`StoreError::Engine`].
    pub fn audit_records(
        &self,
        from: u64,
        until: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let want = usize::try_from(until.saturating_sub(from)).map_or(limit, |n| n.min(limit));
        if want == 0 {
            return Ok(Vec::new());
        }
        let rows = self.engine.range(Tree::Audit, &seq_key(from), want)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        let mut expected = from;
        for (key, value) in rows {
            let seq = seq_of_key(&key).ok_or_else(|| {
                self.corrupt(
                    Tree::Audit,
                    &key,
                    "an audit key is an 8-byte big-endian sequence number",
                )
            })?;
            if seq != expected {
                return Err(self.missing(expected));
            }
            bytes = bytes.saturating_add(value.len());
            out.push((seq, value));
            expected = expected.saturating_add(1);
            if bytes > max_bytes {
                break;
            }
        }
        if out.is_empty() {
            return Err(self.missing(from));
        }
        Ok(out)
    }

    /// The Merkle leaf hashes of the `n` records from `from` on:
    /// `SHA-256(0x00 ‖ chain hash)`, the chain hash being each record's
    /// last 32 bytes.
    ///
    /// # Errors
    /// As [`Store::audit_records`], and [`StoreError::AuditCorrupt`] for a
    /// record too short to hold its hashes.
    pub fn audit_leaves(&self, from: u64, n: usize) -> Result<Vec<Hash>, StoreError> {
        let until = from.saturating_add(n as u64);
        let mut out = Vec::with_capacity(n);
        let mut next = from;
        while next < until {
            for (seq, bytes) in self.audit_records(next, until, 1024, usize::MAX)? {
                let hash = bytes
                    .len()
                    .checked_sub(HASH_LEN)
                    .and_then(|at| bytes.get(at..))
                    .filter(|_| bytes.len() >= 2 * HASH_LEN)
                    .ok_or_else(|| StoreError::AuditCorrupt {
                        path: self.path().to_owned(),
                        seq,
                        violation: AuditViolation::Undecodable(
                            mxp_protocol::DecodeError::PayloadTruncated {
                                what: "audit record",
                                needed: 2 * HASH_LEN,
                                available: bytes.len(),
                            },
                        ),
                    })?;
                out.push(merkle::leaf_hash(hash));
                next = seq.saturating_add(1);
            }
        }
        Ok(out)
    }

    fn missing(&self, seq: u64) -> StoreError {
        StoreError::AuditCorrupt {
            path: self.path().to_owned(),
            seq,
            violation: AuditViolation::Missing,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use mxp_governance::audit::{AuditEvent, EventData, EventKind, Record};

    use super::super::AuditLog;
    use super::*;

    #[test]
    fn pages_of_bytes_and_leaves_match_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let mut log = AuditLog::open(store.clone()).unwrap();
        let events = (0..50u64)
            .map(|i| {
                AuditEvent::new(
                    i,
                    EventKind::PolicyReload,
                    EventData::from_value(&serde_json::json!({ "i": i })).unwrap(),
                )
            })
            .collect();
        log.append_batch(events).unwrap();
        let all = log.read(0, 100).unwrap();
        let page = store.audit_records(10, 50, 5, usize::MAX).unwrap();
        assert_eq!(
            page.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![10, 11, 12, 13, 14]
        );
        assert_eq!(page[0].1, all[10].encode());
        // Bounded by bytes: one record past the bound, at least one.
        let one = all[0].encode().len();
        assert_eq!(store.audit_records(0, 50, 100, 1).unwrap().len(), 1);
        assert_eq!(store.audit_records(0, 50, 100, 2 * one).unwrap().len(), 3);
        // Bounded by `until` (the head published), whatever is stored.
        assert_eq!(
            store.audit_records(48, 49, 100, usize::MAX).unwrap().len(),
            1
        );
        assert!(
            store
                .audit_records(50, 50, 100, usize::MAX)
                .unwrap()
                .is_empty()
        );
        let leaves = store.audit_leaves(3, 40).unwrap();
        let want: Vec<Hash> = all[3..43].iter().map(Record::leaf_hash).collect();
        assert_eq!(leaves, want);
        // A record cut off the audit file behind the store's back is named.
        let bytes = super::super::tamper::read(dir.path().join("store").as_path());
        let at = super::super::tamper::frames(&bytes)[20].start;
        super::super::tamper::cut(&dir.path().join("store"), at);
        let e = store.audit_leaves(0, 50).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::AuditCorrupt {
                    seq: 20,
                    violation: AuditViolation::Frame {
                        fault: super::super::FrameFault::PastEnd { .. },
                        ..
                    },
                    ..
                }
            ),
            "{e}"
        );
    }
}
