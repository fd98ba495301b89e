//! The audit file through [`SplitEngine`], on real files in temporary
//! folders: every read across reopening, refused writes, a new file made
//! whole, a lost file refused, a log kept in redb moved into the file,
//! readers beside a writer.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use super::super::{STORE_FILE, SplitEngine, tamper};
use super::*;

/// The record stored under `seq`: lengths vary (0 to 499 bytes, and one
/// of 200,000 that spans read chunks).
fn value(seq: u64) -> Vec<u8> {
    let len = if seq == 150 {
        200_000
    } else {
        (seq * 37 % 500) as usize
    };
    (0..len).map(|i| (i as u64 ^ seq) as u8).collect()
}

fn entries(seqs: std::ops::Range<u64>) -> Records {
    seqs.map(|s| (seq_key(s).to_vec(), value(s))).collect()
}

fn refused(e: &StoreError) -> &WriteRefused {
    match e {
        StoreError::AuditWriteRefused { refused, .. } => refused,
        other => panic!("not refused: {other}"),
    }
}

fn file_len(dir: &Path) -> u64 {
    std::fs::metadata(tamper::file(dir)).unwrap().len()
}

#[test]
fn every_read_serves_what_was_appended_also_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let engine = SplitEngine::open(dir).unwrap();
    assert_eq!(engine.path(), dir.display().to_string());
    assert_eq!(engine.get(Tree::Audit, &seq_key(0)).unwrap(), None);
    assert_eq!(engine.last(Tree::Audit).unwrap(), None);
    assert!(engine.scan(Tree::Audit).unwrap().is_empty());
    assert!(engine.range(Tree::Audit, &[], 10).unwrap().is_empty());
    engine.put_batch(Tree::Audit, &[]).unwrap();
    assert_eq!(
        file_len(dir),
        tamper::HEADER as u64,
        "an empty log is its header"
    );

    let all = entries(0..300);
    engine.put_batch(Tree::Audit, &all[..1]).unwrap();
    engine.put(Tree::Audit, &all[1].0, &all[1].1).unwrap();
    engine.put_batch(Tree::Audit, &all[2..140]).unwrap();
    engine.put_batch(Tree::Audit, &all[140..300]).unwrap();
    // The other trees are redb's.
    engine.put(Tree::State, b"k", b"v").unwrap();

    let check = |engine: &SplitEngine| {
        for from in [
            0u64, 1, 63, 64, 65, 127, 128, 150, 151, 200, 299, 300, 1_000,
        ] {
            for limit in [0usize, 1, 5, 64, 1_000] {
                let want: Records = all
                    .iter()
                    .skip(from as usize)
                    .take(limit)
                    .cloned()
                    .collect();
                let got = engine.range(Tree::Audit, &seq_key(from), limit).unwrap();
                assert_eq!(got, want, "from {from}, limit {limit}");
            }
        }
        for (k, v) in &all {
            assert_eq!(engine.get(Tree::Audit, k).unwrap().as_ref(), Some(v));
        }
        assert_eq!(engine.get(Tree::Audit, &seq_key(300)).unwrap(), None);
        assert_eq!(engine.get(Tree::Audit, b"no seq").unwrap(), None);
        assert_eq!(engine.last(Tree::Audit).unwrap().as_ref(), all.last());
        assert_eq!(engine.scan(Tree::Audit).unwrap(), all);
        // `from` as any bytes: the first key at or after it.
        for (from, first) in [
            (vec![], Some(0)),
            (vec![0; 7], Some(0)),
            (vec![0, 0, 0, 0, 0, 0, 1], Some(256)),
            (vec![0, 0, 0, 0, 0, 0, 0, 5, 0], Some(6)),
            (vec![0xff; 9], None),
        ] {
            let got = engine.range(Tree::Audit, &from, 1).unwrap();
            let want: Records = first
                .and_then(|f: usize| all.get(f))
                .into_iter()
                .cloned()
                .collect();
            assert_eq!(got, want, "from {from:?}");
        }
        assert_eq!(engine.get(Tree::State, b"k").unwrap(), Some(b"v".to_vec()));
    };
    check(&engine);
    // The frames, then zeros written ahead to a multiple of 1 MiB.
    let len = file_len(dir);
    let frames: u64 = all.iter().map(|(_, v)| 12 + v.len() as u64).sum();
    let bytes = tamper::read(dir);
    assert_eq!(
        tamper::log_end(&bytes) as u64,
        tamper::HEADER as u64 + frames
    );
    assert_eq!(len, (tamper::HEADER as u64 + frames) / GROW * GROW + GROW);
    drop(engine);

    let engine = SplitEngine::open(dir).unwrap();
    check(&engine);
    assert_eq!(file_len(dir), len, "nothing cut from a whole file");
    engine.put_batch(Tree::Audit, &entries(300..301)).unwrap();
    assert_eq!(
        engine.last(Tree::Audit).unwrap(),
        Some((seq_key(300).to_vec(), value(300)))
    );
}

