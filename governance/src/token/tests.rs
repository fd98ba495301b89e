//! Unit tests of minting, attenuation and verification.

use proptest::prelude::*;
use serde_json::json;

use super::args::args_digest;
use super::mint::append_unchecked;
use super::*;
use mxp_protocol::Fingerprint;

const NODE: Fingerprint = Fingerprint([0x11; 32]);
const OTHER_NODE: Fingerprint = Fingerprint([0x22; 32]);
const NOW: u64 = 1_000_000;
const EXP: u64 = NOW + 60_000;

struct Fixture {
    mac: MacKey,
    id: SigningIdentity,
    verifier: Verifier,
    claims: Claims,
    digest: ArgsDigest,
}

fn fixture() -> Fixture {
    let mac = MacKey::new(NODE, [0x5a; 32]);
    let id = SigningIdentity::from_seed(NODE, [0x6b; 32]);
    let mut verifier = Verifier::new().with_mac_key(mac.clone());
    verifier.add_issuer(NODE, id.verifying_key()).unwrap();
    let digest = args_digest(&json!({"path": "/srv/data/report.csv", "limit": 100}));
    let claims = Claims {
        principal: PrincipalId::Peer(Fingerprint([0x33; 32])),
        agent: AgentId::from_bytes([0x44; 16]),
        session: "s-0123456789abcdef0123456789abcdef".parse().unwrap(),
        grants: vec![
            Grant::new("fs.read", digest),
            Grant::new("fs.stat", digest),
            Grant::new(
                "http.get",
                args_digest(&json!({"url": "https://example.org"})),
            ),
        ],
        not_after_unix_ms: EXP,
        nonce: Nonce([0x77; 16]),
    };
    Fixture {
        mac,
        id,
        verifier,
        claims,
        digest,
    }
}

impl Fixture {
    fn call<'a>(&'a self, tool: &'a str) -> CallIntent<'a> {
        CallIntent {
            principal: &self.claims.principal,
            agent: &self.claims.agent,
            session: &self.claims.session,
            tool,
            args_digest: &self.digest,
        }
    }

    fn tokens(&self) -> [Token; 2] {
        [
            self.mac.mint(&self.claims).unwrap(),
            self.id.mint(&self.claims, [0x99; 32]).unwrap(),
        ]
    }

    fn verify<'a>(
        &self,
        token: &Token,
        call: &CallIntent<'a>,
        now: u64,
    ) -> Result<VerifiedToken<'a>, TokenError> {
        self.verifier
            .verify(token.as_bytes(), call, now, &mut NonceLedger::new(16))
    }
}

#[test]
fn round_trip_both_forms() {
    let f = fixture();
    for token in f.tokens() {
        let mut ledger = NonceLedger::new(16);
        let v = f
            .verifier
            .verify(token.as_bytes(), &f.call("fs.read"), NOW, &mut ledger)
            .unwrap();
        assert_eq!(v.form(), token.form());
        assert_eq!(v.issuer(), &NODE);
        assert_eq!(v.principal(), &f.claims.principal);
        assert_eq!(v.agent(), &f.claims.agent);
        assert_eq!(v.session(), &f.claims.session);
        assert_eq!(v.tool(), "fs.read");
        assert_eq!(v.args_digest(), &f.digest);
        assert_eq!(v.not_after_unix_ms(), EXP);
        assert_eq!(v.nonce(), &f.claims.nonce);
        assert_eq!(v.blocks(), 0);
        let text = token.to_base64url();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Token::from_base64url(&text).unwrap(), token);
        assert_eq!(Token::decode(token.as_bytes()).unwrap(), token);
    }
}

#[test]
fn agent_principals_round_trip() {
    let mut f = fixture();
    f.claims.principal = PrincipalId::Agent {
        agent: AgentId::from_bytes([1; 16]),
        node: OTHER_NODE,
    };
    for token in f.tokens() {
        f.verify(&token, &f.call("fs.read"), NOW).unwrap();
    }
}

