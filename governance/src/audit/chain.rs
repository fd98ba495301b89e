//! The chain rule: appending records, and verifying a sequence of them.
//!
//! Record *i* has sequence number *i*, `prev_hash` equal to the hash of
//! record *i − 1* ([`super::GENESIS_PREV_HASH`] for record 0), and
//! `hash = BLAKE3(prev_hash ‖ canonical encoding)`.
//!
//! Verification checks each record in order and stops at the first bad one:
//! undecodable, then its own hash, then its sequence number, then its link
//! to the record before. A chain verified from genesis also yields its
//! Merkle root, so it can be checked against a checkpoint held elsewhere:
//! that is what detects a cut tail or a history rewritten from some point on
//! with freshly computed hashes, which no hash chain alone can.

use mxp_protocol::DecodeError;

use super::merkle::{CompactRange, EMPTY_ROOT, TreeHead};
use super::record::{Limits, Record};
use super::{AuditEvent, GENESIS_PREV_HASH, Hash};

/// Where a chain stands: the next sequence number and the last hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHead {
    /// The sequence number the next record gets (= records so far).
    pub next_seq: u64,
    /// The hash of the last record ([`GENESIS_PREV_HASH`] if none).
    pub last_hash: Hash,
}

impl ChainHead {
    /// The head of the empty chain.
    pub const GENESIS: ChainHead = ChainHead {
        next_seq: 0,
        last_hash: GENESIS_PREV_HASH,
    };
}

/// The sequence numbers are exhausted (2^64 records): nothing more can be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain has used every sequence number")]
#[non_exhaustive]
pub struct SequenceExhausted;

/// Why an event cannot be appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// No sequence numbers left.
    #[error(transparent)]
    Exhausted(#[from] SequenceExhausted),
    /// The event is over a [`Limits`] bound, so its record would not decode.
    #[error("the event is over the record limits: {0}")]
    OverLimit(DecodeError),
}

/// The pure append state of an audit log.
#[derive(Debug, Clone)]
pub struct Chain {
    head: ChainHead,
    limits: Limits,
}

impl Default for Chain {
    fn default() -> Chain {
        Chain::new()
    }
}

impl Chain {
    /// A new, empty chain with the default [`Limits`].
    pub fn new() -> Chain {
        Chain::resume(ChainHead::GENESIS, Limits::default())
    }

    /// A chain that continues from `head` (read back from the store).
    pub fn resume(head: ChainHead, limits: Limits) -> Chain {
        Chain { head, limits }
    }

    /// Where it stands.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// Appends `event`, overwriting its sequence number with the next one,
    /// and returns its record.
    ///
    /// # Errors
    /// [`AppendError::OverLimit`] if the event breaks the chain's
    /// [`Limits`]; [`AppendError::Exhausted`] after 2^64 records.
    pub fn append(&mut self, mut event: AuditEvent) -> Result<Record, AppendError> {
        self.limits.check(&event).map_err(AppendError::OverLimit)?;
        let next = self.head.next_seq.checked_add(1).ok_or(SequenceExhausted)?;
        event.seq = self.head.next_seq;
        let record = Record::new(event, self.head.last_hash);
        self.head = ChainHead {
            next_seq: next,
            last_hash: *record.hash(),
        };
        Ok(record)
    }
}

