//! [`Frame`]: one validated MXP frame over one `Bytes`, and its encoder.

use std::fmt;

use bytes::{Bytes, BytesMut};
use xxhash_rust::xxh3::xxh3_64;

use crate::header::RawHeader;
use crate::{
    CHECKSUM_LEN, DecodeError, EncodeError, FRAME_OVERHEAD, Flags, FrameHeader, HEADER_LEN,
    MAX_PAYLOAD_LEN, MessageType,
};

/// One validated MXP frame: a zero-copy view over a single [`Bytes`].
///
/// A `Frame` can only be obtained from [`Frame::parse`] (which checks magic,
/// type, flags, reserved bytes, length limit, exact length and checksum) or
/// from the encoder (which writes a valid frame), so holding one proves its
/// bytes are valid. Cloning is a reference-count increment; the header is read
/// in place and the payload is a slice of the same buffer.
///
/// ```
/// use bytes::Bytes;
/// use mxp_protocol::{Frame, FrameHeader, MessageType};
///
/// let wire: Bytes = FrameHeader::new(MessageType::Call)
///     .with_message_id(42)
///     .encode(b"hello")?
///     .into_bytes();
/// let frame = Frame::parse(wire.clone())?;
/// assert_eq!(frame.message_type(), MessageType::Call);
/// assert_eq!(frame.message_id(), 42);
/// assert_eq!(&frame.payload()[..], b"hello");
/// // The payload shares the frame's buffer: no copy.
/// assert_eq!(frame.payload().as_ptr(), wire[32..].as_ptr());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// Invariant: a complete, valid frame, exactly `FRAME_OVERHEAD + payload_len` long.
    bytes: Bytes,
}

impl Frame {
    /// Validates `bytes` as exactly one frame with the MXP limit of 16 MiB.
    ///
    /// # Errors
    /// One [`DecodeError`] naming the first violation, checked in this order:
    /// a buffer shorter than the header (`truncated`), magic, type, flags,
    /// reserved bytes, declared length above the limit (`payload_too_large`,
    /// whatever the buffer holds), buffer shorter than declared (`truncated`),
    /// longer (`trailing_bytes`), checksum.
    #[inline]
    pub fn parse(bytes: Bytes) -> Result<Frame, DecodeError> {
        Frame::parse_with_limit(bytes, MAX_PAYLOAD_LEN)
    }

    /// Like [`Frame::parse`] with a smaller payload limit (clamped to 16 MiB).
    ///
    /// # Errors
    /// As [`Frame::parse`].
    #[inline]
    pub fn parse_with_limit(bytes: Bytes, max_payload: u64) -> Result<Frame, DecodeError> {
        let payload_len = validate_header(&bytes, max_payload)?;
        let frame_len = FRAME_OVERHEAD + payload_len;
        if bytes.len() < frame_len {
            return Err(DecodeError::Truncated {
                needed: frame_len as u64,
                available: bytes.len() as u64,
            });
        }
        if bytes.len() > frame_len {
            return Err(DecodeError::TrailingBytes {
                frame_len: frame_len as u64,
                extra: (bytes.len() - frame_len) as u64,
            });
        }
        verify_checksum(&bytes)?;
        Ok(Frame { bytes })
    }

    /// Wraps bytes the caller has already validated as one complete frame.
    #[inline]
    pub(crate) fn from_validated(bytes: Bytes) -> Frame {
        debug_assert!(Frame::parse(bytes.clone()).is_ok());
        Frame { bytes }
    }

    #[inline]
    fn raw(&self) -> &RawHeader {
        // A frame is never shorter than its header; the fallback is unreachable.
        RawHeader::view(&self.bytes).unwrap_or(&RawHeader::ZERO)
    }

    /// The decoded header fields.
    #[inline]
    pub fn header(&self) -> FrameHeader {
        self.raw().decoded()
    }

    /// The message type.
    #[inline]
    pub fn message_type(&self) -> MessageType {
        self.raw().message_type()
    }

    /// The flags.
    #[inline]
    pub fn flags(&self) -> Flags {
        self.raw().flags()
    }

    /// The message id.
    #[inline]
    pub fn message_id(&self) -> u64 {
        self.raw().message_id()
    }

    /// The trace id.
    #[inline]
    pub fn trace_id(&self) -> u64 {
        self.raw().trace_id()
    }

