//! Frames on QUIC streams: read one frame with its length checked before any
//! allocation, write one frame without copying it.

use bytes::BytesMut;
use mxp_protocol::{DecodeError, FRAME_OVERHEAD, Frame, HEADER_LEN, HeaderPeek, peek_frame_len};

/// Why no frame could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The bytes are not a valid frame. `message_id` is the header's id when a
    /// header arrived, so an Error frame can name it.
    Decode { err: DecodeError, message_id: u64 },
    /// The stream or connection failed.
    Stream(String),
}

/// Reads exactly one frame. `Ok(None)` if the stream ended cleanly before
/// any byte of a frame.
///
/// Memory: the header is validated (declared length within `max_payload`)
/// before anything is allocated, and the buffer then grows only as bytes
/// arrive, so a peer that declares a large frame and sends nothing holds no
/// more than it sent.
pub(crate) async fn read_frame(
    recv: &mut quinn::RecvStream,
    max_payload: u64,
) -> Result<Option<Frame>, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let dst = header.get_mut(filled..).unwrap_or_default();
        match recv.read(dst).await {
            Ok(Some(n)) => filled += n,
            Ok(None) if filled == 0 => return Ok(None),
            Ok(None) => {
                return Err(ReadError::Decode {
                    err: DecodeError::Truncated {
                        needed: FRAME_OVERHEAD as u64,
                        available: filled as u64,
                    },
                    message_id: 0,
                });
            }
            Err(e) => return Err(ReadError::Stream(e.to_string())),
        }
    }
    let message_id = HeaderPeek::read(&header).map_or(0, |h| h.message_id);
    let frame_len = peek_frame_len(&header, max_payload)
        .map_err(|err| ReadError::Decode { err, message_id })?;
    let mut buf = BytesMut::with_capacity(frame_len.min(64 * 1024));
    buf.extend_from_slice(&header);
    while buf.len() < frame_len {
        match recv.read_chunk(frame_len - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(ReadError::Decode {
                    err: DecodeError::Truncated {
                        needed: frame_len as u64,
                        available: buf.len() as u64,
                    },
                    message_id,
                });
            }
            Err(e) => return Err(ReadError::Stream(e.to_string())),
        }
    }
    Frame::parse_with_limit(buf.freeze(), max_payload)
        .map(Some)
        .map_err(|err| ReadError::Decode { err, message_id })
}

/// Writes one frame: its `Bytes` is handed to quinn as is.
pub(crate) async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), String> {
    send.write_chunk(frame.as_bytes().clone())
        .await
        .map_err(|e| e.to_string())
}

/// After the one frame of a Call or answer stream: if the stream's end has
/// already arrived, read it, so that dropping the stream tells quinn all data
/// was read and it sends no STOP_SENDING. Never waits (polls once).
pub(crate) fn consume_fin(recv: &mut quinn::RecvStream) {
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut read = std::pin::pin!(recv.read_chunk(1, true));
    let _ = read.as_mut().poll(&mut cx);
}
