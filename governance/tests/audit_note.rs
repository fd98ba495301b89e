//! C2SP signed notes, checkpoints and cosignatures against the specs'
//! worked examples and the golang.org/x/mod/sumdb/note vectors
//! (tests/data/audit/), and strict refusal of malformed notes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mxp_governance::audit::note::{self, MAX_NOTE_BYTES, MAX_SIGNATURES, SignatureType, key_id};
use mxp_governance::audit::{
    Checkpoint, Cosigner, Note, NoteError, NoteSigner, NoteVerifier, TreeHead,
};
use proptest::prelude::*;

fn data(name: &str) -> String {
    let path = format!("{}/tests/data/audit/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn line(name: &str) -> String {
    data(name).trim_end_matches('\n').to_owned()
}

#[test]
fn c2sp_signed_note_example_verifies_byte_for_byte() {
    let vkey = line("c2sp_signed_note_example.vkey");
    let v = NoteVerifier::parse(&vkey).unwrap();
    assert_eq!(v.name(), "example.com/foo");
    assert_eq!(v.key_id(), 0x530d_903a);
    assert_eq!(v.signature_type(), SignatureType::Ed25519);
    assert_eq!(v.to_vkey(), vkey);
    let text = data("c2sp_signed_note_example.note");
    let n = Note::parse(text.as_bytes()).unwrap();
    assert_eq!(n.text(), "This is an example message.\n");
    assert_eq!(n.encode(), text);
    let ok = n.verify(std::slice::from_ref(&v)).unwrap();
    assert_eq!(ok.verified.len(), 1);
    assert!(ok.unverified.is_empty());
    // One changed byte of text and the known key's signature fails.
    let forged = text.replacen("example message", "exemple message", 1);
    assert!(matches!(
        Note::parse(forged.as_bytes()).unwrap().verify(&[v]),
        Err(NoteError::BadSignature { .. })
    ));
}

#[test]
fn sumdb_note_vectors_sign_and_verify_byte_for_byte() {
    let signer = NoteSigner::from_private_key_text(&line("sumdb_peterneumann.skey")).unwrap();
    let vkey = line("sumdb_peterneumann.vkey");
    assert_eq!(signer.verifier().to_vkey(), vkey);
    let note = data("sumdb_peterneumann.note");
    let text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    // Ed25519 is deterministic: signing the text reproduces the published note.
    assert_eq!(signer.sign_note(text).unwrap(), note);
    let peter = NoteVerifier::parse(&vkey).unwrap();
    assert_eq!(peter.key_id(), 0xc74f_20a3);
    Note::parse(note.as_bytes())
        .unwrap()
        .verify(std::slice::from_ref(&peter))
        .unwrap();

    let enoch = NoteVerifier::parse(&line("sumdb_enochroot.vkey")).unwrap();
    let double = Note::parse(data("sumdb_peterneumann_enochroot.note").as_bytes()).unwrap();
    let both = double.verify(&[peter.clone(), enoch.clone()]).unwrap();
    assert_eq!(both.verified.len(), 2);
    let one = double.verify(std::slice::from_ref(&peter)).unwrap();
    assert_eq!((one.verified.len(), one.unverified.len()), (1, 1));
    assert_eq!(one.unverified[0].name, "EnochRoot");
    assert_eq!(
        Note::parse(note.as_bytes()).unwrap().verify(&[enoch]),
        Err(NoteError::NoKnownSignature)
    );
}

#[test]
fn c2sp_checkpoint_and_cosignature_examples_parse_exactly() {
    // The spec examples come without their public keys: parsed, key IDs and
    // the cosignature timestamp checked, signatures not verifiable.
    let text = data("c2sp_checkpoint_example.note");
    let n = Note::parse(text.as_bytes()).unwrap();
    assert_eq!(n.encode(), text);
    let cp = Checkpoint::parse(n.text()).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.tree.size, 20_852_163);
    assert_eq!(
        B64.encode(cp.tree.root),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    );
    assert!(cp.extensions.is_empty());
    assert_eq!(cp.body().unwrap(), n.text());
    assert_eq!(n.signatures()[0].name, "example.com/behind-the-sofa");
    assert_eq!(n.signatures()[0].signature.len(), 64);

    let cosigned = data("c2sp_cosigned_checkpoint_example.note");
    let n = Note::parse(cosigned.as_bytes()).unwrap();
    assert_eq!(n.encode(), cosigned);
    assert_eq!(n.signatures().len(), 2);
    let w = &n.signatures()[1];
    assert_eq!(w.name, "witness.example.com/w1");
    assert_eq!(w.signature.len(), 8 + 64);
    assert_eq!(w.cosignature_time(), Some(1_679_315_147));
    // The signed message of that cosignature, as the spec prints it.
    assert_eq!(
        note::cosignature_message(n.text(), 1_679_315_147),
        data("c2sp_cosignature_message_example.txt")
    );

    let q = data("c2sp_quasimodo.note");
    let n = Note::parse(q.as_bytes()).unwrap();
    assert_eq!(n.encode(), q);
    assert!(n.text().ends_with("ed è subito sera.\n"));
    assert!(
        n.text().contains(":\n\ned"),
        "a blank line inside the text stays in the text"
    );
}

