//! Capability-token verification beside the one cryptographic operation it
//! cannot avoid: a bare BLAKE3 keyed hash of the same bytes (MAC form) and a
//! bare Ed25519 signature verification of the same message (Ed25519 form).
//!
//! Run: `cargo bench -p mxp-benches --bench tokens`
//! Ratios to read from one run:
//! * `token_mac/verify` ÷ `token_mac/keyed_hash_alone`  (goal ≤ 1.2)
//! * `token_ed25519/verify` ÷ `token_ed25519/verify_alone`  (goal ≤ 1.1)
//!
//! `verify` is the whole check a Call makes: decode, MAC or signature and
//! proof, expiry, principal, agent, session, tool, arguments, and spending
//! the nonce in a ledger kept at a steady ~1000 live nonces (each iteration
//! verifies a freshly minted token; minting is outside the timed region).
//! `verify_replayed` is the same minus the ledger insertion: every check
//! runs, then the spent nonce refuses the token.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::cell::Cell;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mxp_governance::token::args::args_digest;
use mxp_governance::token::ed25519_dalek::{Signature, Verifier as _};
use mxp_governance::token::{
    ArgsDigest, CallIntent, Claims, Grant, MacKey, Nonce, NonceLedger, SigningIdentity, Token,
    Verifier, blake3,
};
use mxp_protocol::{AgentId, Fingerprint, PrincipalId};

const NODE: Fingerprint = Fingerprint([0x11; 32]);
const SECRET: [u8; 32] = [0x5a; 32];
/// Each token lives this long; one is verified per simulated millisecond.
const LIFETIME_MS: u64 = 1000;

fn claims(digest: ArgsDigest, nonce: u64, now: u64) -> Claims {
    let mut n = [0u8; 16];
    n[..8].copy_from_slice(&nonce.to_le_bytes());
    Claims {
        principal: PrincipalId::Agent {
            agent: AgentId::from_bytes([0x21; 16]),
            node: Fingerprint([0x33; 32]),
        },
        agent: AgentId::from_bytes([0x44; 16]),
        session: "s-0123456789abcdef0123456789abcdef".parse().unwrap(),
        grants: vec![Grant::new("fs.read_file", digest)],
        not_after_unix_ms: now + LIFETIME_MS,
        nonce: Nonce(n),
    }
}

fn call<'a>(c: &'a Claims, digest: &'a ArgsDigest) -> CallIntent<'a> {
    CallIntent {
        principal: &c.principal,
        agent: &c.agent,
        session: &c.session,
        tool: "fs.read_file",
        args_digest: digest,
    }
}

fn digest() -> ArgsDigest {
    args_digest(&serde_json::json!({
        "path": "/srv/data/reports/2026-11/summary.csv",
        "encoding": "utf-8",
        "max_bytes": 65536
    }))
}

fn mac(c: &mut Criterion) {
    let digest = digest();
    let key = MacKey::new(NODE, SECRET);
    let verifier = Verifier::new().with_mac_key(key.clone());
    let base = claims(digest, 0, 0);
    let token = key.mint(&base).unwrap();
    let bytes = token.as_bytes();
    // The bytes the MAC covers (all but the 32-byte tag), under a key of the
    // same size: the floor of any MAC check.
    let covered = &bytes[..bytes.len() - 32];
    let raw_key = [0x5a; 32];
    println!("MAC token: {} bytes, {} MACed", bytes.len(), covered.len());

    let mut group = c.benchmark_group("token_mac");
    group.bench_function("keyed_hash_alone", |b| {
        b.iter(|| blake3::keyed_hash(black_box(&raw_key), black_box(covered)))
    });
    let clock = Cell::new(0u64);
    let mut ledger = NonceLedger::new(4 * LIFETIME_MS as usize);
    group.bench_function("verify", |b| {
        b.iter_batched(
            || {
                let now = clock.get() + 1;
                clock.set(now);
                (key.mint(&claims(digest, now, now)).unwrap(), now)
            },
            |(t, now): (Token, u64)| {
                verifier
                    .verify(
                        black_box(t.as_bytes()),
                        &call(&base, &digest),
                        now,
                        &mut ledger,
                    )
                    .map(|v| v.blocks())
            },
            BatchSize::SmallInput,
        )
    });
    let mut spent = NonceLedger::new(4);
    verifier
        .verify(bytes, &call(&base, &digest), 1, &mut spent)
        .unwrap();
    group.bench_function("verify_replayed", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(bytes), &call(&base, &digest), 2, &mut spent)
                .is_err()
        })
    });
    group.finish();
}

fn ed25519(c: &mut Criterion) {
    let digest = digest();
    let id = SigningIdentity::from_seed(NODE, [0x6b; 32]);
    let mut verifier = Verifier::new();
    verifier.add_issuer(NODE, id.verifying_key()).unwrap();
    let base = claims(digest, 0, 0);
    let token = id.mint(&base, [0x99; 32]).unwrap();
    let bytes = token.as_bytes();
    // The message the issuer signed (all but signature and proof) and the
    // signature itself: the floor of any signature check.
    let signed = &bytes[..bytes.len() - 96];
    let signature = Signature::from_bytes(
        bytes[bytes.len() - 96..bytes.len() - 32]
            .try_into()
            .unwrap(),
    );
    let vk = id.verifying_key();
    vk.verify(signed, &signature).unwrap();
    println!(
        "Ed25519 token: {} bytes, {} signed",
        bytes.len(),
        signed.len()
    );

    let mut group = c.benchmark_group("token_ed25519");
    group.bench_function("verify_alone", |b| {
        b.iter(|| vk.verify(black_box(signed), black_box(&signature)).is_ok())
    });
    let clock = Cell::new(0u64);
    let mut ledger = NonceLedger::new(4 * LIFETIME_MS as usize);
    group.bench_function("verify", |b| {
        b.iter_batched(
            || {
                let now = clock.get() + 1;
                clock.set(now);
                (id.mint(&claims(digest, now, now), [0x99; 32]).unwrap(), now)
            },
            |(t, now): (Token, u64)| {
                verifier
                    .verify(
                        black_box(t.as_bytes()),
                        &call(&base, &digest),
                        now,
                        &mut ledger,
                    )
                    .map(|v| v.blocks())
            },
            BatchSize::SmallInput,
        )
    });
    let mut spent = NonceLedger::new(4);
    verifier
        .verify(bytes, &call(&base, &digest), 1, &mut spent)
        .unwrap();
    group.bench_function("verify_replayed", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(bytes), &call(&base, &digest), 2, &mut spent)
                .is_err()
        })
    });
    group.finish();
}

criterion_group!(benches, mac, ed25519);
criterion_main!(benches);
