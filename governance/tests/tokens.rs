//! Capability tokens through the public API only: round trips, every
//! refusal, bit flips in every bit of realistic tokens, a holder crafting a
//! widening block by hand from the documented format (docs/TOKENS.md), and
//! the nonce ledger.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use mxp_governance::token::args::args_digest;
use mxp_governance::token::ed25519_dalek::{Signer as _, SigningKey};
use mxp_governance::token::{
    ArgsDigest, Attenuation, CallIntent, Claims, Grant, MacKey, Nonce, NonceLedger, PROOF_CONTEXT,
    SigningIdentity, Token, TokenError, TokenForm, VerifiedToken, Verifier, blake3,
};
use mxp_protocol::{AgentId, Fingerprint, PrincipalId, SessionId};
use proptest::prelude::*;
use serde_json::json;
use std::sync::LazyLock;

const NODE: Fingerprint = Fingerprint([0xa1; 32]);
const REMOTE: Fingerprint = Fingerprint([0xb2; 32]);
const NOW: u64 = 1_764_000_000_000;
const EXP: u64 = NOW + 30_000;

struct World {
    local_mac: MacKey,
    remote_id: SigningIdentity,
    /// This node: its own MAC key, and the remote node's public key.
    verifier: Verifier,
    claims: Claims,
    digest: ArgsDigest,
}

fn world() -> World {
    let local_mac = MacKey::new(NODE, [0x10; 32]);
    let remote_id = SigningIdentity::from_seed(REMOTE, [0x20; 32]);
    let mut verifier = Verifier::new().with_mac_key(local_mac.clone());
    verifier
        .add_issuer(REMOTE, remote_id.verifying_key())
        .unwrap();
    let args = json!({
        "path": "/srv/data/reports/2026-11/summary.csv",
        "encoding": "utf-8",
        "max_bytes": 65536,
        "options": {"follow_symlinks": false, "tail": [1, 2.5, null, "x"]}
    });
    let digest = args_digest(&args);
    let claims = Claims {
        principal: PrincipalId::Agent {
            agent: AgentId::from_bytes([0x01; 16]),
            node: Fingerprint([0xc3; 32]),
        },
        agent: AgentId::from_bytes([0x02; 16]),
        session: SessionId::from_random([0x03; 16]),
        grants: vec![
            Grant::new("fs.read_file", digest),
            Grant::new("fs.stat", digest),
        ],
        not_after_unix_ms: EXP,
        nonce: Nonce([0x04; 16]),
    };
    World {
        local_mac,
        remote_id,
        verifier,
        claims,
        digest,
    }
}

impl World {
    fn call<'a>(&'a self, tool: &'a str) -> CallIntent<'a> {
        CallIntent {
            principal: &self.claims.principal,
            agent: &self.claims.agent,
            session: &self.claims.session,
            tool,
            args_digest: &self.digest,
        }
    }

    fn mac_token(&self) -> Token {
        self.local_mac.mint(&self.claims).unwrap()
    }

    fn ed_token(&self) -> Token {
        self.remote_id.mint(&self.claims, [0x30; 32]).unwrap()
    }

    fn both(&self) -> [Token; 2] {
        [self.mac_token(), self.ed_token()]
    }

    fn check<'a>(
        &self,
        bytes: &[u8],
        call: &CallIntent<'a>,
        now: u64,
    ) -> Result<VerifiedToken<'a>, TokenError> {
        self.verifier
            .verify(bytes, call, now, &mut NonceLedger::new(8))
    }
}

#[test]
fn mac_round_trip() {
    let w = world();
    let t = w.mac_token();
    assert_eq!(t.form(), TokenForm::Mac);
    let v = w.check(t.as_bytes(), &w.call("fs.read_file"), NOW).unwrap();
    assert_eq!(
        (v.form(), v.issuer(), v.tool()),
        (TokenForm::Mac, &NODE, "fs.read_file")
    );
    assert_eq!(v.session(), &w.claims.session);
    let t2 = Token::from_base64url(&t.to_base64url()).unwrap();
    w.check(t2.as_bytes(), &w.call("fs.stat"), NOW).unwrap();
}

#[test]
fn ed25519_round_trip() {
    let w = world();
    let t = w.ed_token();
    assert_eq!(t.form(), TokenForm::Ed25519);
    let v = w.check(t.as_bytes(), &w.call("fs.read_file"), NOW).unwrap();
    assert_eq!((v.form(), v.issuer()), (TokenForm::Ed25519, &REMOTE));
    assert_eq!(v.principal(), &w.claims.principal);
    assert_eq!(v.agent(), &w.claims.agent);
    assert_eq!(v.args_digest(), &w.digest);
    assert_eq!(v.nonce(), &w.claims.nonce);
    assert_eq!(v.not_after_unix_ms(), EXP);
}

