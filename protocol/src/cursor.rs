//! A read cursor over untrusted bytes that cannot read past its buffer.
//!
//! Every read checks the remaining length first and returns
//! [`DecodeError::PayloadTruncated`] instead of panicking; a decoder finishes
//! with [`Reader::finish`], which refuses trailing bytes.

use crate::DecodeError;

/// A forward-only cursor over a byte slice.
///
/// ```
/// use mxp_protocol::cursor::Reader;
/// let mut r = Reader::new(&[1, 0, 2, 0, 0, 0], "example");
/// assert_eq!(r.u16_le()?, 1);
/// assert_eq!(r.u32_le()?, 2);
/// assert!(r.u8().is_err()); // nothing left: an error, not a panic
/// r.finish()?;
/// # Ok::<(), mxp_protocol::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`; `what` names the payload in errors.
    pub const fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    /// Bytes read so far.
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub const fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// [`DecodeError::PayloadTruncated`] if fewer than `n` remain; the cursor does not move.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.buf.len());
        match end.and_then(|end| self.buf.get(self.pos..end).map(|s| (end, s))) {
            Some((end, slice)) => {
                self.pos = end;
                Ok(slice)
            }
            None => Err(DecodeError::PayloadTruncated {
                what: self.what,
                needed: self.pos.saturating_add(n),
                available: self.buf.len(),
            }),
        }
    }

    /// The next `N` bytes as an array.
    ///
    /// # Errors
    /// As [`Reader::take`].
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// One byte.
    ///
    /// # Errors
    /// As [`Reader::take`].
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian `u16`.
    ///
    /// # Errors
    /// As [`Reader::take`].
    pub fn u16_le(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    ///
    /// # Errors
    /// As [`Reader::take`].
    pub fn u32_le(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    ///
    /// # Errors
    /// As [`Reader::take`].
    pub fn u64_le(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `limit` bytes. The
    /// length is checked against the limit before anything is read or allocated.
    ///
    /// # Errors
    /// `limit_exceeded`, `truncated` or `invalid_utf8`.
    pub fn str_u16(&mut self, field: &'static str, limit: usize) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16_le()?);
        if len > limit {
            return Err(DecodeError::LimitExceeded { field, len, limit });
        }
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// All remaining bytes.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    /// Ends decoding.
    ///
    /// # Errors
    /// [`DecodeError::PayloadTrailingBytes`] if bytes remain.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::PayloadTrailingBytes {
                what: self.what,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_never_overreads_and_does_not_move_on_error() {
        let mut r = Reader::new(&[1, 2, 3], "t");
        assert!(r.take(4).is_err());
        assert!(r.take(usize::MAX).is_err());
        assert_eq!(r.position(), 0);
        assert_eq!(r.take(3).unwrap(), &[1, 2, 3]);
        assert_eq!(r.take(0).unwrap(), &[] as &[u8]);
        assert!(r.u8().is_err());
        r.finish().unwrap();
    }

    #[test]
    fn finish_refuses_trailing_bytes() {
        let mut r = Reader::new(&[0; 5], "t");
        r.u32_le().unwrap();
        assert_eq!(
            r.finish().unwrap_err(),
            DecodeError::PayloadTrailingBytes {
                what: "t",
                extra: 1
            }
        );
    }

    #[test]
    fn str_checks_limit_before_reading() {
        // Declares 65535 bytes but holds 2: the limit error comes first.
        let mut r = Reader::new(&[0xff, 0xff, b'a', b'b'], "t");
        assert_eq!(r.str_u16("name", 10).unwrap_err().class(), "limit_exceeded");
        let mut r = Reader::new(&[2, 0, 0xff, 0xfe], "t");
        assert_eq!(r.str_u16("name", 10).unwrap_err().class(), "invalid_utf8");
    }
}
