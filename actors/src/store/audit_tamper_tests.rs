//! Tamper detection at store level, on a 10,000-event log in a real store
//! folder, each tampering done to the bytes of its audit file
//! ([`super::super::AUDIT_FILE`]) behind the running log's back, as someone
//! holding the file would: a bit flip at every byte of a record (as it is,
//! caught by the frame's checksum; and with the checksum made to match,
//! caught by the chain), a deleted, duplicated, swapped or inserted record
//! and a truncation are each detected by `verify_all` at the right first bad
//! sequence number; a record appended behind the log's back is named when
//! the store is opened again; a cut tail or a rewritten history, which a
//! reopened log cannot see, is detected against a checkpoint held
//! elsewhere.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::ops::Range;
use std::path::Path;

use mxp_governance::audit::{EventData, EventKind, verify_against};

use super::super::tamper;
use super::*;

fn event(i: u64) -> AuditEvent {
    let data = EventData::from_value(&serde_json::json!({"i": i, "note": "tamper suite"}));
    AuditEvent::new(
        1_000 + i,
        EventKind::KillSwitch {
            engaged: i.is_multiple_of(2),
        },
        data.unwrap(),
    )
    .with_trace(i)
}

fn events(range: Range<u64>) -> Vec<AuditEvent> {
    range.map(event).collect()
}

fn seq_of(e: &StoreError) -> Option<(u64, AuditViolation)> {
    match e {
        StoreError::AuditCorrupt { seq, violation, .. } => Some((*seq, violation.clone())),
        _ => None,
    }
}

const N: u64 = 10_000;

fn first_bad(log: &AuditLog) -> (u64, AuditViolation) {
    match log.verify_all() {
        Ok(range) => panic!("tampering went unseen ({} records verified)", range.count()),
        Err(e) => seq_of(&e).unwrap_or_else(|| panic!("not an AuditCorrupt: {e}")),
    }
}

