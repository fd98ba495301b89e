//! The hash-chained audit log: events, their canonical encoding, the chain
//! rule and its verification, RFC 6962 Merkle proofs, C2SP signed
//! checkpoints and witness cosignatures.
//!
//! Everything here is pure: no I/O, no clock (times are inputs), no
//! randomness (keys are inputs). docs/AUDIT.md describes the formats byte
//! for byte; the summary:
//!
//! * [`event`]: an [`AuditEvent`] (sequence number, time, trace id, session,
//!   principal, [`EventKind`], canonical JSON [`EventData`]) and its
//!   length-prefixed, domain-separated canonical encoding.
//! * [`record`]: a [`Record`] is an event with the hash of the record before
//!   it and its own chain hash `BLAKE3(prev_hash ‖ encoding)`; records are
//!   encoded and decoded (through the bounds-checked cursor, limits checked
//!   before allocating) for the store and for MXP Event frames.
//! * [`chain`]: [`Chain`], the append state (next sequence number, last
//!   hash), and [`verify`] / [`ChainVerifier`], which name the first bad
//!   record and why, optionally against a trusted [`TreeHead`].
//! * [`merkle`]: RFC 6962 / RFC 9162 tree hashes, inclusion and consistency
//!   proofs, and [`MerkleLog`], an append-only tree that answers for any
//!   earlier size. The leaf of record *i* is its 32-byte chain hash.
//! * [`note`]: C2SP `signed-note` parsing, signing and verification, with
//!   Ed25519 (type `0x01`) and timestamped cosignature (type `0x04`) keys.
//! * [`checkpoint`]: C2SP `tlog-checkpoint` bodies.
//! * [`witness`]: the pure decision of a witness: cosign a checkpoint that
//!   consistently extends the last one it accepted, or refuse and say why.
//! * [`chunked`]: [`ChunkedLog`], the Merkle tree a node keeps for a log of
//!   any size: chunk hashes in memory, chunk leaves read when a proof needs
//!   them.
//! * [`follow`]: [`Follower`], what a live subscriber checks as records and
//!   checkpoints arrive.
//! * [`cosign`]: the node's side of witnessing: which cosignatures of its
//!   checkpoints it takes.

pub mod chain;
pub mod checkpoint;
pub mod chunked;
pub mod cosign;
pub mod event;
pub mod follow;
pub mod merkle;
pub mod note;
pub mod record;
pub mod witness;

pub use chain::{
    AppendError, Chain, ChainError, ChainHead, ChainVerifier, SequenceExhausted, VerifiedRange,
    verify, verify_against,
};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointSchedule};
pub use chunked::{CHUNK_LEAVES, ChunkLeaves, ChunkedLog, NoChunks};
pub use cosign::{CosignOutcome, CosignRefusal, accept_cosignatures};
pub use event::{
    AuditEvent, CallAnswer, EventData, EventDataError, EventKind, KindTag, PolicyEffect,
    RecordedOutput, ToolOutcome,
};
pub use follow::{Accepted, FollowError, Follower};
pub use merkle::{EMPTY_ROOT, MerkleError, MerkleLog, TreeHead};
pub use note::{
    Cosigner, Note, NoteError, NoteSignature, NoteSigner, NoteVerifier, SignatureType,
    VerifiedNote, VerifiedSignature,
};
pub use record::{Limits, Record};
pub use witness::{
    Cosigned, LogIdentity, VerifiedCheckpoint, Witness, WitnessRefusal, verify_checkpoint,
    witness_checkpoint,
};

/// A 32-byte digest: a BLAKE3 chain hash or a SHA-256 Merkle hash.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first record (sequence number 0): 32 zero bytes.
pub const GENESIS_PREV_HASH: Hash = [0u8; 32];

/// A 32-byte hash in lowercase hex.
pub fn hex32(h: &Hash) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(64);
    for b in h {
        let _ = write!(s, "{b:02x}");
    }
    s
}
