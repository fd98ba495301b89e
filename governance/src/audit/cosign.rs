//! The node's side of witnessing: taking a witness's cosignature of a
//! checkpoint the node issued (docs/AUDIT.md, "Witnesses").
//!
//! A note sent back by a witness is accepted only if its text is exactly
//! the text of a checkpoint the node signed (the caller finds that one by
//! the size the note names), every signature line on it is the node's own
//! or a configured witness's valid cosignature (a line by any other key is
//! refused, naming the key), and at least one such cosignature is there.
//! The cosignatures new to the stored note are appended to it.
//!
//! Pure: the stored note and the configured keys are inputs.

use super::checkpoint::Checkpoint;
use super::note::{Note, NoteError, NoteVerifier, SignatureType};

/// Why a cosigned note is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosignRefusal {
    /// The note does not parse.
    #[error("malformed note: {0}")]
    MalformedNote(NoteError),
    /// The note's text is not a checkpoint.
    #[error("the note is not a checkpoint: {0}")]
    NotACheckpoint(super::CheckpointError),
    /// The node issued no checkpoint with this text (another size, root or
    /// origin: for a rewritten history, say).
    #[error("this node issued no checkpoint of size {size} with this origin and root")]
    NotIssued {
        /// The size the note names.
        size: u64,
    },
    /// A signature line by a key that is neither the node's nor a
    /// configured witness's (`audit.witnesses`).
    #[error(
        "the note is signed by {name} (key ID {key_id:08x}), which is not a witness of this node (audit.witnesses)"
    )]
    UnknownWitness {
        /// The key name.
        name: String,
        /// Its key ID.
        key_id: u32,
    },
    /// A configured witness's cosignature does not verify over the text.
    #[error("the cosignature by {name} does not verify")]
    BadCosignature {
        /// The witness's key name.
        name: String,
    },
    /// No cosignature by a configured witness.
    #[error("the note carries no cosignature by a witness of this node")]
    NoCosignature,
}

/// What taking a cosigned note gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignOutcome {
    /// The stored note with the new cosignatures appended.
    pub note: String,
    /// The witnesses whose cosignatures were new.
    pub added: Vec<String>,
    /// Every witness that has cosigned the checkpoint now.
    pub cosigned_by: Vec<String>,
}

/// The size a submitted note names, to find the stored checkpoint by.
///
/// # Errors
/// [`CosignRefusal::MalformedNote`] or [`CosignRefusal::NotACheckpoint`].
pub fn claimed_size(submitted: &[u8]) -> Result<u64, CosignRefusal> {
    let note = Note::parse(submitted).map_err(CosignRefusal::MalformedNote)?;
    let cp = Checkpoint::parse(note.text()).map_err(CosignRefusal::NotACheckpoint)?;
    Ok(cp.tree.size)
}

/// Takes the cosignatures of `submitted` for the checkpoint the node stored
/// as `stored` (its signed note, perhaps cosigned already), signed with
/// `node`; `witnesses` are the configured cosigner keys (type `0x04`).
///
/// # Errors
/// The [`CosignRefusal`] that names what is wrong; nothing is taken then.
pub fn accept_cosignatures(
    stored: &str,
    submitted: &[u8],
    node: &NoteVerifier,
    witnesses: &[NoteVerifier],
) -> Result<CosignOutcome, CosignRefusal> {
    let note = Note::parse(submitted).map_err(CosignRefusal::MalformedNote)?;
    let cp = Checkpoint::parse(note.text()).map_err(CosignRefusal::NotACheckpoint)?;
    let mut kept = Note::parse(stored.as_bytes()).map_err(CosignRefusal::MalformedNote)?;
    if kept.text() != note.text() {
        return Err(CosignRefusal::NotIssued { size: cp.tree.size });
    }
    let mut fresh = Vec::new();
    let mut any = false;
    for sig in note.signatures() {
        if sig.name == node.name() && sig.key_id == node.key_id() {
            continue;
        }
        let Some(w) = witnesses.iter().find(|w| {
            w.name() == sig.name
                && w.key_id() == sig.key_id
                && w.signature_type() == SignatureType::Cosignature
        }) else {
            return Err(CosignRefusal::UnknownWitness {
                name: sig.name.clone(),
                key_id: sig.key_id,
            });
        };
        if !w.verifies(note.text(), sig) {
            return Err(CosignRefusal::BadCosignature {
                name: sig.name.clone(),
            });
        }
        any = true;
        let known = kept
            .signatures()
            .iter()
            .chain(&fresh)
            .any(|k| k.name == sig.name && k.key_id == sig.key_id);
        if !known {
            fresh.push(sig.clone());
        }
    }
    if !any {
        return Err(CosignRefusal::NoCosignature);
    }
    let added = fresh.iter().map(|s| s.name.clone()).collect();
    for sig in fresh {
        kept.push_signature(sig);
    }
    let cosigned_by = cosigners(&kept, node);
    Ok(CosignOutcome {
        note: kept.encode(),
        added,
        cosigned_by,
    })
}

