//! The audit chain: encoding round trips, and tamper detection on a
//! 10,000-event log (every field of a record, deletion, duplication, swap,
//! insertion, truncation, rewritten history).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use mxp_governance::audit::{
    AuditEvent, Chain, ChainError, ChainHead, ChainVerifier, EventData, EventKind, Limits,
    MerkleLog, PolicyEffect, Record, RecordedOutput, ToolOutcome, TreeHead, verify, verify_against,
};
use mxp_protocol::{AgentId, Fingerprint, PrincipalId, SessionId};
use serde_json::json;

const N: usize = 10_000;

fn kind_for(i: u64) -> EventKind {
    match i % 11 {
        0 => EventKind::PolicyDecision {
            effect: PolicyEffect::Allow,
            policy_ids: vec!["allow-echo".into(), format!("p{i}")],
        },
        1 => EventKind::TokenMint,
        2 => EventKind::TokenVerification {
            accepted: i.is_multiple_of(2),
        },
        3 => EventKind::ToolExecution {
            outcome: ToolOutcome::Landed,
            output: RecordedOutput::Recorded(format!("output {i}").into_bytes()),
        },
        4 => EventKind::ToolExecution {
            outcome: ToolOutcome::InDoubt,
            output: RecordedOutput::redact(b"secret"),
        },
        5 => EventKind::LifecycleChange,
        6 => EventKind::ActorRestart,
        7 => EventKind::ApprovalRequest,
        8 => EventKind::ApprovalDecision { approved: true },
        9 => EventKind::KillSwitch { engaged: false },
        _ => EventKind::NodeConfig {
            digest: [i as u8; 32],
        },
    }
}

fn event(i: u64) -> AuditEvent {
    let data = EventData::from_value(&json!({"tool": "echo", "n": i, "note": "x\"y"})).unwrap();
    let mut e = AuditEvent::new(1_700_000_000_000 + i, kind_for(i), data).with_trace(i * 7 + 1);
    if !i.is_multiple_of(3) {
        e = e.with_session(format!("s-{i}").parse().unwrap());
    }
    if i % 4 == 1 {
        e = e.with_principal(PrincipalId::Agent {
            agent: AgentId::from_bytes([i as u8; 16]),
            node: Fingerprint([0xab; 32]),
        });
    } else if i % 4 == 2 {
        e = e.with_principal(PrincipalId::Peer(Fingerprint([i as u8; 32])));
    }
    e
}

fn build(n: usize) -> (Vec<Vec<u8>>, MerkleLog) {
    let mut chain = Chain::new();
    let mut tree = MerkleLog::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let r = chain.append(event(i)).unwrap();
        tree.append(r.leaf_hash());
        out.push(r.encode());
    }
    (out, tree)
}

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn records_round_trip_and_chain_links() {
    let mut chain = Chain::new();
    assert_eq!(chain.head(), ChainHead::GENESIS);
    for i in 0..50 {
        let r = chain.append(event(i)).unwrap();
        assert_eq!(r.seq(), i);
        let bytes = r.encode();
        let back = Record::decode(&bytes, &limits()).unwrap();
        assert_eq!(back, r);
        assert!(back.hash_is_valid());
        // Every strict prefix fails to decode, without panicking.
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut], &limits()).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(&longer, &limits()).is_err());
    }
    assert_eq!(chain.head().next_seq, 50);
}

