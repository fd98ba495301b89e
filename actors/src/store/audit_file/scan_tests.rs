//! What opening decides, on byte slices: every cut, every flipped byte,
//! torn batches, whole frames after damage, garbage tails, the index.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use super::super::frame::{encode, header};
use super::*;

/// A file of `batches` (record lengths), and each frame's offset.
fn file(batches: &[&[usize]]) -> (Vec<u8>, Vec<u64>) {
    let mut out = header().to_vec();
    let mut offsets = Vec::new();
    let mut i = 0u8;
    for batch in batches {
        for (k, &len) in batch.iter().enumerate() {
            offsets.push(out.len() as u64);
            let record: Vec<u8> = (0..len).map(|j| (j as u8).wrapping_mul(31) ^ i).collect();
            encode(&mut out, &record, k + 1 == batch.len());
            i = i.wrapping_add(1);
        }
    }
    (out, offsets)
}

/// The record count at the end of each batch, with the byte where it ends.
fn batch_ends(batches: &[&[usize]], offsets: &[u64], len: u64) -> Vec<(u64, u64)> {
    let mut ends = vec![(0, HEADER_LEN)];
    let mut n = 0usize;
    for batch in batches {
        n += batch.len();
        let end = offsets.get(n).copied().unwrap_or(len);
        ends.push((n as u64, end));
    }
    ends
}

fn ok(bytes: &[u8]) -> Scanned {
    match scan(bytes, bytes.len() as u64) {
        Ok(s) => s,
        Err(ScanFailure::Damaged {
            seq,
            offset,
            fault,
            good_at,
        }) => panic!("refused: record {seq} at {offset}: {fault} (good at {good_at:?})"),
        Err(e) => panic!("refused: {e:?}"),
    }
}

const BATCHES: &[&[usize]] = &[&[70, 90], &[0], &[3_000], &[64, 65, 66, 67], &[80]];

#[test]
fn a_whole_file_is_read_back_with_its_index() {
    let (bytes, offsets) = file(BATCHES);
    let s = ok(&bytes);
    assert_eq!(s.torn, None);
    assert_eq!(s.index.count, 9);
    assert_eq!(s.index.end, bytes.len() as u64);
    assert_eq!(s.index.last, offsets[8]);
    assert_eq!(s.index.points, vec![offsets[0]]);
    // An empty log is its header.
    let empty = ok(&header());
    assert_eq!((empty.index, empty.torn), (Index::empty(), None));

    // 200 records: a point every 64th.
    let lens = vec![40usize; 200];
    let (bytes, offsets) = file(&[&lens[..100], &lens[100..]]);
    let s = ok(&bytes);
    assert_eq!(s.index.count, 200);
    assert_eq!(
        s.index.points,
        vec![offsets[0], offsets[64], offsets[128], offsets[192]]
    );
    assert_eq!(s.index.point(130), Some((128, offsets[128])));
    assert_eq!(s.index.point(63), Some((0, offsets[0])));
    assert_eq!(s.index.point(199), Some((192, offsets[192])));
    assert_eq!(s.index.point(256), None);
    assert_eq!(s.index.end_after(130), offsets[192]);
    assert_eq!(s.index.end_after(63), offsets[64]);
    assert_eq!(s.index.end_after(199), bytes.len() as u64);
}

#[test]
fn a_cut_anywhere_keeps_the_whole_batches_before_it_and_tears_off_the_rest() {
    let (bytes, offsets) = file(BATCHES);
    let ends = batch_ends(BATCHES, &offsets, bytes.len() as u64);
    for cut in 0..=bytes.len() {
        let cut_bytes = &bytes[..cut];
        if cut < HEADER_LEN as usize {
            assert!(
                matches!(scan(cut_bytes, cut as u64), Err(ScanFailure::Header(_))),
                "cut at {cut}"
            );
            continue;
        }
        let s = ok(cut_bytes);
        let &(count, end) = ends.iter().rev().find(|(_, e)| *e <= cut as u64).unwrap();
        assert_eq!((s.index.count, s.index.end), (count, end), "cut at {cut}");
        // Torn off, unless the bytes after the batches are zeros (the first
        // of a frame of 0 bytes, marked: zeros written ahead, as far as
        // anyone can tell), which are kept.
        let after = &cut_bytes[end as usize..];
        if after.iter().all(|&b| b == 0) {
            assert_eq!((s.torn, s.free), (None, after.len() as u64), "cut at {cut}");
        } else {
            assert_eq!(s.torn, Some((end, after.len() as u64)), "cut at {cut}");
        }
        // What is kept is a file of its own, whole.
        assert_eq!(ok(&bytes[..end as usize]).index, s.index, "cut at {cut}");
    }
}

#[test]
fn a_flipped_byte_inside_the_log_is_refused_and_in_its_last_frame_torn_off() {
    let (bytes, offsets) = file(BATCHES);
    let ends = batch_ends(BATCHES, &offsets, bytes.len() as u64);
    let last = *offsets.last().unwrap();
    for at in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[at] ^= 1 << (at % 8);
        let result = scan(flipped.as_slice(), flipped.len() as u64);
        if at < HEADER_LEN as usize {
            assert!(
                matches!(result, Err(ScanFailure::Header(_))),
                "flip at {at}"
            );
            continue;
        }
        let frame = offsets.iter().rposition(|&o| o <= at as u64).unwrap();
        if offsets[frame] == last {
            // The last frame: what a torn write leaves, cut off with its batch.
            let s = result.unwrap();
            let (count, end) = ends[ends.len() - 2];
            assert_eq!((s.index.count, s.index.end), (count, end), "flip at {at}");
            assert_eq!(s.torn, Some((end, bytes.len() as u64 - end)));
            continue;
        }
        match result {
            Err(ScanFailure::Damaged {
                seq,
                offset,
                good_at,
                ..
            }) => {
                assert_eq!(seq, frame as u64, "flip at {at}");
                assert_eq!(offset, offsets[frame], "flip at {at}");
                assert_eq!(good_at, Some(offsets[frame + 1]), "flip at {at}");
            }
            other => panic!("flip at {at}: {other:?}"),
        }
    }
}