#[test]
fn refused_other_tool() {
    let w = world();
    for t in w.both() {
        assert_eq!(
            w.check(t.as_bytes(), &w.call("fs.write_file"), NOW)
                .unwrap_err(),
            TokenError::WrongTool {
                tool: "fs.write_file".into()
            }
        );
    }
}

#[test]
fn refused_other_arguments() {
    let w = world();
    let other = args_digest(&json!({"path": "/etc/shadow"}));
    for t in w.both() {
        let mut call = w.call("fs.read_file");
        call.args_digest = &other;
        assert_eq!(
            w.check(t.as_bytes(), &call, NOW).unwrap_err(),
            TokenError::WrongArguments {
                tool: "fs.read_file".into()
            }
        );
    }
}

#[test]
fn refused_other_session() {
    let w = world();
    let other = SessionId::from_random([0x05; 16]);
    for t in w.both() {
        let mut call = w.call("fs.read_file");
        call.session = &other;
        assert_eq!(
            w.check(t.as_bytes(), &call, NOW).unwrap_err(),
            TokenError::WrongSession
        );
    }
}

#[test]
fn refused_other_principal() {
    let w = world();
    let other = PrincipalId::Agent {
        agent: AgentId::from_bytes([0x01; 16]),
        node: Fingerprint([0xc4; 32]),
    };
    for t in w.both() {
        let mut call = w.call("fs.read_file");
        call.principal = &other;
        assert_eq!(
            w.check(t.as_bytes(), &call, NOW).unwrap_err(),
            TokenError::WrongPrincipal
        );
    }
}

#[test]
fn refused_other_agent() {
    let w = world();
    let other = AgentId::from_bytes([0x09; 16]);
    for t in w.both() {
        let mut call = w.call("fs.read_file");
        call.agent = &other;
        assert_eq!(
            w.check(t.as_bytes(), &call, NOW).unwrap_err(),
            TokenError::WrongAgent
        );
    }
}

#[test]
fn refused_expired() {
    let w = world();
    for t in w.both() {
        w.check(t.as_bytes(), &w.call("fs.read_file"), EXP - 1)
            .unwrap();
        assert_eq!(
            w.check(t.as_bytes(), &w.call("fs.read_file"), EXP + 5)
                .unwrap_err(),
            TokenError::Expired {
                not_after_unix_ms: EXP,
                now_unix_ms: EXP + 5
            }
        );
    }
}

#[test]
fn refused_replayed() {
    let w = world();
    let mut ledger = NonceLedger::new(8);
    for t in w.both() {
        w.verifier
            .verify(t.as_bytes(), &w.call("fs.read_file"), NOW, &mut ledger)
            .unwrap();
        assert_eq!(
            w.verifier
                .verify(t.as_bytes(), &w.call("fs.read_file"), NOW + 1, &mut ledger)
                .unwrap_err(),
            TokenError::Replayed
        );
    }
    // Same nonce, different issuers: two separate entries.
    assert_eq!(ledger.len(), 2);
}

#[test]
fn refused_unknown_issuer() {
    let w = world();
    let stranger = SigningIdentity::from_seed(Fingerprint([0xee; 32]), [0x21; 32]);
    let t = stranger.mint(&w.claims, [0x31; 32]).unwrap();
    assert_eq!(
        w.check(t.as_bytes(), &w.call("fs.read_file"), NOW)
            .unwrap_err(),
        TokenError::UnknownIssuer {
            issuer: Fingerprint([0xee; 32])
        }
    );
    // A MAC token from another node cannot be checked here.
    let t = MacKey::new(REMOTE, [0x10; 32]).mint(&w.claims).unwrap();
    assert_eq!(
        w.check(t.as_bytes(), &w.call("fs.read_file"), NOW)
            .unwrap_err(),
        TokenError::UnknownIssuer { issuer: REMOTE }
    );
    // A removed issuer is unknown.
    let mut v = w.verifier.clone();
    v.remove_issuer(&REMOTE);
    assert_eq!(
        v.verify(
            w.ed_token().as_bytes(),
            &w.call("fs.read_file"),
            NOW,
            &mut NonceLedger::new(1)
        )
        .unwrap_err(),
        TokenError::UnknownIssuer { issuer: REMOTE }
    );
}