#[test]
fn genesis_record_is_pinned() {
    // A fixed event at genesis: its encoding and hash are part of the format.
    let data = EventData::from_value(&json!({"b": 2, "a": "x"})).unwrap();
    let e = AuditEvent::new(1_000, EventKind::KillSwitch { engaged: true }, data)
        .with_trace(9)
        .with_session("s1".parse::<SessionId>().unwrap());
    let r = Chain::new().append(e).unwrap();
    let enc = r.event().canonical_encoding();
    let mut expected = b"mxp-audit-v1 event".to_vec();
    for (tag, bytes) in [
        (1u8, 0u64.to_le_bytes().to_vec()),
        (2, 1000u64.to_le_bytes().to_vec()),
        (3, 9u64.to_le_bytes().to_vec()),
        (4, b"s1".to_vec()),
        (5, vec![]),
        (6, vec![9, 1, 1, 0, 0, 0, 1]),
        (7, br#"{"a":"x","b":2}"#.to_vec()),
    ] {
        expected.push(tag);
        expected.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        expected.extend_from_slice(&bytes);
    }
    assert_eq!(enc, expected);
    let mut h = blake3::Hasher::new();
    h.update(&[0u8; 32]);
    h.update(&expected);
    assert_eq!(r.hash(), h.finalize().as_bytes());
    assert_eq!(r.prev_hash(), &[0u8; 32]);
}

#[test]
fn limits_are_checked_before_allocating_and_on_append() {
    let mut chain = Chain::new();
    let big = EventKind::ToolExecution {
        outcome: ToolOutcome::Landed,
        output: RecordedOutput::Recorded(vec![0; 300 * 1024]),
    };
    assert!(
        chain
            .append(AuditEvent::new(0, big, EventData::empty()))
            .is_err()
    );
    assert_eq!(chain.head(), ChainHead::GENESIS);
    // A record whose data field declares 4 GiB is refused by its limit, not by running out of bytes.
    let r = chain.append(event(0)).unwrap();
    let mut bytes = r.event().canonical_encoding();
    let data_start = bytes.len() - r.event().data.as_bytes().len() - 4;
    bytes.truncate(data_start);
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = Record::decode(&bytes, &limits()).unwrap_err();
    assert_eq!(err.class(), "limit_exceeded", "{err}");
}

#[test]
fn a_clean_log_verifies_and_matches_its_tree() {
    let (log, tree) = build(N);
    let v = verify(&log, &limits()).unwrap();
    assert_eq!(v.count(), N as u64);
    assert_eq!(v.tree, Some(tree.head()));
    verify_against(&log, &limits(), &tree.head()).unwrap();
    // Against an older checkpoint too: the log only grew.
    let old = TreeHead {
        size: 1234,
        root: tree.root_at(1234).unwrap(),
    };
    verify_against(&log, &limits(), &old).unwrap();
    verify_against(
        Vec::<Vec<u8>>::new(),
        &limits(),
        &TreeHead {
            size: 0,
            root: tree.root_at(0).unwrap(),
        },
    )
    .unwrap();
    // Verifying from the middle continues the chain.
    let head = ChainHead {
        next_seq: 5000,
        last_hash: *Record::decode(&log[4999], &limits()).unwrap().hash(),
    };
    let mut cv = ChainVerifier::from_head(head, limits());
    for r in &log[5000..] {
        cv.push(r).unwrap();
    }
    assert_eq!(cv.finish().unwrap().count(), 5000);
}

/// The byte ranges of each field of an encoded record, in order: context,
/// the seven fields (tag, length, value), prev_hash, hash.
fn field_spans(bytes: &[u8]) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut spans = vec![("context", 0..18)];
    let mut pos = 18;
    for name in [
        "seq",
        "time",
        "trace",
        "session",
        "principal",
        "kind",
        "data",
    ] {
        let len = u32::from_le_bytes(bytes[pos + 1..pos + 5].try_into().unwrap()) as usize;
        spans.push((name, pos..pos + 5 + len));
        pos += 5 + len;
    }
    spans.push(("prev_hash", pos..pos + 32));
    spans.push(("hash", pos + 32..pos + 64));
    assert_eq!(pos + 64, bytes.len());
    spans
}

#[test]
fn every_bit_flip_in_every_field_is_detected_at_its_index() {
    let (log, _) = build(N);
    let heads: Vec<ChainHead> = std::iter::once(ChainHead::GENESIS)
        .chain(log.iter().map(|b| {
            let r = Record::decode(b, &limits()).unwrap();
            ChainHead {
                next_seq: r.seq() + 1,
                last_hash: *r.hash(),
            }
        }))
        .collect();
    let mut detected = 0usize;
    // Records spread over the log (every kind is represented), and the last.
    let targets: Vec<usize> = (0..N).step_by(97).chain([N - 1]).collect();
    let mut copy = log.clone();
    for (t, &i) in targets.iter().enumerate() {
        for (field, span) in field_spans(&log[i]) {
            // Every bit of every field up to 64 bytes; every 7th bit of longer ones.
            let step = if span.len() <= 64 { 1 } else { 7 };
            for bit in (0..span.len() * 8).step_by(step) {
                let byte = span.start + bit / 8;
                copy[i][byte] ^= 1 << (bit % 8);
                // The record and the one after it, continuing from the true
                // head before it (a full verification per bit would be slow).
                let mut v = ChainVerifier::from_head(heads[i], limits());
                let err = copy[i..(i + 2).min(N)]
                    .iter()
                    .try_for_each(|r| v.push(r).map(drop))
                    .expect_err(field);
                assert_eq!(
                    err.index(),
                    Some(0),
                    "record {i} field {field} bit {bit}: {err}"
                );
                // From genesis, for the first bit of each field of every 13th target.
                if bit == 0 && t % 13 == 0 {
                    let err = verify(&copy, &limits()).expect_err(field);
                    assert_eq!(
                        err.index(),
                        Some(i as u64),
                        "record {i} field {field}: {err}"
                    );
                }
                copy[i][byte] ^= 1 << (bit % 8);
                detected += 1;
            }
        }
    }
    assert_eq!(copy, log);
    assert!(detected > 50_000, "{detected} flips tried");
    eprintln!(
        "{detected} single-bit flips over {} records: all detected at the right index",
        targets.len()
    );
}