#[test]
fn writes_other_than_the_next_records_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let engine = SplitEngine::open(dir).unwrap();
    engine.put_batch(Tree::Audit, &entries(0..10)).unwrap();
    let len = file_len(dir);

    let e = engine.put_batch(Tree::Audit, &entries(11..13)).unwrap_err();
    assert_eq!(
        refused(&e),
        &WriteRefused::NotNext {
            next: 10,
            key: hex(&seq_key(11))
        }
    );
    assert!(e.to_string().contains("only appends"), "{e}");
    assert!(
        e.to_string()
            .contains(&tamper::file(dir).display().to_string()),
        "{e}"
    );
    // A gap inside a batch refuses the batch as a whole.
    let mut gap = entries(10..13);
    gap.remove(1);
    let e = engine.put_batch(Tree::Audit, &gap).unwrap_err();
    assert!(
        matches!(refused(&e), WriteRefused::NotNext { next: 11, .. }),
        "{e}"
    );
    // Rewriting a record, or writing one under a key that is no sequence number.
    let e = engine.put(Tree::Audit, &seq_key(3), b"other").unwrap_err();
    assert!(
        matches!(refused(&e), WriteRefused::NotNext { next: 10, .. }),
        "{e}"
    );
    let e = engine.put(Tree::Audit, b"k", b"v").unwrap_err();
    assert!(matches!(refused(&e), WriteRefused::NotNext { .. }), "{e}");
    let e = engine.delete(Tree::Audit, &seq_key(9)).unwrap_err();
    assert_eq!(
        refused(&e),
        &WriteRefused::Delete {
            key: hex(&seq_key(9))
        }
    );
    let long = vec![(seq_key(10).to_vec(), vec![0; MAX_RECORD_BYTES + 1])];
    let e = engine.put_batch(Tree::Audit, &long).unwrap_err();
    assert_eq!(
        refused(&e),
        &WriteRefused::TooLong {
            seq: 10,
            len: MAX_RECORD_BYTES + 1,
            limit: MAX_RECORD_BYTES
        }
    );
    assert_eq!(file_len(dir), len, "nothing was written");
    assert_eq!(engine.scan(Tree::Audit).unwrap(), entries(0..10));

    // The longest record a frame holds is taken.
    let longest = vec![(seq_key(10).to_vec(), vec![7; MAX_RECORD_BYTES])];
    engine.put_batch(Tree::Audit, &longest).unwrap();
    drop(engine);
    let engine = SplitEngine::open(dir).unwrap();
    assert_eq!(engine.last(Tree::Audit).unwrap(), longest.first().cloned());
}

#[test]
fn the_longest_record_an_event_within_the_default_limits_makes_fits_a_frame() {
    use mxp_governance::audit::event::MAX_POLICY_ID_LEN;
    use mxp_governance::audit::{
        AuditEvent, Chain, ChainHead, EventData, EventKind, Limits, PolicyEffect, RecordedOutput,
        ToolOutcome,
    };
    use mxp_protocol::{AgentId, Fingerprint, PrincipalId};
    let limits = Limits::default();
    let data = "d".repeat(limits.max_data_bytes - 16);
    let data = EventData::from_value(&serde_json::json!({ "d": data })).unwrap();
    let with = |kind| {
        AuditEvent::new(u64::MAX, kind, data.clone())
            .with_trace(u64::MAX)
            .with_session("s".repeat(64).parse().unwrap())
            .with_principal(PrincipalId::Agent {
                agent: AgentId::from_bytes([7; 16]),
                node: Fingerprint([0xab; 32]),
            })
    };
    let output = with(EventKind::ToolExecution {
        outcome: ToolOutcome::InDoubt,
        output: RecordedOutput::Recorded(vec![1; limits.max_output_bytes]),
    });
    let ids = with(EventKind::PolicyDecision {
        effect: PolicyEffect::Deny,
        policy_ids: vec!["p".repeat(MAX_POLICY_ID_LEN); limits.max_policy_ids],
    });
    for event in [output, ids] {
        let mut chain = Chain::resume(ChainHead::GENESIS, limits);
        let len = chain.append(event).unwrap().encode().len();
        assert!(len < MAX_RECORD_BYTES / 2, "{len}");
    }
}