#[test]
fn refused_bad_mac() {
    let w = world();
    let forged = MacKey::new(NODE, [0x11; 32]).mint(&w.claims).unwrap();
    assert_eq!(
        w.check(forged.as_bytes(), &w.call("fs.read_file"), NOW)
            .unwrap_err(),
        TokenError::BadMac
    );
    // Extending the expiry in place.
    let mut bytes = w.mac_token().into_bytes();
    let at = find(&bytes, &EXP.to_le_bytes());
    bytes[at..at + 8].copy_from_slice(&(EXP + 3_600_000).to_le_bytes());
    assert_eq!(
        w.check(&bytes, &w.call("fs.read_file"), NOW).unwrap_err(),
        TokenError::BadMac
    );
}

#[test]
fn refused_bad_signature() {
    let w = world();
    let impostor = SigningIdentity::from_seed(REMOTE, [0x22; 32]);
    let forged = impostor.mint(&w.claims, [0x30; 32]).unwrap();
    assert_eq!(
        w.check(forged.as_bytes(), &w.call("fs.read_file"), NOW)
            .unwrap_err(),
        TokenError::BadSignature { block: 0 }
    );
}

#[test]
fn refused_bad_proof() {
    let w = world();
    let t = w
        .ed_token()
        .attenuate_ed25519(&Attenuation::default(), [0x40; 32])
        .unwrap();
    let mut bytes = t.into_bytes();
    let n = bytes.len();
    bytes[n - 32..].copy_from_slice(&[0x41; 32]);
    assert_eq!(
        w.check(&bytes, &w.call("fs.read_file"), NOW).unwrap_err(),
        TokenError::BadProof
    );
}

#[test]
fn refused_malformed() {
    let w = world();
    let t = w.mac_token();
    let b = t.as_bytes();
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"MXPTOK".to_vec(),
        b[..b.len() - 1].to_vec(),
        [b, &[0][..]].concat(),
        [&b"MXPTOX"[..], &b[6..]].concat(),
        [&b[..6], &[2], &b[7..]].concat(),
        [&b[..7], &[9], &b[8..]].concat(),
        vec![0xff; 10_000],
    ];
    for bytes in cases {
        assert!(
            matches!(
                w.check(&bytes, &w.call("fs.read_file"), NOW),
                Err(TokenError::Malformed(_))
            ),
            "{bytes:?}"
        );
        assert!(matches!(
            Token::decode(&bytes),
            Err(TokenError::Malformed(_))
        ));
    }
    for text in ["", "!!!!", "TVhQVE9L=", &"A".repeat(20_000), "TVhQVE9Lx"] {
        assert!(
            matches!(Token::from_base64url(text), Err(TokenError::Malformed(_))),
            "{text}"
        );
    }
}

#[test]
fn refused_widening_block_crafted_by_a_holder() {
    let w = world();
    // MAC: the holder knows the tag, so it can chain a block, but one that
    // extends the expiry must be refused.
    let t = w.mac_token().into_bytes();
    let (rest, tag) = t.split_at(t.len() - 32);
    let body = [&[0x42][..], &(EXP + 1).to_le_bytes(), &[0]].concat();
    let new_tag = blake3::keyed_hash(tag.try_into().unwrap(), &body);
    let crafted = [rest, &body, new_tag.as_bytes()].concat();
    assert_eq!(
        w.check(&crafted, &w.call("fs.read_file"), NOW).unwrap_err(),
        TokenError::Widening {
            block: 1,
            what: "expiry"
        }
    );
    // The same chaining with a narrowing block verifies.
    let body = [&[0x42][..], &(EXP - 1).to_le_bytes(), &[0]].concat();
    let new_tag = blake3::keyed_hash(tag.try_into().unwrap(), &body);
    let crafted = [rest, &body, new_tag.as_bytes()].concat();
    assert_eq!(
        w.check(&crafted, &w.call("fs.read_file"), NOW)
            .unwrap()
            .not_after_unix_ms(),
        EXP - 1
    );

    // Ed25519: the holder signs a block with the proof seed, granting a tool
    // the root never granted.
    let t = w.ed_token().into_bytes();
    let (rest, proof) = t.split_at(t.len() - 32);
    let root_sig = &rest[rest.len() - 64..];
    let signer = SigningKey::from_bytes(proof.try_into().unwrap());
    let next_seed = [0x50; 32];
    let next_key = SigningKey::from_bytes(&next_seed)
        .verifying_key()
        .to_bytes();
    let commit = blake3::derive_key(PROOF_CONTEXT, &next_seed);
    let tool = b"shell.exec";
    let body = [
        &[0x42][..],
        &EXP.to_le_bytes(),
        &[1],
        &(tool.len() as u16).to_le_bytes(),
        tool,
        w.digest.as_bytes(),
        &next_key,
        &commit,
    ]
    .concat();
    let sig = signer.sign(&[root_sig, &body].concat());
    let crafted = [rest, &body, &sig.to_bytes(), &next_seed].concat();
    assert_eq!(
        w.check(&crafted, &w.call("shell.exec"), NOW).unwrap_err(),
        TokenError::Widening {
            block: 1,
            what: "grants"
        }
    );
}

