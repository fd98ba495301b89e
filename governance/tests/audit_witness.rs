//! The witness decision: cosign consistent growth, refuse everything else,
//! and never cosign a rewritten history.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use mxp_governance::audit::merkle::EMPTY_ROOT;
use mxp_governance::audit::{
    AuditEvent, Chain, Checkpoint, Cosigner, EventData, EventKind, LogIdentity, MerkleError,
    MerkleLog, Note, NoteSigner, TreeHead, Witness, WitnessRefusal, witness_checkpoint,
};

const ORIGIN: &str = "node.example/audit";

fn tree(n: u64, rewrite_at: Option<u64>) -> MerkleLog {
    let mut chain = Chain::new();
    let mut t = MerkleLog::new();
    for i in 0..n {
        let kind = if Some(i) == rewrite_at {
            EventKind::TokenMint
        } else {
            EventKind::LifecycleChange
        };
        let r = chain
            .append(AuditEvent::new(i, kind, EventData::empty()))
            .unwrap();
        t.append(r.leaf_hash());
    }
    t
}

fn signed(log: &NoteSigner, head: TreeHead) -> String {
    Checkpoint::new(ORIGIN, head).sign(log).unwrap()
}

fn setup() -> (NoteSigner, Cosigner, LogIdentity) {
    let log = NoteSigner::new(ORIGIN, &[1; 32]).unwrap();
    let cosigner = Cosigner::new("witness.example/w1", &[2; 32]).unwrap();
    let id = LogIdentity {
        origin: ORIGIN.into(),
        verifiers: vec![log.verifier()],
    };
    (log, cosigner, id)
}

#[test]
fn consistent_growth_is_cosigned() {
    let (log, cosigner, id) = setup();
    let t = tree(40, None);
    let mut w = Witness::new(id.clone(), cosigner.clone(), None);
    // First contact: trusted on first use.
    let c10 = w
        .observe(
            signed(
                &log,
                TreeHead {
                    size: 10,
                    root: t.root_at(10).unwrap(),
                },
            )
            .as_bytes(),
            &[],
            100,
        )
        .unwrap();
    assert_eq!(c10.checkpoint.tree.size, 10);
    let proof = t.consistency_proof(10, 40).unwrap();
    let c40 = w
        .observe(signed(&log, t.head()).as_bytes(), &proof, 200)
        .unwrap();
    assert_eq!(w.last(), Some(&t.head()));
    // The cosigned note verifies with the log's key and the witness's key.
    let n = Note::parse(c40.note.as_bytes()).unwrap();
    let v = n.verify(&[log.verifier(), cosigner.verifier()]).unwrap();
    assert_eq!(v.verified.len(), 2);
    assert_eq!(v.verified[1].timestamp, Some(200));
    // The same checkpoint again is fine (no proof needed).
    w.observe(signed(&log, t.head()).as_bytes(), &[], 300)
        .unwrap();
    // From the empty tree, no proof is needed.
    let empty = TreeHead {
        size: 0,
        root: EMPTY_ROOT,
    };
    witness_checkpoint(
        &id,
        Some(&empty),
        signed(&log, t.head()).as_bytes(),
        &[],
        &cosigner,
        1,
    )
    .unwrap();
}

#[test]
fn refusals_name_the_reason() {
    let (log, cosigner, id) = setup();
    let t = tree(40, None);
    let h20 = TreeHead {
        size: 20,
        root: t.root_at(20).unwrap(),
    };
    let h30 = TreeHead {
        size: 30,
        root: t.root_at(30).unwrap(),
    };
    let p = t.consistency_proof(20, 30).unwrap();
    let run = |note: &str, proof: &[[u8; 32]]| {
        witness_checkpoint(&id, Some(&h20), note.as_bytes(), proof, &cosigner, 5)
    };

    run(&signed(&log, h30), &p).unwrap();
    let impostor = NoteSigner::new(ORIGIN, &[3; 32]).unwrap();
    assert!(matches!(
        run(&signed(&impostor, h30), &p),
        Err(WitnessRefusal::SignatureInvalid(_))
    ));
    let mut forged = signed(&log, h30);
    forged = forged.replacen("\n30\n", "\n31\n", 1);
    assert!(matches!(
        run(&forged, &p),
        Err(WitnessRefusal::SignatureInvalid(_))
    ));
    assert!(matches!(
        run("garbage", &p),
        Err(WitnessRefusal::MalformedNote(_))
    ));
    let h10 = TreeHead {
        size: 10,
        root: t.root_at(10).unwrap(),
    };
    assert_eq!(
        run(&signed(&log, h10), &[]),
        Err(WitnessRefusal::TreeShrank { old: 20, new: 10 })
    );
    let other20 = TreeHead {
        size: 20,
        root: [9; 32],
    };
    assert_eq!(
        run(&signed(&log, other20), &[]),
        Err(WitnessRefusal::SameSizeDifferentRoot { size: 20 })
    );
    let wrong_proof = t.consistency_proof(21, 30).unwrap();
    assert!(matches!(
        run(&signed(&log, h30), &wrong_proof),
        Err(WitnessRefusal::ProofInvalid(_))
    ));
    assert!(matches!(
        run(&signed(&log, h30), &[]),
        Err(WitnessRefusal::ProofInvalid(_))
    ));
    let other_origin = Checkpoint::new("elsewhere.example/log", h30)
        .sign(&NoteSigner::new("elsewhere.example/log", &[1; 32]).unwrap())
        .unwrap();
    let id2 = LogIdentity {
        origin: ORIGIN.into(),
        verifiers: vec![
            NoteSigner::new("elsewhere.example/log", &[1; 32])
                .unwrap()
                .verifier(),
        ],
    };
    assert!(matches!(
        witness_checkpoint(&id2, Some(&h20), other_origin.as_bytes(), &p, &cosigner, 5),
        Err(WitnessRefusal::WrongOrigin { .. })
    ));
    assert!(matches!(
        witness_checkpoint(
            &id,
            Some(&h20),
            signed(&log, h30).as_bytes(),
            &p,
            &cosigner,
            u64::MAX
        ),
        Err(WitnessRefusal::Cosign(_))
    ));
}