#[test]
fn refusals_each_have_their_variant() {
    let f = fixture();
    for token in f.tokens() {
        let t = &token;
        let other_digest = args_digest(&json!({"path": "/etc/shadow", "limit": 100}));
        let mut call = f.call("fs.read");
        call.args_digest = &other_digest;
        assert_eq!(
            f.verify(t, &call, NOW).unwrap_err(),
            TokenError::WrongArguments {
                tool: "fs.read".into()
            }
        );
        assert_eq!(
            f.verify(t, &f.call("fs.write"), NOW).unwrap_err(),
            TokenError::WrongTool {
                tool: "fs.write".into()
            }
        );
        let session: SessionId = "s-other".parse().unwrap();
        let mut call = f.call("fs.read");
        call.session = &session;
        assert_eq!(
            f.verify(t, &call, NOW).unwrap_err(),
            TokenError::WrongSession
        );
        let principal = PrincipalId::Operator(Fingerprint([0x33; 32]));
        let mut call = f.call("fs.read");
        call.principal = &principal;
        assert_eq!(
            f.verify(t, &call, NOW).unwrap_err(),
            TokenError::WrongPrincipal
        );
        let agent = AgentId::from_bytes([0x45; 16]);
        let mut call = f.call("fs.read");
        call.agent = &agent;
        assert_eq!(f.verify(t, &call, NOW).unwrap_err(), TokenError::WrongAgent);
        assert_eq!(
            f.verify(t, &f.call("fs.read"), EXP).unwrap_err(),
            TokenError::Expired {
                not_after_unix_ms: EXP,
                now_unix_ms: EXP
            }
        );
        let mut ledger = NonceLedger::new(16);
        f.verifier
            .verify(t.as_bytes(), &f.call("fs.read"), NOW, &mut ledger)
            .unwrap();
        assert_eq!(
            f.verifier
                .verify(t.as_bytes(), &f.call("fs.stat"), NOW + 1, &mut ledger)
                .unwrap_err(),
            TokenError::Replayed
        );
        assert_eq!(
            Verifier::new()
                .verify(t.as_bytes(), &f.call("fs.read"), NOW, &mut ledger)
                .unwrap_err(),
            TokenError::UnknownIssuer { issuer: NODE }
        );
        let mut bytes = t.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let expected = match t.form() {
            TokenForm::Mac => TokenError::BadMac,
            _ => TokenError::BadProof,
        };
        assert_eq!(
            f.verifier
                .verify(&bytes, &f.call("fs.read"), NOW, &mut ledger)
                .unwrap_err(),
            expected
        );
        bytes.truncate(40);
        assert!(matches!(
            f.verifier
                .verify(&bytes, &f.call("fs.read"), NOW, &mut ledger)
                .unwrap_err(),
            TokenError::Malformed(_)
        ));
    }
}

#[test]
fn other_keys_are_refused() {
    let f = fixture();
    let mut ledger = NonceLedger::new(16);
    // A MAC key of the same node but another secret.
    let forged = MacKey::new(NODE, [0x5b; 32]).mint(&f.claims).unwrap();
    assert_eq!(
        f.verifier
            .verify(forged.as_bytes(), &f.call("fs.read"), NOW, &mut ledger)
            .unwrap_err(),
        TokenError::BadMac
    );
    // An Ed25519 key that is not the issuer's.
    let forged = SigningIdentity::from_seed(NODE, [0x6c; 32])
        .mint(&f.claims, [1; 32])
        .unwrap();
    assert_eq!(
        f.verifier
            .verify(forged.as_bytes(), &f.call("fs.read"), NOW, &mut ledger)
            .unwrap_err(),
        TokenError::BadSignature { block: 0 }
    );
    // A MAC token of another node.
    let other = MacKey::new(OTHER_NODE, [0x5a; 32]).mint(&f.claims).unwrap();
    assert_eq!(
        f.verifier
            .verify(other.as_bytes(), &f.call("fs.read"), NOW, &mut ledger)
            .unwrap_err(),
        TokenError::UnknownIssuer { issuer: OTHER_NODE }
    );
    assert!(ledger.is_empty(), "refused tokens spend no nonce");
}