#[test]
fn a_new_file_appears_whole_and_a_lost_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let new = dir.join("audit.log.new");
    // What a process killed while making the file leaves behind.
    std::fs::write(&new, vec![0x5a; 10_000]).unwrap();
    let engine = SplitEngine::open(dir).unwrap();
    assert!(!new.exists(), "the unfinished file was replaced and linked");
    assert_eq!(tamper::read(dir), b"MXPAUDIT\x01\x00\x00\x00");
    engine.put_batch(Tree::Audit, &entries(0..3)).unwrap();
    drop(engine);

    // The store made its audit file: once gone, it is refused, not made again.
    let file = tamper::file(dir);
    std::fs::rename(&file, dir.join("moved")).unwrap();
    let e = SplitEngine::open(dir).unwrap_err();
    assert!(
        matches!(&e, StoreError::AuditFileMissing { path } if *path == file.display().to_string()),
        "{e}"
    );
    assert!(e.to_string().contains("Nothing was changed"), "{e}");
    assert!(!file.exists() && !new.exists(), "nothing was made");
    std::fs::rename(dir.join("moved"), &file).unwrap();
    let engine = SplitEngine::open(dir).unwrap();
    assert_eq!(engine.scan(Tree::Audit).unwrap(), entries(0..3));
}

/// A store of the release that kept the audit log in redb: `n` records in
/// its audit table, written in batches.
fn redb_store(dir: &Path, n: u64) {
    let redb = RedbEngine::open(&dir.join(STORE_FILE)).unwrap();
    redb.put(Tree::State, b"kill_switch", &[1]).unwrap();
    for start in (0..n).step_by(700) {
        redb.put_batch(Tree::Audit, &entries(start..n.min(start + 700)))
            .unwrap();
    }
}

#[test]
fn a_log_kept_in_redb_moves_into_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    redb_store(dir, 2_500);
    let engine = SplitEngine::open(dir).unwrap();
    assert_eq!(engine.scan(Tree::Audit).unwrap(), entries(0..2_500));
    assert_eq!(
        engine.get(Tree::State, b"kill_switch").unwrap(),
        Some(vec![1])
    );
    engine
        .put_batch(Tree::Audit, &entries(2_500..2_501))
        .unwrap();
    drop(engine);
    {
        // redb no longer holds the log, and says the file is the log.
        let redb = RedbEngine::open(&dir.join(STORE_FILE)).unwrap();
        assert_eq!(redb.last(Tree::Audit).unwrap(), None);
        assert_eq!(redb.get(Tree::State, MADE_KEY).unwrap(), Some(vec![1]));
        // A release that kept the log in redb writes there again: refused.
        redb.put_batch(Tree::Audit, &entries(0..1)).unwrap();
    }
    let before = tamper::read(dir);
    let e = SplitEngine::open(dir).unwrap_err();
    assert!(
        matches!(e, StoreError::AuditInBoth { records: 1, .. }),
        "{e}"
    );
    assert_eq!(tamper::read(dir), before, "nothing was changed");

    // A move cut short after the file was linked, before redb recorded it:
    // the next open finishes it.
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    redb_store(dir, 100);
    {
        let redb = RedbEngine::open(&dir.join(STORE_FILE)).unwrap();
        create(&tamper::file(dir), &redb).unwrap();
    }
    let engine = SplitEngine::open(dir).unwrap();
    assert_eq!(engine.scan(Tree::Audit).unwrap(), entries(0..100));
    drop(engine);
    let redb = RedbEngine::open(&dir.join(STORE_FILE)).unwrap();
    assert_eq!(redb.last(Tree::Audit).unwrap(), None);
    drop(redb);

    // A redb log with a record missing is not moved: named, nothing made.
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    redb_store(dir, 100);
    RedbEngine::open(&dir.join(STORE_FILE))
        .unwrap()
        .delete(Tree::Audit, &seq_key(40))
        .unwrap();
    let e = SplitEngine::open(dir).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::AuditCorrupt {
                seq: 40,
                violation: AuditViolation::Missing,
                ..
            }
        ),
        "{e}"
    );
    assert!(!tamper::file(dir).exists());
    assert!(!dir.join("audit.log.new").exists());
}