/// The names of the keys other than the node's that signed `note`.
pub fn cosigners(note: &Note, node: &NoteVerifier) -> Vec<String> {
    note.signatures()
        .iter()
        .filter(|s| !(s.name == node.name() && s.key_id == node.key_id()))
        .map(|s| s.name.clone())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::merkle::TreeHead;
    use super::super::note::{Cosigner, NoteSigner};
    use super::*;

    fn setup() -> (NoteSigner, Cosigner, Cosigner, String) {
        let node = NoteSigner::new("n.example/audit", &[1; 32]).unwrap();
        let w1 = Cosigner::new("w1.example", &[2; 32]).unwrap();
        let w2 = Cosigner::new("w2.example", &[3; 32]).unwrap();
        let note = Checkpoint::new(
            "n.example/audit",
            TreeHead {
                size: 5,
                root: [7; 32],
            },
        )
        .sign(&node)
        .unwrap();
        (node, w1, w2, note)
    }

    fn cosigned(note: &str, w: &Cosigner) -> String {
        let mut n = Note::parse(note.as_bytes()).unwrap();
        n.push_signature(w.cosign(n.text(), 1_700_000_000).unwrap());
        n.encode()
    }

    #[test]
    fn a_configured_witness_cosignature_is_kept_once() {
        let (node, w1, w2, stored) = setup();
        let ws = [w1.verifier(), w2.verifier()];
        let one = accept_cosignatures(
            &stored,
            cosigned(&stored, &w1).as_bytes(),
            &node.verifier(),
            &ws,
        )
        .unwrap();
        assert_eq!(one.added, vec!["w1.example".to_owned()]);
        // Again: nothing new; then the second witness.
        let again = accept_cosignatures(
            &one.note,
            cosigned(&stored, &w1).as_bytes(),
            &node.verifier(),
            &ws,
        )
        .unwrap();
        assert!(again.added.is_empty());
        assert_eq!(again.note, one.note);
        let two = accept_cosignatures(
            &one.note,
            cosigned(&stored, &w2).as_bytes(),
            &node.verifier(),
            &ws,
        )
        .unwrap();
        assert_eq!(two.cosigned_by, vec!["w1.example", "w2.example"]);
        let v = Note::parse(two.note.as_bytes())
            .unwrap()
            .verify(&[node.verifier(), w1.verifier(), w2.verifier()])
            .unwrap();
        assert_eq!(v.verified.len(), 3);
    }

    #[test]
    fn forged_unknown_and_foreign_cosignatures_are_refused_by_name() {
        let (node, w1, w2, stored) = setup();
        let ws = [w1.verifier()];
        // A witness that is not configured.
        let e = accept_cosignatures(
            &stored,
            cosigned(&stored, &w2).as_bytes(),
            &node.verifier(),
            &ws,
        )
        .unwrap_err();
        assert!(
            matches!(&e, CosignRefusal::UnknownWitness { name, .. } if name == "w2.example"),
            "{e}"
        );
        assert!(e.to_string().contains("audit.witnesses"), "{e}");
        // A forged cosignature under the configured witness's name and key ID.
        let forger = Cosigner::new("w1.example", &[9; 32]).unwrap();
        let mut forged = Note::parse(stored.as_bytes()).unwrap();
        let mut sig = forger.cosign(forged.text(), 1).unwrap();
        sig.key_id = w1.verifier().key_id();
        forged.push_signature(sig);
        let e = accept_cosignatures(&stored, forged.encode().as_bytes(), &node.verifier(), &ws)
            .unwrap_err();
        assert_eq!(
            e,
            CosignRefusal::BadCosignature {
                name: "w1.example".into()
            }
        );
        // A checkpoint the node did not issue (another root).
        let other = Checkpoint::new(
            "n.example/audit",
            TreeHead {
                size: 5,
                root: [8; 32],
            },
        )
        .sign(&node)
        .unwrap();
        let e = accept_cosignatures(
            &stored,
            cosigned(&other, &w1).as_bytes(),
            &node.verifier(),
            &ws,
        )
        .unwrap_err();
        assert_eq!(e, CosignRefusal::NotIssued { size: 5 });
        // No cosignature at all.
        let e = accept_cosignatures(&stored, stored.as_bytes(), &node.verifier(), &ws).unwrap_err();
        assert_eq!(e, CosignRefusal::NoCosignature);
        assert!(matches!(
            accept_cosignatures(&stored, b"junk", &node.verifier(), &ws),
            Err(CosignRefusal::MalformedNote(_))
        ));
        assert_eq!(claimed_size(stored.as_bytes()).unwrap(), 5);
    }
}