/// Why a sequence of records does not verify. `index` is the position in
/// the sequence given (0 = the first record given), and is the first
/// position at which the sequence is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The bytes are not a record.
    #[error("record {index} does not decode: {source}")]
    Undecodable {
        /// Position.
        index: u64,
        /// Why.
        source: DecodeError,
    },
    /// The record's hash is not `BLAKE3(prev_hash ‖ encoding)`: the record
    /// was altered.
    #[error("record {index} (seq {seq}) carries a hash that does not match its contents")]
    BadHash {
        /// Position.
        index: u64,
        /// The sequence number it claims.
        seq: u64,
    },
    /// The sequence number skips ahead: records are missing (deleted, or
    /// moved later).
    #[error("record {index}: expected seq {expected}, found {found} (records missing)")]
    SeqGap {
        /// Position.
        index: u64,
        /// The sequence number due.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The sequence number goes back: a duplicate or a reordering.
    #[error("record {index}: expected seq {expected}, found {found} (duplicate or out of order)")]
    SeqOutOfOrder {
        /// Position.
        index: u64,
        /// The sequence number due.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The record's `prev_hash` is not the previous record's hash: the
    /// record belongs to another history.
    #[error("record {index} (seq {seq}) does not link to the record before it")]
    PrevMismatch {
        /// Position.
        index: u64,
        /// Its sequence number.
        seq: u64,
    },
    /// Fewer records than the trusted checkpoint covers: the tail was cut.
    #[error("the log holds {have} records but a trusted checkpoint covers {checkpoint_size}")]
    Truncated {
        /// Records verified.
        have: u64,
        /// The checkpoint's tree size.
        checkpoint_size: u64,
    },
    /// The first `size` records do not have the trusted checkpoint's root:
    /// history was rewritten.
    #[error("the first {size} records do not hash to the trusted checkpoint's root")]
    RootMismatch {
        /// The checkpoint's tree size.
        size: u64,
    },
}

impl ChainError {
    /// The position of the first bad record, if the error is about one.
    pub fn index(&self) -> Option<u64> {
        match self {
            ChainError::Undecodable { index, .. }
            | ChainError::BadHash { index, .. }
            | ChainError::SeqGap { index, .. }
            | ChainError::SeqOutOfOrder { index, .. }
            | ChainError::PrevMismatch { index, .. } => Some(*index),
            ChainError::Truncated { .. } | ChainError::RootMismatch { .. } => None,
        }
    }
}

/// What a successful verification covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedRange {
    /// Where verification started.
    pub start: ChainHead,
    /// Where it ended (the head after the last record).
    pub end: ChainHead,
    /// The Merkle tree head of all records from genesis to `end`, if
    /// verification started at genesis.
    pub tree: Option<TreeHead>,
}

impl VerifiedRange {
    /// Number of records verified.
    pub fn count(&self) -> u64 {
        self.end.next_seq - self.start.next_seq
    }
}

/// Verifies records one at a time, as a live receiver gets them.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    start: ChainHead,
    head: ChainHead,
    index: u64,
    limits: Limits,
    /// Present when verification started at genesis.
    tree: Option<CompactRange>,
    /// The root at a trusted checkpoint's size, once reached.
    checkpoint: Option<(TreeHead, Option<Hash>)>,
}

impl ChainVerifier {
    /// A verifier for a log from its first record.
    pub fn from_genesis(limits: Limits) -> ChainVerifier {
        ChainVerifier {
            start: ChainHead::GENESIS,
            head: ChainHead::GENESIS,
            index: 0,
            limits,
            tree: Some(CompactRange::default()),
            checkpoint: None,
        }
    }

    /// A verifier for records that continue from `head` (no Merkle root:
    /// that needs every leaf from genesis).
    pub fn from_head(head: ChainHead, limits: Limits) -> ChainVerifier {
        if head == ChainHead::GENESIS {
            return ChainVerifier::from_genesis(limits);
        }
        ChainVerifier {
            start: head,
            head,
            index: 0,
            limits,
            tree: None,
            checkpoint: None,
        }
    }

    /// Also check the records against `trusted` when [`ChainVerifier::finish`]
    /// is called. Only meaningful from genesis; from another head `finish`
    /// reports [`ChainError::RootMismatch`] as it cannot compute the root.
    #[must_use]
    pub fn against(mut self, trusted: TreeHead) -> ChainVerifier {
        let root = (trusted.size == 0).then_some(EMPTY_ROOT);
        self.checkpoint = Some((trusted, root));
        self
    }

