//! The 32-byte fixed header: its wire layout and its decoded form.

use bytemuck::{Pod, Zeroable};

use crate::{DecodeError, Flags, MAGIC, MessageType};

/// The header as it lies on the wire: every field a little-endian byte array,
/// so the struct has alignment 1 and can be viewed in place over any buffer.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct RawHeader {
    magic: [u8; 4],
    message_type: u8,
    flags: u8,
    reserved: [u8; 2],
    message_id: [u8; 8],
    trace_id: [u8; 8],
    payload_len: [u8; 8],
}

const _: () = assert!(size_of::<RawHeader>() == crate::HEADER_LEN);
const _: () = assert!(align_of::<RawHeader>() == 1);

impl RawHeader {
    pub(crate) const ZERO: RawHeader = RawHeader {
        magic: [0; 4],
        message_type: 0,
        flags: 0,
        reserved: [0; 2],
        message_id: [0; 8],
        trace_id: [0; 8],
        payload_len: [0; 8],
    };

    /// Views the first 32 bytes of `buf` as a header, in place.
    #[inline]
    pub(crate) fn view(buf: &[u8]) -> Option<&RawHeader> {
        buf.first_chunk::<{ crate::HEADER_LEN }>()
            .map(bytemuck::cast_ref::<[u8; crate::HEADER_LEN], RawHeader>)
    }

    #[inline]
    pub(crate) fn new(header: &FrameHeader, payload_len: u64) -> RawHeader {
        RawHeader {
            magic: MAGIC.to_le_bytes(),
            message_type: header.message_type.as_byte(),
            flags: header.flags.bits(),
            reserved: [0; 2],
            message_id: header.message_id.to_le_bytes(),
            trace_id: header.trace_id.to_le_bytes(),
            payload_len: payload_len.to_le_bytes(),
        }
    }

    /// The header's 32 wire bytes.
    #[inline]
    pub(crate) fn to_bytes(self) -> [u8; crate::HEADER_LEN] {
        bytemuck::cast(self)
    }

    /// Checks every header field; returns the declared payload length.
    ///
    /// The order is fixed (magic, type, flags, reserved, length) so that every
    /// implementation reports the same class for the same bytes.
    #[inline]
    pub(crate) fn validate(&self, max_payload: u64) -> Result<usize, DecodeError> {
        let magic = u32::from_le_bytes(self.magic);
        if magic != MAGIC {
            return Err(DecodeError::InvalidMagic { found: magic });
        }
        if MessageType::from_byte(self.message_type).is_none() {
            return Err(DecodeError::InvalidMessageType {
                byte: self.message_type,
            });
        }
        if Flags::from_bits(self.flags).is_none() {
            return Err(DecodeError::InvalidFlags { flags: self.flags });
        }
        if self.reserved != [0, 0] {
            return Err(DecodeError::ReservedNonZero {
                value: u16::from_le_bytes(self.reserved),
            });
        }
        let declared = u64::from_le_bytes(self.payload_len);
        if declared > max_payload {
            return Err(DecodeError::PayloadTooLarge {
                declared,
                limit: max_payload,
            });
        }
        // `max_payload` is at most 16 MiB, so this fits any usize of 32 bits or more.
        usize::try_from(declared).map_err(|_| DecodeError::PayloadTooLarge {
            declared,
            limit: max_payload,
        })
    }

    /// The decoded header. Only call on a header that passed [`RawHeader::validate`];
    /// on any other it substitutes `Call` / empty flags rather than panicking.
    #[inline]
    pub(crate) fn decoded(&self) -> FrameHeader {
        FrameHeader {
            message_type: MessageType::from_byte(self.message_type).unwrap_or(MessageType::Call),
            flags: Flags::from_bits(self.flags).unwrap_or_default(),
            message_id: u64::from_le_bytes(self.message_id),
            trace_id: u64::from_le_bytes(self.trace_id),
        }
    }

    /// The declared payload length, unchecked.
    #[inline]
    pub(crate) fn declared_len(&self) -> u64 {
        u64::from_le_bytes(self.payload_len)
    }

