//! Cutting frames out of a byte stream: a tokio-util [`Decoder`]/[`Encoder`].
//!
//! The codec reads the 32-byte header as soon as it has arrived, validates it
//! and checks the declared length against the configured maximum *before*
//! reserving room for the payload, so a peer can make it hold at most one
//! frame of at most that size. Complete frames are split off the buffer and
//! frozen into [`Frame`]s without copying.
//!
//! After an error the codec knows whether the stream can go on:
//! * a bad checksum, type, flags or reserved field in a header whose length is
//!   within the limit: that frame is skipped (discarded as it arrives, not
//!   buffered) and the next one can be read; [`MxpCodec::can_continue`] is true;
//! * a bad magic or a declared length above the limit: frame boundaries are
//!   lost; every later call returns [`CodecError::Desynchronised`].

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{validate_header, verify_checksum};
use crate::header::RawHeader;
use crate::{DecodeError, FRAME_OVERHEAD, Frame, HEADER_LEN, MAX_PAYLOAD_LEN};

/// Error from [`MxpCodec`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame is invalid; [`DecodeError::class`] names how.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An earlier error lost the frame boundaries; nothing more can be read.
    #[error("stream is desynchronised by an earlier framing error; no further frames can be read")]
    Desynchronised,
    /// The underlying reader or writer failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// MXP stream codec. See the [module docs](self).
///
/// ```
/// use bytes::BytesMut;
/// use mxp_protocol::{FrameHeader, MessageType, MxpCodec};
/// use tokio_util::codec::Decoder;
///
/// let frame = FrameHeader::new(MessageType::Event).encode(b"{}")?;
/// let mut codec = MxpCodec::new();
/// let mut buf = BytesMut::new();
/// buf.extend_from_slice(&frame.as_bytes()[..10]);
/// assert!(codec.decode(&mut buf)?.is_none()); // waits for the rest
/// buf.extend_from_slice(&frame.as_bytes()[10..]);
/// assert_eq!(codec.decode(&mut buf)?, Some(frame));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct MxpCodec {
    max_payload: u64,
    /// Bytes of a rejected frame still to discard.
    skip: u64,
    desynchronised: bool,
}

impl Default for MxpCodec {
    fn default() -> Self {
        MxpCodec::new()
    }
}

impl MxpCodec {
    /// A codec with the MXP maximum payload of 16 MiB.
    pub const fn new() -> MxpCodec {
        MxpCodec::with_max_payload(MAX_PAYLOAD_LEN)
    }

    /// A codec refusing payloads above `max_payload` bytes (clamped to 16 MiB).
    pub const fn with_max_payload(max_payload: u64) -> MxpCodec {
        MxpCodec {
            max_payload: if max_payload < MAX_PAYLOAD_LEN {
                max_payload
            } else {
                MAX_PAYLOAD_LEN
            },
            skip: 0,
            desynchronised: false,
        }
    }

    /// The payload limit in force.
    pub const fn max_payload(&self) -> u64 {
        self.max_payload
    }

    /// Whether frames can still be read after the errors seen so far.
    pub const fn can_continue(&self) -> bool {
        !self.desynchronised
    }

    fn fail(&mut self, err: DecodeError, declared: Option<u64>) -> CodecError {
        match declared {
            Some(len) if len <= self.max_payload => self.skip = FRAME_OVERHEAD as u64 + len,
            _ => self.desynchronised = true,
        }
        CodecError::Decode(err)
    }
}

impl Decoder for MxpCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if self.desynchronised {
            return Err(CodecError::Desynchronised);
        }
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(src.len());
            src.advance(n);
            self.skip -= n as u64;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let payload_len = match validate_header(src, self.max_payload) {
            Ok(len) => len,
            Err(err) => {
                let declared = match err {
                    DecodeError::InvalidMagic { .. } | DecodeError::PayloadTooLarge { .. } => None,
                    _ => RawHeader::view(src).map(RawHeader::declared_len),
                };
                let err = self.fail(err, declared);
                // Start discarding the rejected frame right away.
                if self.skip > 0 {
                    let n = usize::try_from(self.skip)
                        .unwrap_or(usize::MAX)
                        .min(src.len());
                    src.advance(n);
                    self.skip -= n as u64;
                }
                return Err(err);
            }
        };
        let frame_len = FRAME_OVERHEAD + payload_len;
        if src.len() < frame_len {
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        let bytes = src.split_to(frame_len).freeze();
        // The frame's bytes are consumed either way, so a bad checksum leaves
        // the stream at the next frame.
        verify_checksum(&bytes)?;
        Ok(Some(Frame::from_validated(bytes)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if self.skip > 0 {
            // The stream ended inside a frame already reported as invalid:
            // nothing new to report.
            self.skip = 0;
            return Ok(None);
        }
        if src.is_empty() {
            return Ok(None);
        }
        let available = src.len() as u64;
        let needed = match validate_header(src, self.max_payload) {
            Ok(len) => (FRAME_OVERHEAD + len) as u64,
            Err(_) => FRAME_OVERHEAD as u64,
        };
        src.clear();
        self.desynchronised = true;
        Err(CodecError::Decode(DecodeError::Truncated {
            needed,
            available,
        }))
    }
}

impl Encoder<Frame> for MxpCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(frame.as_bytes());
        Ok(())
    }
}