#[test]
fn a_rewritten_history_cannot_get_a_cosignature() {
    let (log, cosigner, id) = setup();
    let honest = tree(30, None);
    let mut w = Witness::new(id, cosigner, None);
    let seen = TreeHead {
        size: 20,
        root: honest.root_at(20).unwrap(),
    };
    w.observe(signed(&log, seen).as_bytes(), &[], 1).unwrap();

    // The node rewrites event 7 and grows the log to 30, signing with its real key.
    let rewritten = tree(30, Some(7));
    let note = signed(&log, rewritten.head());
    // Its own consistency proof from 20 does not lead from the root the witness saw...
    let own = rewritten.consistency_proof(20, 30).unwrap();
    assert_eq!(
        w.observe(note.as_bytes(), &own, 2),
        Err(WitnessRefusal::ProofInvalid(MerkleError::RootMismatch))
    );
    // ...nor does the honest proof, nor any other size's proof.
    let honest_proof = honest.consistency_proof(20, 30).unwrap();
    assert!(w.observe(note.as_bytes(), &honest_proof, 3).is_err());
    for m in 1..30 {
        assert!(
            w.observe(
                note.as_bytes(),
                &rewritten.consistency_proof(m, 30).unwrap(),
                4
            )
            .is_err()
        );
    }
    // A rewritten tree of the same size as the one seen is a fork.
    let fork = TreeHead {
        size: 20,
        root: rewritten.root_at(20).unwrap(),
    };
    assert_eq!(
        w.observe(signed(&log, fork).as_bytes(), &[], 5),
        Err(WitnessRefusal::SameSizeDifferentRoot { size: 20 })
    );
    assert_eq!(w.last(), Some(&seen));
    // The honest continuation is still cosigned.
    w.observe(signed(&log, honest.head()).as_bytes(), &honest_proof, 6)
        .unwrap();
}

/// The worked example of docs/AUDIT.md: three events, the node's signed
/// checkpoint, a witness's cosignature, and both verifier keys. Pinned in
/// tests/data/audit/docs_example.note and docs_example.vkeys (regenerate
/// with AUDIT_WRITE_EXAMPLE=1 only if the format changes on purpose).
#[test]
fn docs_example_is_reproducible() {
    let log = NoteSigner::new(ORIGIN, &[1; 32]).unwrap();
    let witness = Cosigner::new("witness.example/w1", &[2; 32]).unwrap();
    let mut chain = Chain::new();
    let mut t = MerkleLog::new();
    let events = [
        AuditEvent::new(
            1_700_000_000_000,
            EventKind::NodeConfig { digest: [0x11; 32] },
            EventData::empty(),
        ),
        AuditEvent::new(
            1_700_000_000_005,
            EventKind::PolicyDecision {
                effect: mxp_governance::audit::PolicyEffect::Allow,
                policy_ids: vec!["allow-echo".into()],
            },
            EventData::from_value(&serde_json::json!({"action": "call", "tool": "echo"})).unwrap(),
        )
        .with_trace(7),
        AuditEvent::new(
            1_700_000_000_009,
            EventKind::ToolExecution {
                outcome: mxp_governance::audit::ToolOutcome::Landed,
                output: mxp_governance::audit::RecordedOutput::redact(b"hello"),
            },
            EventData::from_value(&serde_json::json!({"tool": "echo"})).unwrap(),
        )
        .with_trace(7),
    ];
    for e in events {
        t.append(chain.append(e).unwrap().leaf_hash());
    }
    let signed = Checkpoint::new(ORIGIN, t.head()).sign(&log).unwrap();
    let cosigned = witness_checkpoint(
        &LogIdentity {
            origin: ORIGIN.into(),
            verifiers: vec![log.verifier()],
        },
        None,
        signed.as_bytes(),
        &[],
        &witness,
        1_700_000_100,
    )
    .unwrap();
    let vkeys = format!(
        "{}\n{}\n",
        log.verifier().to_vkey(),
        witness.verifier().to_vkey()
    );
    let dir = format!("{}/tests/data/audit", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("AUDIT_WRITE_EXAMPLE").is_some() {
        std::fs::write(format!("{dir}/docs_example.note"), &cosigned.note).unwrap();
        std::fs::write(format!("{dir}/docs_example.vkeys"), &vkeys).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/docs_example.note")).unwrap(),
        cosigned.note
    );
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/docs_example.vkeys")).unwrap(),
        vkeys
    );
}