#[test]
fn own_signatures_and_cosignatures_round_trip() {
    let log = NoteSigner::new("node.example/audit", &[7; 32]).unwrap();
    let witness = Cosigner::new("witness.example/w1", &[9; 32]).unwrap();
    let cp = Checkpoint {
        origin: "node.example/audit".into(),
        tree: TreeHead {
            size: 3,
            root: [5; 32],
        },
        extensions: vec!["ext one".into()],
    };
    let signed = cp.sign(&log).unwrap();
    let mut n = Note::parse(signed.as_bytes()).unwrap();
    assert_eq!(Checkpoint::parse(n.text()).unwrap(), cp);
    let cosig = witness.cosign(n.text(), 1_700_000_000).unwrap();
    assert_eq!(
        cosig.key_id,
        key_id(
            "witness.example/w1",
            SignatureType::Cosignature,
            &witness_pub(&witness)
        )
    );
    n.push_signature(cosig);
    let both = Note::parse(n.encode().as_bytes())
        .unwrap()
        .verify(&[log.verifier(), witness.verifier()])
        .unwrap();
    assert_eq!(both.verified.len(), 2);
    assert_eq!(both.verified[1].timestamp, Some(1_700_000_000));
    let wv = NoteVerifier::parse(&witness.verifier().to_vkey()).unwrap();
    assert_eq!(wv, witness.verifier());
    // A cosignature key is not an Ed25519 note key, even with the same secret.
    let same_secret = NoteSigner::new("witness.example/w1", &[9; 32]).unwrap();
    assert_ne!(same_secret.verifier().key_id(), witness.verifier().key_id());
    assert_eq!(
        witness.cosign("x\n", u64::MAX),
        Err(NoteError::TimeTooLarge(u64::MAX))
    );
    // Duplicate signatures by one known key are refused.
    let mut dup = Note::parse(signed.as_bytes()).unwrap();
    dup.push_signature(dup.signatures()[0].clone());
    assert!(matches!(
        dup.verify(&[log.verifier()]),
        Err(NoteError::DuplicateSignature { .. })
    ));
}

fn witness_pub(c: &Cosigner) -> [u8; 32] {
    let vkey = c.verifier().to_vkey();
    let b = B64.decode(vkey.rsplit('+').next().unwrap()).unwrap();
    b[1..].try_into().unwrap()
}

#[test]
fn malformed_notes_are_refused() {
    let good = data("c2sp_signed_note_example.note");
    let sig = good.split("\n\n").nth(1).unwrap().to_owned();
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("text\n".into(), "no signatures"),
        (format!("text\n{sig}"), "no blank line"),
        ("text\n\n".to_owned(), "empty signature block"),
        (format!("text\n\n{}", sig.trim_end()), "no final newline"),
        (format!("text\r\n\n{sig}"), "carriage return"),
        (format!("te\txt\n\n{sig}"), "tab"),
        (
            format!("text\n\n{}", sig.replacen('\u{2014}', "-", 1)),
            "hyphen for em dash",
        ),
        (
            format!("text\n\n{}", sig.replacen("\u{2014} ", "\u{2014}  ", 1)),
            "double space",
        ),
        (
            format!("text\n\n{}", sig.replacen("example.com/foo", "exa+mple", 1)),
            "plus in name",
        ),
        (
            format!(
                "text\n\n{}",
                sig.replacen("example.com/foo", "exa\u{a0}mple", 1)
            ),
            "unicode space in name",
        ),
        (
            format!("text\n\n{}", sig.replacen("=\n", "\n", 1)),
            "unpadded base64",
        ),
        (
            format!("text\n\n{}", sig.replacen("M=\n", "N=\n", 1)),
            "non-canonical base64",
        ),
        (
            "text\n\n\u{2014} k AAAAAA==\n".to_owned(),
            "signature of only a key id",
        ),
        (
            "text\n\n\u{2014} k AAA=\n".to_owned(),
            "shorter than a key id",
        ),
        (format!("text\n\n{sig}\n"), "blank line after signatures"),
        (
            format!("text\n\n{}", sig.repeat(MAX_SIGNATURES + 1)),
            "too many signatures",
        ),
        (
            format!("{}\n\n{sig}", "a".repeat(MAX_NOTE_BYTES)),
            "too large",
        ),
        (format!("{}\n{sig}", "a\n".repeat(2000)), "too many lines"),
    ];
    for (text, why) in cases {
        assert!(Note::parse(text.as_bytes()).is_err(), "{why}: accepted");
    }
    assert_eq!(
        Note::parse(&[0xff, b'\n', b'\n']),
        Err(NoteError::InvalidUtf8)
    );
}

