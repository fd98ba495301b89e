//! StreamOpen (binary, as the MXP spec lays it out), StreamChunk and StreamClose.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{AgentId, StreamId, TypedPayload, frame_of, from_json, to_json};
use crate::cursor::Reader;
use crate::{DecodeError, EncodeError, Flags, Frame, MessageType};

/// Bytes of a StreamOpen payload.
pub const STREAM_OPEN_LEN: usize = 33;
/// Bytes of the StreamChunk prefix: stream id (16) and sequence number (8).
pub const STREAM_CHUNK_PREFIX_LEN: usize = 24;

/// The direction of an MXP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StreamType {
    /// `0x01`: only the opener sends chunks.
    Unidirectional = 0x01,
    /// `0x02`: both sides send chunks.
    Bidirectional = 0x02,
}

/// StreamOpen (`0x20`) payload, in the MXP spec's binary layout, exactly 33 bytes:
///
/// ```text
/// offset 0   16 bytes  stream id (UUID, chosen by the opener)
/// offset 16  16 bytes  target agent id (UUID)
/// offset 32   1 byte   stream type: 0x01 unidirectional, 0x02 bidirectional
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOpen {
    /// The new stream's id.
    pub stream_id: StreamId,
    /// The agent the stream is for.
    pub target: AgentId,
    /// Its direction.
    pub stream_type: StreamType,
}

impl StreamOpen {
    /// The payload bytes.
    pub fn encode(&self) -> [u8; STREAM_OPEN_LEN] {
        let mut out = [0u8; STREAM_OPEN_LEN];
        let (sid, rest) = out.split_at_mut(16);
        let (target, ty) = rest.split_at_mut(16);
        sid.copy_from_slice(self.stream_id.as_bytes());
        target.copy_from_slice(self.target.as_bytes());
        ty.copy_from_slice(&[self.stream_type as u8]);
        out
    }
}

impl TypedPayload for StreamOpen {
    const MESSAGE_TYPE: MessageType = MessageType::StreamOpen;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "StreamOpen");
        let stream_id = StreamId::from_bytes(r.array()?);
        let target = AgentId::from_bytes(r.array()?);
        let stream_type = match r.u8()? {
            0x01 => StreamType::Unidirectional,
            0x02 => StreamType::Bidirectional,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "stream type",
                    reason: "must be 0x01 (unidirectional) or 0x02 (bidirectional)",
                });
            }
        };
        r.finish()?;
        Ok(StreamOpen {
            stream_id,
            target,
            stream_type,
        })
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        frame_of(
            Self::MESSAGE_TYPE,
            message_id,
            trace_id,
            flags,
            &[&self.encode()],
        )
    }
}

/// StreamChunk (`0x21`) payload: a binary prefix, then opaque data.
///
/// ```text
/// offset 0   16 bytes  stream id
/// offset 16   8 bytes  sequence number, u64 LE, 0 for the first chunk, +1 per chunk
/// offset 24   …        data (opaque bytes: tokens, file contents, …)
/// ```
///
/// Chunk data is not JSON: a stream carries bytes as they are, and a receiver
/// forwards them as slices of the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    /// The stream.
    pub stream_id: StreamId,
    /// Position of this chunk in the stream.
    pub seq: u64,
    /// The data, a slice of the frame.
    pub data: Bytes,
}

impl TypedPayload for StreamChunk {
    const MESSAGE_TYPE: MessageType = MessageType::StreamChunk;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "StreamChunk");
        let stream_id = StreamId::from_bytes(r.array()?);
        let seq = r.u64_le()?;
        Ok(StreamChunk {
            stream_id,
            seq,
            data: payload.slice(r.position()..),
        })
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        frame_of(
            Self::MESSAGE_TYPE,
            message_id,
            trace_id,
            flags,
            &[
                self.stream_id.as_bytes(),
                &self.seq.to_le_bytes(),
                &self.data,
            ],
        )
    }
}

