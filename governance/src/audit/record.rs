//! Records: an event, the hash of the record before it, and its own chain
//! hash, in the binary form the store keeps and MXP Event frames carry.
//!
//! ```text
//! record = canonical event encoding   (see super::event)
//!        ‖ prev_hash  (32 bytes)
//!        ‖ hash       (32 bytes) = BLAKE3(prev_hash ‖ canonical event encoding)
//! ```
//!
//! The canonical encoding is self-delimiting (fixed fields, each framed), so
//! the record needs no outer length. Decoding goes through
//! [`mxp_protocol::cursor::Reader`]: every declared length is checked against
//! [`Limits`] before anything is taken or allocated, and trailing bytes are
//! refused.

use mxp_protocol::DecodeError;
use mxp_protocol::cursor::Reader;

use super::Hash;
use super::event::{AuditEvent, EventKind, MAX_POLICY_ID_LEN};
use super::merkle;

/// Bounds on what a decoded (or appended) record may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest canonical JSON data, in bytes (default 64 KiB).
    pub max_data_bytes: usize,
    /// Longest recorded tool output, in bytes (default 256 KiB).
    pub max_output_bytes: usize,
    /// Most policy ids in one policy decision (default 64).
    pub max_policy_ids: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_data_bytes: 64 * 1024,
            max_output_bytes: 256 * 1024,
            max_policy_ids: 64,
        }
    }
}

impl Limits {
    /// Checks that `event` is within these limits, so that it encodes to a
    /// record that decodes back to the same event.
    ///
    /// # Errors
    /// [`DecodeError::LimitExceeded`] naming the field.
    pub fn check(&self, event: &AuditEvent) -> Result<(), DecodeError> {
        let over = |field: &'static str, len: usize, limit: usize| {
            if len > limit {
                Err(DecodeError::LimitExceeded { field, len, limit })
            } else {
                Ok(())
            }
        };
        over(
            "audit data",
            event.data.as_bytes().len(),
            self.max_data_bytes,
        )?;
        match &event.kind {
            EventKind::PolicyDecision { policy_ids, .. } => {
                over("audit policy ids", policy_ids.len(), self.max_policy_ids)?;
                for id in policy_ids {
                    over("audit policy id", id.len(), MAX_POLICY_ID_LEN)?;
                }
            }
            EventKind::ToolExecution {
                output: super::RecordedOutput::Recorded(bytes),
                ..
            } => over("audit tool output", bytes.len(), self.max_output_bytes)?,
            _ => {}
        }
        Ok(())
    }
}

/// An event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    event: AuditEvent,
    prev_hash: Hash,
    hash: Hash,
}

impl Record {
    /// The record of `event` after the record whose hash is `prev_hash`.
    pub fn new(event: AuditEvent, prev_hash: Hash) -> Record {
        let hash = event.chain_hash(&prev_hash);
        Record {
            event,
            prev_hash,
            hash,
        }
    }

    /// The event.
    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        self.event.seq
    }

    /// The hash of the record before it ([`super::GENESIS_PREV_HASH`] for seq 0).
    pub fn prev_hash(&self) -> &Hash {
        &self.prev_hash
    }

    /// The chain hash it carries.
    pub fn hash(&self) -> &Hash {
        &self.hash
    }

    /// Whether the carried hash is `BLAKE3(prev_hash ‖ canonical encoding)`.
    /// A decoded record may fail this; [`super::verify`] reports it as
    /// [`super::ChainError::BadHash`].
    pub fn hash_is_valid(&self) -> bool {
        self.event.chain_hash(&self.prev_hash) == self.hash
    }

    /// Its Merkle leaf hash: `SHA-256(0x00 ‖ chain hash)`. The leaf *data* of
    /// record *i* is its 32-byte chain hash, which commits to the event and,
    /// through `prev_hash`, to every record before it.
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.hash)
    }

    /// The binary record (the module documentation gives the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.event.canonical_encoding();
        out.reserve(64);
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&self.hash);
        out
    }

    /// Decodes a binary record. The hash is read, not checked: see
    /// [`Record::hash_is_valid`].
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field: truncated, over a limit, an
    /// unknown tag, invalid UTF-8 or JSON, non-canonical data, trailing bytes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Record, DecodeError> {
        let mut r = Reader::new(bytes, "audit record");
        let event = AuditEvent::decode_from(&mut r, limits)?;
        let prev_hash = r.array::<32>()?;
        let hash = r.array::<32>()?;
        r.finish()?;
        Ok(Record {
            event,
            prev_hash,
            hash,
        })
    }
}