#[test]
fn whole_frames_after_the_last_batch_end_are_torn_off_with_it() {
    // A batch of three, written but for its last frame's end mark: the
    // writer stopped inside it (a short write ends on a frame boundary).
    let (mut bytes, offsets) = file(&[&[50, 60]]);
    let kept = bytes.len() as u64;
    let (more, _) = file(&[&[70, 80, 90]]);
    let tail = &more[HEADER_LEN as usize..];
    let two_frames = 2 * FRAME_HEAD + 70 + 80;
    bytes.extend_from_slice(&tail[..two_frames]);
    let s = ok(&bytes);
    assert_eq!((s.index.count, s.index.end), (2, kept));
    assert_eq!(s.index.last, offsets[1]);
    assert_eq!(s.torn, Some((kept, two_frames as u64)));
}

#[test]
fn zeros_after_the_log_are_kept_and_garbage_torn_off_unless_too_long_to_tell() {
    // A frame of zeros is never whole: zeros hold no frame.
    assert!(Head::read(&[0; FRAME_HEAD]).unwrap().check(&[]).is_err());
    let (bytes, _) = file(BATCHES);
    let len = bytes.len() as u64;
    // Zeros (space the writer wrote ahead), however many: kept.
    for n in [1usize, 11, 12, 4096, 1 << 20, SEARCH_WINDOW as usize + 100] {
        let mut more = bytes.clone();
        more.resize(bytes.len() + n, 0);
        let s = ok(&more);
        assert_eq!((s.index.count, s.index.end), (9, len));
        assert_eq!((s.torn, s.free), (None, n as u64), "{n} zeros");
    }
    assert_eq!(ok(&bytes).free, 0);
    // Anything else with no whole frame in it: a torn write, cut off.
    for tail in [vec![0xff; 1], vec![0xff; 70_000], {
        let mut z = vec![0u8; 5_000];
        z[4_000] = 1;
        z
    }] {
        let mut more = bytes.clone();
        more.extend_from_slice(&tail);
        let s = ok(&more);
        assert_eq!((s.index.count, s.index.end), (9, len));
        assert_eq!((s.torn, s.free), (Some((len, tail.len() as u64)), 0));
    }
    // Damage longer than the window with no whole frame in it is refused:
    // too long for a torn write to be told from a damaged log.
    let mut more = bytes.clone();
    more.resize(bytes.len() + SEARCH_WINDOW as usize + 100, 0xff);
    match scan(more.as_slice(), more.len() as u64) {
        Err(ScanFailure::Damaged {
            seq: 9,
            offset,
            good_at: None,
            ..
        }) => assert_eq!(offset, len),
        other => panic!("{other:?}"),
    }
    // A whole frame beyond the damage, within the window, is found.
    let (one, _) = file(&[&[33]]);
    let mut more = bytes.clone();
    more.resize(bytes.len() + 5_000_000, 0);
    let good_at = more.len() as u64;
    more.extend_from_slice(&one[HEADER_LEN as usize..]);
    match scan(more.as_slice(), more.len() as u64) {
        Err(ScanFailure::Damaged {
            seq: 9,
            offset,
            good_at: g,
            ..
        }) => assert_eq!((offset, g), (len, Some(good_at))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_frame_over_the_limit_is_named_before_it_is_read() {
    let (mut bytes, offsets) = file(&[&[10], &[20]]);
    let at = offsets[0] as usize;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    match scan(bytes.as_slice(), bytes.len() as u64) {
        Err(ScanFailure::Damaged {
            seq: 0,
            fault: FrameFault::TooLong { len, limit },
            good_at,
            ..
        }) => {
            assert_eq!((len, limit), (u64::from(u32::MAX >> 1), MAX_RECORD_BYTES));
            assert_eq!(good_at, Some(offsets[1]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn frames_are_read_through_the_buffer_across_chunks() {
    let lens: Vec<usize> = (0..40).map(|i| 1 + i * 20_011).collect();
    let (bytes, offsets) = file(&[&lens]);
    let mut frames = Frames::new(bytes.as_slice(), bytes.len() as u64);
    // In order, then backwards (each read refills the buffer).
    for (i, &at) in offsets
        .iter()
        .enumerate()
        .chain(offsets.iter().enumerate().rev())
    {
        let f = frames.frame(at).unwrap().unwrap();
        assert_eq!(f.record.len(), lens[i]);
        assert_eq!(f.batch_end, i == lens.len() - 1);
    }
    // Reads stop at the end given, whatever the bytes hold beyond it.
    let mut short = Frames::new(bytes.as_slice(), offsets[3] + 5);
    assert!(short.frame(offsets[2]).unwrap().is_ok());
    assert_eq!(
        short.frame(offsets[3]).unwrap().unwrap_err(),
        FrameFault::PastEnd {
            end: offsets[3] + 5
        }
    );
}