/// StreamClose (`0x22`) payload: the stream id, then an optional JSON body.
///
/// ```text
/// offset 0   16 bytes  stream id
/// offset 16  …         empty (closed normally), or a JSON object, see StreamCloseBody
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClose {
    /// The stream.
    pub stream_id: StreamId,
    /// Empty, or JSON (see [`StreamCloseBody`]); a slice of the frame.
    pub body: Bytes,
}

impl StreamClose {
    /// Parses the body; an empty body is `{"status": "ok"}`.
    ///
    /// # Errors
    /// `invalid_json` if a non-empty body does not match the schema.
    pub fn parse_body(&self) -> Result<StreamCloseBody, DecodeError> {
        if self.body.is_empty() {
            return Ok(StreamCloseBody {
                status: CloseStatus::Ok,
                message: None,
            });
        }
        from_json("StreamClose", &self.body)
    }

    /// A close with a JSON body.
    ///
    /// # Errors
    /// [`EncodeError::Json`] if serialisation fails.
    pub fn json(stream_id: StreamId, body: &StreamCloseBody) -> Result<StreamClose, EncodeError> {
        Ok(StreamClose {
            stream_id,
            body: Bytes::from(to_json("StreamClose", body)?),
        })
    }
}

impl TypedPayload for StreamClose {
    const MESSAGE_TYPE: MessageType = MessageType::StreamClose;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "StreamClose");
        let stream_id = StreamId::from_bytes(r.array()?);
        Ok(StreamClose {
            stream_id,
            body: payload.slice(r.position()..),
        })
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        frame_of(
            Self::MESSAGE_TYPE,
            message_id,
            trace_id,
            flags,
            &[self.stream_id.as_bytes(), &self.body],
        )
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseStatus {
    /// All data was sent.
    Ok,
    /// The sender failed; `message` says why.
    Error,
    /// The sender gave up.
    Cancelled,
}

/// The JSON body of a StreamClose.
///
/// ```json
/// {"status": "error", "message": "model backend went away"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCloseBody {
    /// How the stream ended.
    pub status: CloseStatus,
    /// Why, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_open_is_exactly_33_bytes() {
        let open = StreamOpen {
            stream_id: StreamId::from_bytes([1; 16]),
            target: AgentId::from_bytes([2; 16]),
            stream_type: StreamType::Bidirectional,
        };
        let bytes = Bytes::copy_from_slice(&open.encode());
        assert_eq!(bytes[32], 2);
        assert_eq!(StreamOpen::decode(&bytes).unwrap(), open);
        let mut bad = bytes.to_vec();
        bad[32] = 3;
        assert_eq!(
            StreamOpen::decode(&bad.into()).unwrap_err().class(),
            "invalid_value"
        );
        assert_eq!(
            StreamOpen::decode(&bytes.slice(..32)).unwrap_err().class(),
            "truncated"
        );
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(
            StreamOpen::decode(&long.into()).unwrap_err().class(),
            "trailing_bytes"
        );
    }

    #[test]
    fn chunk_and_close_round_trip() {
        let chunk = StreamChunk {
            stream_id: StreamId::from_bytes([4; 16]),
            seq: 7,
            data: Bytes::from_static(b"tok"),
        };
        let f = chunk.to_frame(1, 1, Flags::EMPTY).unwrap();
        assert_eq!(StreamChunk::from_frame(&f).unwrap(), chunk);

        let close = StreamClose {
            stream_id: StreamId::from_bytes([4; 16]),
            body: Bytes::new(),
        };
        assert_eq!(close.parse_body().unwrap().status, CloseStatus::Ok);
        let body = StreamCloseBody {
            status: CloseStatus::Error,
            message: Some("boom".into()),
        };
        let close = StreamClose::json(StreamId::from_bytes([4; 16]), &body).unwrap();
        let f = close.to_frame(2, 1, Flags::FINAL).unwrap();
        assert_eq!(
            StreamClose::from_frame(&f).unwrap().parse_body().unwrap(),
            body
        );
    }
}