    /// Where it stands.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// The Merkle tree head of every record verified so far, when
    /// verification started at genesis (`None` otherwise: the root needs
    /// every leaf from the first record).
    pub fn tree_head(&self) -> Option<TreeHead> {
        self.tree.as_ref().map(|t| TreeHead {
            size: self.head.next_seq,
            root: t.root(),
        })
    }

    /// Checks the next record's bytes, returning the decoded record.
    ///
    /// # Errors
    /// The first problem with this record. After an error the verifier
    /// stays where it was; the caller should stop.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Record, ChainError> {
        let record =
            Record::decode(bytes, &self.limits).map_err(|source| ChainError::Undecodable {
                index: self.index,
                source,
            })?;
        self.push_record(record)
    }

    /// Checks the next decoded record.
    ///
    /// # Errors
    /// As [`ChainVerifier::push`], without [`ChainError::Undecodable`].
    pub fn push_record(&mut self, record: Record) -> Result<Record, ChainError> {
        let index = self.index;
        let seq = record.seq();
        if !record.hash_is_valid() {
            return Err(ChainError::BadHash { index, seq });
        }
        let expected = self.head.next_seq;
        if seq > expected {
            return Err(ChainError::SeqGap {
                index,
                expected,
                found: seq,
            });
        }
        if seq < expected {
            return Err(ChainError::SeqOutOfOrder {
                index,
                expected,
                found: seq,
            });
        }
        if *record.prev_hash() != self.head.last_hash {
            return Err(ChainError::PrevMismatch { index, seq });
        }
        let next_seq = seq.checked_add(1).ok_or(ChainError::SeqGap {
            index,
            expected,
            found: seq,
        })?;
        self.head = ChainHead {
            next_seq,
            last_hash: *record.hash(),
        };
        self.index += 1;
        if let Some(tree) = self.tree.as_mut() {
            tree.append(record.leaf_hash());
            if let Some((trusted, root @ None)) = self.checkpoint.as_mut()
                && trusted.size == next_seq
            {
                *root = Some(tree.root());
            }
        }
        Ok(record)
    }

    /// Ends verification.
    ///
    /// # Errors
    /// With a trusted checkpoint: [`ChainError::Truncated`] if fewer records
    /// came than it covers, [`ChainError::RootMismatch`] if their root differs.
    pub fn finish(self) -> Result<VerifiedRange, ChainError> {
        let tree = self.tree.as_ref().map(|t| TreeHead {
            size: self.head.next_seq,
            root: t.root(),
        });
        if let Some((trusted, root)) = self.checkpoint {
            if self.head.next_seq < trusted.size {
                return Err(ChainError::Truncated {
                    have: self.head.next_seq,
                    checkpoint_size: trusted.size,
                });
            }
            if root != Some(trusted.root) {
                return Err(ChainError::RootMismatch { size: trusted.size });
            }
        }
        Ok(VerifiedRange {
            start: self.start,
            end: self.head,
            tree,
        })
    }
}

/// Verifies a whole log from genesis: every record's hash, sequence number
/// and link, in order, and its Merkle root.
///
/// # Errors
/// The first bad record's [`ChainError`].
pub fn verify<I>(records: I, limits: &Limits) -> Result<VerifiedRange, ChainError>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut v = ChainVerifier::from_genesis(*limits);
    for bytes in records {
        v.push(bytes.as_ref())?;
    }
    v.finish()
}

/// As [`verify`], and checks the log against a checkpoint held elsewhere: it
/// must hold at least `trusted.size` records and the first `trusted.size` must
/// have `trusted.root`.
///
/// # Errors
/// The first bad record's [`ChainError`], then [`ChainError::Truncated`] or
/// [`ChainError::RootMismatch`].
pub fn verify_against<I>(
    records: I,
    limits: &Limits,
    trusted: &TreeHead,
) -> Result<VerifiedRange, ChainError>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut v = ChainVerifier::from_genesis(*limits).against(*trusted);
    for bytes in records {
        v.push(bytes.as_ref())?;
    }
    v.finish()
}