#[test]
fn attenuation_round_trip_both_forms() {
    let w = world();
    let narrow = Attenuation {
        not_after_unix_ms: Some(NOW + 100),
        grants: Some(vec![Grant::new("fs.stat", w.digest)]),
    };
    for t in w.both() {
        let a = match t.form() {
            TokenForm::Mac => t.attenuate_mac(&narrow).unwrap(),
            _ => t.attenuate_ed25519(&narrow, [0x60; 32]).unwrap(),
        };
        assert_eq!(a.blocks(), 1);
        let a = Token::from_base64url(&a.to_base64url()).unwrap();
        let v = w.check(a.as_bytes(), &w.call("fs.stat"), NOW).unwrap();
        assert_eq!((v.blocks(), v.not_after_unix_ms()), (1, NOW + 100));
        assert_eq!(
            w.check(a.as_bytes(), &w.call("fs.read_file"), NOW)
                .unwrap_err(),
            TokenError::WrongTool {
                tool: "fs.read_file".into()
            }
        );
        assert!(matches!(
            w.check(a.as_bytes(), &w.call("fs.stat"), NOW + 100),
            Err(TokenError::Expired { .. })
        ));
    }
}

/// A realistic token of each form, plain and with two attenuation blocks.
fn realistic(w: &World) -> Vec<Token> {
    let narrow = Attenuation {
        not_after_unix_ms: Some(EXP - 1000),
        grants: Some(vec![Grant::new("fs.read_file", w.digest)]),
    };
    let mac = w.mac_token();
    let ed = w.ed_token();
    let mac2 = mac
        .attenuate_mac(&narrow)
        .unwrap()
        .attenuate_mac(&Attenuation::default())
        .unwrap();
    let ed2 = ed
        .attenuate_ed25519(&narrow, [0x70; 32])
        .unwrap()
        .attenuate_ed25519(&Attenuation::default(), [0x71; 32])
        .unwrap();
    vec![mac, ed, mac2, ed2]
}

#[test]
fn every_bit_flip_is_refused() {
    let w = world();
    let call = w.call("fs.read_file");
    for t in realistic(&w) {
        let good = t.as_bytes();
        w.check(good, &call, NOW).unwrap();
        let mut flipped = good.to_vec();
        for i in 0..good.len() * 8 {
            flipped[i / 8] ^= 1 << (i % 8);
            let got = w.check(&flipped, &call, NOW);
            assert!(
                got.is_err(),
                "{:?}: bit {i} flipped still verifies",
                t.form()
            );
            flipped[i / 8] ^= 1 << (i % 8);
        }
    }
}

