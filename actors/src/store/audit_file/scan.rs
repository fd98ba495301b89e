//! Reading frames from the audit file, and what opening it decides: how
//! many records it holds (up to the last whole batch), where each 64th
//! starts, and whether the bytes after them are space written ahead
//! (zeros: kept), a torn write at the end (cut off) or damage inside the
//! log (refused). Pure over a [`Source`] of bytes, so the decisions are
//! tested on byte slices.

use std::io;

use super::frame::{FRAME_HEAD, FrameFault, HEADER_LEN, Head, MAX_RECORD_BYTES, header_fault};

/// The index keeps the offset of every `EVERY`-th frame.
pub(crate) const EVERY: u64 = 64;
/// Bytes read at once while walking frames (a longer frame is read whole).
const CHUNK: usize = 256 * 1024;
/// How far past a damaged frame opening looks for a whole one. A whole
/// frame that follows damage starts within the damage plus one frame, so
/// this finds it for any damage up to 7 MiB long; a longer tail with no
/// whole frame in it is refused rather than cut.
pub(crate) const SEARCH_WINDOW: u64 = 8 * 1024 * 1024;

/// Bytes read by offset.
pub(crate) trait Source {
    /// Reads into `buf` from `offset`; how many bytes were read (0 at the end).
    ///
    /// # Errors
    /// The I/O error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Source for std::fs::File {
    #[cfg(unix)]
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }

    #[cfg(windows)]
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(self, buf, offset)
    }
}

impl Source for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let from = usize::try_from(offset).map_or(self.len(), |o| o.min(self.len()));
        let src = self.get(from..).unwrap_or_default();
        let n = src.len().min(buf.len());
        for (dst, src) in buf.iter_mut().zip(src) {
            *dst = *src;
        }
        Ok(n)
    }
}

/// A frame read: its length with its head, whether it ends a batch, its record.
#[derive(Debug)]
pub(crate) struct Frame<'b> {
    /// [`FRAME_HEAD`] plus the record's length.
    pub(crate) len: u64,
    /// The last frame of a batch.
    pub(crate) batch_end: bool,
    /// The record.
    pub(crate) record: &'b [u8],
}

/// Reads frames at given offsets through a buffer, never past `end`.
pub(crate) struct Frames<'s, S: ?Sized> {
    src: &'s S,
    end: u64,
    /// Reads fill the buffer up to here (or a chunk) when they can.
    ahead: u64,
    buf: Vec<u8>,
    buf_at: u64,
}

impl<'s, S: Source + ?Sized> Frames<'s, S> {
    /// Frames of `src`, whose bytes from `end` on are not read.
    pub(crate) fn new(src: &'s S, end: u64) -> Frames<'s, S> {
        Frames {
            src,
            end,
            ahead: end,
            buf: Vec::new(),
            buf_at: 0,
        }
    }

    /// Reads no further ahead than `stop` (still reading a whole frame
    /// that goes on beyond it): where the frames wanted end, if known.
    pub(crate) fn read_ahead_to(mut self, stop: u64) -> Frames<'s, S> {
        self.ahead = stop.min(self.end);
        self
    }