    /// The payload length in bytes.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - FRAME_OVERHEAD
    }

    /// The payload, as a slice of the frame's buffer (no copy).
    #[inline]
    pub fn payload(&self) -> Bytes {
        self.bytes
            .slice(HEADER_LEN..self.bytes.len() - CHECKSUM_LEN)
    }

    /// The payload, borrowed.
    #[inline]
    pub fn payload_slice(&self) -> &[u8] {
        self.bytes
            .get(HEADER_LEN..self.bytes.len() - CHECKSUM_LEN)
            .unwrap_or_default()
    }

    /// The XXH3-64 checksum the frame carries (already verified).
    #[inline]
    pub fn checksum(&self) -> u64 {
        self.bytes
            .last_chunk::<CHECKSUM_LEN>()
            .map_or(0, |c| u64::from_le_bytes(*c))
    }

    /// The whole frame as it goes on the wire.
    #[inline]
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole frame as it goes on the wire.
    #[inline]
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The frame's length on the wire: payload plus 40 bytes.
    #[inline]
    pub fn wire_len(&self) -> usize {
        self.bytes.len()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("message_type", &self.message_type())
            .field("flags", &self.flags())
            .field("message_id", &self.message_id())
            .field("trace_id", &self.trace_id())
            .field("payload_len", &self.payload_len())
            .finish()
    }
}

/// Validates the 32-byte header at the start of `buf` and returns the length
/// of the whole frame it announces (payload + 40), so a reader can fetch
/// exactly that many bytes, knowing the length is within `max_payload`
/// (clamped to 16 MiB), before it allocates anything.
///
/// ```
/// use mxp_protocol::{peek_frame_len, FrameHeader, MessageType};
/// let frame = FrameHeader::new(MessageType::Call).encode(b"hello")?;
/// assert_eq!(peek_frame_len(&frame.as_bytes()[..32], 1024)?, 45);
/// assert_eq!(peek_frame_len(&frame.as_bytes()[..32], 4).unwrap_err().class(), "payload_too_large");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// `truncated` if `buf` is shorter than 32 bytes, else the header's first violation.
#[inline]
pub fn peek_frame_len(buf: &[u8], max_payload: u64) -> Result<usize, DecodeError> {
    validate_header(buf, max_payload).map(|len| len + FRAME_OVERHEAD)
}

/// Validates the header at the start of `buf`; returns the declared payload length.
#[inline]
pub(crate) fn validate_header(buf: &[u8], max_payload: u64) -> Result<usize, DecodeError> {
    let raw = RawHeader::view(buf).ok_or(DecodeError::Truncated {
        needed: FRAME_OVERHEAD as u64,
        available: buf.len() as u64,
    })?;
    raw.validate(max_payload.min(MAX_PAYLOAD_LEN))
}

/// Verifies the trailing checksum of a buffer that holds exactly one frame.
#[inline]
pub(crate) fn verify_checksum(frame: &[u8]) -> Result<(), DecodeError> {
    let (covered, carried) =
        frame
            .split_last_chunk::<CHECKSUM_LEN>()
            .ok_or(DecodeError::Truncated {
                needed: FRAME_OVERHEAD as u64,
                available: frame.len() as u64,
            })?;
    let carried = u64::from_le_bytes(*carried);
    let computed = xxh3_64(covered);
    if carried == computed {
        Ok(())
    } else {
        Err(DecodeError::ChecksumMismatch { carried, computed })
    }
}

fn check_len(len: usize) -> Result<u64, EncodeError> {
    let len = len as u64;
    if len > MAX_PAYLOAD_LEN {
        Err(EncodeError::PayloadTooLarge {
            len,
            limit: MAX_PAYLOAD_LEN,
        })
    } else {
        Ok(len)
    }
}

impl FrameHeader {
    /// Encodes a frame around `payload`: one allocation of exactly the frame's
    /// size, one copy of the payload, one checksum pass.
    ///
    /// # Errors
    /// [`EncodeError::PayloadTooLarge`] above 16 MiB.
    #[inline]
    pub fn encode(&self, payload: &[u8]) -> Result<Frame, EncodeError> {
        let len = check_len(payload.len())?;
        Ok(self.encode_exact(len, &[payload]))
    }

    /// Encodes a frame whose payload is the concatenation of `parts` (for
    /// example a Call prefix and its JSON body), copying each part once into a
    /// single allocation, with one checksum pass.
    ///
    /// # Errors
    /// [`EncodeError::PayloadTooLarge`] above 16 MiB.
    #[inline]
    pub fn encode_vectored(&self, parts: &[&[u8]]) -> Result<Frame, EncodeError> {
        let len = check_len(parts.iter().map(|p| p.len()).sum())?;
        Ok(self.encode_exact(len, parts))
    }

    /// Writes header, `parts` (which total `len` bytes, at most 16 MiB) and
    /// checksum into one `Vec` of exactly the frame's size, hashes the
    /// contiguous header and payload once, and hands the `Vec` to `Bytes`
    /// without a copy (its length equals its capacity, so no reallocation).
    /// The frame is valid by construction, so it is not parsed again.
    #[inline]
    fn encode_exact(&self, len: u64, parts: &[&[u8]]) -> Frame {
        let mut buf = Vec::with_capacity(FRAME_OVERHEAD + len as usize);
        buf.extend_from_slice(&RawHeader::new(self, len).to_bytes());
        for part in parts {
            buf.extend_from_slice(part);
        }
        let checksum = xxh3_64(&buf);
        buf.extend_from_slice(&checksum.to_le_bytes());
        Frame::from_validated(Bytes::from(buf))
    }

