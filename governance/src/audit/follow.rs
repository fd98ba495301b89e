//! What a live follower of a node's audit log checks as the stream arrives
//! (docs/AUDIT.md, "Following a node live"): every record against the chain
//! rule, and every checkpoint against the node's key, the log's origin, the
//! last checkpoint it accepted (a consistency proof) and, when it holds the
//! records the checkpoint covers, their Merkle root. A checkpoint that does
//! not extend the last one accepted is refused, and the error says why.
//!
//! Pure: bytes in, verdicts out. The connection, the reconnects and the
//! cosigning are the caller's.

use super::chain::{ChainError, ChainHead, ChainVerifier};
use super::checkpoint::Checkpoint;
use super::merkle::TreeHead;
use super::note::{Cosigner, Note, NoteError};
use super::record::{Limits, Record};
use super::witness::{LogIdentity, VerifiedCheckpoint, WitnessRefusal, verify_checkpoint};
use super::{Hash, hex32};

/// Why a follower refuses what the stream carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// A record breaks the chain (altered, missing, out of order, from
    /// another history) or does not decode.
    #[error("record {seq}: {source}")]
    Record {
        /// The sequence number that was due.
        seq: u64,
        /// The chain rule it breaks.
        source: ChainError,
    },
    /// The checkpoint is not signed by the node's key, names another log,
    /// or does not extend the last checkpoint accepted.
    #[error("checkpoint of size {size} refused: {source}")]
    Checkpoint {
        /// The size it claims (0 if it did not parse).
        size: u64,
        /// Why.
        source: WitnessRefusal,
    },
    /// The consistency proof is not from the last checkpoint accepted, so it
    /// cannot show the new one extends it.
    #[error(
        "checkpoint of size {size}: its consistency proof is from size {found}, but the last checkpoint accepted has size {expected}"
    )]
    ProofFrom {
        /// The new checkpoint's size.
        size: u64,
        /// The size the proof starts from.
        found: u64,
        /// The size of the last checkpoint accepted.
        expected: u64,
    },
    /// The checkpoint's root is not the root of the records received: the
    /// node signed another history than the one it streamed.
    #[error(
        "checkpoint of size {size} signs root {signed} but the {size} records received hash to {computed}"
    )]
    RootMismatch {
        /// The size.
        size: u64,
        /// The root it signs, hex.
        signed: String,
        /// The root of the records received, hex.
        computed: String,
    },
}

/// A checkpoint the follower accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The note as received (the node's signature and any cosignatures).
    pub note: Note,
    /// Whether its root was checked against the records received (the
    /// follower holds the root of exactly that many records: it followed
    /// from the first record and the checkpoint came right after them).
    pub records_checked: bool,
}

impl Accepted {
    /// The note with a cosignature by `cosigner` at `time` appended (what
    /// a witness sends back to the node).
    ///
    /// # Errors
    /// [`NoteError::TimeTooLarge`] or [`NoteError::InvalidText`].
    pub fn cosign(&self, cosigner: &Cosigner, time: u64) -> Result<String, NoteError> {
        let signature = cosigner.cosign(self.note.text(), time)?;
        let mut note = self.note.clone();
        note.push_signature(signature);
        Ok(note.encode())
    }
}

/// A follower's verification state: see the module documentation.
#[derive(Debug, Clone)]
pub struct Follower {
    log: LogIdentity,
    limits: Limits,
    /// `None` until the first record when following from the middle of a
    /// log whose previous hash is not known (trusted on first use).
    chain: Option<ChainVerifier>,
    next_seq: u64,
    last: Option<TreeHead>,
}

impl Follower {
    /// A follower of `log` from sequence number `from`, whose last accepted
    /// checkpoint is `last` (`None`: the first one is trusted on first use).
    /// From 0 it holds the Merkle root of everything it receives, so every
    /// checkpoint right after its records is checked against them. From
    /// elsewhere, the first record's link to the one before it is taken on
    /// trust.
    pub fn new(log: LogIdentity, limits: Limits, from: u64, last: Option<TreeHead>) -> Follower {
        let chain = (from == 0).then(|| ChainVerifier::from_genesis(limits));
        Follower {
            log,
            limits,
            chain,
            next_seq: from,
            last,
        }
    }

    /// A follower that continues from a known chain head.
    pub fn resume(
        log: LogIdentity,
        limits: Limits,
        head: ChainHead,
        last: Option<TreeHead>,
    ) -> Follower {
        Follower {
            log,
            limits,
            chain: Some(ChainVerifier::from_head(head, limits)),
            next_seq: head.next_seq,
            last,
        }
    }

