//! MXP v1 (Mesh eXchange Protocol) wire format.
//!
//! A frame is a 32-byte little-endian header, a payload of at most 16 MiB and
//! an XXH3-64 checksum of header and payload:
//!
//! ```text
//! offset size field
//! 0      4    magic 0x4D585031, little-endian: bytes 31 50 58 4D
//! 4      1    message type
//! 5      1    flags: bit0 COMPRESSED, bit1 ENCRYPTED, bit2 REQUIRES_ACK, bit3 FINAL; bits 4-7 zero
//! 6      2    reserved, zero
//! 8      8    message id (u64 LE)
//! 16     8    trace id (u64 LE)
//! 24     8    payload length (u64 LE), at most 16 MiB
//! 32     n    payload
//! 32+n   8    XXH3-64 of bytes [0, 32+n), little-endian
//! ```
//!
//! * [`Frame`] is a validated, zero-copy view over one [`bytes::Bytes`]:
//!   [`Frame::parse`] checks it once; accessors read the header in place.
//! * [`FrameHeader::encode`] and friends write a frame in one allocation and
//!   one checksum pass.
//! * [`payload`] holds the typed payloads (binary layouts where MXP fixes
//!   them, JSON bodies where it leaves them open).
//! * [`MxpCodec`] (feature `codec`, on by default) cuts frames out of a byte
//!   stream with a bounded buffer.
//!
//! The crate does no I/O and has no async code; untrusted bytes are read
//! through [`cursor::Reader`], which cannot read past its buffer.
//!
//! ```
//! use bytes::Bytes;
//! use mxp_protocol::{AgentId, Call, CallBody, Flags, Frame, TypedPayload};
//!
//! let call = Call::json(AgentId::from_bytes([1; 16]), 5, &CallBody::new("echo", "hi".into()))?;
//! let wire: Bytes = call.to_frame(42, 7, Flags::REQUIRES_ACK)?.into_bytes();
//!
//! let frame = Frame::parse(wire)?;          // validates once
//! let call = Call::from_frame(&frame)?;     // body stays a slice of `frame`
//! assert_eq!(call.parse_body()?.method, "echo");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "codec")]
mod codec;
pub mod cursor;
mod effect;
mod error;
mod frame;
mod header;
pub mod payload;
pub mod principal;
mod types;

#[cfg(feature = "codec")]
pub use codec::{CodecError, MxpCodec};
pub use effect::EffectClass;
pub use error::{DecodeError, EncodeError};
pub use frame::{Frame, peek_frame_len};
pub use header::{FrameHeader, HeaderPeek};
pub use payload::{
    Ack, AgentId, AgentInfo, AgentRegister, Call, CallBody, CloseStatus, DiscoverRequest,
    DiscoverResult, ErrorBody, ErrorCode, ErrorPayload, EventBody, Heartbeat, JsonCost, JsonLimits,
    Response, ResponseBody, StreamChunk, StreamClose, StreamCloseBody, StreamId, StreamOpen,
    StreamType, TypedPayload,
};
pub use principal::{Fingerprint, IdentityParseError, PrincipalId, PrincipalKind, SessionId};
pub use types::{Flags, MessageType, ParseNameError};

/// The magic number, `0x4D585031`; on the wire little-endian: `31 50 58 4D`.
pub const MAGIC: u32 = 0x4D58_5031;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Bytes of the trailing checksum.
pub const CHECKSUM_LEN: usize = 8;
/// Bytes a frame adds to its payload: header and checksum.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + CHECKSUM_LEN;
/// The largest payload MXP v1 allows: 16 MiB.
pub const MAX_PAYLOAD_LEN: u64 = 16 * 1024 * 1024;