#[test]
fn mangled_verifier_keys_are_refused() {
    let vkey = line("sumdb_peterneumann.vkey");
    for i in 0..vkey.len() {
        for j in i + 1..=vkey.len() {
            if (i, j) != (0, vkey.len()) {
                assert!(NoteVerifier::parse(&vkey[i..j]).is_err(), "{}", &vkey[i..j]);
            }
        }
    }
    let mut b = vkey.clone().into_bytes();
    for i in 0..b.len() {
        b[i] = b[i].wrapping_add(1);
        if let Ok(s) = std::str::from_utf8(&b) {
            assert!(NoteVerifier::parse(s).is_err(), "{s}");
        }
        b[i] = b[i].wrapping_sub(1);
    }
    // Wrong length and unknown algorithm, each with a key ID that matches.
    assert!(
        NoteVerifier::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
        .is_err()
    );
    assert_eq!(
        NoteVerifier::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteError::UnsupportedType(0x65))
    );
    assert!(NoteVerifier::parse(&vkey.replace("c74f20a3", "C74F20A3")).is_err());
    assert!(
        NoteSigner::from_private_key_text(&line("sumdb_peterneumann.skey").replace("c74f", "c74e"))
            .is_err()
    );
}

#[test]
fn malformed_checkpoints_are_refused() {
    let root = B64.encode([1u8; 32]);
    for bad in [
        String::new(),
        "origin\n".into(),
        format!("origin\n5\n{root}"),
        format!("\n5\n{root}\n"),
        format!("origin\n05\n{root}\n"),
        format!("origin\n-5\n{root}\n"),
        format!("origin\n+5\n{root}\n"),
        format!("origin\n18446744073709551616\n{root}\n"),
        format!("origin\n5\n{}\n", B64.encode([1u8; 31])),
        format!("origin\n5\n{root}\n\n"),
        format!("origin\n5\n{root}\next\n\n"),
    ] {
        assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
    }
    let cp = Checkpoint::parse(&format!("origin\n0\n{root}\n")).unwrap();
    assert_eq!(cp.tree.size, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(n) = Note::parse(&bytes) {
            // Whatever parses re-encodes to the same bytes.
            prop_assert_eq!(n.encode().into_bytes(), bytes.clone());
        }
        let _ = Checkpoint::parse(&String::from_utf8_lossy(&bytes));
        let _ = NoteVerifier::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn note_like_text_never_panics(text in "([a-z+/=. \u{2014}]{0,12}\n){0,8}") {
        if let Ok(n) = Note::parse(text.as_bytes()) {
            prop_assert_eq!(n.encode(), text.clone());
            let _ = n.verify(&[]);
        }
        let _ = Checkpoint::parse(&text);
    }

    #[test]
    fn any_single_byte_change_breaks_a_signed_note(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let good = data("sumdb_peterneumann.note").into_bytes();
        let key = NoteVerifier::parse(&line("sumdb_peterneumann.vkey")).unwrap();
        let mut bad = good.clone();
        let i = pos.index(bad.len());
        prop_assume!(bad[i] != byte);
        bad[i] = byte;
        let verdict = Note::parse(&bad).and_then(|n| n.verify(std::slice::from_ref(&key)));
        prop_assert!(verdict.is_err());
    }
}