    /// The sequence number of the next record due: where to resume after a
    /// reconnect.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last checkpoint accepted.
    pub fn last_checkpoint(&self) -> Option<TreeHead> {
        self.last
    }

    /// The log followed.
    pub fn log(&self) -> &LogIdentity {
        &self.log
    }

    /// Checks the next record's bytes.
    ///
    /// # Errors
    /// [`FollowError::Record`]; the state is unchanged.
    pub fn record(&mut self, bytes: &[u8]) -> Result<Record, FollowError> {
        let seq = self.next_seq;
        let err = |source| FollowError::Record { seq, source };
        let mut fresh = None;
        let chain = match &mut self.chain {
            Some(c) => c,
            None => {
                let record = Record::decode(bytes, &self.limits)
                    .map_err(|source| err(ChainError::Undecodable { index: 0, source }))?;
                let head = ChainHead {
                    next_seq: seq,
                    last_hash: *record.prev_hash(),
                };
                fresh.insert(ChainVerifier::from_head(head, self.limits))
            }
        };
        let record = chain.push(bytes).map_err(err)?;
        self.next_seq = chain.head().next_seq;
        if let Some(c) = fresh {
            self.chain = Some(c);
        }
        Ok(record)
    }

    /// Checks a checkpoint note and its consistency proof from `from_size`.
    ///
    /// # Errors
    /// [`FollowError::ProofFrom`], [`FollowError::Checkpoint`] or
    /// [`FollowError::RootMismatch`]; the state is unchanged.
    pub fn checkpoint(
        &mut self,
        note: &[u8],
        from_size: u64,
        proof: &[Hash],
    ) -> Result<Accepted, FollowError> {
        let claimed = || {
            Note::parse(note)
                .ok()
                .and_then(|n| Checkpoint::parse(n.text()).ok())
                .map_or(0, |c| c.tree.size)
        };
        if let Some(last) = &self.last
            && last.size != from_size
        {
            return Err(FollowError::ProofFrom {
                size: claimed(),
                found: from_size,
                expected: last.size,
            });
        }
        let VerifiedCheckpoint { checkpoint, note } =
            verify_checkpoint(&self.log, self.last.as_ref(), note, proof).map_err(|source| {
                FollowError::Checkpoint {
                    size: claimed(),
                    source,
                }
            })?;
        let tree = checkpoint.tree;
        let held = self.chain.as_ref().and_then(ChainVerifier::tree_head);
        let records_checked = match held {
            Some(h) if h.size == tree.size => {
                if h.root != tree.root {
                    return Err(FollowError::RootMismatch {
                        size: tree.size,
                        signed: hex32(&tree.root),
                        computed: hex32(&h.root),
                    });
                }
                true
            }
            _ => false,
        };
        self.last = Some(tree);
        Ok(Accepted {
            checkpoint,
            note,
            records_checked,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::super::merkle::MerkleLog;
    use super::super::note::{NoteSigner, NoteVerifier};
    use super::super::{AuditEvent, Chain, EventData, EventKind};
    use super::*;

    const ORIGIN: &str = "node.example/audit";

    fn signer(seed: u8) -> NoteSigner {
        NoteSigner::new(ORIGIN, &[seed; 32]).unwrap()
    }

    fn log_of(s: &NoteSigner) -> LogIdentity {
        LogIdentity {
            origin: ORIGIN.into(),
            verifiers: vec![s.verifier()],
        }
    }

    /// `n` records of one chain, and the tree over them.
    fn history(n: u64, salt: u64) -> (Vec<Vec<u8>>, MerkleLog) {
        let mut chain = Chain::new();
        let mut tree = MerkleLog::new();
        let mut out = Vec::new();
        for i in 0..n {
            let e = AuditEvent::new(
                i + salt,
                EventKind::PolicyReload,
                EventData::from_value(&serde_json::json!({ "i": i })).unwrap(),
            );
            let r = chain.append(e).unwrap();
            tree.append(r.leaf_hash());
            out.push(r.encode());
        }
        (out, tree)
    }

    fn note(s: &NoteSigner, tree: &MerkleLog, size: u64) -> String {
        Checkpoint::new(
            ORIGIN,
            TreeHead {
                size,
                root: tree.root_at(size).unwrap(),
            },
        )
        .sign(s)
        .unwrap()
    }

    #[test]
    fn records_and_checkpoints_that_extend_are_accepted_in_order() {
        let s = signer(1);
        let (records, tree) = history(30, 0);
        let mut f = Follower::new(log_of(&s), Limits::default(), 0, None);
        for r in &records[..10] {
            f.record(r).unwrap();
        }
        let a = f
            .checkpoint(note(&s, &tree, 10).as_bytes(), 0, &[])
            .unwrap();
        assert!(a.records_checked);
        assert_eq!(f.last_checkpoint().unwrap().size, 10);
        for r in &records[10..30] {
            f.record(r).unwrap();
        }
        let proof = tree.consistency_proof(10, 30).unwrap();
        let a = f
            .checkpoint(note(&s, &tree, 30).as_bytes(), 10, &proof)
            .unwrap();
        assert!(a.records_checked);
        assert_eq!(f.next_seq(), 30);
        // A witness cosigns what it accepted.
        let w = Cosigner::new("witness.example/w1", &[9; 32]).unwrap();
        let cosigned = a.cosign(&w, 1_700_000_000).unwrap();
        let verified = Note::parse(cosigned.as_bytes())
            .unwrap()
            .verify(&[s.verifier(), w.verifier()])
            .unwrap();
        assert_eq!(verified.verified.len(), 2);
    }

    #[test]
    fn what_does_not_extend_is_refused_and_says_why() {
        let s = signer(1);
        let (records, tree) = history(20, 0);
        let (_, other) = history(20, 1_000);
        let mut f = Follower::new(log_of(&s), Limits::default(), 0, None);
        for r in &records[..10] {
            f.record(r).unwrap();
        }
        // A root other than the records'.
        let e = f
            .checkpoint(note(&s, &other, 10).as_bytes(), 0, &[])
            .unwrap_err();
        assert!(
            matches!(e, FollowError::RootMismatch { size: 10, .. }),
            "{e}"
        );
        assert!(f.last_checkpoint().is_none(), "state unchanged");
        f.checkpoint(note(&s, &tree, 10).as_bytes(), 0, &[])
            .unwrap();
        for r in &records[10..] {
            f.record(r).unwrap();
        }
        // Signed by another key.
        let e = f
            .checkpoint(
                note(&signer(2), &tree, 20).as_bytes(),
                10,
                &tree.consistency_proof(10, 20).unwrap(),
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                FollowError::Checkpoint {
                    size: 20,
                    source: WitnessRefusal::SignatureInvalid(_)
                }
            ),
            "{e}"
        );
        // A rewritten history: no proof leads from the accepted root.
        let e = f
            .checkpoint(
                note(&s, &other, 20).as_bytes(),
                10,
                &other.consistency_proof(10, 20).unwrap(),
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                FollowError::Checkpoint {
                    source: WitnessRefusal::ProofInvalid(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("consistency proof"), "{e}");
        // A proof from somewhere else.
        let e = f
            .checkpoint(
                note(&s, &tree, 20).as_bytes(),
                5,
                &tree.consistency_proof(5, 20).unwrap(),
            )
            .unwrap_err();
        assert_eq!(
            e,
            FollowError::ProofFrom {
                size: 20,
                found: 5,
                expected: 10
            }
        );
        // A smaller tree.
        let e = f
            .checkpoint(note(&s, &tree, 5).as_bytes(), 10, &[])
            .unwrap_err();
        assert!(
            matches!(
                e,
                FollowError::Checkpoint {
                    source: WitnessRefusal::TreeShrank { old: 10, new: 5 },
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(f.last_checkpoint().unwrap().size, 10);
        // A record out of order, then a foreign one.
        let e = f.record(&records[3]).unwrap_err();
        assert!(matches!(e, FollowError::Record { seq: 20, .. }), "{e}");
    }

    #[test]
    fn following_from_the_middle_trusts_the_first_link_and_checks_the_rest() {
        let s = signer(1);
        let (records, tree) = history(20, 0);
        let last = TreeHead {
            size: 10,
            root: tree.root_at(10).unwrap(),
        };
        let mut f = Follower::new(log_of(&s), Limits::default(), 12, Some(last));
        let e = f.record(&records[13]).unwrap_err();
        assert!(matches!(e, FollowError::Record { seq: 12, .. }), "{e}");
        for r in &records[12..20] {
            f.record(r).unwrap();
        }
        let a = f
            .checkpoint(
                note(&s, &tree, 20).as_bytes(),
                10,
                &tree.consistency_proof(10, 20).unwrap(),
            )
            .unwrap();
        assert!(!a.records_checked, "no root held from the middle");
        let head = ChainHead {
            next_seq: 20,
            last_hash: *Record::decode(&records[19], &Limits::default())
                .unwrap()
                .hash(),
        };
        let mut r = Follower::resume(log_of(&s), Limits::default(), head, f.last_checkpoint());
        assert_eq!(r.next_seq(), 20);
        let e = r.record(&records[19]).unwrap_err();
        assert!(matches!(e, FollowError::Record { seq: 20, .. }), "{e}");
        let _ = NoteVerifier::parse(&s.verifier().to_vkey()).unwrap();
    }
}