impl Encoder<&Frame> for MxpCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(frame.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameHeader, MessageType};

    fn frame(id: u64, len: usize) -> Frame {
        FrameHeader::new(MessageType::Event)
            .with_message_id(id)
            .encode(&vec![id as u8; len])
            .unwrap()
    }

    #[test]
    fn huge_declared_length_fails_before_buffering() {
        let mut v = frame(1, 0).into_bytes().to_vec();
        v[24..32].copy_from_slice(&(MAX_PAYLOAD_LEN + 1).to_le_bytes());
        let mut buf = BytesMut::from(&v[..32]);
        let mut codec = MxpCodec::new();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Decode(DecodeError::PayloadTooLarge { .. })
        ));
        assert!(buf.capacity() < 1024, "no room reserved for the payload");
        assert!(!codec.can_continue());
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Desynchronised)
        ));
    }

    #[test]
    fn configured_limit_applies() {
        let mut codec = MxpCodec::with_max_payload(100);
        let mut buf = BytesMut::from(frame(1, 101).as_bytes().as_ref());
        assert_eq!(
            match codec.decode(&mut buf) {
                Err(CodecError::Decode(e)) => e.class(),
                other => panic!("{other:?}"),
            },
            "payload_too_large"
        );
        assert_eq!(
            MxpCodec::with_max_payload(u64::MAX).max_payload(),
            MAX_PAYLOAD_LEN
        );
    }

    #[test]
    fn a_bad_frame_with_known_length_is_skipped() {
        let good1 = frame(1, 10);
        let mut bad = frame(2, 300).into_bytes().to_vec();
        bad[5] = 0x10; // reserved flag bit
        let mut corrupt = frame(3, 5).into_bytes().to_vec();
        corrupt[33] ^= 1; // payload bit flip
        let good2 = frame(4, 0);
        let mut stream = Vec::new();
        stream.extend_from_slice(good1.as_bytes());
        stream.extend_from_slice(&bad);
        stream.extend_from_slice(&corrupt);
        stream.extend_from_slice(good2.as_bytes());

        let mut codec = MxpCodec::new();
        let mut results = Vec::new();
        // Feed 7 bytes at a time to exercise skipping across calls.
        let mut buf = BytesMut::new();
        for chunk in stream.chunks(7) {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => results.push(Ok(f.message_id())),
                    Ok(None) => break,
                    Err(CodecError::Decode(e)) => results.push(Err(e.class())),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        assert_eq!(
            results,
            vec![Ok(1), Err("invalid_flags"), Err("checksum_mismatch"), Ok(4)]
        );
    }

    #[test]
    fn eof_inside_a_frame_is_truncated() {
        let f = frame(1, 10);
        let mut buf = BytesMut::from(&f.as_bytes()[..45]);
        let mut codec = MxpCodec::new();
        assert!(codec.decode(&mut buf).unwrap().is_none());
        match codec.decode_eof(&mut buf) {
            Err(CodecError::Decode(DecodeError::Truncated { needed, available })) => {
                assert_eq!((needed, available), (50, 45));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn eof_while_skipping_a_rejected_frame_reports_it_once() {
        let mut bad = frame(1, 100).into_bytes().to_vec();
        bad[5] = 0x10;
        let mut buf = BytesMut::from(&bad[..100]);
        let mut codec = MxpCodec::new();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Decode(DecodeError::InvalidFlags { .. }))
        ));
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn encoder_writes_wire_bytes() {
        let f = frame(9, 3);
        let mut dst = BytesMut::new();
        MxpCodec::new().encode(&f, &mut dst).unwrap();
        assert_eq!(&dst[..], f.as_bytes().as_ref());
    }
}