    /// The `n` bytes at `at`, or where the bytes end if that is sooner.
    fn bytes(&mut self, at: u64, n: usize) -> io::Result<Result<&[u8], u64>> {
        let Some(stop) = at.checked_add(n as u64).filter(|&s| s <= self.end) else {
            return Ok(Err(self.end.max(at)));
        };
        let held = self.buf_at..=self.buf_at + self.buf.len() as u64;
        if !(held.contains(&at) && held.contains(&stop)) {
            // Read `n` bytes at least, up to a chunk as far as wanted.
            let ahead = self.ahead.saturating_sub(at);
            let want = usize::try_from(ahead).map_or(CHUNK, |left| left.min(CHUNK));
            // A new buffer only to grow (the read overwrites it).
            let size = want.max(n);
            if self.buf.len() < size {
                self.buf = vec![0; size];
            }
            self.buf.truncate(size);
            let mut got = 0;
            while got < self.buf.len() {
                let into = self.buf.get_mut(got..).unwrap_or_default();
                match self.src.read_at(into, at + got as u64) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.buf.truncate(got);
            self.buf_at = at;
            if got < n {
                return Ok(Err(at + got as u64));
            }
        }
        let from = usize::try_from(at - self.buf_at).unwrap_or(usize::MAX);
        Ok(self.buf.get(from..from.saturating_add(n)).ok_or(at))
    }

    /// Loads the `n` bytes at `at` (fewer if the bytes end first), so
    /// frames among them are read from memory.
    pub(crate) fn preload(&mut self, at: u64, n: u64) -> io::Result<()> {
        let n = n.min(self.end.saturating_sub(at));
        self.bytes(at, usize::try_from(n).unwrap_or(usize::MAX))
            .map(drop)
    }

    /// The frame at `at`, checked: its length against [`MAX_RECORD_BYTES`]
    /// before its record is read, then its checksum.
    ///
    /// # Errors
    /// The I/O error (the frame's faults are the inner `Err`).
    pub(crate) fn frame(&mut self, at: u64) -> io::Result<Result<Frame<'_>, FrameFault>> {
        let head = match self.bytes(at, FRAME_HEAD)? {
            Ok(bytes) => Head::read(bytes),
            Err(end) => return Ok(Err(FrameFault::PastEnd { end })),
        };
        let Some(head) = head else {
            return Ok(Err(FrameFault::PastEnd { end: at }));
        };
        let len = match head.len() {
            Ok(len) => len,
            Err(fault) => return Ok(Err(fault)),
        };
        let record = match self.bytes(at + FRAME_HEAD as u64, len)? {
            Ok(record) => record,
            Err(end) => return Ok(Err(FrameFault::PastEnd { end })),
        };
        if let Err(fault) = head.check(record) {
            return Ok(Err(fault));
        }
        Ok(Ok(Frame {
            len: (FRAME_HEAD + len) as u64,
            batch_end: head.batch_end(),
            record,
        }))
    }
}

/// Where the records are: the offset of every [`EVERY`]-th frame, how many
/// there are, where the last one starts and where they end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Index {
    /// The offset of frame `i × EVERY` at `i`.
    pub(crate) points: Vec<u64>,
    /// Records.
    pub(crate) count: u64,
    /// The offset of the last frame (the header's end when there is none).
    pub(crate) last: u64,
    /// Where the last frame ends: the records' bytes are `HEADER_LEN..end`.
    pub(crate) end: u64,
}

impl Index {
    /// No records.
    pub(crate) fn empty() -> Index {
        Index {
            points: Vec::new(),
            count: 0,
            last: HEADER_LEN,
            end: HEADER_LEN,
        }
    }

    /// Records a frame of `len` bytes at `at` (at the end).
    pub(crate) fn push(&mut self, at: u64, len: u64) {
        if self.count.is_multiple_of(EVERY) {
            self.points.push(at);
        }
        self.count += 1;
        self.last = at;
        self.end = at + len;
    }

    /// The indexed frame at or before `seq` (< count): its sequence
    /// number and offset.
    pub(crate) fn point(&self, seq: u64) -> Option<(u64, u64)> {
        let i = seq / EVERY;
        let at = *self.points.get(usize::try_from(i).ok()?)?;
        Some((i * EVERY, at))
    }

    /// Where the frames up to `seq` (< count) end at the latest: the
    /// offset of the indexed frame after it, or the end.
    pub(crate) fn end_after(&self, seq: u64) -> u64 {
        let next = usize::try_from(seq / EVERY + 1).ok();
        next.and_then(|i| self.points.get(i))
            .copied()
            .unwrap_or(self.end)
    }
}

/// What opening decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// The records kept: every frame up to the last batch's end.
    pub(crate) index: Index,
    /// The bytes after them, if not all zeros (a torn write: cut off), as
    /// `(offset, length)`.
    pub(crate) torn: Option<(u64, u64)>,
    /// Zeros after them (space written ahead of the log: kept), if not torn.
    pub(crate) free: u64,
}

/// Why opening refuses the file.
#[derive(Debug)]
pub(crate) enum ScanFailure {
    /// Reading failed.
    Io(io::Error),
    /// The header is not an audit file's (said).
    Header(String),
    /// A frame is damaged and it is not a torn write at the end.
    Damaged {
        /// The damaged frame's position in the log.
        seq: u64,
        /// Its offset.
        offset: u64,
        /// What is wrong with it.
        fault: FrameFault,
        /// The first whole frame after it, or `None` if none is in the
        /// [`SEARCH_WINDOW`] and more bytes follow than that.
        good_at: Option<u64>,
    },
}