#[test]
fn attenuation_narrows_both_forms() {
    let f = fixture();
    for token in f.tokens() {
        let narrow = Attenuation {
            not_after_unix_ms: Some(NOW + 10),
            grants: Some(vec![Grant::new("fs.read", f.digest)]),
        };
        let t1 = match token.form() {
            TokenForm::Mac => token.attenuate_mac(&narrow).unwrap(),
            _ => token.attenuate_ed25519(&narrow, [0xa1; 32]).unwrap(),
        };
        // Only expiry, then nothing (a restating block is allowed).
        let t2 = match token.form() {
            TokenForm::Mac => t1.attenuate_mac(&Attenuation::default()).unwrap(),
            _ => t1
                .attenuate_ed25519(&Attenuation::default(), [0xa2; 32])
                .unwrap(),
        };
        assert_eq!(t2.blocks(), 2);
        for t in [&t1, &t2] {
            let v = f.verify(t, &f.call("fs.read"), NOW).unwrap();
            assert_eq!(v.not_after_unix_ms(), NOW + 10);
            assert_eq!(
                f.verify(t, &f.call("fs.stat"), NOW).unwrap_err(),
                TokenError::WrongTool {
                    tool: "fs.stat".into()
                }
            );
            assert_eq!(
                f.verify(t, &f.call("fs.read"), NOW + 10).unwrap_err(),
                TokenError::Expired {
                    not_after_unix_ms: NOW + 10,
                    now_unix_ms: NOW + 10
                }
            );
        }
        // The root and its attenuations share one nonce: one use in all.
        let mut ledger = NonceLedger::new(16);
        f.verifier
            .verify(t2.as_bytes(), &f.call("fs.read"), NOW, &mut ledger)
            .unwrap();
        assert_eq!(
            f.verifier
                .verify(token.as_bytes(), &f.call("fs.stat"), NOW, &mut ledger)
                .unwrap_err(),
            TokenError::Replayed
        );
        // Removing the last block is detected.
        let cut = {
            let b = t2.as_bytes();
            let block_len = t2.as_bytes().len() - t1.as_bytes().len();
            let mut v = b[..b.len() - block_len - 32].to_vec();
            v.extend_from_slice(&b[b.len() - 32..]);
            v
        };
        let expected = match token.form() {
            TokenForm::Mac => TokenError::BadMac,
            _ => TokenError::BadProof,
        };
        assert_eq!(
            f.verifier
                .verify(&cut, &f.call("fs.read"), NOW, &mut NonceLedger::new(4))
                .unwrap_err(),
            expected
        );
    }
}

#[test]
fn attenuate_refuses_to_widen() {
    let f = fixture();
    for token in f.tokens() {
        let att = |a: &Attenuation| match token.form() {
            TokenForm::Mac => token.attenuate_mac(a),
            _ => token.attenuate_ed25519(a, [3; 32]),
        };
        assert_eq!(
            att(&Attenuation {
                not_after_unix_ms: Some(EXP + 1),
                grants: None
            })
            .unwrap_err(),
            TokenError::Widening {
                block: 1,
                what: "expiry"
            }
        );
        assert_eq!(
            att(&Attenuation {
                not_after_unix_ms: None,
                grants: Some(vec![Grant::new("fs.write", f.digest)])
            })
            .unwrap_err(),
            TokenError::Widening {
                block: 1,
                what: "grants"
            }
        );
        assert!(matches!(
            att(&Attenuation {
                not_after_unix_ms: None,
                grants: Some(vec![])
            })
            .unwrap_err(),
            TokenError::Unencodable(_)
        ));
    }
    let [mac, ed] = f.tokens();
    assert_eq!(
        mac.attenuate_ed25519(&Attenuation::default(), [0; 32])
            .unwrap_err(),
        TokenError::WrongForm {
            expected: TokenForm::Ed25519,
            found: TokenForm::Mac
        }
    );
    assert_eq!(
        ed.attenuate_mac(&Attenuation::default()).unwrap_err(),
        TokenError::WrongForm {
            expected: TokenForm::Mac,
            found: TokenForm::Ed25519
        }
    );
}

#[test]
fn verifier_refuses_widening_blocks() {
    let f = fixture();
    for token in f.tokens() {
        // Properly signed / MACed by the holder, but widening.
        let later = append_unchecked(&token, EXP + 1, &[], [4; 32]);
        assert_eq!(
            f.verify(&later, &f.call("fs.read"), NOW).unwrap_err(),
            TokenError::Widening {
                block: 1,
                what: "expiry"
            }
        );
        let narrowed = append_unchecked(&token, EXP, &[Grant::new("fs.read", f.digest)], [5; 32]);
        f.verify(&narrowed, &f.call("fs.read"), NOW).unwrap();
        let wider = append_unchecked(
            &narrowed,
            EXP,
            &[
                Grant::new("fs.read", f.digest),
                Grant::new("fs.stat", f.digest),
            ],
            [6; 32],
        );
        assert_eq!(
            f.verify(&wider, &f.call("fs.stat"), NOW).unwrap_err(),
            TokenError::Widening {
                block: 2,
                what: "grants"
            }
        );
        let unknown = append_unchecked(&token, EXP, &[Grant::new("shell.exec", f.digest)], [7; 32]);
        assert_eq!(
            f.verify(&unknown, &f.call("shell.exec"), NOW).unwrap_err(),
            TokenError::Widening {
                block: 1,
                what: "grants"
            }
        );
    }
}

