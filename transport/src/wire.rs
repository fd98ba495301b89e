//! Frames on QUIC streams: read one frame with its length checked, and its
//! bytes reserved from a read budget, before any allocation; write one frame
//! without copying it.

use bytes::BytesMut;
use mxp_protocol::{DecodeError, FRAME_OVERHEAD, Frame, HEADER_LEN, HeaderPeek, peek_frame_len};

use crate::session::budget::{Exhausted, ReadBudget};

/// Why no frame could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The bytes are not a valid frame.
    Decode { err: DecodeError },
    /// The stream or connection failed.
    Stream(String),
}

/// Why no request frame could be read (the server's view).
#[derive(Debug)]
pub(crate) enum RequestError {
    /// The bytes are not a valid frame. `header` is what a readable header
    /// said (message id, trace id), so the Error frame can name both.
    Decode {
        err: DecodeError,
        header: Option<HeaderPeek>,
    },
    /// The frame's declared length does not fit the read budget; nothing of
    /// its payload was read.
    OverBudget {
        header: HeaderPeek,
        exhausted: Exhausted,
    },
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
    read_request(recv, max_payload, None)
        .await
        .map_err(|e| match e {
            RequestError::Decode { err, .. } => ReadError::Decode { err },
            RequestError::OverBudget { .. } => {
                ReadError::Stream("read budget exhausted".to_owned())
            }
            RequestError::Stream(s) => ReadError::Stream(s),
        })
}

/// Reads exactly one frame as [`read_frame`] does; with a `budget`, the
/// frame's whole length (header, declared payload, checksum) is reserved
/// from it once the header is read and before any payload byte is, and given
/// back when this returns (the complete frame is then the bus's to count).
pub(crate) async fn read_request(
    recv: &mut quinn::RecvStream,
    max_payload: u64,
    budget: Option<&ReadBudget>,
) -> Result<Option<Frame>, RequestError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let dst = header.get_mut(filled..).unwrap_or_default();
        match recv.read(dst).await {
            Ok(Some(n)) => filled += n,
            Ok(None) if filled == 0 => return Ok(None),
            Ok(None) => {
                return Err(RequestError::Decode {
                    err: DecodeError::Truncated {
                        needed: FRAME_OVERHEAD as u64,
                        available: filled as u64,
                    },
                    header: None,
                });
            }
            Err(e) => return Err(RequestError::Stream(e.to_string())),
        }
    }
    let peek = HeaderPeek::read(&header);
    let frame_len = peek_frame_len(&header, max_payload)
        .map_err(|err| RequestError::Decode { err, header: peek })?;
    let _reserved = match (budget, peek) {
        (Some(b), Some(h)) => {
            Some(
                b.reserve(frame_len as u64)
                    .map_err(|exhausted| RequestError::OverBudget {
                        header: h,
                        exhausted,
                    })?,
            )
        }
        _ => None,
    };
    let mut buf = BytesMut::with_capacity(frame_len.min(64 * 1024));
    buf.extend_from_slice(&header);
    while buf.len() < frame_len {
        match recv.read_chunk(frame_len - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(RequestError::Decode {
                    err: DecodeError::Truncated {
                        needed: frame_len as u64,
                        available: buf.len() as u64,
                    },
                    header: peek,
                });
            }
            Err(e) => return Err(RequestError::Stream(e.to_string())),
        }
    }
    Frame::parse_with_limit(buf.freeze(), max_payload)
        .map(Some)
        .map_err(|err| RequestError::Decode { err, header: peek })
}

/// Writes one frame: its `Bytes` is handed to quinn as is.
pub(crate) async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), String> {
    send.write_chunk(frame.as_bytes().clone())
        .await
        .map_err(|e| e.to_string())
}

/// What followed the one frame a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// The stream ended right after the frame: clean.
    Fin,
    /// More bytes came (at least this many): `trailing_bytes`.
    Extra(usize),
    /// The stream was reset or the connection failed.
    Failed,
}

/// Waits for what follows the frame just read: its end, or more bytes.
///
/// # Cancel safety
/// Cancel safe: nothing is consumed unless it returns.
pub(crate) async fn after_frame(recv: &mut quinn::RecvStream) -> After {
    match recv.read_chunk(64 * 1024, true).await {
        Ok(None) => After::Fin,
        Ok(Some(chunk)) => After::Extra(chunk.bytes.len()),
        Err(_) => After::Failed,
    }
}

/// [`after_frame`] if its answer has already arrived (polls once, never
/// waits); `None` if neither the end nor more bytes are there yet.
pub(crate) fn after_frame_now(recv: &mut quinn::RecvStream) -> Option<After> {
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut read = std::pin::pin!(after_frame(recv));
    match read.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(a) => Some(a),
        std::task::Poll::Pending => None,
    }
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