#[test]
fn a_torn_write_is_cut_off_and_damage_inside_is_refused_naming_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let engine = SplitEngine::open(dir).unwrap();
    engine.put_batch(Tree::Audit, &entries(0..20)).unwrap();
    engine.put_batch(Tree::Audit, &entries(20..30)).unwrap();
    drop(engine);
    let whole = tamper::read(dir);
    let whole = whole[..tamper::log_end(&whole)].to_vec();
    let frames = tamper::frames(&whole);

    // Half of a third batch: cut off on open, synced.
    let mut torn = whole.clone();
    let mut third = Vec::new();
    for (_, v) in entries(30..35) {
        third.extend(tamper::frame(&v, false));
    }
    torn.extend_from_slice(&third[..third.len() / 2]);
    tamper::write(dir, &torn);
    let engine = SplitEngine::open(dir).unwrap();
    assert_eq!(tamper::read(dir), whole);
    assert_eq!(engine.scan(Tree::Audit).unwrap(), entries(0..30));
    // The next batch writes zeros ahead again.
    engine.put_batch(Tree::Audit, &entries(30..31)).unwrap();
    assert_eq!(file_len(dir), GROW);
    drop(engine);
    tamper::write(dir, &whole);

    // A flipped byte in record 7: refused, naming the record and offset.
    let mut damaged = whole.clone();
    damaged[frames[7].start + 20] ^= 4;
    tamper::write(dir, &damaged);
    let e = SplitEngine::open(dir).unwrap_err();
    match &e {
        StoreError::AuditCorrupt {
            path,
            seq: 7,
            violation:
                AuditViolation::Damaged {
                    offset,
                    fault: FrameFault::Checksum,
                    good_at: Some(good),
                },
        } => {
            assert_eq!(*path, tamper::file(dir).display().to_string());
            assert_eq!(*offset, frames[7].start as u64);
            assert_eq!(*good, frames[8].start as u64);
        }
        other => panic!("{other}"),
    }
    let text = e.to_string();
    for says in [
        "audit record 7",
        "byte",
        "not a torn write",
        "nothing was changed",
    ] {
        assert!(text.contains(says), "{says:?} not in {text}");
    }
    assert_eq!(tamper::read(dir), damaged, "left as it was");

    // A header that is not an audit file's.
    let mut header = whole;
    header[0] = b'm';
    tamper::write(dir, &header);
    let e = SplitEngine::open(dir).unwrap_err();
    assert!(
        matches!(&e, StoreError::Engine { reason, .. } if reason.contains("not an audit file")),
        "{e}"
    );
    assert_eq!(tamper::read(dir), header, "left as it was");
}

#[test]
fn readers_beside_the_writer_see_only_whole_appended_records() {
    let dir = tempfile::tempdir().unwrap();
    let engine = std::sync::Arc::new(SplitEngine::open(dir.path()).unwrap());
    const TOTAL: u64 = 1_500;
    let writer = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let mut next = 0;
            let mut n = 1;
            while next < TOTAL {
                let end = TOTAL.min(next + n);
                engine.put_batch(Tree::Audit, &entries(next..end)).unwrap();
                next = end;
                n = n % 37 + 1;
            }
        })
    };
    let mut reads = 0u32;
    let mut seen = 0u64;
    while seen < TOTAL {
        if let Some((key, v)) = engine.last(Tree::Audit).unwrap() {
            let last = seq_of_key(&key).unwrap();
            assert_eq!(v, value(last));
            assert!(last + 1 >= seen, "the log went back");
            seen = last + 1;
        }
        let from = seen.saturating_sub(90);
        let rows = engine.range(Tree::Audit, &seq_key(from), 100).unwrap();
        for (i, (k, v)) in rows.iter().enumerate() {
            let seq = from + i as u64;
            assert_eq!(k.as_slice(), seq_key(seq));
            assert_eq!(*v, value(seq), "record {seq}");
        }
        reads += 1;
    }
    writer.join().unwrap();
    assert_eq!(engine.scan(Tree::Audit).unwrap(), entries(0..TOTAL));
    assert!(reads > 0);
}