    #[inline]
    pub(crate) fn message_type(&self) -> MessageType {
        self.decoded().message_type
    }

    #[inline]
    pub(crate) fn flags(&self) -> Flags {
        Flags::from_bits(self.flags).unwrap_or_default()
    }

    #[inline]
    pub(crate) fn message_id(&self) -> u64 {
        u64::from_le_bytes(self.message_id)
    }

    #[inline]
    pub(crate) fn trace_id(&self) -> u64 {
        u64::from_le_bytes(self.trace_id)
    }
}

/// The variable fields of a header: everything but magic, reserved bytes and
/// payload length, which the codec derives.
///
/// Build one to encode a frame; read one back with [`crate::Frame::header`].
///
/// ```
/// use mxp_protocol::{Flags, FrameHeader, MessageType};
/// let frame = FrameHeader::new(MessageType::Event)
///     .with_message_id(7)
///     .with_trace_id(99)
///     .with_flags(Flags::FINAL)
///     .encode(br#"{"topic":"hello"}"#)?;
/// assert_eq!(frame.header().trace_id, 99);
/// assert_eq!(frame.payload().as_ref(), br#"{"topic":"hello"}"#);
/// # Ok::<(), mxp_protocol::EncodeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// The message type.
    pub message_type: MessageType,
    /// The flags.
    pub flags: Flags,
    /// The sender's id for this message; a Response or Error names the Call it
    /// answers by this id.
    pub message_id: u64,
    /// The trace this message belongs to; a Response carries its Call's trace id.
    pub trace_id: u64,
}

impl FrameHeader {
    /// A header of `message_type` with no flags and ids zero.
    pub const fn new(message_type: MessageType) -> FrameHeader {
        FrameHeader {
            message_type,
            flags: Flags::EMPTY,
            message_id: 0,
            trace_id: 0,
        }
    }

    /// Sets the message id.
    #[must_use]
    pub const fn with_message_id(mut self, message_id: u64) -> FrameHeader {
        self.message_id = message_id;
        self
    }

    /// Sets the trace id.
    #[must_use]
    pub const fn with_trace_id(mut self, trace_id: u64) -> FrameHeader {
        self.trace_id = trace_id;
        self
    }

    /// Sets the flags.
    #[must_use]
    pub const fn with_flags(mut self, flags: Flags) -> FrameHeader {
        self.flags = flags;
        self
    }
}

/// The fields of a 32-byte header read as they are, without validating them:
/// for answering or logging a frame that failed validation (which message
/// id to name, how long it says it is). Use [`crate::Frame`] for anything
/// that has to be trusted.
///
/// ```
/// use mxp_protocol::{FrameHeader, HeaderPeek, MessageType};
/// let frame = FrameHeader::new(MessageType::Call).with_message_id(7).with_trace_id(9).encode(b"")?;
/// let peek = HeaderPeek::read(frame.as_bytes()).unwrap();
/// assert_eq!((peek.message_id, peek.trace_id, peek.payload_len), (7, 9, 0));
/// assert!(HeaderPeek::read(&[0; 31]).is_none());
/// # Ok::<(), mxp_protocol::EncodeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPeek {
    /// The magic field (valid frames: [`MAGIC`]).
    pub magic: u32,
    /// The message type byte.
    pub message_type: u8,
    /// The flags byte.
    pub flags: u8,
    /// The message id.
    pub message_id: u64,
    /// The trace id.
    pub trace_id: u64,
    /// The declared payload length.
    pub payload_len: u64,
}

impl HeaderPeek {
    /// The header at the start of `buf`; `None` if `buf` is shorter than 32 bytes.
    #[inline]
    pub fn read(buf: &[u8]) -> Option<HeaderPeek> {
        RawHeader::view(buf).map(|raw| HeaderPeek {
            magic: u32::from_le_bytes(raw.magic),
            message_type: raw.message_type,
            flags: raw.flags,
            message_id: u64::from_le_bytes(raw.message_id),
            trace_id: u64::from_le_bytes(raw.trace_id),
            payload_len: raw.declared_len(),
        })
    }
}