#[test]
fn base64_character_changes_are_refused() {
    let w = world();
    let call = w.call("fs.read_file");
    // The root of each form, and the attenuated MAC token (bit flips cover
    // the attenuated Ed25519 token byte by byte).
    for t in realistic(&w).into_iter().take(3) {
        let text = t.to_base64url();
        for i in 0..text.len() {
            let mut chars: Vec<u8> = text.clone().into_bytes();
            chars[i] = if chars[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(chars).unwrap();
            if let Ok(t2) = Token::from_base64url(&s) {
                assert!(w.check(t2.as_bytes(), &call, NOW).is_err(), "char {i}");
            }
        }
    }
}

#[test]
fn ledger_replay_expiry_and_capacity() {
    let w = world();
    let mut ledger = NonceLedger::new(2);
    let mint = |n: u8, exp: u64| {
        let mut c = w.claims.clone();
        c.nonce = Nonce([n; 16]);
        c.not_after_unix_ms = exp;
        w.local_mac.mint(&c).unwrap()
    };
    let call = w.call("fs.read_file");
    let (a, b, c) = (mint(1, NOW + 10), mint(2, NOW + 20), mint(3, NOW + 30));
    w.verifier
        .verify(a.as_bytes(), &call, NOW, &mut ledger)
        .unwrap();
    w.verifier
        .verify(b.as_bytes(), &call, NOW, &mut ledger)
        .unwrap();
    // Full of unexpired nonces: fail closed.
    assert_eq!(
        w.verifier
            .verify(c.as_bytes(), &call, NOW, &mut ledger)
            .unwrap_err(),
        TokenError::LedgerFull { capacity: 2 }
    );
    assert_eq!(
        w.verifier
            .verify(a.as_bytes(), &call, NOW + 5, &mut ledger)
            .unwrap_err(),
        TokenError::Replayed
    );
    // a expires at NOW + 10: its slot frees.
    w.verifier
        .verify(c.as_bytes(), &call, NOW + 10, &mut ledger)
        .unwrap();
    assert_eq!(ledger.len(), 2);
    // a itself is now refused as expired, never accepted again.
    assert!(matches!(
        w.verifier
            .verify(a.as_bytes(), &call, NOW + 10, &mut ledger),
        Err(TokenError::Expired { .. })
    ));
}

#[test]
fn refusal_messages_are_clear_and_keyless() {
    let e = TokenError::Widening {
        block: 2,
        what: "grants",
    };
    assert_eq!(
        e.to_string(),
        "attenuation block 2 widens the token's grants"
    );
    assert_eq!(e.class(), "widening");
    assert_eq!(
        TokenError::Replayed.to_string(),
        "token already used (nonce seen before)"
    );
    let w = world();
    let dbg = format!("{:?} {:?} {:?}", w.verifier, w.local_mac, w.remote_id);
    assert!(
        !dbg.contains("1010")
            && !dbg.contains("16, 16")
            && !dbg.contains("2020")
            && !dbg.contains("32, 32")
    );
}

static REALISTIC: LazyLock<(World, Vec<Token>)> = LazyLock::new(|| {
    let w = world();
    let tokens = realistic(&w);
    (w, tokens)
});

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let w = world();
        let _ = Token::decode(&bytes);
        prop_assert!(w.check(&bytes, &w.call("fs.read_file"), NOW).is_err());
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = Token::from_base64url(&text);
    }

    #[test]
    fn token_prefixed_garbage_never_panics(
        form in 0usize..4,
        cut in 0usize..600,
        tail in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let (w, tokens) = &*REALISTIC;
        let t = &tokens[form];
        let b = t.as_bytes();
        let mut bytes = b[..cut.min(b.len())].to_vec();
        bytes.extend_from_slice(&tail);
        let _ = w.check(&bytes, &w.call("fs.read_file"), NOW);
    }

    #[test]
    fn narrowing_verifies_widening_is_refused(
        delta in -20_000i64..20_000,
        keep_read in any::<bool>(),
        keep_stat in any::<bool>(),
        extra in any::<bool>(),
        ed in any::<bool>(),
    ) {
        let w = world();
        let t = if ed { w.ed_token() } else { w.mac_token() };
        let mut grants = Vec::new();
        if keep_read { grants.push(Grant::new("fs.read_file", w.digest)); }
        if keep_stat { grants.push(Grant::new("fs.stat", w.digest)); }
        if extra { grants.push(Grant::new("fs.delete", w.digest)); }
        let a = Attenuation {
            not_after_unix_ms: Some(EXP.saturating_add_signed(delta)),
            grants: if grants.is_empty() { None } else { Some(grants.clone()) },
        };
        let got = if ed { t.attenuate_ed25519(&a, [0x80; 32]) } else { t.attenuate_mac(&a) };
        let widens = delta > 0 || extra;
        match got {
            Err(e) => {
                prop_assert!(widens);
                let is_widening = matches!(e, TokenError::Widening { block: 1, .. });
                prop_assert!(is_widening, "{:?}", e);
            }
            Ok(n) => {
                prop_assert!(!widens);
                let v = w.check(n.as_bytes(), &w.call("fs.stat"), NOW);
                if keep_stat || grants.is_empty() {
                    prop_assert_eq!(v.unwrap().not_after_unix_ms(), EXP.saturating_add_signed(delta));
                } else {
                    let wrong_tool = matches!(v, Err(TokenError::WrongTool { .. }));
                    prop_assert!(wrong_tool, "{:?}", v);
                }
            }
        }
    }
}