#[test]
fn ed25519_block_signed_by_another_key_is_refused() {
    let f = fixture();
    let token = f.id.mint(&f.claims, [0x99; 32]).unwrap();
    // Replace the proof by another seed, then attenuate: the block is signed
    // by a key the root did not name.
    let mut bytes = token.as_bytes().to_vec();
    let n = bytes.len();
    bytes[n - 32..].copy_from_slice(&[0x98; 32]);
    let stolen = Token {
        bytes,
        form: TokenForm::Ed25519,
    };
    assert_eq!(
        stolen
            .attenuate_ed25519(&Attenuation::default(), [1; 32])
            .unwrap_err(),
        TokenError::BadProof
    );
    let forged = append_unchecked(&stolen, EXP, &[], [1; 32]);
    assert_eq!(
        f.verify(&forged, &f.call("fs.read"), NOW).unwrap_err(),
        TokenError::BadSignature { block: 1 }
    );
}

#[test]
fn limits_are_enforced() {
    let mut f = fixture();
    let mut token = f.mac.mint(&f.claims).unwrap();
    for _ in 0..MAX_BLOCKS {
        token = token.attenuate_mac(&Attenuation::default()).unwrap();
    }
    f.verify(&token, &f.call("fs.read"), NOW).unwrap();
    assert!(matches!(
        token.attenuate_mac(&Attenuation::default()),
        Err(TokenError::Unencodable(_))
    ));
    let over = append_unchecked(&token, EXP, &[], [0; 32]);
    assert!(matches!(
        f.verify(&over, &f.call("fs.read"), NOW).unwrap_err(),
        TokenError::Malformed(DecodeError::LimitExceeded {
            field: "blocks",
            ..
        })
    ));
    f.claims.grants = vec![Grant::new("x".repeat(MAX_TOOL_LEN + 1), f.digest)];
    assert!(matches!(
        f.mac.mint(&f.claims),
        Err(TokenError::Unencodable(_))
    ));
    f.claims.grants = (0..=MAX_GRANTS)
        .map(|i| Grant::new(format!("t{i}"), f.digest))
        .collect();
    assert!(matches!(
        f.mac.mint(&f.claims),
        Err(TokenError::Unencodable(_))
    ));
    f.claims.grants = vec![];
    assert!(matches!(
        f.mac.mint(&f.claims),
        Err(TokenError::Unencodable(_))
    ));
    assert!(matches!(
        Token::decode(&vec![0; MAX_TOKEN_BYTES + 1]),
        Err(TokenError::Malformed(DecodeError::LimitExceeded {
            field: "token",
            ..
        }))
    ));
    assert!(matches!(
        Token::from_base64url(&"A".repeat(MAX_TOKEN_TEXT + 1)),
        Err(TokenError::Malformed(DecodeError::LimitExceeded { .. }))
    ));
    assert!(matches!(
        Token::from_base64url("MXPTOK=="),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn grants_are_canonical() {
    let mut f = fixture();
    let a = f.mac.mint(&f.claims).unwrap();
    f.claims.grants.reverse();
    f.claims.grants.push(f.claims.grants[0].clone());
    assert_eq!(
        f.mac.mint(&f.claims).unwrap(),
        a,
        "order and duplicates do not change the token"
    );
}

#[test]
fn weak_issuer_keys_are_refused() {
    let mut v = Verifier::new();
    let weak = ed25519_dalek::VerifyingKey::from_bytes(&[0; 32]);
    if let Ok(weak) = weak {
        assert_eq!(
            v.add_issuer(NODE, weak).unwrap_err(),
            TokenError::WeakIssuerKey { issuer: NODE }
        );
    }
}

#[test]
fn errors_never_show_keys() {
    let f = fixture();
    let v = format!("{:?} {:?} {:?}", f.verifier, f.mac, f.id);
    assert!(
        !v.contains("5a5a")
            && !v.contains("90, 90")
            && !v.contains("6b6b")
            && !v.contains("107, 107")
    );
    let [mac, ed] = f.tokens();
    assert_eq!(
        format!("{mac:?}"),
        format!("Token {{ form: Mac, len: {}, .. }}", mac.as_bytes().len())
    );
    assert!(!format!("{ed:?}").contains("153"));
}

fn arb_subset(n: usize) -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Token::decode(&bytes);
        let f = fixture();
        let _ = f.verifier.verify(&bytes, &f.call("fs.read"), NOW, &mut NonceLedger::new(4));
    }

    #[test]
    fn decoder_never_panics_on_token_like_bytes(cut in 0usize..400, flip in any::<(usize, u8)>(), ed in any::<bool>()) {
        let f = fixture();
        let [mac, edt] = f.tokens();
        let t = if ed { edt } else { mac };
        let t = if ed { t.attenuate_ed25519(&Attenuation::default(), [1; 32]).unwrap() } else { t.attenuate_mac(&Attenuation::default()).unwrap() };
        let mut bytes = t.as_bytes().to_vec();
        let i = flip.0 % bytes.len();
        bytes[i] ^= flip.1 | 1;
        bytes.truncate(bytes.len().saturating_sub(cut % 8 * (cut / 8)));
        prop_assert!(f.verifier.verify(&bytes, &f.call("fs.read"), NOW, &mut NonceLedger::new(4)).is_err());
    }

    #[test]
    fn narrowing_verifies_widening_is_refused(
        keep1 in arb_subset(3),
        keep2 in arb_subset(3),
        exp1 in 0u64..120_000,
        exp2 in 0u64..120_000,
        ed in any::<bool>(),
    ) {
        let f = fixture();
        let [mac, edt] = f.tokens();
        let root = if ed { edt } else { mac };
        let mut all = f.claims.grants.clone();
        all.sort_by(|a, b| a.tool.cmp(&b.tool));
        let pick = |keep: &[bool]| -> Vec<Grant> {
            all.iter().zip(keep).filter(|(_, k)| **k).map(|(g, _)| g.clone()).collect()
        };
        let (g1, g2) = (pick(&keep1), pick(&keep2));
        let (e1, e2) = (NOW + exp1, NOW + exp2);
        let t1 = append_unchecked(&root, e1, &g1, [8; 32]);
        let t2 = append_unchecked(&t1, e2, &g2, [9; 32]);
        let subset1 = true; // every grant of the root's
        let eff1: Vec<Grant> = if g1.is_empty() { all.clone() } else { g1.clone() };
        let subset2 = g2.iter().all(|g| eff1.contains(g));
        let eff2: Vec<Grant> = if g2.is_empty() { eff1.clone() } else { g2.clone() };
        let expected_err = if e1 > EXP {
            Some(TokenError::Widening { block: 1, what: "expiry" })
        } else if !subset1 {
            None
        } else if e2 > e1 {
            Some(TokenError::Widening { block: 2, what: "expiry" })
        } else if !subset2 {
            Some(TokenError::Widening { block: 2, what: "grants" })
        } else {
            None
        };
        let call = f.call("fs.read");
        let got = f.verify(&t2, &call, NOW);
        match expected_err {
            Some(e) => prop_assert_eq!(got.unwrap_err(), e),
            None => {
                let granted = eff2.iter().any(|g| g.tool == "fs.read");
                if e2 == NOW {
                    prop_assert!(matches!(got, Err(TokenError::Expired { .. })), "narrowed to now: expired");
                } else if granted {
                    prop_assert_eq!(got.unwrap().not_after_unix_ms(), e2);
                } else {
                    prop_assert_eq!(got.unwrap_err(), TokenError::WrongTool { tool: "fs.read".into() });
                }
            }
        }
    }
}

#[test]
fn session_syntax_is_checked_on_decode() {
    let f = fixture();
    let token = f.mac.mint(&f.claims).unwrap();
    let mut bytes = token.as_bytes().to_vec();
    let at = bytes
        .windows(f.claims.session.as_str().len())
        .position(|w| w == f.claims.session.as_str().as_bytes())
        .unwrap();
    bytes[at + 3] = b' ';
    assert!(matches!(
        Token::decode(&bytes),
        Err(TokenError::Malformed(DecodeError::InvalidValue {
            field: "session",
            ..
        }))
    ));
    assert_eq!(
        f.verifier
            .verify(&bytes, &f.call("fs.read"), NOW, &mut NonceLedger::new(1))
            .unwrap_err(),
        TokenError::BadMac
    );
}