    /// Appends a frame around `payload` to `out`, without allocating when `out`
    /// has the capacity (reuse one buffer: `out.clear()` between frames).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use mxp_protocol::{Frame, FrameHeader, MessageType};
    /// let mut buf = BytesMut::with_capacity(1024);
    /// for id in 0..3u64 {
    ///     buf.clear();
    ///     FrameHeader::new(MessageType::Event).with_message_id(id).encode_into(b"{}", &mut buf)?;
    ///     assert_eq!(buf.len(), 42);
    /// }
    /// let frame = Frame::parse(buf.freeze())?;
    /// assert_eq!(frame.message_id(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`EncodeError::PayloadTooLarge`] above 16 MiB; `out` is then unchanged.
    #[inline]
    pub fn encode_into(&self, payload: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        let len = check_len(payload.len())?;
        self.write(len, &[payload], out);
        Ok(())
    }

    #[inline]
    fn write(&self, len: u64, parts: &[&[u8]], out: &mut BytesMut) {
        let start = out.len();
        out.reserve(FRAME_OVERHEAD + len as usize);
        out.extend_from_slice(&RawHeader::new(self, len).to_bytes());
        for part in parts {
            out.extend_from_slice(part);
        }
        let checksum = xxh3_64(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&checksum.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frame {
        FrameHeader::new(MessageType::Response)
            .with_message_id(u64::MAX)
            .with_trace_id(3)
            .with_flags(Flags::FINAL)
            .encode(b"ok")
            .unwrap()
    }

    #[test]
    fn encode_then_parse_gives_the_same_fields() {
        let f = Frame::parse(sample().into_bytes()).unwrap();
        assert_eq!(f.message_type(), MessageType::Response);
        assert_eq!(f.message_id(), u64::MAX);
        assert_eq!(f.trace_id(), 3);
        assert_eq!(f.flags(), Flags::FINAL);
        assert_eq!(f.payload_slice(), b"ok");
        assert_eq!(f.wire_len(), 42);
        assert_eq!(f.checksum(), xxh3_64(&f.as_bytes()[..34]));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut v = sample().into_bytes().to_vec();
        v.push(0);
        let err = Frame::parse(v.into()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TrailingBytes {
                frame_len: 42,
                extra: 1
            }
        );
        assert_eq!(err.class(), "trailing_bytes");
    }

    #[test]
    fn declared_length_above_limit_wins_over_truncation() {
        let mut v = sample().into_bytes().to_vec();
        v[24..32].copy_from_slice(&(MAX_PAYLOAD_LEN + 1).to_le_bytes());
        assert_eq!(
            Frame::parse(v.clone().into()).unwrap_err().class(),
            "payload_too_large"
        );
        // A smaller configured limit applies too.
        let err = Frame::parse_with_limit(sample().into_bytes(), 1).unwrap_err();
        assert_eq!(
            err,
            DecodeError::PayloadTooLarge {
                declared: 2,
                limit: 1
            }
        );
    }

    #[test]
    fn encode_into_appends_and_reuses_capacity() {
        let mut buf = BytesMut::with_capacity(512);
        let ptr = buf.as_ptr();
        let h = FrameHeader::new(MessageType::Event);
        h.encode_into(&[1; 100], &mut buf).unwrap();
        h.encode_into(&[2; 100], &mut buf).unwrap();
        assert_eq!(buf.len(), 280);
        assert_eq!(buf.as_ptr(), ptr, "no reallocation within capacity");
        let second = Frame::parse(buf.split_off(140).freeze()).unwrap();
        assert_eq!(second.payload_slice(), &[2; 100]);
    }

    #[test]
    fn oversized_payload_is_refused_by_the_encoder() {
        let big = vec![0u8; MAX_PAYLOAD_LEN as usize + 1];
        let err = FrameHeader::new(MessageType::Call)
            .encode(&big)
            .unwrap_err();
        assert!(matches!(err, EncodeError::PayloadTooLarge { .. }));
        let mut buf = BytesMut::new();
        assert!(
            FrameHeader::new(MessageType::Call)
                .encode_into(&big, &mut buf)
                .is_err()
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn vectored_encoding_equals_contiguous() {
        let h = FrameHeader::new(MessageType::Call).with_message_id(9);
        let a = h.encode_vectored(&[b"ab", b"", b"cde"]).unwrap();
        let b = h.encode(b"abcde").unwrap();
        assert_eq!(a, b);
    }
}
