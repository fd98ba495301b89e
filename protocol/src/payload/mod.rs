//! Typed payloads: the binary layouts MXP fixes and the JSON bodies this
//! project defines where MXP leaves the body open. docs/PROTOCOL.md states
//! every schema.
//!
//! Decoders read through [`crate::cursor::Reader`], check every length against
//! its limit before allocating, and refuse trailing bytes after fixed layouts.
//! Bodies are kept as `Bytes` slices of the frame (no copy) until a caller
//! asks for them parsed.

mod agent;
mod bounded;
mod call;
mod stream;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use agent::{
    AgentInfo, AgentRegister, DiscoverRequest, DiscoverResult, Heartbeat, MAX_AGENT_NAME_LEN,
    MAX_CAPABILITIES, MAX_CAPABILITY_LEN, MAX_HEARTBEAT_AGENTS,
};
pub use bounded::{JsonCost, JsonLimits, parse_json_bounded};
pub use call::{
    Ack, CALL_PREFIX_LEN, Call, CallBody, ERROR_PREFIX_LEN, ErrorBody, ErrorCode, ErrorPayload,
    EventBody, MAX_METHOD_LEN, MAX_TOPIC_LEN, RESPONSE_PREFIX_LEN, Response, ResponseBody,
};
pub use stream::{
    CloseStatus, STREAM_CHUNK_PREFIX_LEN, STREAM_OPEN_LEN, StreamChunk, StreamClose,
    StreamCloseBody, StreamOpen, StreamType,
};

use crate::{DecodeError, EncodeError, Flags, Frame, FrameHeader, MessageType};

/// A payload with a known layout for one message type.
pub trait TypedPayload: Sized {
    /// The message type whose payload this is.
    const MESSAGE_TYPE: MessageType;

    /// Decodes a payload. Byte bodies are returned as slices of `payload`.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field and the violation.
    fn decode(payload: &Bytes) -> Result<Self, DecodeError>;

    /// Encodes this payload into a frame, in one allocation.
    ///
    /// # Errors
    /// An [`EncodeError`] if a field exceeds its layout's limits.
    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError>;

    /// Decodes the payload of `frame`, checking its type first.
    ///
    /// # Errors
    /// [`DecodeError::WrongMessageType`] or a payload error.
    fn from_frame(frame: &Frame) -> Result<Self, DecodeError> {
        if frame.message_type() != Self::MESSAGE_TYPE {
            return Err(DecodeError::WrongMessageType {
                expected: Self::MESSAGE_TYPE,
                found: frame.message_type(),
            });
        }
        Self::decode(&frame.payload())
    }
}

/// Encodes `parts` as one frame of type `T::MESSAGE_TYPE`.
pub(crate) fn frame_of(
    message_type: MessageType,
    message_id: u64,
    trace_id: u64,
    flags: Flags,
    parts: &[&[u8]],
) -> Result<Frame, EncodeError> {
    FrameHeader::new(message_type)
        .with_message_id(message_id)
        .with_trace_id(trace_id)
        .with_flags(flags)
        .encode_vectored(parts)
}

/// Parses a JSON body, which must be an object: serde would otherwise read a
/// struct from an array, field by field, which the schemas do not allow.
pub(crate) fn from_json<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| DecodeError::json(what, &e)),
        _ => Err(DecodeError::InvalidJson {
            what,
            detail: "the body must be a JSON object ({...})".into(),
        }),
    }
}

pub(crate) fn to_json<T: serde::Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(value).map_err(|e| EncodeError::Json {
        what,
        detail: e.to_string(),
    })
}

pub(crate) fn check_len(field: &'static str, len: usize, limit: usize) -> Result<(), DecodeError> {
    if len > limit {
        Err(DecodeError::LimitExceeded { field, len, limit })
    } else {
        Ok(())
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// The id of 16 raw bytes (as they appear on the wire).
            pub const fn from_bytes(bytes: [u8; 16]) -> $name {
                $name(Uuid::from_bytes(bytes))
            }

            /// The 16 bytes as they appear on the wire.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// The id as a UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> $name {
                $name(u)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = DecodeError;

            /// Parses a UUID in hyphenated, simple, braced or URN form.
            fn from_str(s: &str) -> Result<$name, DecodeError> {
                Uuid::parse_str(s.trim()).map($name).map_err(|_| DecodeError::InvalidValue {
                    field: stringify!($name),
                    reason: "not a UUID (expected e.g. 67e55044-10b1-426f-9247-bb680e5fe0c8)",
                })
            }
        }
    };
}

uuid_id!(
    /// An agent's id: a UUID, 16 bytes on the wire.
    ///
    /// ```
    /// use mxp_protocol::AgentId;
    /// let id: AgentId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse()?;
    /// assert_eq!(id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
    /// assert_eq!(id.as_bytes()[0], 0x67);
    /// # Ok::<(), mxp_protocol::DecodeError>(())
    /// ```
    AgentId
);

uuid_id!(
    /// A stream's id: a UUID chosen by the side that sends StreamOpen.
    StreamId
);