impl From<io::Error> for ScanFailure {
    fn from(e: io::Error) -> ScanFailure {
        ScanFailure::Io(e)
    }
}

/// Reads and checks every frame of a file of `len` bytes.
///
/// The log is every frame up to the last one that ends a batch. What
/// follows, when no whole frame follows the first bad one (a frame runs
/// past the end, is longer than the limit or fails its checksum), is space
/// the writer wrote ahead if it is all zeros ([`Scanned::free`]), else a
/// torn write (the batch the writer was writing when it stopped, never
/// acknowledged, since acknowledgement follows the sync), reported in
/// [`Scanned::torn`] for the caller to cut off. Frames after the last
/// batch's end are part of the torn write even when whole. A bad frame
/// followed by a whole one is damage inside the log: refused.
///
/// # Errors
/// [`ScanFailure`].
pub(crate) fn scan<S: Source + ?Sized>(src: &S, len: u64) -> Result<Scanned, ScanFailure> {
    let mut head = [0u8; HEADER_LEN as usize];
    let got = src.read_at(&mut head, 0)?;
    if let Some(reason) = header_fault(head.get(..got).unwrap_or_default()) {
        return Err(ScanFailure::Header(reason));
    }
    let mut frames = Frames::new(src, len);
    let mut index = Index::empty();
    // The index as of the last batch's end.
    let mut kept = (0, HEADER_LEN, HEADER_LEN);
    let mut at = HEADER_LEN;
    while at < len {
        match frames.frame(at)? {
            Ok(frame) => {
                index.push(at, frame.len);
                at += frame.len;
                if frame.batch_end {
                    kept = (index.count, index.last, index.end);
                }
            }
            Err(fault) => {
                // Zeros hold no whole frame (a frame of zeros fails its
                // checksum): only other bytes are searched.
                if !zeros(src, at, len)? {
                    let good_at = whole_frame_after(src, at, len)?;
                    if good_at != Some(None) {
                        return Err(ScanFailure::Damaged {
                            seq: index.count,
                            offset: at,
                            fault,
                            good_at: good_at.flatten(),
                        });
                    }
                }
                break;
            }
        }
    }
    (index.count, index.last, index.end) = kept;
    index
        .points
        .truncate(usize::try_from(index.count.div_ceil(EVERY)).unwrap_or(usize::MAX));
    let after = len - index.end;
    if zeros(src, index.end, len)? {
        return Ok(Scanned {
            index,
            torn: None,
            free: after,
        });
    }
    Ok(Scanned {
        torn: Some((index.end, after)),
        index,
        free: 0,
    })
}

/// Whether the bytes from `from` to `len` are all zeros (reading up to the
/// first that is not).
fn zeros<S: Source + ?Sized>(src: &S, from: u64, len: u64) -> io::Result<bool> {
    let mut frames = Frames::new(src, len);
    let mut at = from;
    while at < len {
        let n = usize::try_from(len - at).map_or(CHUNK, |left| left.min(CHUNK));
        match frames.bytes(at, n)? {
            Ok(bytes) if bytes.iter().all(|&b| b == 0) => at += n as u64,
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Looks for a whole frame starting after the bad one at `bad`:
/// `Some(Some(offset))` if one does, `Some(None)` if none does,
/// `None` if none is in the [`SEARCH_WINDOW`] and the bytes go on beyond it.
fn whole_frame_after<S: Source + ?Sized>(
    src: &S,
    bad: u64,
    len: u64,
) -> io::Result<Option<Option<u64>>> {
    let from = bad + 1;
    let last_start = len.saturating_sub(FRAME_HEAD as u64);
    let searched = last_start.min(from.saturating_add(SEARCH_WINDOW));
    let mut frames = Frames::new(src, len);
    frames.preload(from, SEARCH_WINDOW + (FRAME_HEAD + MAX_RECORD_BYTES) as u64)?;
    for at in from..=searched {
        // A frame's head is never all zeros (its checksum would be
        // XXH3-64 of nothing, which is not 0): skip zeros unhashed.
        let zero_head =
            matches!(frames.bytes(at, FRAME_HEAD)?, Ok(head) if head.iter().all(|&b| b == 0));
        if !zero_head && frames.frame(at)?.is_ok() {
            return Ok(Some(Some(at)));
        }
    }
    Ok((searched >= last_start).then_some(None))
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