/// `original` with `frames` in place of its frames from `from` on (`all`:
/// its frames' ranges).
fn rebuilt(original: &[u8], all: &[Range<usize>], from: usize, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = original[..all[from].start].to_vec();
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

fn frame_of(original: &[u8], all: &[Range<usize>], k: u64) -> Vec<u8> {
    original[all[k as usize].clone()].to_vec()
}

#[test]
fn every_tampering_of_a_10000_event_log_is_found_at_its_first_bad_seq() {
    let dir = tempfile::tempdir().unwrap();
    let dir: &Path = dir.path();
    let store = Store::open(dir).unwrap();
    let mut log = AuditLog::open(store.clone()).unwrap();
    for start in (0..N).step_by(500) {
        log.append_batch(events(start..start + 500)).unwrap();
    }
    let trusted = log.verify_all().unwrap().tree.unwrap();
    assert_eq!(trusted.size, N);
    let original = tamper::read(dir);
    let all = tamper::frames(&original);
    assert_eq!(all.len() as u64, N);
    let log_end = tamper::log_end(&original);
    let mut detected = 0u32;

    // A bit flip at every 3rd byte of one record's frame and every 11th of
    // the first and the last: in every field (the frame's length and
    // checksum, and the record's framing too) of each. As it is, the
    // frame's checksum fails; with the checksum made to match, the chain
    // fails; both at the record.
    for (k, step) in [(4_321, 3), (0, 11), (N - 1, 11)] {
        let frame = frame_of(&original, &all, k);
        let at = all[k as usize].start;
        for i in (0..frame.len()).step_by(step) {
            let mut bytes = frame.clone();
            bytes[i] ^= 1 << (i % 8);
            tamper::patch(dir, at, &bytes);
            let (seq, why) = first_bad(&log);
            assert_eq!(seq, k, "bit flip at byte {i} of record {k}'s frame: {why}");
            assert!(
                matches!(why, AuditViolation::Frame { offset, .. } if offset == at as u64),
                "bit flip at byte {i} of record {k}'s frame: {why}"
            );
            detected += 1;
            if i >= tamper::FRAME_HEAD {
                let forged = tamper::reframe(&frame, tamper::record(&bytes));
                tamper::patch(dir, at, &forged);
                let (seq, why) = first_bad(&log);
                assert_eq!(
                    seq, k,
                    "bit flip at byte {i} of record {k}, checksum matching"
                );
                assert!(
                    !matches!(why, AuditViolation::Frame { .. }),
                    "the chain, not the frame, catches it: {why}"
                );
                detected += 1;
            }
        }
        tamper::patch(dir, at, &frame);
    }
    log.verify_all().unwrap();

    // A deleted record: the records after it move down one.
    let k = 5_000u64;
    let ku = k as usize;
    let others = |from: usize| -> Vec<Vec<u8>> {
        all[from..]
            .iter()
            .map(|r| original[r.clone()].to_vec())
            .collect()
    };
    tamper::write(dir, &rebuilt(&original, &all, ku, &others(ku + 1)));
    assert_eq!(
        first_bad(&log),
        (k, AuditViolation::KeyMismatch { found: k + 1 }),
        "deleted"
    );

    // A duplicated record (record k again in place of k + 1).
    let mut dup = vec![frame_of(&original, &all, k), frame_of(&original, &all, k)];
    dup.extend(others(ku + 2));
    tamper::write(dir, &rebuilt(&original, &all, ku, &dup));
    assert_eq!(
        first_bad(&log),
        (k + 1, AuditViolation::KeyMismatch { found: k }),
        "duplicated"
    );

    // Two records swapped.
    let mut swapped = vec![
        frame_of(&original, &all, k + 1),
        frame_of(&original, &all, k),
    ];
    swapped.extend(others(ku + 2));
    tamper::write(dir, &rebuilt(&original, &all, ku, &swapped));
    assert_eq!(
        first_bad(&log),
        (k, AuditViolation::KeyMismatch { found: k + 1 }),
        "swapped"
    );
    tamper::write(dir, &original);
    log.verify_all().unwrap();

    // A record inserted at k: a well-formed record of another chain, the
    // rest moved up one.
    let mut other = Chain::new();
    let mut forged = None;
    for i in 0..=k {
        forged = Some(other.append(event(i + 7)).unwrap());
    }
    let mut inserted = vec![tamper::frame(&forged.unwrap().encode(), false)];
    inserted.extend(others(ku));
    tamper::write(dir, &rebuilt(&original, &all, ku, &inserted));
    let (seq, why) = first_bad(&log);
    assert_eq!(seq, k, "inserted: {why}");
    tamper::write(dir, &original);
    log.verify_all().unwrap();

    // A truncation, seen by the live log (its head says N).
    tamper::cut(dir, all[9_000].start);
    let (seq, why) = first_bad(&log);
    assert_eq!(seq, 9_000, "truncated");
    assert!(
        matches!(
            why,
            AuditViolation::Frame {
                fault: FrameFault::PastEnd { .. },
                ..
            }
        ),
        "{why}"
    );
    tamper::write(dir, &original);
    log.verify_all().unwrap();
    detected += 5;

    // A record appended behind the log's back: the running log reads only
    // what it appended; opening the store again names it.
    drop(log);
    drop(store);
    let mut appended = original[..log_end].to_vec();
    appended.extend_from_slice(&tamper::frame(
        tamper::record(&original[all[0].clone()]),
        true,
    ));
    tamper::write(dir, &appended);
    let e = AuditLog::open(Store::open(dir).unwrap()).unwrap_err();
    assert_eq!(
        seq_of(&e),
        Some((N, AuditViolation::KeyMismatch { found: 0 })),
        "beyond the head: {e}"
    );
    detected += 1;

    // Cut at a batch's end and reopened, the log is self-consistent; only
    // a checkpoint held elsewhere shows what is gone.
    tamper::write(dir, &original[..all[9_000].start]);
    let store = Store::open(dir).unwrap();
    let reopened = AuditLog::open(store.clone()).unwrap();
    assert_eq!(reopened.verify_all().unwrap().count(), 9_000);
    let cut: Vec<Vec<u8>> = reopened
        .read(0, 9_000)
        .unwrap()
        .iter()
        .map(Record::encode)
        .collect();
    let e = verify_against(&cut, &Limits::default(), &trusted).unwrap_err();
    assert!(matches!(e, ChainError::Truncated { .. }), "{e}");

    // A rewritten history: a whole new chain of N records, event 0 changed.
    let before: Vec<Vec<u8>> = all
        .iter()
        .map(|r| tamper::record(&original[r.clone()]).to_vec())
        .collect();
    let mut rewrite = Chain::new();
    let mut rewritten = Vec::with_capacity(N as usize);
    for i in 0..N {
        let e = if i == 0 { event(N + 1) } else { event(i) };
        rewritten.push(rewrite.append(e).unwrap().encode());
    }
    let e = verify_against(&rewritten, &Limits::default(), &trusted).unwrap_err();
    assert!(matches!(e, ChainError::RootMismatch { .. }), "{e}");
    assert!(verify_against(&before, &Limits::default(), &trusted).is_ok());
    detected += 2;
    assert!(detected >= 100, "{detected} tamperings checked");
}
