//! The pure decision of a witness (a remote governance agent that cosigns
//! the node's checkpoints).
//!
//! Given the last checkpoint it accepted for a log and a new signed
//! checkpoint with a consistency proof, a witness cosigns only if the new
//! checkpoint is signed by the log's key, names the log's origin, and
//! consistently extends the last one (RFC 6962 consistency proof). A node
//! that rewrote its history cannot produce such a proof, so it cannot get a
//! cosignature for the rewrite: clients that require a witness's
//! cosignature never see the rewritten view.

use super::Hash;
use super::checkpoint::{Checkpoint, CheckpointError};
use super::merkle::{self, MerkleError, TreeHead};
use super::note::{Cosigner, Note, NoteError, NoteSignature, NoteVerifier};

/// The log a witness follows: its origin line and its checkpoint keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogIdentity {
    /// The checkpoint origin line.
    pub origin: String,
    /// The log's Ed25519 note keys (type `0x01`).
    pub verifiers: Vec<NoteVerifier>,
}

/// Why a witness refuses to cosign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessRefusal {
    /// The note does not parse.
    #[error("malformed note: {0}")]
    MalformedNote(NoteError),
    /// The log's signature is missing or does not verify.
    #[error("the log's signature is invalid: {0}")]
    SignatureInvalid(NoteError),
    /// The note text is not a checkpoint.
    #[error("not a checkpoint: {0}")]
    NotACheckpoint(CheckpointError),
    /// The checkpoint names another log.
    #[error("checkpoint origin {found:?} is not the log's origin {expected:?}")]
    WrongOrigin {
        /// The log's origin.
        expected: String,
        /// The checkpoint's.
        found: String,
    },
    /// The tree is smaller than the last accepted one.
    #[error("the tree shrank from {old} to {new} leaves")]
    TreeShrank {
        /// Last accepted size.
        old: u64,
        /// New size.
        new: u64,
    },
    /// Same size as the last accepted checkpoint, different root: a fork.
    #[error("same tree size {size} as the last accepted checkpoint, different root")]
    SameSizeDifferentRoot {
        /// The size.
        size: u64,
    },
    /// The consistency proof does not prove the new tree extends the old.
    #[error("the consistency proof is invalid: {0}")]
    ProofInvalid(MerkleError),
    /// The cosignature could not be made (time above 2^63 − 1).
    #[error("cannot cosign: {0}")]
    Cosign(NoteError),
}

/// An accepted checkpoint and the witness's cosignature of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The cosignature (type `0x04`).
    pub signature: NoteSignature,
    /// The note as received with the cosignature line appended.
    pub note: String,
}

/// A checkpoint that verified: signed by the log's key, for its origin, and
/// consistent with the last tree head accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The note as parsed (its signatures, the log's and any others).
    pub note: Note,
}

/// Checks `note` against `log` and the `last` tree head accepted for it
/// (`None`: trusted on first use), with a consistency `proof` from `last`:
/// the checks a witness makes before cosigning, in the order
/// docs/AUDIT.md gives. A follower that does not cosign makes the same.
///
/// # Errors
/// The [`WitnessRefusal`] that names why.
pub fn verify_checkpoint(
    log: &LogIdentity,
    last: Option<&TreeHead>,
    note: &[u8],
    proof: &[Hash],
) -> Result<VerifiedCheckpoint, WitnessRefusal> {
    let parsed = Note::parse(note).map_err(WitnessRefusal::MalformedNote)?;
    parsed
        .verify(&log.verifiers)
        .map_err(WitnessRefusal::SignatureInvalid)?;
    let checkpoint = Checkpoint::parse(parsed.text()).map_err(WitnessRefusal::NotACheckpoint)?;
    if checkpoint.origin != log.origin {
        return Err(WitnessRefusal::WrongOrigin {
            expected: log.origin.clone(),
            found: checkpoint.origin,
        });
    }
    let new = checkpoint.tree;
    if let Some(old) = last {
        if new.size < old.size {
            return Err(WitnessRefusal::TreeShrank {
                old: old.size,
                new: new.size,
            });
        }
        if new.size == old.size && new.root != old.root {
            return Err(WitnessRefusal::SameSizeDifferentRoot { size: new.size });
        }
        if old.size == 0 {
            // Every tree extends the empty tree: there is nothing to prove.
            if !proof.is_empty() {
                return Err(WitnessRefusal::ProofInvalid(
                    MerkleError::WrongProofLength { len: proof.len() },
                ));
            }
        } else {
            merkle::verify_consistency(old, &new, proof).map_err(WitnessRefusal::ProofInvalid)?;
        }
    }
    Ok(VerifiedCheckpoint {
        checkpoint,
        note: parsed,
    })
}

/// Decides whether to cosign `note`, given the `last` tree head this witness
/// accepted for `log` (`None` on first contact: the first checkpoint is
/// trusted on first use) and a consistency `proof` from it.
///
/// # Errors
/// The [`WitnessRefusal`] that names why.
pub fn witness_checkpoint(
    log: &LogIdentity,
    last: Option<&TreeHead>,
    note: &[u8],
    proof: &[Hash],
    cosigner: &Cosigner,
    time: u64,
) -> Result<Cosigned, WitnessRefusal> {
    let VerifiedCheckpoint {
        checkpoint,
        note: mut parsed,
    } = verify_checkpoint(log, last, note, proof)?;
    let signature = cosigner
        .cosign(parsed.text(), time)
        .map_err(WitnessRefusal::Cosign)?;
    parsed.push_signature(signature.clone());
    Ok(Cosigned {
        checkpoint,
        signature,
        note: parsed.encode(),
    })
}

/// A witness's state for one log: what it last accepted.
#[derive(Debug, Clone)]
pub struct Witness {
    log: LogIdentity,
    cosigner: Cosigner,
    last: Option<TreeHead>,
}

impl Witness {
    /// A witness of `log` that last accepted `last` (`None`: never).
    pub fn new(log: LogIdentity, cosigner: Cosigner, last: Option<TreeHead>) -> Witness {
        Witness {
            log,
            cosigner,
            last,
        }
    }

    /// The last accepted tree head.
    pub fn last(&self) -> Option<&TreeHead> {
        self.last.as_ref()
    }

    /// [`witness_checkpoint`], remembering the tree head if accepted.
    ///
    /// # Errors
    /// As [`witness_checkpoint`]; the state is unchanged.
    pub fn observe(
        &mut self,
        note: &[u8],
        proof: &[Hash],
        time: u64,
    ) -> Result<Cosigned, WitnessRefusal> {
        let cosigned = witness_checkpoint(
            &self.log,
            self.last.as_ref(),
            note,
            proof,
            &self.cosigner,
            time,
        )?;
        self.last = Some(cosigned.checkpoint.tree);
        Ok(cosigned)
    }
}