#[test]
fn deletion_duplication_swap_insertion_and_truncation_are_detected() {
    let (log, tree) = build(N);
    let full = tree.head();
    for i in [0usize, 1, 2, 500, 4321, N - 2] {
        // Deleted: the next record's seq skips.
        let mut l = log.clone();
        l.remove(i);
        let err = verify(&l, &limits()).unwrap_err();
        assert!(
            matches!(err, ChainError::SeqGap { index, .. } if index == i as u64),
            "delete {i}: {err}"
        );

        // Duplicated: the copy's seq goes back.
        let mut l = log.clone();
        l.insert(i + 1, log[i].clone());
        let err = verify(&l, &limits()).unwrap_err();
        assert!(
            matches!(err, ChainError::SeqOutOfOrder { index, .. } if index == i as u64 + 1),
            "duplicate {i}: {err}"
        );

        // Swapped with the next: seq skips at i.
        let mut l = log.clone();
        l.swap(i, i + 1);
        let err = verify(&l, &limits()).unwrap_err();
        assert!(
            matches!(err, ChainError::SeqGap { index, .. } if index == i as u64),
            "swap {i}: {err}"
        );

        // Inserted, a record of another log with the right seq: it links nowhere.
        let mut other = Chain::new();
        let mut foreign = None;
        for s in 0..=i as u64 {
            let mut e = event(s);
            e.trace_id ^= 0xdead;
            foreign = Some(other.append(e).unwrap());
        }
        let mut l = log.clone();
        l.insert(i, foreign.unwrap().encode());
        let err = verify(&l, &limits()).unwrap_err();
        if i == 0 {
            // At genesis any well-formed record links to the zero hash; the
            // displaced original record 0 is then out of order.
            assert!(
                matches!(err, ChainError::SeqOutOfOrder { index: 1, .. }),
                "insert {i}: {err}"
            );
        } else {
            assert!(
                matches!(err, ChainError::PrevMismatch { index, .. } if index == i as u64),
                "insert {i}: {err}"
            );
        }

        // Inserted, a forgery that links correctly (the forger knows the
        // previous hash): detected at the displaced original.
        let prev = *Record::decode(&log[i], &limits()).unwrap().prev_hash();
        let mut forged = event(i as u64);
        forged.seq = i as u64;
        forged.time_ms += 1;
        let mut l = log.clone();
        l.insert(i, Record::new(forged, prev).encode());
        let err = verify(&l, &limits()).unwrap_err();
        assert!(
            matches!(err, ChainError::SeqOutOfOrder { index, .. } if index == i as u64 + 1),
            "forged insert {i}: {err}"
        );
        // ...and the forged log can never match the checkpoint.
        assert!(verify_against(&l, &limits(), &full).is_err());
    }
    // Truncation: the chain alone cannot tell, a checkpoint of the full size can.
    for keep in [0usize, 1, N / 2, N - 1] {
        let cut = &log[..keep];
        assert_eq!(verify(cut, &limits()).unwrap().count(), keep as u64);
        let err = verify_against(cut, &limits(), &full).unwrap_err();
        assert_eq!(
            err,
            ChainError::Truncated {
                have: keep as u64,
                checkpoint_size: N as u64
            }
        );
    }
    // Undecodable bytes in the middle.
    let mut l = log.clone();
    l[777] = b"garbage".to_vec();
    assert!(matches!(
        verify(&l, &limits()).unwrap_err(),
        ChainError::Undecodable { index: 777, .. }
    ));
}

#[test]
fn rewritten_history_is_detected_against_a_checkpoint_held_elsewhere() {
    let (log, tree) = build(N);
    // A witness holds the checkpoint of the honest log.
    let held = tree.head();
    // The node rewrites event 6000 and recomputes every hash after it.
    let mut chain = Chain::new();
    let mut rewritten = Vec::new();
    for i in 0..N as u64 {
        let mut e = event(i);
        if i == 6000 {
            e.kind = EventKind::PolicyDecision {
                effect: PolicyEffect::Deny,
                policy_ids: vec!["nothing-to-see".into()],
            };
        }
        rewritten.push(chain.append(e).unwrap().encode());
    }
    // Internally consistent...
    verify(&rewritten, &limits()).unwrap();
    // ...but not the history the witness saw.
    assert_eq!(
        verify_against(&rewritten, &limits(), &held).unwrap_err(),
        ChainError::RootMismatch { size: N as u64 }
    );
    // A checkpoint from before the rewrite still matches; one after it does not.
    let before = TreeHead {
        size: 6000,
        root: tree.root_at(6000).unwrap(),
    };
    verify_against(&rewritten, &limits(), &before).unwrap();
    let after = TreeHead {
        size: 6001,
        root: tree.root_at(6001).unwrap(),
    };
    assert!(verify_against(&rewritten, &limits(), &after).is_err());
    let _ = log;
}
